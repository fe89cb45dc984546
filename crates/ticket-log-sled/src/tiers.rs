//! The log's two tiers, read as one: the hot tail in sled, the sealed history in the
//! [`Archive`], and the sealer that moves chunks from one to the other (ADR 0014).
//!
//! Reads look in sled first. A record leaves sled only after it is durable in the archive, so
//! a key missing from sled is in the archive, and a single-key read needs no lock. A read of
//! several keys holds `moving` for reading while it scans sled, so that no chunk's deletion
//! lands in the middle of the scan; the sealer holds it for writing only while it applies that
//! deletion (one sled batch).

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, mpsc};

use ticket_domain::{CommandId, TicketId};
use ticket_log::LogError;
use tracing::{debug, error, info};

use crate::archive::{Archive, Entry};
use crate::keys::{EVENT, META_SEALED, command_id, positional, stream, trailing_u64};
use crate::record::{decode_command, decode_event};
use crate::storage;

#[derive(Debug)]
pub struct Tiers {
    pub tree: sled::Tree,
    pub archive: Archive,
    moving: RwLock<()>,
}

fn sled_entries(iter: impl Iterator<Item = sled::Result<(sled::IVec, sled::IVec)>>) -> Result<Vec<Entry>, LogError> {
    iter.map(|item| item.map(|(k, v)| (k.to_vec(), v.to_vec())).map_err(|e| storage("read the log", e))).collect()
}

impl Tiers {
    pub fn new(tree: sled::Tree, archive: Archive) -> Self {
        Self { tree, archive, moving: RwLock::new(()) }
    }

    /// The archive, for tiers on another sled tree (after a compaction).
    pub fn into_archive(self) -> Archive {
        self.archive
    }

    /// Held across a scan of sled that must not see half of a chunk's deletion.
    pub fn reading(&self) -> RwLockReadGuard<'_, ()> {
        self.moving.read().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, LogError> {
        if let Some(value) = self.tree.get(key).map_err(|e| storage("read the log", e))? {
            return Ok(Some(value.to_vec()));
        }
        if self.archive.sealed() == 0 {
            return Ok(None);
        }
        self.archive.get(key)
    }

    /// The records with keys in `from..=to`, from both tiers, copied (see [`Tiers::each`]).
    pub fn range(
        &self,
        from: &[u8],
        to: &[u8],
        complete: impl Fn(&[(sled::IVec, sled::IVec)]) -> bool,
    ) -> Result<Vec<Entry>, LogError> {
        let mut entries = Vec::new();
        self.each(from, to, complete, |key, value| {
            entries.push((key.to_vec(), value.to_vec()));
            Ok(())
        })?;
        Ok(entries)
    }

    /// Calls `each` on every record with a key in `from..=to`, from both tiers, in key order and
    /// each key once (sled's copy when a chunk being moved is in both), on the stored bytes (a
    /// scan of the archive copies nothing). The archive is read only when what sled holds is not
    /// `complete`.
    pub fn each(
        &self,
        from: &[u8],
        to: &[u8],
        complete: impl Fn(&[(sled::IVec, sled::IVec)]) -> bool,
        mut each: impl FnMut(&[u8], &[u8]) -> Result<(), LogError>,
    ) -> Result<(), LogError> {
        let _reading = self.reading();
        let hot = self.tree.range(from..=to).collect::<Result<Vec<_>, _>>().map_err(|e| storage("read the log", e))?;
        if self.archive.sealed() == 0 || complete(&hot) {
            return hot.iter().try_for_each(|(key, value)| each(key, value));
        }
        let mut hot = hot.iter().peekable();
        self.archive.each(from, to, |key, value| {
            while let Some((k, v)) = hot.next_if(|(k, _)| k.as_ref() < key) {
                each(k, v)?;
            }
            if hot.peek().is_some_and(|(k, _)| k.as_ref() == key) { Ok(()) } else { each(key, value) }
        })?;
        hot.try_for_each(|(key, value)| each(key, value))
    }

    /// The last record with a key in `from..=to` that `accept`s, from sled, else from the
    /// archive (which holds only records older than any in sled).
    pub fn last(&self, from: &[u8], to: &[u8], accept: impl Fn(&[u8]) -> bool) -> Result<Option<Entry>, LogError> {
        let _reading = self.reading();
        for item in self.tree.range(from..=to).rev() {
            let (key, value) = item.map_err(|e| storage("read the log", e))?;
            if accept(&value) {
                return Ok(Some((key.to_vec(), value.to_vec())));
            }
        }
        if self.archive.sealed() == 0 {
            return Ok(None);
        }
        self.archive.last(from, to)
    }

    /// The version of `ticket`'s last event (at a position up to `head`, if given; 0: none).
    pub fn stream_version(&self, ticket: TicketId, head: Option<u64>) -> Result<u64, LogError> {
        // A ticket without a first event has none (a new ticket: most lookups that miss the
        // writer's cache); one point read instead of a reverse range scan.
        if self.get(&stream(ticket, 1))?.is_none() {
            return Ok(0);
        }
        let last = self.last(&stream(ticket, 0), &stream(ticket, u64::MAX), |value| {
            head.is_none_or(|head| trailing_u64(value).is_some_and(|p| p <= head))
        })?;
        Ok(last.and_then(|(key, _)| trailing_u64(&key)).unwrap_or(0))
    }

    /// sled's sealed marker: every record of a position up to it has been deleted from sled.
    pub fn sled_sealed(&self) -> Result<u64, LogError> {
        let value = self.tree.get(META_SEALED).map_err(|e| storage("read the sealed marker", e))?;
        Ok(value.and_then(|v| trailing_u64(&v)).unwrap_or(0))
    }

    /// Step 2 of a move: deletes the sealed records from sled and raises its marker, in one
    /// batch. Not flushed: a crash that loses it is repaired at open ([`Tiers::finish_move`]).
    fn delete_from_sled(&self, keys: impl Iterator<Item = Vec<u8>>, upto: u64) -> Result<(), LogError> {
        let mut batch = sled::Batch::default();
        for key in keys {
            batch.remove(key);
        }
        batch.insert(META_SEALED, &upto.to_be_bytes()[..]);
        let _moving = self.moving.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        self.tree.apply_batch(batch).map_err(|e| storage("delete sealed records", e))
    }

    /// At open: if a crash came between the two steps of a move, deletes sled's copy of what
    /// the archive already holds. A sled marker ahead of the archive means sealed history was
    /// lost (the archive file replaced or rolled back): refused.
    pub fn finish_move(&self) -> Result<(), LogError> {
        let (in_sled, in_archive) = (self.sled_sealed()?, self.archive.sealed());
        if in_sled > in_archive {
            return Err(LogError::Corrupt {
                position: in_archive + 1,
                problem: format!(
                    "events up to {in_sled} were sealed into the archive ({}), which holds only up to {in_archive}",
                    self.archive.path().display()
                ),
            });
        }
        if in_sled == in_archive {
            return Ok(());
        }
        let events = self.archive.range(&positional(EVENT, in_sled + 1), &positional(EVENT, in_archive))?;
        let mut keys = BTreeSet::new();
        for (key, bytes) in events {
            let position = trailing_u64(&key).unwrap_or(0);
            let event = decode_event(position, &bytes)?;
            keys.insert(stream(event.event.ticket_id, event.version).to_vec());
            let command = command_id(&event.command_id);
            if self.archive.get(&command)?.is_some() {
                keys.insert(command);
            }
            keys.insert(key);
        }
        info!(from = in_sled + 1, to = in_archive, "finishing a move of sealed events interrupted by a crash");
        self.delete_from_sled(keys.into_iter(), in_archive)
    }

    /// Moves the events `from..=to` (all in sled), their stream index entries, and the records
    /// of the commands that end among them, into the archive (ADR 0014).
    /// The records are flushed in sled first: a log whose replicated groups are not flushed as
    /// they are written (a node's copy) never has in its archive what sled could lose.
    pub fn seal(&self, from: u64, to: u64) -> Result<(), LogError> {
        self.tree.flush().map_err(|e| storage("flush before sealing", e))?;
        let records = self.sealable(from, to)?;
        self.archive.seal(&records, to)?;
        self.delete_from_sled(records.into_iter().map(|(k, _)| k), to)
    }

    /// What a move of `from..=to` copies, in key order.
    pub fn sealable(&self, from: u64, to: u64) -> Result<Vec<Entry>, LogError> {
        let events = sled_entries(self.tree.range(positional(EVENT, from)..=positional(EVENT, to)))?;
        if events.len() as u64 != to - from + 1 {
            return Err(LogError::Corrupt {
                position: from,
                problem: format!("sealing {from}..={to} found {} events in sled", events.len()),
            });
        }
        let mut records = Vec::with_capacity(events.len() * 2 + events.len() / 2);
        let mut commands: BTreeSet<CommandId> = BTreeSet::new();
        for (key, bytes) in events {
            let position = trailing_u64(&key).unwrap_or(0);
            let event = decode_event(position, &bytes)?;
            // A stream index entry's value is its event's position (they are written together).
            records.push((stream(event.event.ticket_id, event.version).to_vec(), position.to_be_bytes().to_vec()));
            commands.insert(event.command_id);
            records.push((key, bytes));
        }
        for id in commands {
            let key = command_id(&id);
            // A command's record moves with its last event, so it is still in sled here.
            let bytes = self
                .tree
                .get(&key)
                .map_err(|e| storage("read a command", e))?
                .ok_or_else(|| LogError::Corrupt { position: from, problem: format!("command {id} is not stored") })?;
            if decode_command(0, &bytes)?.last_position <= to {
                records.push((key, bytes.to_vec()));
            }
        }
        records.sort_unstable();
        Ok(records)
    }
}

/// Keeps the hot tier at about `hot` events: woken with the head after every group commit, it
/// seals whole chunks of `chunk` events while more than `hot + chunk` are in sled.
pub struct Sealer {
    pub tiers: Arc<Tiers>,
    pub hot: u64,
    pub chunk: u64,
    /// Set when the log closes: the sealer stops after the chunk it is moving.
    pub stop: Arc<AtomicBool>,
}

impl Sealer {
    pub fn run(self, heads: mpsc::Receiver<u64>) {
        // After a failure, wait for another chunk's worth of appends before trying again.
        let mut retry_at = 0;
        while let Ok(mut head) = heads.recv() {
            while let Ok(newer) = heads.try_recv() {
                head = newer;
            }
            // A backlog (a log written before sealing, or a smaller hot tier) takes minutes:
            // said when it starts and as it goes.
            let backlog = head.saturating_sub(self.tiers.archive.sealed()).saturating_sub(self.hot);
            let reporting = backlog >= BACKLOG_REPORT;
            if reporting {
                info!(events = backlog, up_to = head - self.hot, "sealing a backlog of events into the log's archive");
            }
            let started_backlog = std::time::Instant::now();
            let mut next_report = self.tiers.archive.sealed() + BACKLOG_REPORT;
            while !self.stop.load(Ordering::Acquire)
                && head >= retry_at
                && head.saturating_sub(self.tiers.archive.sealed()) >= self.hot + self.chunk
            {
                let from = self.tiers.archive.sealed() + 1;
                let to = from + self.chunk - 1;
                let started = std::time::Instant::now();
                match self.tiers.seal(from, to) {
                    Ok(()) => {
                        metrics::gauge!("ticketd_log_sealed").set(to as f64);
                        debug!(from, to, took_ms = started.elapsed().as_millis() as u64, "events sealed");
                        if reporting && to >= next_report {
                            info!(sealed = to, head, "sealing the backlog");
                            next_report = to + BACKLOG_REPORT;
                        }
                    }
                    Err(e) => {
                        error!(error = %e, from, to, "sealing events into the archive failed; they stay in sled");
                        retry_at = head + self.chunk;
                        break;
                    }
                }
            }
            if reporting && head.saturating_sub(self.tiers.archive.sealed()) < self.hot + self.chunk {
                info!(
                    sealed = self.tiers.archive.sealed(),
                    took_s = started_backlog.elapsed().as_secs(),
                    "the backlog is sealed"
                );
            }
        }
        debug!("log sealer stopped");
    }
}

/// A backlog this large is logged at its start and every time this many more are sealed.
const BACKLOG_REPORT: u64 = 1_000_000;
