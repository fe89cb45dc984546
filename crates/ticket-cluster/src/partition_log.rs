//! A partition's sled log in cluster mode: its group commits go through the fence into the log
//! stream before they are written ([`StreamReplicator`]), and a node that takes the partition
//! over first brings its own copy up to date from the stream ([`catch_up`]).
//!
//! The stream is the source of truth. The owner writes a group to its sled log only after the
//! stream acknowledged it (replicated to a majority), so a sled log never holds what the stream
//! refused; a crash between the two leaves the sled log behind, and [`catch_up`] repairs it.

use std::path::Path;
use std::sync::Mutex;

use ticket_domain::Partition;
use ticket_log::{EventLog, LogError, ReplicaGroup, Replicator};
use ticket_log_sled::{SledLog, record_hash};
use ticket_proto::pb;
use ticket_proto::pb::partition_entry::Kind;
use tracing::{info, warn};

use crate::fence::{AppendError, Fenced, LogStream, StreamError};

/// Groups are published in parts of whole commands of at most this many bytes of records and
/// command records (the servers' `max_payload` is 1 MiB by default).
pub const MAX_PART_BYTES: usize = 512 * 1024;

/// Publishes each group commit of a partition's log to the log stream, fenced, before the log
/// writes it. Blocking (it runs on the log's writer thread, outside the async runtime).
#[derive(Debug)]
pub struct StreamReplicator {
    fenced: Mutex<Fenced>,
    runtime: tokio::runtime::Handle,
    max_part_bytes: usize,
}

impl StreamReplicator {
    /// `runtime` runs the publishes (the log's writer thread blocks on them).
    pub fn new(fenced: Fenced, runtime: tokio::runtime::Handle) -> Self {
        Self { fenced: Mutex::new(fenced), runtime, max_part_bytes: MAX_PART_BYTES }
    }

    /// At most this many bytes of records per published part.
    pub fn with_max_part_bytes(mut self, bytes: usize) -> Self {
        self.max_part_bytes = bytes.max(1);
        self
    }

    /// The stream sequence of the partition's last entry this owner appended or took over at.
    pub fn last(&self) -> u64 {
        self.fenced.lock().unwrap_or_else(std::sync::PoisonError::into_inner).last()
    }
}

impl Replicator for StreamReplicator {
    fn replicate(&self, group: &ReplicaGroup) -> Result<(), LogError> {
        let mut fenced = self.fenced.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let partition = fenced.partition();
        for part in parts(group, self.max_part_bytes) {
            let (first, last) = (part.first_position, part.first_position + part.records.len() as u64 - 1);
            let appended = self.runtime.block_on(fenced.append(part));
            if let Err(e) = appended {
                warn!(partition = partition.index(), first, last, error = %e, "a group commit was not replicated");
                // Whatever the cause, the log stops and the node gives the partition up: to the
                // client, the partition is not served here any more (nothing of a refused group
                // was stored; a deposed or unknown one is the next owner's to answer).
                return Err(match e {
                    AppendError::Refused { .. }
                    | AppendError::Deposed { .. }
                    | AppendError::Unknown { .. }
                    | AppendError::Poisoned { .. } => LogError::NotOwner(e.to_string()),
                });
            }
        }
        Ok(())
    }
}

/// `group` in parts of whole commands (a command's records and its command record always in
/// the same part), each at most `max_bytes` of records unless one command alone is larger. A
/// group whose commands do not cover its records one after another (never written so by the
/// log) goes as one part.
fn parts(group: &ReplicaGroup, max_bytes: usize) -> Vec<pb::PartitionGroup> {
    let whole = || {
        vec![pb::PartitionGroup {
            first_position: group.first_position,
            records: group.records.clone(),
            commands: group.commands.clone(),
            ..Default::default()
        }]
    };
    let mut spans = Vec::with_capacity(group.commands.len());
    let mut next = group.first_position;
    for bytes in &group.commands {
        match command_span(bytes) {
            Some((first, last)) if first == next && last <= group.last_position() => {
                spans.push((first, last, bytes));
                next = last + 1;
            }
            Some(_) | None => return whole(),
        }
    }
    if next != group.last_position() + 1 {
        return whole();
    }
    let mut out = Vec::new();
    let mut current: Option<pb::PartitionGroup> = None;
    let mut bytes = 0usize;
    for (first, last, command) in spans {
        let span = (first - group.first_position) as usize..=(last - group.first_position) as usize;
        let Some(records) = group.records.get(span) else { return whole() };
        let size: usize = records.iter().map(Vec::len).sum::<usize>() + command.len();
        if let Some(full) = current.take_if(|_| bytes + size > max_bytes) {
            out.push(full);
            bytes = 0;
        }
        let part = current.get_or_insert_with(|| pb::PartitionGroup { first_position: first, ..Default::default() });
        part.records.extend_from_slice(records);
        part.commands.push(command.clone());
        bytes += size;
    }
    out.extend(current);
    out
}

/// The positions a stored command record names.
fn command_span(bytes: &[u8]) -> Option<(u64, u64)> {
    use prost::Message as _;
    let record = pb::CommandRecord::decode(bytes).ok()?;
    (record.first_position >= 1 && record.last_position >= record.first_position)
        .then_some((record.first_position, record.last_position))
}

/// Why a partition's sled log could not be brought up to date from the stream.
#[derive(Debug, thiserror::Error)]
pub enum CatchUpError {
    #[error(transparent)]
    Stream(#[from] StreamError),
    #[error("partition {partition}: the log refused the stream's group at stream sequence {sequence}: {source}")]
    Log { partition: Partition, sequence: u64, source: LogError },
    #[error(
        "partition {partition}: the stream's group at sequence {sequence} starts at position {first}, after a gap from the log's head {head}"
    )]
    Gap { partition: Partition, sequence: u64, first: u64, head: u64 },
    /// The local log's last record (at `local`) is not the stream's record at that position
    /// (`sequence`: the stream's group holding it), or the stream has no record there: the
    /// local log is not a copy of the partition's log, and is not continued.
    #[error("partition {partition}: the local log (head {local}) is not a copy of the stream's{}", diverged_at(*sequence))]
    Diverged { partition: Partition, local: u64, sequence: Option<u64> },
}

fn diverged_at(sequence: Option<u64>) -> String {
    match sequence {
        Some(s) => format!(" (it differs from the group at stream sequence {s})"),
        None => " (the stream does not reach its head)".to_owned(),
    }
}

/// Records written to the log in one commit while catching up.
const CATCH_UP_BATCH: usize = 8192;

/// Writes `group` (read from stream sequence `sequence` on) to `log`.
async fn apply(log: &SledLog, partition: Partition, sequence: u64, group: ReplicaGroup) -> Result<(), CatchUpError> {
    let head = log.head();
    if group.first_position > head + 1 {
        return Err(CatchUpError::Gap { partition, sequence, first: group.first_position, head });
    }
    // A group partly held already (never written so by an owner) is refused by the log.
    log.apply_replicated(group).await.map_err(|source| CatchUpError::Log { partition, sequence, source })?;
    Ok(())
}

/// Brings `log` up to date with the partition's entries in the stream up to stream sequence
/// `upto` (a takeover's, or the partition's last), reading from its first entry: see
/// [`catch_up_from`]. Returns the log's head.
pub async fn catch_up(log: &SledLog, stream: &LogStream, partition: Partition, upto: u64) -> Result<u64, CatchUpError> {
    catch_up_from(log, stream, partition, 1, upto).await.map(|(head, _)| head)
}

/// Brings `log` up to date with the partition's entries in the stream from stream sequence
/// `from` up to `upto`: every group the log does not hold yet is applied in order (consecutive
/// ones in one commit), each checked to continue the log's hash chain; memory holds one batch,
/// not the partition. `from` must be at or before the group holding the log's head (the
/// sequence the last catch-up returned, or 1). The log's last record must be the stream's
/// record at that position: a log that is ahead of the stream or differs from it (a stream
/// recreated, a data directory reused) is refused ([`CatchUpError::Diverged`], with no
/// sequence also when `from` was past the log's head), never continued. Returns the log's head
/// and the stream sequence of the group holding it (0 for an empty log): the next `from`.
pub async fn catch_up_from(
    log: &SledLog,
    stream: &LogStream,
    partition: Partition,
    from: u64,
    upto: u64,
) -> Result<(u64, u64), CatchUpError> {
    let (local, local_hash) =
        log.chain_head().map_err(|source| CatchUpError::Log { partition, sequence: 0, source })?;
    let mut matched = local == 0;
    let mut head = local;
    let mut holding = 0u64;
    let mut entries = stream.entries(partition, from, upto).await?;
    let mut batch: Option<(u64, ReplicaGroup)> = None;
    while let Some((sequence, entry)) = entries.next().await? {
        let Some(Kind::Group(group)) = entry.kind else { continue };
        let first = group.first_position;
        let end = first.saturating_add(group.records.len() as u64);
        if !matched {
            if (first..end).contains(&local) {
                let at = usize::try_from(local - first).unwrap_or(usize::MAX);
                if group.records.get(at).and_then(|r| record_hash(local, r).ok()) != Some(local_hash) {
                    return Err(CatchUpError::Diverged { partition, local, sequence: Some(sequence) });
                }
                matched = true;
                holding = sequence;
            } else if first > local {
                return Err(CatchUpError::Diverged { partition, local, sequence: None });
            }
        }
        if !matched || end <= head.saturating_add(1) {
            continue;
        }
        // Consecutive groups are written together (one fsync per batch, not per group).
        let continues = batch.as_ref().is_some_and(|(_, b)| b.last_position() + 1 == first);
        if !continues && let Some((at, full)) = batch.take() {
            apply(log, partition, at, full).await?;
        }
        let (_, pending) =
            batch.get_or_insert_with(|| (sequence, ReplicaGroup { first_position: first, ..Default::default() }));
        pending.records.extend(group.records);
        pending.commands.extend(group.commands);
        head = end - 1;
        holding = sequence;
        if pending.records.len() >= CATCH_UP_BATCH
            && let Some((at, full)) = batch.take()
        {
            apply(log, partition, at, full).await?;
        }
    }
    if !matched {
        return Err(CatchUpError::Diverged { partition, local, sequence: None });
    }
    if let Some((at, full)) = batch.take() {
        apply(log, partition, at, full).await?;
    }
    let head = log.head();
    info!(partition = partition.index(), from = local, head, upto, "partition log caught up from the stream");
    Ok((head, holding))
}

/// [`catch_up_from`] the stream sequence `hint_file` remembers (from the start if it holds
/// none, or one past the log's head), which it then remembers for the next catch-up. Returns
/// the log's head and the stream sequence of the group holding it.
pub async fn catch_up_remembered(
    log: &SledLog,
    stream: &LogStream,
    partition: Partition,
    hint_file: &Path,
    upto: u64,
) -> Result<(u64, u64), CatchUpError> {
    let hint = tokio::fs::read_to_string(hint_file).await.ok().and_then(|h| h.trim().parse::<u64>().ok()).unwrap_or(1);
    let caught = match catch_up_from(log, stream, partition, hint, upto).await {
        Err(CatchUpError::Diverged { sequence: None, .. }) if hint > 1 => {
            catch_up_from(log, stream, partition, 1, upto).await
        }
        other => other,
    };
    let (head, holding) = caught?;
    let (file, log) = (hint_file.to_owned(), log.clone());
    let _ = tokio::task::spawn_blocking(move || remember_flushed(&log, &file, partition, holding)).await;
    Ok((head, holding))
}

/// Flushes `log` (a copy does not flush each group it writes), then remembers where it stands:
/// the hint is never ahead of what the log holds on disk. Blocking.
pub(crate) fn remember_flushed(log: &SledLog, hint_file: &Path, partition: Partition, holding: u64) {
    match log.flush() {
        Ok(()) => remember(hint_file, partition, holding),
        Err(e) => {
            warn!(partition = partition.index(), error = %e, "a copy could not be flushed; where it stands is not remembered")
        }
    }
}

/// Writes down the stream sequence a partition's next catch-up may start from; a failure is
/// only reported (the next catch-up then reads from an older one).
pub(crate) fn remember(hint_file: &Path, partition: Partition, holding: u64) {
    if let Err(e) = ticket_log::durable::write_file(hint_file, holding.max(1).to_string().as_bytes()) {
        warn!(partition = partition.index(), error = %e, "where the catch-up ended could not be remembered");
    }
}

#[cfg(test)]
mod tests;
