//! The NATS API's endpoints: the one list of what ticketd serves, shared by the server
//! (`ticket-nats`) and its clients (`ticket-client`).
//!
//! Every name, subject and request decoder comes from an exhaustive match over these enums, so
//! a new domain command is a compile error in [`CommandEndpoint::of`] until it has an endpoint,
//! and an endpoint is registered by the server as soon as it is listed here (the server
//! registers [`Endpoint::all`]).
//!
//! Subjects: `tickets.cmd.<command>` (a [`pb::Command`], answered with a [`pb::CommandReply`]),
//! `tickets.query.<query>` and `tickets.admin.<endpoint>` (answered with a [`pb::QueryReply`]).

use prost::Message;
use ticket_domain::CommandBody;

use crate::pb;

/// The micro service's name, and the first token of every API subject.
pub const SERVICE_NAME: &str = "tickets";

/// An enum of endpoint names, with `ALL` and `name` from the same list (so they cannot drift).
macro_rules! endpoints {
    ($(#[$doc:meta])* $enum:ident { $($(#[$vdoc:meta])* $variant:ident => $name:literal,)+ }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $enum {
            $($(#[$vdoc])* $variant,)+
        }

        impl $enum {
            /// Every endpoint of the family, in the order of the list.
            pub const ALL: &'static [$enum] = &[$($enum::$variant,)+];

            /// The endpoint's name: the last token of its subject.
            pub const fn name(self) -> &'static str {
                match self {
                    $($enum::$variant => $name,)+
                }
            }

            /// The endpoint named `name`, if there is one.
            pub fn from_name(name: &str) -> Option<Self> {
                Self::ALL.iter().copied().find(|e| e.name() == name)
            }
        }
    };
}

endpoints! {
    /// A command endpoint (`tickets.cmd.<name>`), named as the domain names its command.
    CommandEndpoint {
        Open => "open",
        SetSeverity => "set_severity",
        RecordAgentResponse => "record_agent_response",
        RequestCustomerInfo => "request_customer_info",
        RecordCustomerReply => "record_customer_reply",
        Escalate => "escalate",
        Resolve => "resolve",
        Reopen => "reopen",
        Split => "split",
        RecordSlaWarning => "record_sla_warning",
        RecordSlaBreach => "record_sla_breach",
        DowngradeForNoResponse => "downgrade_for_no_response",
    }
}

endpoints! {
    /// A query endpoint (`tickets.query.<name>`), answered from the read models.
    QueryEndpoint {
        /// One ticket: [`pb::GetTicket`] → [`pb::TicketView`].
        Ticket => "ticket",
        /// A customer's tickets: [`pb::ListCustomerTickets`] → [`pb::TicketList`].
        Customer => "customer",
        /// The SLA board: [`pb::GetBoard`] → [`pb::Board`].
        Board => "board",
        /// A ticket's timeline: [`pb::GetTimeline`] → [`pb::Timeline`].
        Timeline => "timeline",
        /// The compliance report: [`pb::GetCompliance`] → [`pb::ComplianceReport`].
        Compliance => "compliance",
    }
}

endpoints! {
    /// An operators' endpoint (`tickets.admin.<name>`).
    AdminEndpoint {
        /// The projections' lag: [`pb::GetProjectionLag`] → [`pb::ProjectionLags`].
        Lag => "lag",
        /// A projection rebuilt beside the live one: [`pb::RebuildProjection`] → [`pb::ProjectionRebuilt`].
        Rebuild => "rebuild",
        /// The engine's clock: [`pb::GetClock`] → [`pb::ClockNow`].
        Clock => "clock",
        /// A test clock moved forward through every firing on the way: [`pb::AdvanceClock`] →
        /// [`pb::ClockAdvanced`] (refused on a wall-clock deployment).
        AdvanceClock => "advance_clock",
        /// A cluster's partitions, owners and heads: [`pb::GetClusterStatus`] →
        /// [`pb::ClusterStatus`].
        Cluster => "cluster",
        /// A planned handover of a partition to a node: [`pb::MovePartition`] →
        /// [`pb::PartitionMove`].
        Move => "move",
    }
}

impl CommandEndpoint {
    /// The endpoint that serves a domain command.
    pub const fn of(body: &CommandBody) -> Self {
        match body {
            CommandBody::Open(_) => Self::Open,
            CommandBody::SetSeverity { .. } => Self::SetSeverity,
            CommandBody::RecordAgentResponse { .. } => Self::RecordAgentResponse,
            CommandBody::RequestCustomerInfo { .. } => Self::RequestCustomerInfo,
            CommandBody::RecordCustomerReply { .. } => Self::RecordCustomerReply,
            CommandBody::Escalate { .. } => Self::Escalate,
            CommandBody::Resolve { .. } => Self::Resolve,
            CommandBody::Reopen { .. } => Self::Reopen,
            CommandBody::Split(_) => Self::Split,
            CommandBody::RecordSlaWarning { .. } => Self::RecordSlaWarning,
            CommandBody::RecordSlaBreach { .. } => Self::RecordSlaBreach,
            CommandBody::DowngradeForNoResponse { .. } => Self::DowngradeForNoResponse,
        }
    }

    /// The endpoint that serves a wire command's body.
    pub const fn of_wire(body: &pb::command::Body) -> Self {
        use pb::command::Body;
        match body {
            Body::Open(_) => Self::Open,
            Body::SetSeverity(_) => Self::SetSeverity,
            Body::RecordAgentResponse(_) => Self::RecordAgentResponse,
            Body::RequestCustomerInfo(_) => Self::RequestCustomerInfo,
            Body::RecordCustomerReply(_) => Self::RecordCustomerReply,
            Body::Escalate(_) => Self::Escalate,
            Body::Resolve(_) => Self::Resolve,
            Body::Reopen(_) => Self::Reopen,
            Body::Split(_) => Self::Split,
            Body::RecordSlaWarning(_) => Self::RecordSlaWarning,
            Body::RecordSlaBreach(_) => Self::RecordSlaBreach,
            Body::DowngradeForNoResponse(_) => Self::DowngradeForNoResponse,
        }
    }

    pub fn subject(self) -> String {
        Endpoint::Command(self).subject()
    }
}

impl QueryEndpoint {
    pub fn subject(self) -> String {
        Endpoint::Query(self).subject()
    }
}

impl AdminEndpoint {
    pub fn subject(self) -> String {
        Endpoint::Admin(self).subject()
    }
}

/// A family of endpoints: its subjects share a prefix and its replies a type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    /// `tickets.cmd.*`, answered with a [`pb::CommandReply`].
    Command,
    /// `tickets.query.*`, answered with a [`pb::QueryReply`].
    Query,
    /// `tickets.admin.*`, answered with a [`pb::QueryReply`].
    Admin,
}

impl Family {
    pub const ALL: [Family; 3] = [Family::Command, Family::Query, Family::Admin];

    /// The token after [`SERVICE_NAME`] in the family's subjects.
    pub const fn token(self) -> &'static str {
        match self {
            Family::Command => "cmd",
            Family::Query => "query",
            Family::Admin => "admin",
        }
    }

    /// The subjects' prefix, the micro service's group: `tickets.cmd`, `tickets.query`, `tickets.admin`.
    pub fn group(self) -> String {
        format!("{SERVICE_NAME}.{}", self.token())
    }

    /// The family whose subjects `subject` is in (a known endpoint or not).
    pub fn of_subject(subject: &str) -> Option<Self> {
        let rest = subject.strip_prefix(SERVICE_NAME)?.strip_prefix('.')?;
        let (token, name) = rest.split_once('.')?;
        if name.is_empty() {
            return None;
        }
        Self::ALL.into_iter().find(|f| f.token() == token)
    }
}

/// One endpoint of the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Endpoint {
    Command(CommandEndpoint),
    Query(QueryEndpoint),
    Admin(AdminEndpoint),
}

impl Endpoint {
    /// Every endpoint the API serves: what the server registers.
    pub fn all() -> impl Iterator<Item = Endpoint> {
        let commands = CommandEndpoint::ALL.iter().copied().map(Endpoint::Command);
        let queries = QueryEndpoint::ALL.iter().copied().map(Endpoint::Query);
        let admin = AdminEndpoint::ALL.iter().copied().map(Endpoint::Admin);
        commands.chain(queries).chain(admin)
    }

    pub const fn family(self) -> Family {
        match self {
            Endpoint::Command(_) => Family::Command,
            Endpoint::Query(_) => Family::Query,
            Endpoint::Admin(_) => Family::Admin,
        }
    }

    /// The last token of the endpoint's subject.
    pub const fn name(self) -> &'static str {
        match self {
            Endpoint::Command(e) => e.name(),
            Endpoint::Query(e) => e.name(),
            Endpoint::Admin(e) => e.name(),
        }
    }

    /// `tickets.<family>.<name>`.
    pub fn subject(self) -> String {
        format!("{}.{}", self.family().group(), self.name())
    }

    /// The endpoint `subject` names, if the API serves one there.
    pub fn from_subject(subject: &str) -> Option<Self> {
        let family = Family::of_subject(subject)?;
        let name = subject.strip_prefix(family.group().as_str())?.strip_prefix('.')?;
        match family {
            Family::Command => CommandEndpoint::from_name(name).map(Endpoint::Command),
            Family::Query => QueryEndpoint::from_name(name).map(Endpoint::Query),
            Family::Admin => AdminEndpoint::from_name(name).map(Endpoint::Admin),
        }
    }
}

/// A query, as sent to its endpoint.
#[derive(Debug, Clone, PartialEq)]
pub enum Query {
    Ticket(pb::GetTicket),
    Customer(pb::ListCustomerTickets),
    Board(pb::GetBoard),
    Timeline(pb::GetTimeline),
    Compliance(pb::GetCompliance),
}

impl Query {
    pub const fn endpoint(&self) -> QueryEndpoint {
        match self {
            Query::Ticket(_) => QueryEndpoint::Ticket,
            Query::Customer(_) => QueryEndpoint::Customer,
            Query::Board(_) => QueryEndpoint::Board,
            Query::Timeline(_) => QueryEndpoint::Timeline,
            Query::Compliance(_) => QueryEndpoint::Compliance,
        }
    }

    /// Decodes a request to `endpoint`.
    pub fn decode(endpoint: QueryEndpoint, payload: &[u8]) -> Result<Self, prost::DecodeError> {
        match endpoint {
            QueryEndpoint::Ticket => pb::GetTicket::decode(payload).map(Query::Ticket),
            QueryEndpoint::Customer => pb::ListCustomerTickets::decode(payload).map(Query::Customer),
            QueryEndpoint::Board => pb::GetBoard::decode(payload).map(Query::Board),
            QueryEndpoint::Timeline => pb::GetTimeline::decode(payload).map(Query::Timeline),
            QueryEndpoint::Compliance => pb::GetCompliance::decode(payload).map(Query::Compliance),
        }
    }

    pub fn encode_to_vec(&self) -> Vec<u8> {
        match self {
            Query::Ticket(q) => q.encode_to_vec(),
            Query::Customer(q) => q.encode_to_vec(),
            Query::Board(q) => q.encode_to_vec(),
            Query::Timeline(q) => q.encode_to_vec(),
            Query::Compliance(q) => q.encode_to_vec(),
        }
    }

    /// The log position the views must have applied before answering (read-your-writes; 0: any).
    pub const fn min_position(&self) -> u64 {
        match self {
            Query::Ticket(q) => q.min_position,
            Query::Customer(q) => q.min_position,
            Query::Board(q) => q.min_position,
            Query::Timeline(q) => q.min_position,
            Query::Compliance(q) => q.min_position,
        }
    }

    /// The position each partition must have reached (a cluster's queries that read every
    /// partition); empty for a ticket's own queries, which name theirs in `min_position`.
    pub fn min_partition_positions(&self) -> &std::collections::BTreeMap<u32, u64> {
        static NONE: std::collections::BTreeMap<u32, u64> = std::collections::BTreeMap::new();
        match self {
            Query::Customer(q) => &q.min_partition_positions,
            Query::Board(q) => &q.min_partition_positions,
            Query::Compliance(q) => &q.min_partition_positions,
            Query::Ticket(_) | Query::Timeline(_) => &NONE,
        }
    }
}

/// An operator's request, as sent to its endpoint.
#[derive(Debug, Clone, PartialEq)]
pub enum AdminRequest {
    Lag(pb::GetProjectionLag),
    Rebuild(pb::RebuildProjection),
    Clock(pb::GetClock),
    AdvanceClock(pb::AdvanceClock),
    Cluster(pb::GetClusterStatus),
    Move(pb::MovePartition),
}

impl AdminRequest {
    pub const fn endpoint(&self) -> AdminEndpoint {
        match self {
            AdminRequest::Lag(_) => AdminEndpoint::Lag,
            AdminRequest::Rebuild(_) => AdminEndpoint::Rebuild,
            AdminRequest::Clock(_) => AdminEndpoint::Clock,
            AdminRequest::AdvanceClock(_) => AdminEndpoint::AdvanceClock,
            AdminRequest::Cluster(_) => AdminEndpoint::Cluster,
            AdminRequest::Move(_) => AdminEndpoint::Move,
        }
    }

    /// Decodes a request to `endpoint`.
    pub fn decode(endpoint: AdminEndpoint, payload: &[u8]) -> Result<Self, prost::DecodeError> {
        match endpoint {
            AdminEndpoint::Lag => pb::GetProjectionLag::decode(payload).map(AdminRequest::Lag),
            AdminEndpoint::Rebuild => pb::RebuildProjection::decode(payload).map(AdminRequest::Rebuild),
            AdminEndpoint::Clock => pb::GetClock::decode(payload).map(AdminRequest::Clock),
            AdminEndpoint::AdvanceClock => pb::AdvanceClock::decode(payload).map(AdminRequest::AdvanceClock),
            AdminEndpoint::Cluster => pb::GetClusterStatus::decode(payload).map(AdminRequest::Cluster),
            AdminEndpoint::Move => pb::MovePartition::decode(payload).map(AdminRequest::Move),
        }
    }

    pub fn encode_to_vec(&self) -> Vec<u8> {
        match self {
            AdminRequest::Lag(r) => r.encode_to_vec(),
            AdminRequest::Rebuild(r) => r.encode_to_vec(),
            AdminRequest::Clock(r) => r.encode_to_vec(),
            AdminRequest::AdvanceClock(r) => r.encode_to_vec(),
            AdminRequest::Cluster(r) => r.encode_to_vec(),
            AdminRequest::Move(r) => r.encode_to_vec(),
        }
    }
}

impl AdminEndpoint {
    /// The request message's full name, as errors name it.
    pub const fn message_name(self) -> &'static str {
        match self {
            AdminEndpoint::Lag => "ticket.v1.GetProjectionLag",
            AdminEndpoint::Rebuild => "ticket.v1.RebuildProjection",
            AdminEndpoint::Clock => "ticket.v1.GetClock",
            AdminEndpoint::AdvanceClock => "ticket.v1.AdvanceClock",
            AdminEndpoint::Cluster => "ticket.v1.GetClusterStatus",
            AdminEndpoint::Move => "ticket.v1.MovePartition",
        }
    }
}

#[cfg(test)]
mod tests;
