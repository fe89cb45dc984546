//! The read models' rows, kept in memory while they change and in the state store once they rest.
//!
//! - [`Rows`]: one row per ticket. A row that is not dormant (an open ticket) lives in memory; a
//!   dormant one (a resolved ticket) is written to the store at the next flush and dropped from
//!   memory; a later event for it (a reopen, a late breach) loads it back. Memory holds the open
//!   tickets, not the history. A model whose rows the log itself can give back (the tickets'
//!   states, folded from a ticket's stream: [`Rows::forget_dormant`]) does not store dormant rows
//!   at all. Without a store (time travel, what-if, tests), every row stays in memory.
//! - [`Keyed`]: append-mostly records under ordered keys (a customer's tickets, compliance
//!   outcomes): written since the last flush in memory, the rest in the store; a scan sees both.
//!
//! Key layout of a model's space (one space per model): `l ‖ ticket` a live row, `d ‖ ticket` a
//! dormant row, other first bytes are the model's own records, `m:` its meta keys (position and
//! format, see `model.rs`). Values are bincode (state rebuildable from the log, ADR 0004).

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use serde::Serialize;
use serde::de::DeserializeOwned;
use ticket_domain::{TicketId, Timestamp};
use ticket_log::{LogError, StateBatch, StateSpace};

/// Entries read from the store per page.
const PAGE: usize = 4096;

const LIVE: u8 = b'l';
const DORMANT: u8 = b'd';

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("the state store failed: {0}")]
    Store(#[from] LogError),
    #[error("stored state does not decode: {0}")]
    Decode(String),
}

impl From<StateError> for LogError {
    /// A query that could not read the stored state fails as the store's error, never as an
    /// absent row.
    fn from(e: StateError) -> Self {
        match e {
            StateError::Store(e) => e,
            StateError::Decode(problem) => {
                LogError::Storage(format!("stored read-model state does not decode: {problem}"))
            }
        }
    }
}

pub(crate) fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, StateError> {
    bincode::serde::encode_to_vec(value, bincode::config::standard()).map_err(|e| StateError::Decode(e.to_string()))
}

pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, StateError> {
    let (value, read): (T, usize) = bincode::serde::decode_from_slice(bytes, bincode::config::standard())
        .map_err(|e| StateError::Decode(e.to_string()))?;
    if read != bytes.len() {
        return Err(StateError::Decode(format!("{} trailing bytes", bytes.len() - read)));
    }
    Ok(value)
}

/// `prefix ‖ ticket` (16 bytes).
pub(crate) fn ticket_key(prefix: &[u8], id: TicketId) -> Vec<u8> {
    let mut key = prefix.to_vec();
    key.extend_from_slice(id.as_uuid().as_bytes());
    key
}

/// The ticket in the last 16 bytes of a key.
pub(crate) fn ticket_of(key: &[u8]) -> Option<TicketId> {
    let tail = key.len().checked_sub(16).and_then(|start| key.get(start..))?;
    let bytes: [u8; 16] = tail.try_into().ok()?;
    Some(TicketId::from_uuid(uuid::Uuid::from_bytes(bytes)))
}

/// An instant as 12 bytes that sort as the instants do: seconds (i64, sign bit flipped, big
/// endian), then nanoseconds (u32, big endian).
pub(crate) fn instant_key(t: &Timestamp) -> [u8; 12] {
    let mut key = [0u8; 12];
    let seconds = (t.timestamp() as u64) ^ (1 << 63);
    key[..8].copy_from_slice(&seconds.to_be_bytes());
    key[8..].copy_from_slice(&t.timestamp_subsec_nanos().to_be_bytes());
    key
}

/// Every entry of `space` with `from <= key < to`, page by page.
pub(crate) fn scan(
    space: &dyn StateSpace,
    from: &[u8],
    to: Option<&[u8]>,
    mut each: impl FnMut(&[u8], &[u8]) -> Result<(), StateError>,
) -> Result<(), StateError> {
    let mut start = from.to_vec();
    loop {
        let page = space.range(&start, to, PAGE)?;
        let full = page.len() == PAGE;
        for (key, value) in &page {
            each(key, value)?;
        }
        match page.last() {
            Some((last, _)) if full => {
                start = last.clone();
                start.push(0);
            }
            Some(_) | None => return Ok(()),
        }
    }
}

/// A row of a per-ticket model.
pub trait Row: Serialize + DeserializeOwned + Clone + Send + Sync + 'static {
    /// A dormant row (a resolved ticket's) leaves memory at the next flush.
    fn dormant(&self) -> bool;
}

/// Where a row in memory is in the store: not yet, under `l` or under `d` (so that a flush
/// removes only a key that is there).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stored {
    No,
    Live,
    Dormant,
}

/// The rows' hasher: every event applied looks its ticket up in each model, and SipHash (std's
/// default) was a tenth of a rebuild. foldhash is seeded per process, so ids a client chooses
/// cannot be aimed at one bucket.
type Hasher = foldhash::fast::RandomState;

/// A dormant row from `space`, if the rows keep them there; an error if it cannot be read (the
/// store failed, or it does not decode): a query answers the error ([`Rows::get`]), an event
/// being applied stops the model ([`Rows::stored_to_change`]).
fn stored_row<V: Row>(
    space: &Option<Arc<dyn StateSpace>>,
    keep_dormant: bool,
    id: TicketId,
) -> Result<Option<V>, StateError> {
    let Some(space) = space.as_ref().filter(|_| keep_dormant) else { return Ok(None) };
    let bytes = space.get(&ticket_key(&[DORMANT], id))?;
    bytes.map(|b| decode::<V>(&b)).transpose()
}

/// Per-ticket rows: the live ones in memory, the dormant ones in the store (see the module).
#[derive(Debug)]
pub struct Rows<V> {
    space: Option<Arc<dyn StateSpace>>,
    live: HashMap<TicketId, (V, Stored), Hasher>,
    /// Rows changed since the last flush.
    dirty: HashSet<TicketId, Hasher>,
    /// Dormant rows are written to the store (else they are only dropped: the model gets them
    /// back from the log).
    keep_dormant: bool,
    /// A stored row that could not be read while an event was applied (the store failed, or
    /// the row does not decode): the rows in memory are not the log's fold from then on, so the
    /// model must stop there and never be flushed ([`Rows::unreadable`]).
    unreadable: Option<String>,
}

impl<V: Row> Rows<V> {
    pub(crate) fn new(space: Option<Arc<dyn StateSpace>>) -> Self {
        Self { space, live: HashMap::default(), dirty: HashSet::default(), keep_dormant: true, unreadable: None }
    }

    /// Dormant rows leave memory at the next flush without being stored (a live row they were
    /// is removed from the store): the model gets them back from the log when it needs them.
    pub(crate) fn forget_dormant(&mut self) {
        self.keep_dormant = false;
    }

    /// The live rows stored in `space`.
    pub(crate) fn load(space: Arc<dyn StateSpace>) -> Result<Self, StateError> {
        let mut live = HashMap::default();
        scan(&*space, &[LIVE], Some(&[LIVE + 1]), |key, value| {
            let id = ticket_of(key).ok_or_else(|| StateError::Decode("a row key without a ticket".to_owned()))?;
            live.insert(id, (decode::<V>(value)?, Stored::Live));
            Ok(())
        })?;
        Ok(Self { space: Some(space), live, dirty: HashSet::default(), keep_dormant: true, unreadable: None })
    }

    /// A dormant row from the store, to change: one that cannot be read makes the rows
    /// unreadable (see [`Rows::unreadable`]).
    fn stored_to_change(&mut self, id: TicketId) -> Option<V> {
        match stored_row(&self.space, self.keep_dormant, id) {
            Ok(row) => row,
            // Logged once, with the event, where the model stops (`Projected::apply`).
            Err(e) => {
                self.unreadable.get_or_insert_with(|| format!("ticket {id}: {e}"));
                None
            }
        }
    }

    /// Why a stored row could not be read while an event was applied, if one could not: the
    /// rows are wrong from that event on.
    pub(crate) fn unreadable(&self) -> Option<&str> {
        self.unreadable.as_deref()
    }

    /// The row, from memory or the store; an error if a stored row cannot be read (the query
    /// reports it, rather than answer as if the ticket had no row).
    pub(crate) fn get(&self, id: TicketId) -> Result<Option<Cow<'_, V>>, StateError> {
        match self.live.get(&id) {
            Some((row, _)) => Ok(Some(Cow::Borrowed(row))),
            None => Ok(stored_row(&self.space, self.keep_dormant, id)?.map(Cow::Owned)),
        }
    }

    /// The row if it is in memory (every row that is not dormant is).
    pub(crate) fn get_live(&self, id: TicketId) -> Option<&V> {
        self.live.get(&id).map(|(row, _)| row)
    }

    /// Puts a row the model got back from the log into memory (not stored yet).
    pub(crate) fn insert(&mut self, id: TicketId, row: V) {
        if self.space.is_some() {
            self.dirty.insert(id);
        }
        self.live.insert(id, (row, Stored::No));
    }

    /// The row to change (loaded back into memory if dormant).
    pub(crate) fn get_mut(&mut self, id: TicketId) -> Option<&mut V> {
        if !self.live.contains_key(&id) {
            let stored = self.stored_to_change(id)?;
            self.live.insert(id, (stored, Stored::Dormant));
        }
        let row = self.live.get_mut(&id)?;
        if self.space.is_some() {
            self.dirty.insert(id);
        }
        Some(&mut row.0)
    }

    /// The row to change, created by `new` if there is none.
    pub(crate) fn get_or_insert_with(&mut self, id: TicketId, new: impl FnOnce() -> V) -> &mut V {
        if self.space.is_some() {
            self.dirty.insert(id);
        }
        let loaded = if self.live.contains_key(&id) { None } else { self.stored_to_change(id) };
        let row = self.live.entry(id).or_insert_with(|| match loaded {
            Some(row) => (row, Stored::Dormant),
            None => (new(), Stored::No),
        });
        &mut row.0
    }

    /// The live rows (all of them without a store).
    pub(crate) fn live(&self) -> impl Iterator<Item = (&TicketId, &V)> {
        self.live.iter().map(|(id, (row, _))| (id, row))
    }

    pub(crate) fn live_len(&self) -> usize {
        self.live.len()
    }

    pub(crate) fn dirty_len(&self) -> usize {
        self.dirty.len()
    }

    /// Adds the changed rows to `batch` (live ones under `l`, dormant ones under `d`).
    pub(crate) fn write(&self, batch: &mut StateBatch) -> Result<(), StateError> {
        if self.space.is_none() {
            return Ok(());
        }
        for id in &self.dirty {
            let Some((row, stored)) = self.live.get(id) else { continue };
            let (live, dormant) = (ticket_key(&[LIVE], *id), ticket_key(&[DORMANT], *id));
            if row.dormant() {
                if *stored == Stored::Live {
                    batch.remove(live);
                }
                if self.keep_dormant {
                    batch.insert(dormant, encode(row)?);
                }
            } else {
                if *stored == Stored::Dormant {
                    batch.remove(dormant);
                }
                batch.insert(live, encode(row)?);
            }
        }
        Ok(())
    }

    /// After the batch of [`Rows::write`] was applied: nothing is dirty, dormant rows leave memory.
    pub(crate) fn written(&mut self) {
        if self.space.is_none() {
            return;
        }
        for id in self.dirty.drain() {
            match self.live.get_mut(&id) {
                Some((row, _)) if row.dormant() => {
                    self.live.remove(&id);
                }
                Some((_, stored)) => *stored = Stored::Live,
                None => {}
            }
        }
        if self.live.capacity() > 64 && self.live.capacity() > 4 * self.live.len() {
            self.live.shrink_to_fit();
        }
    }
}

/// A key of [`Keyed`], held inline up to 48 bytes (every key the models write today): an
/// insert compares keys in the tree's nodes without a pointer to follow for each, which made
/// these inserts a seventh of a rebuild's time when the keys were `Vec`s.
pub(crate) type Key = smallvec::SmallVec<[u8; 48]>;

/// Records under ordered keys: those written since the last flush in memory, the others in the
/// store. Without a store, all of them stay in memory.
#[derive(Debug)]
pub struct Keyed {
    space: Option<Arc<dyn StateSpace>>,
    pending: BTreeMap<Key, Vec<u8>>,
}

impl Keyed {
    pub(crate) fn new(space: Option<Arc<dyn StateSpace>>) -> Self {
        Self { space, pending: BTreeMap::new() }
    }

    pub(crate) fn put(&mut self, key: Key, value: Vec<u8>) {
        self.pending.insert(key, value);
    }

    pub(crate) fn pending_len(&self) -> usize {
        if self.space.is_some() { self.pending.len() } else { 0 }
    }

    /// Every record with `from <= key < to`, the newest value of each (not in key order: the
    /// stored ones first, then those not yet flushed).
    pub(crate) fn scan(
        &self,
        from: &[u8],
        to: Option<&[u8]>,
        mut each: impl FnMut(&[u8], &[u8]) -> Result<(), StateError>,
    ) -> Result<(), StateError> {
        if let Some(space) = &self.space {
            scan(
                &**space,
                from,
                to,
                |key, value| {
                    if self.pending.contains_key(key) { Ok(()) } else { each(key, value) }
                },
            )?;
        }
        let upper = to.map_or(std::ops::Bound::Unbounded, std::ops::Bound::Excluded);
        for (key, value) in self.pending.range::<[u8], _>((std::ops::Bound::Included(from), upper)) {
            each(key, value)?;
        }
        Ok(())
    }

    pub(crate) fn write(&self, batch: &mut StateBatch) {
        if self.space.is_none() {
            return;
        }
        for (key, value) in &self.pending {
            batch.insert(key.to_vec(), value.clone());
        }
    }

    pub(crate) fn written(&mut self) {
        if self.space.is_some() {
            self.pending.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use ticket_log::{MemoryState, StateStore as _};

    use super::*;

    #[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
    struct Resting(u32);

    impl Row for Resting {
        fn dormant(&self) -> bool {
            true
        }
    }

    /// Given a resting row in the store, a query gets it back; when it cannot be read (it does
    /// not decode), the query gets an error naming it, not an answer as if the ticket had no row.
    #[test]
    fn a_resting_row_that_cannot_be_read_is_an_error_to_a_query_not_an_absence() {
        let space = MemoryState::new().space("rows").unwrap();
        let id = |n: u128| TicketId::from_uuid(uuid::Uuid::from_u128(n));
        let (kept, broken, absent) = (id(1), id(2), id(3));
        let mut rows = Rows::<Resting>::new(Some(space.clone()));
        *rows.get_or_insert_with(kept, || Resting(7)) = Resting(7);
        let mut batch = StateBatch::new();
        rows.write(&mut batch).unwrap();
        space.apply(batch).unwrap();
        rows.written();
        assert!(rows.get_live(kept).is_none(), "the row rests in the store");
        let mut batch = StateBatch::new();
        batch.insert(ticket_key(&[DORMANT], broken), b"\xff\xff not a row".to_vec());
        space.apply(batch).unwrap();

        assert_eq!(rows.get(kept).unwrap().map(Cow::into_owned), Some(Resting(7)));
        assert_eq!(rows.get(absent).unwrap(), None);
        assert!(rows.get(broken).is_err(), "an unreadable row answered as absent");
        assert!(rows.unreadable().is_none(), "a query does not stop the model");
    }
}
