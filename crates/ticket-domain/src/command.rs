//! Commands: what support tools, customers and the timer service ask of a ticket.

use crate::calendar::Timestamp;
use crate::ids::{ActorId, CategoryId, CommandId, CustomerId, PlanId, Team, Text, TicketId, Tier};
use crate::severity::{Metric, Severity};

/// Who issued a command.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Actor {
    pub kind: ActorKind,
    pub id: ActorId,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ActorKind {
    /// A support agent, through a support tool or `ticketctl`.
    Agent,
    /// The customer (an administrator of the customer organisation).
    Customer,
    /// The engine itself: the timer service and other automations.
    System,
}

/// A command with its metadata. `issued_at` is the current instant for the decision: the domain
/// never reads a clock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    /// The idempotency key: retrying a command with the same id yields the original result.
    pub id: CommandId,
    pub ticket_id: TicketId,
    pub actor: Actor,
    pub issued_at: Timestamp,
    pub body: CommandBody,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandBody {
    Open(OpenTicket),
    SetSeverity {
        severity: Severity,
        reason: Text,
    },
    RecordAgentResponse {
        message: Text,
    },
    RequestCustomerInfo {
        request: Text,
    },
    RecordCustomerReply {
        message: Text,
    },
    Escalate {
        tier: Tier,
        team: Option<Team>,
        reason: Text,
    },
    Resolve {
        resolution: Text,
    },
    Reopen {
        reason: Text,
    },
    /// A sub-problem becomes its own ticket, linked both ways to this one.
    Split(SplitTicket),
    /// Issued by the timer service when a warning instant passes.
    RecordSlaWarning {
        metric: Metric,
        cycle: u32,
        threshold_percent: u8,
        warn_at: Timestamp,
    },
    /// Issued by the timer service when a due instant passes.
    RecordSlaBreach {
        metric: Metric,
        cycle: u32,
        due_at: Timestamp,
        /// The due instant was already past when the ticket's history was imported, and the
        /// command is issued at the import's append instant: the breach is recorded as detected
        /// at import, and so is every other breach due by then, without the warnings, downgrades
        /// and escalations whose instants were past at import (they are not fired).
        at_import: bool,
    },
    /// Issued by the timer service when the no-response window of an awaiting ticket passes.
    DowngradeForNoResponse {
        cycle: u32,
        due_at: Timestamp,
    },
}

impl CommandBody {
    /// A stable snake_case name: the NATS endpoint and the log's label for the command.
    pub const fn name(&self) -> &'static str {
        match self {
            CommandBody::Open(_) => "open",
            CommandBody::SetSeverity { .. } => "set_severity",
            CommandBody::RecordAgentResponse { .. } => "record_agent_response",
            CommandBody::RequestCustomerInfo { .. } => "request_customer_info",
            CommandBody::RecordCustomerReply { .. } => "record_customer_reply",
            CommandBody::Escalate { .. } => "escalate",
            CommandBody::Resolve { .. } => "resolve",
            CommandBody::Reopen { .. } => "reopen",
            CommandBody::Split(_) => "split",
            CommandBody::RecordSlaWarning { .. } => "record_sla_warning",
            CommandBody::RecordSlaBreach { .. } => "record_sla_breach",
            CommandBody::DowngradeForNoResponse { .. } => "downgrade_for_no_response",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenTicket {
    pub customer: CustomerId,
    pub plan: PlanId,
    pub category: CategoryId,
    pub title: Text,
    pub description: Text,
    /// The severity support assigns from the issue type and impact; checked against the
    /// entitlement, never clamped.
    pub severity: Severity,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SplitTicket {
    /// The id of the new ticket (minted by the command service).
    pub new_ticket: TicketId,
    pub category: CategoryId,
    pub severity: Severity,
    pub title: Text,
    pub description: Text,
}
