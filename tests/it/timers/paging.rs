//! Breaches reach NATS twice: as events in `TICKETS`, and as paging copies on the severity's
//! breach subject in `TICKETS_SLA`. A consumer of the whole event stream sees each event once,
//! also after a publisher that failed between a copy and its event, and after an upgrade from a
//! `TICKETS` stream that held the copies too.

use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::{self, consumer, stream};
use futures::StreamExt;
use ticket_domain::testing::{beijing, open};
use ticket_domain::{EventKind, Metric, RecordedEvent, Severity, TicketId};
use ticket_log::EventLog;
use ticket_nats::publisher::{self, HEADER_COPY, HEADER_POSITION, PublisherConfig};
use ticket_testkit::NatsServer;
use tokio::sync::watch;

use super::{Engine, new_ticket};
use crate::shipped_policy;

/// Every message on `subject` (every message, for `""`) of `stream`, read by a fresh consumer;
/// fails if more than `expected` arrive.
async fn read_all(
    js: &jetstream::Context,
    stream: &str,
    subject: &str,
    expected: usize,
) -> Vec<async_nats::jetstream::Message> {
    let stream = js.get_stream(stream).await.unwrap();
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
        let Ok(Some(Ok(message))) = next else { panic!("only {} of {expected} on {subject:?}", seen.len()) };
        seen.push(message);
    }
    let extra = tokio::time::timeout(Duration::from_millis(300), messages.next()).await;
    assert!(extra.is_err(), "more than {expected} messages on {subject:?}");
    seen
}

fn position(message: &async_nats::jetstream::Message) -> u64 {
    message.headers.as_ref().and_then(|h| h.get(HEADER_POSITION)).unwrap().as_str().parse().unwrap()
}

/// A consumer of the whole `TICKETS` stream sees every position of the log once, in order.
async fn assert_whole_stream_once(js: &jetstream::Context, head: u64) {
    let all = read_all(js, "TICKETS", "", head as usize).await;
    assert_eq!(all.iter().map(position).collect::<Vec<_>>(), (1..=head).collect::<Vec<_>>());
    assert!(all.iter().all(|m| m.headers.as_ref().and_then(|h| h.get(HEADER_COPY)).is_none()), "a copy in TICKETS");
}

/// A severity A ticket and a severity B ticket, both breached: the A breach comes first.
async fn two_breaches(engine: &Engine) -> (TicketId, TicketId) {
    let critical = new_ticket();
    let high = new_ticket();
    engine.at(beijing(2026, 11, 23, 3, 0), critical, open("advanced", "technical", Severity::A)).await.unwrap();
    engine.execute(high, open("advanced", "technical", Severity::B)).await.unwrap();
    // A is due at 04:00; B (09:00-24:00, 1 business day, opened before the opening) at 24:00.
    engine.step_to(beijing(2026, 11, 24, 1, 0)).await;
    assert_eq!(engine.breaches(critical).len(), 1);
    assert_eq!(engine.breaches(high).len(), 1);
    (critical, high)
}

/// A nats-server of the test's own, the engine with [`two_breaches`], and JetStream on it.
async fn two_breaches_and_a_server() -> (NatsServer, Engine, jetstream::Context, (TicketId, TicketId)) {
    let server = NatsServer::start().unwrap();
    let engine = Engine::start(shipped_policy("regional-operator.toml"), beijing(2026, 11, 23, 2, 0));
    let js = jetstream::new(async_nats::connect(server.url()).await.unwrap());
    let tickets = two_breaches(&engine).await;
    (server, engine, js, tickets)
}

fn breaches(engine: &Engine) -> Vec<RecordedEvent> {
    let events = engine.log().read_from(1, engine.log().head() as usize).unwrap();
    events.into_iter().filter(|e| matches!(e.event.kind, EventKind::SlaBreached { .. })).collect()
}

/// Publishes `event` on `subject` as a publisher does, with `msg_id` as its `Nats-Msg-Id`.
async fn publish_as_a_publisher(js: &jetstream::Context, subject: String, event: &RecordedEvent, msg_id: &str) {
    let mut headers = HeaderMap::new();
    headers.insert(async_nats::header::NATS_MESSAGE_ID, msg_id);
    headers.insert(HEADER_POSITION, event.position.to_string().as_str());
    if subject.starts_with("tickets.sla.") {
        headers.insert(HEADER_COPY, "sla-breached");
    }
    let payload = ticket_proto::encode_envelope(event);
    js.publish_with_headers(subject, headers, payload.into()).await.unwrap().await.unwrap();
}

async fn run_publisher(engine: &Engine, js: &jetstream::Context) {
    let (stop, stopped) = watch::channel(false);
    let publishing =
        tokio::spawn(publisher::run(engine.log().clone(), js.clone(), PublisherConfig::default(), stopped));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while engine.log().published().unwrap() < engine.log().head() {
        assert!(tokio::time::Instant::now() < deadline, "the outbox did not drain");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.send_replace(true);
    publishing.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paging_system_subscribed_to_severity_a_sees_each_a_breach_once_and_nothing_else() {
    let (_server, engine, js, (critical, high)) = two_breaches_and_a_server().await;
    run_publisher(&engine, &js).await;

    let paged = read_all(&js, "TICKETS_SLA", "tickets.sla.breached.A", 1).await;
    let envelope = ticket_proto::decode_envelope(&paged[0].payload).unwrap();
    assert_eq!(envelope.event.ticket_id, critical);
    let EventKind::SlaBreached { metric, severity, due_at, .. } = envelope.event.kind else { panic!("not a breach") };
    assert_eq!((metric, severity, due_at), (Metric::FirstResponse, Severity::A, beijing(2026, 11, 23, 4, 0)));
    assert!(paged[0].headers.as_ref().and_then(|h| h.get(HEADER_COPY)).is_some());

    let b = read_all(&js, "TICKETS_SLA", "tickets.sla.breached.B", 1).await;
    assert_eq!(ticket_proto::decode_envelope(&b[0].payload).unwrap().event.ticket_id, high);
    // The events themselves are in TICKETS, once each: a consumer of the whole stream sees no copy.
    assert_whole_stream_once(&js, engine.log().head()).await;
    let events = read_all(&js, "TICKETS", "tickets.events.>", engine.log().head() as usize).await;
    assert_eq!(events.iter().filter(|m| m.subject.ends_with(".sla_breached")).count(), 2);

    // A publisher started again on the same log and streams publishes nothing twice.
    run_publisher(&engine, &js).await;
    assert_whole_stream_once(&js, engine.log().head()).await;
    read_all(&js, "TICKETS_SLA", "", 2).await;
}

/// A publisher failed after the A breach's copy reached `TICKETS_SLA` and before its event
/// reached `TICKETS`, longer ago than the duplicate window (the copy's id cannot deduplicate
/// it): the next publisher sends the event, not the copy again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_stored_before_a_failure_is_not_sent_again() {
    let (_server, engine, js, _) = two_breaches_and_a_server().await;
    let config = PublisherConfig::default();
    publisher::ensure_stream(&js, &config).await.unwrap();
    let first = &breaches(&engine)[0];
    publish_as_a_publisher(&js, config.breach_subject(first).unwrap(), first, "beyond-the-window").await;

    run_publisher(&engine, &js).await;
    assert_whole_stream_once(&js, engine.log().head()).await;
    let copies = read_all(&js, "TICKETS_SLA", "", 2).await;
    assert_eq!(
        copies.iter().map(position).collect::<Vec<_>>(),
        breaches(&engine).iter().map(|e| e.position).collect::<Vec<_>>()
    );
}

/// An older ticketd kept the copies in `TICKETS` (subjects `tickets.events.>` and
/// `tickets.sla.breached.>`) and stopped after the B breach's copy, before its event. The upgraded
/// publisher narrows `TICKETS` to the events, purges the copies from it, and sends the B copy
/// to `TICKETS_SLA` with the B event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgraded_deployment_stops_duplicating_breaches_in_the_event_stream() {
    let (_server, engine, js, _) = two_breaches_and_a_server().await;
    let config = PublisherConfig::default();
    js.create_stream(stream::Config {
        name: "TICKETS".into(),
        subjects: vec!["tickets.events.>".into(), "tickets.sla.breached.>".into()],
        storage: stream::StorageType::File,
        ..Default::default()
    })
    .await
    .unwrap();
    let last = breaches(&engine)[1].clone();
    for event in engine.log().read_from(1, last.position as usize).unwrap() {
        if let Some(subject) = config.breach_subject(&event) {
            publish_as_a_publisher(&js, subject, &event, &format!("{}:sla", event.event_id)).await;
        }
        if event.position < last.position {
            publish_as_a_publisher(&js, config.subject(&event), &event, &event.event_id.to_string()).await;
        }
    }

    run_publisher(&engine, &js).await;
    let mut tickets = js.get_stream("TICKETS").await.unwrap();
    assert_eq!(tickets.info().await.unwrap().config.subjects, ["tickets.events.>"]);
    assert_whole_stream_once(&js, engine.log().head()).await;
    let copies = read_all(&js, "TICKETS_SLA", "", 1).await;
    assert_eq!(position(&copies[0]), last.position, "the copy the older ticketd had not followed with its event");
}
