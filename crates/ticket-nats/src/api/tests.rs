use std::sync::Arc;
use std::time::Duration;

use async_nats::Client;
use prost::Message;
use ticket_domain::Severity;
use ticket_domain::testing::{agent, open, regional_operator};
use ticket_log::{EventLog, MemoryLog};
use ticket_proto::pb;
use ticket_service::{CommandService, ServiceConfig};
use ticket_testkit::NatsServer;

use super::*;

struct Fixture {
    _server: NatsServer,
    client: Client,
    log: MemoryLog,
    api: Option<ApiHandle>,
    /// The running projector's stop signal: the API only reads the views an engine runs.
    _projector: tokio::sync::watch::Sender<bool>,
}

async fn fixture() -> Fixture {
    let server = NatsServer::start().unwrap();
    let client = async_nats::connect(server.url()).await.unwrap();
    let log = MemoryLog::new();
    let service = CommandService::new(log.clone(), Arc::new(regional_operator()), None, ServiceConfig::default());
    let config = ApiConfig {
        max_payload: 4096,
        identities: crate::api::identity::Identities::trust_own_account(),
        ..ApiConfig::default()
    };
    let views = Projector::open(log.clone(), None, ticket_projections::ProjectorConfig::default());
    let (stop, stopped) = tokio::sync::watch::channel(false);
    drop(views.spawn(stopped));
    let api = start(client.clone(), service, views, config).await.unwrap();
    Fixture { _server: server, client, log, api: Some(api), _projector: stop }
}

async fn request(client: &Client, subject: String, payload: Vec<u8>) -> async_nats::Message {
    tokio::time::timeout(Duration::from_secs(10), client.request(subject, payload.into())).await.unwrap().unwrap()
}

fn reply(message: &async_nats::Message) -> pb::command_reply::Result {
    pb::CommandReply::decode(message.payload.as_ref()).unwrap().result.unwrap()
}

/// The service error code header of a reply ("" without one).
fn error_code_header(message: &async_nats::Message) -> String {
    message
        .headers
        .as_ref()
        .and_then(|h| h.get(async_nats::service::NATS_SERVICE_ERROR_CODE))
        .map(|v| v.to_string())
        .unwrap_or_default()
}

fn error_code(message: &async_nats::Message) -> (i32, String) {
    let pb::command_reply::Result::Error(e) = reply(message) else { panic!("expected an error reply") };
    (e.code, error_code_header(message))
}

fn open_request(plan: &str, severity: Severity) -> Vec<u8> {
    let mut command =
        pb::Command::from(&agent(ticket_domain::testing::utc(2026, 11, 21, 0, 0), open(plan, "technical", severity)));
    // A support tool leaves the id and the instant to the service.
    command.ticket_id.clear();
    command.command_id.clear();
    command.issued_at = None;
    command.encode_to_vec()
}

#[tokio::test]
async fn a_command_over_nats_is_decided_and_its_positions_returned() {
    let f = fixture().await;
    let message = request(&f.client, command_subject("open"), open_request("advanced", Severity::A)).await;
    let pb::command_reply::Result::Accepted(accepted) = reply(&message) else { panic!("expected acceptance") };
    assert_eq!(accepted.events.len(), 1);
    assert_eq!(accepted.events[0].position, 1);
    assert!(!accepted.ticket_id.is_empty());
    assert_eq!(f.log.head(), 1);

    let query = pb::GetTicket { ticket_id: accepted.ticket_id.clone(), min_position: 1 };
    let answer = request(&f.client, query_subject("ticket"), query.encode_to_vec()).await;
    let Some(pb::query_reply::Result::Ticket(view)) = pb::QueryReply::decode(answer.payload.as_ref()).unwrap().result
    else {
        panic!("expected a ticket")
    };
    assert_eq!((view.ticket_id, view.severity), (accepted.ticket_id, pb::Severity::A as i32));
    // The first response is due in an hour, around the clock: almost all of it is left.
    let first = view.clocks.iter().find(|c| c.metric == pb::Metric::FirstResponse as i32).unwrap();
    let left = first.remaining_business_seconds.unwrap();
    assert!((3500..=3600).contains(&left), "{left} s left");
    assert!(first.elapsed_business_seconds.is_some_and(|e| (0..=100).contains(&e)));
    assert!(f.api.unwrap().stop(Duration::from_secs(5)).await);
}

#[tokio::test]
async fn a_refused_command_gets_its_stable_code_in_the_reply_and_the_headers() {
    let f = fixture().await;
    let message = request(&f.client, command_subject("open"), open_request("standard", Severity::A)).await;
    let code = pb::ErrorCode::SeverityNotInContract as i32;
    assert_eq!(error_code(&message), (code, code.to_string()));
    assert_eq!(f.log.head(), 0);
}

#[tokio::test]
async fn malformed_unknown_and_oversized_requests_get_typed_errors_and_append_nothing() {
    let f = fixture().await;
    let malformed = request(&f.client, command_subject("open"), vec![0x0a, 0xff, 0xff]).await;
    assert_eq!(error_code(&malformed).0, pb::ErrorCode::MalformedRequest as i32);
    let wrong_body = request(&f.client, command_subject("resolve"), open_request("advanced", Severity::A)).await;
    assert_eq!(error_code(&wrong_body).0, pb::ErrorCode::MalformedRequest as i32);
    let unknown = request(&f.client, command_subject("frobnicate"), open_request("advanced", Severity::A)).await;
    assert_eq!(error_code(&unknown).0, pb::ErrorCode::UnknownEndpoint as i32);
    let oversized = request(&f.client, command_subject("open"), vec![0u8; 5000]).await;
    assert_eq!(error_code(&oversized).0, pb::ErrorCode::PayloadTooLarge as i32);
    assert_eq!(f.log.head(), 0);
}

#[tokio::test]
async fn the_service_answers_ping_and_info() {
    let f = fixture().await;
    let ping = request(&f.client, format!("$SRV.PING.{SERVICE_NAME}"), Vec::new()).await;
    assert!(String::from_utf8_lossy(&ping.payload).contains(SERVICE_NAME));
    let info = request(&f.client, format!("$SRV.INFO.{SERVICE_NAME}"), Vec::new()).await;
    let info = String::from_utf8_lossy(&info.payload).into_owned();
    for endpoint in Endpoint::all() {
        assert!(info.contains(&endpoint.subject()), "{endpoint:?} missing from {info}");
    }
}

async fn send(client: &Client, name: &str, command: ticket_domain::Command) -> pb::CommandAccepted {
    let wire = pb::Command::from(&command);
    let message = request(client, command_subject(name), wire.encode_to_vec()).await;
    match reply(&message) {
        pb::command_reply::Result::Accepted(a) => a,
        pb::command_reply::Result::Error(e) => panic!("{name} refused: {}", e.message),
    }
}

fn opened(id: u128, customer: &str, severity: Severity, at: ticket_domain::Timestamp) -> ticket_domain::Command {
    let ticket_domain::CommandBody::Open(mut body) = open("advanced", "technical", severity) else { unreachable!() };
    body.customer = ticket_domain::CustomerId::new(customer).unwrap();
    let mut command = agent(at, ticket_domain::CommandBody::Open(body));
    command.ticket_id = ticket_domain::TicketId::from_uuid(uuid::Uuid::from_u128(id));
    command.id = ticket_domain::CommandId::new(format!("open-{id}")).unwrap();
    command
}

#[tokio::test]
async fn a_customers_tickets_and_the_sla_board_read_their_writes() {
    let f = fixture().await;
    let at = ticket_domain::testing::beijing(2026, 11, 23, 10, 0);
    send(&f.client, "open", opened(1, "acme", Severity::C, at)).await;
    send(&f.client, "open", opened(2, "acme", Severity::A, at)).await;
    send(&f.client, "open", opened(3, "acme", Severity::B, at)).await;
    send(&f.client, "open", opened(4, "globex", Severity::A, at)).await;
    let mut resolve = agent(
        at + chrono::TimeDelta::minutes(5),
        ticket_domain::CommandBody::Resolve { resolution: ticket_domain::testing::text("done") },
    );
    resolve.ticket_id = ticket_domain::TicketId::from_uuid(uuid::Uuid::from_u128(3));
    let last = send(&f.client, "resolve", resolve).await.events.last().unwrap().position;

    let query = pb::ListCustomerTickets { customer: "acme".into(), min_position: last, ..Default::default() };
    let answer = request(&f.client, query_subject("customer"), query.encode_to_vec()).await;
    let Some(pb::query_reply::Result::Tickets(list)) = pb::QueryReply::decode(answer.payload.as_ref()).unwrap().result
    else {
        panic!("expected a list")
    };
    assert_eq!(list.tickets.len(), 2, "acme's open tickets, the resolved one left out");
    assert!(list.position >= last, "read-your-writes");
    let all = pb::ListCustomerTickets { include_resolved: true, ..query };
    let answer = request(&f.client, query_subject("customer"), all.encode_to_vec()).await;
    let Some(pb::query_reply::Result::Tickets(list)) = pb::QueryReply::decode(answer.payload.as_ref()).unwrap().result
    else {
        panic!("expected a list")
    };
    assert_eq!(list.tickets.len(), 3);

    let board = pb::GetBoard { min_position: last, limit: 10, ..Default::default() };
    let answer = request(&f.client, query_subject("board"), board.encode_to_vec()).await;
    let Some(pb::query_reply::Result::Board(board)) = pb::QueryReply::decode(answer.payload.as_ref()).unwrap().result
    else {
        panic!("expected the board")
    };
    let order: Vec<(String, i32)> = board.entries.iter().map(|e| (e.customer.clone(), e.severity)).collect();
    // Severity A is due in an hour, C in three business days; the resolved B is off the board.
    let (a, c) = (pb::Severity::A as i32, pb::Severity::C as i32);
    assert_eq!(order, [("acme".to_owned(), a), ("globex".to_owned(), a), ("acme".to_owned(), c)]);
    assert!(
        board
            .entries
            .windows(2)
            .all(|w| w[0].due_at.as_ref().unwrap().seconds <= w[1].due_at.as_ref().unwrap().seconds)
    );
}

fn query_result(message: &async_nats::Message) -> pb::query_reply::Result {
    pb::QueryReply::decode(message.payload.as_ref()).unwrap().result.unwrap()
}

#[tokio::test]
async fn the_timeline_and_compliance_queries_read_their_writes() {
    let f = fixture().await;
    let message = request(&f.client, command_subject("open"), open_request("advanced", Severity::A)).await;
    let pb::command_reply::Result::Accepted(opened) = reply(&message) else { panic!("expected acceptance") };
    let mut respond = pb::Command::from(&agent(
        ticket_domain::testing::utc(2026, 11, 21, 0, 0),
        ticket_domain::CommandBody::RecordAgentResponse { message: ticket_domain::testing::text("on it") },
    ));
    respond.ticket_id = opened.ticket_id.clone();
    respond.command_id.clear();
    respond.issued_at = None;
    let message = request(&f.client, command_subject("record_agent_response"), respond.encode_to_vec()).await;
    let pb::command_reply::Result::Accepted(responded) = reply(&message) else { panic!("expected acceptance") };
    let position = responded.events.last().unwrap().position;

    // Named with the response's position, each query sees the response.
    let query = pb::GetTimeline { ticket_id: opened.ticket_id.clone(), min_position: position };
    let pb::query_reply::Result::Timeline(timeline) =
        query_result(&request(&f.client, query_subject("timeline"), query.encode_to_vec()).await)
    else {
        panic!("expected a timeline")
    };
    let types: Vec<&str> = timeline.entries.iter().map(|e| e.event_type.as_str()).collect();
    assert_eq!(types, ["opened", "agent_responded"]);
    assert!(timeline.entries.iter().all(|e| e.actor == "agent:agent-li" && e.policy.starts_with("regional-operator@")));
    assert!(timeline.entries[1].summary.contains("first_response#1 met"), "{}", timeline.entries[1].summary);
    assert!(timeline.position >= position);

    let query = pb::GetCompliance { min_position: position, ..Default::default() };
    let pb::query_reply::Result::Compliance(report) =
        query_result(&request(&f.client, query_subject("compliance"), query.encode_to_vec()).await)
    else {
        panic!("expected a compliance report")
    };
    let row = report.rows.iter().find(|r| r.metric == pb::Metric::FirstResponse as i32).unwrap();
    assert_eq!((row.met, row.breached, row.first_responses), (1, 0, 1));
    assert_eq!(row.severity, pb::Severity::A as i32);

    // An unknown ticket has no timeline.
    let query = pb::GetTimeline { ticket_id: uuid::Uuid::now_v7().to_string(), min_position: 0 };
    let pb::query_reply::Result::Error(e) =
        query_result(&request(&f.client, query_subject("timeline"), query.encode_to_vec()).await)
    else {
        panic!("expected an error")
    };
    assert_eq!(e.code, pb::ErrorCode::TicketNotFound as i32);
    assert!(f.api.unwrap().stop(Duration::from_secs(5)).await);
}

/// An `open` without a ticket id, retried with its command id (as a client does after a
/// timeout), names the ticket the first one opened, whatever ticket id the retry carries.
#[tokio::test]
async fn a_retried_open_names_the_ticket_it_opened() {
    let f = fixture().await;
    let mut command = pb::Command::decode(open_request("advanced", Severity::A).as_slice()).unwrap();
    command.command_id = "open-once".into();
    let first = request(&f.client, command_subject("open"), command.encode_to_vec()).await;
    let pb::command_reply::Result::Accepted(first) = reply(&first) else { panic!("expected acceptance") };
    assert!(!first.duplicate);
    assert_eq!(first.ticket_id, first.events[0].ticket_id);

    let retried = request(&f.client, command_subject("open"), command.encode_to_vec()).await;
    let pb::command_reply::Result::Accepted(retried) = reply(&retried) else { panic!("expected acceptance") };
    assert!(retried.duplicate);
    assert_eq!(retried.ticket_id, first.ticket_id, "the original ticket, not a freshly minted id");
    assert_eq!(retried.events, first.events);

    // A client that mints the ticket id itself (ticketctl does) mints another one on a retry.
    command.ticket_id = uuid::Uuid::now_v7().to_string();
    let minted = request(&f.client, command_subject("open"), command.encode_to_vec()).await;
    let pb::command_reply::Result::Accepted(minted) = reply(&minted) else { panic!("expected acceptance") };
    assert!(minted.duplicate);
    assert_eq!(minted.ticket_id, first.ticket_id);
    assert_eq!(f.log.head(), 1, "one ticket opened");

    let query = pb::GetTicket { ticket_id: retried.ticket_id, min_position: 1 };
    let answer = request(&f.client, query_subject("ticket"), query.encode_to_vec()).await;
    let pb::query_reply::Result::Ticket(view) = query_result(&answer) else {
        panic!("the ticket named does not exist")
    };
    assert_eq!(view.ticket_id, first.ticket_id);
}

/// The error code of a reply that must decode as a `QueryReply`, and its header.
fn query_error_code(message: &async_nats::Message) -> (i32, String) {
    let pb::query_reply::Result::Error(e) = query_result(message) else { panic!("expected an error query reply") };
    (e.code, error_code_header(message))
}

#[tokio::test]
async fn query_errors_are_query_replies_with_stable_codes() {
    let f = fixture().await;
    let unknown_code = pb::ErrorCode::UnknownEndpoint as i32;
    let unknown = request(&f.client, query_subject("frobnicate"), pb::GetBoard::default().encode_to_vec()).await;
    assert_eq!(query_error_code(&unknown), (unknown_code, unknown_code.to_string()));
    let unknown = request(&f.client, admin_subject("frobnicate"), Vec::new()).await;
    assert_eq!(query_error_code(&unknown).0, unknown_code);

    let malformed_code = pb::ErrorCode::MalformedRequest as i32;
    for endpoint in Endpoint::all().filter(|e| e.family() != Family::Command) {
        let malformed = request(&f.client, endpoint.subject(), vec![0x0a, 0xff, 0xff]).await;
        assert_eq!(query_error_code(&malformed), (malformed_code, malformed_code.to_string()), "{endpoint:?}");
    }
    let bad_ticket = pb::GetTicket { ticket_id: "not-a-ticket".into(), min_position: 0 };
    let bad_ticket = request(&f.client, query_subject("ticket"), bad_ticket.encode_to_vec()).await;
    assert_eq!(query_error_code(&bad_ticket).0, malformed_code);
    let oversized = request(&f.client, query_subject("board"), vec![0u8; 5000]).await;
    assert_eq!(query_error_code(&oversized).0, pb::ErrorCode::PayloadTooLarge as i32);

    // Commands still get command replies.
    let unknown = request(&f.client, command_subject("frobnicate"), open_request("advanced", Severity::A)).await;
    assert_eq!(error_code(&unknown).0, unknown_code);
    assert_eq!(f.log.head(), 0);
}

/// A test clock that moves a simulated clock and records nothing (the engine's, which fires,
/// is tested end to end in tests/it/test_clock.rs).
struct Simulated(ticket_service::SimulatedClock);

impl TestClockControl for Simulated {
    fn now(&self) -> ticket_domain::Timestamp {
        ticket_service::Clock::now(&self.0)
    }

    fn advance_to(
        &self,
        to: ticket_domain::Timestamp,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<ClockAdvance, ClockAdvanceError>> + Send + '_>> {
        Box::pin(async move {
            let from = self.now();
            if to < from {
                return Err(ClockAdvanceError::Backwards(format!("{to} is before {from}")));
            }
            self.0.advance_to(to);
            Ok(ClockAdvance { from, now: to, recorded: 0, last_position: 0, events: Vec::new() })
        })
    }
}

async fn clock_request(client: &Client, endpoint: &str, request: impl Message) -> pb::query_reply::Result {
    query_result(&self::request(client, admin_subject(endpoint), request.encode_to_vec()).await)
}

#[tokio::test]
async fn the_clock_is_read_on_the_wall_clock_and_advanced_only_on_a_test_clock_never_backwards() {
    let f = fixture().await;
    let pb::query_reply::Result::Clock(now) = clock_request(&f.client, "clock", pb::GetClock {}).await else {
        panic!("expected the clock")
    };
    assert_eq!(now.kind(), pb::ClockKind::Wall);
    let by = pb::AdvanceClock {
        target: Some(pb::advance_clock::Target::By(pbjson_types::Duration { seconds: 60, nanos: 0 })),
    };
    let refused = request(&f.client, admin_subject("advance_clock"), by.encode_to_vec()).await;
    assert_eq!(query_error_code(&refused).0, pb::ErrorCode::UnknownEndpoint as i32);

    // The same API with a test clock.
    let server = NatsServer::start().unwrap();
    let client = async_nats::connect(server.url()).await.unwrap();
    let log = MemoryLog::new();
    let service = CommandService::new(log.clone(), Arc::new(regional_operator()), None, ServiceConfig::default());
    let start_at = ticket_domain::testing::utc(2026, 11, 27, 8, 0);
    let test_clock = TestClockHandle(Arc::new(Simulated(ticket_service::SimulatedClock::new(start_at))));
    let config = ApiConfig { test_clock: Some(test_clock), ..ApiConfig::trusting() };
    let views = Projector::open(log.clone(), None, ticket_projections::ProjectorConfig::default());
    let (_stop, stopped) = tokio::sync::watch::channel(false);
    drop(views.spawn(stopped));
    let _api = start(client.clone(), service, views, config).await.unwrap();

    let pb::query_reply::Result::Clock(now) = clock_request(&client, "clock", pb::GetClock {}).await else {
        panic!("expected the clock")
    };
    assert_eq!((now.kind(), now.now), (pb::ClockKind::Simulated, Some(ticket_proto::wire::timestamp(&start_at))));
    let pb::query_reply::Result::ClockAdvanced(advanced) = clock_request(&client, "advance_clock", by).await else {
        panic!("expected an advance")
    };
    let minute_later = start_at + chrono::TimeDelta::minutes(1);
    assert_eq!(advanced.now, Some(ticket_proto::wire::timestamp(&minute_later)));
    let malformed = pb::ErrorCode::MalformedRequest as i32;
    let back =
        pb::AdvanceClock { target: Some(pb::advance_clock::Target::To(ticket_proto::wire::timestamp(&start_at))) };
    let negative = pb::AdvanceClock {
        target: Some(pb::advance_clock::Target::By(pbjson_types::Duration { seconds: -1, nanos: 0 })),
    };
    for refused in [back, negative, pb::AdvanceClock { target: None }] {
        let reply = request(&client, admin_subject("advance_clock"), refused.encode_to_vec()).await;
        assert_eq!(query_error_code(&reply).0, malformed, "{refused:?}");
    }
}
