//! Who and when, over the shipped accounts (deploy/nats/accounts.conf) on a real nats-server:
//! the identity nats-server stamps on a request crossing a service import decides the actor and
//! the role, the service's clock decides the instant, and subscribers are confined to their own
//! consumers.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::{Client as Nats, ConnectOptions, jetstream};
use prost::Message;
use ticket_client::{Client, ClientError, Issue};
use ticket_domain::{Actor, ActorId, ActorKind, CommandBody, CustomerId, Severity, Text, TicketId};
use ticket_engine::{DataDir, Engine, EngineConfig};
use ticket_log::EventLog;
use ticket_nats::publisher::{self, PublisherConfig};
use ticket_nats::{IdentityRule, Role};
use ticket_proto::pb;
use ticket_testkit::{NatsServer, ServerConfig};
use tokio::sync::watch;

use crate::shipped_policy;

/// The JetStream API of the EVENTS account, as TICKETD imports it.
const EVENTS_API: &str = "$JS.EVENTS.API";

fn rule(account: &str, user: &str, actor: Option<&str>, role: Role) -> IdentityRule {
    IdentityRule { account: account.into(), user: user.into(), actor: actor.map(|a| ActorId::new(a).unwrap()), role }
}

fn customer_role(customer: &str) -> Role {
    Role::Customer { customer: CustomerId::new(customer).unwrap() }
}

/// The identities of the shipped accounts' users.
fn identities() -> Vec<IdentityRule> {
    vec![
        rule("SUPPORT", "*", None, Role::Agent),
        rule("CUSTOMERS", "acme", Some("acme-admin"), customer_role("acme")),
        rule("CUSTOMERS", "globex", Some("globex-admin"), customer_role("globex")),
        rule("OPERATORS", "*", None, Role::Operator),
        rule("IMPORTERS", "*", None, Role::Importer),
        rule("EVENTS", "*", None, Role::Subscriber),
    ]
}

struct Fixture {
    server: NatsServer,
    engine: Option<Engine>,
    api: Option<ticket_nats::ApiHandle>,
    stop_publishing: watch::Sender<bool>,
    publishing: Option<tokio::task::JoinHandle<Result<(), ticket_nats::publisher::PublishError>>>,
    _dir: tempfile::TempDir,
}

impl Fixture {
    /// The shipped accounts, and ticketd's API and publisher as the `ticketd` user with `rules`.
    async fn start(rules: Vec<IdentityRule>) -> Self {
        let accounts = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/nats/accounts.conf");
        let server =
            NatsServer::start_with(ServerConfig { config_file: Some(accounts), ..ServerConfig::default() }).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let policy = Arc::new(shipped_policy("regional-operator.toml"));
        let engine = Engine::start(EngineConfig::new(DataDir::new(dir.path()), policy)).await.unwrap();
        let ticketd = nats(&server, "ticketd").await;
        let (service, views) = (engine.service().clone(), engine.views().unwrap().clone());
        let config = ticket_nats::ApiConfig {
            identities: ticket_nats::Identities { rules, unstamped: ticket_nats::Unstamped::Deny },
            ..ticket_nats::ApiConfig::default()
        };
        let api = ticket_nats::start(ticketd.clone(), service, views, config).await.unwrap();
        ticketd.flush().await.unwrap();
        // Ready once a request from another account crosses the service import and is answered:
        // on a loaded machine the import has answered "no responders" just after the flush (a
        // CI run). An empty command is refused as malformed; nothing is appended.
        let probe = nats(&server, "support").await;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match probe.request("tickets.cmd.open", Vec::<u8>::new().into()).await {
                Err(e) if e.kind() == async_nats::RequestErrorKind::NoResponders && Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                answered => {
                    answered.expect("the API answers across the import");
                    break;
                }
            }
        }
        let (stop_publishing, stopped) = watch::channel(false);
        let publishing = tokio::spawn(publisher::run(
            engine.log().clone(),
            jetstream::with_prefix(ticketd.clone(), EVENTS_API),
            PublisherConfig::default(),
            stopped,
        ));
        Self { server, engine: Some(engine), api: Some(api), stop_publishing, publishing: Some(publishing), _dir: dir }
    }

    fn head(&self) -> u64 {
        self.engine.as_ref().unwrap().log().head()
    }

    async fn client(&self, user: &str) -> Client {
        Client::new(nats(&self.server, user).await)
    }

    async fn stop(mut self) {
        assert!(self.api.take().unwrap().stop(Duration::from_secs(5)).await);
        assert!(self.engine.take().unwrap().stop(Duration::from_secs(5)).await.clean);
        self.stop_publishing.send_replace(true);
        self.publishing.take().unwrap().await.unwrap().unwrap();
    }
}

async fn nats(server: &NatsServer, user: &str) -> Nats {
    ConnectOptions::with_user_and_password(user.into(), format!("{user}-dev-password"))
        .connect(server.url())
        .await
        .unwrap()
}

fn issue(kind: ActorKind, id: &str) -> Issue {
    Issue::by(Actor { kind, id: ActorId::new(id).unwrap() })
}

fn opening(customer: &str) -> ticket_domain::OpenTicket {
    let CommandBody::Open(mut body) = ticket_domain::testing::open("advanced", "technical", Severity::B) else {
        unreachable!()
    };
    body.customer = CustomerId::new(customer).unwrap();
    body
}

fn text(s: &str) -> Text {
    Text::new("text", s).unwrap()
}

fn now() -> ticket_domain::Timestamp {
    std::time::SystemTime::now().into()
}

#[track_caller]
fn assert_code(result: Result<impl std::fmt::Debug, ClientError>, code: pb::ErrorCode) -> ClientError {
    let e = result.expect_err("refused");
    assert_eq!(e.code(), Some(code), "{e:?}");
    e
}

/// A ticket opened by the support tool, for `customer`.
async fn opened(f: &Fixture, customer: &str) -> TicketId {
    let support = f.client("support").await;
    support.open(&issue(ActorKind::Agent, "support"), None, opening(customer)).await.unwrap().ticket_id
}

/// An opening for customer `acme` as a support tool sends it when it leaves to ticketd what is
/// ticketd's: no actor, no `issued_at`, no ticket id.
fn bare_opening() -> pb::Command {
    let mut wire = pb::Command::from(&ticket_domain::testing::agent(
        ticket_domain::testing::utc(2026, 11, 21, 0, 0),
        CommandBody::Open(opening("acme")),
    ));
    wire.actor = None;
    wire.issued_at = None;
    wire.ticket_id = String::new();
    wire
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_support_tool_cannot_record_a_customer_reply() {
    // Given a ticket opened by a support tool
    let f = Fixture::start(identities()).await;
    let ticket = opened(&f, "acme").await;
    let head = f.head();
    // When the support tool records a customer's reply, as the customer or as itself
    let support = f.client("support").await;
    let as_customer = issue(ActorKind::Customer, "acme-admin");
    let refused = support.record_customer_reply(&as_customer, ticket, text("it works")).await;
    // Then it is not served (SUPPORT does not import the endpoint), and nothing is appended
    assert!(matches!(refused, Err(ClientError::NoResponders { .. })), "{refused:?}");
    let as_agent = support.record_customer_reply(&issue(ActorKind::Agent, "support"), ticket, text("x")).await;
    assert!(as_agent.is_err(), "{as_agent:?}");
    assert_eq!(f.head(), head);
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_support_tool_cannot_send_a_system_actor_or_another_agents() {
    // Given a ticket opened by the support tool, recorded as its own identity
    let f = Fixture::start(identities()).await;
    let ticket = opened(&f, "acme").await;
    let head = f.head();
    let support = f.client("support").await;
    // When it responds as the engine's timer, as another agent, as a customer
    for actor in [issue(ActorKind::System, "ticket-timer"), issue(ActorKind::Agent, "agent-li")] {
        let refused = support.record_agent_response(&actor, ticket, text("done")).await;
        // Then each is refused before any decision, with who it was and what it tried
        let e = assert_code(refused, pb::ErrorCode::PermissionDenied);
        let details = e.to_wire().unwrap().details;
        assert_eq!(details.get("account").map(String::as_str), Some("SUPPORT"), "{details:?}");
        assert_eq!(details.get("user").map(String::as_str), Some("support"), "{details:?}");
        assert_eq!(details.get("role").map(String::as_str), Some("agent"), "{details:?}");
    }
    let refused = support.record_agent_response(&issue(ActorKind::Customer, "support"), ticket, text("x")).await;
    assert_code(refused, pb::ErrorCode::PermissionDenied);
    // And nothing is appended
    assert_eq!(f.head(), head);
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_support_tool_cannot_record_a_breach_a_warning_or_a_downgrade() {
    // Given an open ticket
    let f = Fixture::start(identities()).await;
    let ticket = opened(&f, "acme").await;
    let head = f.head();
    let support = f.client("support").await;
    let as_timer = issue(ActorKind::System, "ticket-timer");
    let due = ticket_domain::testing::utc(2026, 11, 21, 1, 0);
    // When the support tool sends the timer's commands
    let breach = support.record_sla_breach(&as_timer, ticket, ticket_domain::Metric::FirstResponse, 1, due).await;
    let warning = support.record_sla_warning(&as_timer, ticket, ticket_domain::Metric::FirstResponse, 1, 80, due).await;
    let downgrade = support.downgrade_for_no_response(&as_timer, ticket, 1, due).await;
    // Then none is served, and nothing is appended
    for refused in [breach, warning, downgrade] {
        assert!(matches!(refused, Err(ClientError::NoResponders { .. })), "{refused:?}");
    }
    assert_eq!(f.head(), head);
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_actor_is_the_stamped_identity_and_an_empty_one_is_filled_in() {
    // Given the support tool
    let f = Fixture::start(identities()).await;
    let support = f.client("support").await;
    // When it opens a ticket without naming an actor
    let wire = bare_opening();
    let accepted = support.send_wire(wire).await.unwrap();
    // Then the event records the identity nats-server stamped
    let actor = &accepted.events[0].actor;
    assert_eq!((actor.kind, actor.id.as_str()), (ActorKind::Agent, "support"));
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_customer_opens_replies_and_reads_its_own_tickets() {
    // Given the customer acme's portal
    let f = Fixture::start(identities()).await;
    let acme = f.client("acme").await;
    let me = issue(ActorKind::Customer, "acme-admin");
    // When it opens a ticket for itself, an agent asks for information, and it replies
    let ticket = acme.open(&me, None, opening("acme")).await.unwrap().ticket_id;
    let support = f.client("support").await;
    support.request_customer_info(&issue(ActorKind::Agent, "support"), ticket, text("logs?")).await.unwrap();
    let replied = acme.record_customer_reply(&me, ticket, text("attached")).await.unwrap();
    // Then it reads its ticket, its timeline and its list
    let view = acme.ticket(ticket, replied.position()).await.unwrap();
    assert_eq!(view.customer, "acme");
    let timeline = acme.timeline(ticket, replied.position()).await.unwrap();
    assert_eq!(timeline.entries.len(), 3, "{timeline:?}");
    let mine = acme.customer_tickets(&CustomerId::new("acme").unwrap(), true, 10, replied.position()).await.unwrap();
    assert_eq!(mine.tickets.len(), 1);
    // And the events record the customer as its identity
    assert_eq!(replied.events[0].actor, Actor { kind: ActorKind::Customer, id: ActorId::new("acme-admin").unwrap() });
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_customer_cannot_touch_another_customers_ticket() {
    // Given a ticket of globex
    let f = Fixture::start(identities()).await;
    let ticket = opened(&f, "globex").await;
    let head = f.head();
    let acme = f.client("acme").await;
    let me = issue(ActorKind::Customer, "acme-admin");
    // When acme opens for globex, replies on globex's ticket, reads it, its timeline, its list
    let open = acme.open(&me, None, opening("globex")).await;
    let reply = acme.record_customer_reply(&me, ticket, text("mine now")).await;
    let read = acme.ticket(ticket, head).await;
    let timeline = acme.timeline(ticket, head).await;
    let list = acme.customer_tickets(&CustomerId::new("globex").unwrap(), true, 10, head).await;
    // Then every one is refused, and nothing is appended
    assert_code(open, pb::ErrorCode::PermissionDenied);
    assert_code(reply, pb::ErrorCode::PermissionDenied);
    assert_code(read, pb::ErrorCode::PermissionDenied);
    assert_code(timeline, pb::ErrorCode::PermissionDenied);
    assert_code(list, pb::ErrorCode::PermissionDenied);
    // And its board is not the customer's to read (CUSTOMERS does not import it)
    assert!(matches!(acme.board(10, 0).await, Err(ClientError::NoResponders { .. })));
    assert_eq!(f.head(), head);
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agents_issued_at_is_refused_and_the_service_clock_stamps() {
    // Given an open ticket
    let f = Fixture::start(identities()).await;
    let ticket = opened(&f, "acme").await;
    let head = f.head();
    let support = f.client("support").await;
    let agent = issue(ActorKind::Agent, "support");
    let wall = now();
    // When the agent responds with a backdated, then a future issued_at
    for at in [wall - chrono::Duration::hours(2), wall + chrono::Duration::hours(2)] {
        let refused = support.record_agent_response(&agent.clone().at(at), ticket, text("done")).await;
        // Then it is refused as invalid, and nothing is appended
        let e = assert_code(refused, pb::ErrorCode::InvalidCommand);
        assert!(e.to_string().contains("client_time"), "{e}");
    }
    assert_eq!(f.head(), head);
    // And without one, the service's clock stamps the response
    let before = now();
    let accepted = support.record_agent_response(&agent, ticket, text("done")).await.unwrap();
    let after = now();
    let occurred = accepted.events[0].event.occurred_at;
    assert!(before <= occurred && occurred <= after, "{before} <= {occurred} <= {after}");
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_time_is_accepted_beside_the_service_clock() {
    // Given the support tool
    let f = Fixture::start(identities()).await;
    let support = f.client("support").await;
    // When it opens a ticket with its own notion of the time
    let mut wire = bare_opening();
    wire.client_time = Some(ticket_proto::wire::timestamp(&ticket_domain::testing::utc(2001, 1, 1, 0, 0)));
    let before = now();
    let accepted = support.send_wire(wire).await.unwrap();
    // Then it is accepted, and the service's clock decides
    assert!(accepted.events[0].event.occurred_at >= before);
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_request_info_header_is_not_trusted() {
    // Given the support tool
    let f = Fixture::start(identities()).await;
    let support = nats(&f.server, "support").await;
    // When it sends a command with its own Nats-Request-Info claiming to be acme's portal
    let wire = bare_opening();
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(ticket_nats::REQUEST_INFO_HEADER, r#"{"acc":"CUSTOMERS","user":"acme"}"#);
    let reply = tokio::time::timeout(
        Duration::from_secs(10),
        support.request_with_headers("tickets.cmd.open", headers, wire.encode_to_vec().into()),
    )
    .await
    .unwrap()
    .unwrap();
    // Then the event records who really sent it: the support tool, as an agent
    let Some(pb::command_reply::Result::Accepted(accepted)) = pb::CommandReply::decode(reply.payload).unwrap().result
    else {
        panic!("refused")
    };
    let actor = accepted.events[0].actor.clone().unwrap();
    assert_eq!((actor.kind, actor.id.as_str()), (pb::ActorKind::Agent as i32, "support"));
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_from_inside_ticketds_account_is_refused_by_default() {
    // Given the API on the shipped accounts
    let f = Fixture::start(identities()).await;
    // When another connection of ticketd's own account sends a command (no import, no stamp)
    let inside = Client::new(nats(&f.server, "ticketd").await);
    let refused = inside.open(&issue(ActorKind::Agent, "support"), None, opening("acme")).await;
    // Then it is refused, saying why
    let e = assert_code(refused, pb::ErrorCode::PermissionDenied);
    assert!(e.to_string().contains("service import"), "{e}");
    assert_eq!(f.head(), 0);
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_queries_and_administers_but_sends_no_commands() {
    // Given a ticket
    let f = Fixture::start(identities()).await;
    let ticket = opened(&f, "acme").await;
    let head = f.head();
    let operator = f.client("operator").await;
    // When the operator reads, rebuilds and sends a command
    let view = operator.ticket(ticket, head).await.unwrap();
    let rebuilt = operator.rebuild_projection("board", None).await.unwrap();
    let lag = operator.projection_lag(None).await.unwrap();
    let command = operator.open(&issue(ActorKind::Agent, "operator"), None, opening("acme")).await;
    // Then the reads and the operators' endpoints answer, the command is not served
    assert_eq!(view.customer, "acme");
    assert_eq!(rebuilt.position, head);
    assert!(lag.projections.iter().all(|p| p.head == head), "{lag:?}");
    assert!(matches!(command, Err(ClientError::NoResponders { .. })), "{command:?}");
    assert_eq!(f.head(), head);
    // And the micro service's discovery reaches across the import
    let info = operator.nats().request("$SRV.INFO.tickets", "".into()).await.unwrap();
    let info: serde_json::Value = serde_json::from_slice(&info.payload).unwrap();
    assert_eq!(info["name"], "tickets", "{info}");
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_account_without_an_identity_is_denied() {
    // Given identities that map nobody of OPERATORS
    let rules = identities().into_iter().filter(|r| r.account != "OPERATORS").collect();
    let f = Fixture::start(rules).await;
    // When the operator asks for the projections' lag
    let operator = f.client("operator").await;
    let refused = operator.projection_lag(None).await;
    // Then it is refused, naming the account and the user
    let e = assert_code(refused, pb::ErrorCode::PermissionDenied);
    assert!(e.to_string().contains("OPERATORS/operator"), "{e}");
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_importer_keeps_its_instants_and_actors_but_never_a_system_actor() {
    // Given the importer
    let f = Fixture::start(identities()).await;
    let importer = f.client("importer").await;
    let original = issue(ActorKind::Agent, "zammad-agent-7");
    // When it imports an opening at its original instant, as the original helpdesk's agent
    let at = now() - chrono::Duration::minutes(5);
    let at = ticket_domain::Timestamp::from_timestamp_millis(at.timestamp_millis()).unwrap();
    let accepted = importer.open(&original.clone().at(at), None, opening("acme")).await.unwrap();
    // Then the event keeps both
    assert_eq!(accepted.events[0].actor.id.as_str(), "zammad-agent-7");
    assert_eq!(accepted.events[0].event.occurred_at, at);
    // But a system actor is refused
    let head = f.head();
    let refused = importer.open(&issue(ActorKind::System, "ticket-timer"), None, opening("acme")).await;
    assert_code(refused, pb::ErrorCode::PermissionDenied);
    assert_eq!(f.head(), head);
    f.stop().await;
}

/// The stream `name` as `js` sees it, once the publisher has created it.
async fn stream(js: &jetstream::Context, name: &str) -> jetstream::stream::Stream {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(stream) = js.get_stream(name).await {
            return stream;
        }
        assert!(Instant::now() < deadline, "no stream {name}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_are_published_into_the_events_account_through_the_imports() {
    // Given a ticket opened through the API
    let f = Fixture::start(identities()).await;
    opened(&f, "acme").await;
    // When a downstream system of EVENTS reads the stream
    let billing = jetstream::new(nats(&f.server, "billing").await);
    let tickets = stream(&billing, "TICKETS").await;
    // Then the event is there, published once (with its dedup id) through TICKETD's imports
    let deadline = Instant::now() + Duration::from_secs(10);
    while tickets.clone().info().await.unwrap().state.messages < 1 {
        assert!(Instant::now() < deadline, "the event was not published");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stream(&billing, "TICKETS_SLA").await;
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_manages_its_own_consumers_and_no_other() {
    // Given the streams, and paging's consumer
    let f = Fixture::start(identities()).await;
    opened(&f, "acme").await;
    let paging = jetstream::new(nats(&f.server, "paging").await);
    let paging_stream = stream(&paging, "TICKETS").await;
    let pull = |name: &str| jetstream::consumer::pull::Config { durable_name: Some(name.into()), ..Default::default() };
    paging_stream.create_consumer(pull("paging")).await.unwrap();
    // When billing creates, reads and deletes its own consumer
    let mut billing = jetstream::new(nats(&f.server, "billing").await);
    billing.set_timeout(Duration::from_secs(2));
    let tickets = stream(&billing, "TICKETS").await;
    let mut own = tickets.create_consumer(pull("billing")).await.unwrap();
    assert_eq!(own.info().await.unwrap().name, "billing");
    let mut batch = own.fetch().max_messages(1).expires(Duration::from_secs(5)).messages().await.unwrap();
    use futures::StreamExt;
    let message = batch.next().await.unwrap().unwrap();
    message.ack().await.unwrap();
    assert!(tickets.delete_consumer("billing").await.unwrap().success);
    // Then it cannot create one under another name, nor delete paging's
    assert!(tickets.create_consumer(pull("paging-too")).await.is_err());
    assert!(tickets.delete_consumer("paging").await.is_err());
    assert_eq!(paging_stream.consumer_info("paging").await.unwrap().name, "paging");
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_consumer_cannot_deliver_into_the_api() {
    // Given the event stream
    let f = Fixture::start(identities()).await;
    opened(&f, "acme").await;
    let head = f.head();
    let billing = jetstream::new(nats(&f.server, "billing").await);
    let tickets = stream(&billing, "TICKETS").await;
    // When billing creates a push consumer delivering the stream to tickets.cmd.open
    let push = jetstream::consumer::push::Config {
        durable_name: Some("billing".into()),
        deliver_subject: "tickets.cmd.open".into(),
        ..Default::default()
    };
    let _ = tickets.create_consumer(push).await;
    // ...and more events follow
    let wire_before = f.head();
    opened(&f, "acme").await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while tickets.clone().info().await.unwrap().state.messages < 2 {
        assert!(Instant::now() < deadline, "the events were not published");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Then nothing was opened but the support tool's two tickets: tickets.cmd.open in EVENTS is
    // not the API (which lives in TICKETD, and EVENTS imports none of it)
    assert_eq!(wire_before, head);
    let support = f.client("support").await;
    let acme = CustomerId::new("acme").unwrap();
    let list = support.customer_tickets(&acme, true, 100, f.head()).await.unwrap();
    assert_eq!(list.tickets.len(), 2, "{list:?}");
    assert_eq!(f.head(), head + 1);
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_ticketd_on_the_same_data_directory_refuses_to_start() {
    // Given a ticketd serving with its data directory
    let (first_nats, second_nats) = (NatsServer::start().unwrap(), NatsServer::start().unwrap());
    let data = tempfile::tempdir().unwrap();
    let first = crate::daemon::serve(&first_nats, data.path());
    // When a second one starts on the same directory (on another NATS, so only the data is shared)
    let (status, log) =
        crate::daemon::spawn_serve(&second_nats.url(), &[], data.path()).exited(Duration::from_secs(30));
    // Then it refuses to start, saying the directory is in use
    assert!(!status.success());
    let text = log.join("\n");
    assert!(text.contains("in use by another ticketd"), "{text}");
    let (status, log) = first.terminate();
    assert!(status.success(), "{}", log.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_ticketd_on_the_same_account_refuses_to_start() {
    // Given a ticketd serving on a NATS account
    let server = NatsServer::start().unwrap();
    let (data, other) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let first = crate::daemon::serve(&server, data.path());
    let instance = std::fs::read_to_string(data.path().join("instance-id")).unwrap();
    // When another starts on the same account with its own data directory
    let (status, log) = crate::daemon::spawn_serve(&server.url(), &[], other.path()).exited(Duration::from_secs(30));
    // Then it refuses to start, naming the instance that serves
    assert!(!status.success());
    let text = log.join("\n");
    assert!(text.contains("another ticketd") && text.contains(instance.trim()), "{text}");
    let (status, log) = first.terminate();
    assert!(status.success(), "{}", log.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_publisher_resumes_through_the_imports_without_publishing_twice() {
    // Given an event published into EVENTS through TICKETD's imports
    let mut f = Fixture::start(identities()).await;
    opened(&f, "acme").await;
    let billing = jetstream::new(nats(&f.server, "billing").await);
    let tickets = stream(&billing, "TICKETS").await;
    let published = |n: u64| {
        let tickets = tickets.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(10);
            while tickets.clone().info().await.unwrap().state.messages < n {
                assert!(Instant::now() < deadline, "{n} events were not published");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    published(1).await;
    // When the publisher stops, and starts again (reading what the stream holds through the
    // imported API), and another event follows
    f.stop_publishing.send_replace(true);
    f.publishing.take().unwrap().await.unwrap().unwrap();
    let (stop, stopped) = watch::channel(false);
    let log = f.engine.as_ref().unwrap().log().clone();
    let ticketd = nats(&f.server, "ticketd").await;
    f.publishing = Some(tokio::spawn(publisher::run(
        log.clone(),
        jetstream::with_prefix(ticketd, EVENTS_API),
        PublisherConfig::default(),
        stopped,
    )));
    f.stop_publishing = stop;
    opened(&f, "acme").await;
    // Then the stream holds each event once
    published(2).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while log.published().unwrap() < 2 {
        assert!(Instant::now() < deadline, "the outbox did not move");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(tickets.clone().info().await.unwrap().state.messages, 2);
    f.stop().await;
}
