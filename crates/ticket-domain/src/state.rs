//! The state of one ticket, and `evolve`: a left fold of its events. Evolve needs no policy: the
//! events carry every due instant.

use crate::MetricMap;
use crate::calendar::{Calendar, Timestamp};
use crate::envelope::RecordedEvent;
use crate::event::{ClockChange, ClockEffect, ClockOutcome, ClockPlan, Event, EventKind, LinkRelation};
use crate::ids::{CategoryId, CustomerId, PlanId, Team, Text, TicketId, Tier};
use crate::policy::{Policy, PolicyVersion};
use crate::severity::{Metric, Severity};

/// A ticket before it is opened, or an open (possibly resolved) ticket.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde-state", derive(serde::Serialize, serde::Deserialize))]
pub enum TicketState {
    #[default]
    Unopened,
    Opened(Box<Ticket>),
}

impl TicketState {
    /// The state before any event.
    pub const fn initial() -> Self {
        TicketState::Unopened
    }

    /// The number of events applied: the expected version for the next append.
    pub fn version(&self) -> u64 {
        match self {
            TicketState::Unopened => 0,
            TicketState::Opened(t) => t.version,
        }
    }

    pub fn ticket(&self) -> Option<&Ticket> {
        match self {
            TicketState::Unopened => None,
            TicketState::Opened(t) => Some(t),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde-state", derive(serde::Serialize, serde::Deserialize))]
pub enum Status {
    Open,
    AwaitingCustomer,
    Resolved,
}

/// Why the severity changed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde-state", derive(serde::Serialize, serde::Deserialize))]
pub enum SeverityCause {
    Opened,
    Set { reason: Text },
    NoResponse,
}

#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde-state", derive(serde::Serialize, serde::Deserialize))]
pub struct SeverityChange {
    pub at: Timestamp,
    pub from: Option<Severity>,
    pub to: Severity,
    pub cause: SeverityCause,
}

#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde-state", derive(serde::Serialize, serde::Deserialize))]
pub struct Ticket {
    pub id: TicketId,
    pub customer: CustomerId,
    pub plan: PlanId,
    pub category: CategoryId,
    pub title: Text,
    pub description: Text,
    pub severity: Severity,
    pub status: Status,
    pub opened_at: Timestamp,
    pub first_response_at: Option<Timestamp>,
    pub resolved_at: Option<Timestamp>,
    pub tier: Option<Tier>,
    pub team: Option<Team>,
    /// The current cycle of each clock the ticket has had.
    pub clocks: MetricMap<Clock>,
    pub severity_history: Vec<SeverityChange>,
    pub links: Vec<(TicketId, LinkRelation)>,
    /// The policy the ticket was opened under.
    pub policy: PolicyVersion,
    /// Events applied so far.
    pub version: u64,
    /// The instant of the last event applied: time never runs backwards within a ticket.
    pub last_event_at: Timestamp,
    /// When the ticket's history was imported: the append instant of its latest imported event
    /// (set by [`evolve_recorded`]). What its clocks had due by then was past at import.
    pub imported_at: Option<Timestamp>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde-state", derive(serde::Serialize, serde::Deserialize))]
pub enum ClockStatus {
    Running,
    Paused,
    Stopped(ClockOutcome),
}

/// One cycle of a clock: when it ran, and its latest promise.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde-state", derive(serde::Serialize, serde::Deserialize))]
pub struct Clock {
    pub metric: Metric,
    pub cycle: u32,
    pub started_at: Timestamp,
    pub status: ClockStatus,
    /// Closed running spans `[from, to)`; the open one starts at `running_since`.
    pub segments: Vec<(Timestamp, Timestamp)>,
    pub running_since: Option<Timestamp>,
    pub plan: Option<ClockPlan>,
    /// Warning thresholds recorded in this cycle.
    pub warned: Vec<u8>,
    pub breached: bool,
}

impl Clock {
    pub fn is_active(&self) -> bool {
        matches!(self.status, ClockStatus::Running | ClockStatus::Paused)
    }

    /// Business time this clock has run on `calendar` up to `now`.
    pub fn elapsed(&self, calendar: &Calendar, now: Timestamp) -> chrono::TimeDelta {
        let closed = self.segments.iter().fold(chrono::TimeDelta::zero(), |acc, (a, b)| acc + calendar.elapsed(*a, *b));
        closed + self.running_since.map_or(chrono::TimeDelta::zero(), |since| calendar.elapsed(since, now))
    }

    /// The instant the clock is due, while it runs and has a target.
    pub fn due_at(&self) -> Option<Timestamp> {
        match self.status {
            ClockStatus::Running => self.plan.as_ref().and_then(|p| p.due_at),
            ClockStatus::Paused | ClockStatus::Stopped(_) => None,
        }
    }
}

/// A clock's business time run at `now` (up to its stop, once stopped) and, while it runs or is
/// paused, the business time left before its target (negative once overdue), on its target's
/// calendar in `policy`; `None` without a target or when the policy lacks the calendar.
pub fn business_times(
    clock: &Clock,
    policy: &Policy,
    now: Timestamp,
) -> Option<(chrono::TimeDelta, Option<chrono::TimeDelta>)> {
    let plan = clock.plan.as_ref()?;
    let calendar = policy.calendar(&plan.target.calendar)?;
    let until = match clock.status {
        ClockStatus::Running | ClockStatus::Paused => now,
        ClockStatus::Stopped(_) => clock.segments.last().map_or(clock.started_at, |s| s.1),
    };
    let elapsed = clock.elapsed(calendar, until);
    Some((elapsed, clock.is_active().then(|| plan.target_duration - elapsed)))
}

impl Ticket {
    pub fn clock(&self, metric: Metric) -> Option<&Clock> {
        self.clocks.get(&metric)
    }

    pub fn is_resolved(&self) -> bool {
        self.status == Status::Resolved
    }
}

/// Why an event cannot follow a ticket's state. `decide` never produces one, so a stored event
/// that does not fit is a corruption: it is reported by position and its ticket quarantined.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Misfit {
    #[error("{event} before the ticket was opened")]
    BeforeOpened { event: &'static str },
    #[error("ticket {0} opened a second time")]
    OpenedTwice(TicketId),
    #[error("an event of ticket {event} applied to ticket {state}")]
    OtherTicket { state: TicketId, event: TicketId },
    #[error("{effect} of {metric} cycle {cycle}, where {current}")]
    Clock { metric: Metric, cycle: u32, effect: &'static str, current: String },
}

/// Applies one event to a ticket's state. An event that cannot follow the state leaves it as it
/// was and says why; `evolve` never panics, whatever the event.
pub fn evolve(state: &mut TicketState, event: &Event) -> Result<(), Misfit> {
    match state {
        TicketState::Unopened => match &event.kind {
            EventKind::Opened(o) => {
                check_clocks(&MetricMap::new(), &o.clocks)?;
                let mut ticket = Ticket {
                    id: event.ticket_id,
                    customer: o.customer.clone(),
                    plan: o.plan.clone(),
                    category: o.category.clone(),
                    title: o.title.clone(),
                    description: o.description.clone(),
                    severity: o.severity,
                    status: Status::Open,
                    opened_at: event.occurred_at,
                    first_response_at: None,
                    resolved_at: None,
                    tier: None,
                    team: None,
                    clocks: MetricMap::new(),
                    severity_history: vec![SeverityChange {
                        at: event.occurred_at,
                        from: None,
                        to: o.severity,
                        cause: SeverityCause::Opened,
                    }],
                    links: Vec::new(),
                    policy: o.policy.clone(),
                    version: 1,
                    last_event_at: event.occurred_at,
                    imported_at: None,
                };
                apply_clocks(&mut ticket.clocks, event.occurred_at, &o.clocks);
                *state = TicketState::Opened(Box::new(ticket));
                Ok(())
            }
            EventKind::SeveritySet { .. }
            | EventKind::AgentResponded { .. }
            | EventKind::CustomerInfoRequested { .. }
            | EventKind::CustomerResponded { .. }
            | EventKind::DowngradedForNoResponse { .. }
            | EventKind::Escalated { .. }
            | EventKind::SlaWarning { .. }
            | EventKind::SlaBreached { .. }
            | EventKind::Resolved { .. }
            | EventKind::Reopened { .. }
            | EventKind::Linked { .. } => Err(Misfit::BeforeOpened { event: event.kind.name() }),
        },
        TicketState::Opened(ticket) => {
            if ticket.id != event.ticket_id {
                return Err(Misfit::OtherTicket { state: ticket.id, event: event.ticket_id });
            }
            if let EventKind::Opened(_) = event.kind {
                return Err(Misfit::OpenedTwice(ticket.id));
            }
            check_clocks(&ticket.clocks, event.kind.clocks())?;
            apply(ticket, event);
            ticket.version += 1;
            ticket.last_event_at = ticket.last_event_at.max(event.occurred_at);
            Ok(())
        }
    }
}

/// Applies a stored event: [`evolve`], and for an imported one the instant of its import, which
/// the next live decision needs (rules V3: nothing past at import is settled).
pub fn evolve_recorded(state: &mut TicketState, recorded: &RecordedEvent) -> Result<(), Misfit> {
    evolve(state, &recorded.event)?;
    if recorded.imported
        && let TicketState::Opened(ticket) = state
    {
        ticket.imported_at = Some(ticket.imported_at.map_or(recorded.recorded_at, |at| at.max(recorded.recorded_at)));
    }
    Ok(())
}

/// Checks, without changing anything, that every clock change of an event names a clock that is
/// there: a new cycle follows the current one, and every other change is of the current cycle.
fn check_clocks(clocks: &MetricMap<Clock>, changes: &[ClockChange]) -> Result<(), Misfit> {
    for (i, change) in changes.iter().enumerate() {
        // The cycle this metric is in: as an earlier change of this event left it, else the
        // ticket's (no allocation: it runs for every event folded).
        let earlier = changes.get(..i).and_then(|before| before.iter().rev().find(|c| c.metric == change.metric));
        let current = earlier.map(|c| c.cycle).or_else(|| clocks.get(&change.metric).map(|c| c.cycle));
        let fits = match change.effect {
            ClockEffect::Started => change.cycle == current.map_or(1, |c| c.saturating_add(1)),
            ClockEffect::Paused | ClockEffect::Resumed | ClockEffect::Retargeted | ClockEffect::Stopped(_) => {
                current == Some(change.cycle)
            }
        };
        if !fits {
            return Err(Misfit::Clock {
                metric: change.metric,
                cycle: change.cycle,
                effect: effect_name(change.effect),
                current: current
                    .map_or_else(|| "the ticket has no such clock".to_owned(), |c| format!("cycle {c} is current")),
            });
        }
    }
    Ok(())
}

const fn effect_name(effect: ClockEffect) -> &'static str {
    match effect {
        ClockEffect::Started => "start",
        ClockEffect::Paused => "pause",
        ClockEffect::Resumed => "resumption",
        ClockEffect::Retargeted => "retargeting",
        ClockEffect::Stopped(_) => "stop",
    }
}

fn apply(ticket: &mut Ticket, event: &Event) {
    let at = event.occurred_at;
    match &event.kind {
        // Refused by `evolve` before anything is applied.
        EventKind::Opened(_) => {}
        EventKind::SeveritySet { from, to, reason, clocks } => {
            ticket.severity = *to;
            ticket.severity_history.push(SeverityChange {
                at,
                from: Some(*from),
                to: *to,
                cause: SeverityCause::Set { reason: reason.clone() },
            });
            apply_clocks(&mut ticket.clocks, at, clocks);
        }
        EventKind::AgentResponded { clocks, .. } => {
            ticket.first_response_at.get_or_insert(at);
            apply_clocks(&mut ticket.clocks, at, clocks);
        }
        EventKind::CustomerInfoRequested { clocks, .. } => {
            ticket.first_response_at.get_or_insert(at);
            ticket.status = Status::AwaitingCustomer;
            apply_clocks(&mut ticket.clocks, at, clocks);
        }
        EventKind::CustomerResponded { clocks, .. } => {
            if ticket.status == Status::AwaitingCustomer {
                ticket.status = Status::Open;
            }
            apply_clocks(&mut ticket.clocks, at, clocks);
        }
        EventKind::DowngradedForNoResponse { from, to, clocks, .. } => {
            ticket.severity = *to;
            // The downgrade takes effect when its window expired, which its clock changes state.
            let at = clocks.iter().find_map(|c| c.at).unwrap_or(at);
            ticket.severity_history.push(SeverityChange {
                at,
                from: Some(*from),
                to: *to,
                cause: SeverityCause::NoResponse,
            });
            apply_clocks(&mut ticket.clocks, at, clocks);
        }
        EventKind::Escalated { tier, team, .. } => {
            ticket.tier = Some(tier.clone());
            ticket.team = team.clone();
        }
        EventKind::SlaWarning { metric, cycle, threshold_percent, .. } => {
            if let Some(clock) = ticket.clocks.get_mut(metric).filter(|c| c.cycle == *cycle) {
                clock.warned.push(*threshold_percent);
                if let Some(plan) = clock.plan.as_mut() {
                    plan.warnings.retain(|w| w.threshold_percent != *threshold_percent);
                }
            }
        }
        EventKind::SlaBreached { metric, cycle, .. } => {
            if let Some(clock) = ticket.clocks.get_mut(metric).filter(|c| c.cycle == *cycle) {
                clock.breached = true;
                if let Some(plan) = clock.plan.as_mut() {
                    plan.warnings.clear();
                }
            }
        }
        EventKind::Resolved { clocks, .. } => {
            ticket.status = Status::Resolved;
            ticket.resolved_at = Some(at);
            apply_clocks(&mut ticket.clocks, at, clocks);
        }
        EventKind::Reopened { clocks, .. } => {
            ticket.status = Status::Open;
            ticket.resolved_at = None;
            apply_clocks(&mut ticket.clocks, at, clocks);
        }
        EventKind::Linked { other, relation } => ticket.links.push((*other, *relation)),
    }
}

/// Applies clock changes in order; `decide` uses it on a scratch copy while it builds changes.
/// A change of a clock that is not there is skipped (`evolve` checks every change first).
pub(crate) fn apply_clocks(clocks: &mut MetricMap<Clock>, occurred_at: Timestamp, changes: &[ClockChange]) {
    for change in changes {
        let at = change.effective_at(occurred_at);
        match change.effect {
            ClockEffect::Started => {
                clocks.insert(
                    change.metric,
                    Clock {
                        metric: change.metric,
                        cycle: change.cycle,
                        started_at: at,
                        status: ClockStatus::Running,
                        segments: Vec::new(),
                        running_since: Some(at),
                        plan: change.plan.clone(),
                        warned: Vec::new(),
                        breached: false,
                    },
                );
            }
            ClockEffect::Paused | ClockEffect::Resumed | ClockEffect::Retargeted | ClockEffect::Stopped(_) => {
                let Some(clock) = clocks.get_mut(&change.metric).filter(|c| c.cycle == change.cycle) else {
                    continue;
                };
                match change.effect {
                    ClockEffect::Started => {}
                    ClockEffect::Paused => {
                        if let Some(since) = clock.running_since.take() {
                            clock.segments.push((since, at));
                        }
                        clock.status = ClockStatus::Paused;
                    }
                    ClockEffect::Resumed => {
                        clock.running_since = Some(at);
                        clock.status = ClockStatus::Running;
                    }
                    ClockEffect::Retargeted => {}
                    ClockEffect::Stopped(outcome) => {
                        if let Some(since) = clock.running_since.take() {
                            clock.segments.push((since, at));
                        }
                        clock.status = ClockStatus::Stopped(outcome);
                    }
                }
                clock.plan = change.plan.clone();
            }
        }
    }
}

#[cfg(test)]
mod tests;
