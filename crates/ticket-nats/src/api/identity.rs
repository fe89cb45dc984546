//! Who sent a request: the identity nats-server stamps on a request that crosses a service import
//! (the `Nats-Request-Info` header, set by the server on the first hop from a client, replacing
//! any header the client sent), mapped by ticketd's configuration to an actor and a role.
//!
//! A request without the header was published inside ticketd's own account: it is refused
//! unless the deployment trusts its own account ([`Unstamped::Trust`], a single-account setup).

use serde::Deserialize;
use ticket_domain::{ActorId, CustomerId};
use ticket_proto::{AdminEndpoint, CommandEndpoint, Endpoint, QueryEndpoint, pb};

/// The header nats-server stamps on a request that crosses a service import.
pub const REQUEST_INFO_HEADER: &str = "Nats-Request-Info";

/// What a role may do on the API. ticketd checks every request itself, whatever the accounts'
/// imports allow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// Support agents and their tools: the agents' commands and every query.
    Agent,
    /// A customer's portal, bound to one customer: opens tickets for it, replies on its tickets,
    /// reads its own tickets (ticket, timeline, its customer list) and nothing else.
    Customer { customer: CustomerId },
    /// Operators: every query and the operators' endpoints (`tickets.admin.*`), no commands.
    Operator,
    /// Moves another helpdesk's history in: every command but the timer's, with past instants
    /// and the original helpdesk's actors (never a system actor).
    Importer,
    /// Downstream systems: events only, nothing on the API.
    Subscriber,
}

impl Role {
    /// The role's name in the configuration and in errors.
    pub const fn name(&self) -> &'static str {
        match self {
            Role::Agent => "agent",
            Role::Customer { .. } => "customer",
            Role::Operator => "operator",
            Role::Importer => "importer",
            Role::Subscriber => "subscriber",
        }
    }

    /// Whether the role may send a request to `endpoint` at all (a customer's requests are then
    /// checked against its customer).
    pub fn may(&self, endpoint: Endpoint) -> bool {
        match endpoint {
            Endpoint::Command(command) => self.may_command(command),
            Endpoint::Query(query) => match self {
                Role::Agent | Role::Operator => true,
                Role::Customer { .. } => match query {
                    QueryEndpoint::Ticket | QueryEndpoint::Timeline | QueryEndpoint::Customer => true,
                    QueryEndpoint::Board | QueryEndpoint::Compliance => false,
                },
                Role::Importer | Role::Subscriber => false,
            },
            Endpoint::Admin(admin) => match admin {
                AdminEndpoint::Lag
                | AdminEndpoint::Rebuild
                | AdminEndpoint::AdvanceClock
                | AdminEndpoint::Cluster
                | AdminEndpoint::Move => matches!(self, Role::Operator),
                // Reading a test clock's instant: whoever sends commands or reads views may.
                AdminEndpoint::Clock => matches!(self, Role::Operator | Role::Agent | Role::Importer),
            },
        }
    }

    fn may_command(&self, command: CommandEndpoint) -> bool {
        // The timer's commands come from the timer in ticketd's process, never over NATS.
        let timer = matches!(
            command,
            CommandEndpoint::RecordSlaWarning
                | CommandEndpoint::RecordSlaBreach
                | CommandEndpoint::DowngradeForNoResponse
        );
        match self {
            Role::Agent => match command {
                CommandEndpoint::Open
                | CommandEndpoint::SetSeverity
                | CommandEndpoint::RecordAgentResponse
                | CommandEndpoint::RequestCustomerInfo
                | CommandEndpoint::Escalate
                | CommandEndpoint::Resolve
                | CommandEndpoint::Reopen
                | CommandEndpoint::Split => true,
                CommandEndpoint::RecordCustomerReply
                | CommandEndpoint::RecordSlaWarning
                | CommandEndpoint::RecordSlaBreach
                | CommandEndpoint::DowngradeForNoResponse => false,
            },
            Role::Customer { .. } => matches!(command, CommandEndpoint::Open | CommandEndpoint::RecordCustomerReply),
            Role::Importer => !timer,
            Role::Operator | Role::Subscriber => false,
        }
    }

    /// The actor kind a request of this role is recorded with (an importer's is the payload's).
    pub const fn actor_kind(&self) -> Option<pb::ActorKind> {
        match self {
            Role::Agent => Some(pb::ActorKind::Agent),
            Role::Customer { .. } => Some(pb::ActorKind::Customer),
            Role::Operator | Role::Importer | Role::Subscriber => None,
        }
    }
}

/// One `[[identities]]` entry: the users of an account (`user = "*"`: every user of it), the actor
/// they are recorded as (none: the user name), their role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityRule {
    pub account: String,
    /// A user name (or an NKey public key), or `*` for every user of the account.
    pub user: String,
    pub actor: Option<ActorId>,
    pub role: Role,
}

/// What a request without the `Nats-Request-Info` header (one from inside ticketd's own account,
/// not through a service import) is taken as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Unstamped {
    /// Refused: only requests through a service import are served (the shipped accounts).
    #[default]
    Deny,
    /// Taken as sent, as before identities: for single-account setups and tests. Any client of
    /// the account can then send any command as any actor with any instant.
    Trust,
}

/// The fields of the header ticketd reads (`ClientInfo` in nats-server's server/events.go).
#[derive(Debug, Clone, Default, Deserialize)]
struct RequestInfo {
    #[serde(default)]
    acc: String,
    #[serde(default)]
    user: String,
}

/// Who sent a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// No header, and the deployment trusts its own account: taken as sent.
    Trusted,
    /// A mapped identity.
    Identified { account: String, user: String, actor: ActorId, role: Role },
}

/// A refusal before any decision: `PERMISSION_DENIED` with what was seen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denied {
    pub account: String,
    pub user: String,
    pub role: Option<&'static str>,
    pub endpoint: String,
    pub reason: String,
}

impl Denied {
    pub fn new(caller: &Caller, endpoint: Endpoint, reason: impl Into<String>) -> Self {
        let (account, user, role) = match caller {
            Caller::Trusted => (String::new(), String::new(), None),
            Caller::Identified { account, user, role, .. } => (account.clone(), user.clone(), Some(role.name())),
        };
        Self { account, user, role, endpoint: endpoint.subject(), reason: reason.into() }
    }

    /// The wire error, with its details.
    pub fn error(&self) -> pb::Error {
        let mut details = std::collections::HashMap::new();
        details.insert("account".to_owned(), self.account.clone());
        details.insert("user".to_owned(), self.user.clone());
        details.insert("role".to_owned(), self.role.unwrap_or("").to_owned());
        details.insert("endpoint".to_owned(), self.endpoint.clone());
        let who = match self.role {
            Some(role) => format!("{}/{} ({role})", self.account, self.user),
            None => format!("{}/{}", self.account, self.user),
        };
        pb::Error {
            code: pb::ErrorCode::PermissionDenied as i32,
            message: format!("permission denied to {who} on {}: {}", self.endpoint, self.reason),
            details: details.into_iter().collect(),
        }
    }
}

/// The configured identities.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Identities {
    pub rules: Vec<IdentityRule>,
    pub unstamped: Unstamped,
}

impl Identities {
    /// No identities, and requests from ticketd's own account taken as sent: a single-account
    /// setup (a plain nats-server, tests, benchmarks).
    pub fn trust_own_account() -> Self {
        Self { rules: Vec::new(), unstamped: Unstamped::Trust }
    }

    /// Who sent a request to `endpoint` with `header` (the `Nats-Request-Info` value, if any).
    pub fn caller(&self, header: Option<&str>, endpoint: Endpoint) -> Result<Caller, Denied> {
        let denied = |account: &str, user: &str, reason: &str| Denied {
            account: account.to_owned(),
            user: user.to_owned(),
            role: None,
            endpoint: endpoint.subject(),
            reason: reason.to_owned(),
        };
        let Some(header) = header else {
            return match self.unstamped {
                Unstamped::Trust => Ok(Caller::Trusted),
                Unstamped::Deny => Err(denied("", "", "request did not come through a service import")),
            };
        };
        let info: RequestInfo = serde_json::from_str(header)
            .map_err(|e| denied("", "", &format!("unreadable {REQUEST_INFO_HEADER} header: {e}")))?;
        if info.acc.is_empty() {
            return Err(denied("", &info.user, &format!("no account in the {REQUEST_INFO_HEADER} header")));
        }
        let exact = self.rules.iter().find(|r| r.account == info.acc && !info.user.is_empty() && r.user == info.user);
        let rule = exact.or_else(|| self.rules.iter().find(|r| r.account == info.acc && r.user == "*"));
        let Some(rule) = rule else {
            return Err(denied(&info.acc, &info.user, "no identity is configured for this account and user"));
        };
        let actor = match &rule.actor {
            Some(actor) => actor.clone(),
            None => ActorId::new(info.user.clone()).map_err(|e| {
                denied(&info.acc, &info.user, &format!("the user is no actor id (does the import share it?): {e}"))
            })?,
        };
        Ok(Caller::Identified { account: info.acc, user: info.user, actor, role: rule.role.clone() })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn rules() -> Identities {
        let rule = |account: &str, user: &str, actor: Option<&str>, role: Role| IdentityRule {
            account: account.into(),
            user: user.into(),
            actor: actor.map(|a| ActorId::new(a).unwrap()),
            role,
        };
        Identities {
            rules: vec![
                rule("SUPPORT", "*", None, Role::Agent),
                rule("SUPPORT", "lead", Some("team-lead"), Role::Operator),
                rule("CUSTOMERS", "acme", None, Role::Customer { customer: CustomerId::new("acme").unwrap() }),
            ],
            unstamped: Unstamped::Deny,
        }
    }

    const OPEN: Endpoint = Endpoint::Command(CommandEndpoint::Open);

    #[test]
    fn a_user_maps_by_name_before_its_accounts_wildcard() {
        let ids = rules();
        let Caller::Identified { actor, role, .. } =
            ids.caller(Some(r#"{"acc":"SUPPORT","user":"li"}"#), OPEN).unwrap()
        else {
            panic!()
        };
        assert_eq!((actor.as_str(), role), ("li", Role::Agent));
        let Caller::Identified { actor, role, .. } =
            ids.caller(Some(r#"{"acc":"SUPPORT","user":"lead","name":"x"}"#), OPEN).unwrap()
        else {
            panic!()
        };
        assert_eq!((actor.as_str(), role), ("team-lead", Role::Operator));
    }

    #[test]
    fn no_mapping_no_header_or_an_unshared_user_is_denied() {
        let ids = rules();
        let denied = ids.caller(Some(r#"{"acc":"OTHER","user":"x"}"#), OPEN).unwrap_err();
        assert_eq!((denied.account.as_str(), denied.user.as_str()), ("OTHER", "x"));
        assert_eq!(denied.error().code, pb::ErrorCode::PermissionDenied as i32);
        assert_eq!(denied.error().details.get("endpoint").map(String::as_str), Some("tickets.cmd.open"));
        let unstamped = ids.caller(None, OPEN).unwrap_err();
        assert!(unstamped.reason.contains("service import"), "{}", unstamped.reason);
        // An import without `share: true` stamps the account only: a wildcard has no user to name.
        assert!(ids.caller(Some(r#"{"acc":"SUPPORT"}"#), OPEN).is_err());
        assert!(ids.caller(Some("not json"), OPEN).is_err());
        let trusting = Identities { unstamped: Unstamped::Trust, ..rules() };
        assert_eq!(trusting.caller(None, OPEN).unwrap(), Caller::Trusted);
    }

    #[test]
    fn each_role_reaches_its_endpoints_and_no_role_the_timers() {
        let customer = Role::Customer { customer: CustomerId::new("acme").unwrap() };
        let roles = [Role::Agent, customer.clone(), Role::Operator, Role::Importer, Role::Subscriber];
        for role in &roles {
            for timer in [
                CommandEndpoint::RecordSlaWarning,
                CommandEndpoint::RecordSlaBreach,
                CommandEndpoint::DowngradeForNoResponse,
            ] {
                assert!(!role.may(Endpoint::Command(timer)), "{role:?} {timer:?}");
            }
        }
        let may = |role: &Role| Endpoint::all().filter(|e| role.may(*e)).map(Endpoint::subject).collect::<Vec<_>>();
        // The commands and queries, and reading a test clock's instant.
        assert_eq!(may(&Role::Agent).len(), 8 + 5 + 1);
        assert!(!Role::Agent.may(Endpoint::Command(CommandEndpoint::RecordCustomerReply)));
        assert_eq!(
            may(&customer),
            [
                "tickets.cmd.open",
                "tickets.cmd.record_customer_reply",
                "tickets.query.ticket",
                "tickets.query.customer",
                "tickets.query.timeline"
            ]
        );
        assert_eq!(may(&Role::Operator).len(), 5 + 6);
        assert!(may(&Role::Operator).iter().all(|s| !s.starts_with("tickets.cmd.")));
        assert_eq!(may(&Role::Importer).len(), 9 + 1);
        assert!(may(&Role::Subscriber).is_empty());
    }
}
