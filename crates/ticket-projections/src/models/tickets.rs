//! Ticket detail and a customer's tickets: every ticket's state (the Decider's `evolve`) and an
//! index of tickets by customer.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use ticket_domain::{
    ClockOutcome, ClockStatus, CustomerId, EventKind, LinkRelation, Policy, RecordedEvent, SeverityCause, Status,
    Ticket, TicketId, TicketState, Timestamp, business_times, evolve_recorded,
};
use ticket_log::{LogError, StateBatch, StateSpace};

use super::{instant, span};
use crate::rows::{Key, Keyed, Row, Rows, StateError, decode, encode, scan, ticket_key, ticket_of};
use crate::{History, ReadModel};

/// Keys of the space: `c ‖ customer ‖ 0x00 ‖ ticket` → (resolved, opened at), the customer index;
/// `q ‖ ticket` → [`Quarantine`]; the rows (`rows.rs`).
const CUSTOMER: u8 = b'c';
const QUARANTINE: u8 = b'q';

impl Row for TicketState {
    fn dormant(&self) -> bool {
        self.ticket().is_some_and(|t| t.status == Status::Resolved)
    }
}

/// Every ticket's state (open ones in memory; resolved ones folded back from their streams in
/// the log when asked, or kept in the store when the model has no [`History`]), a customer's
/// tickets as index keys, the quarantined tickets (in memory and in the store).
///
/// A resolved ticket's state is not stored: it is the fold of the ticket's stream, which the log
/// indexes already, and it is asked for rarely (its detail, a reopen). Storing it was most of
/// what a rebuild wrote (some 900 bytes a ticket, two thirds of the bytes of every model).
#[derive(Debug)]
pub struct Tickets {
    states: Rows<TicketState>,
    history: Option<Arc<dyn History>>,
    by_customer: Keyed,
    /// Tickets with a stored event that does not fit their history: kept as they were before
    /// that event, which is reported; their later events are not applied.
    quarantined: BTreeMap<TicketId, Quarantine>,
    quarantined_since_flush: BTreeSet<TicketId>,
}

/// Why a ticket is quarantined: the first stored event that does not fit its history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quarantine {
    pub position: u64,
    pub problem: String,
}

fn customer_prefix(customer: &CustomerId) -> Vec<u8> {
    let mut key = vec![CUSTOMER];
    key.extend_from_slice(customer.as_str().as_bytes());
    key.push(0);
    key
}

/// What the customer index holds of a ticket: resolved, opened at.
fn indexed(state: &TicketState) -> Option<(bool, Timestamp)> {
    state.ticket().map(|t| (t.status == Status::Resolved, t.opened_at))
}

impl ReadModel for Tickets {
    const NAME: &'static str = "tickets";
    /// 4: resolved tickets' states are no longer stored (folded from the log). 5: a ticket's
    /// state carries the instant its history was imported.
    const FORMAT: u32 = 5;

    fn empty(space: Option<Arc<dyn StateSpace>>) -> Self {
        Self {
            states: Rows::new(space.clone()),
            history: None,
            by_customer: Keyed::new(space),
            quarantined: BTreeMap::new(),
            quarantined_since_flush: BTreeSet::new(),
        }
    }

    fn load(space: Arc<dyn StateSpace>) -> Result<Self, StateError> {
        let mut quarantined = BTreeMap::new();
        scan(&*space, &[QUARANTINE], Some(&[QUARANTINE + 1]), |key, value| {
            let id =
                ticket_of(key).ok_or_else(|| StateError::Decode("a quarantine key without a ticket".to_owned()))?;
            quarantined.insert(id, decode(value)?);
            Ok(())
        })?;
        Ok(Self {
            states: Rows::load(space.clone())?,
            history: None,
            by_customer: Keyed::new(Some(space)),
            quarantined,
            quarantined_since_flush: BTreeSet::new(),
        })
    }

    fn apply(&mut self, recorded: &RecordedEvent) {
        let id = recorded.event.ticket_id;
        if self.quarantined.contains_key(&id) {
            return;
        }
        // A resting ticket comes back from its stream, as it was before this event.
        if self.history.is_some()
            && !matches!(recorded.event.kind, EventKind::Opened(_))
            && self.states.get_live(id).is_none()
            && let Some(state) = self.folded_from_log(id, recorded.position.saturating_sub(1))
        {
            self.states.insert(id, state);
        }
        let state = self.states.get_or_insert_with(id, TicketState::default);
        let before = indexed(state);
        if let Err(misfit) = evolve_recorded(state, recorded) {
            tracing::error!(
                ticket_id = %id, position = recorded.position, problem = %misfit,
                "stored event does not fit the ticket's history; ticket quarantined in the read models"
            );
            let quarantine = Quarantine { position: recorded.position, problem: misfit.to_string() };
            self.quarantined.insert(id, quarantine);
            self.quarantined_since_flush.insert(id);
            return;
        }
        // The index changes when a ticket is opened, resolved or reopened.
        let after = indexed(state);
        if after != before
            && let (Some(t), Some(entry)) = (state.ticket(), after)
        {
            let mut key = Key::from_slice(&customer_prefix(&t.customer));
            key.extend_from_slice(id.as_uuid().as_bytes());
            match encode(&entry) {
                Ok(value) => self.by_customer.put(key, value),
                Err(e) => tracing::warn!(ticket_id = %id, error = %e, "customer index entry not encoded"),
            }
        }
    }

    fn write(&self, batch: &mut StateBatch) -> Result<(), StateError> {
        self.states.write(batch)?;
        self.by_customer.write(batch);
        for id in &self.quarantined_since_flush {
            if let Some(q) = self.quarantined.get(id) {
                batch.insert(ticket_key(&[QUARANTINE], *id), encode(q)?);
            }
        }
        Ok(())
    }

    fn written(&mut self) {
        self.states.written();
        self.by_customer.written();
        self.quarantined_since_flush.clear();
    }

    fn dirty(&self) -> usize {
        self.states.dirty_len() + self.by_customer.pending_len() + self.quarantined_since_flush.len()
    }

    fn live_rows(&self) -> usize {
        self.states.live_len()
    }

    fn unreadable(&self) -> Option<&str> {
        self.states.unreadable()
    }

    fn set_history(&mut self, history: Arc<dyn History>) {
        self.states.forget_dormant();
        self.history = Some(history);
    }

    fn history(&self) -> Option<Arc<dyn History>> {
        self.history.clone()
    }
}

impl Tickets {
    /// Tickets whose stored history does not fit, with the first event that does not.
    pub fn quarantined(&self) -> &BTreeMap<TicketId, Quarantine> {
        &self.quarantined
    }

    /// The ticket as of `upto` (the model's position): from memory, or folded from its stream
    /// when it rests (resolved).
    pub fn ticket(&self, id: TicketId, upto: u64) -> Result<Option<Ticket>, LogError> {
        let row = self.states.get(id).map_err(|e| LogError::Storage(format!("ticket {id}'s read-model row: {e}")))?;
        match row {
            Some(state) => Ok(state.ticket().cloned()),
            None => Ok(self.read_from_log(id, upto)?.and_then(|state| state.ticket().cloned())),
        }
    }

    /// [`Tickets::read_from_log`] for a later event of a resting ticket: a stream that cannot be
    /// read is reported, and the event then does not fit (the ticket is quarantined).
    fn folded_from_log(&self, id: TicketId, upto: u64) -> Option<TicketState> {
        self.read_from_log(id, upto).unwrap_or_else(|e| {
            tracing::warn!(ticket_id = %id, error = %e, "a resting ticket's stream could not be read");
            None
        })
    }

    /// The ticket's state folded from its stream, up to position `upto`, as the model keeps it:
    /// a stream that stops fitting is folded up to the event that does not fit (the ticket is
    /// quarantined there). `None` without a history or for a ticket without events.
    fn read_from_log(&self, id: TicketId, upto: u64) -> Result<Option<TicketState>, LogError> {
        let Some(history) = self.history.as_ref() else { return Ok(None) };
        let events = history.stream(id)?;
        let mut state = TicketState::default();
        let mut folded = false;
        for recorded in events.iter().take_while(|e| e.position <= upto) {
            if evolve_recorded(&mut state, recorded).is_err() {
                break;
            }
            folded = true;
        }
        Ok(folded.then_some(state))
    }

    /// Tickets held in memory (open ones; all of them without a store).
    pub fn live(&self) -> usize {
        self.states.live_len()
    }

    /// The tickets held in memory.
    pub fn iter_live(&self) -> impl Iterator<Item = &Ticket> {
        self.states.live().filter_map(|(_, state)| state.ticket())
    }

    /// A customer's tickets, open ones first by opening instant; resolved ones only if asked.
    /// Reads the customer's index keys and loads only the tickets it returns.
    pub fn customer(
        &self,
        customer: &CustomerId,
        include_resolved: bool,
        limit: usize,
        upto: u64,
    ) -> Result<Vec<Ticket>, LogError> {
        let prefix = customer_prefix(customer);
        let end = ticket_log::state::prefix_end(&prefix);
        let mut found: Vec<(bool, Timestamp, TicketId)> = Vec::new();
        let scanned = self.by_customer.scan(&prefix, end.as_deref(), |key, value| {
            let (resolved, opened_at): (bool, Timestamp) = decode(value)?;
            if let Some(id) = ticket_of(key)
                && (include_resolved || !resolved)
            {
                found.push((resolved, opened_at, id));
            }
            Ok(())
        });
        scanned?;
        found.sort();
        let mut tickets = Vec::new();
        for (_, _, id) in found {
            if tickets.len() == limit {
                break;
            }
            tickets.extend(self.ticket(id, upto)?);
        }
        Ok(tickets)
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
