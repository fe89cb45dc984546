//! The timer's core: the deadline index and the firings it issues, without I/O.
//!
//! The index is a projection of the log. For every running clock it holds the instants the
//! events stated (warnings, the due instant, the end of a no-response window) and forgets them as
//! events stop, pause, retarget or record them. Each firing has a deterministic identity (ticket,
//! metric, clock cycle, kind), used as the command id of the command it issues, so a firing is
//! recorded once however often it is issued (after a restart, by two timers racing).

mod index;
mod scheduler;

pub use index::{CheckpointError, DeadlineIndex, Firing, FiringKind};
pub use scheduler::{CheckpointFile, FiredHook, Progress, Timer, TimerConfig, TimerError, TimerHandle, catch_up};
