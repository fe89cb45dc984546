//! The audit timeline: every event of a ticket with its actor, its command id and the policy
//! version in force when it was decided.
//!
//! Each line is kept compact (instants, and indexes into a table of the few distinct actors,
//! event types and policy versions); the one-line description of what the event says is
//! rendered on query from the event itself ([`add_details`]), since the log
//! already holds it.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use ticket_domain::{ActorKind, CommandId, EventKind, PolicyVersion, RecordedEvent, TicketId, Timestamp};
use ticket_log::{EventLog, LogError};

use crate::ReadModel;

/// One line of a ticket's timeline, as queries return it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimelineEntry {
    pub position: u64,
    pub version: u64,
    pub occurred_at: Timestamp,
    pub recorded_at: Timestamp,
    pub event_type: String,
    /// `agent:<id>`, `customer:<id>` or `system:<id>`.
    pub actor: String,
    pub command_id: String,
    /// The policy version in force: the one the event's clock plans state, else the latest one
    /// the ticket's events stated before it.
    pub policy: String,
    /// What the event says, in one line (empty unless asked for with the log).
    pub summary: String,
    /// The event came in with an import (read with the summary, from the log).
    pub imported: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Line {
    position: u64,
    version: u64,
    occurred_at: Timestamp,
    recorded_at: Timestamp,
    event_type: u32,
    actor: u32,
    command_id: CommandId,
    policy: u32,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct TicketTimeline {
    policy: Option<u32>,
    lines: Vec<Line>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timeline {
    tickets: HashMap<TicketId, TicketTimeline>,
    /// The distinct actors, event types and policy versions, each once.
    names: Vec<String>,
    index: HashMap<String, u32>,
    /// Actors by kind (agent, customer, system) and id: their entry in `names`.
    actors: [HashMap<String, u32>; 3],
    /// Policy versions seen, with their entry in `names` (a handful: scanned, not hashed).
    policies: Vec<(PolicyVersion, u32)>,
}

impl Timeline {
    fn intern(&mut self, name: &str) -> u32 {
        if let Some(i) = self.index.get(name) {
            return *i;
        }
        let i = u32::try_from(self.names.len()).unwrap_or(u32::MAX);
        self.names.push(name.to_owned());
        self.index.insert(name.to_owned(), i);
        i
    }

    fn actor(&mut self, kind: ActorKind, id: &str) -> u32 {
        let (slot, label) = match kind {
            ActorKind::Agent => (0, "agent"),
            ActorKind::Customer => (1, "customer"),
            ActorKind::System => (2, "system"),
        };
        if let Some(i) = self.actors[slot].get(id) {
            return *i;
        }
        let i = self.intern(&format!("{label}:{id}"));
        self.actors[slot].insert(id.to_owned(), i);
        i
    }

    fn policy(&mut self, policy: &PolicyVersion) -> u32 {
        if let Some((_, i)) = self.policies.iter().find(|(p, _)| p == policy) {
            return *i;
        }
        let i = self.intern(&policy.to_string());
        self.policies.push((policy.clone(), i));
        i
    }

    fn name(&self, i: u32) -> String {
        self.names.get(i as usize).cloned().unwrap_or_default()
    }
}

impl ReadModel for Timeline {
    const NAME: &'static str = "timeline";
    const FORMAT: u32 = 3;

    fn apply(&mut self, e: &RecordedEvent) {
        let stated = if let EventKind::Opened(o) = &e.event.kind {
            Some(&o.policy)
        } else {
            e.event.kind.clocks().iter().find_map(|c| c.plan.as_ref().map(|p| &p.policy))
        };
        let stated = stated.map(|p| self.policy(p));
        let actor = self.actor(e.actor.kind, e.actor.id.as_str());
        let event_type = self.intern(e.event.kind.name());
        let unknown = self.intern("");
        let timeline = self.tickets.entry(e.event.ticket_id).or_default();
        if stated.is_some() {
            timeline.policy = stated;
        }
        timeline.lines.push(Line {
            position: e.position,
            version: e.version,
            occurred_at: e.event.occurred_at,
            recorded_at: e.recorded_at,
            event_type,
            actor,
            command_id: e.command_id.clone(),
            policy: timeline.policy.unwrap_or(unknown),
        });
    }
}

impl Timeline {
    /// Every event of a ticket, in order (without summaries); empty for an unknown ticket.
    pub fn ticket(&self, id: TicketId) -> Vec<TimelineEntry> {
        let Some(t) = self.tickets.get(&id) else { return Vec::new() };
        t.lines
            .iter()
            .map(|l| TimelineEntry {
                position: l.position,
                version: l.version,
                occurred_at: l.occurred_at,
                recorded_at: l.recorded_at,
                event_type: self.name(l.event_type),
                actor: self.name(l.actor),
                command_id: l.command_id.to_string(),
                policy: self.name(l.policy),
                summary: String::new(),
                imported: false,
            })
            .collect()
    }
}

/// Fills in what each of a ticket's timeline entries says, read from the log. Call it without
/// holding the timeline's lock: it reads the log.
pub fn add_details<L: EventLog>(entries: &mut [TimelineEntry], ticket: TicketId, log: &L) -> Result<(), LogError> {
    if entries.is_empty() {
        return Ok(());
    }
    let events = log.read_stream(ticket, 1)?;
    let by_position: HashMap<u64, &RecordedEvent> = events.iter().map(|e| (e.position, e)).collect();
    for entry in entries {
        if let Some(e) = by_position.get(&entry.position) {
            entry.summary = crate::describe::event(&e.event.kind);
            entry.imported = e.imported;
        }
    }
    Ok(())
}
