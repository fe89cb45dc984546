//! Events: the facts a ticket's stream is made of.
//!
//! Events state their SLA consequences explicitly: an event that starts, pauses, resumes,
//! retargets or stops a clock carries a [`ClockChange`] with the due and warning instants it
//! implies and the policy version they were computed with, so a reader of the log never needs
//! the policy to know what was promised.

use chrono::TimeDelta;

use crate::calendar::Timestamp;
use crate::ids::{CategoryId, CustomerId, PlanId, Team, Text, TicketId, Tier};
use crate::policy::{PolicyVersion, Target};
use crate::severity::{Metric, Severity};

/// One fact about one ticket. `occurred_at` is the instant of the command that caused it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub ticket_id: TicketId,
    pub occurred_at: Timestamp,
    pub kind: EventKind,
}

impl Event {
    /// The SLA history the event states, without the instant it was recorded: `occurred_at` at
    /// the epoch, and every clock change with the instant it takes effect. A consequence recorded
    /// on time and the same one recorded late (rules V2, ADR 0005) are equal this way.
    pub fn without_detection(&self) -> Event {
        let mut e = self.clone();
        for change in e.kind.clocks_mut() {
            change.at = Some(change.effective_at(self.occurred_at));
        }
        e.occurred_at = Timestamp::UNIX_EPOCH;
        e
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventKind {
    Opened(Opened),
    SeveritySet {
        from: Severity,
        to: Severity,
        reason: Text,
        clocks: Vec<ClockChange>,
    },
    AgentResponded {
        message: Text,
        clocks: Vec<ClockChange>,
    },
    CustomerInfoRequested {
        request: Text,
        clocks: Vec<ClockChange>,
    },
    CustomerResponded {
        message: Text,
        clocks: Vec<ClockChange>,
    },
    /// The customer did not answer within the no-response window of cycle `cycle`, due at `due_at`.
    DowngradedForNoResponse {
        from: Severity,
        to: Severity,
        cycle: u32,
        due_at: Timestamp,
        clocks: Vec<ClockChange>,
    },
    Escalated {
        tier: Tier,
        team: Option<Team>,
        reason: Text,
        cause: EscalationCause,
    },
    /// `threshold_percent` of the target elapsed at `warn_at`; the breach is due at `due_at`.
    SlaWarning {
        metric: Metric,
        cycle: u32,
        threshold_percent: u8,
        warn_at: Timestamp,
        due_at: Timestamp,
    },
    /// The clock was due at `due_at`; `occurred_at` is when the breach was detected.
    SlaBreached {
        metric: Metric,
        cycle: u32,
        severity: Severity,
        due_at: Timestamp,
    },
    Resolved {
        resolution: Text,
        clocks: Vec<ClockChange>,
    },
    Reopened {
        reason: Text,
        clocks: Vec<ClockChange>,
    },
    Linked {
        other: TicketId,
        relation: LinkRelation,
    },
}

impl EventKind {
    /// A stable snake_case name: the NATS subject token and the log's label for the event.
    pub const fn name(&self) -> &'static str {
        match self {
            EventKind::Opened(_) => "opened",
            EventKind::SeveritySet { .. } => "severity_set",
            EventKind::AgentResponded { .. } => "agent_responded",
            EventKind::CustomerInfoRequested { .. } => "customer_info_requested",
            EventKind::CustomerResponded { .. } => "customer_responded",
            EventKind::DowngradedForNoResponse { .. } => "downgraded_for_no_response",
            EventKind::Escalated { .. } => "escalated",
            EventKind::SlaWarning { .. } => "sla_warning",
            EventKind::SlaBreached { .. } => "sla_breached",
            EventKind::Resolved { .. } => "resolved",
            EventKind::Reopened { .. } => "reopened",
            EventKind::Linked { .. } => "linked",
        }
    }

    fn clocks_mut(&mut self) -> &mut [ClockChange] {
        match self {
            EventKind::Opened(o) => &mut o.clocks,
            EventKind::SeveritySet { clocks, .. }
            | EventKind::AgentResponded { clocks, .. }
            | EventKind::CustomerInfoRequested { clocks, .. }
            | EventKind::CustomerResponded { clocks, .. }
            | EventKind::DowngradedForNoResponse { clocks, .. }
            | EventKind::Resolved { clocks, .. }
            | EventKind::Reopened { clocks, .. } => clocks,
            EventKind::Escalated { .. }
            | EventKind::SlaWarning { .. }
            | EventKind::SlaBreached { .. }
            | EventKind::Linked { .. } => &mut [],
        }
    }

    /// The clock changes this event states.
    pub fn clocks(&self) -> &[ClockChange] {
        match self {
            EventKind::Opened(o) => &o.clocks,
            EventKind::SeveritySet { clocks, .. }
            | EventKind::AgentResponded { clocks, .. }
            | EventKind::CustomerInfoRequested { clocks, .. }
            | EventKind::CustomerResponded { clocks, .. }
            | EventKind::DowngradedForNoResponse { clocks, .. }
            | EventKind::Resolved { clocks, .. }
            | EventKind::Reopened { clocks, .. } => clocks,
            EventKind::Escalated { .. }
            | EventKind::SlaWarning { .. }
            | EventKind::SlaBreached { .. }
            | EventKind::Linked { .. } => &[],
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opened {
    pub customer: CustomerId,
    pub plan: PlanId,
    pub category: CategoryId,
    pub title: Text,
    pub description: Text,
    pub severity: Severity,
    pub policy: PolicyVersion,
    pub clocks: Vec<ClockChange>,
}

/// Why a ticket was escalated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EscalationCause {
    /// A support tool escalated it.
    Manual,
    /// The policy escalates when this warning is recorded.
    Warning { metric: Metric, cycle: u32, threshold_percent: u8 },
    /// The policy escalates when this breach is recorded.
    Breach { metric: Metric, cycle: u32 },
}

/// How two tickets are linked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde-state", derive(serde::Serialize, serde::Deserialize))]
pub enum LinkRelation {
    /// This ticket was split: the other ticket is one of its sub-problems.
    SplitInto,
    /// This ticket is a sub-problem split from the other one.
    SplitFrom,
}

/// What happened to one clock, and what it promises afterwards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClockChange {
    pub metric: Metric,
    /// Increments each time the clock restarts (a new follow-up after each response, a new
    /// resolution clock after a reopen): with the ticket and metric it identifies a firing.
    pub cycle: u32,
    pub effect: ClockEffect,
    /// The target and instants after the change; `None` when the policy sets no target for this
    /// clock (it still measures time) or when the clock stopped.
    pub plan: Option<ClockPlan>,
    /// The instant the change takes effect, when it is earlier than the event's `occurred_at`:
    /// a consequence settled after its due instant (a no-response downgrade recorded late) takes
    /// effect at that due instant (ADR 0005). `None`: at `occurred_at`.
    pub at: Option<Timestamp>,
}

impl ClockChange {
    /// The instant the change takes effect, for an event that occurred at `occurred_at`.
    pub fn effective_at(&self, occurred_at: Timestamp) -> Timestamp {
        self.at.unwrap_or(occurred_at)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClockEffect {
    Started,
    Paused,
    Resumed,
    /// The severity changed: same clock, same elapsed time, new target.
    Retargeted,
    Stopped(ClockOutcome),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde-state", derive(serde::Serialize, serde::Deserialize))]
pub enum ClockOutcome {
    /// Stopped before its due instant.
    Met,
    /// Stopped at or after its due instant (the breach is recorded by its own event), or, for
    /// the no-response window, expired.
    Breached,
    /// Stopped because it no longer applies (the no-response window when the ticket is resolved).
    Cancelled,
    /// Stopped without ever having had a target.
    Untargeted,
}

/// A clock's promise as computed at decision time.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde-state", derive(serde::Serialize, serde::Deserialize))]
pub struct ClockPlan {
    pub severity: Severity,
    pub target: Target,
    /// The target as business time on the target's calendar (business days resolved per ADR 0002
    /// from the clock's start).
    #[cfg_attr(feature = "serde-state", serde(with = "crate::serde_delta"))]
    pub target_duration: TimeDelta,
    /// Business time already elapsed when the plan was made.
    #[cfg_attr(feature = "serde-state", serde(with = "crate::serde_delta"))]
    pub elapsed: TimeDelta,
    /// When the target is breached; `None` while the clock is paused.
    pub due_at: Option<Timestamp>,
    /// Pending warnings, ascending; empty while paused.
    pub warnings: Vec<WarningPlan>,
    pub policy: PolicyVersion,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde-state", derive(serde::Serialize, serde::Deserialize))]
pub struct WarningPlan {
    pub threshold_percent: u8,
    pub at: Timestamp,
}
