//! A ticket's stored events, read back from the log: how the tickets model gets a resting
//! ticket's state without keeping a copy of it (the log holds it already, indexed by ticket).

use std::fmt;

use ticket_domain::{RecordedEvent, TicketId};
use ticket_log::{EventLog, LogError};

/// A ticket's events, in order (blocking I/O).
pub trait History: Send + Sync + fmt::Debug {
    fn stream(&self, ticket: TicketId) -> Result<Vec<RecordedEvent>, LogError>;
}

/// The streams of a log.
pub(crate) struct LogHistory<L>(pub(crate) L);

impl<L> fmt::Debug for LogHistory<L> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LogHistory")
    }
}

impl<L: EventLog> History for LogHistory<L> {
    fn stream(&self, ticket: TicketId) -> Result<Vec<RecordedEvent>, LogError> {
        self.0.read_stream(ticket, 1)
    }
}
