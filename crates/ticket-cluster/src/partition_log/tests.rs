//! A partition's sled logs, fed through the fence, against a real nats-server.

use std::sync::Arc;

use proptest::prelude::*;
use prost::Message as _;
use ticket_log::contract;
use ticket_log_sled::SledConfig;
use ticket_testkit::NatsServer;

use super::*;
use crate::test_support::{log_stream, partition};

fn open(dir: &tempfile::TempDir, replicator: Option<Arc<StreamReplicator>>) -> SledLog {
    let mut config = SledConfig::new(dir.path().join("log"));
    config.replicator = replicator.map(|r| r as Arc<dyn Replicator>);
    SledLog::open(config).unwrap()
}

/// The owner's appends, then a takeover by a node with an empty data directory, then the old
/// owner coming back: at every step the node serving the partition holds exactly what the
/// stream holds (same head, same hash chain), the deposed owner's appends are refused and
/// leave nothing anywhere, and a command retried on the new owner is answered from the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_owner_catches_up_from_the_stream_and_the_old_one_is_fenced() {
    let server = NatsServer::start().unwrap();
    let stream = log_stream(&server.url(), 1).await;
    let p = partition(3);
    let runtime = tokio::runtime::Handle::current();

    // Node a owns the partition and appends (in parts of a few hundred bytes, to publish
    // groups in several parts).
    let a_dir = tempfile::tempdir().unwrap();
    let a_fence = stream.take(p, "node-a").await.unwrap();
    let a_replicator = Arc::new(StreamReplicator::new(a_fence, runtime.clone()).with_max_part_bytes(300));
    let a_log = open(&a_dir, Some(a_replicator.clone()));
    let mut appends = Vec::new();
    for i in 0..10u64 {
        let ticket = contract::ticket(u128::from(i % 2 + 1));
        appends.push(a_log.append(contract::append(&format!("c{i}"), ticket, i / 2 * 2, &["a", "b"])));
    }
    for append in appends {
        append.await.unwrap();
    }
    assert_eq!(a_log.head(), 20);

    // Node b takes it over with an empty data directory and catches up to its takeover.
    let b_dir = tempfile::tempdir().unwrap();
    let b_fence = stream.take(p, "node-b").await.unwrap();
    let b_taken = b_fence.last();
    let b_log = open(&b_dir, Some(Arc::new(StreamReplicator::new(b_fence, runtime.clone()))));
    assert_eq!(catch_up(&b_log, &stream, p, b_taken).await.unwrap(), 20);
    assert_eq!(b_log.chain_head().unwrap(), a_log.chain_head().unwrap());
    assert_eq!(b_log.read_from(1, 100).unwrap(), a_log.read_from(1, 100).unwrap());

    // Node a does not know yet: its next append is refused, and lands nowhere.
    let refused = a_log.append(contract::append("c10", contract::ticket(1), 10, &["x"])).await.unwrap_err();
    assert!(matches!(refused, LogError::NotOwner(_)), "{refused:?}");
    assert_eq!(a_log.head(), 20);
    assert_eq!(stream.last(p).await.unwrap(), b_taken, "nothing of node a after node b's takeover");

    // Node b serves: a retried command is answered from the log, a new one appended.
    assert!(b_log.append(contract::append("c3", contract::ticket(2), 2, &["a"])).await.unwrap().is_duplicate());
    b_log.append(contract::append("c10", contract::ticket(1), 10, &["y"])).await.unwrap();
    assert_eq!(b_log.head(), 21);

    // Node a comes back (its log reopened), takes the partition again and catches up.
    drop(a_log);
    let a_log = open(&a_dir, None);
    let a_again = stream.take(p, "node-a").await.unwrap();
    assert_eq!(catch_up(&a_log, &stream, p, a_again.last()).await.unwrap(), 21);
    assert_eq!(a_log.chain_head().unwrap(), b_log.chain_head().unwrap());
    for log in [&a_log, &b_log] {
        assert_eq!(log.verify_chain(|_, _| {}).unwrap().broken, None);
    }
    // Caught up already: nothing more to do.
    assert_eq!(catch_up(&a_log, &stream, p, a_again.last()).await.unwrap(), 21);
}

fn command(first: u64, last: u64) -> Vec<u8> {
    pb::CommandRecord { first_position: first, last_position: last, ..Default::default() }.encode_to_vec()
}

proptest! {
    /// A group's parts hold its records in order, each part whole commands starting where the
    /// one before ended, and no part over the budget unless it is one command.
    #[test]
    fn a_group_is_published_in_parts_of_whole_commands(
        first in 1u64..1000,
        commands in proptest::collection::vec(proptest::collection::vec(1usize..200, 1..4), 1..20),
        budget in 1usize..800,
    ) {
        let mut group = ReplicaGroup { first_position: first, ..ReplicaGroup::default() };
        let mut position = first;
        for sizes in &commands {
            let start = position;
            for size in sizes {
                group.records.push(vec![position as u8; *size]);
                position += 1;
            }
            group.commands.push(command(start, position - 1));
        }
        let parts = parts(&group, budget);
        let records: Vec<Vec<u8>> = parts.iter().flat_map(|p| p.records.clone()).collect();
        prop_assert_eq!(&records, &group.records);
        let mut next = first;
        for part in &parts {
            prop_assert_eq!(part.first_position, next);
            let mut covered = part.first_position;
            for c in &part.commands {
                let (from, to) = command_span(c).unwrap();
                prop_assert_eq!(from, covered);
                covered = to + 1;
            }
            prop_assert_eq!(covered, part.first_position + part.records.len() as u64);
            let size: usize = part.records.iter().map(Vec::len).sum();
            prop_assert!(size <= budget || part.commands.len() == 1, "a part of {} bytes", size);
            next = covered;
        }
        prop_assert_eq!(parts.iter().map(|p| p.commands.len()).sum::<usize>(), group.commands.len());
    }
}

/// A local log that is not a copy of the partition's (written elsewhere, or ahead of the
/// stream) is refused by the catch-up, never continued.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_log_that_is_not_a_copy_of_the_stream_is_refused() {
    let server = NatsServer::start().unwrap();
    let stream = log_stream(&server.url(), 1).await;
    let p = partition(5);
    let runtime = tokio::runtime::Handle::current();
    let owner_dir = tempfile::tempdir().unwrap();
    let fence = stream.take(p, "node-a").await.unwrap();
    let owner = open(&owner_dir, Some(Arc::new(StreamReplicator::new(fence, runtime))));
    for i in 0..3u64 {
        owner.append(contract::append(&format!("c{i}"), contract::ticket(1), i, &["a"])).await.unwrap();
    }
    let upto = stream.last(p).await.unwrap();

    // Other records at the same positions.
    let other_dir = tempfile::tempdir().unwrap();
    let other = open(&other_dir, None);
    for i in 0..2u64 {
        other.append(contract::append(&format!("x{i}"), contract::ticket(2), i, &["b"])).await.unwrap();
    }
    let refused = catch_up(&other, &stream, p, upto).await.unwrap_err();
    assert!(matches!(refused, CatchUpError::Diverged { local: 2, sequence: Some(_), .. }), "{refused}");
    assert_eq!(other.head(), 2, "nothing was written to it");

    // A log ahead of the stream.
    let ahead_dir = tempfile::tempdir().unwrap();
    let ahead = open(&ahead_dir, None);
    for i in 0..5u64 {
        ahead.append(contract::append(&format!("c{i}"), contract::ticket(1), i, &["a"])).await.unwrap();
    }
    let refused = catch_up(&ahead, &stream, p, upto).await.unwrap_err();
    assert!(matches!(refused, CatchUpError::Diverged { local: 5, sequence: None, .. }), "{refused}");

    // A true copy, behind: caught up.
    let copy_dir = tempfile::tempdir().unwrap();
    let copy = open(&copy_dir, None);
    assert_eq!(catch_up(&copy, &stream, p, upto).await.unwrap(), 3);
    assert_eq!(copy.chain_head().unwrap(), owner.chain_head().unwrap());
}

/// A catch-up started where the last one ended reads only from there; one started past the
/// log's head is refused (the node then starts from the beginning).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_catch_up_goes_on_from_where_the_last_one_ended() {
    let server = NatsServer::start().unwrap();
    let stream = log_stream(&server.url(), 1).await;
    let p = partition(6);
    let owner_dir = tempfile::tempdir().unwrap();
    let fence = stream.take(p, "node-a").await.unwrap();
    let owner = open(&owner_dir, Some(Arc::new(StreamReplicator::new(fence, tokio::runtime::Handle::current()))));
    for i in 0..3u64 {
        owner.append(contract::append(&format!("c{i}"), contract::ticket(1), i, &["a"])).await.unwrap();
    }
    let copy_dir = tempfile::tempdir().unwrap();
    let copy = open(&copy_dir, None);
    let (head, holding) = catch_up_from(&copy, &stream, p, 1, stream.last(p).await.unwrap()).await.unwrap();
    assert_eq!((head, holding), (3, stream.last(p).await.unwrap()));

    for i in 3..6u64 {
        owner.append(contract::append(&format!("c{i}"), contract::ticket(1), i, &["a"])).await.unwrap();
    }
    let upto = stream.last(p).await.unwrap();
    let (head, next) = catch_up_from(&copy, &stream, p, holding, upto).await.unwrap();
    assert_eq!((head, next), (6, upto));
    assert_eq!(copy.chain_head().unwrap(), owner.chain_head().unwrap());

    // Started past the group holding the head: refused, nothing written.
    owner.append(contract::append("c6", contract::ticket(1), 6, &["a"])).await.unwrap();
    let upto = stream.last(p).await.unwrap();
    let refused = catch_up_from(&copy, &stream, p, upto, upto).await.unwrap_err();
    assert!(matches!(refused, CatchUpError::Diverged { local: 6, sequence: None, .. }), "{refused}");
    assert_eq!(copy.head(), 6);
    assert_eq!(catch_up_from(&copy, &stream, p, next, upto).await.unwrap(), (7, upto));
}
