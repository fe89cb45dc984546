//! ticketd's read models: projections of the event log.
//!
//! - A [`ReadModel`] is a pure fold over stored events; [`Projected`] pairs it with the position
//!   of the last event applied, so applying an event twice (after a restart, a replayed batch) is
//!   harmless.
//! - Each model keeps its rows in its own space of a [`ticket_log::StateStore`], incrementally:
//!   open tickets' rows in memory, resolved ones' on disk (or, for a ticket's state, folded back
//!   from its stream in the log when asked: [`History`]), index records by key (`rows.rs`); its
//!   position and format in the same atomic batch. State of another format, unreadable or ahead
//!   of the log is cleared and rebuilt from the log. The timeline has no model: it is read from
//!   the ticket's stream at query time.
//! - [`Projector`] follows the log for the models, flushes what changed, reports their lag,
//!   rebuilds one in place, and lets a query wait until a position has been applied
//!   (read-your-writes); [`answer::Views`] is what queries ask of it.
//! - [`ReadModels`] builds every model at once from the log, up to a position or an instant (time
//!   travel, and the rebuild benchmark). [`whatif`] replays history under a candidate policy.

pub mod answer;
pub mod describe;
mod history;
mod model;
pub mod models;
mod rows;
mod runtime;
mod set;
pub mod whatif;

pub use history::History;
pub use model::{Projected, ReadModel};
pub use models::board::{Board, BoardEntry};
pub use models::compliance::{Compliance, ComplianceRow, Period, Tally};
pub use models::tickets::{ClockView, Quarantine, TicketDetail, Tickets};
pub use models::timeline::{TimelineEntry, add_details, read_timeline, timeline_of};
pub use rows::StateError;
pub use runtime::{Lag, Projector, ProjectorConfig, ProjectorError, Shared};
pub use set::{At, ReadModels};
/// Moved to the domain (a pure reading of a clock); re-exported for the API's ticket query.
pub use ticket_domain::business_times;

#[cfg(test)]
mod golden_tests;
#[cfg(test)]
mod tests;
