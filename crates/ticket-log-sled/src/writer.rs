//! The single writer: group commit of appends (ADR 0007).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock, mpsc};

use ticket_domain::{CommandId, RecordedEvent, TicketId};
use ticket_log::{
    AppendOutcome, AppendRequest, CommandRecord, LogError, ReplicaGroup, Replicator, StreamTip, now, stamp_events,
};
use tokio::sync::{oneshot, watch};
use tracing::{debug, error};

use crate::keys::{EVENT, META_HASH, META_HEAD, command_id, positional, stream};
use crate::record::{chain_hash, decode_command, decode_event, decode_record, encode_command, encode_record};
use crate::storage;
use crate::tiers::Tiers;

/// What the writer does, in the order it was asked. Appends are nearly every job and move
/// through the queue once, so they stay unboxed.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)]
pub enum Job {
    Append(AppendJob),
    /// A group commit made by another copy of the log (cluster mode: the partition's owner).
    Replicated {
        group: ReplicaGroup,
        reply: oneshot::Sender<Result<u64, LogError>>,
    },
}

pub struct AppendJob {
    pub request: AppendRequest,
    pub reply: oneshot::Sender<Result<AppendOutcome, LogError>>,
}

impl std::fmt::Debug for AppendJob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppendJob").field("command_id", &self.request.command.id).finish_non_exhaustive()
    }
}

pub fn failed_error() -> LogError {
    LogError::Storage("an earlier write failed; the log must be reopened".into())
}

pub struct Writer {
    db: sled::Db,
    tiers: Arc<Tiers>,
    /// Told the head after every commit (the sealer).
    heads: mpsc::Sender<u64>,
    head_tx: Arc<watch::Sender<u64>>,
    failed: Arc<AtomicBool>,
    head: u64,
    hash: [u8; 32],
    max_group: usize,
    /// Where each group goes before it is written (cluster mode).
    replicator: Option<Arc<dyn Replicator>>,
    /// Why the log stopped accepting appends, when a replicator refused a group.
    stopped: Arc<OnceLock<LogError>>,
    /// Whether a replicated group is flushed before it counts (`SledConfig::sync_replicated`).
    sync_replicated: bool,
    /// Committed tips (version and last append) of recently written tickets. A ticket read
    /// back from the tree has no known last append, so an append decided after one is refused.
    versions: lru::LruCache<TicketId, StreamTip>,
}

type Reply = oneshot::Sender<Result<AppendOutcome, LogError>>;

impl Writer {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        db: sled::Db,
        tiers: Arc<Tiers>,
        heads: mpsc::Sender<u64>,
        head_tx: Arc<watch::Sender<u64>>,
        failed: Arc<AtomicBool>,
        head: u64,
        hash: [u8; 32],
        max_group: usize,
        replicator: Option<Arc<dyn Replicator>>,
        stopped: Arc<OnceLock<LogError>>,
    ) -> Self {
        let capacity = std::num::NonZeroUsize::new(1 << 20).unwrap_or(std::num::NonZeroUsize::MIN);
        metrics::gauge!("ticketd_log_head").set(head as f64);
        Self {
            db,
            tiers,
            heads,
            head_tx,
            failed,
            head,
            hash,
            max_group: max_group.max(1),
            replicator,
            stopped,
            sync_replicated: true,
            versions: lru::LruCache::new(capacity),
        }
    }

    /// Sets whether replicated groups are flushed before they count.
    pub fn syncing_replicated(mut self, sync: bool) -> Self {
        self.sync_replicated = sync;
        self
    }

    /// Takes every append queued while the previous group was being flushed into the next group;
    /// a replicated group is applied on its own, in its place in the queue.
    pub fn run(mut self, jobs: mpsc::Receiver<Job>) {
        let mut next: Option<Job> = None;
        loop {
            let first = match next.take() {
                Some(job) => job,
                None => match jobs.recv() {
                    Ok(job) => job,
                    Err(_) => break,
                },
            };
            match first {
                Job::Replicated { group, reply } => {
                    let _ = reply.send(self.apply_replicated(&group));
                }
                Job::Append(first) => {
                    let mut group = vec![first];
                    while group.len() < self.max_group {
                        match jobs.try_recv() {
                            Ok(Job::Append(job)) => group.push(job),
                            Ok(other) => {
                                next = Some(other);
                                break;
                            }
                            Err(_) => break,
                        }
                    }
                    self.commit(group);
                }
            }
        }
        debug!("event log writer stopped");
    }

    /// The original events of a command id already in the log.
    fn stored_duplicate(&self, id: &CommandId) -> Result<Option<Vec<RecordedEvent>>, LogError> {
        let Some(bytes) = self.tiers.get(&command_id(id))? else {
            return Ok(None);
        };
        let record = decode_command(0, &bytes)?;
        let mut events = Vec::new();
        for position in record.first_position..=record.last_position {
            let bytes = self.tiers.get(&positional(EVENT, position))?.ok_or_else(|| LogError::Corrupt {
                position,
                problem: "event of a stored command is missing".into(),
            })?;
            events.push(decode_event(position, &bytes)?);
        }
        Ok(Some(events))
    }

    /// A stream's tip: from the writer's cache (exact, as the writer is the only writer), else
    /// the version from the stream index, with no known last append.
    fn stream_tip(&mut self, ticket: TicketId) -> Result<StreamTip, LogError> {
        if let Some(tip) = self.versions.get(&ticket) {
            return Ok(*tip);
        }
        let version = self.tiers.stream_version(ticket, None)?;
        let tip = StreamTip { version, last: None };
        self.versions.put(ticket, tip);
        Ok(tip)
    }

    fn commit(&mut self, group: Vec<AppendJob>) {
        let mut batch = sled::Batch::default();
        let (mut head, mut hash) = (self.head, self.hash);
        let mut staged_versions: HashMap<TicketId, StreamTip> = HashMap::new();
        let mut staged_ids: HashMap<CommandId, usize> = HashMap::new();
        let mut accepted: Vec<(Reply, Vec<RecordedEvent>)> = Vec::new();
        let mut echoes: Vec<(Reply, usize)> = Vec::new();
        let recorded_at = now();

        // The group as stored, for the replicator.
        let mut replica =
            self.replicator.as_ref().map(|_| ReplicaGroup { first_position: head + 1, ..Default::default() });
        for AppendJob { request, reply } in group {
            if let Some(reason) = self.stopped.get() {
                let _ = reply.send(Err(reason.clone()));
                continue;
            }
            if self.failed.load(Ordering::Acquire) {
                let _ = reply.send(Err(failed_error()));
                continue;
            }
            match self.stored_duplicate(&request.command.id) {
                Ok(Some(events)) => {
                    let _ = reply.send(Ok(AppendOutcome::Duplicate(events)));
                    continue;
                }
                Ok(None) => {}
                Err(e) => {
                    let _ = reply.send(Err(e));
                    continue;
                }
            }
            if let Some(&index) = staged_ids.get(&request.command.id) {
                echoes.push((reply, index));
                continue;
            }
            let stamped = stamp_events(&request, head, recorded_at, |t| match staged_versions.get(&t) {
                Some(tip) => Ok(*tip),
                None => self.stream_tip(t),
            });
            let events = match stamped {
                Ok(events) => events,
                Err(e) => {
                    let _ = reply.send(Err(e));
                    continue;
                }
            };
            let first = head + 1;
            for e in &events {
                let (bytes, next) = encode_record(e, &hash);
                if let Some(replica) = replica.as_mut() {
                    replica.records.push(bytes.clone());
                }
                batch.insert(&positional(EVENT, e.position)[..], bytes);
                batch.insert(&stream(e.event.ticket_id, e.version)[..], &e.position.to_be_bytes()[..]);
                staged_versions.insert(e.event.ticket_id, StreamTip { version: e.version, last: Some(request.token) });
                hash = next;
                head = e.position;
            }
            let record = CommandRecord {
                command: request.command,
                policy: request.policy,
                rules: request.rules,
                correlation_id: request.correlation_id,
                causation_id: request.causation_id,
                first_position: first,
                last_position: head,
            };
            let command = encode_command(&record);
            if let Some(replica) = replica.as_mut() {
                replica.commands.push(command.clone());
            }
            batch.insert(command_id(&record.command.id), command);
            staged_ids.insert(record.command.id, accepted.len());
            accepted.push((reply, events));
        }
        if accepted.is_empty() {
            return;
        }
        batch.insert(META_HEAD, &head.to_be_bytes()[..]);
        batch.insert(META_HASH, &hash[..]);

        // Durable elsewhere first (cluster mode): what the replicator refused is never written.
        if let (Some(replicator), Some(replica)) = (&self.replicator, &replica) {
            let started = std::time::Instant::now();
            if let Err(e) = replicator.replicate(replica) {
                error!(error = %e, head = self.head, "a group commit was not replicated; the log stops accepting appends");
                let _ = self.stopped.set(e.clone());
                self.failed.store(true, Ordering::Release);
                self.versions.clear();
                for (reply, _) in echoes {
                    let _ = reply.send(Err(e.clone()));
                }
                for (reply, _) in accepted {
                    let _ = reply.send(Err(e.clone()));
                }
                return;
            }
            metrics::histogram!("ticketd_log_replicate_duration_seconds").record(started.elapsed().as_secs_f64());
        }

        let started = std::time::Instant::now();
        let applied = self.tiers.tree.apply_batch(batch);
        let apply_us = started.elapsed().as_micros() as u64;
        let committed = applied.and_then(|()| self.db.flush()).map(|flushed_bytes| {
            let flush_us = started.elapsed().as_micros() as u64 - apply_us;
            (flushed_bytes, flush_us)
        });
        match committed {
            Ok((flushed_bytes, flush_us)) => {
                debug!(appends = accepted.len(), head, apply_us, flush_us, flushed_bytes, "group committed");
                metrics::histogram!("ticketd_log_group_commit_appends").record(accepted.len() as f64);
                metrics::histogram!("ticketd_log_fsync_duration_seconds").record(flush_us as f64 / 1e6);
                self.committed(head, hash, staged_versions);
                for (reply, index) in echoes {
                    let _ = reply.send(Ok(AppendOutcome::Duplicate(accepted[index].1.clone())));
                }
                for (reply, events) in accepted {
                    let _ = reply.send(Ok(AppendOutcome::Appended(events)));
                }
            }
            Err(e) => {
                // What reached the disk is unknown: refuse every later append until reopened,
                // when recovery establishes the truth.
                error!(error = %e, head = self.head, "group commit failed; the log stops accepting appends");
                self.failed.store(true, Ordering::Release);
                self.versions.clear();
                for (reply, _) in echoes {
                    let _ = reply.send(Err(storage("commit", &e)));
                }
                for (reply, _) in accepted {
                    let _ = reply.send(Err(storage("commit", &e)));
                }
            }
        }
    }

    /// After a durable commit: the new head and hash, the streams' tips, and the head told to
    /// readers and to the sealer.
    fn committed(&mut self, head: u64, hash: [u8; 32], staged_versions: HashMap<TicketId, StreamTip>) {
        metrics::gauge!("ticketd_log_head").set(head as f64);
        self.head = head;
        self.hash = hash;
        for (ticket, tip) in staged_versions {
            self.versions.put(ticket, tip);
        }
        self.head_tx.send_replace(head);
        let _ = self.heads.send(head);
    }

    /// Writes a group commit another copy of the log made (its owner's, in cluster mode), after
    /// checking that it continues this log: it starts at the next position, every record chains
    /// to the one before (the hash of the previous record and of its envelope) and decodes at its
    /// position, each ticket's versions follow on, and its commands' records name its positions.
    /// Returns the new head. Nothing of a group that does not fit is written.
    fn apply_replicated(&mut self, group: &ReplicaGroup) -> Result<u64, LogError> {
        if let Some(reason) = self.stopped.get() {
            return Err(reason.clone());
        }
        if self.failed.load(Ordering::Acquire) {
            return Err(failed_error());
        }
        if group.records.is_empty() || group.first_position != self.head + 1 {
            return Err(LogError::InvalidAppend(format!(
                "a replicated group of {} records at position {} does not continue the log at {}",
                group.records.len(),
                group.first_position,
                self.head
            )));
        }
        let mut batch = sled::Batch::default();
        let (mut head, mut hash) = (self.head, self.hash);
        let mut staged_versions: HashMap<TicketId, StreamTip> = HashMap::new();
        for bytes in &group.records {
            let position = head + 1;
            let corrupt =
                |problem: &str| LogError::Corrupt { position, problem: format!("replicated record: {problem}") };
            let record = decode_record(position, bytes)?;
            if record.prev_hash != hash {
                return Err(corrupt("it does not chain to the record before it"));
            }
            if chain_hash(&hash, record.envelope) != record.hash {
                return Err(corrupt("its hash does not match its contents"));
            }
            let event = decode_event(position, bytes)?;
            let ticket = event.event.ticket_id;
            let tip = match staged_versions.get(&ticket) {
                Some(tip) => *tip,
                None => self.stream_tip(ticket)?,
            };
            if event.version != tip.version.saturating_add(1) {
                return Err(corrupt(&format!(
                    "ticket {ticket} is at version {}, and this record is version {}",
                    tip.version, event.version
                )));
            }
            batch.insert(&positional(EVENT, position)[..], bytes.as_slice());
            batch.insert(&stream(ticket, event.version)[..], &position.to_be_bytes()[..]);
            staged_versions.insert(ticket, StreamTip { version: event.version, last: None });
            hash = record.hash;
            head = position;
        }
        for bytes in &group.commands {
            let record = decode_command(0, bytes)?;
            if record.first_position < group.first_position || record.last_position > head {
                return Err(LogError::Corrupt {
                    position: record.first_position,
                    problem: format!(
                        "a replicated command record names positions {}..={} outside its group {}..={head}",
                        record.first_position, record.last_position, group.first_position
                    ),
                });
            }
            batch.insert(command_id(&record.command.id), bytes.as_slice());
        }
        batch.insert(META_HEAD, &head.to_be_bytes()[..]);
        batch.insert(META_HASH, &hash[..]);
        let written = self.tiers.tree.apply_batch(batch);
        let flushed = if self.sync_replicated { written.and_then(|()| self.db.flush().map(drop)) } else { written };
        match flushed {
            Ok(()) => {
                debug!(first = group.first_position, head, "replicated group written");
                self.committed(head, hash, staged_versions);
                Ok(head)
            }
            Err(e) => {
                error!(error = %e, head = self.head, "a replicated group failed to write; the log stops accepting appends");
                self.failed.store(true, Ordering::Release);
                self.versions.clear();
                Err(storage("commit", &e))
            }
        }
    }
}
