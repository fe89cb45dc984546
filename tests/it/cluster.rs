//! The cluster's fence with real processes (issue 14, ADR 0015): a node paused past its leases
//! (SIGSTOP) while another takes its partitions over cannot append once it resumes.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream;
use prost::Message as _;
use ticket_cluster::{LogStream, LogStreamConfig, NodeConfig};
use ticket_domain::{CommandId, Partitions};
use ticket_log::EventLog;
use ticket_proto::pb::partition_entry::Kind;
use ticket_testkit::NatsServer;

use crate::policy_path;

/// A node process and the lines it printed.
struct NodeProcess {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl NodeProcess {
    fn start(url: &str, name: &str, dir: &std::path::Path) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_it-cluster-node"))
            .arg(url)
            .arg(name)
            .arg(dir)
            .arg(policy_path("regional-operator.toml"))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let lines: Arc<Mutex<Vec<String>>> = Arc::default();
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        Self { child, lines }
    }

    fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill").arg(signal).arg(self.child.id().to_string()).status().unwrap();
        assert!(status.success(), "kill {signal}");
    }

    /// (partition, command id) of every `ACK` line.
    fn acks(&self) -> BTreeSet<(String, String)> {
        self.words("ACK")
    }

    fn refused(&self) -> usize {
        self.words("REFUSED").len()
    }

    fn words(&self, kind: &str) -> BTreeSet<(String, String)> {
        self.lines()
            .iter()
            .filter_map(|l| {
                let mut words = l.split(' ');
                (words.next() == Some(kind))
                    .then(|| (words.next().unwrap().to_owned(), words.next().unwrap().to_owned()))
            })
            .collect()
    }

    fn owns(&self) -> Option<usize> {
        self.lines().iter().rev().find_map(|l| l.strip_prefix("OWNS ").and_then(|n| n.parse().ok()))
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(90);
    while !done() {
        assert!(Instant::now() < deadline, "{what}: not within the deadline");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Node b, in this process, with short leases.
async fn node_b(js: &jetstream::Context, dir: &std::path::Path) -> ticket_cluster::NodeHandle {
    let mut config = NodeConfig::new("node-b", dir.join("b"), Partitions::new(16).unwrap());
    config.leases.ttl = Duration::from_secs(2);
    config.renew_every = Duration::from_millis(200);
    ticket_cluster::node::start(js.clone(), config).await.unwrap()
}

/// Every command id in the groups of the stream, with how many times it is there; and in each
/// partition no group of a node after another node's takeover. Read again while the stream does
/// not answer (its leader being elected after a server was lost), for up to a minute.
pub(crate) async fn commands_in_the_stream(js: &jetstream::Context, partitions: u64) -> BTreeMap<String, usize> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match read_commands(js, partitions).await {
            Ok(commands) => return commands,
            Err(e) => assert!(Instant::now() < deadline, "the log stream could not be read: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn read_commands(
    js: &jetstream::Context,
    partitions: u64,
) -> Result<BTreeMap<String, usize>, ticket_cluster::StreamError> {
    let stream = LogStream::ensure(js.clone(), LogStreamConfig::default()).await?;
    let mut commands: BTreeMap<String, usize> = BTreeMap::new();
    for partition in Partitions::new(partitions).unwrap().all() {
        let last = stream.last(partition).await?;
        let mut owner = String::new();
        let mut misplaced = Vec::new();
        stream
            .read(partition, 1, last, |sequence, entry| {
                match entry.kind {
                    Some(Kind::Takeover(t)) => owner = t.node,
                    Some(Kind::Group(g)) => {
                        if g.node != owner {
                            misplaced.push((sequence, g.node.clone()));
                        }
                        for bytes in &g.commands {
                            let record = ticket_proto::pb::CommandRecord::decode(bytes.as_slice()).unwrap();
                            *commands.entry(record.command.unwrap().command_id).or_default() += 1;
                        }
                    }
                    None => {}
                }
                Ok(())
            })
            .await?;
        assert!(
            misplaced.is_empty(),
            "partition {partition}: groups of a node after another's takeover: {misplaced:?}"
        );
    }
    Ok(commands)
}

/// Node b's logs hold every command of `acked` in the partitions it owns, and their chains verify.
fn b_holds(b: &ticket_cluster::NodeHandle, acked: &BTreeSet<(String, String)>) {
    for (partition, owned) in b.owned().borrow().iter() {
        assert_eq!(owned.log.verify_chain(|_, _| {}).unwrap().broken, None);
        for (_, id) in acked.iter().filter(|(p, _)| *p == partition.to_string()) {
            assert!(owned.log.command(&CommandId::new(id.clone()).unwrap()).unwrap().is_some(), "{id} in node b's log");
        }
    }
}

/// Given node a (a process) owning every partition and acknowledging commands, when it is
/// paused past its leases and node b takes every partition over, then when a resumes each of
/// its writers is refused; the stream has, in every partition, no group of a node after another
/// node's takeover, every command a acknowledged exactly once, none it was refused as deposed
/// (one whose outcome it could not know at most once); and b's logs hold what the stream holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_owner_cannot_append_once_its_partitions_were_taken_over() {
    let server = NatsServer::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let a = NodeProcess::start(&server.url(), "node-a", &dir.path().join("a"));
    wait_for("node a owning every partition and acknowledging", || a.owns() == Some(16) && a.acks().len() >= 100).await;

    a.signal("-STOP");
    let js = jetstream::new(async_nats::connect(server.url()).await.unwrap());
    let b = node_b(&js, dir.path()).await;
    let owned = b.owned();
    wait_for("node b owning every partition", || owned.borrow().len() == 16).await;

    a.signal("-CONT");
    wait_for("node a refused on every partition it wrote to before the pause", || a.refused() >= 16).await;
    a.signal("-KILL");

    let commands = commands_in_the_stream(&js, 16).await;
    let acked = a.acks();
    for (partition, id) in &acked {
        assert_eq!(commands.get(id), Some(&1), "acknowledged command {id} of partition {partition}");
    }
    refused_as_the_stream_says(&a, &commands);
    // Node b's logs hold what the stream holds for the partitions it owns (node a may have
    // taken some back once it resumed and the two rebalanced).
    b_holds(&b, &acked);
    b.stop().await;
}

/// A command refused because the node was deposed is not in the stream. One whose publish had no
/// answer (paused past its acknowledgement's timeout) may be: its client was told the outcome is
/// unknown and to retry with the same id, which the new owner answers from the log.
fn refused_as_the_stream_says(node: &NodeProcess, commands: &BTreeMap<String, usize>) {
    for line in node.lines().iter().filter(|l| l.starts_with("REFUSED ")) {
        let id = line.split(' ').nth(2).unwrap();
        let count = commands.get(id).copied().unwrap_or(0);
        if line.contains("deposed") {
            assert_eq!(count, 0, "a command refused as deposed is not in the stream: {line}");
        } else {
            assert!(line.contains("outcome is unknown") && count <= 1, "{line}: {count} times in the stream");
        }
    }
}

/// Given node a (a process) owning every partition and acknowledging commands, when it is paused
/// past its leases and a second process starts as node-a (a replacement, on a data directory of
/// its own), then the replacement waits the paused one's word out, takes every partition over
/// and acknowledges commands; when the first resumes, it is refused on every partition it wrote
/// to, learns that another process runs under its name, and gives everything up, leaving the
/// replacement serving. Every command either acknowledged is in the stream exactly once, none
/// refused as deposed is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_owner_replaced_under_its_own_name_gives_everything_up_and_loses_nothing() {
    let server = NatsServer::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let first = NodeProcess::start(&server.url(), "node-a", &dir.path().join("first"));
    wait_for("the first node-a owning every partition and acknowledging", || {
        first.owns() == Some(16) && first.acks().len() >= 100
    })
    .await;

    first.signal("-STOP");
    let replacement = NodeProcess::start(&server.url(), "node-a", &dir.path().join("replacement"));
    wait_for("the replacement owning every partition and acknowledging", || {
        replacement.owns() == Some(16) && replacement.acks().len() >= 100
    })
    .await;

    first.signal("-CONT");
    wait_for("the first node-a refused on every partition, replaced, owning nothing", || {
        first.refused() >= 16 && first.lines().iter().any(|l| l.starts_with("REPLACED ")) && first.owns() == Some(0)
    })
    .await;
    let acked_before = replacement.acks().len();
    wait_for("the replacement still acknowledging", || replacement.acks().len() >= acked_before + 50).await;
    first.signal("-KILL");
    replacement.signal("-KILL");

    assert_eq!(replacement.owns(), Some(16), "the replacement kept every partition");
    assert!(!replacement.lines().iter().any(|l| l.starts_with("REPLACED ")), "the replacement was never replaced");
    let js = jetstream::new(async_nats::connect(server.url()).await.unwrap());
    let commands = commands_in_the_stream(&js, 16).await;
    for (partition, id) in first.acks().iter().chain(replacement.acks().iter()) {
        assert_eq!(commands.get(id), Some(&1), "acknowledged command {id} of partition {partition}");
    }
    refused_as_the_stream_says(&first, &commands);
}

/// Given node a (a process) owning every partition under a load of commands, when it is killed
/// (SIGKILL) and node b starts, then b takes every partition over once a's leases expire; and
/// over several rounds of that (b stopping gracefully, a started again on its data directory,
/// caught up from where it was, and killed again), every command a acknowledged is in the
/// stream exactly once and in b's logs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_owners_acknowledged_commands_are_all_served_by_the_next_owner() {
    let server = NatsServer::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let js = jetstream::new(async_nats::connect(server.url()).await.unwrap());
    let mut acked = BTreeSet::new();
    for round in 0..3 {
        let a = NodeProcess::start(&server.url(), "node-a", &dir.path().join("a"));
        wait_for("node a owning every partition and acknowledging", || a.owns() == Some(16) && a.acks().len() >= 100)
            .await;
        a.signal("-KILL");
        let these = a.acks();
        assert!(acked.is_disjoint(&these), "round {round}: command ids are fresh");
        acked.extend(these);

        let b = node_b(&js, dir.path()).await;
        let owned = b.owned();
        wait_for("node b owning every partition", || owned.borrow().len() == 16).await;
        let commands = commands_in_the_stream(&js, 16).await;
        for (partition, id) in &acked {
            assert_eq!(commands.get(id), Some(&1), "round {round}: acknowledged command {id} of partition {partition}");
        }
        b_holds(&b, &acked);
        b.stop().await;
    }
}
