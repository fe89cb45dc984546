//! `ticketd dev --test-clock`: an integrator's subscriber receives a weekend's warnings,
//! breaches and escalations, in order, at the instants the policy implies, as an operator
//! advances the clock with `ticketctl clock advance`; a second advance fires nothing twice; and a
//! data directory never mixes the wall clock with a test clock.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer};
use chrono::TimeDelta;
use futures::StreamExt;
use ticket_domain::testing::{beijing, open};
use ticket_domain::{
    Actor, ActorId, ActorKind, CategoryId, CommandBody, EventKind, Metric, PlanId, Policy, RecordedEvent, Severity,
    TicketId, Timestamp,
};
use ticket_proto::pb;
use ticket_testkit::NatsServer;

use crate::daemon::{Daemon, spawn_serve};
use crate::{policy_path, shipped_policy};

/// `ticketd dev` with its own nats-server on a free port, the shipped policy, `flags` after `dev`.
fn spawn_dev(data: &Path, flags: &[&str]) -> (Daemon, String) {
    let port = ticket_testkit::free_port().unwrap();
    let nats = ticket_testkit::nats_server_bin().unwrap();
    let policy = policy_path("regional-operator.toml");
    let port_arg = port.to_string();
    let mut args =
        vec!["--data-dir", data.to_str().unwrap(), "--policy", policy.to_str().unwrap(), "dev", "--port", &port_arg];
    args.extend_from_slice(flags);
    let daemon = Daemon::spawn(&args, data, &[("NATS_SERVER_BIN", nats.as_path())]);
    (daemon, format!("127.0.0.1:{port}"))
}

/// The URL of `ticketd dev`'s server at `address`, logged in as one of its dev users.
fn as_user(address: &str, user: &str) -> String {
    format!("nats://{user}:{user}-dev-password@{address}")
}

/// A connection to `ticketd dev`'s server as one of its dev users.
async fn connect_as(address: &str, user: &str) -> async_nats::Client {
    async_nats::ConnectOptions::with_user_and_password(user.into(), format!("{user}-dev-password"))
        .connect(address)
        .await
        .unwrap()
}

fn ticketctl(url: &str, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_it-ticketctl")).arg("--nats-url").arg(url).args(args).output().unwrap()
}

/// What the policy says a ticket opened at `opened` records on its first-response clock, with
/// nobody answering: each warning threshold at its share of the target's business time, the
/// breach at the whole of it, and the escalation rules' reactions at the same instants.
fn consequences(policy: &Policy, ticket: TicketId, body: &CommandBody, opened: Timestamp) -> Vec<(Timestamp, String)> {
    let CommandBody::Open(o) = body else { panic!("not an opening") };
    let target = policy.target(&o.plan, &o.category, o.severity, Metric::FirstResponse).unwrap();
    let calendar = policy.calendar(&target.calendar).unwrap();
    let business = policy.target_duration(target, opened).unwrap();
    let mut expected = Vec::new();
    for &percent in policy.warning_thresholds() {
        // The share rounded up to the nanosecond: a warning is never early.
        let nanos = (i128::from(business.num_nanoseconds().unwrap()) * i128::from(percent) + 99) / 100;
        let at = calendar.add(opened, TimeDelta::nanoseconds(i64::try_from(nanos).unwrap()));
        expected.push((at, format!("{ticket} sla_warning {percent}%")));
        if let Some(rule) = policy.escalation_on_warning(Metric::FirstResponse, o.severity, percent) {
            expected.push((at, format!("{ticket} escalated {}", rule.tier)));
        }
    }
    let due = calendar.add(opened, business);
    expected.push((due, format!("{ticket} sla_breached")));
    if let Some(rule) = policy.escalation_on_breach(Metric::FirstResponse, o.severity) {
        expected.push((due, format!("{ticket} escalated {}", rule.tier)));
    }
    expected
}

/// A recorded firing as [`consequences`] names it; `None` for other events.
fn consequence(e: &RecordedEvent) -> Option<(Timestamp, String)> {
    let ticket = e.event.ticket_id;
    let label = match &e.event.kind {
        EventKind::SlaWarning { threshold_percent, warn_at, .. } => {
            assert_eq!(*warn_at, e.event.occurred_at, "a warning recorded at another instant than its own");
            format!("{ticket} sla_warning {threshold_percent}%")
        }
        EventKind::SlaBreached { due_at, .. } => {
            assert_eq!(*due_at, e.event.occurred_at, "a breach recorded at another instant than its due one");
            format!("{ticket} sla_breached")
        }
        EventKind::Escalated { tier, .. } => format!("{ticket} escalated {tier}"),
        EventKind::Opened { .. } => return None,
        EventKind::SeveritySet { .. }
        | EventKind::AgentResponded { .. }
        | EventKind::CustomerInfoRequested { .. }
        | EventKind::CustomerResponded { .. }
        | EventKind::DowngradedForNoResponse { .. }
        | EventKind::Resolved { .. }
        | EventKind::Reopened { .. }
        | EventKind::Linked { .. } => panic!("unexpected {}", e.event.kind.name()),
    };
    Some((e.event.occurred_at, label))
}

/// A stream once the publisher has created it.
async fn stream(js: &jetstream::Context, name: &str) -> jetstream::stream::Stream {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match js.get_stream(name).await {
            Ok(stream) => return stream,
            Err(e) => assert!(Instant::now() < deadline, "no stream {name}: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A subscriber's durable pull consumer on `stream`, from its first message.
async fn subscribe(js: &jetstream::Context, name: &str, durable: &str) -> consumer::pull::Stream {
    let consumer = stream(js, name)
        .await
        .create_consumer(consumer::pull::Config {
            durable_name: Some(durable.into()),
            ack_policy: consumer::AckPolicy::Explicit,
            ..Default::default()
        })
        .await
        .unwrap();
    consumer.messages().await.unwrap()
}

/// The next `n` messages, each acknowledged as a subscriber does.
async fn receive(messages: &mut consumer::pull::Stream, n: usize) -> Vec<jetstream::Message> {
    let mut received = Vec::new();
    while received.len() < n {
        let next = tokio::time::timeout(Duration::from_secs(30), messages.next()).await;
        let Ok(Some(Ok(message))) = next else { panic!("only {} of {n} messages arrived", received.len()) };
        message.ack().await.unwrap();
        received.push(message);
    }
    received
}

fn clock_json(out: &std::process::Output) -> serde_json::Value {
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn instant(json: &serde_json::Value) -> Timestamp {
    json.as_str().unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_receives_a_weekends_warnings_breaches_and_escalations_in_order_as_the_test_clock_moves() {
    let policy = shipped_policy("regional-operator.toml");
    let data = tempfile::tempdir().unwrap();
    // Friday 2026-11-27, 16:00 in Beijing.
    let friday = beijing(2026, 11, 27, 16, 0);
    let start = friday.to_rfc3339();
    let (mut daemon, address) = spawn_dev(data.path(), &["--test-clock", "--test-clock-start", &start]);
    daemon.wait_for("ticketd ready", Duration::from_secs(60));
    // The operator moves the clock; the support tool opens tickets as the agent `support`.
    let url = as_user(&address, "operator");
    let now = clock_json(&ticketctl(&url, &["--json", "clock", "now"]));
    assert_eq!((instant(&now["now"]), now["kind"].as_str()), (friday, Some("CLOCK_KIND_SIMULATED")));

    // Opened on Friday afternoon: a critical ticket (24x7), a high technical one (09:00-24:00
    // every day) and a high billing one (weekdays 09:00-18:00), all stamped by the test clock.
    let client = ticket_client::Client::new(connect_as(&address, "support").await);
    let operator = ticket_client::Client::new(connect_as(&address, "operator").await);
    let agent = ticket_client::Issue::by(Actor { kind: ActorKind::Agent, id: ActorId::new("support").unwrap() });
    let mut expected = Vec::new();
    for (plan, category, severity) in [
        ("advanced", "technical", Severity::A),
        ("standard", "technical", Severity::B),
        ("standard", "billing", Severity::B),
    ] {
        let body = open(plan, category, severity);
        let CommandBody::Open(opening) = body.clone() else { unreachable!() };
        assert_eq!((opening.plan, opening.category), (PlanId::new(plan).unwrap(), CategoryId::new(category).unwrap()));
        let CommandBody::Open(ticket) = body.clone() else { unreachable!() };
        let opened = client.open(&agent, None, ticket).await.unwrap();
        assert_eq!(opened.events[0].event.occurred_at, friday, "not stamped by the test clock");
        expected.extend(consequences(&policy, opened.ticket_id, &body, friday));
    }
    expected.sort_by_key(|(at, _)| *at);
    let monday_evening = beijing(2026, 11, 30, 20, 0);
    assert!(expected.iter().all(|(at, _)| *at > friday && *at < monday_evening), "{expected:#?}");
    assert!(expected.iter().any(|(at, _)| *at > beijing(2026, 11, 28, 0, 0) && *at < beijing(2026, 11, 30, 0, 0)));
    assert!(expected.iter().any(|(at, _)| *at > beijing(2026, 11, 30, 0, 0)), "nothing due on Monday: {expected:#?}");

    // An integrator's subscribers, each with the consumer named after itself: the whole event
    // stream (`billing`), and the breaches' paging copies (`paging`).
    let mut events = subscribe(&jetstream::new(connect_as(&address, "billing").await), "TICKETS", "billing").await;
    let mut pages = subscribe(&jetstream::new(connect_as(&address, "paging").await), "TICKETS_SLA", "paging").await;
    let opened = receive(&mut events, 3).await;
    assert!(opened.iter().all(|m| m.subject.ends_with(".opened")), "{:?}", opened.iter().map(|m| &m.subject));

    // Across the weekend to Monday evening, in one advance.
    let to = monday_evening.to_rfc3339();
    let advanced = clock_json(&ticketctl(&url, &["--json", "clock", "advance", "--to", &to]));
    assert_eq!((instant(&advanced["from"]), instant(&advanced["now"])), (friday, monday_evening));
    assert_eq!(advanced["recorded"].as_str(), Some(expected.len().to_string().as_str()), "{advanced}");
    let replied: Vec<(Timestamp, String)> = advanced["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| serde_json::from_value::<pb::EventEnvelope>(e.clone()).unwrap())
        .filter_map(|e| consequence(&RecordedEvent::try_from(e).unwrap()))
        .collect();
    assert_eq!(replied, expected, "the advance's reply");

    let received: Vec<(Timestamp, String)> = receive(&mut events, expected.len())
        .await
        .iter()
        .filter_map(|m| consequence(&ticket_proto::decode_envelope(&m.payload).unwrap()))
        .collect();
    assert_eq!(received, expected, "what the subscriber received, in order");
    let breaches: Vec<(Timestamp, String)> =
        expected.iter().filter(|(_, l)| l.ends_with("sla_breached")).cloned().collect();
    let paged: Vec<(Timestamp, String)> = receive(&mut pages, breaches.len())
        .await
        .iter()
        .filter_map(|m| consequence(&ticket_proto::decode_envelope(&m.payload).unwrap()))
        .collect();
    assert_eq!(paged, breaches, "the paging copies");

    // A second advance fires nothing twice; the clock never runs backwards.
    let again = operator.advance_clock_by(TimeDelta::days(1)).await.unwrap();
    assert_eq!((again.recorded, again.events.len()), (0, 0), "{again:?}");
    let back = operator.advance_clock_to(friday).await.unwrap_err();
    assert_eq!(back.to_wire().map(|e| e.code()), Some(pb::ErrorCode::MalformedRequest), "{back}");
    let nothing = tokio::time::timeout(Duration::from_millis(500), events.next()).await;
    assert!(nothing.is_err(), "an event arrived after the second advance");
    let now = operator.clock_now().await.unwrap();
    assert_eq!(now.now, Some(ticket_proto::wire::timestamp(&(monday_evening + TimeDelta::days(1)))));

    let (status, log) = daemon.terminate();
    assert!(status.success(), "ticketd exited with {status}:\n{}", log.join("\n"));

    // The directory is a test clock's: the wall clock is refused, by `dev` and by `serve`.
    let (dev, _) = spawn_dev(data.path(), &[]);
    let (status, log) = dev.exited(Duration::from_secs(60));
    assert!(!status.success());
    assert!(log.iter().any(|l| l.contains("refusing to run on the wall clock")), "{}", log.join("\n"));
    let server = NatsServer::start().unwrap();
    let (status, log) = spawn_serve(&server.url(), &[], data.path()).exited(Duration::from_secs(60));
    assert!(!status.success());
    assert!(log.iter().any(|l| l.contains("refusing to run on the wall clock")), "{}", log.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wall_clock_data_directory_refuses_a_test_clock_and_its_clock_cannot_be_advanced() {
    let server = NatsServer::start().unwrap();
    let data = tempfile::tempdir().unwrap();
    let mut daemon = spawn_serve(&server.url(), &[], data.path());
    daemon.wait_for("ticketd ready", Duration::from_secs(30));
    let now = clock_json(&ticketctl(&server.url(), &["--json", "clock", "now"]));
    assert_eq!(now["kind"].as_str(), Some("CLOCK_KIND_WALL"));
    let refused = ticketctl(&server.url(), &["clock", "advance", "--by", "1h"]);
    assert_eq!(refused.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("UNKNOWN_ENDPOINT") && stderr.contains("wall clock"), "{stderr}");
    let (status, log) = daemon.terminate();
    assert!(status.success(), "ticketd exited with {status}:\n{}", log.join("\n"));

    let (dev, _) = spawn_dev(data.path(), &["--test-clock"]);
    let (status, log) = dev.exited(Duration::from_secs(60));
    assert!(!status.success());
    assert!(log.iter().any(|l| l.contains("refusing to run a test clock")), "{}", log.join("\n"));
}
