//! Commands.

use ticket_domain::{Command, CommandBody, OpenTicket, SplitTicket};

use super::common::*;
use crate::{ProtoError, pb};

impl From<&Command> for pb::Command {
    fn from(c: &Command) -> Self {
        pb::Command {
            command_id: c.id.to_string(),
            ticket_id: c.ticket_id.to_string(),
            actor: Some(pb::Actor::from(&c.actor)),
            issued_at: Some(timestamp(&c.issued_at)),
            correlation_id: String::new(),
            client_time: None,
            body: Some(pb::command::Body::from(&c.body)),
        }
    }
}

impl From<&CommandBody> for pb::command::Body {
    fn from(body: &CommandBody) -> Self {
        use pb::command::Body;
        match body {
            CommandBody::Open(o) => Body::Open(pb::OpenTicket {
                customer: o.customer.to_string(),
                plan: o.plan.to_string(),
                category: o.category.to_string(),
                title: o.title.to_string(),
                description: o.description.to_string(),
                severity: severity(o.severity),
            }),
            CommandBody::SetSeverity { severity: s, reason } => {
                Body::SetSeverity(pb::SetSeverity { severity: severity(*s), reason: reason.to_string() })
            }
            CommandBody::RecordAgentResponse { message } => {
                Body::RecordAgentResponse(pb::RecordAgentResponse { message: message.to_string() })
            }
            CommandBody::RequestCustomerInfo { request } => {
                Body::RequestCustomerInfo(pb::RequestCustomerInfo { request: request.to_string() })
            }
            CommandBody::RecordCustomerReply { message } => {
                Body::RecordCustomerReply(pb::RecordCustomerReply { message: message.to_string() })
            }
            CommandBody::Escalate { tier, team, reason } => Body::Escalate(pb::Escalate {
                tier: tier.to_string(),
                team: team.as_ref().map(ToString::to_string),
                reason: reason.to_string(),
            }),
            CommandBody::Resolve { resolution } => Body::Resolve(pb::Resolve { resolution: resolution.to_string() }),
            CommandBody::Reopen { reason } => Body::Reopen(pb::Reopen { reason: reason.to_string() }),
            CommandBody::Split(s) => Body::Split(pb::Split {
                new_ticket_id: s.new_ticket.to_string(),
                category: s.category.to_string(),
                severity: severity(s.severity),
                title: s.title.to_string(),
                description: s.description.to_string(),
            }),
            CommandBody::RecordSlaWarning { metric: m, cycle, threshold_percent, warn_at } => {
                Body::RecordSlaWarning(pb::RecordSlaWarning {
                    metric: metric(*m),
                    cycle: *cycle,
                    threshold_percent: u32::from(*threshold_percent),
                    warn_at: Some(timestamp(warn_at)),
                })
            }
            CommandBody::RecordSlaBreach { metric: m, cycle, due_at, at_import } => {
                Body::RecordSlaBreach(pb::RecordSlaBreach {
                    metric: metric(*m),
                    cycle: *cycle,
                    due_at: Some(timestamp(due_at)),
                    at_import: *at_import,
                })
            }
            CommandBody::DowngradeForNoResponse { cycle, due_at } => {
                Body::DowngradeForNoResponse(pb::DowngradeForNoResponse {
                    cycle: *cycle,
                    due_at: Some(timestamp(due_at)),
                })
            }
        }
    }
}

impl TryFrom<pb::Command> for Command {
    type Error = ProtoError;

    /// Every metadata field must be set; a service that accepts partial commands from clients
    /// fills them in (mints ids, stamps the instant) before converting.
    fn try_from(c: pb::Command) -> Result<Self, ProtoError> {
        use pb::command::Body;
        let body = match c.body.ok_or(ProtoError::Missing("body"))? {
            Body::Open(o) => CommandBody::Open(OpenTicket {
                customer: to_customer("open.customer", o.customer)?,
                plan: to_plan("open.plan", o.plan)?,
                category: to_category("open.category", o.category)?,
                title: to_text("open.title", o.title)?,
                description: to_text("open.description", o.description)?,
                severity: to_severity("open.severity", o.severity)?,
            }),
            Body::SetSeverity(s) => CommandBody::SetSeverity {
                severity: to_severity("set_severity.severity", s.severity)?,
                reason: to_text("set_severity.reason", s.reason)?,
            },
            Body::RecordAgentResponse(r) => {
                CommandBody::RecordAgentResponse { message: to_text("record_agent_response.message", r.message)? }
            }
            Body::RequestCustomerInfo(r) => {
                CommandBody::RequestCustomerInfo { request: to_text("request_customer_info.request", r.request)? }
            }
            Body::RecordCustomerReply(r) => {
                CommandBody::RecordCustomerReply { message: to_text("record_customer_reply.message", r.message)? }
            }
            Body::Escalate(e) => CommandBody::Escalate {
                tier: to_tier("escalate.tier", e.tier)?,
                team: e.team.map(|t| to_team("escalate.team", t)).transpose()?,
                reason: to_text("escalate.reason", e.reason)?,
            },
            Body::Resolve(r) => CommandBody::Resolve { resolution: to_text("resolve.resolution", r.resolution)? },
            Body::Reopen(r) => CommandBody::Reopen { reason: to_text("reopen.reason", r.reason)? },
            Body::Split(s) => CommandBody::Split(SplitTicket {
                new_ticket: to_ticket_id("split.new_ticket_id", &s.new_ticket_id)?,
                category: to_category("split.category", s.category)?,
                severity: to_severity("split.severity", s.severity)?,
                title: to_text("split.title", s.title)?,
                description: to_text("split.description", s.description)?,
            }),
            Body::RecordSlaWarning(w) => CommandBody::RecordSlaWarning {
                metric: to_metric("record_sla_warning.metric", w.metric)?,
                cycle: w.cycle,
                threshold_percent: percent("record_sla_warning.threshold_percent", w.threshold_percent)?,
                warn_at: to_timestamp("record_sla_warning.warn_at", w.warn_at)?,
            },
            Body::RecordSlaBreach(b) => CommandBody::RecordSlaBreach {
                metric: to_metric("record_sla_breach.metric", b.metric)?,
                cycle: b.cycle,
                due_at: to_timestamp("record_sla_breach.due_at", b.due_at)?,
                at_import: b.at_import,
            },
            Body::DowngradeForNoResponse(d) => CommandBody::DowngradeForNoResponse {
                cycle: d.cycle,
                due_at: to_timestamp("downgrade_for_no_response.due_at", d.due_at)?,
            },
        };
        Ok(Command {
            id: to_command_id("command_id", c.command_id)?,
            ticket_id: to_ticket_id("ticket_id", &c.ticket_id)?,
            actor: to_actor("actor", c.actor)?,
            issued_at: to_timestamp("issued_at", c.issued_at)?,
            body,
        })
    }
}
