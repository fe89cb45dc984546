//! The timer service: runs the deadline index (`ticket_domain::DeadlineIndex`, a pure projection
//! of the log, re-exported here) against the log, fires what is due through the command service,
//! and checkpoints the index (`checkpoint`: a SHA-256-sealed image). Each firing has a
//! deterministic identity (ticket, metric, clock cycle, kind), used as the command id of the
//! command it issues, so a firing is recorded once however often it is issued (after a restart,
//! by two timers racing).

pub mod checkpoint;
mod scheduler;

pub use checkpoint::CheckpointError;
pub use scheduler::{CheckpointFile, FiredHook, Progress, Timer, TimerConfig, TimerError, TimerHandle, catch_up};
pub use ticket_domain::{DeadlineIndex, Firing, FiringKind};
