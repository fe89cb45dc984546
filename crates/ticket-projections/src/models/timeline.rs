//! The audit timeline: every event of a ticket with its actor, its command id and the policy
//! version in force when it was decided.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use ticket_domain::{ActorKind, EventKind, RecordedEvent, TicketId};

use super::instant;
use crate::ReadModel;

/// One line of a ticket's timeline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimelineEntry {
    pub position: u64,
    pub version: u64,
    pub occurred_at: String,
    pub recorded_at: String,
    pub event_type: String,
    /// `agent:<id>`, `customer:<id>` or `system:<id>`.
    pub actor: String,
    pub command_id: String,
    /// The policy version in force: the one the event's clock plans state, else the latest one
    /// the ticket's events stated before it.
    pub policy: String,
    pub summary: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct TicketTimeline {
    policy: String,
    entries: Vec<TimelineEntry>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timeline {
    tickets: HashMap<TicketId, TicketTimeline>,
}

impl ReadModel for Timeline {
    const NAME: &'static str = "timeline";
    const FORMAT: u32 = 1;

    fn apply(&mut self, e: &RecordedEvent) {
        let timeline = self.tickets.entry(e.event.ticket_id).or_default();
        let stated = if let EventKind::Opened(o) = &e.event.kind {
            Some(&o.policy)
        } else {
            e.event.kind.clocks().iter().find_map(|c| c.plan.as_ref().map(|p| &p.policy))
        };
        if let Some(policy) = stated {
            timeline.policy = policy.to_string();
        }
        let kind = match e.actor.kind {
            ActorKind::Agent => "agent",
            ActorKind::Customer => "customer",
            ActorKind::System => "system",
        };
        timeline.entries.push(TimelineEntry {
            position: e.position,
            version: e.version,
            occurred_at: instant(&e.event.occurred_at),
            recorded_at: instant(&e.recorded_at),
            event_type: e.event.kind.name().to_owned(),
            actor: format!("{kind}:{}", e.actor.id),
            command_id: e.command_id.to_string(),
            policy: timeline.policy.clone(),
            summary: crate::describe::event(&e.event.kind),
        });
    }
}

impl Timeline {
    /// Every event of a ticket, in order; empty for an unknown ticket.
    pub fn ticket(&self, id: TicketId) -> &[TimelineEntry] {
        self.tickets.get(&id).map_or(&[], |t| &t.entries)
    }

    pub fn tickets(&self) -> usize {
        self.tickets.len()
    }
}
