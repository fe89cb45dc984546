//! Breaches reach NATS twice: as events, and on the severity's breach subject for paging.

use std::time::Duration;

use async_nats::jetstream::{self, consumer};
use futures::StreamExt;
use ticket_domain::testing::{beijing, open};
use ticket_domain::{EventKind, Metric, Severity};
use ticket_log::EventLog;
use ticket_nats::publisher::{self, HEADER_COPY, PublisherConfig};
use ticket_testkit::NatsServer;
use tokio::sync::watch;

use super::{Engine, new_ticket};
use crate::shipped_policy;

/// Every message on `subject`, read by a fresh consumer until none arrives for a moment.
async fn read_all(js: &jetstream::Context, subject: &str, expected: usize) -> Vec<async_nats::jetstream::Message> {
    let stream = js.get_stream("TICKETS").await.unwrap();
    let consumer = stream
        .create_consumer(consumer::pull::Config {
            ack_policy: consumer::AckPolicy::None,
            filter_subject: subject.into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut messages = consumer.messages().await.unwrap();
    let mut seen = Vec::new();
    while seen.len() < expected {
        let next = tokio::time::timeout(Duration::from_secs(10), messages.next()).await;
        let Ok(Some(Ok(message))) = next else { panic!("only {} of {expected} on {subject}", seen.len()) };
        seen.push(message);
    }
    let extra = tokio::time::timeout(Duration::from_millis(300), messages.next()).await;
    assert!(extra.is_err(), "more than {expected} messages on {subject}");
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paging_system_subscribed_to_severity_a_sees_each_a_breach_once_and_nothing_else() {
    let server = NatsServer::start().unwrap();
    let engine = Engine::start(shipped_policy("regional-operator.toml"), beijing(2026, 11, 23, 2, 0));
    let client = async_nats::connect(server.url()).await.unwrap();
    let js = jetstream::new(client.clone());
    let (stop, stopped) = watch::channel(false);
    let publishing =
        tokio::spawn(publisher::run(engine.log().clone(), js.clone(), PublisherConfig::default(), stopped));

    let critical = new_ticket();
    let high = new_ticket();
    engine.at(beijing(2026, 11, 23, 3, 0), critical, open("advanced", "technical", Severity::A)).await.unwrap();
    engine.execute(high, open("advanced", "technical", Severity::B)).await.unwrap();
    // A is due at 04:00; B (09:00-24:00, 1 business day, opened before the opening) at 24:00.
    engine.step_to(beijing(2026, 11, 24, 1, 0)).await;
    assert_eq!(engine.breaches(critical).len(), 1);
    assert_eq!(engine.breaches(high).len(), 1);

    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while engine.log().published().unwrap() < engine.log().head() {
        assert!(tokio::time::Instant::now() < deadline, "the outbox did not drain");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let paged = read_all(&js, "tickets.sla.breached.A", 1).await;
    let envelope = ticket_proto::decode_envelope(&paged[0].payload).unwrap();
    assert_eq!(envelope.event.ticket_id, critical);
    let EventKind::SlaBreached { metric, severity, due_at, .. } = envelope.event.kind else { panic!("not a breach") };
    assert_eq!((metric, severity, due_at), (Metric::FirstResponse, Severity::A, beijing(2026, 11, 23, 4, 0)));
    assert!(paged[0].headers.as_ref().and_then(|h| h.get(HEADER_COPY)).is_some());

    let b = read_all(&js, "tickets.sla.breached.B", 1).await;
    assert_eq!(ticket_proto::decode_envelope(&b[0].payload).unwrap().event.ticket_id, high);
    // The events themselves are on the event subjects, once each.
    let events = read_all(&js, "tickets.events.>", engine.log().head() as usize).await;
    let breaches = events.iter().filter(|m| m.subject.ends_with(".sla_breached")).count();
    assert_eq!(breaches, 2);
    stop.send_replace(true);
    publishing.await.unwrap().unwrap();
}
