//! `ticket-bench cluster`, phase 5: real ticketd processes over NATS, end to end. The same
//! clients (a connection to each of the three nats-servers, `--clients` requesters spread over
//! them) open a fresh ticket and record the agent's response on it, again and again, for
//! `--seconds`:
//!
//! - against **one ticketd** (`ticketd serve`, local acknowledgement: its own log fsynced);
//! - against **three ticketd cluster nodes** (`ticketd serve --cluster-node`, acknowledgement
//!   once each group is in the R3 log stream and the owner's log; every node also follows every
//!   partition's log for its read models), once for each partition count of `--e2e-partitions`
//!   (16, the default count, and 3, one per node: a partition has one fenced append in flight,
//!   so its group of commands holds at most the clients waiting on it, and every per-group cost
//!   is paid per fewer commands the more partitions share the clients).
//!
//! All on the same three nats-servers (`sync_interval: always`, the event stream R3), each
//! ticketd with a data directory of its own; every stream is deleted between two runs (a
//! cluster's partition count is fixed in its log stream). A command is counted when it is
//! accepted; an `UNAVAILABLE` (none expected: nothing moves during the phase) is counted apart.
//! Every ticketd serves its `/metrics` on a free port, read before and after the load: the
//! difference says how many commands a group commit held, how long its fenced publish and its
//! fsync took, and how long a command spent in the command service ([`Inside`]).

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use prost::Message;
use serde::Serialize;
use ticket_proto::pb;

use crate::failover::{Node, agent, opening, start};
use crate::stats::{Phase, histogram};

#[derive(Debug, Serialize)]
pub struct EndToEnd {
    pub clients: usize,
    pub single: Phase,
    /// What the single ticketd's own metrics say of the phase.
    pub single_inside: Inside,
    /// Three cluster nodes, once per partition count.
    pub clusters: Vec<Nodes>,
}

/// Three cluster nodes of a cluster of `partitions` partitions, end to end.
#[derive(Debug, Serialize)]
pub struct Nodes {
    pub partitions: u16,
    pub phase: Phase,
    /// Its commands/s divided by the single node's.
    pub ratio: f64,
    /// `UNAVAILABLE` answers.
    pub unavailable: u64,
    /// What the nodes' own metrics say of the phase (the three added up).
    pub inside: Inside,
}

/// Where a phase's commands spent their time inside ticketd, from the processes' `/metrics`
/// read before and after the load (the difference: the load alone): how many commands a group
/// commit held, how long its fenced publish to the log stream and its fsync took, and how long
/// a command took in the command service (decided, appended, durable). Means over the phase;
/// `None` where nothing was recorded (no fenced publish on one ticketd).
#[derive(Debug, Default, Serialize)]
pub struct Inside {
    pub group_commits: u64,
    pub appends_per_group: Option<f64>,
    pub fenced_publish_ms: Option<f64>,
    pub fsync_ms: Option<f64>,
    pub command_in_service_ms: Option<f64>,
}

/// The sums and counts of the histograms of `/metrics` pages, by name, every label set added.
#[derive(Debug, Default, Clone)]
struct Histograms(std::collections::BTreeMap<String, (f64, f64)>);

impl Histograms {
    /// Reads every node's `/metrics` (a node that does not answer is left out: its share is
    /// then missing from the means, which stay means).
    fn read(nodes: &[Node]) -> Self {
        let mut all = Self::default();
        for node in nodes {
            if let Ok((200, page)) = ticket_testkit::http_get(node.ops_port, "/metrics") {
                all.add(&page);
            }
        }
        all
    }

    fn add(&mut self, page: &str) {
        for line in page.lines().filter(|l| !l.starts_with('#')) {
            let Some((key, value)) = line.rsplit_once(' ') else { continue };
            let Ok(value) = value.trim().parse::<f64>() else { continue };
            let name = key.split('{').next().unwrap_or(key);
            let (base, is_sum) = match (name.strip_suffix("_sum"), name.strip_suffix("_count")) {
                (Some(base), _) => (base, true),
                (None, Some(base)) => (base, false),
                (None, None) => continue,
            };
            let entry = self.0.entry(base.to_owned()).or_default();
            if is_sum {
                entry.0 += value;
            } else {
                entry.1 += value;
            }
        }
    }

    /// What was recorded between `before` and this reading: (sum, count) of `name`.
    fn since(&self, before: &Self, name: &str) -> (f64, f64) {
        let (now, then) =
            (self.0.get(name).copied().unwrap_or_default(), before.0.get(name).copied().unwrap_or_default());
        (now.0 - then.0, now.1 - then.1)
    }

    fn inside(&self, before: &Self) -> Inside {
        let mean = |name: &str, scale: f64| {
            let (sum, count) = self.since(before, name);
            (count > 0.0).then(|| scale * sum / count)
        };
        Inside {
            group_commits: self.since(before, "ticketd_log_group_commit_appends").1.max(0.0) as u64,
            appends_per_group: mean("ticketd_log_group_commit_appends", 1.0),
            fenced_publish_ms: mean("ticketd_log_replicate_duration_seconds", 1000.0),
            fsync_ms: mean("ticketd_log_fsync_duration_seconds", 1000.0),
            command_in_service_ms: mean("ticketd_command_duration_seconds", 1000.0),
        }
    }
}

/// [`load`] against `nodes`, with what their metrics say of it.
async fn measured(
    nodes: &[Node],
    connections: &[async_nats::Client],
    clients: usize,
    seconds: f64,
    label: &str,
) -> anyhow::Result<(Phase, u64, Inside)> {
    let before = Histograms::read(nodes);
    let (phase, unavailable) = load(connections, clients, seconds, label).await?;
    let inside = Histograms::read(nodes).inside(&before);
    Ok((phase, unavailable, inside))
}

/// An `open` of a fresh ticket (the service places it), or the agent's response on `ticket`.
fn command(id: String, ticket: Option<&str>) -> (String, pb::Command) {
    let (subject, ticket_id, body) = match ticket {
        None => ("tickets.cmd.open", String::new(), opening(pb::Severity::B)),
        Some(ticket) => (
            "tickets.cmd.record_agent_response",
            ticket.to_owned(),
            Some(pb::command::Body::RecordAgentResponse(pb::RecordAgentResponse { message: "looking into it".into() })),
        ),
    };
    (subject.to_owned(), pb::Command { command_id: id, ticket_id, actor: agent(), body, ..Default::default() })
}

/// `clients` requesters over `connections` for `seconds`: each opens a ticket, then answers it.
async fn load(
    connections: &[async_nats::Client],
    clients: usize,
    seconds: f64,
    label: &str,
) -> anyhow::Result<(Phase, u64)> {
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let client = connections[c % connections.len()].clone();
        let label = format!("{label}-{c}");
        tasks.push(tokio::spawn(async move {
            let (mut h, mut ok, mut unavailable) = (histogram(), 0u64, 0u64);
            let mut ticket: Option<String> = None;
            for n in 0u64.. {
                if Instant::now() >= deadline {
                    break;
                }
                let (subject, wire) = command(format!("{label}-{n}"), ticket.as_deref());
                let sent = Instant::now();
                let reply = client.request(subject, wire.encode_to_vec().into()).await?;
                match pb::CommandReply::decode(reply.payload)?.result {
                    Some(pb::command_reply::Result::Accepted(accepted)) => {
                        h.record(sent.elapsed().as_micros() as u64).ok();
                        ok += 1;
                        ticket = if ticket.is_some() { None } else { Some(accepted.ticket_id) };
                    }
                    Some(pb::command_reply::Result::Error(e)) if e.code == pb::ErrorCode::Unavailable as i32 => {
                        unavailable += 1;
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    Some(pb::command_reply::Result::Error(e)) => anyhow::bail!("refused: {e:?}"),
                    None => anyhow::bail!("an empty reply"),
                }
            }
            anyhow::Ok((h, ok, unavailable))
        }));
    }
    let (mut h, mut ok, mut unavailable) = (histogram(), 0, 0);
    for task in tasks {
        let (th, tok, tu) = task.await??;
        h.add(&th).context("merge")?;
        ok += tok;
        unavailable += tu;
    }
    Ok((Phase::new(ok, ok, 0, start.elapsed().as_secs_f64(), &h), unavailable))
}

/// Sends opens until one is accepted (every partition served, for the cluster).
async fn until_serving(client: &async_nats::Client, label: &str) -> anyhow::Result<()> {
    let started = Instant::now();
    for attempt in 0.. {
        anyhow::ensure!(started.elapsed() < Duration::from_secs(180), "{label}: not serving within 180 s");
        let (subject, wire) = command(format!("{label}-warm-{attempt}"), None);
        let reply =
            tokio::time::timeout(Duration::from_secs(2), client.request(subject, wire.encode_to_vec().into())).await;
        if let Ok(Ok(reply)) = reply
            && matches!(pb::CommandReply::decode(reply.payload)?.result, Some(pb::command_reply::Result::Accepted(_)))
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    unreachable!("the loop returns")
}

/// Stops the nodes with SIGTERM and waits for them.
fn terminate(nodes: &mut [Node]) {
    for node in nodes.iter() {
        let _ = std::process::Command::new("kill").arg("-TERM").arg(node.child.id().to_string()).status();
    }
    for node in nodes.iter_mut() {
        let _ = node.child.wait();
    }
}

/// Runs the single node, then three cluster nodes for each count of `partitions`, with the
/// `ticketd` binary, data and logs under `dir`, on three nats-servers started with
/// `nats_config`.
pub async fn run(
    ticketd: &Path,
    dir: &Path,
    nats_config: std::path::PathBuf,
    clients: usize,
    seconds: f64,
    partitions: &[u16],
) -> anyhow::Result<EndToEnd> {
    anyhow::ensure!(
        partitions.iter().all(|p| *p >= 3),
        "--e2e-partitions: three nodes need at least 3 partitions each run"
    );
    let servers = ticket_testkit::Cluster::start_with(3, Some(nats_config))?;
    servers.wait_routed(Duration::from_secs(30))?;
    let urls = servers.urls();
    let mut connections = Vec::new();
    for node in &servers.nodes {
        connections.push(async_nats::connect(node.url()).await?);
    }

    // One ticketd, local acknowledgement.
    let single_config = dir.join("single.toml");
    std::fs::write(&single_config, "[stream]\nreplicas = 3\n[shutdown]\ndeadline_secs = 5\n")?;
    let mut single = vec![start(ticketd, &urls, dir, &single_config, None, "single")?];
    until_serving(&connections[0], "single").await?;
    eprintln!("cluster: end to end, one ticketd: {clients} clients for {seconds} s");
    let (single_phase, _, single_inside) = measured(&single, &connections, clients, seconds, "single").await?;
    terminate(&mut single);

    let mut clusters = Vec::new();
    for (run, count) in partitions.iter().enumerate() {
        delete_streams(&connections[0]).await?;
        let (phase, unavailable, inside) =
            nodes(ticketd, dir, &urls, &connections, clients, seconds, *count, run).await?;
        let ratio = if single_phase.commands_per_sec > 0.0 {
            phase.commands_per_sec / single_phase.commands_per_sec
        } else {
            0.0
        };
        clusters.push(Nodes { partitions: *count, phase, ratio, unavailable, inside });
    }
    Ok(EndToEnd { clients, single: single_phase, single_inside, clusters })
}

/// Deletes every stream of the account (the event streams, the log stream, the buckets): the
/// next run starts a cluster of its own.
async fn delete_streams(client: &async_nats::Client) -> anyhow::Result<()> {
    use futures::TryStreamExt;
    let js = async_nats::jetstream::new(client.clone());
    let names: Vec<String> = js.stream_names().try_collect().await?;
    for name in names {
        js.delete_stream(&name).await.with_context(|| format!("delete the stream {name}"))?;
    }
    Ok(())
}

/// Three cluster nodes of a cluster of `count` partitions (data under `dir/nodes-<count>`),
/// settled on their shares, under the load for `seconds`.
#[allow(clippy::too_many_arguments)]
async fn nodes(
    ticketd: &Path,
    dir: &Path,
    urls: &str,
    connections: &[async_nats::Client],
    clients: usize,
    seconds: f64,
    count: u16,
    run: usize,
) -> anyhow::Result<(Phase, u64, Inside)> {
    let dir = dir.join(format!("nodes-{run}-{count}"));
    std::fs::create_dir_all(&dir)?;
    let cluster_config = dir.join("nodes.toml");
    std::fs::write(
        &cluster_config,
        format!(
            "[cluster]\npartitions = {count}\nreplicas = 3\n[stream]\nreplicas = 3\n[shutdown]\ndeadline_secs = 5\n"
        ),
    )?;
    let mut nodes = ["e2e-a", "e2e-b", "e2e-c"]
        .iter()
        .map(|name| start(ticketd, urls, &dir, &cluster_config, Some(name), name))
        .collect::<anyhow::Result<Vec<_>>>()?;
    // Every partition served, and the nodes settled on their shares.
    for round in 0..3 {
        until_serving(&connections[round % 3], "nodes").await?;
    }
    // Settled: every partition owned, by the three nodes, and no partition changing owner for
    // SETTLED (the nodes balance for a while after they all serve: a handover under the load
    // would make requests wait, or answer UNAVAILABLE past the handover wait).
    const SETTLED: Duration = Duration::from_secs(5);
    let deadline = Instant::now() + Duration::from_secs(120);
    let probe = ticket_client::Client::new(connections[0].clone());
    let mut stable: Option<(Vec<String>, Instant)> = None;
    loop {
        let status = probe.cluster_status().await.map_err(|e| anyhow::anyhow!("{e}"))?;
        let owners: Vec<String> = status.partitions.iter().map(|p| p.owner.clone()).collect();
        let shared =
            owners.iter().all(|o| !o.is_empty()) && owners.iter().collect::<std::collections::BTreeSet<_>>().len() == 3;
        stable = match stable {
            Some((before, since)) if shared && before == owners => {
                if since.elapsed() >= SETTLED {
                    break;
                }
                Some((before, since))
            }
            Some(_) | None => shared.then(|| (owners, Instant::now())),
        };
        anyhow::ensure!(Instant::now() < deadline, "the three nodes did not settle on the partitions within 120 s");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    eprintln!(
        "cluster: end to end, three ticketd cluster nodes, {count} partitions: {clients} clients for {seconds} s"
    );
    let outcome = measured(&nodes, connections, clients, seconds, &format!("nodes-{count}")).await;
    terminate(&mut nodes);
    outcome
}
