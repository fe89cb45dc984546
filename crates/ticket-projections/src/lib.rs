//! ticketd's read models: projections of the event log.
//!
//! - A [`ReadModel`] is a pure fold over stored events; [`Projected`] pairs it with the position
//!   of the last event applied, so applying an event twice (after a restart, a replayed batch) is
//!   harmless.
//! - [`Checkpoints`] keeps each projection's image (bincode, sealed with SHA-256) in a directory;
//!   an image that is missing, torn, of another format or ahead of the log is rebuilt from the log.
//! - [`Projector`] follows the log for a set of projections, checkpoints them, reports their lag,
//!   rebuilds one beside the live one and swaps it in once it has caught up, and lets a query
//!   wait until a position has been applied (read-your-writes).
//! - [`ReadModels`] builds every model at once from the log, up to a position or an instant (time
//!   travel, and the rebuild benchmark). [`whatif`] replays history under a candidate policy.

pub mod answer;
mod checkpoint;
pub mod describe;
mod model;
pub mod models;
mod runtime;
mod set;
pub mod whatif;

pub use checkpoint::{CheckpointError, Checkpoints};
pub use model::{Projected, ReadModel};
pub use models::board::{Board, BoardEntry};
pub use models::compliance::{Compliance, ComplianceRow, Period};
pub use models::tickets::{ClockView, CustomerTicket, Quarantine, TicketDetail, Tickets};
pub use models::timeline::{Timeline, TimelineEntry, add_details};
pub use runtime::{Lag, Projector, ProjectorConfig, ProjectorError, Shared};
pub use set::{At, ReadModels};
/// Moved to the domain (a pure reading of a clock); re-exported for the API's ticket query.
pub use ticket_domain::business_times;

#[cfg(test)]
mod tests;
