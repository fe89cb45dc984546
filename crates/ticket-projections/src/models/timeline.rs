//! The audit timeline: every event of a ticket with its actor, its command id and the policy
//! version in force when it was decided.
//!
//! It keeps no model of its own: everything it shows is in the ticket's events, which the log
//! indexes per ticket, so a ticket's timeline is read from its stream at query time
//! ([`timeline_of`]), as of a position (the read models' position) or an instant.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use ticket_domain::{ActorKind, EventKind, RecordedEvent, TicketId, Timestamp};
use ticket_log::{EventLog, LogError};

/// The name of the timeline in lag reports: it is served from the log up to the read models'
/// position.
pub const NAME: &str = "timeline";

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

/// Every event of `events` (one ticket's stream, in order) that `included` keeps, as timeline
/// entries with their summaries.
pub fn timeline_of(events: &[RecordedEvent], included: impl Fn(&RecordedEvent) -> bool) -> Vec<TimelineEntry> {
    let mut policy: Option<String> = None;
    events
        .iter()
        .filter(|e| included(e))
        .map(|e| {
            let stated = if let EventKind::Opened(o) = &e.event.kind {
                Some(&o.policy)
            } else {
                e.event.kind.clocks().iter().find_map(|c| c.plan.as_ref().map(|p| &p.policy))
            };
            if let Some(stated) = stated {
                policy = Some(stated.to_string());
            }
            let kind = match e.actor.kind {
                ActorKind::Agent => "agent",
                ActorKind::Customer => "customer",
                ActorKind::System => "system",
            };
            TimelineEntry {
                position: e.position,
                version: e.version,
                occurred_at: e.event.occurred_at,
                recorded_at: e.recorded_at,
                event_type: e.event.kind.name().to_owned(),
                actor: format!("{kind}:{}", e.actor.id.as_str()),
                command_id: e.command_id.to_string(),
                policy: policy.clone().unwrap_or_default(),
                summary: crate::describe::event(&e.event.kind),
                imported: e.imported,
            }
        })
        .collect()
}

/// A ticket's timeline read from the log: its events that `included` keeps (empty for an
/// unknown ticket). Blocking I/O.
pub fn read_timeline<L: EventLog>(
    log: &L,
    ticket: TicketId,
    included: impl Fn(&RecordedEvent) -> bool,
) -> Result<Vec<TimelineEntry>, LogError> {
    Ok(timeline_of(&log.read_stream(ticket, 1)?, included))
}

/// Fills in what each of a ticket's timeline entries says, read from the log (entries from
/// [`timeline_of`] have it already).
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
