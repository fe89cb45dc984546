//! A node of the cluster: it keeps a fair share of the partitions, and for each partition it
//! owns, a sled log fed through the fence (ADR 0015).
//!
//! Every `renew_every` the node:
//! 1. says it is alive (a key of its own in the `TICKETS_NODES` bucket, which expires like a
//!    lease, holding this process's id: see [`claim_name`]), and counts the live nodes;
//! 2. renews the lease of every partition it owns, and gives up a partition whose lease was lost
//!    or whose log stopped (deposed: its fence refused an append);
//! 3. takes free partitions while it owns fewer than its share (the partitions divided by the
//!    live nodes, rounded up): for each, its lease, then the fence (a takeover in the log
//!    stream), then its sled log caught up from the stream (beside the rounds, which keep
//!    renewing the lease, from where the last catch-up of that partition ended), and only then
//!    it serves it;
//! 4. hands one partition over if it owns more than its share (a node joined): its log closed,
//!    then its lease released, so another node takes it at once.
//!
//! A node that stops gracefully hands every partition over. A node that dies keeps nothing: its
//! leases expire and the others take its partitions; if it was only paused, its next append
//! meets the new owner's takeover.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, kv};
use bytes::Bytes;
use futures::StreamExt;
use futures::future::BoxFuture;
use ticket_domain::{Partition, Partitions};
use ticket_log::{EventLog, Replicator};
use ticket_log_sled::{SledConfig, SledLog};
use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::fence::{LogStream, LogStreamConfig, StreamError};
use crate::lease::{Lease, LeaseConfig, LeaseWatch, Leases};
use crate::partition_log::{StreamReplicator, catch_up_remembered};
use crate::placement::Placement;

/// How a node runs.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// The node's name, unique in the cluster.
    pub name: String,
    /// Partition `p`'s log is under `<data_dir>/partitions/<p>/log`.
    pub data_dir: PathBuf,
    pub partitions: Partitions,
    pub log: LogStreamConfig,
    pub leases: LeaseConfig,
    /// The node's round: renew, rebalance (a fraction of the leases' time to live).
    pub renew_every: Duration,
    /// The bucket of live nodes.
    pub nodes_bucket: String,
    /// The bucket of the partitions operators placed (`ticketctl cluster move`).
    pub placement_bucket: String,
}

impl NodeConfig {
    pub fn new(name: impl Into<String>, data_dir: impl Into<PathBuf>, partitions: Partitions) -> Self {
        let leases = LeaseConfig::default();
        Self {
            name: name.into(),
            data_dir: data_dir.into(),
            partitions,
            log: LogStreamConfig::default(),
            renew_every: leases.ttl / 4,
            leases,
            nodes_bucket: "TICKETS_NODES".to_owned(),
            placement_bucket: "TICKETS_PLACEMENT".to_owned(),
        }
    }

    fn log_dir(&self, partition: Partition) -> PathBuf {
        self.data_dir.join("partitions").join(partition.to_string()).join("log")
    }

    /// Where a partition's last catch-up ended in the stream (where the next one starts).
    fn hint_file(&self, partition: Partition) -> PathBuf {
        self.data_dir.join("partitions").join(partition.to_string()).join("stream-sequence")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("the cluster's streams: {0}")]
    Setup(String),
    /// The node is configured otherwise than the cluster it joins (its partition count): trying
    /// again does not help.
    #[error("{0}")]
    Misconfigured(String),
}

/// Claims the node's name for this process (`instance`) in the live nodes' bucket, and returns
/// the revision of its first word. A name is one process's: two processes under one name would
/// both answer as that node, and the balance would count them as one.
///
/// The key is created only while absent. If it is there, the last word under this name is
/// another process's: one that was killed (its word expires within the time to live: this waits
/// for that), or one that runs (it says it is alive again before then: refused, as
/// misconfigured). A node stopped gracefully deleted its word, so its restart claims at once.
pub async fn claim_name(nodes: &kv::Store, config: &NodeConfig, instance: &str) -> Result<u64, NodeError> {
    let name = &config.name;
    let nats = |e: &dyn std::fmt::Display| NodeError::Setup(format!("the live nodes: {e}"));
    let patience = config.leases.ttl * 3;
    let started = tokio::time::Instant::now();
    let mut seen: Option<u64> = None;
    loop {
        match nodes.create(name, Bytes::from(instance.to_owned())).await {
            Ok(revision) => {
                if seen.is_some() {
                    info!(node = %name, waited_ms = started.elapsed().as_millis(), "the last word of an earlier process under this node's name expired; the name is this process's");
                }
                return Ok(revision);
            }
            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {}
            Err(e) => return Err(nats(&e)),
        }
        match word(nodes, name).await.map_err(|e| nats(&e))? {
            // This process's own create, whose acknowledgement was lost.
            Some((revision, value)) if value == instance.as_bytes() => return Ok(revision),
            Some((revision, _)) => match seen {
                None => {
                    info!(node = %name, "another process said it was this node less than the leases' time to live ago (killed, or running under the same name); waiting for its word to expire");
                    seen = Some(revision);
                }
                Some(earlier) if revision > earlier => {
                    return Err(NodeError::Misconfigured(format!(
                        "another process is running as node {name:?}: it said it was alive again while this one waited for its word to expire (every node of a cluster needs its own name: [cluster] node)"
                    )));
                }
                Some(_) => {}
            },
            // Deleted or expired in between: created at the next turn.
            None => {}
        }
        if started.elapsed() > patience {
            return Err(NodeError::Setup(format!(
                "the word of an earlier process under the name {name:?} has not expired in {patience:?} (the live nodes' bucket should expire it within the leases' time to live)"
            )));
        }
        tokio::time::sleep(config.renew_every / 2).await;
    }
}

/// The last word under `name` in the live nodes' bucket, read from the bucket stream's leader
/// (a direct get may be answered by a replica that lags, and a revision seen going back and
/// forth would look like a live process): its revision and value; None if it was deleted or
/// expired.
async fn word(nodes: &kv::Store, name: &str) -> Result<Option<(u64, Bytes)>, String> {
    let subject = format!("{}{name}", nodes.prefix);
    match nodes.stream.get_last_raw_message_by_subject(&subject).await {
        Ok(message) => {
            let operation = message.headers.get("KV-Operation").map(|v| v.as_str().to_owned());
            Ok(operation.is_none_or(|op| op == "PUT").then_some((message.sequence, message.payload)))
        }
        Err(e) if e.kind() == jetstream::stream::LastRawMessageErrorKind::NoMessageFound => Ok(None),
        Err(e) => Err(e.to_string()),
    }
}

/// A partition this node serves.
#[derive(Debug, Clone)]
pub struct Owned {
    pub partition: Partition,
    /// Its sled log, caught up from the stream; every append goes through the fence.
    pub log: SledLog,
    /// Whether this node certainly still holds the partition's lease: what it answers without
    /// appending is sent only while it does (see [`LeaseWatch`]).
    pub lease: LeaseWatch,
}

/// What a node runs on each partition it serves (ticketd: the command service, the timer, the
/// outbox, the API's share of the partition). It is started once the partition's log is caught
/// up, and stopped before the log is closed and the lease released.
pub trait PartitionService: Send + Sync + 'static {
    /// Starts serving `owned`. An error leaves the partition to another node (its lease released).
    fn start(&self, owned: Owned) -> BoxFuture<'static, Result<Box<dyn Serving>, String>>;
}

/// A partition being served, stopped by [`Serving::stop`] (or dropped, when the node is aborted).
pub trait Serving: Send + Sync + 'static {
    /// Stops taking requests (those taken are answered first): a handover then releases the
    /// lease at once, so that the next owner takes over while the rest stops. What still runs
    /// here and appends meets the next owner's takeover (the fence).
    fn stop_answering(&mut self) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }

    /// Stops serving: nothing more is appended through it once this returns.
    fn stop(self: Box<Self>) -> BoxFuture<'static, ()>;
}

/// Serves nothing beyond the logs (the node's own tests, and tools that only hold partitions).
#[derive(Debug, Clone, Copy, Default)]
pub struct LogsOnly;

impl PartitionService for LogsOnly {
    fn start(&self, _owned: Owned) -> BoxFuture<'static, Result<Box<dyn Serving>, String>> {
        Box::pin(async { Ok(Box::new(LogsOnly) as Box<dyn Serving>) })
    }
}

impl Serving for LogsOnly {
    fn stop(self: Box<Self>) -> BoxFuture<'static, ()> {
        Box::pin(async {})
    }
}

struct Held {
    owned: Owned,
    lease: Lease,
    serving: Box<dyn Serving>,
}

/// A running node.
#[derive(Debug)]
pub struct NodeHandle {
    owned: watch::Receiver<BTreeMap<Partition, Owned>>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
    replaced: watch::Receiver<Option<String>>,
}

impl NodeHandle {
    /// Resolves once the node learned that another process now runs under its name (this one
    /// was paused or cut off past the time to live, and replaced): why. The node then takes
    /// nothing more and hands every partition over.
    pub async fn replaced(&self) -> String {
        let mut replaced = self.replaced.clone();
        match replaced.wait_for(Option::is_some).await {
            Ok(why) => why.clone().unwrap_or_default(),
            // The node's task ended otherwise: never replaced.
            Err(_) => std::future::pending().await,
        }
    }

    /// The partitions the node serves now (changes as it takes and hands over partitions).
    pub fn owned(&self) -> watch::Receiver<BTreeMap<Partition, Owned>> {
        self.owned.clone()
    }

    /// Stops gracefully: every partition handed over (its log closed, its lease released).
    pub async fn stop(self) {
        self.stop.send_replace(true);
        if let Err(e) = self.task.await {
            warn!(error = %e, "the node's task failed");
        }
    }

    /// Stops without handing anything over, as a crash would (the leases expire).
    pub fn abort(self) {
        self.task.abort();
    }
}

/// Fences the partition, opens its log with the fence as replicator and catches it up from the
/// stream, from the sequence the last catch-up remembered (from the start if that does not fit).
async fn serve(
    stream: &LogStream,
    config: &NodeConfig,
    partition: Partition,
    lease: LeaseWatch,
) -> Result<Owned, String> {
    let fenced = stream.take(partition, &config.name).await.map_err(|e| e.to_string())?;
    let upto = fenced.last();
    let replicator: Arc<dyn Replicator> = Arc::new(StreamReplicator::new(fenced, tokio::runtime::Handle::current()));
    let mut sled = SledConfig::new(config.log_dir(partition));
    sled.replicator = Some(replicator);
    let log = tokio::task::spawn_blocking(move || SledLog::open(sled))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    catch_up_remembered(&log, stream, partition, &config.hint_file(partition), upto)
        .await
        .map_err(|e| e.to_string())?;
    Ok(Owned { partition, log, lease })
}

/// Starts a node on `js` that holds partitions' logs and serves nothing else on them (see
/// [`start_serving`]).
pub async fn start(js: jetstream::Context, config: NodeConfig) -> Result<NodeHandle, NodeError> {
    start_serving(js, config, Arc::new(LogsOnly)).await
}

/// Starts a node on `js` running `service` on each partition it serves: it creates the log
/// stream and the buckets if they are not there.
pub async fn start_serving(
    js: jetstream::Context,
    config: NodeConfig,
    service: Arc<dyn PartitionService>,
) -> Result<NodeHandle, NodeError> {
    let setup = |e: &dyn std::fmt::Display| NodeError::Setup(e.to_string());
    // The stream refuses a node configured with another partition count than the cluster's.
    let log = LogStreamConfig { partitions: Some(config.partitions), ..config.log.clone() };
    let stream = LogStream::ensure(js.clone(), log).await.map_err(|e| {
        if matches!(e, StreamError::PartitionCount { .. } | StreamError::UnreadablePartitionCount { .. }) {
            NodeError::Misconfigured(e.to_string())
        } else {
            setup(&e)
        }
    })?;
    let leases = Leases::ensure(&js, config.leases.clone()).await.map_err(|e| match e {
        crate::lease::LeaseError::Misconfigured(why) => NodeError::Misconfigured(why),
        e @ (crate::lease::LeaseError::Lost { .. } | crate::lease::LeaseError::Nats { .. }) => setup(&e),
    })?;
    let nodes = crate::lease::expiring_bucket(
        &js,
        &config.nodes_bucket,
        "ticketd's live nodes (ADR 0015)",
        config.leases.ttl,
        config.leases.replicas,
    )
    .await
    .map_err(|e| setup(&e))?;
    // A word must expire within the leases' time to live: a restart after a kill waits for it.
    let max_age = nodes.status().await.map_err(|e| setup(&e))?.max_age();
    if max_age != config.leases.ttl {
        return Err(NodeError::Misconfigured(format!(
            "the live nodes' bucket {} keeps a word {max_age:?}, and this node's leases live {:?} (every node of a cluster uses the bucket's)",
            config.nodes_bucket, config.leases.ttl
        )));
    }
    let placement =
        Placement::ensure(&js, &config.placement_bucket, config.leases.replicas).await.map_err(|e| setup(&e))?;
    let instance = uuid::Uuid::now_v7().simple().to_string();
    let word = claim_name(&nodes, &config, &instance).await?;
    let (replaced_tx, replaced) = watch::channel(None);
    let (owned_tx, owned) = watch::channel(BTreeMap::new());
    let (stop, stopped) = watch::channel(false);
    let (caught_up_tx, caught_up) = tokio::sync::mpsc::unbounded_channel();
    let node = Node {
        config,
        stream,
        leases,
        nodes,
        instance,
        word,
        replaced: replaced_tx,
        service,
        held: BTreeMap::new(),
        owned: owned_tx,
        failing: BTreeMap::new(),
        pending: BTreeMap::new(),
        stopping: BTreeMap::new(),
        caught_up: caught_up_tx,
        live: usize::MAX,
        live_nodes: BTreeSet::new(),
        placement,
        placed: BTreeMap::new(),
    };
    let task = tokio::spawn(node.run(stopped, caught_up));
    Ok(NodeHandle { owned, stop, task, replaced })
}

struct Node {
    config: NodeConfig,
    stream: LogStream,
    leases: Leases,
    nodes: kv::Store,
    /// This process's id, the value of its word in the live nodes' bucket.
    instance: String,
    /// The revision of its last word there.
    word: u64,
    /// Set once another process runs under this node's name: the node stops.
    replaced: watch::Sender<Option<String>>,
    service: Arc<dyn PartitionService>,
    held: BTreeMap<Partition, Held>,
    owned: watch::Sender<BTreeMap<Partition, Owned>>,
    /// Partitions that could not be served lately, with the rounds left before trying again
    /// (so that one broken partition does not keep the node from taking the others).
    failing: BTreeMap<Partition, u32>,
    /// Partitions taken over and being caught up from the stream, beside the rounds (which keep
    /// renewing their leases, however long a catch-up takes).
    pending: BTreeMap<Partition, Pending>,
    /// Partitions given up and being stopped (not taken again until their log is closed).
    stopping: BTreeMap<Partition, tokio::task::JoinHandle<()>>,
    /// Told when a pending catch-up ends, so that its partition is served at once rather than
    /// at the next round.
    caught_up: tokio::sync::mpsc::UnboundedSender<Partition>,
    /// The live nodes at the last round (their count, and their names).
    live: usize,
    live_nodes: BTreeSet<String>,
    /// Where operators placed partitions (followed by a watch of the bucket).
    placement: Placement,
    placed: BTreeMap<Partition, String>,
}

/// A partition taken over and being caught up: its lease, the catch-up's task, and the watch
/// of the lease that its [`Owned`] will carry.
type Pending = (Lease, tokio::task::JoinHandle<Result<Owned, String>>, LeaseWatch);

/// The next change of a watched bucket; never, without a watch.
async fn next_change(watch: &mut Option<kv::Watch>) -> Option<Result<kv::Entry, kv::WatcherError>> {
    match watch.as_mut() {
        Some(watch) => watch.next().await,
        None => std::future::pending().await,
    }
}

/// Rounds a partition that could not be served is left alone.
const FAILING_ROUNDS: u32 = 20;

impl Node {
    async fn run(
        mut self,
        mut stopped: watch::Receiver<bool>,
        mut caught_up: tokio::sync::mpsc::UnboundedReceiver<Partition>,
    ) {
        let mut round = tokio::time::interval(self.config.renew_every);
        round.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Released leases are taken at once (a planned handover), not at the next round; so
        // are placements followed.
        let mut changes: Option<kv::Watch> = None;
        let mut placements: Option<kv::Watch> = None;
        // The watches are a shortcut, never in the way of renewals: each (re)creation is given a
        // moment, and tried again a few rounds later if it fails.
        let mut watch_again = tokio::time::Instant::now();
        loop {
            if self.replaced.borrow().is_some() {
                break;
            }
            if (changes.is_none() || placements.is_none()) && tokio::time::Instant::now() >= watch_again {
                let patience = self.config.renew_every / 8;
                if changes.is_none() {
                    changes = tokio::time::timeout(patience, self.leases.watch())
                        .await
                        .ok()
                        .and_then(|watch| watch.map_err(|e| debug!(error = %e, "the leases are not watched")).ok());
                }
                if placements.is_none() {
                    placements = tokio::time::timeout(patience, self.placement.watch())
                        .await
                        .ok()
                        .and_then(|watch| watch.map_err(|e| debug!(error = %e, "the placements are not watched")).ok());
                }
                watch_again = tokio::time::Instant::now() + self.config.renew_every * 4;
            }
            let change = next_change(&mut changes);
            let placed = next_change(&mut placements);
            tokio::select! {
                placed = placed => match placed {
                    Some(Ok(entry)) => {
                        if let Some(partition) = Placement::apply(&entry, self.config.partitions, &mut self.placed) {
                            self.follow_placement(partition).await;
                        }
                    }
                    Some(Err(_)) | None => placements = None,
                },
                _ = round.tick() => self.round().await,
                Some(partition) = caught_up.recv() => self.settle(partition).await,
                change = change => match change {
                    Some(Ok(entry)) => {
                        if let Some(partition) = Leases::released(&entry, self.config.partitions) {
                            debug!(node = %self.config.name, partition = partition.index(), "a lease was released");
                            // The live nodes again first: a node stopping says it left before
                            // it releases its leases, so its partitions are shared among the rest.
                            if let Ok(live) = self.heartbeat().await {
                                self.live = live.len().max(1);
                                self.live_nodes = live;
                            }
                            // A node replaced takes nothing more (it stops at the next turn).
                            if self.replaced.borrow().is_none() {
                                self.take_free(self.share()).await;
                            }
                        }
                    }
                    Some(Err(_)) | None => changes = None,
                },
                changed = stopped.changed() => {
                    if changed.is_err() || *stopped.borrow() {
                        break;
                    }
                }
            }
        }
        // Said first, so that the others count the nodes left when they take its partitions
        // (unless the name is another process's now).
        if self.replaced.borrow().is_none()
            && let Err(e) = self.nodes.delete_expect_revision(&self.config.name, Some(self.word)).await
        {
            warn!(node = %self.config.name, error = %e, "could not say the node left");
        }
        let all: Vec<Partition> = self.held.keys().chain(self.pending.keys()).copied().collect();
        for partition in all {
            self.hand_over(partition).await;
        }
        self.stopped_all().await;
        info!(node = %self.config.name, "node stopped; its partitions handed over");
    }

    async fn round(&mut self) {
        // Renewals first: nothing else in a round may make a lease lapse.
        self.renew().await;
        self.reap_stopped();
        self.failing.retain(|_, rounds| {
            *rounds = rounds.saturating_sub(1);
            *rounds > 0
        });
        let live = match self.heartbeat().await {
            Ok(live) => live,
            Err(e) => {
                warn!(node = %self.config.name, error = %e, "the live nodes could not be counted; keeping what it holds");
                return;
            }
        };
        self.settle_pending().await;
        self.live = live.len().max(1);
        self.live_nodes = live;
        // Partitions placed on another live node go to it.
        let placed_elsewhere: Vec<Partition> =
            self.held.keys().chain(self.pending.keys()).copied().filter(|p| self.placed_elsewhere(*p)).collect();
        for partition in placed_elsewhere {
            info!(node = %self.config.name, partition = partition.index(), to = self.placed.get(&partition).map(String::as_str), "partition moved by an operator: handed over");
            self.hand_over(partition).await;
        }
        let share = self.share();
        let kept = self.held.len() + self.pending.len();
        if kept < share || self.config.partitions.all().any(|p| self.placed_here(p) && !self.holds(p)) {
            self.take_free(share).await;
        } else if kept > share
            && let Some(partition) = self.held.keys().rev().copied().find(|p| !self.placed_here(*p))
        {
            self.hand_over(partition).await;
        }
    }

    /// Whether this node holds (or is taking) `partition`.
    fn holds(&self, partition: Partition) -> bool {
        self.held.contains_key(&partition) || self.pending.contains_key(&partition)
    }

    /// Whether an operator placed `partition` on this node.
    fn placed_here(&self, partition: Partition) -> bool {
        self.placed.get(&partition).is_some_and(|node| *node == self.config.name)
    }

    /// Whether an operator placed `partition` on another node that is live (one that is not
    /// live is not waited for).
    fn placed_elsewhere(&self, partition: Partition) -> bool {
        self.placed.get(&partition).is_some_and(|node| *node != self.config.name && self.live_nodes.contains(node))
    }

    /// Follows a placement of `partition` that just changed: handed over if placed on another
    /// live node, taken if placed here and free.
    async fn follow_placement(&mut self, partition: Partition) {
        if self.replaced.borrow().is_some() {
            return;
        }
        if self.holds(partition) && self.placed_elsewhere(partition) {
            info!(node = %self.config.name, partition = partition.index(), to = self.placed.get(&partition).map(String::as_str), "partition moved by an operator: handed over");
            self.hand_over(partition).await;
        } else if self.placed_here(partition) && !self.holds(partition) {
            self.take_free(self.share()).await;
        }
    }

    /// The partitions this node keeps: all of them divided by the live nodes, rounded up.
    fn share(&self) -> usize {
        usize::from(self.config.partitions.count()).div_ceil(self.live.max(1))
    }

    /// Says this node is alive; returns the nodes that are.
    async fn heartbeat(&mut self) -> Result<BTreeSet<String>, String> {
        self.say_alive().await?;
        let keys = self.nodes.keys().await.map_err(|e| e.to_string())?;
        use futures::TryStreamExt;
        keys.try_collect().await.map_err(|e| e.to_string())
    }

    /// Writes this process's word over its last one (compare-and-set on its revision). If the
    /// last is not its own any more, the word expired (this process was paused or cut off past
    /// the time to live) and is written again, unless another process claimed the name in
    /// between: then this node is replaced, and stops.
    async fn say_alive(&mut self) -> Result<(), String> {
        let name = &self.config.name;
        let mine = Bytes::from(self.instance.clone());
        let refused = match self.nodes.update(name, mine.clone(), self.word).await {
            Ok(revision) => {
                self.word = revision;
                return Ok(());
            }
            Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => e,
            Err(e) => return Err(e.to_string()),
        };
        match self.nodes.create(name, mine).await {
            Ok(revision) => {
                warn!(node = %name, "this node's word had expired (the process was paused or cut off past the leases' time to live); said again");
                self.word = revision;
                return Ok(());
            }
            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {}
            Err(e) => return Err(e.to_string()),
        }
        match word(&self.nodes, name).await? {
            // An earlier word whose acknowledgement was lost had landed: it is this one's.
            Some((revision, value)) if value == self.instance.as_bytes() => {
                self.word = revision;
                Ok(())
            }
            Some(_) => {
                let why = format!(
                    "another process now runs as node {name:?} (this one's word expired while it was paused or cut off, and the name was claimed): this process stops serving"
                );
                tracing::error!(node = %name, "{why}");
                self.replaced.send_replace(Some(why.clone()));
                Err(why)
            }
            None => Err(format!("this node's word was refused ({refused}) and then deleted; said again next round")),
        }
    }

    /// Renews every lease held; drops the partitions whose lease was lost or whose log stopped.
    async fn renew(&mut self) {
        let mut lost = Vec::new();
        let ttl = self.config.leases.ttl;
        for (partition, held) in &mut self.held {
            let stopped = held.owned.log.stopped().is_some();
            match self.leases.renew(&mut held.lease).await {
                Ok(()) if !stopped => held.owned.lease.renewed(held.lease.written(), ttl),
                Ok(()) => lost.push((*partition, "its log stopped: the fence refused an append".to_owned())),
                Err(e) => lost.push((*partition, e.to_string())),
            }
        }
        for (partition, (lease, _, watch)) in &mut self.pending {
            match self.leases.renew(lease).await {
                Ok(()) => watch.renewed(lease.written(), ttl),
                Err(e) => lost.push((*partition, e.to_string())),
            }
        }
        // Nothing more is answered on a lost partition, before any of them is stopped (which
        // takes a while each).
        for (partition, _) in &lost {
            if let Some(held) = self.held.get(partition) {
                held.owned.lease.lapse();
            }
            if let Some((_, _, watch)) = self.pending.get(partition) {
                watch.lapse();
            }
        }
        for (partition, why) in lost {
            warn!(node = %self.config.name, partition = partition.index(), why, "partition given up");
            self.hand_over(partition).await;
        }
    }

    /// Takes free partitions up to `share` (and those placed on this node, beyond it; none placed
    /// on another live node): for each, its lease, then (beside the rounds) the fence, the
    /// catch-up and the start of what serves it. A dead node's partitions are all taken in one
    /// round, each caught up on its own.
    async fn take_free(&mut self, share: usize) {
        for partition in self.config.partitions.all() {
            // Placed here: taken beyond the share; placed on another live node: left to it.
            let placed_here = self.placed_here(partition);
            if !placed_here && (self.held.len() + self.pending.len() >= share || self.placed_elsewhere(partition)) {
                continue;
            }
            if self.holds(partition) || self.stopping.contains_key(&partition) || self.failing.contains_key(&partition)
            {
                continue;
            }
            let lease = match self.leases.acquire(partition, &self.config.name).await {
                Ok(Some(lease)) => lease,
                Ok(None) => continue,
                Err(e) => {
                    warn!(node = %self.config.name, error = %e, "a lease could not be acquired");
                    return;
                }
            };
            let (stream, config) = (self.stream.clone(), self.config.clone());
            let caught_up = self.caught_up.clone();
            let watch = LeaseWatch::default();
            watch.renewed(lease.written(), self.config.leases.ttl);
            let owned_watch = watch.clone();
            let task = tokio::spawn(async move {
                let served = serve(&stream, &config, partition, owned_watch).await;
                let _ = caught_up.send(partition);
                served
            });
            self.pending.insert(partition, (lease, task, watch));
        }
    }

    /// Serves the partitions whose catch-up finished; releases those whose catch-up failed.
    async fn settle_pending(&mut self) {
        let done: Vec<Partition> =
            self.pending.iter().filter(|(_, (_, task, _))| task.is_finished()).map(|(p, _)| *p).collect();
        for partition in done {
            self.settle(partition).await;
        }
    }

    /// Serves `partition` once its catch-up ended (its task is about to return, if it has not);
    /// releases it if the catch-up failed. Nothing if it is not pending any more.
    async fn settle(&mut self, partition: Partition) {
        let Some((lease, task, _)) = self.pending.remove(&partition) else { return };
        let caught_up = task.await.map_err(|e| e.to_string()).and_then(|served| served);
        let started = match caught_up {
            Ok(owned) => match self.service.start(owned.clone()).await {
                Ok(serving) => Ok((owned, serving)),
                Err(e) => {
                    close(owned, &self.config.name).await;
                    Err(e)
                }
            },
            Err(e) => Err(e),
        };
        match started {
            Ok((owned, serving)) => {
                info!(node = %self.config.name, partition = partition.index(), head = owned.log.head(), "partition served");
                self.held.insert(partition, Held { owned, lease, serving });
                self.publish();
            }
            Err(e) => {
                warn!(node = %self.config.name, partition = partition.index(), error = %e, "partition not served; lease released");
                self.failing.insert(partition, FAILING_ROUNDS);
                // Placed here by an operator, it would wait for this node: the placement is
                // dropped (before the lease is released), and another node takes it.
                if self.placed_here(partition) {
                    warn!(node = %self.config.name, partition = partition.index(), "the partition's placement on this node is dropped: it could not be served here");
                    if let Err(e) = self.placement.clear(partition).await {
                        warn!(node = %self.config.name, partition = partition.index(), error = %e, "the placement could not be dropped");
                    }
                }
                let _ = self.leases.release(lease).await;
            }
        }
    }

    /// Stops serving the partition: its requests first, then its lease released (the next owner
    /// takes over at once), then the rest of what serves it and its log.
    async fn hand_over(&mut self, partition: Partition) {
        if let Some((lease, task, watch)) = self.pending.remove(&partition) {
            watch.lapse();
            task.abort();
            let _ = task.await;
            if let Err(e) = self.leases.release(lease).await {
                warn!(node = %self.config.name, partition = partition.index(), error = %e, "lease not released");
            }
            return;
        }
        let Some(held) = self.held.remove(&partition) else { return };
        // The lease is still this node's (a lost one was lapsed when it was found lost): what is
        // being answered is answered; it lapses once nothing more is taken, before its release.
        self.publish();
        // Stopping what serves it takes a while (its requests answered, its engine and outbox
        // stopped): on a task of its own, so that the rounds go on renewing the other leases.
        // The partition is not taken again here until its log is closed.
        let Held { owned, lease, mut serving } = held;
        let (leases, node) = (self.leases.clone(), self.config.name.clone());
        let stopping = tokio::spawn(async move {
            serving.stop_answering().await;
            owned.lease.lapse();
            match leases.release(lease).await {
                Ok(()) => info!(node = %node, partition = partition.index(), "partition handed over"),
                Err(e) => warn!(node = %node, partition = partition.index(), error = %e, "lease not released"),
            }
            serving.stop().await;
            close(owned, &node).await;
        });
        self.stopping.insert(partition, stopping);
    }

    /// Forgets the partitions whose stop has ended (they may be taken again).
    fn reap_stopped(&mut self) {
        self.stopping.retain(|_, task| !task.is_finished());
    }

    /// Waits for every partition being stopped.
    async fn stopped_all(&mut self) {
        for (partition, task) in std::mem::take(&mut self.stopping) {
            if let Err(e) = task.await {
                warn!(node = %self.config.name, partition = partition.index(), error = %e, "stopping a partition failed");
            }
        }
    }

    fn publish(&self) {
        let owned = self.held.iter().map(|(p, h)| (*p, h.owned.clone())).collect();
        self.owned.send_replace(owned);
    }
}

/// Closes a partition's log. Closing waits for its writer, which may be waiting for a publish
/// that needs this runtime: never on one of its workers.
async fn close(owned: Owned, node: &str) {
    let partition = owned.partition;
    if let Err(e) = tokio::task::spawn_blocking(move || drop(owned)).await {
        warn!(node, partition = partition.index(), error = %e, "closing the log failed");
    }
}

#[cfg(test)]
mod tests;
