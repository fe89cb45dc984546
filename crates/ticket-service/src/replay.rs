//! History and time travel over the log: a ticket's events, and its state as it was.

use ticket_domain::{RecordedEvent, TicketId, TicketState, Timestamp, evolve};
use ticket_log::{EventLog, LogError};

/// A moment in the log's history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum At {
    /// After the event at this global position (and every earlier one).
    Position(u64),
    /// After every event that occurred at or before this instant.
    Instant(Timestamp),
    /// After every event.
    Now,
}

impl At {
    fn includes(&self, event: &RecordedEvent) -> bool {
        match self {
            At::Position(p) => event.position <= *p,
            At::Instant(t) => event.event.occurred_at <= *t,
            At::Now => true,
        }
    }
}

/// Every event of a ticket, in order.
pub fn history<L: EventLog>(log: &L, ticket: TicketId) -> Result<Vec<RecordedEvent>, LogError> {
    log.read_stream(ticket, 1)
}

/// A ticket as it was at `at`, and the position of the last event applied (0 if none).
pub fn state_at<L: EventLog>(log: &L, ticket: TicketId, at: At) -> Result<(TicketState, u64), LogError> {
    let mut state = TicketState::initial();
    let mut last = 0;
    for e in log.read_stream(ticket, 1)?.iter().take_while(|e| at.includes(e)) {
        state = evolve(state, &e.event);
        last = e.position;
    }
    Ok((state, last))
}
