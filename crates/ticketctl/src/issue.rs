//! Local mode commands: the command service runs embedded on the data directory's log (the same
//! decisions and durability as the daemon, without NATS).

use std::path::Path;
use std::sync::Arc;

use ticket_domain::{
    Actor, ActorId, ActorKind, CategoryId, Command, CommandBody, CommandId, CustomerId, OpenTicket, PlanId, Severity,
    SplitTicket, Team, Text, TicketId, Tier, Timestamp,
};
use ticket_log_sled::{SledConfig, SledLog};
use ticket_nats::connection::{Credentials, NatsUrl};
use ticket_proto::pb;
use ticket_service::{CommandRequest, CommandResult, CommandService, ServiceConfig, ServiceError, Stamp};

use crate::Failure;
use crate::local::log_path;
use crate::output::{emit, print_json, table};
use ticket_projections::describe::{event as describe, instant};

pub struct Issuer<'a> {
    pub data_dir: &'a Path,
    /// The policy file; without one, the embedded default policy.
    pub policy: Option<&'a Path>,
    pub actor: &'a str,
    pub command_id: Option<&'a str>,
    pub json: bool,
    pub remote: Option<Remote<'a>>,
}

/// Where a running ticketd listens, and how to log in there.
#[derive(Debug, Clone)]
pub struct Remote<'a> {
    pub url: &'a NatsUrl,
    pub credentials: Credentials,
}

const REMOTE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

async fn connect(remote: &Remote<'_>) -> anyhow::Result<async_nats::Client> {
    let options = async_nats::ConnectOptions::new().name("ticketctl");
    let (options, login) = ticket_nats::connection::login(remote.url, &remote.credentials, options).await?;
    let url = remote.url;
    options.connect(url.servers()).await.map_err(|e| anyhow::anyhow!("cannot connect to {url} with {login}: {e}"))
}

/// A request to ticketd, with a clear error when nothing answers.
async fn request(
    client: &async_nats::Client,
    subject: String,
    payload: Vec<u8>,
) -> Result<async_nats::Message, Failure> {
    match tokio::time::timeout(REMOTE_TIMEOUT, client.request(subject.clone(), payload.into())).await {
        Ok(Ok(message)) => Ok(message),
        Ok(Err(e)) if e.kind() == async_nats::RequestErrorKind::NoResponders => {
            Err(Failure::Data(anyhow::anyhow!("no ticketd answers on {subject}: is it running?")))
        }
        Ok(Err(e)) => Err(Failure::Data(e.into())),
        Err(_) => Err(Failure::Data(anyhow::anyhow!("ticketd did not answer on {subject} within {REMOTE_TIMEOUT:?}"))),
    }
}

/// A wire timestamp as the CLI shows instants.
fn wire_instant(t: Option<&pbjson_types::Timestamp>) -> String {
    t.and_then(|t| chrono::DateTime::from_timestamp(t.seconds, u32::try_from(t.nanos).unwrap_or(0)))
        .map(|t| instant(&t))
        .unwrap_or_default()
}

fn refused(error: &pb::Error) -> Failure {
    let code = pb::ErrorCode::try_from(error.code).map_or("UNKNOWN", |c| c.as_str_name());
    Failure::Negative(format!("refused ({code}): {}", error.message))
}

fn usage(e: impl std::fmt::Display) -> Failure {
    Failure::Usage(e.to_string())
}

fn text(field: &'static str, value: &str) -> Result<Text, Failure> {
    Text::new(field, value).map_err(usage)
}

fn severity(value: &str) -> Result<Severity, Failure> {
    value.parse().map_err(Failure::Usage)
}

fn ticket(value: &str) -> Result<TicketId, Failure> {
    TicketId::parse(value).map_err(usage)
}

fn new_ticket_id() -> TicketId {
    TicketId::from_uuid(uuid::Uuid::now_v7())
}

impl Issuer<'_> {
    fn actor(&self) -> Result<Actor, Failure> {
        let (kind, id) = self.actor.split_once(':').unwrap_or(("agent", self.actor));
        let kind = match kind {
            "agent" => ActorKind::Agent,
            "customer" => ActorKind::Customer,
            "system" => ActorKind::System,
            other => return Err(Failure::Usage(format!("unknown actor kind {other:?} (agent, customer or system)"))),
        };
        Ok(Actor { kind, id: ActorId::new(id).map_err(usage)? })
    }

    fn issue(&self, ticket_id: TicketId, body: CommandBody) -> Result<(), Failure> {
        let id = match self.command_id {
            Some(id) => CommandId::new(id).map_err(usage)?,
            None => CommandId::new(uuid::Uuid::now_v7().to_string()).map_err(usage)?,
        };
        let command = Command { id, ticket_id, actor: self.actor()?, issued_at: ticket_log::now(), body };
        if let Some(remote) = &self.remote {
            return self.issue_remote(remote, command);
        }
        let policy = Arc::new(crate::load_policy(self.policy)?);
        std::fs::create_dir_all(self.data_dir)?;
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let result = runtime.block_on(async {
            let log = SledLog::open(SledConfig::new(log_path(self.data_dir)))?;
            let service =
                CommandService::new(log.clone(), policy, Some(Arc::new(log.snapshots())), ServiceConfig::default());
            let request =
                CommandRequest { command, correlation_id: None, causation_id: None, stamp: Stamp::ServiceClock };
            anyhow::Ok(service.execute(request).await)
        })?;
        match result {
            // The events name the ticket: for a repeated `open`, the original one.
            Ok(result) => self.print(result.events.first().map_or(ticket_id, |e| e.event.ticket_id), &result),
            Err(ServiceError::Rejected(e)) => {
                let code = pb::ErrorCode::try_from(pb::Error::from(&e).code).map_or("UNKNOWN", |c| c.as_str_name());
                if self.json {
                    print_json(&pb::Error::from(&e))?;
                }
                Err(Failure::Negative(format!("refused ({code}): {e}")))
            }
            Err(e) => Err(Failure::Data(e.into())),
        }
    }

    /// Sends the command to ticketd over NATS; the service stamps the instant.
    fn issue_remote(&self, remote: &Remote<'_>, command: Command) -> Result<(), Failure> {
        let name = command.body.name();
        let mut wire = pb::Command::from(&command);
        wire.issued_at = None;
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let reply = runtime.block_on(async {
            let client = connect(remote).await.map_err(Failure::Data)?;
            request(&client, ticket_nats::command_subject(name), prost::Message::encode_to_vec(&wire)).await
        })?;
        let reply: pb::CommandReply =
            prost::Message::decode(reply.payload.as_ref()).map_err(|e| Failure::Data(e.into()))?;
        match reply.result {
            Some(pb::command_reply::Result::Accepted(accepted)) => {
                let events = accepted
                    .events
                    .iter()
                    .cloned()
                    .map(ticket_domain::RecordedEvent::try_from)
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| Failure::Data(e.into()))?;
                let ticket = TicketId::parse(&accepted.ticket_id).unwrap_or(command.ticket_id);
                self.print(ticket, &CommandResult { events, duplicate: accepted.duplicate })
            }
            Some(pb::command_reply::Result::Error(error)) => {
                if self.json {
                    print_json(&error)?;
                }
                Err(refused(&error))
            }
            None => Err(Failure::Data(anyhow::anyhow!("an empty reply from ticketd"))),
        }
    }

    /// `state` in remote mode: the ticket as ticketd serves it now.
    pub fn remote_state(&self, id: &str) -> Result<(), Failure> {
        let Some(remote) = &self.remote else { return Err(Failure::Usage("remote mode needs --nats-url".into())) };
        let query = pb::GetTicket { ticket_id: ticket(id)?.to_string(), min_position: 0 };
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let reply = runtime.block_on(async {
            let client = connect(remote).await.map_err(Failure::Data)?;
            request(&client, ticket_nats::query_subject("ticket"), prost::Message::encode_to_vec(&query)).await
        })?;
        let reply: pb::QueryReply =
            prost::Message::decode(reply.payload.as_ref()).map_err(|e| Failure::Data(e.into()))?;
        match reply.result {
            Some(pb::query_reply::Result::Ticket(view)) => {
                if self.json {
                    return print_json(&view);
                }
                let mut t = table(&["field", "value"]);
                let severity = pb::Severity::try_from(view.severity).map_or("?", |s| s.as_str_name());
                let status = pb::TicketStatus::try_from(view.status).map_or("?", |s| s.as_str_name());
                for (k, v) in [
                    ("ticket", view.ticket_id.clone()),
                    ("title", view.title.clone()),
                    ("customer", view.customer.clone()),
                    ("plan / category", format!("{} / {}", view.plan, view.category)),
                    ("severity", severity.to_owned()),
                    ("status", status.to_owned()),
                    ("version", view.version.to_string()),
                    ("as of position", view.position.to_string()),
                ] {
                    t.add_row(vec![k.to_owned(), v]);
                }
                emit(&t)?;
                let secs = |s: Option<i64>| {
                    s.map(|s| ticket_projections::models::span(chrono::TimeDelta::seconds(s))).unwrap_or_default()
                };
                let mut clocks =
                    table(&["clock", "cycle", "status", "due", "elapsed (business)", "remaining (business)"]);
                for c in &view.clocks {
                    clocks.add_row(vec![
                        pb::Metric::try_from(c.metric)
                            .map_or("?", |m| m.as_str_name())
                            .trim_start_matches("METRIC_")
                            .to_lowercase(),
                        c.cycle.to_string(),
                        pb::ClockStatus::try_from(c.status)
                            .map_or("?", |s| s.as_str_name())
                            .trim_start_matches("CLOCK_STATUS_")
                            .to_lowercase(),
                        wire_instant(c.plan.as_ref().and_then(|p| p.due_at.as_ref())),
                        secs(c.elapsed_business_seconds),
                        secs(c.remaining_business_seconds),
                    ]);
                }
                emit(&clocks)
            }
            Some(pb::query_reply::Result::Error(error)) => Err(refused(&error)),
            Some(
                pb::query_reply::Result::Tickets(_)
                | pb::query_reply::Result::Board(_)
                | pb::query_reply::Result::Timeline(_)
                | pb::query_reply::Result::Compliance(_)
                | pb::query_reply::Result::Lag(_)
                | pb::query_reply::Result::Rebuilt(_),
            )
            | None => Err(Failure::Data(anyhow::anyhow!("an unexpected reply from ticketd"))),
        }
    }

    fn query(&self, name: &str, payload: Vec<u8>) -> Result<pb::query_reply::Result, Failure> {
        self.request_reply(ticket_nats::query_subject(name), payload)
    }

    /// Sends a query (or an operator's request) and returns its result, or the typed refusal.
    fn request_reply(&self, subject: String, payload: Vec<u8>) -> Result<pb::query_reply::Result, Failure> {
        let Some(remote) = &self.remote else {
            return Err(Failure::Usage(format!("{subject} is served by a running ticketd: give --nats-url")));
        };
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let reply = runtime.block_on(async {
            let client = connect(remote).await.map_err(Failure::Data)?;
            request(&client, subject, payload).await
        })?;
        let reply: pb::QueryReply =
            prost::Message::decode(reply.payload.as_ref()).map_err(|e| Failure::Data(e.into()))?;
        match reply.result {
            Some(pb::query_reply::Result::Error(error)) => Err(refused(&error)),
            Some(result) => Ok(result),
            None => Err(Failure::Data(anyhow::anyhow!("an empty reply from ticketd"))),
        }
    }

    pub fn remote_tickets(&self, customer: &str, include_resolved: bool, limit: u32) -> Result<(), Failure> {
        let query = pb::ListCustomerTickets { customer: customer.into(), min_position: 0, include_resolved, limit };
        let pb::query_reply::Result::Tickets(list) = self.query("customer", prost::Message::encode_to_vec(&query))?
        else {
            return Err(Failure::Data(anyhow::anyhow!("an unexpected reply from ticketd")));
        };
        if self.json {
            return print_json(&list);
        }
        let mut t = table(&["ticket", "severity", "status", "opened", "title"]);
        for v in &list.tickets {
            t.add_row(vec![
                v.ticket_id.clone(),
                pb::Severity::try_from(v.severity)
                    .map_or("?", |s| s.as_str_name())
                    .trim_start_matches("SEVERITY_")
                    .to_owned(),
                pb::TicketStatus::try_from(v.status)
                    .map_or("?", |s| s.as_str_name())
                    .trim_start_matches("TICKET_STATUS_")
                    .to_lowercase(),
                wire_instant(v.opened_at.as_ref()),
                v.title.clone(),
            ]);
        }
        emit(&t)?;
        emit(&format!("{} tickets, as of position {}", list.tickets.len(), list.position))
    }

    pub fn remote_timeline(&self, id: &str) -> Result<(), Failure> {
        let query = pb::GetTimeline { ticket_id: ticket(id)?.to_string(), min_position: 0 };
        let pb::query_reply::Result::Timeline(timeline) =
            self.query("timeline", prost::Message::encode_to_vec(&query))?
        else {
            return Err(Failure::Data(anyhow::anyhow!("an unexpected reply from ticketd")));
        };
        if self.json {
            return print_json(&timeline);
        }
        let mut t = table(&["pos", "occurred (UTC)", "event", "actor", "command", "policy", "details"]);
        for e in &timeline.entries {
            t.add_row(vec![
                e.position.to_string(),
                wire_instant(e.occurred_at.as_ref()),
                e.event_type.clone(),
                e.actor.clone(),
                e.command_id.clone(),
                e.policy.clone(),
                e.summary.clone(),
            ]);
        }
        emit(&t)?;
        emit(&format!("{} events, as of position {}", timeline.entries.len(), timeline.position))
    }

    pub fn remote_compliance(&self, from: Option<Timestamp>, to: Option<Timestamp>) -> Result<(), Failure> {
        let query = pb::GetCompliance {
            min_position: 0,
            from: from.as_ref().map(ticket_proto::wire::timestamp),
            to: to.as_ref().map(ticket_proto::wire::timestamp),
        };
        let pb::query_reply::Result::Compliance(report) =
            self.query("compliance", prost::Message::encode_to_vec(&query))?
        else {
            return Err(Failure::Data(anyhow::anyhow!("an unexpected reply from ticketd")));
        };
        if self.json {
            return print_json(&report);
        }
        let secs = |s: Option<i64>| {
            s.map(|s| ticket_projections::models::span(chrono::TimeDelta::seconds(s))).unwrap_or_default()
        };
        let mut t = table(&[
            "plan",
            "sev",
            "category",
            "clock",
            "met",
            "breached",
            "met %",
            "median 1st resp.",
            "p90 1st resp.",
        ]);
        for r in &report.rows {
            t.add_row(vec![
                r.plan.clone(),
                pb::Severity::try_from(r.severity)
                    .map_or("?", |s| s.as_str_name())
                    .trim_start_matches("SEVERITY_")
                    .to_owned(),
                r.category.clone(),
                pb::Metric::try_from(r.metric)
                    .map_or("?", |m| m.as_str_name())
                    .trim_start_matches("METRIC_")
                    .to_lowercase(),
                r.met.to_string(),
                r.breached.to_string(),
                format!("{:.1}", r.compliance_percent),
                secs(r.median_first_response_seconds),
                secs(r.p90_first_response_seconds),
            ]);
        }
        emit(&t)?;
        emit(&format!("as of position {}", report.position))
    }

    /// `projections status` against a running ticketd.
    pub fn remote_lag(&self) -> Result<(), Failure> {
        let payload = prost::Message::encode_to_vec(&pb::GetProjectionLag {});
        let pb::query_reply::Result::Lag(lag) = self.request_reply(ticket_nats::admin_subject("lag"), payload)? else {
            return Err(Failure::Data(anyhow::anyhow!("an unexpected reply from ticketd")));
        };
        crate::output::projection_status(&lag, "position", self.json)
    }

    /// `projections rebuild NAME` against a running ticketd: rebuilt beside the live one, which
    /// serves until the swap.
    pub fn remote_rebuild(&self, name: &str) -> Result<(), Failure> {
        let payload = prost::Message::encode_to_vec(&pb::RebuildProjection { name: name.to_owned() });
        let pb::query_reply::Result::Rebuilt(rebuilt) =
            self.request_reply(ticket_nats::admin_subject("rebuild"), payload)?
        else {
            return Err(Failure::Data(anyhow::anyhow!("an unexpected reply from ticketd")));
        };
        if self.json {
            return print_json(&rebuilt);
        }
        emit(&format!(
            "{} rebuilt from the log ({} events) and swapped in at position {}",
            rebuilt.name, rebuilt.events, rebuilt.position
        ))
    }

    pub fn remote_board(&self, limit: u32) -> Result<(), Failure> {
        let query = pb::GetBoard { min_position: 0, limit };
        let pb::query_reply::Result::Board(board) = self.query("board", prost::Message::encode_to_vec(&query))? else {
            return Err(Failure::Data(anyhow::anyhow!("an unexpected reply from ticketd")));
        };
        if self.json {
            return print_json(&board);
        }
        let mut t = table(&["due", "clock", "severity", "ticket", "customer", "flags", "title"]);
        for e in &board.entries {
            let flags = [(e.breached, "BREACHED"), (e.at_risk && !e.breached, "at risk")]
                .iter()
                .filter(|(on, _)| *on)
                .map(|(_, f)| *f)
                .collect::<Vec<_>>()
                .join(" ");
            t.add_row(vec![
                wire_instant(e.due_at.as_ref()),
                format!(
                    "{}#{}",
                    pb::Metric::try_from(e.metric)
                        .map_or("?", |m| m.as_str_name())
                        .trim_start_matches("METRIC_")
                        .to_lowercase(),
                    e.cycle
                ),
                pb::Severity::try_from(e.severity)
                    .map_or("?", |s| s.as_str_name())
                    .trim_start_matches("SEVERITY_")
                    .to_owned(),
                e.ticket_id.clone(),
                e.customer.clone(),
                flags,
                e.title.clone(),
            ]);
        }
        emit(&t)?;
        emit(&format!("{} open tickets with a running clock, as of position {}", board.entries.len(), board.position))
    }

    fn print(&self, ticket_id: TicketId, result: &CommandResult) -> Result<(), Failure> {
        if self.json {
            let accepted = pb::CommandAccepted {
                ticket_id: ticket_id.to_string(),
                events: result.events.iter().map(pb::EventEnvelope::from).collect(),
                duplicate: result.duplicate,
            };
            return print_json(&accepted);
        }
        emit(&format!(
            "ticket {ticket_id}{}",
            if result.duplicate { " (a repeated command: its original result)" } else { "" }
        ))?;
        let mut t = table(&["pos", "ticket", "occurred (UTC)", "event", "details"]);
        for e in &result.events {
            t.add_row(vec![
                e.position.to_string(),
                e.event.ticket_id.to_string(),
                instant(&e.event.occurred_at),
                e.event.kind.name().to_owned(),
                describe(&e.event.kind),
            ]);
        }
        emit(&t)?;
        Ok(())
    }

    pub fn open(
        &self,
        customer: &str,
        plan: &str,
        category: &str,
        sev: &str,
        title: &str,
        description: &str,
    ) -> Result<(), Failure> {
        let body = CommandBody::Open(OpenTicket {
            customer: CustomerId::new(customer).map_err(usage)?,
            plan: PlanId::new(plan).map_err(usage)?,
            category: CategoryId::new(category).map_err(usage)?,
            title: text("title", title)?,
            description: text("description", description)?,
            severity: severity(sev)?,
        });
        self.issue(new_ticket_id(), body)
    }

    pub fn respond(&self, id: &str, message: &str) -> Result<(), Failure> {
        self.issue(ticket(id)?, CommandBody::RecordAgentResponse { message: text("message", message)? })
    }

    pub fn ask(&self, id: &str, request: &str) -> Result<(), Failure> {
        self.issue(ticket(id)?, CommandBody::RequestCustomerInfo { request: text("request", request)? })
    }

    pub fn reply(&self, id: &str, message: &str) -> Result<(), Failure> {
        self.issue(ticket(id)?, CommandBody::RecordCustomerReply { message: text("message", message)? })
    }

    pub fn severity(&self, id: &str, sev: &str, reason: &str) -> Result<(), Failure> {
        self.issue(ticket(id)?, CommandBody::SetSeverity { severity: severity(sev)?, reason: text("reason", reason)? })
    }

    pub fn escalate(&self, id: &str, tier: &str, team: Option<&str>, reason: &str) -> Result<(), Failure> {
        let body = CommandBody::Escalate {
            tier: Tier::new(tier).map_err(usage)?,
            team: team.map(Team::new).transpose().map_err(usage)?,
            reason: text("reason", reason)?,
        };
        self.issue(ticket(id)?, body)
    }

    pub fn resolve(&self, id: &str, resolution: &str) -> Result<(), Failure> {
        self.issue(ticket(id)?, CommandBody::Resolve { resolution: text("resolution", resolution)? })
    }

    pub fn reopen(&self, id: &str, reason: &str) -> Result<(), Failure> {
        self.issue(ticket(id)?, CommandBody::Reopen { reason: text("reason", reason)? })
    }

    pub fn split(&self, id: &str, category: &str, sev: &str, title: &str, description: &str) -> Result<(), Failure> {
        let body = CommandBody::Split(SplitTicket {
            new_ticket: new_ticket_id(),
            category: CategoryId::new(category).map_err(usage)?,
            severity: severity(sev)?,
            title: text("title", title)?,
            description: text("description", description)?,
        });
        self.issue(ticket(id)?, body)
    }
}
