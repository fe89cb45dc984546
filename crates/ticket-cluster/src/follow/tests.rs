//! A node's copies of every partition, followed from a real nats-server's log stream.

use std::sync::Arc;
use std::time::Duration;

use ticket_log::{EventLog, Replicator, contract};
use ticket_log_sled::{SledConfig, SledLog};
use ticket_testkit::NatsServer;

use super::*;
use crate::partition_log::StreamReplicator;
use crate::test_support::{log_stream, partition};

/// An owner of `p`: its log appends through the fence.
async fn owner(stream: &LogStream, p: Partition, node: &str, dir: &tempfile::TempDir) -> SledLog {
    let fenced = stream.take(p, node).await.unwrap();
    let replicator: Arc<dyn Replicator> = Arc::new(StreamReplicator::new(fenced, tokio::runtime::Handle::current()));
    let mut config = SledConfig::new(dir.path().join("log"));
    config.replicator = Some(replicator);
    SledLog::open(config).unwrap()
}

async fn append(log: &SledLog, from: u64, count: u64, ticket: u128) {
    for i in from..from + count {
        log.append(contract::append(&format!("c{ticket}-{i}"), contract::ticket(ticket), i, &["e"])).await.unwrap();
    }
}

/// Waits until every copy in `followers` has the chain head of its owner's log in `owners`, and
/// the follower has recorded that it reached the stream's last entry of the partition (its
/// state is set after the copy's head moves).
async fn until_copies_match(followers: &Followers, owners: &[(Partition, &SledLog)]) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let mut matching =
            owners.iter().all(|(p, log)| followers.logs()[p].chain_head().unwrap() == log.chain_head().unwrap());
        for (p, _) in owners {
            let last = followers.copies().stream.last(*p).await.unwrap();
            matching &= followers.copies().state(*p).reached == last;
        }
        if matching {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "the copies did not reach the owners' heads");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Given two partitions with history in the stream, when a node with an empty directory
/// follows them, then its copies catch up, follow new appends (across a change of owner), pick
/// up after a restart from where they stood, and a copy that is not the stream's is deleted
/// with what was built beside it and rebuilt; partitions without entries stay empty.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_follows_every_partition_from_the_stream() {
    let server = NatsServer::start().unwrap();
    let stream = log_stream(&server.url(), 1).await;
    let partitions = Partitions::new(16).unwrap();
    let (p1, p2) = (partition(1), partition(2));
    let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = owner(&stream, p1, "node-a", &a_dir).await;
    let b = owner(&stream, p2, "node-b", &b_dir).await;
    append(&a, 0, 30, 1).await;
    append(&b, 0, 5, 2).await;

    let root = tempfile::tempdir().unwrap();
    let config =
        FollowConfig { remember_every: Duration::from_millis(50), ..FollowConfig::new(root.path(), partitions) };
    let followers = Followers::start(stream.clone(), config.clone()).await.unwrap();
    assert_eq!(followers.logs().len(), 16);
    until_copies_match(&followers, &[(p1, &a), (p2, &b)]).await;

    // New appends are followed; so are those of a new owner of p1 after a takeover.
    append(&a, 30, 10, 1).await;
    drop(a);
    let a2_dir = tempfile::tempdir().unwrap();
    let a2 = owner(&stream, p1, "node-c", &a2_dir).await;
    crate::partition_log::catch_up(&a2, &stream, p1, stream.last(p1).await.unwrap()).await.unwrap();
    append(&a2, 40, 7, 1).await;
    append(&b, 5, 3, 2).await;
    until_copies_match(&followers, &[(p1, &a2), (p2, &b)]).await;
    assert_eq!(followers.logs()[&p1].head(), 47);
    for p in [p1, p2, partition(3)] {
        followers.copies().current(p).await.unwrap();
        assert_eq!(followers.copies().state(p).broken, None);
    }
    assert_eq!(followers.copies().state(p1).reached, stream.last(p1).await.unwrap());
    assert_eq!(followers.logs()[&partition(3)].head(), 0);
    followers.stop().await;

    // Restarted: caught up from where each copy stood.
    append(&b, 8, 4, 2).await;
    let followers = Followers::start(stream.clone(), config.clone()).await.unwrap();
    until_copies_match(&followers, &[(p1, &a2), (p2, &b)]).await;
    assert_eq!(followers.logs()[&p2].read_from(1, 100).unwrap(), b.read_from(1, 100).unwrap());
    followers.stop().await;

    // A copy of p2 that is not the stream's (another log's history in its place): deleted,
    // with what was built beside it, and rebuilt from the stream.
    let p2_dir = config.dir(p2);
    std::fs::remove_dir_all(&p2_dir).unwrap();
    {
        let foreign = SledLog::open(SledConfig::new(p2_dir.join("log"))).unwrap();
        append(&foreign, 0, 3, 9).await;
    }
    std::fs::write(p2_dir.join("built-from-it"), b"stale").unwrap();
    let followers = Followers::start(stream.clone(), config.clone()).await.unwrap();
    until_copies_match(&followers, &[(p1, &a2), (p2, &b)]).await;
    assert!(!p2_dir.join("built-from-it").exists(), "what was built from the foreign copy is deleted");
    assert_eq!(followers.logs()[&p2].verify_chain(|_, _| {}).unwrap().broken, None);
    followers.stop().await;

    // A copy that does not even open (its files damaged, or half deleted by a crash): discarded
    // and rebuilt; a discarded copy a crash left is deleted.
    let p1_dir = config.dir(p1);
    std::fs::remove_dir_all(p1_dir.join("log")).unwrap();
    std::fs::create_dir_all(p1_dir.join("log")).unwrap();
    std::fs::write(p1_dir.join("log").join("conf"), b"not sled's").unwrap();
    std::fs::write(p1_dir.join("log").join("db"), vec![0xA5; 4096]).unwrap();
    std::fs::write(p1_dir.join("built-from-it"), b"stale").unwrap();
    let leftover = root.path().join("5.discarded");
    std::fs::create_dir_all(leftover.join("log")).unwrap();
    let followers = Followers::start(stream.clone(), config.clone()).await.unwrap();
    until_copies_match(&followers, &[(p1, &a2), (p2, &b)]).await;
    assert!(!leftover.exists(), "a discarded copy is deleted at start");
    assert!(!p1_dir.join("built-from-it").exists(), "the copy that did not open was discarded");
    followers.stop().await;
}

/// Given a follower that gathers entries for 200 ms before writing them, when two owners append
/// concurrently (many small groups interleaved in the stream) and one of them is taken over
/// part way, then each copy ends with its owner's chain head and a chain that verifies: the
/// groups gathered in a round are written in their order, whatever the interleaving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lingering_follower_writes_interleaved_groups_in_order() {
    let server = NatsServer::start().unwrap();
    let stream = log_stream(&server.url(), 1).await;
    let partitions = Partitions::new(16).unwrap();
    let (p1, p2) = (partition(1), partition(2));
    let root = tempfile::tempdir().unwrap();
    let config = FollowConfig { linger: Duration::from_millis(200), ..FollowConfig::new(root.path(), partitions) };
    let followers = Followers::start(stream.clone(), config).await.unwrap();

    let (a_dir, b_dir, c_dir) =
        (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = owner(&stream, p1, "node-a", &a_dir).await;
    let b = owner(&stream, p2, "node-b", &b_dir).await;
    // Waves of 40 concurrent opens, each of a ticket of its own: many small groups.
    let concurrently = |log: SledLog, base: u128| async move {
        let appends =
            (0..40u128).map(|i| {
                let log = log.clone();
                async move {
                    log.append(contract::append(&format!("c{base}-{i}"), contract::ticket(base + i), 0, &["e"])).await
                }
            });
        for outcome in futures::future::join_all(appends).await {
            outcome.unwrap();
        }
    };
    for wave in 0..3u128 {
        tokio::join!(concurrently(a.clone(), 1_000 + wave * 100), concurrently(b.clone(), 2_000 + wave * 100));
    }
    drop(a);
    let c = owner(&stream, p1, "node-c", &c_dir).await;
    crate::partition_log::catch_up(&c, &stream, p1, stream.last(p1).await.unwrap()).await.unwrap();
    for wave in 0..3u128 {
        tokio::join!(concurrently(c.clone(), 3_000 + wave * 100), concurrently(b.clone(), 4_000 + wave * 100));
    }
    assert_eq!(c.head(), 240, "every open of p1 was appended, across the takeover");
    assert_eq!(b.head(), 240);

    until_copies_match(&followers, &[(p1, &c), (p2, &b)]).await;
    for p in [p1, p2] {
        assert_eq!(followers.logs()[&p].verify_chain(|_, _| {}).unwrap().broken, None);
        assert_eq!(followers.copies().state(p).reached, stream.last(p).await.unwrap());
    }
    followers.stop().await;
}
