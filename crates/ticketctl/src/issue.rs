//! The support tools' commands, built from the command line and issued through a backend: the
//! engine embedded on the data directory (the same decisions and durability as the daemon,
//! without NATS), or a running ticketd over NATS (its service stamps the instant).

use ticket_domain::{
    Actor, ActorId, ActorKind, CategoryId, Command, CommandBody, CommandId, CustomerId, OpenTicket, PlanId, Severity,
    SplitTicket, Team, Text, TicketId, Tier,
};

use crate::backend::Backend;
use crate::{Failure, render};

/// Who issues, under which command id, and how the result is printed.
pub struct Issuer<'a, B> {
    pub backend: &'a B,
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

pub(crate) fn ticket(value: &str) -> Result<TicketId, Failure> {
    TicketId::parse(value).map_err(usage)
}

fn new_ticket_id() -> TicketId {
    TicketId::from_uuid(uuid::Uuid::now_v7())
}

impl<B: Backend> Issuer<'_, B> {
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
        render::accepted(&self.backend.command(command)?, self.json)
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
