//! An event as stored in the log: the event and the metadata the log and the command service
//! add when they append it.

use crate::calendar::Timestamp;
use crate::command::Actor;
use crate::event::Event;
use crate::ids::{CommandId, EventId, TraceId};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedEvent {
    /// uuid v7, minted at append.
    pub event_id: EventId,
    /// Position in the ticket's stream, from 1, contiguous.
    pub version: u64,
    /// Position in the global log, from 1, gapless.
    pub position: u64,
    /// When the log stored the event (the event's own instant is `event.occurred_at`).
    pub recorded_at: Timestamp,
    pub actor: Actor,
    pub command_id: CommandId,
    pub correlation_id: Option<TraceId>,
    pub causation_id: Option<TraceId>,
    /// Decided on an importer's command (the command service's `Stamp::Imported`): the event's
    /// instant is another helpdesk's, `recorded_at` the import's append.
    pub imported: bool,
    pub event: Event,
}

impl RecordedEvent {
    /// `event`, decided for `command`, at `version` of its ticket and `position` of a log,
    /// recorded at the command's instant, without trace ids: for logs kept in memory (replays,
    /// simulations, tests) rather than stored by an engine.
    pub fn of_command(
        event_id: EventId,
        command: &crate::command::Command,
        version: u64,
        position: u64,
        event: Event,
    ) -> Self {
        Self {
            event_id,
            version,
            position,
            recorded_at: command.issued_at,
            actor: command.actor.clone(),
            command_id: command.id.clone(),
            correlation_id: None,
            causation_id: None,
            imported: false,
            event,
        }
    }
}
