use std::sync::Arc;
use std::time::Duration;

use async_nats::service::ServiceExt;
use async_nats::{Client, HeaderMap};
use bytes::Bytes;
use futures::StreamExt;
use prost::Message;
use ticket_domain::{CommandId, TicketId, TraceId};
use ticket_log::EventLog;
use ticket_proto::pb;
use ticket_service::{CommandRequest, CommandResult, CommandService, ServiceError, ServiceErrorKind, Stamp};

use ticket_projections::{Checkpoints, Projector, ProjectorConfig};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

/// The micro service's name.
pub const SERVICE_NAME: &str = "tickets";

/// The command endpoints, named as the domain names commands.
pub const COMMANDS: [&str; 12] = [
    "open",
    "set_severity",
    "record_agent_response",
    "request_customer_info",
    "record_customer_reply",
    "escalate",
    "resolve",
    "reopen",
    "split",
    "record_sla_warning",
    "record_sla_breach",
    "downgrade_for_no_response",
];

/// The query endpoints.
pub const QUERIES: [&str; 5] = ["ticket", "customer", "board", "timeline", "compliance"];
/// The operators' endpoints (`tickets.admin.*`).
pub const ADMIN: [&str; 2] = ["lag", "rebuild"];

pub fn command_subject(command: &str) -> String {
    format!("{SERVICE_NAME}.cmd.{command}")
}

pub fn query_subject(query: &str) -> String {
    format!("{SERVICE_NAME}.query.{query}")
}

pub fn admin_subject(endpoint: &str) -> String {
    format!("{SERVICE_NAME}.admin.{endpoint}")
}

#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// Requests larger than this are refused with `PAYLOAD_TOO_LARGE`.
    pub max_payload: usize,
    /// Commands handled at once; more wait.
    pub max_in_flight: usize,
    /// How long a query waits for the view to reach the position it names.
    pub read_your_writes_deadline: Duration,
    /// The most tickets a list query returns (and its default).
    pub max_list: usize,
    /// Where the read models' projections are checkpointed (none: rebuilt from the log at each
    /// start).
    pub projections: Option<std::path::PathBuf>,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            max_payload: 64 * 1024,
            max_in_flight: 1024,
            read_your_writes_deadline: Duration::from_secs(5),
            max_list: 1000,
            projections: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("cannot start the service: {0}")]
    Start(String),
    #[error("cannot subscribe: {0}")]
    Subscribe(String),
}

type ProjectorTask = tokio::task::JoinHandle<Result<(), ticket_projections::ProjectorError>>;

/// The running API. Dropping it does not stop it; call [`ApiHandle::stop`].
#[derive(Debug)]
pub struct ApiHandle {
    tasks: JoinSet<()>,
    service: Option<async_nats::service::Service>,
    in_flight: Arc<Semaphore>,
    max_in_flight: u32,
    projector: Option<(watch::Sender<bool>, ProjectorTask)>,
}

impl ApiHandle {
    /// Stops taking requests, then waits up to `deadline` for the commands being handled to be
    /// decided, appended and answered. Returns false if some were still running at the deadline.
    pub async fn stop(mut self, deadline: Duration) -> bool {
        if let Some(service) = self.service.take() {
            let _ = service.stop().await;
        }
        self.tasks.abort_all();
        while self.tasks.join_next().await.is_some() {}
        let drained = tokio::time::timeout(deadline, self.in_flight.acquire_many(self.max_in_flight)).await;
        // The read models follow the log to its end and are checkpointed.
        if let Some((stop, task)) = self.projector.take() {
            stop.send_replace(true);
            match tokio::time::timeout(deadline, task).await {
                Ok(Ok(Ok(()))) => {}
                Ok(Ok(Err(e))) => warn!(error = %e, "the projector failed"),
                Ok(Err(_)) | Err(_) => warn!("the projector did not stop in time; its checkpoints are older"),
            }
        }
        matches!(drained, Ok(Ok(_)))
    }
}

/// A typed error reply: the protobuf body and the service error headers.
fn error_reply(code: pb::ErrorCode, message: String) -> (Bytes, HeaderMap) {
    let error = pb::Error { code: code as i32, message, details: Default::default() };
    reply_for_error(error)
}

fn reply_for_error(error: pb::Error) -> (Bytes, HeaderMap) {
    let headers = error_headers(&error);
    let reply = pb::CommandReply { result: Some(pb::command_reply::Result::Error(error)) };
    (reply.encode_to_vec().into(), headers)
}

/// The service error headers of an error reply (command or query).
fn error_headers(error: &pb::Error) -> HeaderMap {
    let mut headers = HeaderMap::new();
    let code = pb::ErrorCode::try_from(error.code).unwrap_or(pb::ErrorCode::Unspecified);
    headers.insert(async_nats::service::NATS_SERVICE_ERROR, error.message.as_str());
    headers.insert(async_nats::service::NATS_SERVICE_ERROR_CODE, (code as i32).to_string().as_str());
    headers
}

/// A service error as the API's typed error (a refusal keeps the domain's code).
pub fn service_error(e: &ServiceError) -> pb::Error {
    match e {
        ServiceError::Rejected(domain) => pb::Error::from(domain),
        ServiceError::Conflict { .. } | ServiceError::Log(_) | ServiceError::Quarantined { .. } => {
            let code = match e.kind() {
                ServiceErrorKind::Conflict => pb::ErrorCode::VersionConflict,
                ServiceErrorKind::Unavailable => pb::ErrorCode::Unavailable,
                ServiceErrorKind::Quarantined => pb::ErrorCode::TicketQuarantined,
                ServiceErrorKind::Storage | ServiceErrorKind::Rejected(_) => pb::ErrorCode::Internal,
            };
            pb::Error { code: code as i32, message: e.to_string(), details: Default::default() }
        }
    }
}

/// Starts the API on `client` in front of `service`.
pub async fn start<L: EventLog>(
    client: Client,
    service: CommandService<L>,
    config: ApiConfig,
) -> Result<ApiHandle, ApiError> {
    let projector = Projector::open(
        service.log().clone(),
        config.projections.clone().map(Checkpoints::new),
        ProjectorConfig::default(),
    );
    let (stop_projector, projector_stopped) = watch::channel(false);
    let projector_task = projector.spawn(projector_stopped);
    let views = projector;
    let micro = client
        .service_builder()
        .description("ticketd: commands and queries of the ticket lifecycle engine")
        .start(SERVICE_NAME, env!("CARGO_PKG_VERSION"))
        .await
        .map_err(|e| ApiError::Start(e.to_string()))?;
    let max_in_flight = u32::try_from(config.max_in_flight.clamp(1, 1 << 20)).unwrap_or(1024);
    let config = Arc::new(config);
    let limit = Arc::new(Semaphore::new(max_in_flight as usize));
    let mut tasks = JoinSet::new();

    let commands = micro.group(format!("{SERVICE_NAME}.cmd"));
    for name in COMMANDS {
        let mut endpoint = commands.endpoint(name).await.map_err(|e| ApiError::Start(e.to_string()))?;
        let (service, config, limit) = (service.clone(), config.clone(), limit.clone());
        tasks.spawn(async move {
            while let Some(request) = endpoint.next().await {
                let Ok(permit) = limit.clone().acquire_owned().await else { return };
                let (service, config) = (service.clone(), config.clone());
                tokio::spawn(async move {
                    let (body, headers) = handle_command(name, &request.message.payload, &service, &config).await;
                    if let Err(e) = request.respond_with_headers(Ok(body), headers).await {
                        warn!(endpoint = name, error = %e, "reply not sent");
                    }
                    drop(permit);
                });
            }
        });
    }

    let queries = micro.group(format!("{SERVICE_NAME}.query"));
    for name in QUERIES {
        let mut endpoint = queries.endpoint(name).await.map_err(|e| ApiError::Start(e.to_string()))?;
        let (views, config, policy, clock) =
            (views.clone(), config.clone(), service.policy_arc(), service.clock().clone());
        tasks.spawn(async move {
            while let Some(request) = endpoint.next().await {
                let (views, config, policy, clock) = (views.clone(), config.clone(), policy.clone(), clock.clone());
                tokio::spawn(async move {
                    let (body, headers) =
                        handle_query(name, &request.message.payload, &views, &policy, clock.as_ref(), &config).await;
                    if let Err(e) = request.respond_with_headers(Ok(body), headers).await {
                        warn!(endpoint = name, error = %e, "reply not sent");
                    }
                });
            }
        });
    }

    let admin = micro.group(format!("{SERVICE_NAME}.admin"));
    for name in ADMIN {
        let mut endpoint = admin.endpoint(name).await.map_err(|e| ApiError::Start(e.to_string()))?;
        let views = views.clone();
        tasks.spawn(async move {
            while let Some(request) = endpoint.next().await {
                let views = views.clone();
                tokio::spawn(async move {
                    let (body, headers) = handle_admin(name, &request.message.payload, views).await;
                    if let Err(e) = request.respond_with_headers(Ok(body), headers).await {
                        warn!(endpoint = name, error = %e, "reply not sent");
                    }
                });
            }
        });
    }

    // Requests to names no endpoint serves get a typed error instead of "no responders". These
    // plain subscriptions also see requests to known endpoints, and leave those alone. They cover
    // the API's subjects only: `tickets.events.>` is the event stream, whose publishes carry
    // JetStream's acknowledgement inbox as their reply subject.
    for prefix in ["cmd", "query", "admin"] {
        let mut unknown = client
            .subscribe(format!("{SERVICE_NAME}.{prefix}.>"))
            .await
            .map_err(|e| ApiError::Subscribe(e.to_string()))?;
        let catch_all_client = client.clone();
        tasks.spawn(async move {
            while let Some(message) = unknown.next().await {
                let subject = message.subject.as_str();
                let known = COMMANDS.iter().any(|c| subject == command_subject(c))
                    || QUERIES.iter().any(|q| subject == query_subject(q))
                    || ADMIN.iter().any(|a| subject == admin_subject(a));
                let Some(reply) = message.reply.clone().filter(|_| !known) else { continue };
                debug!(subject, "request to an unknown endpoint");
                let message = format!("no endpoint {subject} (see $SRV.INFO.{SERVICE_NAME})");
                // Answered in the reply type its client decodes: commands get a `CommandReply`,
                // queries and the operators' requests a `QueryReply`.
                let (body, headers) = if prefix == "cmd" {
                    error_reply(pb::ErrorCode::UnknownEndpoint, message)
                } else {
                    query_error(pb::ErrorCode::UnknownEndpoint, message)
                };
                let _ = catch_all_client.publish_with_headers(reply, headers, body).await;
            }
        });
    }
    info!(service = SERVICE_NAME, endpoints = COMMANDS.len() + QUERIES.len() + ADMIN.len(), "command api ready");
    Ok(ApiHandle {
        tasks,
        service: Some(micro),
        in_flight: limit,
        max_in_flight,
        projector: Some((stop_projector, projector_task)),
    })
}

async fn handle_command<L: EventLog>(
    endpoint: &str,
    payload: &[u8],
    service: &CommandService<L>,
    config: &ApiConfig,
) -> (Bytes, HeaderMap) {
    if payload.len() > config.max_payload {
        return error_reply(
            pb::ErrorCode::PayloadTooLarge,
            format!("payload of {} bytes is over the limit of {}", payload.len(), config.max_payload),
        );
    }
    let mut wire = match pb::Command::decode(payload) {
        Ok(c) => c,
        Err(e) => return error_reply(pb::ErrorCode::MalformedRequest, format!("not a ticket.v1.Command: {e}")),
    };
    let body_name = wire.body.as_ref().map(body_name);
    if body_name != Some(endpoint) {
        return error_reply(
            pb::ErrorCode::MalformedRequest,
            format!("endpoint {endpoint} takes a {endpoint} body, got {}", body_name.unwrap_or("none")),
        );
    }
    // What a client may leave out, the service fills in.
    if wire.ticket_id.is_empty() && endpoint == "open" {
        wire.ticket_id = TicketId::from_uuid(uuid::Uuid::now_v7()).to_string();
    }
    if wire.command_id.is_empty() {
        wire.command_id = uuid::Uuid::now_v7().to_string();
    }
    let stamp = if wire.issued_at.is_some() { Stamp::AsIssued } else { Stamp::ServiceClock };
    if wire.issued_at.is_none() {
        // A placeholder: the service stamps its clock once it holds the ticket's lock.
        wire.issued_at = Some(Default::default());
    }
    let correlation_id = match wire.correlation_id.as_str() {
        "" => None,
        id => match TraceId::new(id) {
            Ok(id) => Some(id),
            Err(e) => return error_reply(pb::ErrorCode::MalformedRequest, e.to_string()),
        },
    };
    let command = match ticket_domain::Command::try_from(wire) {
        Ok(c) => c,
        Err(e) => {
            let mut error = pb::Error::from(&e);
            error.message = format!("invalid command: {e}");
            return reply_for_error(error);
        }
    };
    let command_id: CommandId = command.id.clone();
    let ticket_id = command.ticket_id;
    let causation_id = TraceId::new(command_id.to_string()).ok();
    match service.execute(CommandRequest { command, correlation_id, causation_id, stamp }).await {
        Ok(result) => {
            // A repeated command's ticket is the original one: an `open` retried without a
            // ticket id was given a fresh id above, which names no ticket.
            let ticket_id =
                if result.duplicate { original_ticket(service, &command_id, &result, ticket_id) } else { ticket_id };
            let accepted = pb::CommandAccepted {
                ticket_id: ticket_id.to_string(),
                events: result.events.iter().map(pb::EventEnvelope::from).collect(),
                duplicate: result.duplicate,
            };
            let reply = pb::CommandReply { result: Some(pb::command_reply::Result::Accepted(accepted)) };
            (reply.encode_to_vec().into(), HeaderMap::new())
        }
        Err(e) => {
            debug!(endpoint, command_id = %command_id, ticket_id = %ticket_id, error = %e, "command refused");
            reply_for_error(service_error(&e))
        }
    }
}

/// The ticket a repeated command addressed when it was first executed: from its stored record,
/// else from its original events (which begin on the command's own ticket), else `sent`.
fn original_ticket<L: EventLog>(
    service: &CommandService<L>,
    id: &CommandId,
    result: &CommandResult,
    sent: TicketId,
) -> TicketId {
    let stored = match service.log().command(id) {
        Ok(record) => record.map(|r| r.command.ticket_id),
        Err(e) => {
            warn!(command_id = %id, error = %e, "cannot read a repeated command's record");
            None
        }
    };
    stored.or_else(|| result.events.first().map(|e| e.event.ticket_id)).unwrap_or(sent)
}

fn query_reply(result: pb::query_reply::Result) -> (Bytes, HeaderMap) {
    (pb::QueryReply { result: Some(result) }.encode_to_vec().into(), HeaderMap::new())
}

/// A typed error reply to a query or an operator's request: a `QueryReply`, as its client decodes.
fn query_error(code: pb::ErrorCode, message: String) -> (Bytes, HeaderMap) {
    let error = pb::Error { code: code as i32, message, details: Default::default() };
    let headers = error_headers(&error);
    (pb::QueryReply { result: Some(pb::query_reply::Result::Error(error)) }.encode_to_vec().into(), headers)
}

/// A ticket as the API shows it: with each clock's business time elapsed and remaining at `now`,
/// on the calendars of `policy`.
fn view_of(
    ticket: &ticket_domain::Ticket,
    position: u64,
    policy: &ticket_domain::Policy,
    now: ticket_domain::Timestamp,
) -> pb::TicketView {
    let mut view = pb::TicketView::from(ticket);
    view.position = position;
    for (wire, clock) in view.clocks.iter_mut().zip(ticket.clocks.values()) {
        if let Some((elapsed, remaining)) = ticket_projections::business_times(clock, policy, now) {
            wire.elapsed_business_seconds = Some(elapsed.num_seconds());
            wire.remaining_business_seconds = remaining.map(|r| r.num_seconds());
        }
    }
    view
}

/// A decoded query.
enum Query {
    Ticket(pb::GetTicket),
    Customer(pb::ListCustomerTickets),
    Board(pb::GetBoard),
    Timeline(pb::GetTimeline),
    Compliance(pb::GetCompliance),
}

/// Decodes a query, waits for the position it names (read-your-writes), and answers it.
async fn handle_query<L: EventLog>(
    endpoint: &str,
    payload: &[u8],
    views: &Projector<L>,
    policy: &ticket_domain::Policy,
    clock: &dyn ticket_service::Clock,
    config: &ApiConfig,
) -> (Bytes, HeaderMap) {
    if payload.len() > config.max_payload {
        return query_error(
            pb::ErrorCode::PayloadTooLarge,
            format!("payload of {} bytes is over the limit", payload.len()),
        );
    }
    let malformed = |what: &str, e: &dyn std::fmt::Display| {
        query_error(pb::ErrorCode::MalformedRequest, format!("not a {what}: {e}"))
    };
    let decoded = match endpoint {
        "ticket" => pb::GetTicket::decode(payload).map(Query::Ticket),
        "customer" => pb::ListCustomerTickets::decode(payload).map(Query::Customer),
        "timeline" => pb::GetTimeline::decode(payload).map(Query::Timeline),
        "compliance" => pb::GetCompliance::decode(payload).map(Query::Compliance),
        _ => pb::GetBoard::decode(payload).map(Query::Board),
    };
    let query = match decoded {
        Ok(q) => q,
        Err(e) => return malformed(&format!("ticket.v1 {endpoint} query"), &e),
    };
    let min_position = match &query {
        Query::Ticket(q) => q.min_position,
        Query::Customer(q) => q.min_position,
        Query::Board(q) => q.min_position,
        Query::Timeline(q) => q.min_position,
        Query::Compliance(q) => q.min_position,
    };
    if min_position > 0 && !views.wait_for(min_position, config.read_your_writes_deadline).await {
        return query_error(pb::ErrorCode::Timeout, format!("position {min_position} not reached in time"));
    }
    let limit = |asked: u32| if asked == 0 { config.max_list } else { (asked as usize).min(config.max_list) };
    match query {
        Query::Ticket(query) => {
            let ticket = match TicketId::parse(&query.ticket_id) {
                Ok(t) => t,
                Err(e) => return malformed("ticket id", &e),
            };
            let tickets = views.tickets.read();
            match tickets.model().ticket(ticket).map(|t| view_of(t, tickets.position(), policy, clock.now())) {
                Some(view) => query_reply(pb::query_reply::Result::Ticket(view)),
                None => query_error(pb::ErrorCode::TicketNotFound, format!("ticket {ticket} not found")),
            }
        }
        Query::Customer(query) => {
            let customer = match ticket_domain::CustomerId::new(query.customer) {
                Ok(c) => c,
                Err(e) => return malformed("customer id", &e),
            };
            let read = views.tickets.read();
            let position = read.position();
            let tickets = read
                .model()
                .customer(&customer, query.include_resolved, limit(query.limit))
                .into_iter()
                .map(|t| view_of(t, position, policy, clock.now()))
                .collect();
            query_reply(pb::query_reply::Result::Tickets(pb::TicketList { tickets, position }))
        }
        Query::Board(query) => {
            // The board orders; the tickets model gives each line its title.
            let board = views.board.read();
            let position = board.position();
            let lines = board.model().entries(limit(query.limit));
            drop(board);
            let tickets = views.tickets.read();
            let entries = lines
                .into_iter()
                .filter_map(|entry| {
                    let t = tickets.model().ticket(entry.ticket_id)?;
                    Some(pb::BoardEntry {
                        ticket_id: entry.ticket_id.to_string(),
                        customer: entry.customer.to_string(),
                        severity: ticket_proto::wire::severity(entry.severity),
                        metric: ticket_proto::wire::metric(entry.metric),
                        cycle: entry.cycle,
                        due_at: Some(ticket_proto::wire::timestamp(&entry.due_at)),
                        at_risk: entry.at_risk,
                        breached: entry.breached,
                        title: t.title.to_string(),
                    })
                })
                .collect();
            query_reply(pb::query_reply::Result::Board(pb::Board { entries, position }))
        }
        Query::Timeline(query) => {
            let ticket = match TicketId::parse(&query.ticket_id) {
                Ok(t) => t,
                Err(e) => return malformed("ticket id", &e),
            };
            let (mut entries, position) = {
                let timeline = views.timeline.read();
                (timeline.model().ticket(ticket), timeline.position())
            };
            if entries.is_empty() {
                return query_error(pb::ErrorCode::TicketNotFound, format!("ticket {ticket} not found"));
            }
            // Read from the log without holding the timeline's lock.
            if let Err(e) = ticket_projections::add_details(&mut entries, ticket, views.log()) {
                return query_error(pb::ErrorCode::Unavailable, e.to_string());
            }
            let entries = entries
                .into_iter()
                .map(|e| pb::TimelineEntry {
                    position: e.position,
                    version: e.version,
                    occurred_at: Some(ticket_proto::wire::timestamp(&e.occurred_at)),
                    recorded_at: Some(ticket_proto::wire::timestamp(&e.recorded_at)),
                    event_type: e.event_type,
                    actor: e.actor,
                    command_id: e.command_id,
                    policy: e.policy,
                    summary: e.summary,
                })
                .collect();
            query_reply(pb::query_reply::Result::Timeline(pb::Timeline {
                ticket_id: ticket.to_string(),
                entries,
                position,
            }))
        }
        Query::Compliance(query) => {
            let instant = |t: Option<pbjson_types::Timestamp>| -> Result<Option<ticket_domain::Timestamp>, String> {
                t.map(|t| {
                    chrono::DateTime::from_timestamp(t.seconds, u32::try_from(t.nanos).unwrap_or(u32::MAX))
                        .ok_or_else(|| format!("{}s is not an instant", t.seconds))
                })
                .transpose()
            };
            let period = match (instant(query.from), instant(query.to)) {
                (Ok(from), Ok(to)) => ticket_projections::Period { from, to },
                (Err(e), _) | (_, Err(e)) => return malformed("period", &e),
            };
            let compliance = views.compliance.read();
            let position = compliance.position();
            let rows = compliance
                .model()
                .report(period, policy)
                .into_iter()
                .map(|r| pb::ComplianceRow {
                    plan: r.plan,
                    severity: ticket_proto::wire::severity(r.severity_level),
                    category: r.category,
                    metric: ticket_proto::wire::metric(r.metric_kind),
                    met: r.met,
                    breached: r.breached,
                    compliance_percent: r.compliance_percent,
                    first_responses: r.first_responses,
                    median_first_response_seconds: r.median_first_response_secs,
                    p90_first_response_seconds: r.p90_first_response_secs,
                })
                .collect();
            query_reply(pb::query_reply::Result::Compliance(pb::ComplianceReport { rows, position }))
        }
    }
}

/// Each projection's position against the log's head, and the quarantined tickets: what
/// `tickets.admin.lag` answers and `ticketctl projections status` shows, locally or remotely.
pub fn projection_status<L: EventLog>(views: &Projector<L>) -> pb::ProjectionLags {
    let projections = views
        .lag()
        .into_iter()
        .map(|l| pb::ProjectionLag { name: l.name.to_owned(), position: l.position, head: l.head, behind: l.behind })
        .collect();
    let quarantined = views
        .quarantined()
        .into_iter()
        .map(|(id, q)| pb::QuarantinedTicket { ticket_id: id.to_string(), position: q.position, problem: q.problem })
        .collect();
    pb::ProjectionLags { projections, quarantined }
}

/// The operators' endpoints: the projections' lag, and a rebuild beside the live projection.
async fn handle_admin<L: EventLog>(endpoint: &str, payload: &[u8], views: Projector<L>) -> (Bytes, HeaderMap) {
    if endpoint == "lag" {
        if let Err(e) = pb::GetProjectionLag::decode(payload) {
            return query_error(pb::ErrorCode::MalformedRequest, format!("not a ticket.v1.GetProjectionLag: {e}"));
        }
        return query_reply(pb::query_reply::Result::Lag(projection_status(&views)));
    }
    let request = match pb::RebuildProjection::decode(payload) {
        Ok(r) => r,
        Err(e) => {
            return query_error(pb::ErrorCode::MalformedRequest, format!("not a ticket.v1.RebuildProjection: {e}"));
        }
    };
    let name = request.name.clone();
    info!(projection = %name, "projection rebuild requested");
    let rebuilt = tokio::task::spawn_blocking(move || {
        let events = views.rebuild(&request.name, |_, _| {})?;
        let position = views.lag().into_iter().find(|l| l.name == request.name).map_or(0, |l| l.position);
        Ok::<_, ticket_projections::ProjectorError>((events, position))
    })
    .await;
    match rebuilt {
        Ok(Ok((events, position))) => {
            query_reply(pb::query_reply::Result::Rebuilt(pb::ProjectionRebuilt { name, events, position }))
        }
        Ok(Err(e @ ticket_projections::ProjectorError::UnknownProjection(_))) => {
            query_error(pb::ErrorCode::MalformedRequest, e.to_string())
        }
        Ok(Err(e)) => query_error(pb::ErrorCode::Unavailable, e.to_string()),
        Err(e) => query_error(pb::ErrorCode::Internal, format!("the rebuild failed: {e}")),
    }
}

fn body_name(body: &pb::command::Body) -> &'static str {
    use pb::command::Body;
    match body {
        Body::Open(_) => "open",
        Body::SetSeverity(_) => "set_severity",
        Body::RecordAgentResponse(_) => "record_agent_response",
        Body::RequestCustomerInfo(_) => "request_customer_info",
        Body::RecordCustomerReply(_) => "record_customer_reply",
        Body::Escalate(_) => "escalate",
        Body::Resolve(_) => "resolve",
        Body::Reopen(_) => "reopen",
        Body::Split(_) => "split",
        Body::RecordSlaWarning(_) => "record_sla_warning",
        Body::RecordSlaBreach(_) => "record_sla_breach",
        Body::DowngradeForNoResponse(_) => "downgrade_for_no_response",
    }
}

#[cfg(test)]
mod tests;
