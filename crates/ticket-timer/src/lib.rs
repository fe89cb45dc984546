//! The timer service: runs the deadline index (`ticket_domain::DeadlineIndex`, a pure projection
//! of the log, re-exported here) against the log and fires what is due through the command
//! service. Each firing has a deterministic identity (ticket, metric, clock cycle, kind), used as
//! the command id of the command it issues, so a firing is recorded once however often it is
//! issued (after a restart, by two timers racing).
//!
//! The index is kept durably and incrementally in the `timer` space of the state store
//! ([`store`]: one row per clock, the position in the same atomic batch, format-guarded),
//! flushed as it changes (coalesced, every `TimerConfig::flush_every` at most) and during long
//! catch-ups, so that a restart after a kill reads the rows and replays only the log's tail.
//! [`checkpoint`] is the index's compact whole image (SHA-256-sealed): its codec is the rows',
//! and the benchmark reports the image's size; the timer no longer writes it.

pub mod checkpoint;
mod scheduler;
pub mod store;

pub use checkpoint::CheckpointError;
pub use scheduler::{
    CaughtUp, FiredHook, Progress, Timer, TimerConfig, TimerError, TimerHandle, catch_up, catch_up_durably,
};
pub use store::{Flushed, IndexStore, Loaded};
pub use ticket_domain::{DeadlineIndex, Firing, FiringKind};
