//! Events, clock changes and the envelope.

use ticket_domain::{
    ClockChange, ClockEffect, ClockOutcome, ClockPlan, EscalationCause, Event, EventKind, LinkRelation, Opened,
    RecordedEvent, WarningPlan,
};

use super::common::*;
use crate::{ProtoError, SCHEMA_VERSION, pb};

impl From<&RecordedEvent> for pb::EventEnvelope {
    fn from(r: &RecordedEvent) -> Self {
        pb::EventEnvelope {
            schema_version: SCHEMA_VERSION,
            event_id: r.event_id.to_string(),
            ticket_id: r.event.ticket_id.to_string(),
            version: r.version,
            position: r.position,
            recorded_at: Some(timestamp(&r.recorded_at)),
            occurred_at: Some(timestamp(&r.event.occurred_at)),
            actor: Some(pb::Actor::from(&r.actor)),
            command_id: r.command_id.to_string(),
            correlation_id: trace(r.correlation_id.as_ref()),
            causation_id: trace(r.causation_id.as_ref()),
            event: Some(pb::Event::from(&r.event.kind)),
            imported: r.imported,
        }
    }
}

impl TryFrom<pb::EventEnvelope> for RecordedEvent {
    type Error = ProtoError;

    fn try_from(e: pb::EventEnvelope) -> Result<Self, ProtoError> {
        if e.schema_version != SCHEMA_VERSION {
            return Err(ProtoError::UnsupportedSchema(e.schema_version));
        }
        if e.version == 0 {
            return Err(ProtoError::invalid("version", "versions start at 1"));
        }
        if e.position == 0 {
            return Err(ProtoError::invalid("position", "positions start at 1"));
        }
        Ok(RecordedEvent {
            event_id: to_event_id("event_id", &e.event_id)?,
            version: e.version,
            position: e.position,
            recorded_at: to_timestamp("recorded_at", e.recorded_at)?,
            actor: to_actor("actor", e.actor)?,
            command_id: to_command_id("command_id", e.command_id)?,
            correlation_id: to_trace("correlation_id", e.correlation_id)?,
            causation_id: to_trace("causation_id", e.causation_id)?,
            imported: e.imported,
            event: Event {
                ticket_id: to_ticket_id("ticket_id", &e.ticket_id)?,
                occurred_at: to_timestamp("occurred_at", e.occurred_at)?,
                kind: EventKind::try_from(e.event.ok_or(ProtoError::Missing("event"))?)?,
            },
        })
    }
}

fn clocks(changes: &[ClockChange]) -> Vec<pb::ClockChange> {
    changes.iter().map(pb::ClockChange::from).collect()
}

fn to_clocks(changes: Vec<pb::ClockChange>) -> Result<Vec<ClockChange>, ProtoError> {
    changes.into_iter().map(ClockChange::try_from).collect()
}

impl From<&EventKind> for pb::Event {
    fn from(kind: &EventKind) -> Self {
        use pb::event::Kind;
        let kind = match kind {
            EventKind::Opened(o) => Kind::Opened(pb::Opened {
                customer: o.customer.to_string(),
                plan: o.plan.to_string(),
                category: o.category.to_string(),
                title: o.title.to_string(),
                description: o.description.to_string(),
                severity: severity(o.severity),
                policy: Some(pb::PolicyVersion::from(&o.policy)),
                clocks: clocks(&o.clocks),
            }),
            EventKind::SeveritySet { from, to, reason, clocks: c } => Kind::SeveritySet(pb::SeveritySet {
                from: severity(*from),
                to: severity(*to),
                reason: reason.to_string(),
                clocks: clocks(c),
            }),
            EventKind::AgentResponded { message, clocks: c } => {
                Kind::AgentResponded(pb::AgentResponded { message: message.to_string(), clocks: clocks(c) })
            }
            EventKind::CustomerInfoRequested { request, clocks: c } => {
                Kind::CustomerInfoRequested(pb::CustomerInfoRequested {
                    request: request.to_string(),
                    clocks: clocks(c),
                })
            }
            EventKind::CustomerResponded { message, clocks: c } => {
                Kind::CustomerResponded(pb::CustomerResponded { message: message.to_string(), clocks: clocks(c) })
            }
            EventKind::DowngradedForNoResponse { from, to, cycle, due_at, clocks: c } => {
                Kind::DowngradedForNoResponse(pb::DowngradedForNoResponse {
                    from: severity(*from),
                    to: severity(*to),
                    cycle: *cycle,
                    due_at: Some(timestamp(due_at)),
                    clocks: clocks(c),
                })
            }
            EventKind::Escalated { tier, team, reason, cause } => {
                let (trigger, m, cycle, threshold_percent) = match cause {
                    EscalationCause::Manual => (pb::EscalationTrigger::Manual, pb::Metric::Unspecified as i32, 0, 0),
                    EscalationCause::Warning { metric: m, cycle, threshold_percent } => {
                        (pb::EscalationTrigger::Warning, metric(*m), *cycle, u32::from(*threshold_percent))
                    }
                    EscalationCause::Breach { metric: m, cycle } => {
                        (pb::EscalationTrigger::Breach, metric(*m), *cycle, 0)
                    }
                };
                Kind::Escalated(pb::Escalated {
                    tier: tier.to_string(),
                    team: team.as_ref().map(ToString::to_string),
                    reason: reason.to_string(),
                    trigger: trigger as i32,
                    metric: m,
                    cycle,
                    threshold_percent,
                })
            }
            EventKind::SlaWarning { metric: m, cycle, threshold_percent, warn_at, due_at } => {
                Kind::SlaWarning(pb::SlaWarning {
                    metric: metric(*m),
                    cycle: *cycle,
                    threshold_percent: u32::from(*threshold_percent),
                    warn_at: Some(timestamp(warn_at)),
                    due_at: Some(timestamp(due_at)),
                })
            }
            EventKind::SlaBreached { metric: m, cycle, severity: s, due_at } => Kind::SlaBreached(pb::SlaBreached {
                metric: metric(*m),
                cycle: *cycle,
                severity: severity(*s),
                due_at: Some(timestamp(due_at)),
            }),
            EventKind::Resolved { resolution, clocks: c } => {
                Kind::Resolved(pb::Resolved { resolution: resolution.to_string(), clocks: clocks(c) })
            }
            EventKind::Reopened { reason, clocks: c } => {
                Kind::Reopened(pb::Reopened { reason: reason.to_string(), clocks: clocks(c) })
            }
            EventKind::Linked { other, relation } => Kind::Linked(pb::Linked {
                other_ticket_id: other.to_string(),
                relation: link_relation(*relation) as i32,
            }),
        };
        pb::Event { kind: Some(kind) }
    }
}

impl TryFrom<pb::Event> for EventKind {
    type Error = ProtoError;

    fn try_from(e: pb::Event) -> Result<Self, ProtoError> {
        use pb::event::Kind;
        Ok(match e.kind.ok_or(ProtoError::Missing("event.kind"))? {
            Kind::Opened(o) => EventKind::Opened(Opened {
                customer: to_customer("opened.customer", o.customer)?,
                plan: to_plan("opened.plan", o.plan)?,
                category: to_category("opened.category", o.category)?,
                title: to_text("opened.title", o.title)?,
                description: to_text("opened.description", o.description)?,
                severity: to_severity("opened.severity", o.severity)?,
                policy: to_policy("opened.policy", o.policy)?,
                clocks: to_clocks(o.clocks)?,
            }),
            Kind::SeveritySet(s) => EventKind::SeveritySet {
                from: to_severity("severity_set.from", s.from)?,
                to: to_severity("severity_set.to", s.to)?,
                reason: to_text("severity_set.reason", s.reason)?,
                clocks: to_clocks(s.clocks)?,
            },
            Kind::AgentResponded(a) => EventKind::AgentResponded {
                message: to_text("agent_responded.message", a.message)?,
                clocks: to_clocks(a.clocks)?,
            },
            Kind::CustomerInfoRequested(c) => EventKind::CustomerInfoRequested {
                request: to_text("customer_info_requested.request", c.request)?,
                clocks: to_clocks(c.clocks)?,
            },
            Kind::CustomerResponded(c) => EventKind::CustomerResponded {
                message: to_text("customer_responded.message", c.message)?,
                clocks: to_clocks(c.clocks)?,
            },
            Kind::DowngradedForNoResponse(d) => EventKind::DowngradedForNoResponse {
                from: to_severity("downgraded_for_no_response.from", d.from)?,
                to: to_severity("downgraded_for_no_response.to", d.to)?,
                cycle: d.cycle,
                due_at: to_timestamp("downgraded_for_no_response.due_at", d.due_at)?,
                clocks: to_clocks(d.clocks)?,
            },
            Kind::Escalated(x) => {
                let cause = match pb::EscalationTrigger::try_from(x.trigger) {
                    Ok(pb::EscalationTrigger::Manual) => EscalationCause::Manual,
                    Ok(pb::EscalationTrigger::Warning) => EscalationCause::Warning {
                        metric: to_metric("escalated.metric", x.metric)?,
                        cycle: x.cycle,
                        threshold_percent: percent("escalated.threshold_percent", x.threshold_percent)?,
                    },
                    Ok(pb::EscalationTrigger::Breach) => {
                        EscalationCause::Breach { metric: to_metric("escalated.metric", x.metric)?, cycle: x.cycle }
                    }
                    Ok(pb::EscalationTrigger::Unspecified) => return Err(ProtoError::Missing("escalated.trigger")),
                    Err(_) => {
                        return Err(ProtoError::invalid("escalated.trigger", format!("unknown trigger {}", x.trigger)));
                    }
                };
                EventKind::Escalated {
                    tier: to_tier("escalated.tier", x.tier)?,
                    team: x.team.map(|t| to_team("escalated.team", t)).transpose()?,
                    reason: to_text("escalated.reason", x.reason)?,
                    cause,
                }
            }
            Kind::SlaWarning(w) => EventKind::SlaWarning {
                metric: to_metric("sla_warning.metric", w.metric)?,
                cycle: w.cycle,
                threshold_percent: percent("sla_warning.threshold_percent", w.threshold_percent)?,
                warn_at: to_timestamp("sla_warning.warn_at", w.warn_at)?,
                due_at: to_timestamp("sla_warning.due_at", w.due_at)?,
            },
            Kind::SlaBreached(b) => EventKind::SlaBreached {
                metric: to_metric("sla_breached.metric", b.metric)?,
                cycle: b.cycle,
                severity: to_severity("sla_breached.severity", b.severity)?,
                due_at: to_timestamp("sla_breached.due_at", b.due_at)?,
            },
            Kind::Resolved(r) => EventKind::Resolved {
                resolution: to_text("resolved.resolution", r.resolution)?,
                clocks: to_clocks(r.clocks)?,
            },
            Kind::Reopened(r) => {
                EventKind::Reopened { reason: to_text("reopened.reason", r.reason)?, clocks: to_clocks(r.clocks)? }
            }
            Kind::Linked(l) => EventKind::Linked {
                other: to_ticket_id("linked.other_ticket_id", &l.other_ticket_id)?,
                relation: match pb::LinkRelation::try_from(l.relation) {
                    Ok(pb::LinkRelation::SplitInto) => LinkRelation::SplitInto,
                    Ok(pb::LinkRelation::SplitFrom) => LinkRelation::SplitFrom,
                    Ok(pb::LinkRelation::Unspecified) => return Err(ProtoError::Missing("linked.relation")),
                    Err(_) => {
                        return Err(ProtoError::invalid("linked.relation", format!("unknown relation {}", l.relation)));
                    }
                },
            },
        })
    }
}

pub(crate) fn link_relation(r: LinkRelation) -> pb::LinkRelation {
    match r {
        LinkRelation::SplitInto => pb::LinkRelation::SplitInto,
        LinkRelation::SplitFrom => pb::LinkRelation::SplitFrom,
    }
}

pub(crate) fn clock_outcome(o: ClockOutcome) -> pb::ClockOutcome {
    match o {
        ClockOutcome::Met => pb::ClockOutcome::Met,
        ClockOutcome::Breached => pb::ClockOutcome::Breached,
        ClockOutcome::Cancelled => pb::ClockOutcome::Cancelled,
        ClockOutcome::Untargeted => pb::ClockOutcome::Untargeted,
    }
}

impl From<&ClockChange> for pb::ClockChange {
    fn from(c: &ClockChange) -> Self {
        let (effect, outcome) = match c.effect {
            ClockEffect::Started => (pb::ClockEffect::Started, pb::ClockOutcome::Unspecified),
            ClockEffect::Paused => (pb::ClockEffect::Paused, pb::ClockOutcome::Unspecified),
            ClockEffect::Resumed => (pb::ClockEffect::Resumed, pb::ClockOutcome::Unspecified),
            ClockEffect::Retargeted => (pb::ClockEffect::Retargeted, pb::ClockOutcome::Unspecified),
            ClockEffect::Stopped(o) => (pb::ClockEffect::Stopped, clock_outcome(o)),
        };
        pb::ClockChange {
            metric: metric(c.metric),
            cycle: c.cycle,
            effect: effect as i32,
            outcome: outcome as i32,
            plan: c.plan.as_ref().map(pb::ClockPlan::from),
            at: opt_timestamp(c.at.as_ref()),
        }
    }
}

impl TryFrom<pb::ClockChange> for ClockChange {
    type Error = ProtoError;

    fn try_from(c: pb::ClockChange) -> Result<Self, ProtoError> {
        let outcome = match pb::ClockOutcome::try_from(c.outcome) {
            Ok(pb::ClockOutcome::Unspecified) => None,
            Ok(pb::ClockOutcome::Met) => Some(ClockOutcome::Met),
            Ok(pb::ClockOutcome::Breached) => Some(ClockOutcome::Breached),
            Ok(pb::ClockOutcome::Cancelled) => Some(ClockOutcome::Cancelled),
            Ok(pb::ClockOutcome::Untargeted) => Some(ClockOutcome::Untargeted),
            Err(_) => {
                return Err(ProtoError::invalid("clock_change.outcome", format!("unknown outcome {}", c.outcome)));
            }
        };
        let effect = match (pb::ClockEffect::try_from(c.effect), outcome) {
            (Ok(pb::ClockEffect::Started), None) => ClockEffect::Started,
            (Ok(pb::ClockEffect::Paused), None) => ClockEffect::Paused,
            (Ok(pb::ClockEffect::Resumed), None) => ClockEffect::Resumed,
            (Ok(pb::ClockEffect::Retargeted), None) => ClockEffect::Retargeted,
            (Ok(pb::ClockEffect::Stopped), Some(o)) => ClockEffect::Stopped(o),
            (Ok(pb::ClockEffect::Stopped), None) => return Err(ProtoError::Missing("clock_change.outcome")),
            (
                Ok(
                    pb::ClockEffect::Started
                    | pb::ClockEffect::Paused
                    | pb::ClockEffect::Resumed
                    | pb::ClockEffect::Retargeted,
                ),
                Some(_),
            ) => {
                return Err(ProtoError::invalid("clock_change.outcome", "only a stopped clock has an outcome"));
            }
            (Ok(pb::ClockEffect::Unspecified), _) => return Err(ProtoError::Missing("clock_change.effect")),
            (Err(_), _) => {
                return Err(ProtoError::invalid("clock_change.effect", format!("unknown effect {}", c.effect)));
            }
        };
        if c.cycle == 0 {
            return Err(ProtoError::invalid("clock_change.cycle", "cycles start at 1"));
        }
        Ok(ClockChange {
            metric: to_metric("clock_change.metric", c.metric)?,
            cycle: c.cycle,
            effect,
            plan: c.plan.map(ClockPlan::try_from).transpose()?,
            at: to_opt_timestamp("clock_change.at", c.at)?,
        })
    }
}

impl From<&ClockPlan> for pb::ClockPlan {
    fn from(p: &ClockPlan) -> Self {
        pb::ClockPlan {
            severity: severity(p.severity),
            target: Some(pb::Target::from(&p.target)),
            target_duration: Some(duration(p.target_duration)),
            elapsed: Some(duration(p.elapsed)),
            due_at: opt_timestamp(p.due_at.as_ref()),
            warnings: p
                .warnings
                .iter()
                .map(|w| pb::WarningPlan {
                    threshold_percent: u32::from(w.threshold_percent),
                    at: Some(timestamp(&w.at)),
                })
                .collect(),
            policy: Some(pb::PolicyVersion::from(&p.policy)),
        }
    }
}

impl TryFrom<pb::ClockPlan> for ClockPlan {
    type Error = ProtoError;

    fn try_from(p: pb::ClockPlan) -> Result<Self, ProtoError> {
        Ok(ClockPlan {
            severity: to_severity("clock_plan.severity", p.severity)?,
            target: to_target("clock_plan.target", p.target)?,
            target_duration: to_duration("clock_plan.target_duration", p.target_duration)?,
            elapsed: to_duration("clock_plan.elapsed", p.elapsed)?,
            due_at: to_opt_timestamp("clock_plan.due_at", p.due_at)?,
            warnings: p
                .warnings
                .into_iter()
                .map(|w| {
                    Ok(WarningPlan {
                        threshold_percent: percent("warning_plan.threshold_percent", w.threshold_percent)?,
                        at: to_timestamp("warning_plan.at", w.at)?,
                    })
                })
                .collect::<Result<_, ProtoError>>()?,
            policy: to_policy("clock_plan.policy", p.policy)?,
        })
    }
}
