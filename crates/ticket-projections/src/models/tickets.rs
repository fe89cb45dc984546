//! Ticket detail and a customer's tickets: every ticket's state (the Decider's `evolve`) and an
//! index of tickets by customer.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::{Deserialize, Serialize};
use ticket_domain::{
    ClockOutcome, ClockStatus, CustomerId, LinkRelation, Policy, RecordedEvent, SeverityCause, Status, Ticket,
    TicketId, TicketState, Timestamp, business_times, evolve,
};

use super::{instant, span};
use crate::ReadModel;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tickets {
    states: HashMap<TicketId, TicketState>,
    by_customer: BTreeMap<CustomerId, BTreeSet<TicketId>>,
    /// Tickets with a stored event that does not fit their history: kept as they were before
    /// that event, which is reported; their later events are not applied.
    quarantined: BTreeMap<TicketId, Quarantine>,
}

/// Why a ticket is quarantined: the first stored event that does not fit its history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quarantine {
    pub position: u64,
    pub problem: String,
}

impl ReadModel for Tickets {
    const NAME: &'static str = "tickets";
    const FORMAT: u32 = 2;

    fn apply(&mut self, recorded: &RecordedEvent) {
        let id = recorded.event.ticket_id;
        if self.quarantined.contains_key(&id) {
            return;
        }
        let state = self.states.entry(id).or_default();
        if let Err(misfit) = evolve(state, &recorded.event) {
            tracing::error!(
                ticket_id = %id, position = recorded.position, problem = %misfit,
                "stored event does not fit the ticket's history; ticket quarantined in the read models"
            );
            let quarantine = Quarantine { position: recorded.position, problem: misfit.to_string() };
            self.quarantined.insert(id, quarantine);
            return;
        }
        // A ticket's customer is set when it is opened and never changes.
        if let ticket_domain::EventKind::Opened(o) = &recorded.event.kind {
            self.by_customer.entry(o.customer.clone()).or_default().insert(id);
        }
    }
}

impl Tickets {
    /// Tickets whose stored history does not fit, with the first event that does not.
    pub fn quarantined(&self) -> &BTreeMap<TicketId, Quarantine> {
        &self.quarantined
    }

    pub fn ticket(&self, id: TicketId) -> Option<&Ticket> {
        self.states.get(&id).and_then(TicketState::ticket)
    }

    pub fn len(&self) -> usize {
        self.states.len()
    }

    pub fn is_empty(&self) -> bool {
        self.states.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Ticket> {
        self.states.values().filter_map(TicketState::ticket)
    }

    /// A customer's tickets, open ones first by opening instant; resolved ones only if asked.
    pub fn customer(&self, customer: &CustomerId, include_resolved: bool, limit: usize) -> Vec<&Ticket> {
        let mut tickets: Vec<&Ticket> = self
            .by_customer
            .get(customer)
            .into_iter()
            .flatten()
            .filter_map(|id| self.ticket(*id))
            .filter(|t| include_resolved || t.status != Status::Resolved)
            .collect();
        tickets.sort_by_key(|t| (t.status == Status::Resolved, t.opened_at, t.id));
        tickets.truncate(limit);
        tickets
    }
}

/// One row of a customer's tickets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CustomerTicket {
    pub ticket_id: String,
    pub title: String,
    pub severity: String,
    pub status: String,
    pub opened_at: String,
    /// The nearest due instant of a running SLA clock.
    pub next_due_at: Option<String>,
}

impl CustomerTicket {
    pub fn of(t: &Ticket) -> Self {
        Self {
            ticket_id: t.id.to_string(),
            title: t.title.to_string(),
            severity: t.severity.to_string(),
            status: status(t.status).to_owned(),
            opened_at: instant(&t.opened_at),
            next_due_at: t
                .clocks
                .values()
                .filter(|c| c.metric.is_sla())
                .filter_map(ticket_domain::Clock::due_at)
                .min()
                .map(|d| instant(&d)),
        }
    }
}

pub fn status(s: Status) -> &'static str {
    match s {
        Status::Open => "open",
        Status::AwaitingCustomer => "awaiting customer",
        Status::Resolved => "resolved",
    }
}

/// One SLA clock of a ticket as an operator reads it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ClockView {
    pub metric: String,
    pub cycle: u32,
    /// running, paused, met, breached, cancelled, untargeted.
    pub status: String,
    pub started_at: String,
    pub target: Option<String>,
    pub due_at: Option<String>,
    /// Business time run so far (on the target's calendar).
    pub elapsed: Option<String>,
    /// Business time left before the target (negative once overdue); for running and paused
    /// clocks with a target.
    pub remaining: Option<String>,
    pub warned_percent: Vec<u8>,
    pub breached: bool,
}

/// A severity change as the detail view lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SeverityView {
    pub at: String,
    pub from: Option<String>,
    pub to: String,
    pub cause: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LinkView {
    pub ticket_id: String,
    pub relation: String,
}

/// The ticket detail read model's answer: state, severity history, each SLA clock with its due
/// instant and remaining business time, links to split tickets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TicketDetail {
    pub ticket_id: String,
    pub customer: String,
    pub plan: String,
    pub category: String,
    pub title: String,
    pub severity: String,
    pub status: String,
    pub opened_at: String,
    pub first_response_at: Option<String>,
    pub resolved_at: Option<String>,
    pub tier: Option<String>,
    pub team: Option<String>,
    pub policy: String,
    pub version: u64,
    /// The instant the remaining times are computed at.
    pub as_of: String,
    pub clocks: Vec<ClockView>,
    pub severity_history: Vec<SeverityView>,
    pub links: Vec<LinkView>,
}

impl TicketDetail {
    /// The detail of `t` at `now`; business times use the calendars of `policy` (a clock whose
    /// calendar the policy lacks shows no business times).
    pub fn of(t: &Ticket, policy: &Policy, now: Timestamp) -> Self {
        let clocks = t
            .clocks
            .values()
            .map(|c| {
                let times = business_times(c, policy, now);
                let elapsed = times.map(|(elapsed, _)| elapsed);
                let remaining = times.and_then(|(_, remaining)| remaining).map(span);
                ClockView {
                    metric: c.metric.to_string(),
                    cycle: c.cycle,
                    status: match c.status {
                        ClockStatus::Running => "running",
                        ClockStatus::Paused => "paused",
                        ClockStatus::Stopped(ClockOutcome::Met) => "met",
                        ClockStatus::Stopped(ClockOutcome::Breached) => "breached",
                        ClockStatus::Stopped(ClockOutcome::Cancelled) => "cancelled",
                        ClockStatus::Stopped(ClockOutcome::Untargeted) => "untargeted",
                    }
                    .to_owned(),
                    started_at: instant(&c.started_at),
                    target: c.plan.as_ref().map(|p| p.target.to_string()),
                    due_at: c.due_at().map(|d| instant(&d)),
                    elapsed: elapsed.map(span),
                    remaining,
                    warned_percent: c.warned.clone(),
                    breached: c.breached,
                }
            })
            .collect();
        Self {
            ticket_id: t.id.to_string(),
            customer: t.customer.to_string(),
            plan: t.plan.to_string(),
            category: t.category.to_string(),
            title: t.title.to_string(),
            severity: t.severity.to_string(),
            status: status(t.status).to_owned(),
            opened_at: instant(&t.opened_at),
            first_response_at: t.first_response_at.as_ref().map(instant),
            resolved_at: t.resolved_at.as_ref().map(instant),
            tier: t.tier.as_ref().map(ToString::to_string),
            team: t.team.as_ref().map(ToString::to_string),
            policy: t.policy.to_string(),
            version: t.version,
            as_of: instant(&now),
            clocks,
            severity_history: t
                .severity_history
                .iter()
                .map(|s| SeverityView {
                    at: instant(&s.at),
                    from: s.from.map(|f| f.to_string()),
                    to: s.to.to_string(),
                    cause: match &s.cause {
                        SeverityCause::Opened => "opened".to_owned(),
                        SeverityCause::Set { reason } => format!("set: {reason}"),
                        SeverityCause::NoResponse => "no response from the customer".to_owned(),
                    },
                })
                .collect(),
            links: t
                .links
                .iter()
                .map(|(other, relation)| LinkView {
                    ticket_id: other.to_string(),
                    relation: match relation {
                        LinkRelation::SplitInto => "split into",
                        LinkRelation::SplitFrom => "split from",
                    }
                    .to_owned(),
                })
                .collect(),
        }
    }
}
