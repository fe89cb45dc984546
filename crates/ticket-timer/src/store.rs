//! The deadline index kept durably and incrementally in the `timer` space of a state store
//! (`ticket_log::StateStore`; on sled in `data_dir/state`, ADR 0013).
//!
//! Layout of the space (format [`FORMAT`]):
//!
//! | key | value |
//! |---|---|
//! | `m:format` | the format, u32 big-endian |
//! | `m:position` | the log position the rows reflect, u64 big-endian |
//! | `c` + ticket uuid (16 bytes) + metric code (1 byte) | the clock's entry: cycle, breach, pending firings (the checkpoint image's compact codec) |
//!
//! A flush writes, in one atomic batch, the rows of the clocks that changed since the last one
//! (removing those the index no longer tracks) and the position, then syncs the store. What a
//! kill leaves is therefore always the whole index as it was at some flush: a state the live
//! index had, at the position it had then.
//!
//! Why a copy holding settles made after its position is still exact: the index is a
//! deterministic function of the events applied and the firings settled, in their order. A
//! flush stores the index as it is at that moment, including firings settled whose recording
//! events are later than the stored position (the timer settles a firing when its command is
//! answered, before it applies the event that recorded it). Replaying the events after the
//! position onto that copy is exactly what the live index would have done next: a recorded
//! warning or breach finds its firing already forgotten (`forget` and the breach's `breached`
//! flag act only on an entry still held, as they do live); a breach past at import
//! (`past_at_import`) only rewrites firings still pending; a breach settled as moot stays
//! forgotten, and whatever made it moot (a stop, a new cycle, a retarget) is an event after the
//! position that replaces the clock as it does live. Settles made after the last durable flush
//! are lost by a kill: those firings are pending again after the restart, are issued again with
//! the same command id, and are answered as repeated (recorded) or moot (refused again), then
//! settled. The property test `tests::a_killed_index_resumes_from_its_last_flush` checks both.
//!
//! Anything unexpected in the space (no format key, another format, a position ahead of the
//! log, a row that does not decode) clears the space and rebuilds the index from the log:
//! state rebuilt from the log is never a reason to fail.

use std::sync::Arc;

use ticket_domain::{Changes, ClockEntryOwned, ClockKey, DeadlineIndex, TicketId};
use ticket_log::{LogError, StateBatch, StateSpace, StateStore};
use tracing::{info, warn};
use uuid::Uuid;

use crate::CheckpointError;
use crate::checkpoint::{Reader, decode_clock, encode_clock, metric_code};

/// The name of the timer's space in the state store.
pub const SPACE: &str = "timer";
/// The layout and the rows' encoding; another value in a store means rebuilding.
pub const FORMAT: u32 = 1;

const FORMAT_KEY: &[u8] = b"m:format";
const POSITION_KEY: &[u8] = b"m:position";
const CLOCK_PREFIX: u8 = b'c';
const CLOCK_KEY_LEN: usize = 1 + 16 + 1;
/// Rows read per page when loading.
const PAGE: usize = 4096;

/// The timer's durable copy of its deadline index.
#[derive(Debug, Clone)]
pub struct IndexStore {
    store: Arc<dyn StateStore>,
    space: Arc<dyn StateSpace>,
}

/// What [`IndexStore::load`] found.
#[derive(Debug)]
pub struct Loaded {
    /// The index as stored (tracking its changes from here), or an empty one at position 0.
    pub index: DeadlineIndex,
    /// Why the stored copy was not used (the space was cleared): `None` when it was.
    pub rebuild: Option<String>,
}

/// What one flush wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flushed {
    /// The position now durable.
    pub position: u64,
    /// Clocks written or removed.
    pub clocks: usize,
    /// Bytes of keys and values in the batch.
    pub bytes: usize,
}

impl IndexStore {
    /// The `timer` space of `store`.
    pub fn open(store: Arc<dyn StateStore>) -> Result<Self, LogError> {
        let space = store.space(SPACE)?;
        Ok(Self { store, space })
    }

    /// The position the stored copy reflects, as far as it can be read.
    pub fn position(&self) -> Result<Option<u64>, LogError> {
        Ok(self.space.get(POSITION_KEY)?.and_then(|v| <[u8; 8]>::try_from(v.as_slice()).ok()).map(u64::from_be_bytes))
    }

    /// Reads the stored index. When it cannot be used (see the module's docs) or reflects a
    /// position beyond `head` (the log's), the space is cleared, stamped with this format at
    /// position 0, and an empty index is returned, to be rebuilt from the log. Blocking. Errors
    /// are the store's own failures (reading, writing, syncing).
    pub fn load(&self, head: u64) -> Result<Loaded, LogError> {
        let rebuild = match self.read(head)? {
            Ok(mut index) => {
                index.track_changes();
                return Ok(Loaded { index, rebuild: None });
            }
            Err(why) => why,
        };
        if self.space.count()? > 0 {
            warn!(reason = %rebuild, "the timer's stored deadline index is not usable; clearing it and rebuilding from the log");
            self.space.clear()?;
        } else {
            info!(reason = %rebuild, "no stored deadline index; building it from the log");
        }
        let mut batch = StateBatch::new();
        batch.insert(FORMAT_KEY, FORMAT.to_be_bytes().to_vec());
        batch.insert(POSITION_KEY, 0u64.to_be_bytes().to_vec());
        self.space.apply(batch)?;
        self.store.sync()?;
        let mut index = DeadlineIndex::new();
        index.track_changes();
        Ok(Loaded { index, rebuild: Some(rebuild) })
    }

    /// The stored index, or why it cannot be used.
    fn read(&self, head: u64) -> Result<Result<DeadlineIndex, String>, LogError> {
        let format = match self.space.get(FORMAT_KEY)? {
            None => return Ok(Err("no format key".to_owned())),
            Some(v) => match <[u8; 4]>::try_from(v.as_slice()) {
                Ok(bytes) => u32::from_be_bytes(bytes),
                Err(_) => return Ok(Err(format!("a format key of {} bytes", v.len()))),
            },
        };
        if format != FORMAT {
            return Ok(Err(format!("format {format}, this timer reads format {FORMAT}")));
        }
        let Some(position) = self.position()? else {
            return Ok(Err("no readable position".to_owned()));
        };
        if position > head {
            return Ok(Err(format!("its position {position} is ahead of the log's head {head}")));
        }
        let mut entries = Vec::new();
        let mut from = vec![CLOCK_PREFIX];
        let to = [CLOCK_PREFIX + 1];
        loop {
            let page = self.space.range(&from, Some(&to), PAGE)?;
            let Some((last, _)) = page.last() else { break };
            let mut next = last.clone();
            next.push(0);
            for (key, value) in &page {
                match decode_row(key, value) {
                    Ok(entry) => entries.push(entry),
                    Err(e) => {
                        let key = key.iter().map(|b| format!("{b:02x}")).collect::<String>();
                        return Ok(Err(format!("the row {key} does not decode: {e}")));
                    }
                }
            }
            if page.len() < PAGE {
                break;
            }
            from = next;
        }
        Ok(Ok(DeadlineIndex::from_clock_entries(position, entries)))
    }

    /// The batch writing `changes`: each changed clock's row (or its removal) and the position.
    pub fn batch(changes: &Changes) -> StateBatch {
        let mut batch = StateBatch::new();
        for (key, entry) in &changes.clocks {
            match entry {
                Some(entry) => batch.insert(clock_key(*key), encode_row(entry)),
                None => batch.remove(clock_key(*key)),
            }
        }
        batch.insert(POSITION_KEY, changes.position.to_be_bytes().to_vec());
        batch
    }

    /// Applies `batch` atomically and syncs the store. Blocking.
    pub fn write(&self, batch: StateBatch) -> Result<(), LogError> {
        self.space.apply(batch)?;
        self.store.sync()
    }

    /// Writes what changed in `index` since its last flush, with its position, and syncs.
    /// On failure the changes are marked again in `index`, to be written by the next flush.
    /// Blocking.
    pub fn flush(&self, index: &mut DeadlineIndex) -> Result<Flushed, LogError> {
        let changes = index.take_changes();
        let batch = Self::batch(&changes);
        let flushed = Flushed { position: changes.position, clocks: changes.clocks.len(), bytes: batch_bytes(&batch) };
        match self.write(batch) {
            Ok(()) => Ok(flushed),
            Err(e) => {
                index.mark_changed(changes.keys());
                Err(e)
            }
        }
    }
}

/// Bytes of keys and values in `batch`.
pub fn batch_bytes(batch: &StateBatch) -> usize {
    batch.ops().iter().map(|(k, v)| k.len() + v.as_ref().map_or(0, Vec::len)).sum()
}

fn clock_key((ticket, metric): ClockKey) -> Vec<u8> {
    let mut key = Vec::with_capacity(CLOCK_KEY_LEN);
    key.push(CLOCK_PREFIX);
    key.extend_from_slice(ticket.as_uuid().as_bytes());
    key.push(metric_code(metric));
    key
}

fn encode_row(entry: &ClockEntryOwned) -> Vec<u8> {
    let mut out = Vec::with_capacity(9 + entry.pending.len() * 14);
    encode_clock(&mut out, entry.cycle, entry.breached, &entry.pending);
    out
}

fn decode_row(key: &[u8], value: &[u8]) -> Result<ClockEntryOwned, CheckpointError> {
    if key.len() != CLOCK_KEY_LEN {
        return Err(CheckpointError::Malformed(0));
    }
    let mut k = Reader::new(key);
    k.u8()?;
    let ticket = TicketId::from_uuid(Uuid::from_bytes(k.array()?));
    let metric = k.metric()?;
    let mut r = Reader::new(value);
    let entry = decode_clock(&mut r, ticket, metric)?;
    if !r.done() {
        return Err(CheckpointError::Malformed(value.len()));
    }
    Ok(entry)
}

#[cfg(test)]
mod tests;
