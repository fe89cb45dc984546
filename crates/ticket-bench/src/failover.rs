//! `ticket-bench cluster`, phase 4: failover time. Two real `ticketd serve --cluster-node`
//! processes share 16 partitions on three nats-servers (R3, `sync_interval: always`), with the
//! shipped lease settings. Each round waits until the two hold half the partitions each, kills
//! one with SIGKILL, and sends commands to each partition it owned (every 50 ms, each waiting up
//! to 1 s) until that partition answers again; a round's failover time is its slowest
//! partition's, from the kill. The killed node is then started again on its data directory.
//! Every command acknowledged on the way is sent again at the end: it must be answered from the
//! log with the same events (none lost, none decided twice).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use prost::Message;
use serde::Serialize;
use ticket_cluster::{LeaseConfig, Leases};
use ticket_domain::{Partition, Partitions};
use ticket_proto::pb;

const PARTITIONS: u64 = 16;
const NODES: [&str; 2] = ["node-a", "node-b"];

#[derive(Debug, Serialize)]
pub struct Failover {
    pub kills: usize,
    pub nodes: usize,
    pub partitions: u64,
    pub lease_ttl_secs: u64,
    /// Per kill: from SIGKILL to the last of the killed node's partitions answering again.
    pub per_kill_ms: Vec<u64>,
    pub median_ms: u64,
    pub max_ms: u64,
    /// Over every partition of every kill: from SIGKILL to that partition answering again.
    pub partition_median_ms: u64,
    /// Commands acknowledged during the rounds, and those not answered with their original
    /// events when sent again at the end.
    pub acknowledged: u64,
    pub lost_or_changed: u64,
    /// Goal: under 10 s at the median.
    pub goal_median_met: bool,
}

/// A ticketd process, killed when dropped.
pub(crate) struct Node {
    pub(crate) child: Child,
    /// Its operators' HTTP endpoint (`/metrics`) on 127.0.0.1.
    pub(crate) ops_port: u16,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `ticketd serve` with `config`, its data under `<dir>/<name>` and its log in
/// `<dir>/<name>.log`, its `/metrics` on a free port; a node of a cluster if `cluster_node`
/// names it.
pub(crate) fn start(
    ticketd: &Path,
    urls: &str,
    dir: &Path,
    config: &Path,
    cluster_node: Option<&str>,
    name: &str,
) -> anyhow::Result<Node> {
    let data = dir.join(name);
    std::fs::create_dir_all(&data)?;
    let log = std::fs::OpenOptions::new().create(true).append(true).open(dir.join(format!("{name}.log")))?;
    let ops_port = ticket_testkit::free_port()?;
    let mut command = Command::new(ticketd);
    command.args(["--nats-url", urls, "--data-dir"]).arg(&data).args([
        "--api-unstamped",
        "trust",
        "--log-format",
        "json",
        "--ops-listen",
        &format!("127.0.0.1:{ops_port}"),
    ]);
    if let Some(node) = cluster_node {
        command.args(["--cluster-node", node]);
    }
    let child = command
        .arg("--config")
        .arg(config)
        .arg("serve")
        .current_dir(&data)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()?;
    Ok(Node { child, ops_port })
}

/// The benchmark's agent.
pub(crate) fn agent() -> Option<pb::Actor> {
    Some(pb::Actor { kind: pb::ActorKind::Agent as i32, id: "bench-agent".into() })
}

/// An `open` of an advanced technical ticket of `severity`, as a support tool sends it.
pub(crate) fn opening(severity: pb::Severity) -> Option<pb::command::Body> {
    Some(pb::command::Body::Open(pb::OpenTicket {
        customer: "customer-1".into(),
        plan: "advanced".into(),
        category: "technical".into(),
        title: "mail delivery delayed".into(),
        description: "since this morning".into(),
        severity: severity as i32,
    }))
}

/// An `open` of a fresh ticket in `partition`, as a support tool sends it.
fn probe(partitions: Partitions, partition: Partition, id: &str) -> anyhow::Result<pb::Command> {
    let ticket = partitions
        .place(uuid::Uuid::now_v7(), partition)
        .ok_or_else(|| anyhow::anyhow!("no id lands in partition {partition}"))?;
    Ok(pb::Command {
        command_id: id.to_owned(),
        ticket_id: ticket.to_string(),
        actor: agent(),
        body: opening(pb::Severity::A),
        ..Default::default()
    })
}

/// The reply to `command` if it was accepted within `wait`: its event ids and whether it was a
/// repeat. `None` on anything else (no owner yet, no answer).
async fn send(client: &async_nats::Client, command: &pb::Command, wait: Duration) -> Option<(Vec<String>, bool)> {
    let reply = tokio::time::timeout(wait, client.request("tickets.cmd.open", command.encode_to_vec().into())).await;
    let Ok(Ok(message)) = reply else { return None };
    match pb::CommandReply::decode(message.payload).ok()?.result? {
        pb::command_reply::Result::Accepted(a) => {
            Some((a.events.iter().map(|e| e.event_id.clone()).collect(), a.duplicate))
        }
        pb::command_reply::Result::Error(_) => None,
    }
}

/// Sends fresh commands to `partition` until one is accepted; when, from `since`.
async fn until_served(
    client: &async_nats::Client,
    partitions: Partitions,
    partition: Partition,
    label: &str,
    since: Instant,
    acked: &mut Vec<(pb::Command, Vec<String>)>,
) -> anyhow::Result<Duration> {
    for attempt in 0.. {
        anyhow::ensure!(since.elapsed() < Duration::from_secs(180), "partition {partition} not served within 180 s");
        let command = probe(partitions, partition, &format!("{label}-{partition}-{attempt}-{}", uuid::Uuid::now_v7()))?;
        if let Some((events, _)) = send(client, &command, Duration::from_secs(1)).await {
            let took = since.elapsed();
            acked.push((command, events));
            return Ok(took);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    unreachable!("the loop returns")
}

/// Waits until each node holds its half of the partitions; returns who holds what.
async fn balanced(leases: &Leases, partitions: Partitions) -> anyhow::Result<BTreeMap<Partition, String>> {
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let mut holders = BTreeMap::new();
        for partition in partitions.all() {
            if let Some((holder, _)) = leases.holder(partition).await? {
                holders.insert(partition, holder);
            }
        }
        let half = usize::from(partitions.count()) / NODES.len();
        let even = NODES.iter().all(|n| holders.values().filter(|h| h == n).count() == half);
        if holders.len() == usize::from(partitions.count()) && even {
            return Ok(holders);
        }
        anyhow::ensure!(Instant::now() < deadline, "the nodes did not balance within 180 s: {holders:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn median(values: &mut [u64]) -> u64 {
    values.sort_unstable();
    values.get(values.len() / 2).copied().unwrap_or(0)
}

/// Runs `kills` rounds with the `ticketd` binary, its data and logs under `dir`, on three
/// nats-servers started with `nats_config`.
pub async fn run(ticketd: &Path, dir: &Path, nats_config: PathBuf, kills: usize) -> anyhow::Result<Failover> {
    let servers = ticket_testkit::Cluster::start_with(3, Some(nats_config))?;
    servers.wait_routed(Duration::from_secs(30))?;
    let urls = servers.urls();
    let config = dir.join("cluster-node.toml");
    std::fs::write(
        &config,
        format!(
            "[cluster]\npartitions = {PARTITIONS}\nreplicas = 3\n[stream]\nreplicas = 3\n[shutdown]\ndeadline_secs = 5\n"
        ),
    )?;
    let lease_ttl = LeaseConfig::default().ttl;
    let mut nodes: Vec<Node> = NODES
        .iter()
        .map(|name| start(ticketd, &urls, dir, &config, Some(name), name))
        .collect::<anyhow::Result<_>>()?;
    let client = async_nats::connect(servers.nodes[0].url()).await?;
    let js = async_nats::jetstream::new(client.clone());
    let partitions = Partitions::new(PARTITIONS)?;
    let mut acked = Vec::new();
    // Served from the start (the leases bucket exists once a node created it).
    let started = Instant::now();
    for partition in partitions.all() {
        until_served(&client, partitions, partition, "warm", started, &mut acked).await?;
    }
    let leases = Leases::ensure(&js, LeaseConfig { replicas: 3, ..LeaseConfig::default() }).await?;

    let (mut per_kill, mut per_partition) = (Vec::new(), Vec::new());
    for kill in 0..kills {
        let holders = balanced(&leases, partitions).await?;
        let victim = kill % NODES.len();
        let owned: Vec<Partition> = holders.iter().filter(|(_, h)| *h == NODES[victim]).map(|(p, _)| *p).collect();
        nodes[victim].child.kill()?;
        let killed = Instant::now();
        nodes[victim].child.wait()?;
        let mut slowest = Duration::ZERO;
        let waits = owned.iter().map(|p| {
            let client = client.clone();
            let label = format!("kill{kill}");
            async move {
                let mut acked = Vec::new();
                let took = until_served(&client, partitions, *p, &label, killed, &mut acked).await;
                (took, acked)
            }
        });
        for (took, mut these) in futures::future::join_all(waits).await {
            let took = took?;
            slowest = slowest.max(took);
            per_partition.push(took.as_millis() as u64);
            acked.append(&mut these);
        }
        per_kill.push(slowest.as_millis() as u64);
        eprintln!(
            "cluster: kill {}/{kills} of {} ({} partitions): served again after {} ms",
            kill + 1,
            NODES[victim],
            owned.len(),
            slowest.as_millis()
        );
        nodes[victim] = start(ticketd, &urls, dir, &config, Some(NODES[victim]), NODES[victim])?;
    }

    // Every acknowledged command, sent again, is answered with its original events.
    let mut lost_or_changed = 0u64;
    for (command, events) in &acked {
        match send(&client, command, Duration::from_secs(10)).await {
            Some((again, true)) if again == *events => {}
            _ => lost_or_changed += 1,
        }
    }
    for node in &nodes {
        let _ = Command::new("kill").arg("-TERM").arg(node.child.id().to_string()).status();
    }
    for node in &mut nodes {
        let _ = node.child.wait();
    }
    let max_ms = per_kill.iter().copied().max().unwrap_or(0);
    let median_ms = median(&mut per_kill.clone());
    Ok(Failover {
        kills,
        nodes: NODES.len(),
        partitions: PARTITIONS,
        lease_ttl_secs: lease_ttl.as_secs(),
        per_kill_ms: per_kill,
        median_ms,
        max_ms,
        partition_median_ms: median(&mut per_partition),
        acknowledged: acked.len() as u64,
        lost_or_changed,
        goal_median_met: kills > 0 && median_ms < 10_000,
    })
}
