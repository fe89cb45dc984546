//! The accounts of deploy/nats/accounts.conf: what each user may and may not do (the identities
//! ticketd maps them to are tested in identity.rs).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::{Client, ConnectOptions, Event, ServerError, jetstream};
use prost::Message;
use ticket_engine::{DataDir, Engine, EngineConfig};
use ticket_nats::publisher::{self, PublisherConfig};
use ticket_proto::pb;
use ticket_testkit::{NatsServer, ServerConfig};
use tokio::sync::watch;

use crate::shipped_policy;

type Violations = Arc<Mutex<Vec<String>>>;

async fn connect(server: &NatsServer, user: &str) -> (Client, Violations) {
    let violations: Violations = Arc::default();
    let seen = violations.clone();
    let client = ConnectOptions::with_user_and_password(user.into(), format!("{user}-dev-password"))
        .event_callback(move |event| {
            let seen = seen.clone();
            async move {
                if let Event::ServerError(ServerError::Other(e)) = event {
                    seen.lock().unwrap().push(e);
                }
            }
        })
        .connect(server.url())
        .await
        .unwrap();
    (client, violations)
}

async fn wait_violation(violations: &Violations, subject: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if violations
            .lock()
            .unwrap()
            .iter()
            .any(|v| v.to_lowercase().contains("permissions violation") && v.contains(subject))
        {
            return;
        }
        assert!(Instant::now() < deadline, "no permissions violation for {subject}: {:?}", violations.lock().unwrap());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn command(body: ticket_domain::CommandBody) -> Vec<u8> {
    use ticket_domain::testing::{agent, utc};
    let mut wire = pb::Command::from(&agent(utc(2026, 11, 21, 0, 0), body));
    wire.issued_at = None;
    wire.encode_to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_user_can_do_its_job_and_nothing_else() {
    let accounts = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/nats/accounts.conf");
    let server =
        NatsServer::start_with(ServerConfig { config_file: Some(accounts), ..ServerConfig::default() }).unwrap();

    // The service, as the ticketd user.
    let dir = tempfile::tempdir().unwrap();
    let policy = Arc::new(shipped_policy("regional-operator.toml"));
    let engine = Engine::start(EngineConfig::new(DataDir::new(dir.path()), policy)).await.unwrap();
    let log = engine.log().clone();
    let (service_client, service_violations) = connect(&server, "ticketd").await;
    let (service, views) = (engine.service().clone(), engine.views().unwrap().clone());
    let rules = vec![
        ticket_nats::IdentityRule {
            account: "SUPPORT".into(),
            user: "*".into(),
            actor: Some(ticket_domain::ActorId::new("agent-li").unwrap()),
            role: ticket_nats::Role::Agent,
        },
        ticket_nats::IdentityRule {
            account: "OPERATORS".into(),
            user: "*".into(),
            actor: None,
            role: ticket_nats::Role::Operator,
        },
    ];
    let config = ticket_nats::ApiConfig {
        identities: ticket_nats::Identities { rules, unstamped: ticket_nats::Unstamped::Deny },
        ..ticket_nats::ApiConfig::default()
    };
    let api = ticket_nats::start(service_client.clone(), service, views, config).await.unwrap();
    let (stop, stopped) = watch::channel(false);
    let publishing = tokio::spawn(publisher::run(
        log.clone(),
        jetstream::with_prefix(service_client.clone(), "$JS.EVENTS.API"),
        PublisherConfig::default(),
        stopped,
    ));

    // Support tools open a ticket...
    let (support, support_violations) = connect(&server, "support").await;
    let support_client = ticket_client::Client::new(support.clone());
    support_client.open(&crate::client::agent(), None, crate::client::opening("advanced")).await.unwrap();
    // ...but cannot record a breach: only the engine's timer may (SUPPORT does not import it).
    let breach = ticket_domain::CommandBody::RecordSlaBreach {
        metric: ticket_domain::Metric::FirstResponse,
        cycle: 1,
        due_at: ticket_domain::testing::utc(2026, 11, 21, 1, 0),
        at_import: false,
    };
    let subject = ticket_nats::command_subject("record_sla_breach");
    let unserved = support.request(subject, command(breach).into()).await;
    assert!(unserved.is_err_and(|e| e.kind() == async_nats::RequestErrorKind::NoResponders));

    // Operators see the projections' lag and rebuild one beside the live one...
    let (operator, operator_violations) = connect(&server, "operator").await;
    let operator_client = ticket_client::Client::new(operator.clone());
    let rebuilt = operator_client.rebuild_projection("board", None).await.unwrap();
    assert_eq!((rebuilt.name.as_str(), rebuilt.position), ("board", 1));
    let lag = operator_client.projection_lag(None).await.unwrap();
    assert_eq!(lag.projections.len(), 4);
    assert!(lag.projections.iter().all(|p| p.head == 1), "{lag:?}");
    // ...but issue no commands; support tools do not reach the operators' endpoints.
    let body = ticket_domain::testing::open("advanced", "technical", ticket_domain::Severity::A);
    let unserved = operator.request(ticket_nats::command_subject("open"), command(body).into()).await;
    assert!(unserved.is_err_and(|e| e.kind() == async_nats::RequestErrorKind::NoResponders));
    let unserved = support.request(ticket_nats::admin_subject("rebuild"), "board".into()).await;
    assert!(unserved.is_err_and(|e| e.kind() == async_nats::RequestErrorKind::NoResponders));
    assert!(operator_violations.lock().unwrap().is_empty() && support_violations.lock().unwrap().is_empty());

    // Subscribers (downstream systems of EVENTS) read events...
    let (subscriber, subscriber_violations) = connect(&server, "paging").await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let stream = loop {
        if let Ok(stream) = jetstream::new(subscriber.clone()).get_stream("TICKETS").await {
            break stream;
        }
        assert!(Instant::now() < deadline, "the subscriber cannot see the stream");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while stream.get_info().await.unwrap().state.messages < 1 {
        assert!(Instant::now() < deadline, "no event reached the stream");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // ...and the breaches' paging copies, in their own stream.
    let copies = jetstream::new(subscriber.clone()).get_stream("TICKETS_SLA").await.unwrap();
    let pager = copies
        .create_consumer(async_nats::jetstream::consumer::pull::Config {
            durable_name: Some("paging".into()),
            filter_subject: "tickets.sla.breached.A".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(pager.cached_info().config.filter_subject, "tickets.sla.breached.A");
    // ...and can publish neither a command nor an event.
    let body = ticket_domain::testing::open("advanced", "technical", ticket_domain::Severity::A);
    subscriber.publish(ticket_nats::command_subject("open"), command(body).into()).await.unwrap();
    wait_violation(&subscriber_violations, "tickets.cmd.open").await;
    subscriber.publish("tickets.events.forged.opened", "forged".into()).await.unwrap();
    wait_violation(&subscriber_violations, "tickets.events.forged.opened").await;
    subscriber.flush().await.unwrap();
    assert_eq!(ticket_log::EventLog::head(&log), 1, "nothing but the support tool's command was appended");

    assert!(api.stop(Duration::from_secs(5)).await);
    assert!(engine.stop(Duration::from_secs(5)).await.clean);
    stop.send_replace(true);
    publishing.await.unwrap().unwrap();
    assert!(
        service_violations.lock().unwrap().is_empty(),
        "the service hit a permission: {:?}",
        service_violations.lock().unwrap()
    );
}
