//! Every partition's log on every node (ADR 0015): a node keeps a copy of each partition's log,
//! owned or not, followed from the log stream, so that it can answer the queries that read every
//! ticket (a customer's tickets, the board, compliance) from read models of its own, and a
//! ticket's queries while its partition changes owner.
//!
//! A copy is written only from the stream (never by a command), so it holds exactly what the
//! stream acknowledged: the replicated truth, behind it by the time an entry takes to arrive.
//! At start each copy is caught up from where it last stood (`<root>/<p>/stream-sequence`), and
//! one that is not a copy of the stream (a stream recreated, a directory reused) is deleted with
//! everything beside it and rebuilt from the stream: it holds nothing the stream does not. Then
//! one ordered consumer of every partition's subject follows the stream, a batch of entries at a
//! time, each partition's groups written in one commit.
//!
//! These copies are not the owner's log (`<data_dir>/partitions/<p>/log`), which a command is
//! appended to through the fence: an owner keeps both.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use prost::Message as _;
use ticket_domain::{Partition, Partitions};
use ticket_log::{EventLog, ReplicaGroup};
use ticket_log_sled::{SledConfig, SledLog};
use ticket_proto::pb;
use ticket_proto::pb::partition_entry::Kind;
use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::fence::{LogStream, StreamError};
use crate::partition_log::{CatchUpError, catch_up_from, catch_up_remembered, remember_flushed};

/// How a node follows the partitions.
#[derive(Debug, Clone)]
pub struct FollowConfig {
    /// Partition `p`'s copy is under `<root>/<p>/log`; what the caller builds from it goes
    /// beside it (and is deleted with it when the copy is rebuilt).
    pub root: PathBuf,
    pub partitions: Partitions,
    /// How often where each copy stands in the stream is written down (where the next start
    /// catches up from).
    pub remember_every: Duration,
    /// The most entries written in one round.
    pub batch: usize,
    /// How long a round waits, from its first entry, for more to arrive before it writes them:
    /// each round writes a partition's groups with one sled batch (each a few synchronous
    /// writes of sled's log, whatever its size), so a busy partition's copy costs a few writes
    /// per `linger` rather than per group. The copies are that much further behind the stream.
    pub linger: Duration,
    /// How long to wait before following again after the stream failed.
    pub retry_every: Duration,
}

impl FollowConfig {
    pub fn new(root: impl Into<PathBuf>, partitions: Partitions) -> Self {
        Self {
            root: root.into(),
            partitions,
            remember_every: Duration::from_secs(5),
            batch: 1024,
            linger: Duration::ZERO,
            retry_every: Duration::from_secs(1),
        }
    }

    /// Partition `p`'s directory: its copy of the log and what is built from it.
    pub fn dir(&self, partition: Partition) -> PathBuf {
        self.root.join(partition.to_string())
    }

    fn hint_file(&self, partition: Partition) -> PathBuf {
        self.dir(partition).join("stream-sequence")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FollowError {
    #[error(transparent)]
    Stream(#[from] StreamError),
    #[error(transparent)]
    CatchUp(#[from] CatchUpError),
    #[error("partition {partition}'s copy of the log: {detail}")]
    Copy { partition: Partition, detail: String },
}

/// Where a copy stands against the stream.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CopyState {
    /// The stream sequence of the partition's last entry the copy has taken in (its groups
    /// written, its takeovers seen).
    pub reached: u64,
    /// Why the copy stopped following the stream, if it did (it is tried again with each new
    /// entry of the partition).
    pub broken: Option<String>,
}

/// Where every copy stands: shared by the follower (which writes it) and its readers.
#[derive(Debug, Clone)]
pub struct Copies {
    stream: LogStream,
    states: Arc<Mutex<BTreeMap<Partition, CopyState>>>,
}

impl Copies {
    /// Where the copy of `partition` stands.
    pub fn state(&self, partition: Partition) -> CopyState {
        self.states
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&partition)
            .cloned()
            .unwrap_or_default()
    }

    /// Whether the copy of `partition` holds every entry the stream has for it now (the stream
    /// is asked); why not if it does not.
    pub async fn current(&self, partition: Partition) -> Result<(), String> {
        let state = self.state(partition);
        if let Some(broken) = state.broken {
            return Err(format!("this node's copy of partition {partition} does not follow the stream: {broken}"));
        }
        let last = self.stream.last(partition).await.map_err(|e| e.to_string())?;
        if last > state.reached {
            return Err(format!(
                "this node's copy of partition {partition} is behind the stream (at stream sequence {}, the partition's last is {last})",
                state.reached
            ));
        }
        Ok(())
    }

    fn set(&self, partition: Partition, state: CopyState) {
        self.states.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(partition, state);
    }
}

/// A node's copies of every partition's log, following the stream until stopped.
#[derive(Debug)]
pub struct Followers {
    logs: BTreeMap<Partition, SledLog>,
    copies: Copies,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Followers {
    /// Opens every partition's copy, catches each up from the stream (rebuilding one that is
    /// not a copy of it, or does not open), then follows the stream.
    pub async fn start(stream: LogStream, config: FollowConfig) -> Result<Self, FollowError> {
        discard_leftovers(&config).await;
        // Entries after this are followed; those before, caught up (what both see is written once).
        let from = stream.last_of_all().await?;
        let opened = futures::future::join_all(config.partitions.all().map(|p| open_copy(&stream, &config, p))).await;
        let (mut logs, mut holding, mut failed) = (BTreeMap::new(), BTreeMap::new(), None);
        let copies = Copies { stream: stream.clone(), states: Arc::default() };
        for copy in opened {
            match copy {
                Ok((partition, log, at, reached)) => {
                    logs.insert(partition, log);
                    holding.insert(partition, at);
                    copies.set(partition, CopyState { reached, broken: None });
                }
                Err(e) => failed = failed.or(Some(e)),
            }
        }
        if let Some(e) = failed {
            // Closing a log waits for its writer: off the async runtime.
            let _ = tokio::task::spawn_blocking(move || drop(logs)).await;
            return Err(e);
        }
        info!(partitions = logs.len(), from, "following every partition's log");
        let (stop, stopped) = watch::channel(false);
        let follower = Follower { stream, config, logs: logs.clone(), holding, copies: copies.clone() };
        let task = tokio::spawn(follower.run(from + 1, stopped));
        Ok(Self { logs, copies, stop, task })
    }

    /// Where every copy stands.
    pub fn copies(&self) -> &Copies {
        &self.copies
    }

    /// Each partition's copy (read-only: only the follower writes it).
    pub fn logs(&self) -> &BTreeMap<Partition, SledLog> {
        &self.logs
    }

    /// Stops following; where each copy stands is written down. The copies close once every
    /// clone of them is dropped.
    pub async fn stop(self) {
        self.stop.send_replace(true);
        if let Err(e) = self.task.await {
            warn!(error = %e, "the follower's task failed");
        }
    }
}

async fn open_log(dir: PathBuf, partition: Partition) -> Result<SledLog, FollowError> {
    let copy = |detail: String| FollowError::Copy { partition, detail };
    // Rebuilt from the stream whatever it loses: not flushed group by group, only before the
    // follower writes down where it stands.
    let config = SledConfig { sync_replicated: false, ..SledConfig::new(dir) };
    tokio::task::spawn_blocking(move || SledLog::open(config))
        .await
        .map_err(|e| copy(e.to_string()))?
        .map_err(|e| copy(e.to_string()))
}

/// The name a discarded copy's directory is renamed to before it is deleted (so that a copy
/// half deleted by a crash is never opened again).
const DISCARDED: &str = ".discarded";

/// Deletes what discarded copies a crash left.
async fn discard_leftovers(config: &FollowConfig) {
    let root = config.root.clone();
    let _ = tokio::task::spawn_blocking(move || {
        let Ok(entries) = std::fs::read_dir(&root) else { return };
        for entry in entries.flatten() {
            if entry.file_name().to_string_lossy().ends_with(DISCARDED)
                && let Err(e) = std::fs::remove_dir_all(entry.path())
            {
                warn!(dir = %entry.path().display(), error = %e, "a discarded copy could not be deleted");
            }
        }
    })
    .await;
}

/// Discards partition `p`'s directory: renamed (at once, so that it is never opened again),
/// then deleted.
async fn discard(dir: PathBuf, partition: Partition) -> Result<(), FollowError> {
    let gone = tokio::task::spawn_blocking(move || {
        if !dir.exists() {
            return Ok(());
        }
        let mut discarded = dir.clone().into_os_string();
        discarded.push(DISCARDED);
        std::fs::rename(&dir, &discarded)?;
        std::fs::remove_dir_all(&discarded)
    })
    .await;
    match gone {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(FollowError::Copy { partition, detail: format!("not discarded: {e}") }),
        Err(e) => Err(FollowError::Copy { partition, detail: e.to_string() }),
    }
}

/// Opens partition `p`'s copy and catches it up; one that does not open, or is not a copy of
/// the stream, is discarded (with what was built from it) and rebuilt from the stream. Returns
/// the copy, the stream sequence holding its head and the one it reached.
async fn open_copy(
    stream: &LogStream,
    config: &FollowConfig,
    partition: Partition,
) -> Result<(Partition, SledLog, u64, u64), FollowError> {
    let dir = config.dir(partition);
    let upto = stream.last(partition).await?;
    let why = match open_log(dir.join("log"), partition).await {
        Ok(log) => match catch_up_remembered(&log, stream, partition, &config.hint_file(partition), upto).await {
            Ok((_, holding)) => return Ok((partition, log, holding, upto)),
            Err(e) => {
                let _ = tokio::task::spawn_blocking(move || drop(log)).await;
                match e {
                    CatchUpError::Diverged { .. } | CatchUpError::Gap { .. } | CatchUpError::Log { .. } => {
                        e.to_string()
                    }
                    // The stream's trouble, not the copy's: tried again by the caller.
                    CatchUpError::Stream(_) => return Err(e.into()),
                }
            }
        },
        Err(e) => e.to_string(),
    };
    warn!(
        partition = partition.index(),
        why, "this node's copy of the partition is discarded and rebuilt from the stream"
    );
    discard(dir.clone(), partition).await?;
    let log = open_log(dir.join("log"), partition).await?;
    match catch_up_remembered(&log, stream, partition, &config.hint_file(partition), upto).await {
        Ok((_, holding)) => Ok((partition, log, holding, upto)),
        Err(e) => {
            let _ = tokio::task::spawn_blocking(move || drop(log)).await;
            Err(e.into())
        }
    }
}

struct Follower {
    stream: LogStream,
    config: FollowConfig,
    logs: BTreeMap<Partition, SledLog>,
    /// The stream sequence of the entry holding each copy's head (where a catch-up may start).
    holding: BTreeMap<Partition, u64>,
    /// Where each copy stands (a broken one is tried again with each new entry; the others go on).
    copies: Copies,
}

impl Follower {
    async fn run(mut self, mut next: u64, mut stopped: watch::Receiver<bool>) {
        let mut remembered = (tokio::time::Instant::now(), self.holding.clone());
        'follow: loop {
            let mut messages = match self.stream.tail(next).await {
                Ok(messages) => messages,
                Err(e) => {
                    warn!(error = %e, next, "the partitions' log could not be followed; trying again");
                    if stopping(&mut stopped, self.config.retry_every).await {
                        break;
                    }
                    continue;
                }
            };
            loop {
                let first = tokio::select! {
                    changed = stopped.changed() => {
                        if changed.is_err() || *stopped.borrow() {
                            break 'follow;
                        }
                        continue;
                    }
                    message = messages.next() => message,
                };
                let mut batch = match first {
                    Some(Ok(message)) => vec![message],
                    Some(Err(e)) => {
                        warn!(error = %e, next, "following the partitions' log failed; following again");
                        break;
                    }
                    None => break,
                };
                let gathered = tokio::time::Instant::now() + self.config.linger;
                // Why the messages ended while the round gathered them, if they did, and whether
                // it was told to stop meanwhile: either way what was gathered is written first.
                let (mut ended, mut stopping) = (None, false);
                while batch.len() < self.config.batch {
                    let more = if self.config.linger.is_zero() {
                        messages.next().now_or_never()
                    } else {
                        tokio::select! {
                            more = tokio::time::timeout_at(gathered, messages.next()) => more.ok(),
                            changed = stopped.changed() => {
                                stopping = changed.is_err() || *stopped.borrow();
                                None
                            }
                        }
                    };
                    match more {
                        Some(Some(Ok(message))) => batch.push(message),
                        Some(Some(Err(e))) => {
                            ended = Some(e.to_string());
                            break;
                        }
                        Some(None) => {
                            ended = Some("the consumer's messages ended".to_owned());
                            break;
                        }
                        None => break,
                    }
                }
                let mut groups: BTreeMap<Partition, Vec<(u64, pb::PartitionGroup)>> = BTreeMap::new();
                // Each partition's last entry in the batch (a group or a takeover).
                let mut seen: BTreeMap<Partition, u64> = BTreeMap::new();
                let mut undecodable: BTreeMap<Partition, String> = BTreeMap::new();
                for message in batch {
                    let Ok(info) = message.info() else {
                        warn!(subject = %message.subject, "an entry without its stream sequence was skipped");
                        continue;
                    };
                    let sequence = info.stream_sequence;
                    next = sequence + 1;
                    let Some(partition) = self.stream.partition_of(&message.subject, self.config.partitions) else {
                        debug!(subject = %message.subject, "an entry of no partition of this cluster");
                        continue;
                    };
                    seen.insert(partition, sequence);
                    match pb::PartitionEntry::decode(message.payload.as_ref()) {
                        Ok(pb::PartitionEntry { kind: Some(Kind::Group(group)) }) => {
                            groups.entry(partition).or_default().push((sequence, group));
                        }
                        Ok(pb::PartitionEntry { kind: Some(Kind::Takeover(_)) | None }) => {}
                        Err(e) => {
                            undecodable.insert(partition, format!("the entry at stream sequence {sequence}: {e}"));
                        }
                    }
                }
                let written = futures::future::join_all(
                    groups.into_iter().map(|(partition, groups)| self.write(partition, groups)),
                )
                .await;
                let mut outcomes: BTreeMap<Partition, Result<u64, String>> = written.into_iter().collect();
                for (partition, reached) in seen {
                    let outcome = match undecodable.remove(&partition) {
                        Some(why) => Err(why),
                        None => outcomes.remove(&partition).unwrap_or(Ok(self.holding_of(partition))),
                    };
                    self.settle(partition, reached, outcome);
                }
                if remembered.0.elapsed() >= self.config.remember_every {
                    remembered = (tokio::time::Instant::now(), self.remember(&remembered.1).await);
                }
                if stopping {
                    break 'follow;
                }
                if let Some(error) = ended {
                    warn!(error, next, "following the partitions' log failed; following again");
                    break;
                }
            }
            if stopping(&mut stopped, self.config.retry_every).await {
                break;
            }
        }
        self.remember(&remembered.1).await;
        info!(partitions = self.logs.len(), "stopped following the partitions' log");
    }

    fn holding_of(&self, partition: Partition) -> u64 {
        self.holding.get(&partition).copied().unwrap_or(0)
    }

    /// Records where a partition's copy stands after a batch whose last entry of it was at
    /// `reached`: there, with its head in the entry at `Ok(holding)`; or broken, saying why
    /// once (the next entry of the partition tries again: a gap is filled from the stream).
    fn settle(&mut self, partition: Partition, reached: u64, outcome: Result<u64, String>) {
        let before = self.copies.state(partition);
        match outcome {
            Ok(holding) => {
                self.holding.insert(partition, holding);
                if before.broken.is_some() {
                    info!(
                        partition = partition.index(),
                        reached, "this node's copy of the partition follows the stream again"
                    );
                }
                self.copies.set(partition, CopyState { reached, broken: None });
            }
            Err(why) => {
                if before.broken.is_none() {
                    warn!(
                        partition = partition.index(),
                        why, "this node's copy of the partition stopped following the stream"
                    );
                }
                self.copies.set(partition, CopyState { reached: before.reached, broken: Some(why) });
            }
        }
    }

    /// Writes a partition's groups that continue its copy, in one commit; a gap (or a group
    /// that overlaps the copy) is filled by a catch-up from the stream. Returns the stream
    /// sequence holding the copy's new head.
    async fn write(
        &self,
        partition: Partition,
        groups: Vec<(u64, pb::PartitionGroup)>,
    ) -> (Partition, Result<u64, String>) {
        let outcome = async {
            let log = self.logs.get(&partition).ok_or("no copy")?;
            let mut holding = self.holding.get(&partition).copied().unwrap_or(0);
            let mut pending: Option<ReplicaGroup> = None;
            for (sequence, group) in groups {
                let next = pending.as_ref().map_or(log.head() + 1, |p| p.last_position() + 1);
                let end = group.first_position.saturating_add(group.records.len() as u64);
                if end <= next {
                    continue;
                }
                if group.first_position == next {
                    let into =
                        pending.get_or_insert_with(|| ReplicaGroup { first_position: next, ..Default::default() });
                    into.records.extend(group.records);
                    into.commands.extend(group.commands);
                    holding = sequence;
                    continue;
                }
                if let Some(full) = pending.take() {
                    log.apply_replicated(full).await.map_err(|e| e.to_string())?;
                }
                let (_, caught) = catch_up_from(log, &self.stream, partition, holding.max(1), sequence)
                    .await
                    .map_err(|e| e.to_string())?;
                holding = caught;
            }
            if let Some(full) = pending.take() {
                log.apply_replicated(full).await.map_err(|e| e.to_string())?;
            }
            Ok(holding)
        };
        (partition, outcome.await)
    }

    /// Writes down where each copy stands, if it moved since `before`, each flushed first;
    /// returns what it wrote.
    async fn remember(&self, before: &BTreeMap<Partition, u64>) -> BTreeMap<Partition, u64> {
        let moved: Vec<(SledLog, PathBuf, Partition, u64)> = self
            .holding
            .iter()
            .filter(|(p, at)| before.get(p) != Some(at))
            .filter_map(|(p, at)| Some((self.logs.get(p)?.clone(), self.config.hint_file(*p), *p, *at)))
            .collect();
        let _ = tokio::task::spawn_blocking(move || {
            for (log, file, partition, at) in moved {
                remember_flushed(&log, &file, partition, at);
            }
        })
        .await;
        self.holding.clone()
    }
}

/// Waits `pause`, or less if told to stop; true if told to stop.
async fn stopping(stopped: &mut watch::Receiver<bool>, pause: Duration) -> bool {
    if *stopped.borrow() {
        return true;
    }
    tokio::select! {
        changed = stopped.changed() => changed.is_err() || *stopped.borrow(),
        () = tokio::time::sleep(pause) => false,
    }
}

#[cfg(test)]
mod tests;
