//! The fence against real nats-servers: one server (R1) and a three-server cluster (R3).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ticket_domain::Partition;
use ticket_proto::pb;
use ticket_proto::pb::partition_entry::Kind;
use ticket_testkit::{Cluster, NatsServer};

use super::*;
use crate::test_support::{log_stream, partition};

fn group(first_position: u64) -> pb::PartitionGroup {
    pb::PartitionGroup { first_position, records: vec![first_position.to_be_bytes().to_vec()], ..Default::default() }
}

/// A partition's entries as (sequence, "takeover" or "group", node, first position).
async fn entries(stream: &LogStream, p: Partition) -> Vec<(u64, &'static str, String, u64)> {
    let last = stream.last(p).await.unwrap();
    let mut out = Vec::new();
    stream
        .read(p, 1, last, |sequence, entry| {
            out.push(match entry.kind {
                Some(Kind::Takeover(t)) => (sequence, "takeover", t.node, t.after),
                Some(Kind::Group(g)) => (sequence, "group", g.node, g.first_position),
                None => (sequence, "empty", String::new(), 0),
            });
            Ok(())
        })
        .await
        .unwrap();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_owner_appends_in_order_on_its_partition_only() {
    let server = NatsServer::start().unwrap();
    let stream = log_stream(&server.url(), 1).await;
    let (p3, p4) = (partition(3), partition(4));
    let mut owner = stream.take(p3, "node-a").await.unwrap();
    let taken = owner.last();
    let mut sequences = Vec::new();
    for n in 1..=3 {
        sequences.push(owner.append(group(n)).await.unwrap());
    }
    assert!(sequences.windows(2).all(|w| w[0] < w[1]) && sequences[0] > taken);
    assert_eq!(stream.last(p3).await.unwrap(), sequences[2]);
    assert_eq!(stream.last(p4).await.unwrap(), 0, "another partition is untouched");
    let seen = entries(&stream, p3).await;
    assert_eq!(
        seen,
        vec![
            (taken, "takeover", "node-a".to_owned(), 0),
            (sequences[0], "group", "node-a".to_owned(), 1),
            (sequences[1], "group", "node-a".to_owned(), 2),
            (sequences[2], "group", "node-a".to_owned(), 3),
        ]
    );
    // A read from the middle starts there.
    let mut tail = Vec::new();
    stream
        .read(p3, sequences[1], sequences[2], |s, _| {
            tail.push(s);
            Ok(())
        })
        .await
        .unwrap();
    assert_eq!(tail, sequences[1..].to_vec());
}

/// Given an owner that appended, when another node takes the partition over, then the first
/// owner's appends are refused (it is told it was deposed, and where the partition is now),
/// the new owner's land, and the stream holds nothing of the deposed owner's after the takeover.
async fn a_takeover_fences_the_earlier_owner(stream: &LogStream) {
    let p = partition(0);
    let mut a = stream.take(p, "node-a").await.unwrap();
    a.append(group(1)).await.unwrap();
    let mut b = stream.take(p, "node-b").await.unwrap();
    let taken = b.last();
    let refused = a.append(group(2)).await.unwrap_err();
    assert_eq!(refused, AppendError::Deposed { partition: p, expected: a.last(), found: Some(taken) });
    let landed = b.append(group(2)).await.unwrap();
    // Still refused later, whatever it sends.
    assert!(matches!(a.append(group(3)).await, Err(AppendError::Deposed { .. })));
    let seen: Vec<_> = entries(stream, p).await.into_iter().map(|(_, kind, node, n)| (kind, node, n)).collect();
    assert_eq!(
        seen,
        vec![
            ("takeover", "node-a".to_owned(), 0),
            ("group", "node-a".to_owned(), 1),
            ("takeover", "node-b".to_owned(), a.last()),
            ("group", "node-b".to_owned(), 2),
        ]
    );
    assert_eq!(stream.last(p).await.unwrap(), landed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_takeover_fences_the_earlier_owner_on_one_server() {
    let server = NatsServer::start().unwrap();
    a_takeover_fences_the_earlier_owner(&log_stream(&server.url(), 1).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_takeover_fences_the_earlier_owner_on_three_replicas() {
    let cluster = Cluster::start(3).unwrap();
    cluster.wait_routed(Duration::from_secs(30)).unwrap();
    let stream = log_stream(&cluster.nodes[0].url(), 3).await;
    let mut handle = stream.stream.clone();
    assert_eq!(handle.info().await.unwrap().config.num_replicas, 3);
    a_takeover_fences_the_earlier_owner(&stream).await;
    // Another server reads the same partition.
    let elsewhere = log_stream(&cluster.nodes[2].url(), 3).await;
    assert_eq!(entries(&elsewhere, partition(0)).await.len(), 4);
}

/// Nodes race: each takes the partition over, appends until it is deposed, and takes it again,
/// all at once on several connections. Every append acknowledged is in the stream once, under
/// its node, and no group in the stream comes after another node's takeover (the owner of
/// every group is the node of the takeover before it).
async fn racing_nodes_never_append_after_another_nodes_takeover(urls: Vec<String>, replicas: usize) {
    let p = partition(7);
    let acked: Arc<Mutex<BTreeMap<u64, String>>> = Arc::default();
    let mut tasks = Vec::new();
    for n in 0..4 {
        let url = urls[n % urls.len()].clone();
        let acked = acked.clone();
        tasks.push(tokio::spawn(async move {
            let node = format!("node-{n}");
            let stream = log_stream(&url, replicas).await;
            let mut appended = 0u64;
            for _round in 0..4 {
                // On a busy cluster a read may time out: the node tries again.
                let deadline = Instant::now() + Duration::from_secs(60);
                let mut owner = loop {
                    match stream.take(p, &node).await {
                        Ok(owner) => break owner,
                        Err(e) if Instant::now() < deadline => tracing::debug!(error = %e, "{node}: take again"),
                        Err(e) => panic!("{node}: {e}"),
                    }
                };
                loop {
                    match owner.append(group(appended + 1)).await {
                        Ok(sequence) => {
                            appended += 1;
                            acked.lock().unwrap().insert(sequence, node.clone());
                        }
                        Err(AppendError::Deposed { .. }) => break,
                        Err(e) => panic!("{node}: {e}"),
                    }
                    if appended.is_multiple_of(5) {
                        break;
                    }
                }
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let stream = log_stream(&urls[0], replicas).await;
    let seen = entries(&stream, p).await;
    let mut owner = None;
    let mut groups = BTreeMap::new();
    for (sequence, kind, node, _) in &seen {
        match *kind {
            "takeover" => owner = Some(node.clone()),
            _ => {
                assert_eq!(owner.as_ref(), Some(node), "a group of {node} at {sequence} after another node's takeover");
                groups.insert(*sequence, node.clone());
            }
        }
    }
    assert_eq!(groups, *acked.lock().unwrap(), "the stream holds exactly the acknowledged appends");
    assert!(groups.len() >= 4, "some appends landed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_nodes_never_append_after_another_nodes_takeover_on_one_server() {
    let server = NatsServer::start().unwrap();
    racing_nodes_never_append_after_another_nodes_takeover(vec![server.url()], 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_nodes_never_append_after_another_nodes_takeover_on_three_replicas() {
    let cluster = Cluster::start(3).unwrap();
    cluster.wait_routed(Duration::from_secs(30)).unwrap();
    let urls = cluster.nodes.iter().map(NatsServer::url).collect();
    racing_nodes_never_append_after_another_nodes_takeover(urls, 3).await;
}

/// Given an owner whose server goes away mid-append, the append's outcome is unknown and the
/// fence is poisoned: nothing more is appended until the partition is taken again, and the new
/// takeover goes after whatever the stream holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_append_of_unknown_outcome_poisons_the_fence_until_taken_again() {
    let mut server = NatsServer::start().unwrap();
    let stream = log_stream(&server.url(), 1).await;
    let p = partition(9);
    let mut owner = stream.take(p, "node-a").await.unwrap();
    owner.append(group(1)).await.unwrap();
    server.stop();
    assert!(matches!(owner.append(group(2)).await, Err(AppendError::Unknown { .. })));
    assert_eq!(owner.append(group(2)).await, Err(AppendError::Poisoned { partition: p }));
    server.restart().unwrap();
    // The client reconnects by itself; the takeover is retried until the server answers.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut again = loop {
        match stream.take(p, "node-a").await {
            Ok(fenced) => break fenced,
            Err(e) if Instant::now() < deadline => {
                tracing::debug!(error = %e, "not yet");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("the partition could not be taken again: {e}"),
        }
    };
    // The publish of unknown outcome was kept by the client and sent once it reconnected: it
    // may have landed before the takeover (never after it: it expects an earlier sequence).
    // Either way the new takeover comes after everything the stream holds.
    let retaken = again.last();
    again.append(group(3)).await.unwrap();
    let seen = entries(&stream, p).await;
    let kinds: Vec<_> = seen.iter().map(|(_, kind, _, n)| (*kind, *n)).collect();
    let before = seen.iter().rev().find(|(s, ..)| *s < retaken).map(|(s, ..)| *s).unwrap();
    assert!(
        kinds == [("takeover", 0), ("group", 1), ("takeover", before), ("group", 3)]
            || kinds == [("takeover", 0), ("group", 1), ("group", 2), ("takeover", before), ("group", 3)],
        "{kinds:?}"
    );
}

#[test]
fn the_found_sequence_is_read_from_the_servers_description() {
    assert_eq!(found_sequence("wrong last sequence: 42 (code 400, error code 10071)"), Some(42));
    assert_eq!(found_sequence("wrong last sequence (code 400, error code 10164)"), None);
    assert_eq!(found_sequence("stream not found"), None);
}

/// Given an owner paused before its next append, when a process under the same node name (a
/// replacement started while the first was thought dead) takes the partition over directly
/// after the same entry, then the first process's append is refused when it resumes. The two
/// processes' publishes never share a publish id: on a replicated stream the server checks the
/// id before the fence, and would answer the paused append as a duplicate of the takeover,
/// "stored" at the takeover's sequence.
async fn a_replacement_under_the_same_node_name_fences_the_paused_process(url: &str, replicas: usize) {
    let (first, replacement) = (log_stream(url, replicas).await, log_stream(url, replicas).await);
    let p = partition(5);
    let mut paused = first.take(p, "node-a").await.unwrap();
    let mut again = replacement.take(p, "node-a").await.unwrap();
    let (taken, retaken) = (paused.last(), again.last());
    assert!(retaken > taken, "the replacement took over after the paused one's takeover");
    let refused = paused.append(group(1)).await;
    assert_eq!(refused, Err(AppendError::Deposed { partition: p, expected: taken, found: Some(retaken) }));
    let landed = again.append(group(1)).await.unwrap();
    let seen: Vec<_> = entries(&replacement, p).await.into_iter().map(|(s, kind, _, _)| (s, kind)).collect();
    assert_eq!(seen, vec![(taken, "takeover"), (retaken, "takeover"), (landed, "group")]);
    // And it stays refused.
    assert!(matches!(paused.append(group(2)).await, Err(AppendError::Deposed { .. })));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replacement_under_the_same_node_name_fences_the_paused_process_on_one_server() {
    let server = NatsServer::start().unwrap();
    a_replacement_under_the_same_node_name_fences_the_paused_process(&server.url(), 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replacement_under_the_same_node_name_fences_the_paused_process_on_three_replicas() {
    let cluster = Cluster::start(3).unwrap();
    cluster.wait_routed(Duration::from_secs(30)).unwrap();
    a_replacement_under_the_same_node_name_fences_the_paused_process(&cluster.nodes[0].url(), 3).await;
}
