//! The command service of ticketd, and replay of history for audits.
//!
//! [`CommandService::execute`] loads a ticket's state (from a cache, else a snapshot plus the
//! events after it, else the whole stream), decides the command, and appends the events with
//! the version the decision was made on. Commands on one ticket are serialized in-process; a
//! version conflict (another writer got there first) reloads and decides again, a bounded number
//! of times. A command id already in the log returns the original events: idempotency is the
//! log's, and permanent.

pub mod audit;
mod clock;
mod metrics;
pub mod replay;
mod service;
mod snapshot;

pub use clock::{Clock, SimulatedClock, SystemClock, Wait};
pub use service::{
    CommandRequest, CommandResult, CommandService, ServiceConfig, ServiceError, ServiceErrorKind, Stamp,
};
pub use snapshot::{SNAPSHOT_FORMAT, decode_snapshot, encode_snapshot};
