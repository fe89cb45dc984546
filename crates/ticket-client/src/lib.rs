//! A typed client of ticketd's NATS API (the micro service `tickets`): every command, query and
//! operators' endpoint as a method, typed errors ([`ClientError`], with the wire
//! [`ErrorCode`](ticket_proto::pb::ErrorCode) of a refusal), read-your-writes (a command's
//! [`Accepted::position`] passed to a query makes ticketd answer once its views applied it),
//! and bounded retries of a request nothing answered, with the same bytes and so the same
//! command id, which ticketd answers with the original events.
//!
//! ```no_run
//! use ticket_client::{Client, Issue, connection::Credentials};
//! use ticket_domain::{Actor, ActorId, ActorKind, CategoryId, CustomerId, OpenTicket, PlanId, Severity, Text};
//!
//! async fn open_and_look() -> Result<(), Box<dyn std::error::Error>> {
//!     let client = Client::connect(&"nats://127.0.0.1:4222".parse()?, &Credentials::default(), "my-tool").await?;
//!     let agent = Issue::by(Actor { kind: ActorKind::Agent, id: ActorId::new("agent-li")? });
//!     let ticket = OpenTicket {
//!         customer: CustomerId::new("acme")?, plan: PlanId::new("advanced")?, category: CategoryId::new("technical")?,
//!         title: Text::new("title", "VPN down")?, description: Text::new("description", "since 9:00")?, severity: Severity::A,
//!     };
//!     let opened = client.open(&agent, None, ticket).await?;
//!     let view = client.ticket(opened.ticket_id, opened.position()).await?;
//!     println!("ticket {} opened, {} clocks running", view.ticket_id, view.clocks.len());
//!     Ok(())
//! }
//! ```
//!
//! The client knows the wire ([`ticket_proto`], with its [`Endpoint`](ticket_proto::Endpoint)
//! list shared with the server) and the domain's pure types, nothing of the server side.

use std::time::Duration;

use async_nats::RequestErrorKind;
use bytes::Bytes;
use prost::Message;
use ticket_domain::{
    Actor, CommandBody, CommandId, CustomerId, Metric, OpenTicket, RecordedEvent, Severity, SplitTicket, Team, Text,
    TicketId, Tier, Timestamp, TraceId,
};
use ticket_proto::{AdminEndpoint, CommandEndpoint, Endpoint, Query, pb};
use tracing::debug;

pub mod connection;
mod error;

pub use error::{ClientError, ClientErrorKind};

/// How requests are sent.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// How long one request waits for its reply.
    pub timeout: Duration,
    /// How many more times a request nothing answered (a timeout, no responders, a broken
    /// connection) is sent again, the same bytes each time. Rebuilds are never sent again.
    pub retries: u32,
    /// The wait before each retry.
    pub backoff: Duration,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self { timeout: Duration::from_secs(10), retries: 0, backoff: Duration::from_millis(200) }
    }
}

/// Who sends a command, and how: its id (none: a fresh one per call, kept across the call's
/// retries), the instant it is issued at (none: ticketd stamps its clock), its correlation id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issue {
    pub actor: Actor,
    pub command_id: Option<CommandId>,
    pub issued_at: Option<Timestamp>,
    pub correlation_id: Option<TraceId>,
}

impl Issue {
    /// Commands by `actor`, each with a fresh id, stamped by ticketd's clock.
    pub fn by(actor: Actor) -> Self {
        Self { actor, command_id: None, issued_at: None, correlation_id: None }
    }

    /// The command's id: sending it again, now or a year later, returns the original result.
    pub fn id(self, command_id: CommandId) -> Self {
        Self { command_id: Some(command_id), ..self }
    }

    /// The instant the command is issued at, instead of ticketd's clock.
    pub fn at(self, issued_at: Timestamp) -> Self {
        Self { issued_at: Some(issued_at), ..self }
    }

    pub fn correlated(self, correlation_id: TraceId) -> Self {
        Self { correlation_id: Some(correlation_id), ..self }
    }

    /// The wire command; `ticket: None` lets ticketd name the ticket (for `open`).
    fn command(&self, ticket: Option<TicketId>, body: &CommandBody) -> pb::Command {
        pb::Command {
            command_id: self.command_id.as_ref().map_or_else(|| uuid::Uuid::now_v7().to_string(), ToString::to_string),
            ticket_id: ticket.map(|t| t.to_string()).unwrap_or_default(),
            actor: Some(pb::Actor::from(&self.actor)),
            issued_at: self.issued_at.as_ref().map(ticket_proto::wire::timestamp),
            correlation_id: self.correlation_id.as_ref().map(ToString::to_string).unwrap_or_default(),
            client_time: None,
            body: Some(pb::command::Body::from(body)),
        }
    }
}

/// A command ticketd accepted: its ticket (for a repeated `open`, the original one), its events
/// with their positions in the log, and whether it was a repeated id answered from the log.
#[derive(Debug, Clone, PartialEq)]
pub struct Accepted {
    pub ticket_id: TicketId,
    pub events: Vec<RecordedEvent>,
    pub duplicate: bool,
    /// On a cluster: the ticket's partition, whose positions the events' are (see [`Written`]).
    pub partition: Option<u32>,
}

impl Accepted {
    /// The position of the command's last event (0 without events): pass it to a query to read
    /// this write.
    pub fn position(&self) -> u64 {
        self.events.last().map_or(0, |e| e.position)
    }

    /// The reply as ticketd sent it (to show it as canonical proto3 JSON).
    pub fn to_wire(&self) -> pb::CommandAccepted {
        pb::CommandAccepted {
            ticket_id: self.ticket_id.to_string(),
            events: self.events.iter().map(pb::EventEnvelope::from).collect(),
            duplicate: self.duplicate,
            partition: self.partition,
        }
    }
}

/// How far a client's writes went, for the queries that read every ticket (a customer's
/// tickets, the board, compliance) to wait for them: the log's position on a single node, each
/// partition's on a cluster (ADR 0015). A ticket's own queries take [`Accepted::position`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Written {
    position: u64,
    partitions: std::collections::BTreeMap<u32, u64>,
}

impl Written {
    /// Counts `accepted` in.
    pub fn record(&mut self, accepted: &Accepted) {
        let position = accepted.position();
        let at = match accepted.partition {
            Some(partition) => self.partitions.entry(partition).or_default(),
            None => &mut self.position,
        };
        *at = (*at).max(position);
    }

    /// `query`, made to answer only once these writes are in what it reads.
    pub fn applied_to(&self, mut query: Query) -> Query {
        let (position, partitions) = (self.position, self.partitions.clone());
        match &mut query {
            Query::Customer(q) => (q.min_position, q.min_partition_positions) = (position, partitions),
            Query::Board(q) => (q.min_position, q.min_partition_positions) = (position, partitions),
            Query::Compliance(q) => (q.min_position, q.min_partition_positions) = (position, partitions),
            Query::Ticket(_) | Query::Timeline(_) => {}
        }
        query
    }
}

/// A connection to ticketd's API.
#[derive(Debug, Clone)]
pub struct Client {
    nats: async_nats::Client,
    config: ClientConfig,
}

impl Client {
    /// A client on an open NATS connection (async-nats reconnects it by itself).
    pub fn new(nats: async_nats::Client) -> Self {
        Self::with_config(nats, ClientConfig::default())
    }

    pub fn with_config(nats: async_nats::Client, config: ClientConfig) -> Self {
        Self { nats, config }
    }

    /// Connects to the servers of `url`, logged in as `url` or `credentials` say, as `name`.
    pub async fn connect(
        url: &connection::NatsUrl,
        credentials: &connection::Credentials,
        name: &str,
    ) -> Result<Self, ClientError> {
        Self::connect_with_tls(url, credentials, &connection::Tls::default(), name).await
    }

    /// [`Client::connect`] with TLS as `tls` says (a `tls://` URL requires TLS without it).
    pub async fn connect_with_tls(
        url: &connection::NatsUrl,
        credentials: &connection::Credentials,
        tls: &connection::Tls,
        name: &str,
    ) -> Result<Self, ClientError> {
        let options = connection::tls(url, tls, async_nats::ConnectOptions::new().name(name))?;
        let (options, login) = connection::login(url, credentials, options).await?;
        let nats = options.connect(url.servers()).await.map_err(|e| ClientError::Connect {
            url: url.to_string(),
            login: login.to_string(),
            message: e.to_string(),
        })?;
        Ok(Self::new(nats))
    }

    /// The NATS connection, for what the API does not cover.
    pub fn nats(&self) -> &async_nats::Client {
        &self.nats
    }

    pub fn config(&self) -> &ClientConfig {
        &self.config
    }

    /// Sends a request, again (the same bytes) while nothing answers it, up to the configured
    /// retries if `retry`.
    async fn request(&self, subject: String, payload: Vec<u8>, retry: bool) -> Result<Bytes, ClientError> {
        let payload = Bytes::from(payload);
        let mut attempt = 0;
        loop {
            let sent = tokio::time::timeout(self.config.timeout, self.nats.request(subject.clone(), payload.clone()));
            let error = match sent.await {
                Ok(Ok(reply)) => return Ok(reply.payload),
                Ok(Err(e)) => match e.kind() {
                    RequestErrorKind::NoResponders => ClientError::NoResponders { subject: subject.clone() },
                    RequestErrorKind::TimedOut => {
                        ClientError::Timeout { subject: subject.clone(), after: self.config.timeout }
                    }
                    RequestErrorKind::InvalidSubject
                    | RequestErrorKind::MaxPayloadExceeded
                    | RequestErrorKind::Other => {
                        ClientError::Transport { subject: subject.clone(), message: e.to_string() }
                    }
                },
                Err(_) => ClientError::Timeout { subject: subject.clone(), after: self.config.timeout },
            };
            if !retry || attempt >= self.config.retries || !error.is_retryable() {
                return Err(error);
            }
            attempt += 1;
            debug!(subject, attempt, error = %error, "sending the request again");
            tokio::time::sleep(self.config.backoff).await;
        }
    }

    /// Sends a wire command to the endpoint its body names, and decodes the reply's events into
    /// the domain's validated types.
    pub async fn send_wire(&self, command: pb::Command) -> Result<Accepted, ClientError> {
        let subject = command.body.as_ref().map(|b| CommandEndpoint::of_wire(b).subject()).unwrap_or_default();
        let accepted = self.send_wire_reply(command).await?;
        let undecodable = |problem: String| ClientError::Undecodable { subject: subject.clone(), problem };
        let ticket_id = TicketId::parse(&accepted.ticket_id).map_err(|e| undecodable(e.to_string()))?;
        let events = accepted
            .events
            .into_iter()
            .map(RecordedEvent::try_from)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| undecodable(e.to_string()))?;
        Ok(Accepted { ticket_id, events, duplicate: accepted.duplicate, partition: accepted.partition })
    }

    /// Sends a wire command and returns ticketd's acceptance as it came, its events undecoded
    /// (for tools that relay or count replies, and the benchmark).
    pub async fn send_wire_reply(&self, command: pb::Command) -> Result<pb::CommandAccepted, ClientError> {
        let Some(endpoint) = command.body.as_ref().map(CommandEndpoint::of_wire) else {
            return Err(ClientError::Refused {
                code: pb::ErrorCode::MalformedRequest,
                message: "a command without a body".into(),
                details: Default::default(),
            });
        };
        let subject = endpoint.subject();
        let reply = self.request(subject.clone(), command.encode_to_vec(), true).await?;
        let reply = pb::CommandReply::decode(reply)
            .map_err(|e| ClientError::Undecodable { subject: subject.clone(), problem: e.to_string() })?;
        match reply.result {
            Some(pb::command_reply::Result::Accepted(accepted)) => Ok(accepted),
            Some(pb::command_reply::Result::Error(error)) => Err(ClientError::refused(error)),
            None => Err(ClientError::Undecodable { subject, problem: "a reply without a result".into() }),
        }
    }

    /// Sends a domain command: `issue` says who, under which id and as of when.
    pub async fn send(&self, issue: &Issue, ticket: TicketId, body: CommandBody) -> Result<Accepted, ClientError> {
        self.send_wire(issue.command(Some(ticket), &body)).await
    }

    /// Sends a command as it stands (its id, ticket and actor), stamped with its own instant or,
    /// if `service_clock`, by ticketd's clock.
    pub async fn execute(
        &self,
        command: &ticket_domain::Command,
        service_clock: bool,
    ) -> Result<Accepted, ClientError> {
        let mut wire = pb::Command::from(command);
        if service_clock {
            wire.issued_at = None;
        }
        self.send_wire(wire).await
    }

    /// Opens a ticket; `ticket: None` lets ticketd name it (a repeated id names the original).
    pub async fn open(
        &self,
        issue: &Issue,
        ticket: Option<TicketId>,
        open: OpenTicket,
    ) -> Result<Accepted, ClientError> {
        self.send_wire(issue.command(ticket, &CommandBody::Open(open))).await
    }

    pub async fn set_severity(
        &self,
        issue: &Issue,
        ticket: TicketId,
        severity: Severity,
        reason: Text,
    ) -> Result<Accepted, ClientError> {
        self.send(issue, ticket, CommandBody::SetSeverity { severity, reason }).await
    }

    pub async fn record_agent_response(
        &self,
        issue: &Issue,
        ticket: TicketId,
        message: Text,
    ) -> Result<Accepted, ClientError> {
        self.send(issue, ticket, CommandBody::RecordAgentResponse { message }).await
    }

    pub async fn request_customer_info(
        &self,
        issue: &Issue,
        ticket: TicketId,
        request: Text,
    ) -> Result<Accepted, ClientError> {
        self.send(issue, ticket, CommandBody::RequestCustomerInfo { request }).await
    }

    pub async fn record_customer_reply(
        &self,
        issue: &Issue,
        ticket: TicketId,
        message: Text,
    ) -> Result<Accepted, ClientError> {
        self.send(issue, ticket, CommandBody::RecordCustomerReply { message }).await
    }

    pub async fn escalate(
        &self,
        issue: &Issue,
        ticket: TicketId,
        tier: Tier,
        team: Option<Team>,
        reason: Text,
    ) -> Result<Accepted, ClientError> {
        self.send(issue, ticket, CommandBody::Escalate { tier, team, reason }).await
    }

    pub async fn resolve(&self, issue: &Issue, ticket: TicketId, resolution: Text) -> Result<Accepted, ClientError> {
        self.send(issue, ticket, CommandBody::Resolve { resolution }).await
    }

    pub async fn reopen(&self, issue: &Issue, ticket: TicketId, reason: Text) -> Result<Accepted, ClientError> {
        self.send(issue, ticket, CommandBody::Reopen { reason }).await
    }

    /// Splits a sub-problem of `ticket` off into `split.new_ticket`.
    pub async fn split(&self, issue: &Issue, ticket: TicketId, split: SplitTicket) -> Result<Accepted, ClientError> {
        self.send(issue, ticket, CommandBody::Split(split)).await
    }

    /// The timer's command (NATS permissions keep it from support tools).
    pub async fn record_sla_warning(
        &self,
        issue: &Issue,
        ticket: TicketId,
        metric: Metric,
        cycle: u32,
        threshold_percent: u8,
        warn_at: Timestamp,
    ) -> Result<Accepted, ClientError> {
        self.send(issue, ticket, CommandBody::RecordSlaWarning { metric, cycle, threshold_percent, warn_at }).await
    }

    /// The timer's command (NATS permissions keep it from support tools).
    pub async fn record_sla_breach(
        &self,
        issue: &Issue,
        ticket: TicketId,
        metric: Metric,
        cycle: u32,
        due_at: Timestamp,
    ) -> Result<Accepted, ClientError> {
        self.send(issue, ticket, CommandBody::RecordSlaBreach { metric, cycle, due_at, at_import: false }).await
    }

    /// The timer's command (NATS permissions keep it from support tools).
    pub async fn downgrade_for_no_response(
        &self,
        issue: &Issue,
        ticket: TicketId,
        cycle: u32,
        due_at: Timestamp,
    ) -> Result<Accepted, ClientError> {
        self.send(issue, ticket, CommandBody::DowngradeForNoResponse { cycle, due_at }).await
    }

    /// Sends a query (or, with `admin`, an operators' request) and returns its result, or the
    /// typed refusal.
    async fn query_reply(
        &self,
        subject: String,
        payload: Vec<u8>,
        retry: bool,
    ) -> Result<pb::query_reply::Result, ClientError> {
        let reply = self.request(subject.clone(), payload, retry).await?;
        let reply = pb::QueryReply::decode(reply)
            .map_err(|e| ClientError::Undecodable { subject: subject.clone(), problem: e.to_string() })?;
        match reply.result {
            Some(pb::query_reply::Result::Error(error)) => Err(ClientError::refused(error)),
            Some(result) => Ok(result),
            None => Err(ClientError::Undecodable { subject, problem: "a reply without a result".into() }),
        }
    }

    /// Sends a query and returns its result (of the query's kind), or the typed refusal.
    pub async fn query(&self, query: &Query) -> Result<pb::query_reply::Result, ClientError> {
        self.query_reply(query.endpoint().subject(), query.encode_to_vec(), true).await
    }

    /// Sends a request to `endpoint` and takes the result `pick` keeps; another kind of result is
    /// undecodable.
    async fn reply_as<T>(
        &self,
        endpoint: Endpoint,
        payload: Vec<u8>,
        retry: bool,
        pick: fn(pb::query_reply::Result) -> Option<T>,
    ) -> Result<T, ClientError> {
        let subject = endpoint.subject();
        let result = self.query_reply(subject.clone(), payload, retry).await?;
        pick(result).ok_or_else(|| ClientError::Undecodable {
            subject,
            problem: format!("not the reply of the {} endpoint", endpoint.name()),
        })
    }

    async fn query_as<T>(
        &self,
        query: Query,
        pick: fn(pb::query_reply::Result) -> Option<T>,
    ) -> Result<T, ClientError> {
        self.reply_as(Endpoint::Query(query.endpoint()), query.encode_to_vec(), true, pick).await
    }

    /// One ticket, once the views applied position `after` (0: as they are).
    pub async fn ticket(&self, ticket: TicketId, after: u64) -> Result<pb::TicketView, ClientError> {
        let query = Query::Ticket(pb::GetTicket { ticket_id: ticket.to_string(), min_position: after });
        self.query_as(query, |r| if let pb::query_reply::Result::Ticket(v) = r { Some(v) } else { None }).await
    }

    /// A customer's tickets (`limit` 0: the server's default), once the views applied `after`.
    pub async fn customer_tickets(
        &self,
        customer: &CustomerId,
        include_resolved: bool,
        limit: u32,
        after: u64,
    ) -> Result<pb::TicketList, ClientError> {
        let query = Query::Customer(pb::ListCustomerTickets {
            customer: customer.to_string(),
            min_position: after,
            include_resolved,
            limit,
            ..Default::default()
        });
        self.query_as(query, |r| if let pb::query_reply::Result::Tickets(v) = r { Some(v) } else { None }).await
    }

    /// The SLA board (`limit` 0: the server's default), once the views applied `after`.
    pub async fn board(&self, limit: u32, after: u64) -> Result<pb::Board, ClientError> {
        let query = Query::Board(pb::GetBoard { min_position: after, limit, ..Default::default() });
        self.query_as(query, |r| if let pb::query_reply::Result::Board(v) = r { Some(v) } else { None }).await
    }

    /// A ticket's timeline, once the views applied `after`.
    pub async fn timeline(&self, ticket: TicketId, after: u64) -> Result<pb::Timeline, ClientError> {
        let query = Query::Timeline(pb::GetTimeline { ticket_id: ticket.to_string(), min_position: after });
        self.query_as(query, |r| if let pb::query_reply::Result::Timeline(v) = r { Some(v) } else { None }).await
    }

    /// The compliance report over `[from, to)` (open ends: all time), once the views applied `after`.
    pub async fn compliance(
        &self,
        from: Option<Timestamp>,
        to: Option<Timestamp>,
        after: u64,
    ) -> Result<pb::ComplianceReport, ClientError> {
        let query = Query::Compliance(pb::GetCompliance {
            min_position: after,
            from: from.as_ref().map(ticket_proto::wire::timestamp),
            to: to.as_ref().map(ticket_proto::wire::timestamp),
            ..Default::default()
        });
        self.query_as(query, |r| if let pb::query_reply::Result::Compliance(v) = r { Some(v) } else { None }).await
    }

    /// Each projection's position against the log's head, and the quarantined tickets.
    /// On a cluster, `node` names the node whose read models are reported (else the node that
    /// takes the request, named in the answer); a single ticketd ignores it.
    pub async fn projection_lag(&self, node: Option<&str>) -> Result<pb::ProjectionLags, ClientError> {
        let payload = pb::GetProjectionLag { node: node.unwrap_or_default().to_owned() }.encode_to_vec();
        let pick = |r| if let pb::query_reply::Result::Lag(v) = r { Some(v) } else { None };
        self.reply_as(Endpoint::Admin(AdminEndpoint::Lag), payload, true, pick).await
    }

    /// Rebuilds projection `name` from the log beside the live one, which serves until the swap.
    /// A rebuild that got no answer is not sent again: it may still be running.
    /// On a cluster, `node` names the node whose copies of every partition rebuild it (required
    /// there); a single ticketd ignores it.
    pub async fn rebuild_projection(
        &self,
        name: &str,
        node: Option<&str>,
    ) -> Result<pb::ProjectionRebuilt, ClientError> {
        let payload =
            pb::RebuildProjection { name: name.to_owned(), node: node.unwrap_or_default().to_owned() }.encode_to_vec();
        let pick = |r| if let pb::query_reply::Result::Rebuilt(v) = r { Some(v) } else { None };
        self.reply_as(Endpoint::Admin(AdminEndpoint::Rebuild), payload, false, pick).await
    }

    /// The engine's clock: its instant, and whether it is the wall clock or a test clock.
    pub async fn clock_now(&self) -> Result<pb::ClockNow, ClientError> {
        let payload = pb::GetClock {}.encode_to_vec();
        let pick = |r| if let pb::query_reply::Result::Clock(v) = r { Some(v) } else { None };
        self.reply_as(Endpoint::Admin(AdminEndpoint::Clock), payload, true, pick).await
    }

    /// A cluster's partitions: each one's owner, lease expiry, heads in the log stream and
    /// published (`UNKNOWN_ENDPOINT` from a single ticketd).
    pub async fn cluster_status(&self) -> Result<pb::ClusterStatus, ClientError> {
        let payload = pb::GetClusterStatus {}.encode_to_vec();
        let pick = |r| if let pb::query_reply::Result::Cluster(v) = r { Some(v) } else { None };
        self.reply_as(Endpoint::Admin(AdminEndpoint::Cluster), payload, true, pick).await
    }

    /// Places partition `partition` on node `node` (a planned handover, ADR 0015): answered
    /// once the placement is recorded; [`Client::cluster_status`] shows when the node serves
    /// it. Refused (`MALFORMED_REQUEST`) for a partition the cluster does not have or a node
    /// that is not live, (`UNKNOWN_ENDPOINT`) by a single ticketd. Sent again while unanswered:
    /// placing twice places once.
    pub async fn move_partition(&self, partition: u32, node: &str) -> Result<pb::PartitionMove, ClientError> {
        let payload = pb::MovePartition { partition, node: node.to_owned() }.encode_to_vec();
        let pick = |r| if let pb::query_reply::Result::Moved(v) = r { Some(v) } else { None };
        self.reply_as(Endpoint::Admin(AdminEndpoint::Move), payload, true, pick).await
    }

    /// Moves a test clock (`ticketd dev --test-clock`) to `to` through every firing due on the
    /// way, in order; refused (`UNKNOWN_ENDPOINT`) on the wall clock, and (`MALFORMED_REQUEST`)
    /// for an instant earlier than the clock's. Sent again while unanswered: moving to an
    /// instant twice moves it once.
    pub async fn advance_clock_to(&self, to: Timestamp) -> Result<pb::ClockAdvanced, ClientError> {
        let target = pb::advance_clock::Target::To(ticket_proto::wire::timestamp(&to));
        self.advance_clock(target, true).await
    }

    /// Moves a test clock forward by `by` (see [`Client::advance_clock_to`]). Never sent again:
    /// a lost reply may hide an advance that happened.
    pub async fn advance_clock_by(&self, by: chrono::TimeDelta) -> Result<pb::ClockAdvanced, ClientError> {
        self.advance_clock(pb::advance_clock::Target::By(ticket_proto::wire::duration(by)), false).await
    }

    async fn advance_clock(
        &self,
        target: pb::advance_clock::Target,
        retry: bool,
    ) -> Result<pb::ClockAdvanced, ClientError> {
        let payload = pb::AdvanceClock { target: Some(target) }.encode_to_vec();
        let pick = |r| if let pb::query_reply::Result::ClockAdvanced(v) = r { Some(v) } else { None };
        self.reply_as(Endpoint::Admin(AdminEndpoint::AdvanceClock), payload, retry, pick).await
    }
}
