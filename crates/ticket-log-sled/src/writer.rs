//! The single writer: group commit of appends (ADR 0007).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};

use ticket_domain::{CommandId, RecordedEvent, TicketId};
use ticket_log::{AppendOutcome, AppendRequest, CommandRecord, LogError, StreamTip, now, stamp_events};
use tokio::sync::{oneshot, watch};
use tracing::{debug, error};

use crate::keys::{EVENT, META_HASH, META_HEAD, command_id, positional, stream};
use crate::record::{decode_command, decode_event, encode_command, encode_record};
use crate::storage;
use crate::tiers::Tiers;

pub struct Job {
    pub request: AppendRequest,
    pub reply: oneshot::Sender<Result<AppendOutcome, LogError>>,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job").field("command_id", &self.request.command.id).finish_non_exhaustive()
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
            versions: lru::LruCache::new(capacity),
        }
    }

    /// Takes every append queued while the previous group was being flushed into the next group.
    pub fn run(mut self, jobs: mpsc::Receiver<Job>) {
        while let Ok(first) = jobs.recv() {
            let mut group = vec![first];
            while group.len() < self.max_group {
                match jobs.try_recv() {
                    Ok(job) => group.push(job),
                    Err(_) => break,
                }
            }
            self.commit(group);
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

    fn commit(&mut self, group: Vec<Job>) {
        let mut batch = sled::Batch::default();
        let (mut head, mut hash) = (self.head, self.hash);
        let mut staged_versions: HashMap<TicketId, StreamTip> = HashMap::new();
        let mut staged_ids: HashMap<CommandId, usize> = HashMap::new();
        let mut accepted: Vec<(Reply, Vec<RecordedEvent>)> = Vec::new();
        let mut echoes: Vec<(Reply, usize)> = Vec::new();
        let recorded_at = now();

        for Job { request, reply } in group {
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
            batch.insert(command_id(&record.command.id), encode_command(&record));
            staged_ids.insert(record.command.id, accepted.len());
            accepted.push((reply, events));
        }
        if accepted.is_empty() {
            return;
        }
        batch.insert(META_HEAD, &head.to_be_bytes()[..]);
        batch.insert(META_HASH, &hash[..]);

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
                metrics::gauge!("ticketd_log_head").set(head as f64);
                self.head = head;
                self.hash = hash;
                for (ticket, tip) in staged_versions {
                    self.versions.put(ticket, tip);
                }
                self.head_tx.send_replace(head);
                let _ = self.heads.send(head);
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
}
