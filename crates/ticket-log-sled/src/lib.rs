//! The durable ticketd event log on sled `=0.34.7`.
//!
//! - One tree holds the events and every index (see [`keys`]); one append is one atomic sled
//!   batch, so after a crash an append is wholly present or wholly absent.
//! - A single writer thread applies appends in groups: every request queued while the previous
//!   group was being flushed joins the next group, which is applied as one batch and made
//!   durable with one `flush` (fsync). Only then are the group's appends acknowledged (ADR 0007).
//! - Every record stores the SHA-256 of its predecessor and its own; [`SledLog::verify`] walks
//!   the chain and reports the first broken link by position.
//! - Reads never go past the durable head, so nothing that could still vanish in a crash is
//!   ever read, published or decided upon.
//! - Only the newest events stay in sled: a sealer moves older ones, in chunks, to the log's
//!   archive (`archive.redb` in the log's directory), so that opening the log costs the same
//!   whatever its history (ADR 0014). Reads see one log.

mod archive;
mod compact;
pub mod keys;
mod record;
mod state;
mod tiers;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;

use ticket_domain::{CommandId, RecordedEvent, TicketId};
use ticket_log::{AppendOutcome, AppendRequest, ClockKind, CommandRecord, EventLog, LogError, SnapshotStore};
use tokio::sync::{oneshot, watch};
use tracing::info;

pub use archive::ARCHIVE_CACHE_BYTES;
use archive::Archive;
use keys::{
    EVENT, FORMAT, META_CLOCK, META_FORMAT, META_HASH, META_HEAD, META_PUBLISHED, META_PUBLISHED_SEQUENCE, positional,
    trailing_u64,
};
pub use record::{COMMAND_RECORD_FORMAT, GENESIS, decode_event, record_hash};
use record::{chain_hash, decode_command, decode_record};
pub use state::{RedbState, STATE_CACHE_BYTES};
use tiers::{Sealer, Tiers};
use writer::{AppendJob, Job, Writer};

/// The file of the log's sealed history, inside the log's (sled's) directory.
pub const ARCHIVE_FILE: &str = "archive.redb";

/// How to open a log.
#[derive(Debug, Clone)]
pub struct SledConfig {
    pub path: PathBuf,
    /// sled's page cache, in bytes.
    pub cache_capacity_bytes: u64,
    /// The most appends one group commit takes.
    pub max_group: usize,
    /// About how many of the newest events stay in sled; older ones are sealed into the
    /// archive. At least 1.
    pub hot_events: u64,
    /// How many events one move into the archive takes. At least 1.
    pub seal_chunk: u64,
    /// sled's file is rewritten at open when it is larger than this and than 16 KiB per event
    /// still in sled (see `compact.rs`).
    pub compact_above_bytes: u64,
    /// Where each group commit goes, durably, before the log writes it (cluster mode, ADR 0015).
    pub replicator: Option<Arc<dyn ticket_log::Replicator>>,
    /// Whether each group written by [`SledLog::apply_replicated`] is flushed to disk before it
    /// counts (the default: a new owner's catch-up). A node's copies of the partitions (ADR
    /// 0015), rebuilt from the stream whatever they lose, turn it off and are flushed with
    /// [`SledLog::flush`] before the follower records where they stand.
    pub sync_replicated: bool,
}

impl SledConfig {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            cache_capacity_bytes: 256 * 1024 * 1024,
            max_group: 4096,
            hot_events: 100_000,
            seal_chunk: 8192,
            compact_above_bytes: 1 << 30,
            replicator: None,
            sync_replicated: true,
        }
    }
}

/// Opens sled, waiting a bounded time for a lock that a process that just closed the same log
/// may still hold (sled releases it from a background thread).
fn open_db(path: &Path, config: &SledConfig) -> Result<sled::Db, LogError> {
    // Every commit flushes explicitly, so sled's periodic background flush is not needed.
    let sled_config = sled::Config::new().path(path).cache_capacity(config.cache_capacity_bytes).flush_every_ms(None);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let attempt = sled_config.clone();
        // sled 0.34 can panic on some corrupted files; a panic must not take the caller down.
        let opened = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || attempt.open()))
            .map_err(|_| LogError::Storage(format!("sled panicked opening {}", path.display())))?;
        match opened {
            Ok(db) => return Ok(db),
            Err(e) if e.to_string().contains("could not acquire lock") && std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(e) => return Err(storage(&format!("cannot open the log at {}", path.display()), e)),
        }
    }
}

fn storage(context: &str, e: impl std::fmt::Display) -> LogError {
    LogError::Storage(format!("{context}: {e}"))
}

/// The durable log. Cheap to clone; the writer stops when the last clone is dropped.
#[derive(Debug, Clone)]
pub struct SledLog {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    db: sled::Db,
    tiers: Arc<Tiers>,
    snapshots: sled::Tree,
    jobs: Mutex<Option<mpsc::Sender<Job>>>,
    writer: Mutex<Option<JoinHandle<()>>>,
    sealer: Mutex<Option<JoinHandle<()>>>,
    stop_sealing: Arc<AtomicBool>,
    head: Arc<watch::Sender<u64>>,
    failed: Arc<AtomicBool>,
    /// Why the log stopped accepting appends, when its replicator refused a group.
    stopped: Arc<std::sync::OnceLock<LogError>>,
    path: PathBuf,
}

impl Drop for Shared {
    fn drop(&mut self) {
        // Closing the queue ends the writer after it has committed what it holds.
        self.jobs.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
        if let Some(handle) = self.writer.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take() {
            let _ = handle.join();
        }
        // The sealer finishes the chunk it is moving; the rest waits for the next open.
        self.stop_sealing.store(true, Ordering::Release);
        if let Some(handle) = self.sealer.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take() {
            let _ = handle.join();
        }
        let _ = self.db.flush();
    }
}

/// The result of walking the hash chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainReport {
    pub events: u64,
    pub head: u64,
    /// The first position whose record does not verify, and why.
    pub broken: Option<(u64, String)>,
}

impl SledLog {
    /// Sets the published watermark to `to` unless `done(current)` already holds: a
    /// compare-and-swap loop, so that concurrent moves never undo each other.
    fn move_watermark(&self, to: u64, done: impl Fn(u64) -> bool) -> Result<(), LogError> {
        let tree = &self.shared.tiers.tree;
        loop {
            let current = tree.get(META_PUBLISHED).map_err(|e| storage("read watermark", e))?;
            if done(current.as_ref().and_then(|v| trailing_u64(v)).unwrap_or(0)) {
                return Ok(());
            }
            let swapped = tree
                .compare_and_swap(META_PUBLISHED, current, Some(&to.to_be_bytes()[..]))
                .map_err(|e| storage("write watermark", e))?;
            if swapped.is_ok() {
                return Ok(());
            }
        }
    }

    /// Opens (or creates) a log, recovering from an interrupted run: sled restores the last
    /// durable state, a move into the archive that a crash interrupted is finished, and the
    /// head, the last record and the chain's last hash are cross-checked.
    pub fn open(config: SledConfig) -> Result<Self, LogError> {
        let mut sled_dir = compact::sled_dir(&config.path)?;
        compact::remove_leftovers(&config.path, &sled_dir)?;
        let mut db = open_db(&sled_dir, &config)?;
        let mut tree = db.open_tree("log").map_err(|e| storage("open tree", e))?;
        let archive = Archive::open(config.path.join(ARCHIVE_FILE))?;
        let mut tiers = Tiers::new(tree.clone(), archive);
        tiers.finish_move()?;

        match tree.get(META_FORMAT).map_err(|e| storage("read format", e))? {
            Some(v) if trailing_u64(&v) == Some(u64::from(FORMAT)) => {}
            Some(v) => return Err(LogError::Storage(format!("unsupported log format {:?}", trailing_u64(&v)))),
            None if tree.is_empty() => {
                tree.insert(META_FORMAT, &u64::from(FORMAT).to_be_bytes()[..])
                    .map_err(|e| storage("write format", e))?;
                db.flush().map_err(|e| storage("flush", e))?;
            }
            None => return Err(LogError::Storage("the log has data but no format marker".into())),
        }

        let head =
            tree.get(META_HEAD).map_err(|e| storage("read head", e))?.and_then(|v| trailing_u64(&v)).unwrap_or(0);
        let hash: [u8; 32] = match tree.get(META_HASH).map_err(|e| storage("read hash", e))? {
            Some(v) => v
                .as_ref()
                .try_into()
                .map_err(|_| LogError::Corrupt { position: head, problem: "head hash is not 32 bytes".into() })?,
            None => GENESIS,
        };
        // sled's file rewritten when sealed history left it mostly empty (the copy holds the
        // same records, so the head and hash read above stand).
        if compact::needed(&sled_dir, config.compact_above_bytes, head.saturating_sub(tiers.archive.sealed())) {
            let (dir, compacted) = compact::compact(&config.path, &sled_dir, &db, &config)?;
            let archive = tiers.into_archive();
            drop(tree);
            db = compacted;
            tree = db.open_tree("log").map_err(|e| storage("open tree", e))?;
            tiers = Tiers::new(tree.clone(), archive);
            sled_dir = dir;
            compact::remove_leftovers(&config.path, &sled_dir)?;
        }
        let snapshots = db.open_tree("snapshots").map_err(|e| storage("open tree", e))?;
        let tiers = Arc::new(tiers);
        if tiers.archive.sealed() > head {
            return Err(LogError::Corrupt {
                position: head + 1,
                problem: format!("the archive holds events up to {} but the head is {head}", tiers.archive.sealed()),
            });
        }
        let last = tiers
            .last(&positional(EVENT, 0), &positional(EVENT, u64::MAX), |_| true)?
            .map(|(k, v)| (trailing_u64(&k).unwrap_or(0), v));
        match &last {
            None if head == 0 => {}
            None => {
                return Err(LogError::Corrupt {
                    position: head,
                    problem: "the head names an event that is not stored".into(),
                });
            }
            Some((position, bytes)) => {
                if *position != head {
                    return Err(LogError::Corrupt {
                        position: (*position).max(head),
                        problem: format!("the last stored event is {position} but the head is {head}"),
                    });
                }
                let record = decode_record(*position, bytes)?;
                if record.hash != hash {
                    return Err(LogError::Corrupt {
                        position: *position,
                        problem: "the head hash does not match the last record".into(),
                    });
                }
            }
        }

        let head_tx = Arc::new(watch::channel(head).0);
        let failed = Arc::new(AtomicBool::new(false));
        let (heads_tx, heads_rx) = mpsc::channel();
        let stop_sealing = Arc::new(AtomicBool::new(false));
        let sealer = Sealer {
            tiers: tiers.clone(),
            hot: config.hot_events.max(1),
            chunk: config.seal_chunk.max(1),
            stop: stop_sealing.clone(),
        };
        let sealer = std::thread::Builder::new()
            .name("ticket-log-sealer".into())
            .spawn(move || sealer.run(heads_rx))
            .map_err(|e| storage("spawn sealer", e))?;
        // What is due already (a log written before sealing existed, or a larger hot tier).
        let _ = heads_tx.send(head);
        let (tx, rx) = mpsc::channel();
        let stopped = Arc::new(std::sync::OnceLock::new());
        let writer = Writer::new(
            db.clone(),
            tiers.clone(),
            heads_tx,
            head_tx.clone(),
            failed.clone(),
            head,
            hash,
            config.max_group,
            config.replicator.clone(),
            stopped.clone(),
        )
        .syncing_replicated(config.sync_replicated);
        let handle = std::thread::Builder::new()
            .name("ticket-log-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(|e| storage("spawn writer", e))?;
        info!(path = %config.path.display(), head, sealed = tiers.archive.sealed(), "event log opened");
        Ok(Self {
            shared: Arc::new(Shared {
                db,
                tiers,
                snapshots,
                jobs: Mutex::new(Some(tx)),
                writer: Mutex::new(Some(handle)),
                sealer: Mutex::new(Some(sealer)),
                stop_sealing,
                head: head_tx,
                failed,
                stopped,
                path: config.path,
            }),
        })
    }

    pub fn path(&self) -> &Path {
        &self.shared.path
    }

    /// The kind of clock this log's instants come from, as recorded by [`SledLog::claim_clock`];
    /// `None` before it is recorded.
    pub fn clock_kind(&self) -> Result<Option<ClockKind>, LogError> {
        let Some(value) = self.shared.tiers.tree.get(META_CLOCK).map_err(|e| storage("read clock kind", e))? else {
            return Ok(None);
        };
        let name = String::from_utf8_lossy(&value);
        ClockKind::from_name(&name)
            .map(Some)
            .ok_or_else(|| LogError::Storage(format!("unknown clock kind {name:?} recorded in the log")))
    }

    /// Records that this log's instants come from a `kind` clock, once, durably. Returns the
    /// kind recorded: `kind` when the log had none, else the one recorded first (which the
    /// caller compares). A log that already holds events without a record (written before clock
    /// kinds were recorded) is taken to have used the wall clock.
    pub fn claim_clock(&self, kind: ClockKind) -> Result<ClockKind, LogError> {
        if let Some(recorded) = self.clock_kind()? {
            return Ok(recorded);
        }
        let claimed = if self.head() > 0 { ClockKind::Wall } else { kind };
        let swapped = self
            .shared
            .tiers
            .tree
            .compare_and_swap(META_CLOCK, None::<&[u8]>, Some(claimed.name().as_bytes()))
            .map_err(|e| storage("write clock kind", e))?;
        self.shared.db.flush().map_err(|e| storage("flush", e))?;
        match swapped {
            Ok(()) => Ok(claimed),
            // Another handle recorded one first: that one counts.
            Err(_) => self.clock_kind()?.ok_or_else(|| LogError::Storage("the clock kind vanished".into())),
        }
    }

    /// Snapshots kept beside the log (not part of it: losing them costs a replay).
    pub fn snapshots(&self) -> SledSnapshots {
        SledSnapshots { tree: self.shared.snapshots.clone() }
    }

    fn enqueue(&self, request: AppendRequest) -> Result<oneshot::Receiver<Result<AppendOutcome, LogError>>, LogError> {
        let (reply, answer) = oneshot::channel();
        self.send(Job::Append(AppendJob { request, reply }))?;
        Ok(answer)
    }

    fn send(&self, job: Job) -> Result<(), LogError> {
        if let Some(reason) = self.shared.stopped.get() {
            return Err(reason.clone());
        }
        if self.shared.failed.load(Ordering::Acquire) {
            return Err(writer::failed_error());
        }
        let jobs = self.shared.jobs.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let sender = jobs.as_ref().ok_or(LogError::Closed)?;
        sender.send(job).map_err(|_| LogError::Closed)
    }

    /// Writes a group commit another copy of this log made (the partition owner's, read from the
    /// cluster's log stream), in its place after every append queued before it; returns the new
    /// head. The group must continue this log exactly: the next position, a hash chain that goes
    /// on from this log's head, each ticket's next versions; otherwise nothing of it is written
    /// and the error says why.
    pub fn apply_replicated(
        &self,
        group: ticket_log::ReplicaGroup,
    ) -> impl std::future::Future<Output = Result<u64, LogError>> + Send + 'static {
        let (reply, answer) = oneshot::channel();
        let queued = self.send(Job::Replicated { group, reply });
        async move {
            queued?;
            answer.await.map_err(|_| LogError::Closed)?
        }
    }

    /// Flushes everything written to disk (what `sync_replicated = false` leaves unflushed).
    /// Blocking.
    pub fn flush(&self) -> Result<(), LogError> {
        self.shared.db.flush().map(drop).map_err(|e| storage("flush", e))
    }

    /// Why the log stopped accepting appends, if its replicator refused a group (cluster mode:
    /// another node took the partition over).
    /// (Or why it failed: a write whose outcome is unknown stops it until it is reopened.)
    pub fn stopped(&self) -> Option<LogError> {
        let failed = || self.shared.failed.load(Ordering::Acquire).then(writer::failed_error);
        self.shared.stopped.get().cloned().or_else(failed)
    }

    /// The position and hash of the last record: where a replicated group must continue.
    pub fn chain_head(&self) -> Result<(u64, [u8; 32]), LogError> {
        let head = self.durable_head();
        if head == 0 {
            return Ok((0, record::GENESIS));
        }
        let bytes = self.shared.tiers.get(&keys::positional(keys::EVENT, head))?.ok_or_else(|| LogError::Corrupt {
            position: head,
            problem: "the head names an event that is not stored".into(),
        })?;
        Ok((head, decode_record(head, &bytes)?.hash))
    }

    fn durable_head(&self) -> u64 {
        *self.shared.head.borrow()
    }

    fn event_at(&self, position: u64) -> Result<RecordedEvent, LogError> {
        let bytes = self
            .shared
            .tiers
            .get(&positional(EVENT, position))?
            .ok_or_else(|| LogError::Corrupt { position, problem: "indexed event is missing".into() })?;
        decode_event(position, &bytes)
    }

    /// The last position whose event has been moved into the archive (0: none).
    pub fn sealed(&self) -> u64 {
        self.shared.tiers.archive.sealed()
    }

    /// The stored record bytes (envelope and hash chain) of up to `limit` events from `from`
    /// (fewer if the head is nearer), from both tiers, in position order: for backups, chain
    /// verification, and benchmarks that write the same bytes to a bare sled.
    pub fn read_raw(&self, from: u64, limit: usize) -> Result<Vec<(u64, Vec<u8>)>, LogError> {
        let head = self.durable_head();
        let from = from.max(1);
        if from > head || limit == 0 {
            return Ok(Vec::new());
        }
        let last = head.min(from.saturating_add(limit as u64 - 1));
        let expected = usize::try_from(last - from + 1).unwrap_or(usize::MAX);
        let entries =
            self.shared.tiers.range(&positional(EVENT, from), &positional(EVENT, last), |hot| hot.len() == expected)?;
        Ok(entries.into_iter().map(|(key, bytes)| (trailing_u64(&key).unwrap_or(0), bytes)).collect())
    }

    /// Walks every record from position 1: positions gapless, each record's previous hash equal
    /// to its predecessor's hash, each hash equal to SHA-256(previous hash || envelope), each
    /// envelope decodable and at its own position. `progress(done, total)` is called as it goes.
    pub fn verify_chain(&self, mut progress: impl FnMut(u64, u64)) -> Result<ChainReport, LogError> {
        let head = self.durable_head();
        let mut prev = GENESIS;
        let mut expected = 1;
        let mut report = ChainReport { events: 0, head, broken: None };
        while expected <= head {
            let batch = self.read_raw(expected, 10_000)?;
            if batch.is_empty() {
                break;
            }
            for (position, bytes) in batch {
                let broken = |problem: String| Some((expected.min(position), problem));
                if position != expected {
                    report.broken = broken(format!("position {expected} is missing"));
                    return Ok(report);
                }
                let record = match decode_record(position, &bytes) {
                    Ok(r) => r,
                    Err(e) => {
                        report.broken = broken(e.to_string());
                        return Ok(report);
                    }
                };
                if record.prev_hash != prev {
                    report.broken = broken("the record's previous hash does not match its predecessor".into());
                    return Ok(report);
                }
                if chain_hash(&prev, record.envelope) != record.hash {
                    report.broken = broken("the record's hash does not match its contents".into());
                    return Ok(report);
                }
                if let Err(e) = decode_event(position, &bytes) {
                    report.broken = broken(e.to_string());
                    return Ok(report);
                }
                prev = record.hash;
                expected += 1;
                report.events += 1;
                if report.events.is_multiple_of(10_000) {
                    progress(report.events, head);
                }
            }
        }
        progress(report.events, head);
        if report.events != head {
            report.broken = Some((expected, format!("the head is {head} but the chain ends at {}", expected - 1)));
        }
        Ok(report)
    }
}

impl EventLog for SledLog {
    fn append(
        &self,
        request: AppendRequest,
    ) -> impl std::future::Future<Output = Result<AppendOutcome, LogError>> + Send + 'static {
        // Queued at the call: the writer applies appends in the order they were called.
        let queued = self.enqueue(request);
        async move { queued?.await.map_err(|_| LogError::Closed)? }
    }

    fn stream_version(&self, ticket: TicketId) -> Result<u64, LogError> {
        let head = self.durable_head();
        self.shared.tiers.stream_version(ticket, Some(head))
    }

    fn read_stream(&self, ticket: TicketId, from_version: u64) -> Result<Vec<RecordedEvent>, LogError> {
        let head = self.durable_head();
        let first = keys::stream(ticket, from_version.max(1));
        // sled holds the newest versions of a stream: if it holds the first one asked for, it
        // holds them all.
        let index = self.shared.tiers.range(&first, &keys::stream(ticket, u64::MAX), |hot| {
            hot.first().is_some_and(|(key, _)| key[..] == first)
        })?;
        let mut out = Vec::with_capacity(index.len());
        for (_, value) in index {
            let position = trailing_u64(&value).ok_or_else(|| LogError::Corrupt {
                position: 0,
                problem: format!("stream index of {ticket} is malformed"),
            })?;
            if position > head {
                break;
            }
            out.push(self.event_at(position)?);
        }
        Ok(out)
    }

    fn read_from(&self, from: u64, limit: usize) -> Result<Vec<RecordedEvent>, LogError> {
        let head = self.durable_head();
        let from = from.max(1);
        if from > head || limit == 0 {
            return Ok(Vec::new());
        }
        // Decoded from the stored bytes as they are scanned (no copy of each record first).
        let last = head.min(from.saturating_add(limit as u64 - 1));
        let count = usize::try_from(last - from + 1).unwrap_or(usize::MAX);
        let mut out = Vec::with_capacity(count);
        let (first, last) = (positional(EVENT, from), positional(EVENT, last));
        self.shared.tiers.each(
            &first,
            &last,
            |hot| hot.len() == count,
            |key, bytes| {
                let expected = from + out.len() as u64;
                if trailing_u64(key) != Some(expected) {
                    return Err(LogError::Corrupt { position: expected, problem: "event missing from the log".into() });
                }
                out.push(decode_event(expected, bytes)?);
                Ok(())
            },
        )?;
        Ok(out)
    }

    fn head(&self) -> u64 {
        self.durable_head()
    }

    fn watch_head(&self) -> watch::Receiver<u64> {
        self.shared.head.subscribe()
    }

    fn command(&self, id: &CommandId) -> Result<Option<CommandRecord>, LogError> {
        let Some(bytes) = self.shared.tiers.get(&keys::command_id(id))? else {
            return Ok(None);
        };
        let record = decode_command(0, &bytes)?;
        // Written with its events in one batch, but only visible once that batch is durable.
        Ok((record.last_position <= self.durable_head()).then_some(record))
    }

    fn commands_from(&self, from: u64, limit: usize) -> Result<Vec<CommandRecord>, LogError> {
        // Every event names its command; a command's record says where its events end, so the
        // walk reads one event and one record per command.
        let head = self.durable_head();
        let mut out = Vec::new();
        let mut position = from.max(1);
        while position <= head && out.len() < limit {
            let event = self.event_at(position)?;
            let record = self.command(&event.command_id)?.ok_or_else(|| LogError::Corrupt {
                position,
                problem: format!("command {} is not stored", event.command_id),
            })?;
            if record.last_position < position {
                return Err(LogError::Corrupt {
                    position,
                    problem: format!("command {} ends before its event", event.command_id),
                });
            }
            if record.first_position >= from {
                out.push(record.clone());
            }
            position = record.last_position + 1;
        }
        Ok(out)
    }

    fn outbox_pending(&self, limit: usize) -> Result<Vec<u64>, LogError> {
        let head = self.durable_head();
        Ok((self.published()? + 1..=head).take(limit).collect())
    }

    fn mark_published(&self, up_to: u64) -> Result<(), LogError> {
        // No flush: if a crash forgets the watermark, events are published again with the same
        // ids, and the broker's de-duplication drops them. Never back, nor past the durable head.
        let up_to = up_to.min(self.durable_head());
        self.move_watermark(up_to, |current| current >= up_to)
    }

    fn rewind_published(&self, to: u64) -> Result<(), LogError> {
        // Flushed: the sequence recorded next (the lost stream's) must not reach the disk
        // without it, or a restart would find the stream where the log expects it and never
        // publish what it lost.
        self.move_watermark(to, |current| current <= to)?;
        self.shared.tiers.tree.flush().map_err(|e| storage("flush watermark", e))?;
        Ok(())
    }

    fn published_sequence(&self) -> Result<u64, LogError> {
        let value =
            self.shared.tiers.tree.get(META_PUBLISHED_SEQUENCE).map_err(|e| storage("read published sequence", e))?;
        Ok(value.and_then(|v| trailing_u64(&v)).unwrap_or(0))
    }

    fn set_published_sequence(&self, sequence: u64) -> Result<(), LogError> {
        self.shared
            .tiers
            .tree
            .insert(META_PUBLISHED_SEQUENCE, &sequence.to_be_bytes()[..])
            .map_err(|e| storage("write published sequence", e))?;
        Ok(())
    }

    fn published(&self) -> Result<u64, LogError> {
        let value = self.shared.tiers.tree.get(META_PUBLISHED).map_err(|e| storage("read watermark", e))?;
        Ok(value.and_then(|v| trailing_u64(&v)).unwrap_or(0))
    }
}

/// Snapshots in their own tree of the log's database, written without a flush.
#[derive(Debug, Clone)]
pub struct SledSnapshots {
    tree: sled::Tree,
}

impl SnapshotStore for SledSnapshots {
    fn load(&self, ticket: TicketId) -> Result<Option<Vec<u8>>, LogError> {
        Ok(self.tree.get(ticket.as_uuid().as_bytes()).map_err(|e| storage("read snapshot", e))?.map(|v| v.to_vec()))
    }

    fn save(&self, ticket: TicketId, bytes: Vec<u8>) -> Result<(), LogError> {
        self.tree.insert(ticket.as_uuid().as_bytes(), bytes).map(|_| ()).map_err(|e| storage("write snapshot", e))
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod golden;
