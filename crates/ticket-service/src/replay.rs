//! History and time travel over the log: a ticket's events, and its state as it was.

use ticket_domain::{RecordedEvent, TicketId, TicketState, evolve_recorded};
use ticket_log::{EventLog, LogError};

pub use ticket_log::At;

/// Every event of a ticket, in order.
pub fn history<L: EventLog>(log: &L, ticket: TicketId) -> Result<Vec<RecordedEvent>, LogError> {
    log.read_stream(ticket, 1)
}

/// A ticket as it was at `at`, and the position of the last event applied (0 if none). A stored
/// event that does not fit the ticket's history is reported as a corruption at its position.
pub fn state_at<L: EventLog>(log: &L, ticket: TicketId, at: At) -> Result<(TicketState, u64), LogError> {
    let mut state = TicketState::initial();
    let mut last = 0;
    for e in log.read_stream(ticket, 1)?.iter().take_while(|e| at.includes(e)) {
        evolve_recorded(&mut state, e)
            .map_err(|misfit| LogError::Corrupt { position: e.position, problem: misfit.to_string() })?;
        last = e.position;
    }
    Ok((state, last))
}
