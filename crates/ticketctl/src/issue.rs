//! Local mode commands: the command service runs embedded on the data directory's log (the same
//! decisions and durability as the daemon, without NATS).

use std::path::Path;
use std::sync::Arc;

use ticket_domain::{
    Actor, ActorId, ActorKind, CategoryId, Command, CommandBody, CommandId, CustomerId, OpenTicket, PlanId, Policy,
    Severity, SplitTicket, Team, Text, TicketId, Tier,
};
use ticket_log_sled::{SledConfig, SledLog};
use ticket_proto::pb;
use ticket_service::{CommandRequest, CommandResult, CommandService, ServiceConfig, ServiceError, Stamp};

use crate::Failure;
use crate::describe::{event as describe, instant};
use crate::local::log_path;
use crate::output::{emit, print_json, table};

pub struct Issuer<'a> {
    pub data_dir: &'a Path,
    pub policy: &'a Path,
    pub actor: &'a str,
    pub command_id: Option<&'a str>,
    pub json: bool,
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
        let policy = Arc::new(Policy::load(self.policy).map_err(usage)?);
        let id = match self.command_id {
            Some(id) => CommandId::new(id).map_err(usage)?,
            None => CommandId::new(uuid::Uuid::now_v7().to_string()).map_err(usage)?,
        };
        let command = Command { id, ticket_id, actor: self.actor()?, issued_at: ticket_log::now(), body };
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
