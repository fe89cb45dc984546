//! Events reach a downstream JetStream consumer exactly once, in order, even across an outage.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer};
use futures::StreamExt;
use ticket_domain::{CommandBody, CommandId, Severity};
use ticket_log::EventLog;
use ticket_log_sled::{SledConfig, SledLog};
use ticket_nats::publisher::{self, HEADER_POSITION, PublisherConfig};
use ticket_service::{CommandService, ServiceConfig};
use ticket_testkit::NatsServer;
use tokio::sync::watch;

use crate::shipped_policy;

fn service(log: &SledLog) -> CommandService<SledLog> {
    CommandService::new(log.clone(), Arc::new(shipped_policy("regional-operator.toml")), None, ServiceConfig::default())
}

/// Opens `tickets` tickets and adds `comments` customer comments to each: one event per command.
async fn write(service: &CommandService<SledLog>, batch: &str, tickets: u128, comments: usize) {
    use ticket_domain::testing::*;
    for t in 0..tickets {
        let ticket = ticket_domain::TicketId::from_uuid(uuid::Uuid::from_u128(
            0x0190_0000_0000_7000_8000_0000_0000_0000 | (t + 1),
        ));
        let at = beijing(2026, 11, 21, 9, 0);
        if service.log().stream_version(ticket).unwrap() == 0 {
            let mut open = agent(at, open("standard", "technical", Severity::B));
            (open.id, open.ticket_id) = (CommandId::new(format!("{batch}-open-{t}")).unwrap(), ticket);
            service.execute(open.into()).await.unwrap();
        }
        for c in 0..comments {
            let body = CommandBody::RecordCustomerReply { message: text("more") };
            let mut reply = command(ticket_domain::ActorKind::Customer, "acme", at, body);
            (reply.id, reply.ticket_id) = (CommandId::new(format!("{batch}-{t}-{c}")).unwrap(), ticket);
            service.execute(reply.into()).await.unwrap();
        }
    }
}

/// Reads the whole stream with a fresh consumer; returns (position, ticket, version) per message.
async fn consume(client: &async_nats::Client, expected: usize) -> Vec<(u64, String, u64)> {
    let js = jetstream::new(client.clone());
    let stream = js.get_stream("TICKETS").await.unwrap();
    let consumer = stream
        .create_consumer(consumer::pull::Config {
            ack_policy: consumer::AckPolicy::None,
            filter_subject: "tickets.events.>".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut messages = consumer.messages().await.unwrap();
    let mut seen = Vec::new();
    while seen.len() < expected {
        let next = tokio::time::timeout(Duration::from_secs(10), messages.next()).await;
        let Ok(Some(Ok(message))) = next else { panic!("only {} of {expected} events arrived", seen.len()) };
        let envelope = ticket_proto::decode_envelope(&message.payload).unwrap();
        let header = message.headers.as_ref().and_then(|h| h.get(HEADER_POSITION)).map(|v| v.to_string());
        assert_eq!(header, Some(envelope.position.to_string()));
        seen.push((envelope.position, envelope.event.ticket_id.to_string(), envelope.version));
    }
    // Nothing more than expected: no duplicate arrives after the last event.
    let extra = tokio::time::timeout(Duration::from_millis(300), messages.next()).await;
    assert!(extra.is_err(), "an event arrived twice");
    seen
}

fn assert_exactly_once_in_order(seen: &[(u64, String, u64)], head: u64) {
    let positions: Vec<u64> = seen.iter().map(|s| s.0).collect();
    assert_eq!(positions, (1..=head).collect::<Vec<_>>(), "every position once, in log order");
    let mut versions = std::collections::HashMap::new();
    for (_, ticket, version) in seen {
        let last = versions.insert(ticket.clone(), *version).unwrap_or(0);
        assert_eq!(*version, last + 1, "ticket {ticket} out of order");
    }
}

async fn wait_published(log: &SledLog, within: Duration) {
    let deadline = Instant::now() + within;
    while log.published().unwrap() < log.head() {
        assert!(Instant::now() < deadline, "published {} of {}", log.published().unwrap(), log.head());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_downstream_consumer_sees_every_event_once_in_order() {
    let server = NatsServer::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let log = SledLog::open(SledConfig::new(dir.path().join("log"))).unwrap();
    write(&service(&log), "a", 5, 4).await;
    let client = async_nats::connect(server.url()).await.unwrap();
    let (stop, stopped) = watch::channel(false);
    let task =
        tokio::spawn(publisher::run(log.clone(), jetstream::new(client.clone()), PublisherConfig::default(), stopped));
    wait_published(&log, Duration::from_secs(30)).await;
    // Live appends are published as they come.
    write(&service(&log), "b", 5, 2).await;
    wait_published(&log, Duration::from_secs(30)).await;
    let seen = consume(&client, log.head() as usize).await;
    assert_exactly_once_in_order(&seen, log.head());
    stop.send_replace(true);
    task.await.unwrap().unwrap();
}

async fn wait_until(what: &str, within: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_during_a_load_loses_and_duplicates_nothing() {
    let mut server = NatsServer::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let log = SledLog::open(SledConfig::new(dir.path().join("log"))).unwrap();
    let client = async_nats::connect(server.url()).await.unwrap();
    let (stop, stopped) = watch::channel(false);
    let config = PublisherConfig { max_backoff: Duration::from_millis(200), ..PublisherConfig::default() };
    let task = tokio::spawn(publisher::run(log.clone(), jetstream::new(client.clone()), config, stopped));

    // A load that runs through the outage: NATS is killed while events are being published.
    let load = {
        let service = service(&log);
        tokio::spawn(async move { write(&service, "load", 8, 30).await })
    };
    wait_until("publishing is under way", Duration::from_secs(30), || log.published().unwrap_or(0) >= 20).await;
    server.stop();
    let at_outage = log.head();
    // Appends go on while NATS is down: the outbox grows.
    wait_until("appends go on during the outage", Duration::from_secs(30), || log.head() >= at_outage + 50).await;
    assert!(log.published().unwrap() < log.head(), "nothing can be published while NATS is down");
    server.restart().unwrap();
    load.await.unwrap();
    wait_published(&log, Duration::from_secs(60)).await;

    let seen = consume(&client, log.head() as usize).await;
    assert_eq!(seen.len(), 8 * 31);
    assert_exactly_once_in_order(&seen, log.head());
    stop.send_replace(true);
    task.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_three_node_cluster_events_are_replicated_three_times() {
    let cluster = ticket_testkit::Cluster::start(3).unwrap();
    cluster.wait_routed(Duration::from_secs(30)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let log = SledLog::open(SledConfig::new(dir.path().join("log"))).unwrap();
    write(&service(&log), "r3", 3, 3).await;
    // The engine talks to the first node; a downstream consumer reads from the last.
    let client = async_nats::connect(cluster.nodes[0].url()).await.unwrap();
    let (stop, stopped) = watch::channel(false);
    let config = PublisherConfig { replicas: 3, max_backoff: Duration::from_millis(200), ..PublisherConfig::default() };
    let task = tokio::spawn(publisher::run(log.clone(), jetstream::new(client.clone()), config, stopped));
    // JetStream elects its meta leader after the routes are up; until then the publisher retries.
    wait_published(&log, Duration::from_secs(60)).await;

    let reader = async_nats::connect(cluster.nodes[2].url()).await.unwrap();
    let mut stream = jetstream::new(reader.clone()).get_stream("TICKETS").await.unwrap();
    let info = stream.info().await.unwrap();
    assert_eq!(info.config.num_replicas, 3);
    let cluster_info = info.cluster.as_ref().unwrap();
    assert_eq!(cluster_info.replicas.len() + 1, 3, "a leader and two replicas");
    let seen = consume(&reader, log.head() as usize).await;
    assert_exactly_once_in_order(&seen, log.head());
    stop.send_replace(true);
    task.await.unwrap().unwrap();
}

/// The headers of every message of the TICKETS stream, in stream order.
async fn stored_headers(client: &async_nats::Client) -> Vec<async_nats::HeaderMap> {
    let js = jetstream::new(client.clone());
    let mut stream = js.get_stream("TICKETS").await.unwrap();
    let last = stream.info().await.unwrap().state.last_sequence;
    let mut headers = Vec::new();
    for sequence in 1..=last {
        headers.push(stream.get_raw_message(sequence).await.unwrap().headers);
    }
    headers
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_owner_republishing_from_a_stale_watermark_duplicates_nothing() {
    // Given events published by a partition's owner in atomic batches...
    let server = NatsServer::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let first = SledLog::open(SledConfig::new(dir.path().join("first"))).unwrap();
    write(&service(&first), "a", 4, 5).await;
    let client = async_nats::connect(server.url()).await.unwrap();
    let js = jetstream::new(client.clone());
    let (stop, stopped) = watch::channel(false);
    let task = tokio::spawn(publisher::run(first.clone(), js.clone(), PublisherConfig::default(), stopped));
    wait_published(&first, Duration::from_secs(30)).await;
    stop.send_replace(true);
    task.await.unwrap().unwrap();
    let published = first.head();
    let headers = stored_headers(&client).await;
    assert_eq!(headers.len() as u64, published);
    assert!(
        headers.iter().any(|h| h.get(async_nats::header::NATS_BATCH_ID).is_some()),
        "the events went out in atomic batches"
    );

    // ...when the next owner, with a copy of the same log and more events, starts from a shared
    // watermark that never saw them (its first batch holds events the stream already has)...
    let next = SledLog::open(SledConfig::new(dir.path().join("next"))).unwrap();
    let records = first.read_raw(1, published as usize).unwrap().into_iter().map(|(_, bytes)| bytes).collect();
    next.apply_replicated(ticket_log::ReplicaGroup { first_position: 1, records, commands: Vec::new() }).await.unwrap();
    write(&service(&next), "b", 2, 3).await;
    assert!(next.head() > published);
    let store =
        js.create_key_value(jetstream::kv::Config { bucket: "WATERMARKS".into(), ..Default::default() }).await.unwrap();
    let reconcile = publisher::Reconcile::Shared {
        store: Box::new(store.clone()),
        key: "p0".into(),
        partition: 0,
        held: publisher::Held(Arc::new(|| true)),
    };
    let (stop, stopped) = watch::channel(false);
    let config = PublisherConfig { max_backoff: Duration::from_millis(200), ..PublisherConfig::default() };
    let task = tokio::spawn(publisher::run_with(next.clone(), js.clone(), config, reconcile, stopped));
    wait_published(&next, Duration::from_secs(30)).await;

    // ...then the stream holds every event once, in log order, and the watermark is shared.
    let seen = consume(&client, next.head() as usize).await;
    assert_exactly_once_in_order(&seen, next.head());
    let shared = store.get("p0").await.unwrap().unwrap();
    assert_eq!(String::from_utf8_lossy(&shared).parse::<u64>().ok(), Some(next.head()));
    stop.send_replace(true);
    task.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lingering_outbox_makes_a_round_per_linger_and_stops_without_waiting_one_out() {
    let server = NatsServer::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let log = SledLog::open(SledConfig::new(dir.path().join("log"))).unwrap();
    let client = async_nats::connect(server.url()).await.unwrap();
    let js = jetstream::new(client.clone());
    let service = service(&log);

    // Given an outbox that waits 300 ms for more events before each round that is not a backlog
    let linger = Duration::from_millis(300);
    let (stop, stopped) = watch::channel(false);
    let config = PublisherConfig { linger, ..PublisherConfig::default() };
    let task = tokio::spawn(publisher::run(log.clone(), js.clone(), config, stopped));

    // When events arrive steadily, one command after another, for a while
    let started = Instant::now();
    write(&service, "steady", 20, 4).await;
    wait_published(&log, Duration::from_secs(30)).await;
    let took = started.elapsed();

    // Then it published them in about one atomic batch per linger (not one per round trip),
    // every event once, in log order
    let headers = stored_headers(&client).await;
    assert_eq!(headers.len() as u64, log.head());
    let batches: std::collections::HashSet<String> =
        headers.iter().filter_map(|h| h.get(async_nats::header::NATS_BATCH_ID)).map(|id| id.to_string()).collect();
    let rounds = (took.as_millis() / linger.as_millis()) as usize + 2;
    assert!(
        batches.len() <= rounds,
        "{} events went out in {} batches over {took:?}: more than one round per linger ({rounds})",
        headers.len(),
        batches.len()
    );
    let seen = consume(&client, log.head() as usize).await;
    assert_exactly_once_in_order(&seen, log.head());
    stop.send_replace(true);
    tokio::time::timeout(Duration::from_secs(30), task).await.expect("the outbox stopped").unwrap().unwrap();

    // Given an outbox lingering a minute, with events it has not published yet
    let (stop, stopped) = watch::channel(false);
    let config = PublisherConfig { linger: Duration::from_secs(60), ..PublisherConfig::default() };
    let task = tokio::spawn(publisher::run(log.clone(), js, config, stopped));
    write(&service, "late", 2, 2).await;

    // When it is told to stop, then it publishes them and stops, without waiting the minute out
    stop.send_replace(true);
    tokio::time::timeout(Duration::from_secs(30), task)
        .await
        .expect("the outbox stopped within 30 s")
        .unwrap()
        .unwrap();
    assert_eq!(log.published().unwrap(), log.head(), "drained before it stopped");
    let seen = consume(&client, log.head() as usize).await;
    assert_exactly_once_in_order(&seen, log.head());
}

/// The event stream's messages from sequence 1 to `upto`, as stored (subject, headers, payload).
async fn stored_messages(js: &jetstream::Context, upto: u64) -> Vec<jetstream::message::StreamMessage> {
    let stream = js.get_stream("TICKETS").await.unwrap();
    let mut out = Vec::new();
    for sequence in 1..=upto {
        out.push(stream.get_raw_message(sequence).await.unwrap());
    }
    out
}

/// Runs the publisher on `log` until everything is published, then stops it.
async fn publish_all(log: &SledLog, js: &jetstream::Context) {
    let (stop, stopped) = watch::channel(false);
    let task = tokio::spawn(publisher::run(log.clone(), js.clone(), PublisherConfig::default(), stopped));
    wait_published(log, Duration::from_secs(30)).await;
    stop.send_replace(true);
    task.await.unwrap().unwrap();
}

/// Given every event published, when the event stream comes back holding only its first 10
/// (restored from an older copy), then the publisher, at its start, publishes the 15 it lost again
/// from the log, and a consumer reading the stream sees every event once, in order; when the
/// stream is deleted and created again while the publisher runs, idle, then its next round is
/// refused (the stream is not where it was) and every event is published again before the new
/// ones; when a ticket's events are purged (the newest ones) or all of them, nothing is
/// published again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_that_lost_acknowledged_events_gets_them_again_from_the_log() {
    let server = NatsServer::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let log = SledLog::open(SledConfig::new(dir.path().join("log"))).unwrap();
    write(&service(&log), "a", 5, 4).await;
    let client = async_nats::connect(server.url()).await.unwrap();
    let js = jetstream::new(client.clone());
    publish_all(&log, &js).await;
    assert_eq!(log.published().unwrap(), 25);

    // Restored from an older copy: the first 10 events only.
    let older = stored_messages(&js, 10).await;
    js.delete_stream("TICKETS").await.unwrap();
    js.create_stream(PublisherConfig::default().stream_config()).await.unwrap();
    for message in older {
        // As stored, but for the atomic batch they were published in.
        let mut headers = async_nats::HeaderMap::new();
        for (name, values) in message.headers.iter() {
            if !name.to_string().starts_with("Nats-Batch") {
                for value in values {
                    headers.append(name.clone(), value.clone());
                }
            }
        }
        js.publish_with_headers(message.subject, headers, message.payload).await.unwrap().await.unwrap();
    }
    publish_all(&log, &js).await;
    assert_exactly_once_in_order(&consume(&client, 25).await, 25);

    // Recreated while the publisher runs, idle (after it published an event: it is past its
    // start's reconciliation).
    let (stop, stopped) = watch::channel(false);
    let task = tokio::spawn(publisher::run(log.clone(), js.clone(), PublisherConfig::default(), stopped));
    write(&service(&log), "b", 1, 1).await;
    wait_published(&log, Duration::from_secs(30)).await;
    js.delete_stream("TICKETS").await.unwrap();
    js.create_stream(PublisherConfig::default().stream_config()).await.unwrap();
    write(&service(&log), "b2", 1, 1).await;
    wait_published(&log, Duration::from_secs(30)).await;
    stop.send_replace(true);
    task.await.unwrap().unwrap();
    assert_exactly_once_in_order(&consume(&client, 27).await, 27);

    // A ticket's events purged, the newest among them (ticket 1's: opened with 4 comments in
    // batch a, 2 more comments in batch b). Nothing is given back.
    let b = ticket_domain::TicketId::from_uuid(uuid::Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0001));
    let stream = js.get_stream("TICKETS").await.unwrap();
    let purged = stream.purge().filter(format!("tickets.events.{b}.>")).await.unwrap().purged;
    assert_eq!(purged, 7);
    publish_all(&log, &js).await;
    let left: Vec<u64> = consume(&client, 20).await.iter().map(|(position, ..)| *position).collect();
    assert_eq!(left, (6..=25).collect::<Vec<_>>(), "ticket 1's events stay purged");

    // All purged by an operator: not given back; what comes next is published.
    js.get_stream("TICKETS").await.unwrap().purge().await.unwrap();
    write(&service(&log), "c", 1, 2).await;
    publish_all(&log, &js).await;
    let after: Vec<u64> = consume(&client, 2).await.iter().map(|(position, ..)| *position).collect();
    assert_eq!(after, vec![28, 29], "only the events after the purge");
}
