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
use crate::partition_log::{CatchUpError, catch_up_from, catch_up_remembered, remember};

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

/// A node's copies of every partition's log, following the stream until stopped.
#[derive(Debug)]
pub struct Followers {
    logs: BTreeMap<Partition, SledLog>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Followers {
    /// Opens every partition's copy, catches each up from the stream (rebuilding one that is
    /// not a copy of it), then follows the stream.
    pub async fn start(stream: LogStream, config: FollowConfig) -> Result<Self, FollowError> {
        // Entries after this are followed; those before, caught up (what both see is written once).
        let from = stream.last_of_all().await?;
        let opened = futures::future::join_all(config.partitions.all().map(|p| open_copy(&stream, &config, p))).await;
        let (mut logs, mut holding) = (BTreeMap::new(), BTreeMap::new());
        for copy in opened {
            let (partition, log, at) = copy?;
            logs.insert(partition, log);
            holding.insert(partition, at);
        }
        info!(partitions = logs.len(), from, "following every partition's log");
        let (stop, stopped) = watch::channel(false);
        let follower = Follower { stream, config, logs: logs.clone(), holding, broken: BTreeMap::new() };
        let task = tokio::spawn(follower.run(from + 1, stopped));
        Ok(Self { logs, stop, task })
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
    tokio::task::spawn_blocking(move || SledLog::open(SledConfig::new(dir)))
        .await
        .map_err(|e| copy(e.to_string()))?
        .map_err(|e| copy(e.to_string()))
}

/// Opens partition `p`'s copy and catches it up; one that is not a copy of the stream is
/// deleted (with what was built from it) and rebuilt from the stream.
async fn open_copy(
    stream: &LogStream,
    config: &FollowConfig,
    partition: Partition,
) -> Result<(Partition, SledLog, u64), FollowError> {
    let dir = config.dir(partition);
    let upto = stream.last(partition).await?;
    let log = open_log(dir.join("log"), partition).await?;
    match catch_up_remembered(&log, stream, partition, &config.hint_file(partition), upto).await {
        Ok((_, holding)) => Ok((partition, log, holding)),
        Err(CatchUpError::Diverged { local, .. }) => {
            warn!(
                partition = partition.index(),
                local, "this node's copy of the partition is not the stream's: deleted, and rebuilt from the stream"
            );
            let removed = tokio::task::spawn_blocking(move || {
                drop(log);
                std::fs::remove_dir_all(&dir).map(|()| dir)
            })
            .await;
            let dir = match removed {
                Ok(Ok(dir)) => dir,
                Ok(Err(e)) => return Err(FollowError::Copy { partition, detail: format!("not deleted: {e}") }),
                Err(e) => return Err(FollowError::Copy { partition, detail: e.to_string() }),
            };
            let log = open_log(dir.join("log"), partition).await?;
            let (_, holding) = catch_up_remembered(&log, stream, partition, &config.hint_file(partition), upto).await?;
            Ok((partition, log, holding))
        }
        Err(e) => Err(e.into()),
    }
}

struct Follower {
    stream: LogStream,
    config: FollowConfig,
    logs: BTreeMap<Partition, SledLog>,
    /// The stream sequence of the entry holding each copy's head (where a catch-up may start).
    holding: BTreeMap<Partition, u64>,
    /// Copies that could not follow (reported once; the others go on).
    broken: BTreeMap<Partition, String>,
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
                while batch.len() < self.config.batch {
                    match messages.next().now_or_never() {
                        Some(Some(Ok(message))) => batch.push(message),
                        Some(Some(Err(_)) | None) | None => break,
                    }
                }
                let mut groups: BTreeMap<Partition, Vec<(u64, pb::PartitionGroup)>> = BTreeMap::new();
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
                    match pb::PartitionEntry::decode(message.payload.as_ref()) {
                        Ok(pb::PartitionEntry { kind: Some(Kind::Group(group)) }) => {
                            groups.entry(partition).or_default().push((sequence, group));
                        }
                        Ok(pb::PartitionEntry { kind: Some(Kind::Takeover(_)) | None }) => {}
                        Err(e) => self.broke(partition, format!("the entry at stream sequence {sequence}: {e}")),
                    }
                }
                let written = futures::future::join_all(
                    groups.into_iter().map(|(partition, groups)| self.write(partition, groups)),
                )
                .await;
                for (partition, outcome) in written {
                    match outcome {
                        Ok(holding) => {
                            self.holding.insert(partition, holding);
                        }
                        Err(why) => self.broke(partition, why),
                    }
                }
                if remembered.0.elapsed() >= self.config.remember_every {
                    remembered = (tokio::time::Instant::now(), self.remember(&remembered.1).await);
                }
            }
            if stopping(&mut stopped, self.config.retry_every).await {
                break;
            }
        }
        self.remember(&remembered.1).await;
        info!(partitions = self.logs.len(), "stopped following the partitions' log");
    }

    fn broke(&mut self, partition: Partition, why: String) {
        self.broken.entry(partition).or_insert_with(|| {
            warn!(partition = partition.index(), why, "this node's copy of the partition stopped following the stream");
            why
        });
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
            if self.broken.contains_key(&partition) {
                return Err("broken".to_owned());
            }
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

    /// Writes down where each copy stands, if it moved since `before`; returns what it wrote.
    async fn remember(&self, before: &BTreeMap<Partition, u64>) -> BTreeMap<Partition, u64> {
        let moved: Vec<(PathBuf, Partition, u64)> = self
            .holding
            .iter()
            .filter(|(p, at)| before.get(p) != Some(at))
            .map(|(p, at)| (self.config.hint_file(*p), *p, *at))
            .collect();
        let _ = tokio::task::spawn_blocking(move || {
            for (file, partition, at) in moved {
                remember(&file, partition, at);
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
