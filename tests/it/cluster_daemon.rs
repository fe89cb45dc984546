//! ticketd as a cluster (issue 14, ADR 0015): three `ticketd serve --cluster-node` processes on a
//! three-server NATS cluster, clients that know nothing of partitions sending to any of them.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream;
use futures::StreamExt;
use prost::Message as _;
use ticket_domain::testing::{agent, open, text, utc};
use ticket_domain::{CommandBody, CommandId, Partitions, Severity, TicketId};
use ticket_proto::pb;
use ticket_testkit::Cluster;

use crate::daemon::{Daemon, spawn_serve, spawn_serve_with};

const PARTITIONS: u64 = 8;

/// A node's settings: 8 partitions, R3, 3 s leases.
fn node_config(dir: &Path) -> std::path::PathBuf {
    let file = dir.join("cluster.toml");
    std::fs::write(
        &file,
        "[cluster]\npartitions = 8\nreplicas = 3\nlease_ttl_secs = 3\nforward_timeout_ms = 3000\n\
         [stream]\nreplicas = 3\n[shutdown]\ndeadline_secs = 5\n",
    )
    .unwrap();
    file
}

fn start_node(urls: &str, name: &str, root: &Path) -> Daemon {
    let data = root.join(name);
    std::fs::create_dir_all(&data).unwrap();
    let config = node_config(root);
    let mut daemon = spawn_serve(urls, &["--config", config.to_str().unwrap(), "--cluster-node", name], &data);
    daemon.wait_for("ticketd ready (cluster node)", Duration::from_secs(60));
    daemon
}

/// A wire command: `body` on `ticket`, its id `id`, the service's instant and actor.
fn wire(ticket: TicketId, id: &str, body: CommandBody) -> pb::Command {
    let mut command = agent(utc(2026, 12, 1, 0, 0), body);
    command.ticket_id = ticket;
    command.id = CommandId::new(id).unwrap();
    let mut wire = pb::Command::from(&command);
    wire.issued_at = None;
    wire
}

/// What a command's sender saw.
#[derive(Debug, Clone, PartialEq)]
enum Outcome {
    /// `written`: the ticket's partition and the position of the command's last event in it.
    Accepted {
        events: Vec<String>,
        duplicate: bool,
        written: (u32, u64),
    },
    Refused(i32, String),
}

/// `UNAVAILABLE` answers seen, over every client.
static UNAVAILABLE: AtomicUsize = AtomicUsize::new(0);

/// Sends `command` to `tickets.cmd.<name>` on `client`, again (the same bytes) while it gets
/// `UNAVAILABLE` or no answer, for up to a minute.
async fn send(client: &async_nats::Client, command: &pb::Command) -> Outcome {
    send_counting(client, command, &AtomicUsize::new(0)).await
}

/// [`send`], counting the `UNAVAILABLE` answers in `unavailable` too.
async fn send_counting(client: &async_nats::Client, command: &pb::Command, unavailable: &AtomicUsize) -> Outcome {
    let name = ticket_proto::CommandEndpoint::of_wire(command.body.as_ref().unwrap()).subject();
    let bytes: prost::bytes::Bytes = command.encode_to_vec().into();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let answer = tokio::time::timeout(Duration::from_secs(5), client.request(name.clone(), bytes.clone())).await;
        if let Ok(Ok(message)) = answer {
            let reply = pb::CommandReply::decode(message.payload).unwrap();
            match reply.result.unwrap() {
                pb::command_reply::Result::Accepted(a) => {
                    let events = a.events.iter().map(|e| e.event_id.clone()).collect();
                    let partition = a.partition.expect("a cluster's command reply names its partition");
                    let position = a.events.last().map_or(0, |e| e.position);
                    return Outcome::Accepted { events, duplicate: a.duplicate, written: (partition, position) };
                }
                pb::command_reply::Result::Error(e) if e.code == pb::ErrorCode::Unavailable as i32 => {
                    assert!(e.details.contains_key("partition") && e.details.contains_key("retry_after_ms"), "{e:?}");
                    UNAVAILABLE.fetch_add(1, Ordering::Relaxed);
                    if unavailable.fetch_add(1, Ordering::Relaxed) < 3 {
                        eprintln!("{} {}: UNAVAILABLE: {}", name, command.command_id, e.message);
                    }
                }
                pb::command_reply::Result::Error(e) => return Outcome::Refused(e.code, e.message),
            }
        }
        assert!(Instant::now() < deadline, "{name} {}: no answer but UNAVAILABLE for a minute", command.command_id);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Every message of the TICKETS stream: (event id, ticket, version), in stream order.
async fn public_events(js: &jetstream::Context) -> Vec<(String, String, u64)> {
    // Right after a server was lost, the streams' leaders may still be being elected.
    let deadline = Instant::now() + Duration::from_secs(60);
    let (stream, count) = loop {
        let info = async {
            let stream = js.get_stream("TICKETS").await.ok()?;
            let count = stream.get_info().await.ok()?.state.messages;
            Some((stream, count))
        };
        if let Some(found) = info.await {
            break found;
        }
        assert!(Instant::now() < deadline, "the TICKETS stream did not answer within a minute");
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let consumer = stream.create_consumer(jetstream::consumer::pull::OrderedConfig::default()).await.unwrap();
    let mut messages = consumer.messages().await.unwrap();
    let mut seen = Vec::new();
    while (seen.len() as u64) < count {
        let message = tokio::time::timeout(Duration::from_secs(10), messages.next()).await.unwrap().unwrap().unwrap();
        let envelope = pb::EventEnvelope::decode(message.payload.clone()).unwrap();
        seen.push((envelope.event_id, envelope.ticket_id, envelope.version));
    }
    seen
}

/// Three ticketd nodes on the NATS cluster `nats`, each given every server's URL; and a client
/// of each server.
async fn three_nodes(nats: &Cluster, root: &Path) -> ([Daemon; 3], Vec<async_nats::Client>) {
    nats.wait_routed(Duration::from_secs(30)).unwrap();
    let all = nats.urls();
    let nodes = ["node-a", "node-b", "node-c"].map(|name| start_node(&all, name, root));
    let mut clients = Vec::new();
    for node in &nats.nodes {
        // Its own server first, the others to reconnect to.
        let mut servers: Vec<async_nats::ServerAddr> = vec![node.url().parse().unwrap()];
        servers.extend(nats.nodes.iter().map(|n| n.url().parse::<async_nats::ServerAddr>().unwrap()));
        let options = async_nats::ConnectOptions::new().retain_servers_order();
        clients.push(options.connect(servers).await.unwrap());
    }
    (nodes, clients)
}

/// Every partition answers, whichever node is asked.
async fn every_partition_answers(clients: &[async_nats::Client]) {
    let partitions = Partitions::new(PARTITIONS).unwrap();
    for partition in partitions.all() {
        let ticket = partitions.place(uuid::Uuid::now_v7(), partition).unwrap();
        let opened = send(
            &clients[partition.index() as usize % clients.len()],
            &wire(ticket, &format!("warm-{partition}-{ticket}"), open("advanced", "technical", Severity::B)),
        )
        .await;
        assert!(matches!(opened, Outcome::Accepted { duplicate: false, .. }), "partition {partition}: {opened:?}");
    }
}

/// Clients opening tickets and answering them, on every partition, each command sent until it
/// is answered (again while `UNAVAILABLE`).
struct Load {
    acked: Arc<Mutex<BTreeMap<String, Outcome>>>,
    /// The `UNAVAILABLE` answers this load's commands got.
    unavailable: Arc<AtomicUsize>,
    stop: tokio::sync::watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<Vec<pb::Command>>>,
}

impl Load {
    fn start(clients: &[async_nats::Client]) -> Self {
        let acked: Arc<Mutex<BTreeMap<String, Outcome>>> = Arc::default();
        let unavailable: Arc<AtomicUsize> = Arc::default();
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let mut tasks = Vec::new();
        for (n, client) in clients.iter().enumerate() {
            let (client, acked, stopped) = (client.clone(), acked.clone(), stopped.clone());
            let unavailable = unavailable.clone();
            tasks.push(tokio::spawn(async move {
                let mut sent = Vec::new();
                for i in 0.. {
                    if *stopped.borrow() {
                        break;
                    }
                    let ticket = TicketId::from_uuid(uuid::Uuid::now_v7());
                    let commands = [
                        wire(ticket, &format!("open-{n}-{ticket}"), open("advanced", "technical", Severity::A)),
                        wire(
                            ticket,
                            &format!("respond-{n}-{i}-{ticket}"),
                            CommandBody::RecordAgentResponse { message: text("on it") },
                        ),
                    ];
                    for command in commands {
                        let outcome = send_counting(&client, &command, &unavailable).await;
                        assert!(matches!(outcome, Outcome::Accepted { .. }), "{}: {outcome:?}", command.command_id);
                        acked.lock().unwrap().insert(command.command_id.clone(), outcome);
                        sent.push(command);
                    }
                }
                sent
            }));
        }
        Self { acked, unavailable, stop, tasks }
    }

    fn count(&self) -> usize {
        self.acked.lock().unwrap().len()
    }

    /// Waits, up to two minutes, until `n` commands are acknowledged.
    async fn until(&self, what: &str, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(120);
        while self.count() < n {
            assert!(Instant::now() < deadline, "{what}: {} of {n} acknowledged", self.count());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops the clients; what they sent, and the first answer to each.
    async fn finish(self) -> (Vec<pb::Command>, BTreeMap<String, Outcome>) {
        self.stop.send_replace(true);
        let mut sent = Vec::new();
        for task in self.tasks {
            sent.extend(task.await.unwrap());
        }
        let acked = self.acked.lock().unwrap().clone();
        (sent, acked)
    }
}

/// Every command sent again gets its original events; the log stream holds every acknowledged
/// command exactly once (and no group of a node after another's takeover); the public stream
/// holds every acknowledged event exactly once, in order per ticket.
async fn nothing_lost_or_decided_twice(
    clients: &[async_nats::Client],
    sent: &[pb::Command],
    acked: &BTreeMap<String, Outcome>,
) {
    for command in sent {
        let again = send(&clients[0], command).await;
        let Outcome::Accepted { events, written, .. } = &acked[&command.command_id] else { unreachable!() };
        let expected = Outcome::Accepted { events: events.clone(), duplicate: true, written: *written };
        assert_eq!(again, expected, "{}", command.command_id);
    }

    let js = jetstream::new(clients[clients.len() - 1].clone());
    let in_stream = crate::cluster::commands_in_the_stream(&js, PARTITIONS).await;
    for id in acked.keys() {
        assert_eq!(in_stream.get(id), Some(&1), "acknowledged command {id} in the log stream");
    }

    let expected: BTreeSet<String> = acked
        .values()
        .flat_map(|o| match o {
            Outcome::Accepted { events, .. } => events.clone(),
            Outcome::Refused(..) => Vec::new(),
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    let seen = loop {
        let seen = public_events(&js).await;
        let ids: BTreeSet<&String> = seen.iter().map(|(id, _, _)| id).collect();
        let missing = expected.iter().filter(|id| !ids.contains(id)).count();
        if missing == 0 {
            break seen;
        }
        assert!(Instant::now() < deadline, "the public stream lacks {missing} acknowledged events");
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let mut times: BTreeMap<&str, usize> = BTreeMap::new();
    let mut versions: BTreeMap<&str, u64> = BTreeMap::new();
    for (id, ticket, version) in &seen {
        *times.entry(id).or_default() += 1;
        let last = versions.insert(ticket, *version).unwrap_or(0);
        assert!(*version > last, "ticket {ticket}: version {version} after {last} in the public stream");
    }
    let twice: Vec<_> = times.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "events in the public stream more than once: {twice:?}");
}

/// The partitions' logs in a node's data directory: (partition, its log's chain head), each
/// chain verified.
fn chain_heads(data: &Path) -> BTreeMap<u64, (u64, [u8; 32])> {
    let mut heads = BTreeMap::new();
    for entry in std::fs::read_dir(data.join("partitions")).unwrap() {
        let dir = entry.unwrap().path();
        let partition: u64 = dir.file_name().unwrap().to_str().unwrap().parse().unwrap();
        let log = ticket_log_sled::SledLog::open(ticket_log_sled::SledConfig::new(dir.join("log"))).unwrap();
        assert_eq!(log.verify_chain(|_, _| {}).unwrap().broken, None, "partition {partition} of {}", data.display());
        heads.insert(partition, log.chain_head().unwrap());
    }
    heads
}

/// Each partition's chain head, from a log rebuilt from the stream alone.
async fn stream_chain_heads(js: &jetstream::Context) -> BTreeMap<u64, (u64, [u8; 32])> {
    let stream =
        ticket_cluster::LogStream::ensure(js.clone(), ticket_cluster::LogStreamConfig::default()).await.unwrap();
    let mut heads = BTreeMap::new();
    for partition in Partitions::new(PARTITIONS).unwrap().all() {
        let dir = tempfile::tempdir().unwrap();
        let log = ticket_log_sled::SledLog::open(ticket_log_sled::SledConfig::new(dir.path().join("log"))).unwrap();
        let last = stream.last(partition).await.unwrap();
        ticket_cluster::catch_up(&log, &stream, partition, last).await.unwrap();
        heads.insert(u64::from(partition.index()), log.chain_head().unwrap());
    }
    heads
}

/// `ticketctl cluster status --json` against the server at `url`.
/// None while it fails (right after a server was lost, the node asked may not answer in time).
fn cluster_status(url: &str) -> Option<serde_json::Value> {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_it-ticketctl"))
        .args(["--nats-url", url, "cluster", "status", "--json"])
        .output()
        .unwrap();
    if !output.status.success() {
        eprintln!("ticketctl cluster status: {}", String::from_utf8_lossy(&output.stderr));
        return None;
    }
    Some(serde_json::from_slice(&output.stdout).unwrap())
}

/// Given three ticketd nodes sharing 8 partitions on three NATS servers (R3), and a client on
/// each server sending commands on tickets of every partition, when node a is killed (SIGKILL)
/// under that load, then every command is answered (the others take its partitions over;
/// meanwhile a command about them waits for the new owner, or gets `UNAVAILABLE` with a retry
/// hint after the handover wait, or no answer if node a had taken it, and is sent again with the
/// same id), and nothing acknowledged is lost or decided twice (see
/// [`nothing_lost_or_decided_twice`]). When node a comes back with its data directory deleted,
/// it takes its share again, rebuilt from the stream: its partitions' chain heads are the
/// stream's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_serve_every_partition_and_a_killed_node_loses_nothing() {
    let nats = Cluster::start(3).unwrap();
    let root = tempfile::tempdir().unwrap();
    let ([a, b, c], clients) = three_nodes(&nats, root.path()).await;
    every_partition_answers(&clients).await;
    let partitions = Partitions::new(PARTITIONS).unwrap();

    // A split's new ticket is minted in its parent's partition, and is then served there; one
    // named in another partition is refused.
    let parent = partitions.place(uuid::Uuid::now_v7(), partitions.get(3).unwrap()).unwrap();
    let opened = send(&clients[0], &wire(parent, "split-parent", open("advanced", "technical", Severity::B))).await;
    assert!(matches!(opened, Outcome::Accepted { .. }), "{opened:?}");
    let split = |new_ticket: &str| {
        let mut command =
            wire(parent, &format!("split-{new_ticket}"), CommandBody::RecordAgentResponse { message: text("x") });
        command.body = Some(pb::command::Body::Split(pb::Split {
            new_ticket_id: new_ticket.to_owned(),
            category: "technical".into(),
            severity: pb::Severity::C as i32,
            title: "the printer too".into(),
            description: "it jams since the outage".into(),
        }));
        command
    };
    let elsewhere = partitions.place(uuid::Uuid::now_v7(), partitions.get(4).unwrap()).unwrap();
    let refused = send(&clients[1], &split(&elsewhere.to_string())).await;
    assert!(
        matches!(&refused, Outcome::Refused(code, message) if *code == pb::ErrorCode::InvalidCommand as i32 && message.contains("partition")),
        "{refused:?}"
    );
    let reply = clients[2].request("tickets.cmd.split", split("").encode_to_vec().into()).await.unwrap();
    let Some(pb::command_reply::Result::Accepted(accepted)) = pb::CommandReply::decode(reply.payload).unwrap().result
    else {
        panic!("the split was not accepted");
    };
    let child = accepted.events.iter().map(|e| TicketId::parse(&e.ticket_id).unwrap()).find(|t| *t != parent).unwrap();
    assert_eq!(partitions.of(child), partitions.of(parent), "the new ticket is in its parent's partition");
    let answered =
        send(&clients[1], &wire(child, "child-respond", CommandBody::RecordAgentResponse { message: text("on it") }))
            .await;
    assert!(matches!(answered, Outcome::Accepted { duplicate: false, .. }), "{answered:?}");

    let load = Load::start(&clients);
    load.until("before the kill", 200).await;
    // Killed once the three share the partitions (node a owns some of them).
    let killed_owned = owned_by(&clients[1], "node-a", 2).await;
    a.kill();
    let at_kill = load.count();
    load.until("after the kill", at_kill + 400).await;
    let (sent, acked) = load.finish().await;
    let unavailable = UNAVAILABLE.load(Ordering::Relaxed);
    eprintln!("{} commands acknowledged, {at_kill} before the kill; {unavailable} answers UNAVAILABLE", acked.len());
    // Node a's partitions were taken over (requests about them waited, or were answered
    // UNAVAILABLE and sent again, meanwhile).
    let deadline = Instant::now() + Duration::from_secs(30);
    for partition in &killed_owned {
        loop {
            let owner = owner_of(&clients[1], u32::from(partition.index())).await;
            if matches!(owner.as_deref(), Some("node-b" | "node-c")) {
                break;
            }
            assert!(Instant::now() < deadline, "partition {partition} was not taken over: {owner:?}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    nothing_lost_or_decided_twice(&clients, &sent, &acked).await;

    // The queries across partitions, answered by any node from its copies of every partition,
    // once they hold every acknowledged command (read-your-writes with each partition's
    // position): a customer's tickets and the board merged in their order, compliance added up.
    let mut written: BTreeMap<u32, u64> = BTreeMap::new();
    for outcome in acked.values() {
        if let Outcome::Accepted { written: (partition, position), .. } = outcome {
            let at = written.entry(*partition).or_default();
            *at = (*at).max(*position);
        }
    }
    let opened = acked.keys().filter(|id| id.starts_with("open-")).count() + PARTITIONS as usize + 2;
    let list = pb::ListCustomerTickets {
        customer: "acme".into(),
        limit: 5000,
        min_partition_positions: written.clone(),
        ..Default::default()
    };
    let reply = clients[2].request("tickets.query.customer", list.encode_to_vec().into()).await.unwrap();
    let Some(pb::query_reply::Result::Tickets(tickets)) = pb::QueryReply::decode(reply.payload).unwrap().result else {
        panic!("no customer list");
    };
    assert_eq!(tickets.tickets.len(), opened.min(1000), "every open ticket of acme, up to the API's limit of 1000");
    let instants: Vec<i64> = tickets.tickets.iter().map(|t| t.opened_at.unwrap().seconds).collect();
    assert!(instants.is_sorted(), "by opening instant");
    assert_eq!(tickets.position, 0);
    for (partition, position) in &written {
        assert!(tickets.partition_positions[partition] >= *position, "partition {partition} read as of its writes");
    }
    let board = pb::GetBoard { limit: 50, min_partition_positions: written.clone(), ..Default::default() };
    let reply = clients[0].request("tickets.query.board", board.encode_to_vec().into()).await.unwrap();
    let Some(pb::query_reply::Result::Board(board)) = pb::QueryReply::decode(reply.payload).unwrap().result else {
        panic!("no board");
    };
    assert_eq!(board.entries.len(), 50);
    let dues: Vec<(i64, i32)> = board.entries.iter().map(|e| e.due_at.map(|d| (d.seconds, d.nanos)).unwrap()).collect();
    assert!(dues.is_sorted(), "by due instant");
    // Compliance: the same report from every node asked (the two left, by turns), with every
    // acknowledged first response counted once.
    let responded = acked.keys().filter(|id| id.starts_with("respond-")).count() as u64;
    let ask = pb::GetCompliance { min_partition_positions: written.clone(), ..Default::default() };
    let mut reports = Vec::new();
    for round in 0..6 {
        let reply = clients[round % 3].request("tickets.query.compliance", ask.encode_to_vec().into()).await.unwrap();
        let Some(pb::query_reply::Result::Compliance(report)) = pb::QueryReply::decode(reply.payload).unwrap().result
        else {
            panic!("no compliance report");
        };
        let first = pb::Metric::FirstResponse as i32;
        let counted: u64 = report.rows.iter().filter(|r| r.metric == first).map(|r| r.first_responses).sum();
        assert!(counted >= responded, "{counted} first responses counted, {responded} acknowledged");
        reports.push(report.rows);
    }
    assert!(reports.windows(2).all(|w| w[0] == w[1]), "every node's report is the same");
    for (stale, why) in [
        (pb::GetBoard { limit: 5, min_position: 3, ..Default::default() }, "a min_position across partitions"),
        (
            pb::GetBoard { limit: 5, min_partition_positions: [(PARTITIONS as u32, 1)].into(), ..Default::default() },
            "no such partition",
        ),
    ] {
        let reply = clients[1].request("tickets.query.board", stale.encode_to_vec().into()).await.unwrap();
        let Some(pb::query_reply::Result::Error(e)) = pb::QueryReply::decode(reply.payload).unwrap().result else {
            panic!("a board with {why} was answered");
        };
        assert_eq!(e.code, pb::ErrorCode::MalformedRequest as i32, "{e:?}");
    }

    // Node a comes back with nothing on disk, and takes its share again from the stream.
    std::fs::remove_dir_all(root.path().join("node-a")).unwrap();
    let mut a = start_node(&nats.urls(), "node-a", root.path());
    a.wait_for_count("\"partition served\"", 2, Duration::from_secs(60));
    let (status, log) = a.terminate();
    assert!(status.success(), "node a exited with {status}:\n{}", log.join("\n"));
    let rebuilt = chain_heads(&root.path().join("node-a"));
    assert!(rebuilt.len() >= 2, "node a rebuilt {rebuilt:?}");
    let stream = stream_chain_heads(&jetstream::new(clients[0].clone())).await;
    for (partition, head) in &rebuilt {
        assert_eq!(Some(head), stream.get(partition), "partition {partition}: node a's chain head is the stream's");
    }
    for node in [b, c] {
        let (status, log) = node.terminate();
        assert!(status.success(), "a node exited with {status}:\n{}", log.join("\n"));
    }

    // Every partition log of every node verifies: chains, versions, and each decision re-run.
    for node in ["node-a", "node-b", "node-c"] {
        let data = root.path().join(node);
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_it-ticketctl"))
            .arg("--data-dir")
            .arg(&data)
            .arg("--policy")
            .arg(crate::policy_path("regional-operator.toml"))
            .args(["audit", "verify", "--json"])
            .output()
            .unwrap();
        let report: serde_json::Value = serde_json::from_slice(&output.stdout)
            .unwrap_or_else(|e| panic!("{node}: {e}: {}", String::from_utf8_lossy(&output.stderr)));
        assert!(output.status.success() && report["ok"] == true, "{node}: {report}");
        let partitions = report["partitions"].as_array().unwrap();
        assert!(!partitions.is_empty(), "{node}: {report}");
        assert!(partitions.iter().all(|p| p["ok"] == true && p["problems"].as_array().unwrap().is_empty()), "{report}");
    }
}

/// Given three ticketd nodes on three NATS servers (R3) under a load of commands, when one of
/// the servers is killed, then the nodes keep serving (a quorum of two is left), every command
/// is answered, and nothing acknowledged is lost or decided twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_one_of_three_nats_servers_loses_nothing() {
    let mut nats = Cluster::start(3).unwrap();
    let root = tempfile::tempdir().unwrap();
    let (nodes_all, clients) = three_nodes(&nats, root.path()).await;
    every_partition_answers(&clients).await;
    let load = Load::start(&clients[1..]);
    load.until("before the server is lost", 200).await;
    nats.nodes[0].stop();
    let at_loss = load.count();
    load.until("after the server is lost", at_loss + 400).await;
    let (sent, acked) = load.finish().await;
    eprintln!("{} commands acknowledged, {at_loss} before a server was lost", acked.len());
    nothing_lost_or_decided_twice(&clients[1..], &sent, &acked).await;

    // The operators' view: every partition owned by a live node, its head in the stream, and
    // (once the outboxes drained) all of it published.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let Some(status) = cluster_status(&nats.nodes[1].url()) else {
            assert!(Instant::now() < deadline, "the cluster's status was never answered");
            continue;
        };
        let partitions = status["partitions"].as_array().unwrap();
        assert_eq!(partitions.len(), PARTITIONS as usize, "{status}");
        // (proto3 JSON leaves an empty list out: no live node seen at that moment.)
        let nodes: Vec<&str> =
            status["nodes"].as_array().map(|n| n.iter().map(|n| n.as_str().unwrap()).collect()).unwrap_or_default();
        // A node that lost its server reconnects to another, and may have given its partitions
        // up meanwhile (its leases could not be renewed): it says it is alive again.
        let settled = nodes == ["node-a", "node-b", "node-c"]
            && partitions.iter().all(|p| {
                nodes.contains(&p["owner"].as_str().unwrap_or(""))
                    && p["head"].as_str().is_some()
                    && p["outboxLag"].as_str().is_none_or(|lag| lag == "0")
            });
        if settled {
            let heads: u64 = partitions.iter().map(|p| p["head"].as_str().unwrap().parse::<u64>().unwrap()).sum();
            assert!(heads >= acked.len() as u64, "{heads} positions for {} commands: {status}", acked.len());
            break;
        }
        assert!(Instant::now() < deadline, "the cluster's status did not settle: {status}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    for node in nodes_all {
        let (status, log) = node.terminate();
        assert!(status.success(), "a node exited with {status}:\n{}", log.join("\n"));
    }
}

/// How many partitions each node owns by the cluster's status, once every partition has an
/// owner and each owner holds `fair` of them (waited for up to a minute).
async fn balanced(client: &async_nats::Client, fair: std::ops::RangeInclusive<usize>) -> BTreeMap<String, usize> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut owners: BTreeMap<String, usize> = BTreeMap::new();
        let mut unowned = 0;
        for p in 0..PARTITIONS as u32 {
            match owner_of(client, p).await {
                Some(owner) => *owners.entry(owner).or_default() += 1,
                None => unowned += 1,
            }
        }
        if unowned == 0 && owners.values().all(|n| fair.contains(n)) {
            return owners;
        }
        assert!(Instant::now() < deadline, "never balanced: {owners:?}, {unowned} without an owner");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Given three ticketd nodes starting one after the other, then each ends up with about a
/// third of the 8 partitions (2 or 3). When an operator moves one of node a's partitions to
/// node c (`ticketctl cluster move`), node c serves it; a node that is not live is refused.
/// When node a stops gracefully (SIGTERM) under a load of
/// three clients, its partitions move to the two others (4 each) and no command fails: none is
/// answered `UNAVAILABLE` (a request about a partition changing owner waits for the new one),
/// and nothing acknowledged is lost or decided twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_stopping_gracefully_hands_its_partitions_over_without_a_failed_command() {
    let nats = Cluster::start(3).unwrap();
    let root = tempfile::tempdir().unwrap();
    let ([a, b, c], clients) = three_nodes(&nats, root.path()).await;
    every_partition_answers(&clients).await;
    let shares = balanced(&clients[0], 2..=3).await;
    assert_eq!(shares.len(), 3, "{shares:?}");

    let load = Load::start(&clients);
    load.until("before the move", 100).await;

    // An operator moves one of node a's partitions to node c, under the load.
    let moving = owned_by(&clients[0], "node-a", 1).await[0];
    let url = nats.nodes[0].url();
    let ticketctl = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_it-ticketctl"))
            .arg("--nats-url")
            .arg(&url)
            .args(args)
            .output()
            .unwrap()
    };
    let output = ticketctl(&["cluster", "move", &moving.to_string(), "node-c", "--json"]);
    assert!(output.status.success(), "ticketctl cluster move: {}", String::from_utf8_lossy(&output.stderr));
    let moved: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    // (proto3 JSON leaves partition 0 out.)
    assert_eq!(moved["partition"].as_u64().unwrap_or(0), u64::from(moving.index()), "{moved}");
    assert_eq!((moved["from"].as_str(), moved["to"].as_str()), (Some("node-a"), Some("node-c")), "{moved}");
    assert_eq!(owner_of(&clients[1], u32::from(moving.index())).await.as_deref(), Some("node-c"));
    let refused = ticketctl(&["cluster", "move", "0", "node-z"]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("not a live node"), "{refused:?}");
    let at_move = load.count();
    load.until("after the move", at_move + 100).await;

    // A node configured with another partition count than the cluster's is refused at start,
    // before it routes anything, and the cluster goes on under the load.
    let other = root.path().join("other-count");
    std::fs::create_dir_all(&other).unwrap();
    let config = other.join("cluster.toml");
    std::fs::write(&config, "[cluster]\npartitions = 16\nreplicas = 3\nlease_ttl_secs = 3\n[stream]\nreplicas = 3\n")
        .unwrap();
    let refused =
        spawn_serve(&nats.urls(), &["--config", config.to_str().unwrap(), "--cluster-node", "node-d"], &other);
    let (status, log) = refused.exited(Duration::from_secs(60));
    assert!(!status.success(), "a node of 16 partitions joined a cluster of 8:\n{}", log.join("\n"));
    assert!(
        log.iter().any(|l| l.contains("belongs to a cluster of 8 partitions") && l.contains("configured with 16")),
        "{}",
        log.join("\n")
    );
    assert!(!log.iter().any(|l| l.contains("ticketd ready")), "{}", log.join("\n"));
    // Refused before its API served anything (it would have routed by the wrong count).
    assert!(!log.iter().any(|l| l.contains("command api ready")), "{}", log.join("\n"));
    let at_refusal = load.count();
    load.until("after the refusal", at_refusal + 100).await;

    // An open sent straight to a partition's subject about a ticket of another partition is
    // refused by that partition's owner (a ticket belongs to one partition for life), and
    // nothing is decided: the same open through the API is then a fresh one.
    let partitions = Partitions::new(PARTITIONS).unwrap();
    let ticket = TicketId::from_uuid(uuid::Uuid::now_v7());
    let elsewhere = partitions.get((u64::from(partitions.of(ticket).index()) + 1) % PARTITIONS).unwrap();
    let misrouted = wire(ticket, "misrouted-open", open("advanced", "technical", Severity::A));
    let endpoint = ticket_proto::Endpoint::Command(ticket_proto::CommandEndpoint::Open);
    let answer = clients[0]
        .request(ticket_nats::partition_subject(elsewhere, endpoint), misrouted.encode_to_vec().into())
        .await
        .unwrap();
    let Some(pb::command_reply::Result::Error(error)) = pb::CommandReply::decode(answer.payload).unwrap().result else {
        panic!("a command about another partition's ticket was accepted");
    };
    assert_eq!(error.code, pb::ErrorCode::MalformedRequest as i32, "{error:?}");
    assert_eq!(error.details.get("partition"), Some(&partitions.of(ticket).to_string()), "{error:?}");
    let Outcome::Accepted { duplicate, written, .. } = send(&clients[1], &misrouted).await else {
        panic!("the open through the API was refused");
    };
    assert!(!duplicate, "the misrouted open was decided");
    assert_eq!(written.0, u32::from(partitions.of(ticket).index()));

    let (status, log) = a.terminate();
    assert!(status.success(), "node a exited with {status}:\n{}", log.join("\n"));
    assert!(log.iter().any(|l| l.contains("node stopped; its partitions handed over")), "{}", log.join("\n"));
    assert!(log.iter().any(|l| l.contains("command api ready")), "{}", log.join("\n"));
    let at_stop = load.count();
    load.until("after the stop", at_stop + 300).await;
    let shares = balanced(&clients[1], 4..=4).await;
    assert_eq!(shares.keys().collect::<Vec<_>>(), ["node-b", "node-c"]);
    assert_eq!(owner_of(&clients[1], u32::from(moving.index())).await.as_deref(), Some("node-c"), "placed there");
    let unavailable = load.unavailable.load(Ordering::Relaxed);
    let (sent, acked) = load.finish().await;
    eprintln!("{} commands acknowledged, {at_stop} before the stop", acked.len());
    assert_eq!(unavailable, 0, "a command was answered UNAVAILABLE while partitions were moved or handed over");
    nothing_lost_or_decided_twice(&clients, &sent, &acked).await;

    // The whole cluster verifies from its log stream: every partition's chain, versions, and
    // each decision re-run.
    let policy = crate::policy_path("regional-operator.toml");
    let output = ticketctl(&["--policy", policy.to_str().unwrap(), "audit", "verify", "--json"]);
    assert!(output.status.success(), "audit verify of the cluster: {}", String::from_utf8_lossy(&output.stderr));
    let audit: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(audit["ok"], true, "{audit}");
    assert_eq!(audit["partitions"].as_array().unwrap().len(), PARTITIONS as usize, "{audit}");
    for node in [b, c] {
        let (status, log) = node.terminate();
        assert!(status.success(), "a node exited with {status}:\n{}", log.join("\n"));
    }
}

/// The owner of partition `partition` by the cluster's status, asked of any node that answers
/// within a second (a paused node's share of the requests gets no answer).
async fn owner_of(client: &async_nats::Client, partition: u32) -> Option<String> {
    let request = pb::GetClusterStatus {}.encode_to_vec();
    let reply = tokio::time::timeout(Duration::from_secs(1), client.request("tickets.admin.cluster", request.into()))
        .await
        .ok()?
        .ok()?;
    let Some(pb::query_reply::Result::Cluster(status)) = pb::QueryReply::decode(reply.payload).ok()?.result else {
        return None;
    };
    status.partitions.into_iter().find(|p| p.partition == partition).map(|p| p.owner).filter(|o| !o.is_empty())
}

/// The partitions `node` owns, once it owns at least `at_least` of them (waited for up to a
/// minute).
async fn owned_by(client: &async_nats::Client, node: &str, at_least: usize) -> Vec<ticket_domain::Partition> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut owned = Vec::new();
        for p in Partitions::new(PARTITIONS).unwrap().all() {
            if owner_of(client, u32::from(p.index())).await.as_deref() == Some(node) {
                owned.push(p);
            }
        }
        if owned.len() >= at_least {
            return owned;
        }
        assert!(Instant::now() < deadline, "{node} never owned {at_least} partitions");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Given three ticketd nodes and a ticket of a partition node a owns, when node a is paused
/// (SIGSTOP) past its lease, another node takes the partition over and a command changes the
/// ticket, and node a resumes (SIGCONT), then no answer about the ticket comes from node a's
/// stale state: each is the ticket as it is now, or `UNAVAILABLE` (node a answers only while
/// its lease is certainly its own).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_node_never_answers_from_its_stale_state_when_it_resumes() {
    let nats = Cluster::start(3).unwrap();
    let root = tempfile::tempdir().unwrap();
    let ([a, b, c], clients) = three_nodes(&nats, root.path()).await;
    every_partition_answers(&clients).await;
    let partitions = Partitions::new(PARTITIONS).unwrap();
    let partition = owned_by(&clients[0], "node-a", 1).await[0];
    let ticket = partitions.place(uuid::Uuid::now_v7(), partition).unwrap();
    let opened = send(&clients[1], &wire(ticket, "stale-open", open("advanced", "technical", Severity::B))).await;
    assert!(matches!(opened, Outcome::Accepted { duplicate: false, .. }), "{opened:?}");

    a.signal("-STOP");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let owner = owner_of(&clients[1], u32::from(partition.index())).await;
        if owner.as_deref().is_some_and(|o| o != "node-a") {
            break;
        }
        assert!(Instant::now() < deadline, "partition {partition} was not taken over from the paused node a");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let responded =
        send(&clients[1], &wire(ticket, "stale-respond", CommandBody::RecordAgentResponse { message: text("on it") }))
            .await;
    assert!(matches!(responded, Outcome::Accepted { duplicate: false, .. }), "{responded:?}");

    a.signal("-CONT");
    let query = pb::GetTicket { ticket_id: ticket.to_string(), ..Default::default() }.encode_to_vec();
    let (mut current, mut unavailable) = (0, 0);
    for _ in 0..60 {
        let asked = clients.iter().map(|client| {
            tokio::time::timeout(Duration::from_secs(3), client.request("tickets.query.ticket", query.clone().into()))
        });
        for answer in futures::future::join_all(asked).await {
            let Ok(Ok(message)) = answer else { continue };
            let result = pb::QueryReply::decode(message.payload).unwrap().result.unwrap();
            if let pb::query_reply::Result::Ticket(view) = &result {
                assert_eq!(view.version, 2, "a stale answer: {view:?}");
                current += 1;
            } else if let pb::query_reply::Result::Error(e) = &result
                && e.code == pb::ErrorCode::Unavailable as i32
            {
                unavailable += 1;
            } else {
                panic!("{result:?}");
            }
        }
    }
    eprintln!("after the resume: {current} answers with the ticket as it is, {unavailable} UNAVAILABLE");
    assert!(current > 0, "the ticket was never answered after the resume");
    for node in [a, b, c] {
        let (status, log) = node.terminate();
        assert!(status.success(), "a node exited with {status}:\n{}", log.join("\n"));
    }
}

/// A node's name is one ticketd's. Given node-a serving alone, when a second ticketd starts as
/// node-a, then it exits with an error saying another process runs as node-a; when node-a is
/// paused past its leases and a replacement starts as node-a (on a data directory of its own),
/// then the replacement serves every partition, with what node-a acknowledged; when node-a
/// resumes, it exits with an error saying its name is another process's, and the replacement
/// goes on serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_name_is_one_ticketds_a_twin_is_refused_and_a_paused_one_replaced_exits() {
    let nats = Cluster::start(3).unwrap();
    nats.wait_routed(Duration::from_secs(30)).unwrap();
    let all = nats.urls();
    let (root, twin_root, replacement_root) =
        (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut a = start_node(&all, "node-a", root.path());
    let client = async_nats::connect(nats.nodes[0].url()).await.unwrap();
    every_partition_answers(std::slice::from_ref(&client)).await;
    let partitions = Partitions::new(PARTITIONS).unwrap();
    let ticket = partitions.place(uuid::Uuid::now_v7(), partitions.all().next().unwrap()).unwrap();
    let opened = send(&client, &wire(ticket, "named-open", open("advanced", "technical", Severity::B))).await;
    assert!(matches!(opened, Outcome::Accepted { duplicate: false, .. }), "{opened:?}");

    let twin_data = twin_root.path().join("node-a");
    std::fs::create_dir_all(&twin_data).unwrap();
    let config = node_config(twin_root.path());
    let twin = spawn_serve(&all, &["--config", config.to_str().unwrap(), "--cluster-node", "node-a"], &twin_data);
    let (status, log) = twin.exited(Duration::from_secs(60));
    assert!(!status.success(), "the twin exited with {status}");
    assert!(
        log.iter().any(|l| l.contains("another process is running as node")),
        "the twin did not say why:\n{}",
        log.join("\n")
    );
    a.wait_for("ticketd ready (cluster node)", Duration::from_secs(1));

    a.signal("-STOP");
    let replacement = start_node(&all, "node-a", replacement_root.path());
    let respond = wire(ticket, "named-respond", CommandBody::RecordAgentResponse { message: text("on it") });
    let responded = send(&client, &respond).await;
    let Outcome::Accepted { duplicate: false, written: (_, position), .. } = responded else { panic!("{responded:?}") };
    assert!(position >= 2, "the replacement decided on what node-a had acknowledged");
    every_partition_answers(std::slice::from_ref(&client)).await;

    a.signal("-CONT");
    let (status, log) = a.exited(Duration::from_secs(60));
    assert!(!status.success(), "the replaced node exited with {status}");
    assert!(
        log.iter().any(|l| l.contains("this node's name is another process's now")),
        "the replaced node did not say why:\n{}",
        log.join("\n")
    );
    let again = send(&client, &respond).await;
    assert!(matches!(again, Outcome::Accepted { duplicate: true, .. }), "{again:?}");
    let (status, log) = replacement.terminate();
    assert!(status.success(), "the replacement exited with {status}:\n{}", log.join("\n"));
}

/// Given three nats-servers with the shipped accounts (deploy/nats/accounts.conf) and three
/// ticketd cluster nodes started as deploy/compose.yaml starts them (the `ticketd` user,
/// deploy/ticketd.toml: its identities, its event streams in EVENTS; `--cluster-replicas 3`),
/// when an agent of SUPPORT opens a ticket for acme, then acme's customer portal reads it on
/// its list (read-your-writes with the reply's partition), the event reaches EVENTS' stream, the
/// cluster's own log stream is in ticketd's account, and an operator sees every partition
/// owned; an agent cannot reach the cluster's status.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_run_on_the_shipped_accounts_and_configuration() {
    let deploy = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy");
    let nats = Cluster::start_with(3, Some(deploy.join("nats/accounts.conf"))).unwrap();
    nats.wait_routed(Duration::from_secs(30)).unwrap();
    let url_of = |user: &str, node: &ticket_testkit::NatsServer| {
        node.url().replacen("nats://", &format!("nats://{user}:{user}-dev-password@"), 1)
    };
    let ticketd_urls = nats.nodes.iter().map(|n| url_of("ticketd", n)).collect::<Vec<_>>().join(",");
    let root = tempfile::tempdir().unwrap();
    let policy = crate::policy_path("regional-operator.toml");
    let config = deploy.join("ticketd.toml");
    let nodes: Vec<Daemon> = ["node-a", "node-b", "node-c"]
        .iter()
        .map(|name| {
            let data = root.path().join(name);
            std::fs::create_dir_all(&data).unwrap();
            let flags = [
                "--config",
                config.to_str().unwrap(),
                "--ops-listen",
                "127.0.0.1:0",
                "--cluster-node",
                name,
                "--cluster-replicas",
                "3",
            ];
            let mut daemon = spawn_serve_with(&ticketd_urls, &policy, &flags, &data);
            daemon.wait_for("ticketd ready (cluster node)", Duration::from_secs(90));
            daemon
        })
        .collect();
    let login = |user: &'static str, node: usize| {
        let url = nats.nodes[node].url();
        async move {
            async_nats::ConnectOptions::with_user_and_password(user.into(), format!("{user}-dev-password"))
                .connect(url)
                .await
                .unwrap()
        }
    };
    let connect = |user: &'static str| {
        let connecting = login(user, 0);
        async move { ticket_client::Client::new(connecting.await) }
    };
    let (support, acme, operator) = (connect("support").await, connect("acme").await, connect("operator").await);

    // Every partition owned, by the three nodes.
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let status = operator.cluster_status().await;
        let settled = status.as_ref().is_ok_and(|s| {
            let owners: BTreeSet<&str> = s.partitions.iter().map(|p| p.owner.as_str()).collect();
            s.partitions.len() == 16 && !owners.contains("") && owners.len() == 3
        });
        if settled {
            break;
        }
        assert!(Instant::now() < deadline, "the nodes never shared the partitions: {status:?}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // SUPPORT imports no operators' endpoint: the request does not even reach ticketd.
    assert!(support.cluster_status().await.is_err());

    // The agent opens a ticket for acme (retried while a partition changes hands).
    let agent = ticket_client::Issue::by(ticket_domain::Actor {
        kind: ticket_domain::ActorKind::Agent,
        id: ticket_domain::ActorId::new("support").unwrap(),
    });
    let CommandBody::Open(body) = open("advanced", "technical", Severity::B) else { unreachable!() };
    let opened = support.open(&agent, None, body).await.unwrap();
    assert!(opened.partition.is_some(), "a cluster's reply names its partition");
    let mut written = ticket_client::Written::default();
    written.record(&opened);
    let query = written.applied_to(ticket_proto::Query::Customer(pb::ListCustomerTickets {
        customer: "acme".into(),
        ..Default::default()
    }));
    let Ok(pb::query_reply::Result::Tickets(list)) = acme.query(&query).await else {
        panic!("acme's list was not answered");
    };
    assert!(list.tickets.iter().any(|t| t.ticket_id == opened.ticket_id.to_string()), "{list:?}");

    // The read models are each node's own: the operator reads node b's lag by name, and once
    // node b's copy holds the opening, rebuilds the board there, on its copy of every partition.
    let partition = opened.partition.unwrap();
    let board_of = |lags: &pb::ProjectionLags| {
        lags.projections.iter().find(|l| l.name == format!("p{partition}/board")).map(|l| l.position)
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let held = loop {
        let lags = operator.projection_lag(Some("node-b")).await.unwrap();
        assert_eq!(lags.node, "node-b");
        assert_eq!(lags.projections.iter().filter(|l| l.name.ends_with("/board")).count(), 16, "{lags:?}");
        match board_of(&lags) {
            Some(position) if position >= 1 => break position,
            Some(_) | None => {}
        }
        assert!(Instant::now() < deadline, "node b's copy never held the opening: {lags:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let rebuilt = operator.rebuild_projection("board", Some("node-b")).await.unwrap();
    assert_eq!((rebuilt.name.as_str(), rebuilt.node.as_str()), ("board", "node-b"));
    assert_eq!(rebuilt.partition_positions.len(), 16, "{rebuilt:?}");
    assert!(rebuilt.partition_positions[&partition] >= held && rebuilt.events >= 1, "{rebuilt:?}");
    // Whichever node takes an unnamed lag says which it is; a rebuild must name its node, one
    // that runs.
    let any = operator.projection_lag(None).await.unwrap();
    assert!(["node-a", "node-b", "node-c"].contains(&any.node.as_str()), "{any:?}");
    let refused = |outcome: Result<pb::ProjectionRebuilt, ticket_client::ClientError>| match outcome {
        Err(ticket_client::ClientError::Refused { code, message, .. }) => (code, message),
        other => panic!("not refused: {other:?}"),
    };
    let (code, message) = refused(operator.rebuild_projection("board", None).await);
    assert_eq!(code, pb::ErrorCode::MalformedRequest, "{message}");
    assert!(message.contains("node"), "{message}");
    let (code, message) = refused(operator.rebuild_projection("board", Some("node-x")).await);
    assert_eq!(code, pb::ErrorCode::Unavailable, "{message}");
    assert!(message.contains("node-x"), "{message}");
    let (code, _) = refused(operator.rebuild_projection("board", Some("node-b.>")).await);
    assert_eq!(code, pb::ErrorCode::MalformedRequest);
    // SUPPORT may not rebuild, on any node: refused before anything is forwarded.
    assert!(support.rebuild_projection("board", Some("node-b")).await.is_err());
    // The rebuilt board answers.
    let query = written.applied_to(ticket_proto::Query::Board(pb::GetBoard { limit: 100, ..Default::default() }));
    let Ok(pb::query_reply::Result::Board(board)) = operator.query(&query).await else {
        panic!("the board was not answered");
    };
    assert!(board.entries.iter().any(|e| e.ticket_id == opened.ticket_id.to_string()), "{board:?}");

    // The event in EVENTS' stream, the partitions' log in ticketd's own account.
    let events = jetstream::new(login("billing", 1).await);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let info = events.get_stream("TICKETS").await.unwrap().info().await.map(|i| i.state.messages);
        if info.as_ref().is_ok_and(|n| *n >= 1) {
            break;
        }
        assert!(Instant::now() < deadline, "no event in EVENTS' stream: {info:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let own = jetstream::new(login("ticketd", 2).await);
    let log = own.get_stream("TICKETS_LOG").await.unwrap().info().await.unwrap().clone();
    assert_eq!(log.config.num_replicas, 3);
    assert!(log.state.messages >= 1);
    for node in nodes {
        let (status, log) = node.terminate();
        assert!(status.success(), "a node exited with {status}:\n{}", log.join("\n"));
    }
}

/// Given three ticketd nodes on a policy whose first response for a severity A technical ticket
/// is due within a minute (warnings at 50% and 80%), and such a ticket in a partition node a
/// owns, when node a is killed (SIGKILL) five seconds before the first warning falls due, then
/// the new owner's timer records every consequence once, at its instant, whatever the failover
/// took: the warnings at 30 s and 48 s and the breach at 60 s after the opening.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadline_falling_due_during_a_failover_is_recorded_once_at_its_instant() {
    let root = tempfile::tempdir().unwrap();
    let shipped = std::fs::read_to_string(crate::policy_path("regional-operator.toml")).unwrap();
    let minute = shipped.replacen(
        "first_response = { hours = 1, calendar = \"always\" }",
        "first_response = { minutes = 1, calendar = \"always\" }",
        1,
    );
    assert_ne!(minute, shipped, "the shipped policy's severity A target was not found");
    let policy = root.path().join("one-minute.toml");
    std::fs::write(&policy, minute).unwrap();
    let config = node_config(root.path());
    let nats = Cluster::start(3).unwrap();
    nats.wait_routed(Duration::from_secs(30)).unwrap();
    let urls = nats.urls();
    let start = |name: &str| {
        let data = root.path().join(name);
        std::fs::create_dir_all(&data).unwrap();
        let flags = ["--api-unstamped", "trust", "--config", config.to_str().unwrap(), "--cluster-node", name];
        let mut daemon = spawn_serve_with(&urls, &policy, &flags, &data);
        daemon.wait_for("ticketd ready (cluster node)", Duration::from_secs(60));
        daemon
    };
    let (a, b, c) = (start("node-a"), start("node-b"), start("node-c"));
    let client = async_nats::connect(nats.nodes[1].url()).await.unwrap();
    every_partition_answers(std::slice::from_ref(&client)).await;
    let partition = owned_by(&client, "node-a", 1).await[0];
    let ticket = Partitions::new(PARTITIONS).unwrap().place(uuid::Uuid::now_v7(), partition).unwrap();
    let opened =
        send(&client, &wire(ticket, &format!("open-{ticket}"), open("advanced", "technical", Severity::A))).await;
    assert!(matches!(opened, Outcome::Accepted { duplicate: false, .. }), "{opened:?}");
    let opened_at = Instant::now();

    // Killed 28 s after the opening: the 30 s warning falls due while the partition has no owner.
    tokio::time::sleep_until((opened_at + Duration::from_secs(28)).into()).await;
    a.kill();
    tokio::time::sleep_until((opened_at + Duration::from_secs(62)).into()).await;

    let deadline = Instant::now() + Duration::from_secs(30);
    let timeline = loop {
        let query = pb::GetTimeline { ticket_id: ticket.to_string(), min_position: 0 };
        let reply = client.request("tickets.query.timeline", query.encode_to_vec().into()).await.unwrap();
        if let Some(pb::query_reply::Result::Timeline(timeline)) = pb::QueryReply::decode(reply.payload).unwrap().result
            && timeline.entries.iter().any(|e| e.event_type == "sla_breached")
        {
            break timeline;
        }
        assert!(Instant::now() < deadline, "the breach was never recorded");
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let at = |e: &pb::TimelineEntry| e.occurred_at.map(|t| t.seconds as f64 + f64::from(t.nanos) / 1e9).unwrap();
    let opening = timeline.entries.iter().find(|e| e.event_type == "opened").map(at).unwrap();
    // What the timer recorded, each as (seconds after the opening, its summary).
    let recorded = |kind: &str| -> Vec<(f64, String)> {
        timeline.entries.iter().filter(|e| e.event_type == kind).map(|e| (at(e) - opening, e.summary.clone())).collect()
    };
    let (warnings, breaches, escalations) = (recorded("sla_warning"), recorded("sla_breached"), recorded("escalated"));
    // Each once; never before its instant, and late by at most what the failover took (the
    // 30 s warning fell due while nobody owned the partition).
    assert_eq!(warnings.len(), 2, "each warning once: {timeline:?}");
    assert_eq!(breaches.len(), 1, "the breach once: {timeline:?}");
    assert_eq!(escalations.len(), 2, "the escalations at 80% and at the breach, once each: {timeline:?}");
    for ((after, summary), (due, share)) in warnings.iter().zip([(30.0, "50%"), (48.0, "80%")]) {
        assert!(summary.contains(share), "{summary}");
        assert!((due..due + 15.0).contains(after), "the {share} warning {after} s after the opening: {timeline:?}");
    }
    assert!((60.0..75.0).contains(&breaches[0].0), "the breach {} s after the opening", breaches[0].0);
    for node in [b, c] {
        let (status, log) = node.terminate();
        assert!(status.success(), "a node exited with {status}:\n{}", log.join("\n"));
    }
}

/// A client port from which `n` client ports and `n` route ports (2000 above) are free.
fn dev_cluster_ports(n: u16) -> u16 {
    let free = |port: u16| std::net::TcpListener::bind(("127.0.0.1", port)).is_ok();
    for _ in 0..50 {
        let port = ticket_testkit::free_port().unwrap();
        if port < 60_000 && (0..n).all(|i| free(port + i) && free(port + 2000 + i)) {
            return port;
        }
    }
    panic!("no free range of ports for the dev cluster");
}

/// Logs in to a server of the dev cluster as one of the shipped accounts' dev users.
async fn dev_user(user: &str, port: u16) -> ticket_client::Client {
    let options = async_nats::ConnectOptions::with_user_and_password(user.into(), format!("{user}-dev-password"));
    ticket_client::Client::new(options.connect(format!("nats://127.0.0.1:{port}")).await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ticketd_dev_nodes_runs_a_cluster_on_this_machine_and_stops_it_all() {
    // Given `ticketd dev --nodes 3` run from an empty directory...
    let data = tempfile::tempdir().unwrap();
    let empty = tempfile::tempdir().unwrap();
    let port = dev_cluster_ports(3);
    let nats = ticket_testkit::nats_server_bin().unwrap();
    let port_arg = port.to_string();
    let args = ["--data-dir", data.path().to_str().unwrap(), "dev", "--nodes", "3", "--port", &port_arg];
    let mut daemon = Daemon::spawn(&args, empty.path(), &[("NATS_SERVER_BIN", nats.as_path())]);
    daemon.wait_for("the dev cluster runs", Duration::from_secs(60));
    daemon.wait_for_count("cluster node started", 3, Duration::ZERO);
    let pids: Vec<u32> = daemon
        .lines_with("cluster node started")
        .iter()
        .map(|line| serde_json::from_str::<serde_json::Value>(line).unwrap()["fields"]["pid"].as_u64().unwrap() as u32)
        .collect();
    assert_eq!(pids.len(), 3);

    // ...then an operator sees every partition owned, by the three nodes...
    let operator = dev_user("operator", port).await;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let status = operator.cluster_status().await;
        if let Ok(status) = &status {
            let owners: BTreeSet<&str> = status.partitions.iter().map(|p| p.owner.as_str()).collect();
            if status.partitions.len() == 16 && !owners.contains("") && owners.len() == 3 {
                break;
            }
        }
        assert!(Instant::now() < deadline, "the three nodes did not share the 16 partitions: {status:?}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // ...a support tool on another server opens a ticket, recorded as its identity...
    let support = dev_user("support", port + 1).await;
    let as_support = ticket_client::Issue::by(ticket_domain::Actor {
        kind: ticket_domain::ActorKind::Agent,
        id: ticket_domain::ActorId::new("support").unwrap(),
    });
    let accepted = support.open(&as_support, None, crate::client::opening("advanced")).await.unwrap();
    assert_eq!(accepted.events[0].position, 1);

    // ...and SIGTERM stops it all: the nodes, then the servers.
    let (status, log) = daemon.terminate();
    assert!(status.success(), "ticketd dev exited with {status}:\n{}", log.join("\n"));
    for pid in pids {
        assert!(!Path::new(&format!("/proc/{pid}")).exists(), "node {pid} outlived ticketd dev");
    }
    for i in 0..3 {
        assert!(std::net::TcpStream::connect(("127.0.0.1", port + i)).is_err(), "a nats-server outlived ticketd dev");
    }
}
