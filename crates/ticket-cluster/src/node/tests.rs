//! Nodes sharing partitions on a real nats-server.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use ticket_log::{LogError, contract};
use ticket_testkit::NatsServer;

use crate::fence::PARTITIONS_METADATA;

use super::*;

fn config(name: &str, dir: &tempfile::TempDir) -> NodeConfig {
    let mut config = NodeConfig::new(name, dir.path().join(name), Partitions::new(16).unwrap());
    config.leases.ttl = Duration::from_secs(3);
    config.renew_every = Duration::from_millis(250);
    config
}

async fn node(url: &str, name: &str, dir: &tempfile::TempDir) -> NodeHandle {
    let js = jetstream::new(async_nats::connect(url).await.unwrap());
    start(js, config(name, dir)).await.unwrap()
}

fn owned(node: &NodeHandle) -> BTreeSet<Partition> {
    node.owned().borrow().keys().copied().collect()
}

/// Waits, up to a minute, until `done` holds of what each node owns.
async fn wait_until(nodes: &[&NodeHandle], what: &str, done: impl Fn(&[BTreeSet<Partition>]) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let now: Vec<_> = nodes.iter().map(|n| owned(n)).collect();
        if done(&now) {
            return;
        }
        assert!(Instant::now() < deadline, "{what}: never happened; the nodes own {now:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Every partition owned by exactly one of the nodes.
fn partitioned(owned: &[BTreeSet<Partition>]) -> bool {
    let all: usize = owned.iter().map(BTreeSet::len).sum();
    let union: BTreeSet<_> = owned.iter().flatten().collect();
    all == 16 && union.len() == 16
}

/// Three nodes start, and each ends up with about a third of the 16 partitions, each partition
/// with one of them; one stops gracefully and the other two take its partitions over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_share_the_partitions_and_a_stopped_nodes_share_moves() {
    let server = NatsServer::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let a = node(&server.url(), "node-a", &dir).await;
    let b = node(&server.url(), "node-b", &dir).await;
    let c = node(&server.url(), "node-c", &dir).await;
    wait_until(&[&a, &b, &c], "a third each", |owned| {
        partitioned(owned) && owned.iter().all(|o| (4..=6).contains(&o.len()))
    })
    .await;
    c.stop().await;
    wait_until(&[&a, &b], "half each", |owned| partitioned(owned) && owned.iter().all(|o| o.len() == 8)).await;
    a.stop().await;
    b.stop().await;
}

/// A node dies holding partitions (nothing handed over): once its leases expire the other node
/// takes them, with the dead node's appends in their logs; an append still made through the
/// dead node's log is refused by the fence and lands nowhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_nodes_partitions_are_taken_over_with_their_history_and_it_is_fenced() {
    let server = NatsServer::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let a = node(&server.url(), "node-a", &dir).await;
    let b = node(&server.url(), "node-b", &dir).await;
    wait_until(&[&a, &b], "half each", |owned| partitioned(owned) && owned.iter().all(|o| o.len() == 8)).await;
    let (partition, log) = {
        let held = a.owned().borrow().clone();
        let (p, owned) = held.into_iter().next().unwrap();
        (p, owned.log)
    };
    log.append(contract::append("c1", contract::ticket(1), 0, &["opened", "responded"])).await.unwrap();
    let before = log.chain_head().unwrap();

    a.abort();
    wait_until(&[&b], "all on node b", |owned| owned[0].len() == 16).await;
    let taken = b.owned().borrow().get(&partition).cloned().unwrap();
    assert_eq!(taken.log.chain_head().unwrap(), before, "the new owner holds the dead node's appends");

    let refused = log.append(contract::append("c2", contract::ticket(1), 2, &["late"])).await.unwrap_err();
    assert!(matches!(refused, LogError::NotOwner(_)), "{refused:?}");
    assert_eq!(log.head(), before.0);
    taken.log.append(contract::append("c2", contract::ticket(1), 2, &["served"])).await.unwrap();
    assert_eq!(taken.log.head(), before.0 + 1);
    b.stop().await;
}

/// The partition count is the cluster's. Given a cluster of 16 partitions (its log stream
/// records the count when the first node creates it), when a node configured with 8 starts on
/// the same servers, then it is refused as misconfigured, owns nothing, and the stream still
/// records 16; a node configured with 16 joins. Given a log stream created before the count was
/// recorded, the first node records its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_configured_with_another_partition_count_than_its_cluster_is_refused() {
    let server = NatsServer::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let js = jetstream::new(async_nats::connect(server.url()).await.unwrap());
    // A stream as it was created before the count was recorded.
    let legacy = LogStreamConfig::default();
    js.create_stream(legacy.stream_config()).await.unwrap();
    let stream = LogStream::open(js.clone(), legacy).await.unwrap();
    assert_eq!(stream.recorded_partitions().await.unwrap(), None);

    let a = node(&server.url(), "node-a", &dir).await;
    assert_eq!(stream.recorded_partitions().await.unwrap(), Some(16), "the first node records its count");

    let mut eight = config("node-b", &dir);
    eight.partitions = Partitions::new(8).unwrap();
    let refused = start(js.clone(), eight).await.map(|_| ()).unwrap_err();
    let NodeError::Misconfigured(why) = &refused else { panic!("refused as a setup failure: {refused}") };
    assert!(why.contains("16 partitions") && why.contains("configured with 8"), "{why}");
    assert_eq!(stream.recorded_partitions().await.unwrap(), Some(16), "the refused node recorded nothing");
    let nodes = js.get_key_value("TICKETS_NODES").await.unwrap();
    assert!(nodes.get("node-b").await.unwrap().is_none(), "the refused node never said it was live");

    let c = node(&server.url(), "node-c", &dir).await;
    wait_until(&[&a, &c], "half each", |owned| partitioned(owned) && owned.iter().all(|o| o.len() == 8)).await;
    a.stop().await;
    c.stop().await;
}

/// Given a log stream created before the count was recorded that holds an entry of partition
/// 12, when a node configured with 8 partitions starts, then it is refused and records nothing;
/// given a stream recording a count that is none ("abc"), every node is refused, naming it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_is_not_given_a_count_its_entries_or_its_record_contradict() {
    let server = NatsServer::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let js = jetstream::new(async_nats::connect(server.url()).await.unwrap());
    let legacy = LogStreamConfig::default();
    js.create_stream(legacy.stream_config()).await.unwrap();
    js.publish("tickets.log.12", Bytes::from_static(b"an entry")).await.unwrap().await.unwrap();
    let stream = LogStream::open(js.clone(), legacy.clone()).await.unwrap();

    let mut eight = config("node-a", &dir);
    eight.partitions = Partitions::new(8).unwrap();
    let refused = start(js.clone(), eight).await.map(|_| ()).unwrap_err();
    let NodeError::Misconfigured(why) = &refused else { panic!("refused as a setup failure: {refused}") };
    assert!(why.contains("at least 13 partitions") && why.contains("configured with 8"), "{why}");
    assert_eq!(stream.recorded_partitions().await.unwrap(), None, "nothing recorded");

    js.delete_stream(&legacy.name).await.unwrap();
    let mut unreadable = legacy.stream_config();
    unreadable.metadata.insert(PARTITIONS_METADATA.to_owned(), "abc".to_owned());
    js.create_stream(unreadable).await.unwrap();
    let refused = start(js.clone(), config("node-a", &dir)).await.map(|_| ()).unwrap_err();
    let NodeError::Misconfigured(why) = &refused else { panic!("refused as a setup failure: {refused}") };
    assert!(why.contains("\"abc\"") && why.contains("ticketd.partitions=N"), "{why}");
    let stream = LogStream::open(js.clone(), legacy).await.unwrap();
    assert!(stream.recorded_partitions().await.is_err(), "an unreadable count is an error, not none");
}

/// A node's name is one process's. Given node-a running, when a second process starts as
/// node-a, then it is refused as misconfigured (it saw node-a say it was alive again while it
/// waited) and takes nothing; given node-a killed (its word left to expire), a process started
/// as node-a claims the name once the word expired and serves its share; given node-a stopped
/// gracefully, a new process claims the name at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_name_is_one_processs_a_second_one_is_refused_and_a_restart_claims_it() {
    let server = NatsServer::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let js = jetstream::new(async_nats::connect(server.url()).await.unwrap());
    let a = node(&server.url(), "node-a", &dir).await;
    let b = node(&server.url(), "node-b", &dir).await;
    wait_until(&[&a, &b], "half each", |owned| partitioned(owned) && owned.iter().all(|o| o.len() == 8)).await;

    let twin = start(js.clone(), config("node-a", &dir)).await.map(|_| ()).unwrap_err();
    let NodeError::Misconfigured(why) = &twin else { panic!("refused as a setup failure: {twin}") };
    assert!(why.contains("another process is running as node \"node-a\""), "{why}");
    assert_eq!(owned(&a).len(), 8, "the running node-a kept its share");

    a.abort();
    let started = Instant::now();
    let again = node(&server.url(), "node-a", &dir).await;
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "the restart waited for the killed process's word to expire ({:?})",
        started.elapsed()
    );
    wait_until(&[&again, &b], "half each again", |owned| partitioned(owned) && owned.iter().all(|o| o.len() == 8))
        .await;

    again.stop().await;
    let started = Instant::now();
    let third = node(&server.url(), "node-a", &dir).await;
    assert!(started.elapsed() < Duration::from_secs(2), "a gracefully stopped node's name is free at once");
    wait_until(&[&third, &b], "half each once more", |owned| partitioned(owned) && owned.iter().all(|o| o.len() == 8))
        .await;
    third.stop().await;
    b.stop().await;
}

/// Given a running node whose word expired (as if it was paused past the time to live), it says
/// it again at its next round and goes on serving; given a running node whose name another
/// process claimed meanwhile (its word expired, a replacement started), it learns so at its next
/// round, says why, and stops serving every partition.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_name_another_process_claimed_stops_serving() {
    let server = NatsServer::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let js = jetstream::new(async_nats::connect(server.url()).await.unwrap());
    let a = node(&server.url(), "node-a", &dir).await;
    wait_until(&[&a], "all on node-a", |owned| owned[0].len() == 16).await;
    let nodes = js.get_key_value("TICKETS_NODES").await.unwrap();
    let mine = nodes.get("node-a").await.unwrap().unwrap();

    // Expired: said again.
    nodes.purge("node-a").await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while nodes.get("node-a").await.unwrap().as_ref() != Some(&mine) {
        assert!(Instant::now() < deadline, "node-a never said it was alive again");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(owned(&a).len(), 16, "it went on serving");

    // Claimed by another process.
    nodes.purge("node-a").await.unwrap();
    nodes.create("node-a", bytes::Bytes::from_static(b"another-process")).await.unwrap();
    let why = tokio::time::timeout(Duration::from_secs(30), a.replaced())
        .await
        .expect("node-a never learned it was replaced");
    assert!(why.contains("another process now runs as node \"node-a\""), "{why}");
    wait_until(&[&a], "nothing on node-a", |owned| owned[0].is_empty()).await;
    assert_eq!(
        nodes.get("node-a").await.unwrap().as_deref(),
        Some(&b"another-process"[..]),
        "the replaced node left the other process's word alone"
    );
}

/// Given a live nodes' bucket whose words live longer than the leases (created by another
/// configuration), when a node starts, then it is refused as misconfigured, naming both: a
/// restart after a kill would wait for a word that outlives the leases.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_nodes_bucket_kept_otherwise_than_the_leases_is_refused() {
    let server = NatsServer::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let js = jetstream::new(async_nats::connect(server.url()).await.unwrap());
    crate::lease::expiring_bucket(&js, "TICKETS_NODES", "elsewhere", Duration::from_secs(60), 1).await.unwrap();
    let refused = start(js, config("node-a", &dir)).await.map(|_| ()).unwrap_err();
    let NodeError::Misconfigured(why) = &refused else { panic!("refused as a setup failure: {refused}") };
    assert!(why.contains("TICKETS_NODES") && why.contains("60s") && why.contains("3s"), "{why}");
}
