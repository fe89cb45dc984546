//! The pure heart of ticketd: commands, events, the Decider, SLA policies and business calendars.
//!
//! Nothing here does I/O or reads a clock: the current instant arrives inside every command.

pub mod calendar;
pub mod command;
pub mod deadline;
pub mod decide;
pub mod envelope;
pub mod error;
pub mod event;
pub mod ids;
mod metric_map;
pub mod partition;
pub mod policy;
#[cfg(feature = "serde-state")]
mod serde_delta;
pub mod severity;
pub mod state;
#[cfg(any(test, feature = "testing"))]
pub mod testing;

pub use calendar::{Calendar, Timestamp};
pub use command::{Actor, ActorKind, Command, CommandBody, OpenTicket, SplitTicket};
pub use deadline::{Changes, ClockEntryOwned, ClockEntryRef, ClockKey, DeadlineIndex, Firing, FiringKind};
pub use decide::{Rules, check_entitlement, decide, decide_under};
pub use envelope::RecordedEvent;
pub use error::{DomainError, ErrorKind, ImportProblem, MootReason, Transition};
pub use event::{
    ClockChange, ClockEffect, ClockOutcome, ClockPlan, EscalationCause, Event, EventKind, LinkRelation, Opened,
    WarningPlan,
};
pub use ids::{
    ActorId, CalendarId, CategoryId, CommandId, CustomerId, EventId, IdError, PlanId, Team, Text, TicketId, Tier,
    TraceId,
};
pub use metric_map::MetricMap;
pub use partition::{MAX_PARTITIONS, Partition, PartitionCountError, Partitions};
pub use policy::{Policy, PolicyError, PolicyVersion, Target, TargetAmount};
pub use severity::{Metric, Severity};
pub use state::{
    Clock, ClockStatus, Misfit, SeverityCause, SeverityChange, Status, Ticket, TicketState, business_times, evolve,
    evolve_recorded,
};
