//! Read views of domain state, for query replies. The read-model crate builds richer views; a
//! ticket's own state is enough for the single-ticket query.

use ticket_domain::{ClockStatus, SeverityCause, Status, Ticket};

use super::common::*;
use super::event::{clock_outcome, link_relation};
use crate::pb;

impl From<&Ticket> for pb::TicketView {
    fn from(t: &Ticket) -> Self {
        let status = match t.status {
            Status::Open => pb::TicketStatus::Open,
            Status::AwaitingCustomer => pb::TicketStatus::AwaitingCustomer,
            Status::Resolved => pb::TicketStatus::Resolved,
        };
        pb::TicketView {
            ticket_id: t.id.to_string(),
            customer: t.customer.to_string(),
            plan: t.plan.to_string(),
            category: t.category.to_string(),
            title: t.title.to_string(),
            description: t.description.to_string(),
            severity: severity(t.severity),
            status: status as i32,
            opened_at: Some(timestamp(&t.opened_at)),
            first_response_at: opt_timestamp(t.first_response_at.as_ref()),
            resolved_at: opt_timestamp(t.resolved_at.as_ref()),
            tier: t.tier.as_ref().map(ToString::to_string),
            team: t.team.as_ref().map(ToString::to_string),
            clocks: t
                .clocks
                .values()
                .map(|c| {
                    let (status, outcome) = match c.status {
                        ClockStatus::Running => (pb::ClockStatus::Running, pb::ClockOutcome::Unspecified),
                        ClockStatus::Paused => (pb::ClockStatus::Paused, pb::ClockOutcome::Unspecified),
                        ClockStatus::Stopped(o) => (pb::ClockStatus::Stopped, clock_outcome(o)),
                    };
                    pb::ClockView {
                        metric: metric(c.metric),
                        cycle: c.cycle,
                        status: status as i32,
                        outcome: outcome as i32,
                        started_at: Some(timestamp(&c.started_at)),
                        plan: c.plan.as_ref().map(pb::ClockPlan::from),
                        breached: c.breached,
                        warned_percent: c.warned.iter().map(|w| u32::from(*w)).collect(),
                        elapsed_business_seconds: None,
                        remaining_business_seconds: None,
                    }
                })
                .collect(),
            severity_history: t
                .severity_history
                .iter()
                .map(|h| {
                    let (cause, reason) = match &h.cause {
                        SeverityCause::Opened => ("opened", String::new()),
                        SeverityCause::Set { reason } => ("set", reason.to_string()),
                        SeverityCause::NoResponse => ("no_response", String::new()),
                    };
                    pb::SeverityChange {
                        at: Some(timestamp(&h.at)),
                        from: h.from.map_or(pb::Severity::Unspecified as i32, severity),
                        to: severity(h.to),
                        cause: cause.to_owned(),
                        reason,
                    }
                })
                .collect(),
            links: t
                .links
                .iter()
                .map(|(other, relation)| pb::Link {
                    ticket_id: other.to_string(),
                    relation: link_relation(*relation) as i32,
                })
                .collect(),
            policy: Some(pb::PolicyVersion::from(&t.policy)),
            version: t.version,
            position: 0,
        }
    }
}
