//! `decide`: checks a command against a ticket's state and the SLA policy and returns the events
//! it causes, or why it is refused. Pure and deterministic.

use chrono::TimeDelta;

use crate::MetricMap;
use crate::calendar::Timestamp;
use crate::command::{ActorKind, Command, CommandBody, OpenTicket, SplitTicket};
use crate::error::{DomainError, MootReason, Transition};
use crate::event::{
    ClockChange, ClockEffect, ClockOutcome, ClockPlan, EscalationCause, Event, EventKind, LinkRelation, Opened,
    WarningPlan,
};
use crate::ids::{CategoryId, PlanId, Text};
use crate::policy::{EscalationRule, Policy};
use crate::severity::{Metric, Severity};
use crate::state::{Clock, ClockStatus, Status, Ticket, TicketState, apply_clocks, evolve};

/// The decision rules a command was decided under. The log records them with each command, so
/// that an audit re-runs a stored decision under the rules it was made with, while new commands
/// are decided under [`Rules::CURRENT`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Rules {
    /// Until issue 10: a decision records the breaches due by its own instant; a no-response
    /// downgrade is recorded only by the timer's firing and takes effect at the firing's instant;
    /// warning instants are in whole seconds, rounded down; a severity change is compared with
    /// the severity before due consequences are settled.
    V1,
    /// Every time-driven consequence (warning, breach, no-response downgrade with its
    /// retargeting, the policy's escalations) takes effect at its own due instant, whether the
    /// timer records it on time, late, or the next decision settles it; a decision settles every
    /// consequence due by its instant in due-instant order before it checks the command; warning
    /// instants are exact and never early (ADR 0005).
    V2,
    /// As V2, and a live decision on a ticket whose history was imported settles nothing that
    /// was past at import (its `imported_at`): no warning, no no-response downgrade, no
    /// escalation; a breach due by then is recorded, as detected at import, without the policy's
    /// escalation. The timer never fires these either, so no decision depends on its lag. And
    /// the policy's automatic escalations never lower a ticket's tier (in the policy's order of
    /// tiers): a ticket a person escalated higher stays there.
    V3,
}

impl Rules {
    /// The rules new commands are decided under.
    pub const CURRENT: Rules = Rules::V3;

    /// The number stored with a command (0, in records older than this field, means 1).
    pub const fn number(self) -> u32 {
        match self {
            Rules::V1 => 1,
            Rules::V2 => 2,
            Rules::V3 => 3,
        }
    }

    /// The rules a stored number names; `None` for a number this engine does not know.
    pub const fn from_number(number: u32) -> Option<Rules> {
        match number {
            0 | 1 => Some(Rules::V1),
            2 => Some(Rules::V2),
            3 => Some(Rules::V3),
            _ => None,
        }
    }
}

/// Decides a command under the current rules. On success the events are in append order; all
/// of them belong to `command.ticket_id` except, for a split, the new ticket's `Opened` and
/// `Linked`.
pub fn decide(command: &Command, state: &TicketState, policy: &Policy) -> Result<Vec<Event>, DomainError> {
    decide_under(Rules::CURRENT, command, state, policy)
}

/// Decides a command under the given rules (an audit re-running a stored decision).
pub fn decide_under(
    rules: Rules,
    command: &Command,
    state: &TicketState,
    policy: &Policy,
) -> Result<Vec<Event>, DomainError> {
    match state {
        TicketState::Unopened => match &command.body {
            CommandBody::Open(open) => open_ticket(rules, command, open, policy),
            CommandBody::SetSeverity { .. }
            | CommandBody::RecordAgentResponse { .. }
            | CommandBody::RequestCustomerInfo { .. }
            | CommandBody::RecordCustomerReply { .. }
            | CommandBody::Escalate { .. }
            | CommandBody::Resolve { .. }
            | CommandBody::Reopen { .. }
            | CommandBody::Split(_)
            | CommandBody::RecordSlaWarning { .. }
            | CommandBody::RecordSlaBreach { .. }
            | CommandBody::DowngradeForNoResponse { .. } => Err(DomainError::TicketNotFound(command.ticket_id)),
        },
        TicketState::Opened(ticket) => {
            if ticket.id != command.ticket_id {
                return Err(DomainError::InvalidCommand(format!(
                    "command for ticket {} decided against ticket {}",
                    command.ticket_id, ticket.id
                )));
            }
            if command.issued_at < ticket.last_event_at {
                return Err(DomainError::InvalidCommand(format!(
                    "issued at {}, before the ticket's last event at {}",
                    command.issued_at, ticket.last_event_at
                )));
            }
            decide_on_ticket(rules, command, ticket, policy)
        }
    }
}

/// Checks that a plan and category allow a severity: the category's limit first (severity A
/// exists only for technical support), then the contract's (A only with the advanced contract).
pub fn check_entitlement(
    policy: &Policy,
    plan: &PlanId,
    category: &CategoryId,
    severity: Severity,
) -> Result<(), DomainError> {
    let plan_def = policy.plan(plan).ok_or_else(|| DomainError::UnknownPlan(plan.clone()))?;
    let category_def = policy.category(category).ok_or_else(|| DomainError::UnknownCategory(category.clone()))?;
    if !severity.within(category_def.max_severity) {
        return Err(DomainError::SeverityNotAllowedForCategory {
            category: category.clone(),
            severity,
            max: category_def.max_severity,
        });
    }
    if !severity.within(plan_def.max_severity) {
        return Err(DomainError::SeverityNotInContract { plan: plan.clone(), severity, max: plan_def.max_severity });
    }
    Ok(())
}

fn open_ticket(rules: Rules, command: &Command, open: &OpenTicket, policy: &Policy) -> Result<Vec<Event>, DomainError> {
    ensure_title(&open.title)?;
    check_entitlement(policy, &open.plan, &open.category, open.severity)?;
    let at = command.issued_at;
    let mut clocks =
        ClockEditor::new(rules, policy, at, at, &open.plan, &open.category, open.severity, MetricMap::new());
    clocks.start(Metric::FirstResponse);
    clocks.start(Metric::Resolution);
    Ok(vec![Event {
        ticket_id: command.ticket_id,
        occurred_at: command.issued_at,
        kind: EventKind::Opened(Opened {
            customer: open.customer.clone(),
            plan: open.plan.clone(),
            category: open.category.clone(),
            title: open.title.clone(),
            description: open.description.clone(),
            severity: open.severity,
            policy: policy.version().clone(),
            clocks: clocks.finish(),
        }),
    }])
}

fn decide_on_ticket(
    rules: Rules,
    command: &Command,
    ticket: &Ticket,
    policy: &Policy,
) -> Result<Vec<Event>, DomainError> {
    let now = command.issued_at;
    let mut d = Decision::new(rules, policy, now, ticket);
    match &command.body {
        CommandBody::Open(_) => return Err(DomainError::TicketAlreadyExists(ticket.id)),
        CommandBody::SetSeverity { severity, reason } => {
            ensure_not_resolved(ticket)?;
            if rules == Rules::V1 && *severity == ticket.severity {
                return Err(DomainError::InvalidTransition(Transition::SeverityUnchanged));
            }
            check_entitlement(policy, &ticket.plan, &ticket.category, *severity)?;
            d.settle();
            // The severity the change starts from is the one in force at the command's instant,
            // after any downgrade that was due by then.
            let from = d.ticket().severity;
            if *severity == from {
                return Err(DomainError::InvalidTransition(Transition::SeverityUnchanged));
            }
            let mut clocks = d.clock_editor();
            clocks.retarget_active(*severity, &[]);
            let clocks = clocks.finish();
            d.emit(EventKind::SeveritySet { from, to: *severity, reason: reason.clone(), clocks });
        }
        CommandBody::RecordAgentResponse { message } => {
            ensure_not_resolved(ticket)?;
            d.settle();
            let awaiting = d.ticket().status == Status::AwaitingCustomer;
            let mut clocks = d.clock_editor();
            clocks.agent_communicated(awaiting);
            let clocks = clocks.finish();
            d.emit(EventKind::AgentResponded { message: message.clone(), clocks });
        }
        CommandBody::RequestCustomerInfo { request } => {
            ensure_not_resolved(ticket)?;
            if ticket.status == Status::AwaitingCustomer {
                return Err(DomainError::InvalidTransition(Transition::AlreadyAwaitingCustomer));
            }
            d.settle();
            let mut clocks = d.clock_editor();
            clocks.agent_communicated(true);
            clocks.start(Metric::NoResponse);
            let clocks = clocks.finish();
            d.emit(EventKind::CustomerInfoRequested { request: request.clone(), clocks });
        }
        CommandBody::RecordCustomerReply { message } => {
            ensure_not_resolved(ticket)?;
            d.settle();
            let mut clocks = d.clock_editor();
            if d.ticket().status == Status::AwaitingCustomer {
                clocks.stop(Metric::NoResponse, ClockOutcome::Met);
                for metric in [Metric::FirstResponse, Metric::FollowUp, Metric::Resolution] {
                    clocks.resume(metric);
                }
            }
            let clocks = clocks.finish();
            d.emit(EventKind::CustomerResponded { message: message.clone(), clocks });
        }
        CommandBody::Escalate { tier, team, reason } => {
            ensure_not_resolved(ticket)?;
            if rules == Rules::V1 && ticket.tier.as_ref() == Some(tier) && ticket.team == *team {
                return Err(DomainError::InvalidTransition(Transition::AlreadyEscalated));
            }
            d.settle();
            let settled = d.ticket();
            if rules >= Rules::V2 && settled.tier.as_ref() == Some(tier) && settled.team == *team {
                // Compared with where the ticket is at the command's instant, after the policy's
                // escalations that were due by then.
                return Err(DomainError::InvalidTransition(Transition::AlreadyEscalated));
            }
            d.emit(EventKind::Escalated {
                tier: tier.clone(),
                team: team.clone(),
                reason: reason.clone(),
                cause: EscalationCause::Manual,
            });
        }
        CommandBody::Resolve { resolution } => {
            if ticket.is_resolved() {
                return Err(DomainError::InvalidTransition(Transition::AlreadyResolved));
            }
            d.settle();
            let mut clocks = d.clock_editor();
            for metric in [Metric::FirstResponse, Metric::FollowUp, Metric::Resolution] {
                clocks.stop_sla(metric);
            }
            clocks.stop(Metric::NoResponse, ClockOutcome::Cancelled);
            let clocks = clocks.finish();
            d.emit(EventKind::Resolved { resolution: resolution.clone(), clocks });
        }
        CommandBody::Reopen { reason } => {
            if !ticket.is_resolved() {
                return Err(DomainError::InvalidTransition(Transition::NotResolved));
            }
            let mut clocks = d.clock_editor();
            clocks.start(Metric::Resolution);
            // Reopened means the customer is waiting for the engineer again: an update is owed
            // within the follow-up target, or the first response if there never was one.
            clocks.start(if ticket.first_response_at.is_some() { Metric::FollowUp } else { Metric::FirstResponse });
            let clocks = clocks.finish();
            d.emit(EventKind::Reopened { reason: reason.clone(), clocks });
        }
        CommandBody::Split(split) => {
            ensure_not_resolved(ticket)?;
            if split.new_ticket == ticket.id {
                return Err(DomainError::InvalidCommand("a ticket cannot be split into itself".into()));
            }
            ensure_title(&split.title)?;
            check_entitlement(policy, &ticket.plan, &split.category, split.severity)?;
            d.settle();
            d.emit(EventKind::Linked { other: split.new_ticket, relation: LinkRelation::SplitInto });
            if rules >= Rules::V2 {
                // The parent's events stay before the child's (one stream after the other).
                d.settle();
            }
            d.events.extend(split_child(rules, ticket, split, policy, now));
            return Ok(d.events);
        }
        CommandBody::RecordSlaWarning { metric, cycle, threshold_percent, warn_at } => {
            ensure_system(command)?;
            let clock = firing_clock(ticket, *metric, *cycle)?;
            let moot = |reason| DomainError::TimerMoot { metric: *metric, cycle: *cycle, reason };
            if clock.warned.contains(threshold_percent) {
                return Err(moot(MootReason::AlreadyRecorded));
            }
            if clock.breached {
                return Err(moot(MootReason::SupersededByBreach));
            }
            let plan = clock.plan.as_ref().ok_or_else(|| moot(MootReason::Retargeted))?;
            let pending = plan.warnings.iter().find(|w| w.threshold_percent == *threshold_percent);
            if pending.is_none_or(|w| w.at != *warn_at) {
                return Err(moot(MootReason::Retargeted));
            }
            if now < *warn_at {
                return Err(DomainError::TimerNotDue { metric: *metric, due_at: *warn_at, now });
            }
            let due_at = plan.due_at.ok_or_else(|| moot(MootReason::NotRunning))?;
            if rules >= Rules::V2 {
                // The warning is due: settling records it at its instant, with everything else
                // due by now (the breach too, if the firing comes that late).
                d.settle();
                return Ok(d.events);
            }
            if due_at <= now {
                return Err(moot(MootReason::SupersededByBreach));
            }
            d.settle();
            let severity = d.ticket().severity;
            d.emit(EventKind::SlaWarning {
                metric: *metric,
                cycle: *cycle,
                threshold_percent: *threshold_percent,
                warn_at: *warn_at,
                due_at,
            });
            if let Some(rule) = policy.escalation_on_warning(*metric, severity, *threshold_percent) {
                let cause =
                    EscalationCause::Warning { metric: *metric, cycle: *cycle, threshold_percent: *threshold_percent };
                d.auto_escalate(rule, cause);
            }
        }
        CommandBody::RecordSlaBreach { metric, cycle, due_at, at_import } => {
            ensure_system(command)?;
            if !metric.is_sla() {
                return Err(DomainError::InvalidCommand(
                    "an expired no-response window lowers the severity; it is not a breach".into(),
                ));
            }
            let clock = firing_clock(ticket, *metric, *cycle)?;
            check_due(clock, *due_at, now)?;
            if *at_import {
                d.settle_breaches_at_import();
                return Ok(d.events);
            }
            // Settling records this breach, and any other that is due by now.
            d.settle();
        }
        CommandBody::DowngradeForNoResponse { cycle, due_at } => {
            ensure_system(command)?;
            let clock = firing_clock(ticket, Metric::NoResponse, *cycle)?;
            check_due(clock, *due_at, now)?;
            if ticket.status != Status::AwaitingCustomer {
                return Err(DomainError::TimerMoot {
                    metric: Metric::NoResponse,
                    cycle: *cycle,
                    reason: MootReason::NotAwaitingCustomer,
                });
            }
            if rules >= Rules::V2 {
                // Settling records the downgrade as of its due instant, with everything else due.
                d.settle();
                return Ok(d.events);
            }
            d.settle();
            let from = d.ticket().severity;
            let to = from.lowered();
            let mut clocks = d.clock_editor();
            clocks.stop(Metric::NoResponse, ClockOutcome::Breached);
            clocks.retarget_active(to, &[Metric::NoResponse]);
            // A new window at the lower severity: B is lowered to C in its turn; C has none.
            clocks.start(Metric::NoResponse);
            let clocks = clocks.finish();
            d.emit(EventKind::DowngradedForNoResponse { from, to, cycle: *cycle, due_at: *due_at, clocks });
        }
    }
    if rules >= Rules::V2 {
        // What the command's own events made due by now (a severity raised past a target that
        // has already run out) is settled in the same decision: after any decision, nothing is
        // due at or before its instant.
        d.settle();
    }
    Ok(d.events)
}

fn split_child(rules: Rules, parent: &Ticket, split: &SplitTicket, policy: &Policy, now: Timestamp) -> [Event; 2] {
    let mut clocks =
        ClockEditor::new(rules, policy, now, now, &parent.plan, &split.category, split.severity, MetricMap::new());
    clocks.start(Metric::FirstResponse);
    clocks.start(Metric::Resolution);
    let opened = Opened {
        customer: parent.customer.clone(),
        plan: parent.plan.clone(),
        category: split.category.clone(),
        title: split.title.clone(),
        description: split.description.clone(),
        severity: split.severity,
        policy: policy.version().clone(),
        clocks: clocks.finish(),
    };
    [
        Event { ticket_id: split.new_ticket, occurred_at: now, kind: EventKind::Opened(opened) },
        Event {
            ticket_id: split.new_ticket,
            occurred_at: now,
            kind: EventKind::Linked { other: parent.id, relation: LinkRelation::SplitFrom },
        },
    ]
}

fn ensure_title(title: &Text) -> Result<(), DomainError> {
    if title.as_str().trim().is_empty() {
        Err(DomainError::InvalidCommand("a ticket needs a title".into()))
    } else {
        Ok(())
    }
}

fn ensure_not_resolved(ticket: &Ticket) -> Result<(), DomainError> {
    if ticket.is_resolved() { Err(DomainError::TicketResolved(ticket.id)) } else { Ok(()) }
}

fn ensure_system(command: &Command) -> Result<(), DomainError> {
    match command.actor.kind {
        ActorKind::System => Ok(()),
        ActorKind::Agent | ActorKind::Customer => Err(DomainError::InvalidCommand(format!(
            "{} is recorded by the engine's timer, not by a person",
            command.body.name()
        ))),
    }
}

/// The clock a timer firing targets, if that firing still applies to it.
fn firing_clock(ticket: &Ticket, metric: Metric, cycle: u32) -> Result<&Clock, DomainError> {
    let moot = |reason| DomainError::TimerMoot { metric, cycle, reason };
    let clock = ticket.clock(metric).ok_or(moot(MootReason::NotRunning))?;
    if clock.cycle != cycle {
        return Err(moot(MootReason::OtherCycle));
    }
    if clock.status != ClockStatus::Running {
        return Err(moot(MootReason::NotRunning));
    }
    Ok(clock)
}

fn check_due(clock: &Clock, due_at: Timestamp, now: Timestamp) -> Result<(), DomainError> {
    let moot = |reason| DomainError::TimerMoot { metric: clock.metric, cycle: clock.cycle, reason };
    if clock.breached {
        return Err(moot(MootReason::AlreadyRecorded));
    }
    if clock.due_at() != Some(due_at) {
        return Err(moot(MootReason::Retargeted));
    }
    if now < due_at {
        return Err(DomainError::TimerNotDue { metric: clock.metric, due_at, now });
    }
    Ok(())
}

/// A decision in progress. Each step decides on the state the previous steps left: emitted
/// events are applied to a working copy of the ticket, made only when a step reads the state
/// after an emit (most decisions emit once and never do), so a decision does not copy a ticket's
/// whole history.
struct Decision<'p, 't> {
    rules: Rules,
    policy: &'p Policy,
    now: Timestamp,
    original: &'t Ticket,
    /// The working copy and how many of `events` it has applied.
    working: Option<(TicketState, usize)>,
    events: Vec<Event>,
}

impl<'p, 't> Decision<'p, 't> {
    fn new(rules: Rules, policy: &'p Policy, now: Timestamp, ticket: &'t Ticket) -> Self {
        Self { rules, policy, now, original: ticket, working: None, events: Vec::new() }
    }

    fn ticket(&mut self) -> &Ticket {
        if self.events.is_empty() {
            return self.original;
        }
        let (mut state, applied) =
            self.working.take().unwrap_or_else(|| (TicketState::Opened(Box::new(self.original.clone())), 0));
        for event in self.events[applied..].iter().filter(|e| e.ticket_id == self.original.id) {
            // The decision's own events always fit the state they were decided on; the command
            // service applies them once more with the check before anything is appended.
            let _fits = evolve(&mut state, event);
        }
        let applied = self.events.len();
        match &self.working.insert((state, applied)).0 {
            TicketState::Opened(t) => t,
            TicketState::Unopened => unreachable_ticket(),
        }
    }

    fn emit(&mut self, kind: EventKind) {
        self.events.push(Event { ticket_id: self.original.id, occurred_at: self.now, kind });
    }

    fn clock_editor(&mut self) -> ClockEditor<'p> {
        let now = self.now;
        self.clock_editor_at(now)
    }

    /// An editor whose changes take effect at `at` (no later than the decision's instant).
    fn clock_editor_at(&mut self, at: Timestamp) -> ClockEditor<'p> {
        let (rules, policy, now) = (self.rules, self.policy, self.now);
        let t = self.ticket();
        ClockEditor::new(rules, policy, at, now, &t.plan, &t.category, t.severity, t.clocks.clone())
    }

    /// Records what is due by the decision's instant and not yet recorded, under the decision's
    /// rules. Every decision starts with it, so a command that comes after a due instant but
    /// before the timer fired still leaves the consequence in the log, once.
    fn settle(&mut self) {
        match self.rules {
            Rules::V1 => self.settle_overdue_breaches(),
            Rules::V2 | Rules::V3 => self.settle_due(),
        }
    }

    /// Every consequence due by now, one at a time in due-instant order, each at its own
    /// instant: a downgrade retargets the clocks from the instant its window expired, so a
    /// breach due after it is judged at the lower severity, and one due before it at the higher.
    fn settle_due(&mut self) {
        // Each step records a warning, a breach or a downgrade that then is no longer due; a
        // ticket has a handful of clocks, so this bound is never reached by a real policy.
        for _ in 0..MAX_SETTLED {
            let Some(due) = self.next_due() else { return };
            match due {
                Due::Warning { metric, cycle, threshold_percent, at, due_at } => {
                    let severity = self.ticket().severity;
                    self.emit(EventKind::SlaWarning { metric, cycle, threshold_percent, warn_at: at, due_at });
                    if let Some(rule) = self.policy.escalation_on_warning(metric, severity, threshold_percent) {
                        self.auto_escalate(rule, EscalationCause::Warning { metric, cycle, threshold_percent });
                    }
                }
                Due::Breach { metric, cycle, due_at, at_import: false } => self.breach(metric, cycle, due_at),
                Due::Breach { metric, cycle, due_at, at_import: true } => {
                    self.record_breach(metric, cycle, due_at);
                }
                Due::Downgrade { cycle, due_at } => {
                    let from = self.ticket().severity;
                    let to = from.lowered();
                    // Never before the ticket's last recorded event: a window left expired and
                    // unrecorded by a history decided under rules V1 takes effect after it.
                    let at = due_at.max(self.original.last_event_at);
                    let mut clocks = self.clock_editor_at(at);
                    clocks.stop(Metric::NoResponse, ClockOutcome::Breached);
                    clocks.retarget_active(to, &[Metric::NoResponse]);
                    // A new window at the lower severity: B is lowered to C in its turn; C has none.
                    clocks.start(Metric::NoResponse);
                    let clocks = clocks.finish();
                    self.emit(EventKind::DowngradedForNoResponse { from, to, cycle, due_at, clocks });
                }
            }
        }
    }

    /// The earliest consequence due by now: by instant, then warnings before breaches before
    /// downgrades, then by metric.
    /// Under rules V3, in a live decision on an imported ticket, nothing past at import is due
    /// but its breaches, which are recorded as detected at import.
    fn next_due(&mut self) -> Option<Due> {
        let now = self.now;
        let rules = self.rules;
        let ticket = self.ticket();
        let awaiting = ticket.status == Status::AwaitingCustomer;
        // An importer's own decisions are at instants before the import: only a later one is live.
        let imported_at = ticket.imported_at.filter(|at| rules >= Rules::V3 && now > *at);
        let past = |at: Timestamp| imported_at.is_some_and(|imported_at| at <= imported_at);
        let mut candidates = Vec::new();
        for clock in ticket.clocks.values() {
            let Some(due_at) = clock.due_at().filter(|_| !clock.breached) else { continue };
            let (metric, cycle) = (clock.metric, clock.cycle);
            if metric.is_sla() {
                let warnings = clock.plan.iter().flat_map(|p| &p.warnings);
                for w in warnings.filter(|w| w.at <= now && w.at < due_at && !past(w.at)) {
                    let threshold_percent = w.threshold_percent;
                    candidates.push(Due::Warning { metric, cycle, threshold_percent, at: w.at, due_at });
                }
                if due_at <= now {
                    candidates.push(Due::Breach { metric, cycle, due_at, at_import: past(due_at) });
                }
            } else if awaiting && due_at <= now && !past(due_at) {
                candidates.push(Due::Downgrade { cycle, due_at });
            }
        }
        candidates.into_iter().min_by_key(Due::order)
    }

    /// Records a breach judged at the ticket's severity, without the policy's escalation (as a
    /// breach detected at import is); returns that severity.
    fn record_breach(&mut self, metric: Metric, cycle: u32, due_at: Timestamp) -> Severity {
        let severity = self.ticket().severity;
        self.emit(EventKind::SlaBreached { metric, cycle, severity, due_at });
        severity
    }

    /// Records a breach and escalates as the policy says.
    fn breach(&mut self, metric: Metric, cycle: u32, due_at: Timestamp) {
        let severity = self.record_breach(metric, cycle, due_at);
        if let Some(rule) = self.policy.escalation_on_breach(metric, severity) {
            self.auto_escalate(rule, EscalationCause::Breach { metric, cycle });
        }
    }

    /// Every SLA breach due by now (the import's append instant), recorded at now in due order,
    /// and nothing else: the warnings, downgrades and escalations due by then were past when the
    /// history was imported, so they are not fired.
    fn settle_breaches_at_import(&mut self) {
        let now = self.now;
        let mut overdue: Vec<(Timestamp, Metric, u32)> = self
            .ticket()
            .clocks
            .values()
            .filter(|c| c.metric.is_sla() && !c.breached)
            .filter_map(|c| c.due_at().filter(|due| *due <= now).map(|due| (due, c.metric, c.cycle)))
            .collect();
        overdue.sort();
        for (due_at, metric, cycle) in overdue {
            self.record_breach(metric, cycle, due_at);
        }
    }

    /// Rules V1: every SLA breach due by now and not yet recorded, recorded at now.
    fn settle_overdue_breaches(&mut self) {
        let now = self.now;
        let overdue: Vec<(Metric, u32, Timestamp)> = self
            .ticket()
            .clocks
            .values()
            .filter(|c| c.metric.is_sla() && !c.breached)
            .filter_map(|c| c.due_at().filter(|due| *due <= now).map(|due| (c.metric, c.cycle, due)))
            .collect();
        for (metric, cycle, due_at) in overdue {
            self.breach(metric, cycle, due_at);
        }
    }

    fn auto_escalate(&mut self, rule: &EscalationRule, cause: EscalationCause) {
        let (rules, policy) = (self.rules, self.policy);
        let t = self.ticket();
        if t.tier.as_ref() == Some(&rule.tier) && t.team == rule.team {
            return;
        }
        let rank = |tier: Option<&crate::ids::Tier>| tier.and_then(|tier| policy.tier_rank(tier));
        if rules >= Rules::V3
            && let (Some(current), Some(target)) = (rank(t.tier.as_ref()), rank(Some(&rule.tier)))
            && target < current
        {
            return;
        }
        let reason = match cause {
            EscalationCause::Manual => String::new(),
            EscalationCause::Warning { metric, threshold_percent, .. } => {
                format!("policy {}: {threshold_percent}% of the {metric} target elapsed", self.policy.version())
            }
            EscalationCause::Breach { metric, .. } => {
                format!("policy {}: {metric} target breached", self.policy.version())
            }
        };
        let reason = Text::new("reason", reason).unwrap_or_else(|_| Text::empty());
        self.emit(EventKind::Escalated { tier: rule.tier.clone(), team: rule.team.clone(), reason, cause });
    }
}

/// The most consequences one decision settles (see [`Decision::settle_due`]).
const MAX_SETTLED: usize = 1000;

/// A time-driven consequence due by a decision's instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Due {
    Warning {
        metric: Metric,
        cycle: u32,
        threshold_percent: u8,
        at: Timestamp,
        due_at: Timestamp,
    },
    /// `at_import`: due by the instant the ticket's history was imported.
    Breach {
        metric: Metric,
        cycle: u32,
        due_at: Timestamp,
        at_import: bool,
    },
    Downgrade {
        cycle: u32,
        due_at: Timestamp,
    },
}

impl Due {
    fn order(&self) -> (Timestamp, u8, Metric, u8) {
        match *self {
            Due::Warning { metric, threshold_percent, at, .. } => (at, 0, metric, threshold_percent),
            Due::Breach { metric, due_at, .. } => (due_at, 1, metric, 0),
            Due::Downgrade { due_at, .. } => (due_at, 2, Metric::NoResponse, 0),
        }
    }
}

#[cold]
fn unreachable_ticket() -> &'static Ticket {
    // `Decision` is only built from an opened ticket and `evolve` keeps it opened.
    #[allow(clippy::panic)]
    {
        panic!("decision without a ticket")
    }
}

/// Builds the clock changes of one event against a scratch copy of the clocks, so that several
/// changes to one clock in one event (stop, then start the next cycle) see each other.
struct ClockEditor<'p> {
    rules: Rules,
    policy: &'p Policy,
    /// The instant the changes take effect.
    now: Timestamp,
    /// The decision's instant (the event's `occurred_at`): a change taking effect earlier says so.
    recorded_at: Timestamp,
    plan: PlanId,
    category: CategoryId,
    severity: Severity,
    clocks: MetricMap<Clock>,
    changes: Vec<ClockChange>,
}

impl<'p> ClockEditor<'p> {
    #[allow(clippy::too_many_arguments)]
    fn new(
        rules: Rules,
        policy: &'p Policy,
        now: Timestamp,
        recorded_at: Timestamp,
        plan: &PlanId,
        category: &CategoryId,
        severity: Severity,
        clocks: MetricMap<Clock>,
    ) -> Self {
        let (plan, category) = (plan.clone(), category.clone());
        Self { rules, policy, now, recorded_at, plan, category, severity, clocks, changes: Vec::new() }
    }

    fn finish(self) -> Vec<ClockChange> {
        self.changes
    }

    fn push(&mut self, mut change: ClockChange) {
        change.at = (self.now != self.recorded_at).then_some(self.now);
        apply_clocks(&mut self.clocks, self.recorded_at, std::slice::from_ref(&change));
        self.changes.push(change);
    }

    /// The promise of a clock with this history if it runs (or stands still) from now on.
    fn plan(&self, metric: Metric, started_at: Timestamp, clock: Option<&Clock>, running: bool) -> Option<ClockPlan> {
        let target = self.policy.target(&self.plan, &self.category, self.severity, metric)?;
        let calendar = self.policy.calendar(&target.calendar)?;
        let target_duration = self.policy.target_duration(target, started_at)?;
        let elapsed = clock.map_or(TimeDelta::zero(), |c| c.elapsed(calendar, self.now));
        let remaining = (target_duration - elapsed).max(TimeDelta::zero());
        let (due_at, warnings) = if running {
            let due = calendar.add(self.now, remaining);
            let warned: &[u8] = clock.map_or(&[], |c| &c.warned);
            let warnings = if metric.is_sla() {
                self.policy
                    .warning_thresholds()
                    .iter()
                    .filter(|t| !warned.contains(t))
                    .filter_map(|&t| {
                        let at_elapsed = match self.rules {
                            Rules::V1 => TimeDelta::seconds(target_duration.num_seconds() * i64::from(t) / 100),
                            Rules::V2 | Rules::V3 => share_of(target_duration, t),
                        };
                        let at = calendar.add(self.now, (at_elapsed - elapsed).max(TimeDelta::zero()));
                        (at < due).then_some(WarningPlan { threshold_percent: t, at })
                    })
                    .collect()
            } else {
                Vec::new()
            };
            (Some(due), warnings)
        } else {
            (None, Vec::new())
        };
        Some(ClockPlan {
            severity: self.severity,
            target: target.clone(),
            target_duration,
            elapsed,
            due_at,
            warnings,
            policy: self.policy.version().clone(),
        })
    }

    /// Starts a new cycle of `metric` now (the first, or the one after the current cycle).
    fn start(&mut self, metric: Metric) {
        let cycle = self.clocks.get(&metric).map_or(1, |c| c.cycle + 1);
        if let Some(current) = self.clocks.get(&metric).filter(|c| c.is_active()) {
            debug_assert!(false, "{metric} cycle {} still active when starting the next", current.cycle);
        }
        let plan = self.plan(metric, self.now, None, true);
        self.push(ClockChange { metric, cycle, effect: ClockEffect::Started, plan, at: None });
    }

    fn pause(&mut self, metric: Metric) {
        let Some(clock) = self.clocks.get(&metric).filter(|c| c.status == ClockStatus::Running) else { return };
        let plan = self.plan(metric, clock.started_at, Some(clock), false);
        let cycle = clock.cycle;
        self.push(ClockChange { metric, cycle, effect: ClockEffect::Paused, plan, at: None });
    }

    fn resume(&mut self, metric: Metric) {
        let Some(clock) = self.clocks.get(&metric).filter(|c| c.status == ClockStatus::Paused) else { return };
        let plan = self.plan(metric, clock.started_at, Some(clock), true);
        let cycle = clock.cycle;
        self.push(ClockChange { metric, cycle, effect: ClockEffect::Resumed, plan, at: None });
    }

    fn stop(&mut self, metric: Metric, outcome: ClockOutcome) {
        let Some(clock) = self.clocks.get(&metric).filter(|c| c.is_active()) else { return };
        let plan = self.plan(metric, clock.started_at, Some(clock), false);
        let outcome = if clock.plan.is_none() { ClockOutcome::Untargeted } else { outcome };
        let cycle = clock.cycle;
        self.push(ClockChange { metric, cycle, effect: ClockEffect::Stopped(outcome), plan, at: None });
    }

    /// Stops an SLA clock: met, or breached when its breach is recorded (every decision records
    /// due breaches before anything else, so a late stop is always a recorded breach).
    fn stop_sla(&mut self, metric: Metric) {
        let breached = self.clocks.get(&metric).is_some_and(|c| c.breached);
        self.stop(metric, if breached { ClockOutcome::Breached } else { ClockOutcome::Met });
    }

    /// The ticket's severity changed: every active clock keeps its elapsed time and gets the new
    /// severity's target. Clocks without a target before and after are left alone.
    fn retarget_active(&mut self, severity: Severity, except: &[Metric]) {
        self.severity = severity;
        let active: Vec<Metric> =
            self.clocks.values().filter(|c| c.is_active() && !except.contains(&c.metric)).map(|c| c.metric).collect();
        for metric in active {
            let Some(clock) = self.clocks.get(&metric) else { continue };
            let plan = self.plan(metric, clock.started_at, Some(clock), clock.status == ClockStatus::Running);
            if plan.is_none() && clock.plan.is_none() {
                continue;
            }
            let cycle = clock.cycle;
            self.push(ClockChange { metric, cycle, effect: ClockEffect::Retargeted, plan, at: None });
        }
    }

    /// An agent answered or asked the customer something: the first response is done, and the
    /// next update is owed within the follow-up target (paused if the ticket now awaits the
    /// customer and the policy pauses follow-up then).
    fn agent_communicated(&mut self, awaiting_customer: bool) {
        self.stop_sla(Metric::FirstResponse);
        self.stop_sla(Metric::FollowUp);
        self.start(Metric::FollowUp);
        if awaiting_customer {
            for metric in [Metric::FirstResponse, Metric::FollowUp, Metric::Resolution] {
                if self.policy.pauses_while_awaiting_customer(metric) {
                    self.pause(metric);
                }
            }
        }
    }
}

/// `percent`% of `target`, rounded up to the nanosecond: a warning is never early.
fn share_of(target: TimeDelta, percent: u8) -> TimeDelta {
    let percent = i128::from(percent);
    match target.num_nanoseconds() {
        Some(nanos) => {
            let share = (i128::from(nanos) * percent + 99).div_euclid(100);
            TimeDelta::nanoseconds(i64::try_from(share).unwrap_or(i64::MAX))
        }
        // Beyond 292 years in nanoseconds: whole seconds, still rounded up.
        None => {
            let share = (i128::from(target.num_seconds()) * percent + 99).div_euclid(100);
            TimeDelta::try_seconds(i64::try_from(share).unwrap_or(i64::MAX)).unwrap_or(TimeDelta::MAX)
        }
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod due_tests;
