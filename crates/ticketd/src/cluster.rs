//! `ticketd serve` as a node of a cluster (`[cluster]`, `--cluster-node`; ADR 0015).
//!
//! The node keeps a fair share of the partitions under leases (`ticket-cluster`). On each
//! partition it serves it runs an engine of that partition (its fenced, replicated sled log,
//! command service, timer and read models, under `<data_dir>/partitions/<p>/`), the API's share
//! of the partition (this node's requests about its tickets, and those other nodes forward on
//! `tickets.part.<p>.>`), and the partition's outbox to the public event stream, which starts
//! from the partition's watermark shared in `[cluster] watermark_bucket` (what the previous
//! owner published after it is sent again and dropped by the stream as a duplicate: the same
//! `Nats-Msg-Id`). Every node serves the public endpoints and routes each request to the
//! ticket's partition.
//!
//! Every node also keeps a copy of every partition's log, followed from the log stream, with
//! read models on each (`<data_dir>/replicas/<p>/`): a customer's tickets, the board and the
//! compliance report are answered from them on any node, and so is a ticket's query while its
//! partition has no owner.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use async_nats::jetstream::{self, kv};
use futures::future::BoxFuture;
use ticket_cluster::{
    LeaseConfig, Leases, LogStream, LogStreamConfig, NodeConfig, Owned, PartitionService, Serving, StatusSources,
};
use ticket_domain::{Partitions, Policy};
use ticket_engine::{DataDir, Engine, EngineClock, EngineConfig, ProjectorConfig, SledLog};
use ticket_log::EventLog;
use ticket_nats::publisher::{self, PublisherConfig, Reconcile};
use ticket_nats::{ClusterApi, PartitionApi};
use ticket_proto::pb;
use tokio::sync::watch;
use tracing::{error, info, warn};

use crate::config::Config;
use crate::serve::Nats;

/// What a node runs on each partition it serves.
struct Engines {
    data_dir: PathBuf,
    policy: Arc<Policy>,
    timer: Option<ticket_timer::TimerConfig>,
    projector: ProjectorConfig,
    api: ClusterApi<SledLog>,
    js: jetstream::Context,
    publisher: PublisherConfig,
    watermarks: kv::Store,
    /// How long stopping one partition's engine may take (well within a lease's time to live).
    stop_deadline: Duration,
}

/// One partition served: its engine, its share of the API, its outbox.
struct PartitionEngine {
    partition: ticket_domain::Partition,
    engine: Engine,
    /// Taken when the partition stops answering.
    api: Option<PartitionApi>,
    stop_publishing: watch::Sender<bool>,
    publisher: tokio::task::JoinHandle<Result<(), publisher::PublishError>>,
    deadline: Duration,
}

impl PartitionService for Engines {
    fn start(&self, owned: Owned) -> BoxFuture<'static, Result<Box<dyn Serving>, String>> {
        let partition = owned.partition;
        let config = EngineConfig {
            data_dir: DataDir::new(self.data_dir.join("partitions").join(partition.to_string())),
            clock: EngineClock::Wall,
            timer: self.timer.clone(),
            projector: Some(self.projector.clone()),
            ..EngineConfig::new(DataDir::new(&self.data_dir), self.policy.clone())
        };
        let (api, js, publisher_config) = (self.api.clone(), self.js.clone(), self.publisher.clone());
        let lease = owned.lease.clone();
        let reconcile = Reconcile::Shared {
            store: Box::new(self.watermarks.clone()),
            key: format!("p{}", partition.index()),
            partition: partition.index(),
            held: publisher::Held(Arc::new(move || lease.held())),
        };
        let deadline = self.stop_deadline;
        Box::pin(async move {
            let engine = Engine::start_on(owned.log.clone(), config).await.map_err(|e| e.to_string())?;
            let Some(views) = engine.views().cloned() else {
                engine.stop(deadline).await;
                return Err("the partition's engine runs no projector".to_owned());
            };
            // Answers only while the lease is certainly this node's and the log takes appends
            // (a log stopped by the fence may lack a group the stream has).
            let (lease, log) = (owned.lease.clone(), owned.log.clone());
            let held: ticket_nats::LeaseCheck = Arc::new(move || lease.held() && log.stopped().is_none());
            let api = match api.serve(partition, engine.service().clone(), views, held).await {
                Ok(api) => api,
                Err(e) => {
                    engine.stop(deadline).await;
                    return Err(e.to_string());
                }
            };
            let (stop_publishing, stopped) = watch::channel(false);
            let publisher =
                tokio::spawn(publisher::run_with(owned.log.clone(), js, publisher_config, reconcile, stopped));
            info!(partition = partition.index(), head = owned.log.head(), "partition's engine started");
            Ok(Box::new(PartitionEngine { partition, engine, api: Some(api), stop_publishing, publisher, deadline })
                as Box<dyn Serving>)
        })
    }
}

impl Serving for PartitionEngine {
    fn stop_answering(&mut self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            if let Some(api) = self.api.take()
                && !api.stop(self.deadline).await
            {
                warn!(
                    partition = self.partition.index(),
                    "requests were still being answered when the partition stopped"
                );
            }
        })
    }

    fn stop(mut self: Box<Self>) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            self.stop_answering().await;
            let PartitionEngine { partition, engine, api: _, stop_publishing, mut publisher, deadline } = *self;
            engine.stop(deadline).await;
            // What is not published now, the next owner publishes from the shared watermark.
            stop_publishing.send_replace(true);
            match tokio::time::timeout(deadline, &mut publisher).await {
                Ok(Ok(Ok(()))) => {}
                Ok(Ok(Err(e))) => warn!(partition = partition.index(), error = %e, "the outbox was not drained"),
                Ok(Err(e)) => warn!(partition = partition.index(), error = %e, "the publisher failed"),
                Err(_) => {
                    publisher.abort();
                    warn!(partition = partition.index(), "the outbox was not drained by the deadline");
                }
            }
            info!(partition = partition.index(), "partition's engine stopped");
        })
    }
}

/// This node's copies of every partition's log, following the log stream, and the read models
/// on each (`<data_dir>/replicas/<p>/`): what the queries that read every partition answer from.
struct Copies {
    followers: ticket_cluster::Followers,
    projectors: Vec<ticket_engine::ProjectorTask>,
    stop: watch::Sender<bool>,
}

impl Copies {
    /// Catches every partition's copy up (retried until JetStream answers), starts the read
    /// models on each and hands them to `api`.
    async fn start(
        js: jetstream::Context,
        node: &NodeConfig,
        projector: ProjectorConfig,
        copy_linger: Duration,
        policy: Arc<Policy>,
        api: &ClusterApi<SledLog>,
    ) -> anyhow::Result<Self> {
        // The partition count was checked at start: the copies only read the stream.
        let log = LogStreamConfig { partitions: None, ..node.log.clone() };
        let stream = patiently("the partitions' log stream", || LogStream::ensure(js.clone(), log.clone())).await?;
        let follow = ticket_cluster::FollowConfig {
            linger: copy_linger,
            ..ticket_cluster::FollowConfig::new(node.data_dir.join("replicas"), node.partitions)
        };
        let followers = patiently("this node's copies of the partitions", || {
            ticket_cluster::Followers::start(stream.clone(), follow.clone())
        })
        .await?;
        let (stop, stopped) = watch::channel(false);
        let (mut views, mut projectors) = (std::collections::BTreeMap::new(), Vec::new());
        for (partition, log) in followers.logs() {
            let dir = DataDir::new(follow.dir(*partition));
            let (view, task) = ticket_engine::start_views(log.clone(), dir, projector.clone(), stopped.clone()).await?;
            views.insert(*partition, view);
            projectors.push(task);
        }
        info!(partitions = views.len(), "this node's read models of every partition started");
        let copies = Arc::new(CopyStates(followers.copies().clone()));
        api.read_from(ticket_nats::Replicas { views, policy, copies });
        Ok(Self { followers, projectors, stop })
    }

    /// Stops the read models (each flushed, within `deadline`), then the following.
    async fn stop(self, deadline: Duration) {
        self.stop.send_replace(true);
        let until = tokio::time::Instant::now() + deadline;
        for task in self.projectors {
            match tokio::time::timeout_at(until, task).await {
                Ok(Ok(Ok(()))) => {}
                Ok(Ok(Err(e))) => {
                    warn!(error = %e, "a copy's read models stopped with an error (rebuilt from the copy)")
                }
                Ok(Err(e)) => warn!(error = %e, "a copy's projector failed"),
                Err(_) => warn!("a copy's read models were not flushed by the deadline (caught up at the next start)"),
            }
        }
        let _ = tokio::time::timeout_at(until, self.followers.stop()).await;
    }
}

/// Where this node's copies stand, as the API asks.
struct CopyStates(ticket_cluster::Copies);

impl ticket_nats::CopyStatus for CopyStates {
    fn broken(&self, partition: ticket_domain::Partition) -> Option<String> {
        self.0.state(partition).broken
    }

    fn current(&self, partition: ticket_domain::Partition) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(self.0.current(partition))
    }
}

/// The operators' cluster endpoints (`tickets.admin.cluster`, `tickets.admin.move`), on the
/// cluster's streams and buckets (opened at the first request, once the node has made sure they
/// exist).
struct Control {
    js: jetstream::Context,
    node: NodeConfig,
    watermarks: kv::Store,
    sources: tokio::sync::OnceCell<StatusSources>,
}

impl Control {
    async fn sources(&self) -> Result<&StatusSources, String> {
        self.sources
            .get_or_try_init(|| async {
                let (js, node) = (&self.js, &self.node);
                let log = LogStreamConfig { partitions: None, ..node.log.clone() };
                let stream = LogStream::ensure(js.clone(), log).await.map_err(|e| e.to_string())?;
                let leases = Leases::ensure(js, node.leases.clone()).await.map_err(|e| e.to_string())?;
                let nodes = js.get_key_value(&node.nodes_bucket).await.map_err(|e| e.to_string())?;
                let placement = ticket_cluster::Placement::ensure(js, &node.placement_bucket, node.leases.replicas)
                    .await
                    .map_err(|e| e.to_string())?;
                Ok::<_, String>(StatusSources {
                    partitions: node.partitions,
                    stream,
                    leases,
                    nodes,
                    watermarks: Some(self.watermarks.clone()),
                    placement,
                })
            })
            .await
    }
}

fn unavailable(what: &str, e: &dyn std::fmt::Display) -> pb::Error {
    pb::Error { code: pb::ErrorCode::Unavailable as i32, message: format!("{what}: {e}"), details: Default::default() }
}

impl ticket_nats::ClusterControl for Control {
    fn status(&self) -> BoxFuture<'_, Result<pb::ClusterStatus, String>> {
        Box::pin(async move { self.sources().await?.read().await })
    }

    fn place(
        &self,
        partition: ticket_domain::Partition,
        node: String,
    ) -> BoxFuture<'_, Result<pb::PartitionMove, pb::Error>> {
        Box::pin(async move {
            let sources = self.sources().await.map_err(|e| unavailable("the cluster's buckets", &e))?;
            let live = sources.live_nodes().await.map_err(|e| unavailable("the live nodes", &e))?;
            if !live.contains(&node) {
                return Err(pb::Error {
                    code: pb::ErrorCode::MalformedRequest as i32,
                    message: format!("node: {node:?} is not a live node of the cluster (live: {})", live.join(", ")),
                    details: Default::default(),
                });
            }
            let from = sources.leases.holder(partition).await.map_err(|e| unavailable("the lease", &e))?;
            sources.placement.place(partition, &node).await.map_err(|e| unavailable("the placement", &e))?;
            let from = from.map(|(owner, _)| owner).unwrap_or_default();
            info!(partition = partition.index(), from, to = node, "partition placed by an operator");
            Ok(pb::PartitionMove { partition: u32::from(partition.index()), from, to: node })
        })
    }

    fn node(&self) -> &str {
        &self.node.name
    }
}

/// How long the start waits for JetStream (a fresh NATS cluster elects its leaders first).
const SETUP_PATIENCE: Duration = Duration::from_secs(120);

/// `attempt` until it succeeds, every second for up to [`SETUP_PATIENCE`], saying what it waits
/// for; the last error past that.
async fn patiently<T, E, F>(what: &str, mut attempt: impl FnMut() -> F) -> anyhow::Result<T>
where
    F: std::future::Future<Output = Result<T, E>>,
    E: std::fmt::Display,
{
    let started = tokio::time::Instant::now();
    loop {
        match attempt().await {
            Ok(done) => return Ok(done),
            Err(e) if started.elapsed() < SETUP_PATIENCE => {
                warn!(what, error = %e, waited_secs = started.elapsed().as_secs(), "waiting for JetStream");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(e) => anyhow::bail!("{what}: {e}"),
        }
    }
}

/// Serves as a node of the cluster until SIGTERM or SIGINT, then hands every partition over.
pub(crate) async fn serve(
    config: Config,
    nats: Nats,
    api_config: ticket_nats::ApiConfig,
    policy: Arc<Policy>,
    ops: crate::ops::Ops,
    early: Option<crate::serve::ShutdownSignal>,
) -> anyhow::Result<()> {
    let settings = &config.cluster;
    let partitions = Partitions::new(settings.partitions).context("cluster.partitions")?;
    let replicas = settings.replicas.max(1);
    let ttl = Duration::from_secs(settings.lease_ttl_secs.max(1));
    let client = nats.client.clone();
    // The node's own streams (the partitions' log, leases, live nodes, watermarks) are in
    // ticketd's account; the public event streams are where `[stream] api_prefix` says.
    let own = jetstream::new(client.clone());
    let public = jetstream::with_prefix(client.clone(), &config.stream.api_prefix);
    // The partition count is the cluster's, recorded in its log stream when the cluster was
    // created: a node configured with another one would place tickets in other partitions than
    // the cluster, so it stops here, before it routes anything.
    let log = LogStreamConfig { replicas, partitions: Some(partitions), ..LogStreamConfig::default() };
    patiently("the partitions' log stream", || async {
        match LogStream::ensure(own.clone(), log.clone()).await {
            Err(
                e @ (ticket_cluster::StreamError::PartitionCount { .. }
                | ticket_cluster::StreamError::UnreadablePartitionCount { .. }),
            ) => Ok(Err(e)),
            other => other.map(|_| Ok(())),
        }
    })
    .await??;
    let bucket = kv::Config {
        bucket: settings.watermark_bucket.clone(),
        description: "ticketd: each partition's position published to the event stream (ADR 0015)".into(),
        history: 1,
        num_replicas: replicas,
        storage: jetstream::stream::StorageType::File,
        ..Default::default()
    };
    let watermarks = patiently("the watermarks' bucket", || own.create_key_value(bucket.clone())).await?;
    let mut publisher_config = config.publisher();
    publisher_config.replicas = publisher_config.replicas.max(replicas);
    publisher_config.share_every = Duration::from_millis(settings.watermark_share_ms);
    publisher_config.linger = Duration::from_millis(settings.outbox_linger_ms);
    patiently("the event streams", || publisher::ensure_stream(&public, &publisher_config)).await?;

    let forward_timeout = Duration::from_millis(settings.forward_timeout_ms.max(1));
    let handover_wait = Duration::from_millis(settings.handover_wait_ms);
    let mut node_config = NodeConfig::new(settings.node.clone(), config.data_dir.clone(), partitions);
    node_config.log = log.clone();
    node_config.leases = LeaseConfig { ttl, replicas, ..LeaseConfig::default() };
    node_config.renew_every = ttl / 4;
    let control = Arc::new(Control {
        js: own.clone(),
        node: node_config.clone(),
        watermarks: watermarks.clone(),
        sources: tokio::sync::OnceCell::new(),
    });
    let (api, cluster_api) = ticket_nats::start_cluster::<SledLog>(
        client.clone(),
        partitions,
        Arc::new(ticket_engine::SystemClock),
        control,
        api_config,
        (forward_timeout, handover_wait),
    )
    .await?;
    let owner_flush = Duration::from_millis(settings.owner_flush_ms.max(1));
    let timer = if config.timer.enabled {
        Some(ticket_timer::TimerConfig { flush_every: owner_flush, ..config.timer()? })
    } else {
        None
    };
    let copies_api = cluster_api.clone();
    let engines = Engines {
        data_dir: config.data_dir.clone(),
        policy: policy.clone(),
        timer,
        projector: ProjectorConfig { flush_every: owner_flush, ..config.projector() },
        api: cluster_api.clone(),
        js: public,
        publisher: publisher_config,
        watermarks,
        stop_deadline: (ttl / 4).max(Duration::from_secs(1)),
    };
    let engines: Arc<dyn PartitionService> = Arc::new(engines);
    // Tried again while JetStream does not answer; a node configured otherwise than its cluster
    // (another partition count) stops at once.
    let node = patiently("the partitions' log stream and buckets", || async {
        match ticket_cluster::start_serving(own.clone(), node_config.clone(), engines.clone()).await {
            Err(e @ ticket_cluster::NodeError::Misconfigured(_)) => Ok(Err(e)),
            started => started.map(Ok),
        }
    })
    .await??;
    // The copies of every partition catch up beside the partitions this node serves; until they
    // have, the queries that read every partition are UNAVAILABLE here.
    let copies_projector =
        ProjectorConfig { flush_every: Duration::from_millis(settings.copy_flush_ms.max(1)), ..config.projector() };
    let copies = {
        let (js, node_config, projector, policy, api) =
            (own.clone(), node_config.clone(), copies_projector, policy.clone(), copies_api);
        let linger = Duration::from_millis(settings.copy_linger_ms);
        tokio::spawn(async move {
            // Tried until it starts (or the node stops): the queries across partitions wait here.
            loop {
                match Copies::start(js.clone(), &node_config, projector.clone(), linger, policy.clone(), &api).await {
                    Ok(copies) => return copies,
                    Err(e) => {
                        error!(error = %e, "this node's copies of the partitions could not start (the queries that read every partition are UNAVAILABLE here); trying again");
                        tokio::time::sleep(Duration::from_secs(5)).await;
                    }
                }
            }
        })
    };

    let mut outcome = nats.answers().await;
    let answered = outcome.is_ok();
    if answered {
        let signal = early.unwrap_or_else(crate::serve::ShutdownSignal::listen);
        ops.ready();
        info!(
            node = %settings.node,
            partitions = partitions.count(),
            replicas,
            lease_ttl_secs = ttl.as_secs(),
            nats = %nats.url,
            data_dir = %config.data_dir.display(),
            policy = %policy.version(),
            "ticketd ready (cluster node)"
        );
        tokio::select! {
            signal = signal.received() => {
                ops.stopping();
                info!(signal, "shutting down: no new requests, every partition handed over");
            }
            // This process was paused or cut off past the leases' time to live and another
            // process now runs under its node name: its partitions are given up; it exits with
            // an error.
            why = node.replaced() => {
                ops.stopping();
                error!(node = %settings.node, why, "shutting down: this node's name is another process's now");
                outcome = Err(anyhow::anyhow!(why));
            }
        }
    }
    let deadline = if answered { Duration::from_secs(config.shutdown.deadline_secs) } else { Duration::ZERO };
    crate::serve::arm_exit_watchdog(deadline + crate::serve::SHUTDOWN_GRACE);
    let started = tokio::time::Instant::now();
    if !api.stop(deadline).await {
        warn!("commands were still running at the shutdown deadline");
    }
    let left = deadline.saturating_sub(started.elapsed());
    if tokio::time::timeout(left, node.stop()).await.is_err() {
        warn!("the partitions were not all handed over by the deadline; their leases expire");
    }
    if copies.is_finished() {
        match copies.await {
            Ok(copies) => copies.stop(deadline.saturating_sub(started.elapsed())).await,
            Err(e) => warn!(error = %e, "starting this node's copies of the partitions failed"),
        }
    } else {
        copies.abort();
        warn!(
            "this node's copies of the partitions were still being caught up (they go on from there at the next start)"
        );
    }
    let _ = tokio::time::timeout(deadline.saturating_sub(started.elapsed()), client.flush()).await;
    info!(took_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX), "ticketd stopped (cluster node)");
    outcome
}
