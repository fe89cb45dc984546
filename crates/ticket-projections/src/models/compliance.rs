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

use std::collections::{BTreeMap, HashMap};

use chrono::TimeDelta;
use serde::{Deserialize, Serialize};
use ticket_domain::{
    CalendarId, CategoryId, ClockEffect, ClockOutcome, EventKind, Metric, PlanId, Policy, RecordedEvent, Severity,
    TicketId, Timestamp,
};

use super::span;
use crate::ReadModel;

/// The cycle a clock is in, as far as compliance needs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Tracked {
    cycle: u32,
    calendar: Option<CalendarId>,
    /// Business time elapsed when the latest plan was made, in milliseconds.
    base_ms: i64,
    /// The running span after the latest plan: from, and to once paused.
    span: Option<(Timestamp, Option<Timestamp>)>,
    /// The outcome this cycle already has (a recorded breach).
    outcome: Option<usize>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct TicketFacts {
    plan: PlanId,
    category: CategoryId,
    severity: Severity,
    clocks: BTreeMap<Metric, Tracked>,
}

/// The first response's business time: base plus the span on the calendar.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Measure {
    calendar: CalendarId,
    base_ms: i64,
    span: Option<(Timestamp, Timestamp)>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Outcome {
    at: Timestamp,
    plan: PlanId,
    category: CategoryId,
    severity: Severity,
    metric: Metric,
    met: bool,
    /// For first responses, once the clock stopped.
    first_response: Option<(Timestamp, Measure)>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Compliance {
    tickets: HashMap<TicketId, TicketFacts>,
    outcomes: Vec<Outcome>,
}

impl ReadModel for Compliance {
    const NAME: &'static str = "compliance";
    const FORMAT: u32 = 2;

    fn apply(&mut self, e: &RecordedEvent) {
        let id = e.event.ticket_id;
        let at = e.event.occurred_at;
        if let EventKind::Opened(o) = &e.event.kind {
            self.tickets.entry(id).or_insert_with(|| TicketFacts {
                plan: o.plan.clone(),
                category: o.category.clone(),
                severity: o.severity,
                clocks: BTreeMap::new(),
            });
        }
        let Some(facts) = self.tickets.get_mut(&id) else { return };
        match &e.event.kind {
            EventKind::SeveritySet { to, .. } | EventKind::DowngradedForNoResponse { to, .. } => facts.severity = *to,
            // A breach counts at its due instant, whenever it was detected (rules V2).
            EventKind::SlaBreached { metric, cycle, due_at, severity } => {
                if let Some(tracked) = facts.clocks.get_mut(metric).filter(|t| t.cycle == *cycle && t.outcome.is_none())
                {
                    tracked.outcome = Some(self.outcomes.len());
                    self.outcomes.push(Outcome {
                        at: *due_at,
                        plan: facts.plan.clone(),
                        category: facts.category.clone(),
                        severity: *severity,
                        metric: *metric,
                        met: false,
                        first_response: None,
                    });
                }
            }
            EventKind::Opened(_)
            | EventKind::AgentResponded { .. }
            | EventKind::CustomerInfoRequested { .. }
            | EventKind::CustomerResponded { .. }
            | EventKind::Escalated { .. }
            | EventKind::SlaWarning { .. }
            | EventKind::Resolved { .. }
            | EventKind::Reopened { .. }
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
                    match (t.outcome, outcome) {
                        (Some(index), _) => {
                            if let Some(o) = self.outcomes.get_mut(index) {
                                o.first_response = first_response.map(|m| (at, m));
                            }
                        }
                        (None, ClockOutcome::Met | ClockOutcome::Breached) if t.calendar.is_some() => {
                            self.outcomes.push(Outcome {
                                at,
                                plan: facts.plan.clone(),
                                category: facts.category.clone(),
                                severity: facts.severity,
                                metric: change.metric,
                                met: outcome == ClockOutcome::Met,
                                first_response: first_response.map(|m| (at, m)),
                            });
                        }
                        (None, _) => {}
                    }
                }
            }
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

impl Compliance {
    /// The report over `period`; business times on the calendars of `policy`.
    pub fn report(&self, period: Period, policy: &Policy) -> Vec<ComplianceRow> {
        type Key = (PlanId, Severity, CategoryId, Metric);
        let mut groups: BTreeMap<Key, (u64, u64, Vec<TimeDelta>)> = BTreeMap::new();
        for o in &self.outcomes {
            let key = (o.plan.clone(), o.severity, o.category.clone(), o.metric);
            if period.contains(o.at) {
                let group = groups.entry(key.clone()).or_default();
                if o.met { group.0 += 1 } else { group.1 += 1 }
            }
            if let Some((at, m)) = o.first_response.as_ref().filter(|(at, _)| period.contains(*at)) {
                let _ = at;
                if let Some(calendar) = policy.calendar(&m.calendar) {
                    let ran = m.span.map_or(TimeDelta::zero(), |(from, to)| calendar.elapsed(from, to));
                    groups.entry(key).or_default().2.push(TimeDelta::milliseconds(m.base_ms) + ran);
                }
            }
        }
        groups
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
