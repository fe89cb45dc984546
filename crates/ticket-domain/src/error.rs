//! Why a command was refused. Every variant a client can cause has a stable [`ErrorKind`], which
//! the protobuf error reply carries as its code.

use crate::calendar::Timestamp;
use crate::ids::{CategoryId, PlanId, TicketId};
use crate::severity::{Metric, Severity};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    #[error("invalid command: {0}")]
    InvalidCommand(String),
    #[error("ticket {0} not found")]
    TicketNotFound(TicketId),
    #[error("ticket {0} already exists")]
    TicketAlreadyExists(TicketId),
    #[error("unknown plan {0:?} in policy")]
    UnknownPlan(PlanId),
    #[error("unknown category {0:?} in policy")]
    UnknownCategory(CategoryId),
    #[error("severity {severity} is not in the {plan} contract, which allows at most {max}")]
    SeverityNotInContract { plan: PlanId, severity: Severity, max: Severity },
    #[error("severity {severity} is not available for {category} requests, which allow at most {max}")]
    SeverityNotAllowedForCategory { category: CategoryId, severity: Severity, max: Severity },
    #[error("ticket {0} is resolved")]
    TicketResolved(TicketId),
    #[error("invalid transition: {0}")]
    InvalidTransition(Transition),
    #[error("the {metric} firing of cycle {cycle} is moot: {reason}")]
    TimerMoot { metric: Metric, cycle: u32, reason: MootReason },
    #[error("the {metric} firing is not due before {due_at} (command issued at {now})")]
    TimerNotDue { metric: Metric, due_at: Timestamp, now: Timestamp },
    /// An importer's command whose instant is not in the past of the service's clock, or not in
    /// time order with the ticket's history (an importer sends each ticket's history in order).
    #[error("imported command issued at {issued_at} {problem}")]
    ImportedInstant { issued_at: Timestamp, problem: ImportProblem },
}

/// Why an importer's instant was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ImportProblem {
    #[error("lies ahead of the service's clock ({now}): only the past can be imported")]
    AheadOfClock { now: Timestamp },
    #[error("is before the ticket's last event at {last_event_at}: a ticket's history is imported in time order")]
    OutOfOrder { last_event_at: Timestamp },
}

/// A lifecycle step that the ticket's status does not allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Transition {
    #[error("the ticket is already resolved")]
    AlreadyResolved,
    #[error("only a resolved ticket can be reopened")]
    NotResolved,
    #[error("the ticket already awaits the customer")]
    AlreadyAwaitingCustomer,
    #[error("the ticket already has this severity")]
    SeverityUnchanged,
    #[error("the ticket is already with this tier and team")]
    AlreadyEscalated,
}

/// Why a timer firing no longer applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum MootReason {
    #[error("the clock is not running")]
    NotRunning,
    #[error("the clock has moved on to another cycle")]
    OtherCycle,
    #[error("the clock was retargeted to another instant")]
    Retargeted,
    #[error("it was already recorded")]
    AlreadyRecorded,
    #[error("the breach is due as well, which supersedes the warning")]
    SupersededByBreach,
    #[error("the ticket no longer awaits the customer")]
    NotAwaitingCustomer,
}

/// A stable classification of [`DomainError`], for callers to match on and for wire error codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    InvalidCommand,
    TicketNotFound,
    TicketAlreadyExists,
    UnknownPlan,
    UnknownCategory,
    SeverityNotInContract,
    SeverityNotAllowedForCategory,
    TicketResolved,
    InvalidTransition,
    TimerMoot,
    TimerNotDue,
}

impl DomainError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            DomainError::InvalidCommand(_) => ErrorKind::InvalidCommand,
            DomainError::TicketNotFound(_) => ErrorKind::TicketNotFound,
            DomainError::TicketAlreadyExists(_) => ErrorKind::TicketAlreadyExists,
            DomainError::UnknownPlan(_) => ErrorKind::UnknownPlan,
            DomainError::UnknownCategory(_) => ErrorKind::UnknownCategory,
            DomainError::SeverityNotInContract { .. } => ErrorKind::SeverityNotInContract,
            DomainError::SeverityNotAllowedForCategory { .. } => ErrorKind::SeverityNotAllowedForCategory,
            DomainError::TicketResolved(_) => ErrorKind::TicketResolved,
            DomainError::InvalidTransition(_) => ErrorKind::InvalidTransition,
            DomainError::TimerMoot { .. } => ErrorKind::TimerMoot,
            DomainError::TimerNotDue { .. } => ErrorKind::TimerNotDue,
            DomainError::ImportedInstant { .. } => ErrorKind::InvalidCommand,
        }
    }
}
