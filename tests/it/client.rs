//! The typed client (`ticket-client`) against the real API on a real nats-server: every command,
//! query and operators' endpoint once, typed refusals, no responders and timeouts, retries with
//! the same bytes, read-your-writes.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use ticket_client::{Client, ClientConfig, ClientErrorKind, Issue};
use ticket_domain::testing::{open, text};
use ticket_domain::{
    Actor, ActorId, ActorKind, CategoryId, CommandBody, CommandId, CustomerId, Metric, OpenTicket, Severity,
    SplitTicket, TicketId, Tier,
};
use ticket_log::MemoryLog;
use ticket_proto::{QueryEndpoint, pb};
use ticket_service::{CommandService, ServiceConfig};
use ticket_testkit::NatsServer;

use crate::shipped_policy;

struct Fixture {
    server: NatsServer,
    client: Client,
    api: Option<ticket_nats::ApiHandle>,
    /// The stop signals of the projectors the APIs read (a running engine's, in ticketd).
    projectors: Vec<tokio::sync::watch::Sender<bool>>,
}

async fn fixture() -> Fixture {
    let server = NatsServer::start().unwrap();
    let config = ticket_nats::ApiConfig {
        read_your_writes_deadline: Duration::from_millis(300),
        identities: ticket_nats::Identities::trust_own_account(),
        ..Default::default()
    };
    let (api, projector) = start_api(&server.url(), &MemoryLog::new(), config).await;
    let client = Client::connect(&server.url().parse().unwrap(), &Default::default(), "client-test").await.unwrap();
    Fixture { server, client, api: Some(api), projectors: vec![projector] }
}

/// The API on `log` at `url`, in front of a running projector as an engine hands it its views,
/// once its subscriptions are in place; with the projector's stop signal.
async fn start_api(
    url: &str,
    log: &MemoryLog,
    config: ticket_nats::ApiConfig,
) -> (ticket_nats::ApiHandle, tokio::sync::watch::Sender<bool>) {
    let policy = Arc::new(shipped_policy("regional-operator.toml"));
    let service = CommandService::new(log.clone(), policy, None, ServiceConfig::default());
    let views = ticket_projections::Projector::open(log.clone(), None, Default::default());
    let (stop, stopped) = tokio::sync::watch::channel(false);
    drop(views.spawn(stopped));
    let api_client = async_nats::connect(url).await.unwrap();
    let api = ticket_nats::start(api_client.clone(), service, views, config).await.unwrap();
    api_client.flush().await.unwrap();
    (api, stop)
}

pub(crate) fn agent() -> Issue {
    Issue::by(Actor { kind: ActorKind::Agent, id: ActorId::new("agent-li").unwrap() })
}

fn customer() -> Issue {
    Issue::by(Actor { kind: ActorKind::Customer, id: ActorId::new("acme-admin").unwrap() })
}

fn timer() -> Issue {
    Issue::by(Actor { kind: ActorKind::System, id: ActorId::new("ticket-timer").unwrap() })
}

pub(crate) fn opening(plan: &str) -> OpenTicket {
    let CommandBody::Open(body) = open(plan, "technical", Severity::A) else { unreachable!() };
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_command_query_and_operators_endpoint_answers_through_the_client() {
    let f = fixture().await;
    let c = &f.client;
    let opened = c.open(&agent(), None, opening("advanced")).await.unwrap();
    assert!(!opened.duplicate);
    assert_eq!(opened.events[0].event.kind.name(), "opened");
    let ticket = opened.ticket_id;
    let mut last = opened.position();

    let steps: Vec<(&str, ticket_client::Accepted)> = vec![
        ("severity", c.set_severity(&agent(), ticket, Severity::B, text("calmer")).await.unwrap()),
        ("respond", c.record_agent_response(&agent(), ticket, text("looking")).await.unwrap()),
        ("ask", c.request_customer_info(&agent(), ticket, text("logs please")).await.unwrap()),
        ("reply", c.record_customer_reply(&customer(), ticket, text("attached")).await.unwrap()),
        ("escalate", c.escalate(&agent(), ticket, Tier::new("tier-2").unwrap(), None, text("hard")).await.unwrap()),
    ];
    for (step, accepted) in &steps {
        assert!(accepted.position() > last, "{step} appended nothing after {last}");
        assert_eq!(accepted.ticket_id, ticket, "{step}");
        last = accepted.position();
    }
    let part = TicketId::from_uuid(uuid::Uuid::now_v7());
    let split = SplitTicket {
        new_ticket: part,
        category: CategoryId::new("technical").unwrap(),
        severity: Severity::B,
        title: text("the other part"),
        description: text("a second problem"),
    };
    let split = c.split(&agent(), ticket, split).await.unwrap();
    assert!(split.events.iter().any(|e| e.event.ticket_id == part), "the split opened no ticket {part}");
    let resolved = c.resolve(&agent(), ticket, text("fixed")).await.unwrap();
    let reopened = c.reopen(&customer(), ticket, text("still broken")).await.unwrap();
    assert!(reopened.position() > resolved.position());

    // The timer's commands reach the Decider, which finds them not due (their instants are
    // far ahead): typed refusals with the wire code.
    let later = ticket_log::now() + chrono::TimeDelta::days(365);
    let not_due = |r: Result<ticket_client::Accepted, ticket_client::ClientError>| {
        let code = r.unwrap_err().code();
        assert!(
            matches!(code, Some(pb::ErrorCode::TimerNotDue | pb::ErrorCode::TimerMoot)),
            "a timer command far ahead got {code:?}"
        );
    };
    not_due(c.record_sla_warning(&timer(), part, Metric::FirstResponse, 1, 80, later).await);
    not_due(c.record_sla_breach(&timer(), part, Metric::FirstResponse, 1, later).await);
    not_due(c.downgrade_for_no_response(&timer(), ticket, 1, later).await);

    // Every query reads the writes above (read-your-writes on the last position).
    let at = reopened.position();
    let view = c.ticket(ticket, at).await.unwrap();
    assert_eq!((view.ticket_id.as_str(), view.position >= at), (ticket.to_string().as_str(), true));
    assert_eq!(view.severity(), pb::Severity::B);
    let mine = c.customer_tickets(&CustomerId::new("acme").unwrap(), true, 0, at).await.unwrap();
    assert_eq!(mine.tickets.len(), 2, "the ticket and its split part");
    let board = c.board(0, at).await.unwrap();
    // The split part is open with its first-response clock running.
    assert!(board.entries.iter().any(|e| e.ticket_id == part.to_string()), "{board:?}");
    assert!(board.position >= at);
    let timeline = c.timeline(ticket, at).await.unwrap();
    assert!(timeline.entries.iter().any(|e| e.event_type == "reopened"));
    assert!(timeline.entries.iter().all(|e| !e.command_id.is_empty()), "the details come from the log");
    let report = c.compliance(None, None, at).await.unwrap();
    assert!(report.position >= at);
    let lag = c.projection_lag(None).await.unwrap();
    assert_eq!(lag.projections.len(), 4);
    let rebuilt = c.rebuild_projection("board", None).await.unwrap();
    assert_eq!(rebuilt.name, "board");
    assert!(rebuilt.position >= at);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_are_typed_with_their_wire_code() {
    let f = fixture().await;
    let refused = f.client.open(&agent(), None, opening("standard")).await.unwrap_err();
    assert_eq!(refused.kind(), ClientErrorKind::Refused(pb::ErrorCode::SeverityNotInContract));
    assert!(refused.to_string().contains("ERROR_CODE_SEVERITY_NOT_IN_CONTRACT"), "{refused}");
    let wire = refused.to_wire().unwrap();
    assert_eq!(wire.code, pb::ErrorCode::SeverityNotInContract as i32);
    assert!(!wire.details.is_empty(), "the refusal's particulars were lost: {wire:?}");
    let unknown = TicketId::from_uuid(uuid::Uuid::now_v7());
    let missing = f.client.ticket(unknown, 0).await.unwrap_err();
    assert_eq!(missing.code(), Some(pb::ErrorCode::TicketNotFound));
    let unknown_projection = f.client.rebuild_projection("nope", None).await.unwrap_err();
    assert_eq!(unknown_projection.code(), Some(pb::ErrorCode::MalformedRequest));
    // A position the log never reaches: the query waits for it, then says so.
    let opened = f.client.open(&agent(), None, opening("advanced")).await.unwrap();
    let unreached = f.client.ticket(opened.ticket_id, opened.position() + 1000).await.unwrap_err();
    assert_eq!(unreached.code(), Some(pb::ErrorCode::Timeout));
    assert!(!unreached.is_retryable());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_sent_again_with_its_id_returns_the_original_events_and_ticket() {
    let f = fixture().await;
    let issue = agent().id(CommandId::new("open-once").unwrap());
    // No ticket id: ticketd names the ticket, and names the same one for the repeated id.
    let first = f.client.open(&issue, None, opening("advanced")).await.unwrap();
    let again = f.client.open(&issue, None, opening("advanced")).await.unwrap();
    assert!(!first.duplicate && again.duplicate);
    assert_eq!(again.ticket_id, first.ticket_id);
    assert_eq!(again.events, first.events);
    assert_eq!(again.to_wire().events, first.to_wire().events);
    // The same with a domain command sent as it stands.
    let respond = ticket_domain::Command {
        id: CommandId::new("respond-once").unwrap(),
        ticket_id: first.ticket_id,
        actor: issue.actor.clone(),
        issued_at: ticket_log::now(),
        body: CommandBody::RecordAgentResponse { message: text("looking") },
    };
    let first = f.client.execute(&respond, true).await.unwrap();
    let again = f.client.execute(&respond, true).await.unwrap();
    assert_eq!((first.duplicate, again.duplicate), (false, true));
    assert_eq!(again.events, first.events);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_responders_and_timeouts_are_typed_and_retried_with_the_same_bytes() {
    let server = NatsServer::start().unwrap();
    let nats = async_nats::connect(server.url()).await.unwrap();
    // Nothing serves the API.
    let client = Client::new(nats.clone());
    let unknown = TicketId::from_uuid(uuid::Uuid::now_v7());
    let none = client.ticket(unknown, 0).await.unwrap_err();
    assert_eq!(none.kind(), ClientErrorKind::Unavailable, "{none}");
    assert!(none.is_retryable());

    // Something takes the requests and never answers: each try times out, and the retries send
    // the same bytes.
    let mut silent = nats.subscribe(QueryEndpoint::Board.subject()).await.unwrap();
    nats.flush().await.unwrap();
    let seen = Arc::new(AtomicU32::new(0));
    let payloads = Arc::new(std::sync::Mutex::new(Vec::new()));
    let (count, kept) = (seen.clone(), payloads.clone());
    let listener = tokio::spawn(async move {
        while let Some(message) = silent.next().await {
            kept.lock().unwrap().push(message.payload);
            count.fetch_add(1, Ordering::SeqCst);
        }
    });
    let config = ClientConfig { timeout: Duration::from_millis(200), retries: 2, backoff: Duration::from_millis(10) };
    let client = Client::with_config(nats.clone(), config);
    let timed_out = client.board(5, 7).await.unwrap_err();
    assert_eq!(timed_out.kind(), ClientErrorKind::Timeout, "{timed_out}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while seen.load(Ordering::SeqCst) < 3 {
        assert!(Instant::now() < deadline, "only {} tries arrived", seen.load(Ordering::SeqCst));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    listener.abort();
    let payloads = payloads.lock().unwrap().clone();
    assert_eq!(payloads.len(), 3, "one send and two retries");
    assert!(payloads.iter().all(|p| *p == payloads[0]), "a retry sent other bytes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_retried_while_ticketd_starts_gets_its_one_result() {
    // The client sends before the API is up: no responders, retried with the same command id
    // until the API answers; the ticket is opened once.
    let mut f = fixture().await;
    assert!(f.api.take().unwrap().stop(Duration::from_secs(5)).await);
    let config = ClientConfig { timeout: Duration::from_secs(5), retries: 3000, backoff: Duration::from_millis(20) };
    let nats = async_nats::connect(f.server.url()).await.unwrap();
    let client = Client::with_config(nats, config);
    let issue = agent().id(CommandId::new("open-while-starting").unwrap());
    let sending = {
        let (client, issue) = (client.clone(), issue.clone());
        tokio::spawn(async move { client.open(&issue, None, opening("advanced")).await })
    };
    let log = MemoryLog::new();
    let (api, projector) = start_api(&f.server.url(), &log, ticket_nats::ApiConfig::trusting()).await;
    f.projectors.push(projector);
    f.api = Some(api);
    let accepted = sending.await.unwrap().unwrap();
    let again = client.open(&issue, None, opening("advanced")).await.unwrap();
    assert_eq!((accepted.duplicate, again.duplicate), (false, true));
    assert_eq!(again.events, accepted.events);
    assert_eq!(ticket_log::EventLog::head(&log), accepted.position());
}
