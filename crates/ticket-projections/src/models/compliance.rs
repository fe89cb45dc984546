//! SLA compliance: for each plan, severity, category and metric over a period, how many clock
//! cycles met their target and how many breached, with the median and 90th percentile of the
//! first response in business time.
//!
//! A cycle counts once, in the period of its outcome: a breach at its due instant (whenever it
//! was detected, ADR 0005) with the severity it was judged at, a met target when the clock stops
//! before its due instant with the ticket's severity then.
//! The first response's business time is the elapsed business time the clock plans state plus the
//! running time after the last plan, on the target's calendar; the calendars come from the policy
//! the query is asked with (they are policy data, not events).

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::TimeDelta;
use serde::{Deserialize, Serialize};
use ticket_domain::{
    CalendarId, CategoryId, ClockEffect, ClockOutcome, EventKind, Metric, MetricMap, PlanId, Policy, RecordedEvent,
    Severity, Timestamp,
};

use ticket_log::{LogError, StateBatch, StateSpace};

use super::span;
use crate::ReadModel;
use crate::rows::{Key, Keyed, Row, Rows, StateError, decode, encode, instant_key};

/// Keys of the space: `o ‖ at ‖ position ‖ seq` → an [`Outcome`] (a cycle met or breached at
/// `at`), `f ‖ at ‖ position ‖ seq` → a [`FirstResponse`] (a first response given at `at`); the
/// rows of the tickets' facts (`rows.rs`). Both records are written once and never change.
const OUTCOME: u8 = b'o';
const FIRST_RESPONSE: u8 = b'f';

/// The cycle a clock is in, as far as compliance needs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Tracked {
    cycle: u32,
    calendar: Option<CalendarId>,
    /// Business time elapsed when the latest plan was made, in milliseconds.
    base_ms: i64,
    /// The running span after the latest plan: from, and to once paused.
    span: Option<(Timestamp, Option<Timestamp>)>,
    /// The outcome this cycle already has (a recorded breach, judged at this severity).
    outcome: Option<Severity>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct TicketFacts {
    plan: PlanId,
    category: CategoryId,
    severity: Severity,
    resolved: bool,
    clocks: MetricMap<Tracked>,
}

impl Row for TicketFacts {
    fn dormant(&self) -> bool {
        self.resolved
    }
}

/// The first response's business time: base plus the span on the calendar.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Measure {
    calendar: CalendarId,
    base_ms: i64,
    span: Option<(Timestamp, Timestamp)>,
}

/// The group a cycle's outcome counts in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Group {
    plan: PlanId,
    category: CategoryId,
    severity: Severity,
    metric: Metric,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Outcome {
    group: Group,
    met: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct FirstResponse {
    group: Group,
    measure: Measure,
}

/// The tickets' facts (open tickets' in memory, resolved ones' in the store) and the outcomes
/// and first responses as records keyed by their instant.
#[derive(Debug)]
pub struct Compliance {
    tickets: Rows<TicketFacts>,
    records: Keyed,
    /// The position of the event being applied and the records it wrote so far.
    seq: (u64, u32),
}

impl Compliance {
    fn put(&mut self, kind: u8, at: Timestamp, position: u64, value: Vec<u8>) {
        if self.seq.0 != position {
            self.seq = (position, 0);
        }
        let mut key = Key::new();
        key.push(kind);
        key.extend_from_slice(&instant_key(&at));
        key.extend_from_slice(&position.to_be_bytes());
        key.extend_from_slice(&self.seq.1.to_be_bytes());
        self.seq.1 += 1;
        self.records.put(key, value);
    }
}

impl ReadModel for Compliance {
    const NAME: &'static str = "compliance";
    const FORMAT: u32 = 3;

    fn empty(space: Option<Arc<dyn StateSpace>>) -> Self {
        Self { tickets: Rows::new(space.clone()), records: Keyed::new(space), seq: (0, 0) }
    }

    fn load(space: Arc<dyn StateSpace>) -> Result<Self, StateError> {
        Ok(Self { tickets: Rows::load(space.clone())?, records: Keyed::new(Some(space)), seq: (0, 0) })
    }

    fn write(&self, batch: &mut StateBatch) -> Result<(), StateError> {
        self.tickets.write(batch)?;
        self.records.write(batch);
        Ok(())
    }

    fn written(&mut self) {
        self.tickets.written();
        self.records.written();
    }

    fn dirty(&self) -> usize {
        self.tickets.dirty_len() + self.records.pending_len()
    }

    fn live_rows(&self) -> usize {
        self.tickets.live_len()
    }

    fn unreadable(&self) -> Option<&str> {
        self.tickets.unreadable()
    }

    fn apply(&mut self, e: &RecordedEvent) {
        let id = e.event.ticket_id;
        let at = e.event.occurred_at;
        let mut records: Vec<(u8, Timestamp, Vec<u8>)> = Vec::new();
        let mut push = |kind: u8, at: Timestamp, record: Result<Vec<u8>, StateError>| match record {
            Ok(bytes) => records.push((kind, at, bytes)),
            Err(err) => tracing::warn!(position = e.position, error = %err, "compliance record not encoded"),
        };
        let facts = if let EventKind::Opened(o) = &e.event.kind {
            self.tickets.get_or_insert_with(id, || TicketFacts {
                plan: o.plan.clone(),
                category: o.category.clone(),
                severity: o.severity,
                resolved: false,
                clocks: MetricMap::new(),
            })
        } else {
            let Some(facts) = self.tickets.get_mut(id) else { return };
            facts
        };
        match &e.event.kind {
            EventKind::SeveritySet { to, .. } | EventKind::DowngradedForNoResponse { to, .. } => facts.severity = *to,
            // A breach counts at its due instant, whenever it was detected (rules V2).
            EventKind::SlaBreached { metric, cycle, due_at, severity } => {
                if let Some(tracked) = facts.clocks.get_mut(metric).filter(|t| t.cycle == *cycle && t.outcome.is_none())
                {
                    tracked.outcome = Some(*severity);
                    let group = Group {
                        plan: facts.plan.clone(),
                        category: facts.category.clone(),
                        severity: *severity,
                        metric: *metric,
                    };
                    push(OUTCOME, *due_at, encode(&Outcome { group, met: false }));
                }
            }
            EventKind::Resolved { .. } => facts.resolved = true,
            EventKind::Reopened { .. } => facts.resolved = false,
            EventKind::Opened(_)
            | EventKind::AgentResponded { .. }
            | EventKind::CustomerInfoRequested { .. }
            | EventKind::CustomerResponded { .. }
            | EventKind::Escalated { .. }
            | EventKind::SlaWarning { .. }
            | EventKind::Linked { .. } => {}
        }
        for change in e.event.kind.clocks() {
            if !change.metric.is_sla() {
                continue;
            }
            let plan = change.plan.as_ref();
            // A change settled after its due instant takes effect then.
            let at = change.effective_at(at);
            match change.effect {
                ClockEffect::Started | ClockEffect::Resumed | ClockEffect::Retargeted => {
                    let previous = facts.clocks.remove(&change.metric).filter(|t| t.cycle == change.cycle);
                    let running = match change.effect {
                        ClockEffect::Retargeted => previous.as_ref().is_some_and(|t| matches!(t.span, Some((_, None)))),
                        ClockEffect::Started | ClockEffect::Resumed | ClockEffect::Paused | ClockEffect::Stopped(_) => {
                            true
                        }
                    };
                    facts.clocks.insert(
                        change.metric,
                        Tracked {
                            cycle: change.cycle,
                            calendar: plan.map(|p| p.target.calendar.clone()),
                            base_ms: plan.map_or(0, |p| p.elapsed.num_milliseconds()),
                            span: running.then_some((at, None)),
                            outcome: previous.and_then(|t| t.outcome),
                        },
                    );
                }
                ClockEffect::Paused => {
                    if let Some(t) = facts.clocks.get_mut(&change.metric).filter(|t| t.cycle == change.cycle)
                        && let Some((from, None)) = t.span
                    {
                        t.span = Some((from, Some(at)));
                    }
                }
                ClockEffect::Stopped(outcome) => {
                    let Some(t) = facts.clocks.remove(&change.metric).filter(|t| t.cycle == change.cycle) else {
                        continue;
                    };
                    let measure = t.calendar.as_ref().map(|calendar| Measure {
                        calendar: calendar.clone(),
                        base_ms: t.base_ms,
                        span: t.span.map(|(from, to)| (from, to.unwrap_or(at))),
                    });
                    let first_response = (change.metric == Metric::FirstResponse).then_some(measure).flatten();
                    let group = |severity| Group {
                        plan: facts.plan.clone(),
                        category: facts.category.clone(),
                        severity,
                        metric: change.metric,
                    };
                    match (t.outcome, outcome) {
                        // Breached already: the first response counts with the breach's group.
                        (Some(severity), _) => {
                            if let Some(measure) = first_response {
                                push(FIRST_RESPONSE, at, encode(&FirstResponse { group: group(severity), measure }));
                            }
                        }
                        (None, ClockOutcome::Met | ClockOutcome::Breached) if t.calendar.is_some() => {
                            let met = outcome == ClockOutcome::Met;
                            push(OUTCOME, at, encode(&Outcome { group: group(facts.severity), met }));
                            if let Some(measure) = first_response {
                                push(
                                    FIRST_RESPONSE,
                                    at,
                                    encode(&FirstResponse { group: group(facts.severity), measure }),
                                );
                            }
                        }
                        (None, _) => {}
                    }
                }
            }
        }
        for (kind, at, bytes) in records {
            self.put(kind, at, e.position, bytes);
        }
    }
}

/// A period `[from, to)`; either end may be open.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Period {
    pub from: Option<Timestamp>,
    pub to: Option<Timestamp>,
}

impl Period {
    pub fn contains(&self, t: Timestamp) -> bool {
        self.from.is_none_or(|f| t >= f) && self.to.is_none_or(|to| t < to)
    }
}

/// One line of the compliance report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ComplianceRow {
    pub plan: String,
    pub severity: String,
    pub category: String,
    pub metric: String,
    pub met: u64,
    pub breached: u64,
    /// met / (met + breached), in percent.
    pub compliance_percent: f64,
    /// First responses given in the period (first-response rows only).
    pub first_responses: u64,
    pub median_first_response: Option<String>,
    pub p90_first_response: Option<String>,
    pub median_first_response_secs: Option<i64>,
    pub p90_first_response_secs: Option<i64>,
    #[serde(skip)]
    pub severity_level: Severity,
    #[serde(skip)]
    pub metric_kind: Metric,
}

/// What a report counts in one group: met, breached, and the first responses' business times.
type Counted = (u64, u64, Vec<TimeDelta>);

/// A report before its percentiles: the outcomes and first-response times of a period, by plan,
/// severity, category and metric. Tallies of disjoint sets of tickets (a cluster's partitions)
/// add up to the tally of their union, so the report of a whole cluster is exact, never a
/// merge of percentiles.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Tally {
    groups: BTreeMap<(PlanId, Severity, CategoryId, Metric), Counted>,
}

impl Tally {
    /// Adds `other`'s outcomes and times to this tally.
    pub fn add(&mut self, other: Tally) {
        for (key, (met, breached, times)) in other.groups {
            let group = self.groups.entry(key).or_default();
            group.0 += met;
            group.1 += breached;
            group.2.extend(times);
        }
    }

    /// The report's rows: counts, compliance and the first responses' median and 90th
    /// percentile (nearest rank), by plan, severity, category and metric.
    pub fn rows(self) -> Vec<ComplianceRow> {
        self.groups
            .into_iter()
            .map(|((plan, severity, category, metric), (met, breached, mut times))| {
                times.sort();
                let pick = |q: f64| -> Option<TimeDelta> {
                    if times.is_empty() {
                        return None;
                    }
                    // Nearest rank: the smallest value with at least q of the values at or below it.
                    let rank = ((q * times.len() as f64).ceil() as usize).clamp(1, times.len());
                    times.get(rank - 1).copied()
                };
                let (median, p90) = (pick(0.5), pick(0.9));
                let total = met + breached;
                ComplianceRow {
                    plan: plan.to_string(),
                    severity: severity.to_string(),
                    category: category.to_string(),
                    metric: metric.to_string(),
                    met,
                    breached,
                    compliance_percent: if total == 0 { 100.0 } else { met as f64 * 100.0 / total as f64 },
                    first_responses: times.len() as u64,
                    median_first_response: median.map(span),
                    p90_first_response: p90.map(span),
                    median_first_response_secs: median.map(|d| d.num_seconds()),
                    p90_first_response_secs: p90.map(|d| d.num_seconds()),
                    severity_level: severity,
                    metric_kind: metric,
                }
            })
            .collect()
    }
}

impl Compliance {
    /// The report over `period`; business times on the calendars of `policy`.
    pub fn report(&self, period: Period, policy: &Policy) -> Result<Vec<ComplianceRow>, LogError> {
        Ok(self.tally(period, policy)?.rows())
    }

    /// The outcomes and first-response times over `period` (the report before its
    /// percentiles); business times on the calendars of `policy`.
    pub fn tally(&self, period: Period, policy: &Policy) -> Result<Tally, LogError> {
        let mut tally = Tally::default();
        let groups = &mut tally.groups;
        let key_of = |g: Group| (g.plan, g.severity, g.category, g.metric);
        let bounds = |kind: u8| {
            let from = period.from.map_or(vec![kind], |f| [&[kind][..], &instant_key(&f)].concat());
            let to = period.to.map_or(vec![kind + 1], |t| [&[kind][..], &instant_key(&t)].concat());
            (from, to)
        };
        let (from, to) = bounds(OUTCOME);
        let outcomes = self.records.scan(&from, Some(&to), |_, value| {
            let o: Outcome = decode(value)?;
            let group = groups.entry(key_of(o.group)).or_default();
            if o.met {
                group.0 += 1
            } else {
                group.1 += 1
            }
            Ok(())
        });
        let (from, to) = bounds(FIRST_RESPONSE);
        let first_responses = outcomes.and_then(|()| {
            self.records.scan(&from, Some(&to), |_, value| {
                let f: FirstResponse = decode(value)?;
                if let Some(calendar) = policy.calendar(&f.measure.calendar) {
                    let m = &f.measure;
                    let ran = m.span.map_or(TimeDelta::zero(), |(from, to)| calendar.elapsed(from, to));
                    groups.entry(key_of(f.group)).or_default().2.push(TimeDelta::milliseconds(m.base_ms) + ran);
                }
                Ok(())
            })
        });
        first_responses?;
        Ok(tally)
    }
}
