//! Durable state rebuildable from the log: the read models and the timer's deadline index keep
//! their rows here, updated incrementally as they apply events, so that a restart resumes from
//! what was durable and replays only the tail of the log (ADR 0013).
//!
//! A [`StateStore`] holds named [`StateSpace`]s (one per read model, one for the timer). Each
//! space is an ordered map of byte keys to byte values. A [`StateBatch`] is applied to one space
//! atomically: after a crash either all of it is there or none of it. [`StateStore::sync`]
//! makes everything applied so far durable (fsync). A component keeps its applied position in
//! the same batch as the rows it changed, so what survives a crash is always a state of the log
//! up to that position.
//!
//! This crate never depends on a storage engine: `ticket-log-sled` implements the store on sled;
//! [`MemoryState`] keeps it in memory and can simulate a crash (for property tests).

use std::collections::{BTreeMap, HashMap};
use std::fmt::Debug;
use std::ops::Bound;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::LogError;

/// A key and its value.
pub type Entry = (Vec<u8>, Vec<u8>);

/// Writes to one space, applied atomically.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StateBatch {
    ops: Vec<(Vec<u8>, Option<Vec<u8>>)>,
}

impl StateBatch {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn insert(&mut self, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) {
        self.ops.push((key.into(), Some(value.into())));
    }

    pub fn remove(&mut self, key: impl Into<Vec<u8>>) {
        self.ops.push((key.into(), None));
    }

    pub fn len(&self) -> usize {
        self.ops.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// The writes in order (a later write of a key wins).
    pub fn ops(&self) -> &[(Vec<u8>, Option<Vec<u8>>)] {
        &self.ops
    }

    pub fn into_ops(self) -> Vec<(Vec<u8>, Option<Vec<u8>>)> {
        self.ops
    }
}

/// One named, ordered key-value space of a [`StateStore`].
pub trait StateSpace: Send + Sync + Debug {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, LogError>;

    /// Up to `limit` entries with `from <= key < to` (no upper bound when `to` is `None`), in
    /// key order. Page through a large range by starting the next call after the last key.
    fn range(&self, from: &[u8], to: Option<&[u8]>, limit: usize) -> Result<Vec<Entry>, LogError>;

    /// Applies every write of `batch` atomically (not yet durable: see [`StateStore::sync`]).
    fn apply(&self, batch: StateBatch) -> Result<(), LogError>;

    /// Removes every entry, atomically (a rebuild from nothing).
    fn clear(&self) -> Result<(), LogError>;

    /// Entries in the space (counts them: a report, not a hot path).
    fn count(&self) -> Result<u64, LogError>;
}

/// Named spaces and one durability barrier for all of them.
pub trait StateStore: Send + Sync + Debug {
    /// The space `name`, created empty if it does not exist.
    fn space(&self, name: &str) -> Result<Arc<dyn StateSpace>, LogError>;

    /// Makes every batch applied so far, in every space, durable.
    fn sync(&self) -> Result<(), LogError>;

    /// Bytes the store takes on disk (0 in memory).
    fn size_on_disk(&self) -> u64;
}

/// Every key starting with `prefix`: the exclusive upper bound of the range (`None`: no bound).
pub fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

type Map = BTreeMap<Vec<u8>, Vec<u8>>;

#[derive(Debug, Default)]
struct MemorySpaceState {
    /// What a crash keeps: the state at the last sync.
    durable: Map,
    /// Batches applied since the last sync, in order.
    pending: Vec<StateBatch>,
    /// The state as readers see it.
    live: Map,
}

fn apply_to(map: &mut Map, batch: &StateBatch) {
    for (key, value) in batch.ops() {
        match value {
            Some(v) => {
                map.insert(key.clone(), v.clone());
            }
            None => {
                map.remove(key);
            }
        }
    }
}

/// A [`StateStore`] in memory. [`MemoryState::crash`] simulates a kill: each space keeps its state
/// at the last sync plus some prefix of the batches applied after it (each whole or not at all).
#[derive(Debug, Clone, Default)]
pub struct MemoryState {
    spaces: Arc<Mutex<HashMap<String, Arc<MemorySpace>>>>,
}

#[derive(Debug, Default)]
pub struct MemorySpace {
    state: Mutex<MemorySpaceState>,
}

impl MemorySpace {
    fn lock(&self) -> MutexGuard<'_, MemorySpaceState> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl MemoryState {
    pub fn new() -> Self {
        Self::default()
    }

    fn spaces(&self) -> MutexGuard<'_, HashMap<String, Arc<MemorySpace>>> {
        self.spaces.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The store a kill would leave: in each space, the synced state plus the first
    /// `keep(space, unsynced_batches)` batches applied after the last sync.
    pub fn crash(&self, mut keep: impl FnMut(&str, usize) -> usize) -> MemoryState {
        let crashed = MemoryState::new();
        for (name, space) in self.spaces().iter() {
            let state = space.lock();
            let mut map = state.durable.clone();
            let kept = keep(name, state.pending.len()).min(state.pending.len());
            for batch in state.pending.iter().take(kept) {
                apply_to(&mut map, batch);
            }
            let space = MemorySpace {
                state: Mutex::new(MemorySpaceState { durable: map.clone(), pending: Vec::new(), live: map }),
            };
            crashed.spaces().insert(name.clone(), Arc::new(space));
        }
        crashed
    }
}

impl StateSpace for MemorySpace {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, LogError> {
        Ok(self.lock().live.get(key).cloned())
    }

    fn range(&self, from: &[u8], to: Option<&[u8]>, limit: usize) -> Result<Vec<Entry>, LogError> {
        let state = self.lock();
        let upper = to.map_or(Bound::Unbounded, Bound::Excluded);
        Ok(state
            .live
            .range::<[u8], _>((Bound::Included(from), upper))
            .take(limit)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }

    fn apply(&self, batch: StateBatch) -> Result<(), LogError> {
        let mut state = self.lock();
        apply_to(&mut state.live, &batch);
        state.pending.push(batch);
        Ok(())
    }

    fn clear(&self) -> Result<(), LogError> {
        let mut state = self.lock();
        let mut batch = StateBatch::new();
        for key in state.live.keys() {
            batch.remove(key.clone());
        }
        state.live.clear();
        state.pending.push(batch);
        Ok(())
    }

    fn count(&self) -> Result<u64, LogError> {
        Ok(self.lock().live.len() as u64)
    }
}

impl StateStore for MemoryState {
    fn space(&self, name: &str) -> Result<Arc<dyn StateSpace>, LogError> {
        let space = self.spaces().entry(name.to_owned()).or_default().clone();
        Ok(space)
    }

    fn sync(&self) -> Result<(), LogError> {
        for space in self.spaces().values() {
            let mut state = space.lock();
            let pending = std::mem::take(&mut state.pending);
            for batch in &pending {
                apply_to(&mut state.durable, batch);
            }
        }
        Ok(())
    }

    fn size_on_disk(&self) -> u64 {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_crash_keeps_the_synced_state_and_whole_batches_only() {
        let store = MemoryState::new();
        let space = store.space("m").unwrap();
        let mut first = StateBatch::new();
        first.insert(b"a".to_vec(), b"1".to_vec());
        first.insert(b"position".to_vec(), 1u64.to_be_bytes().to_vec());
        space.apply(first).unwrap();
        store.sync().unwrap();
        let mut second = StateBatch::new();
        second.insert(b"b".to_vec(), b"2".to_vec());
        second.insert(b"position".to_vec(), 2u64.to_be_bytes().to_vec());
        space.apply(second).unwrap();
        let mut third = StateBatch::new();
        third.remove(b"a".to_vec());
        third.insert(b"position".to_vec(), 3u64.to_be_bytes().to_vec());
        space.apply(third).unwrap();

        let lost = store.crash(|_, _| 0).space("m").unwrap();
        assert_eq!(lost.get(b"a").unwrap(), Some(b"1".to_vec()));
        assert_eq!(lost.get(b"b").unwrap(), None);
        assert_eq!(lost.get(b"position").unwrap(), Some(1u64.to_be_bytes().to_vec()));

        let one = store.crash(|_, n| n - 1).space("m").unwrap();
        assert_eq!(one.get(b"a").unwrap(), Some(b"1".to_vec()));
        assert_eq!(one.get(b"b").unwrap(), Some(b"2".to_vec()));
        assert_eq!(one.get(b"position").unwrap(), Some(2u64.to_be_bytes().to_vec()));

        let all = store.crash(|_, n| n).space("m").unwrap();
        assert_eq!(all.get(b"a").unwrap(), None);
        assert_eq!(all.count().unwrap(), 2);
    }

    #[test]
    fn ranges_are_ordered_bounded_and_paged() {
        let store = MemoryState::new();
        let space = store.space("m").unwrap();
        let mut batch = StateBatch::new();
        for k in [b"r\x01".to_vec(), b"r\x02".to_vec(), b"r\xff".to_vec(), b"s".to_vec(), b"q".to_vec()] {
            batch.insert(k, b"v".to_vec());
        }
        space.apply(batch).unwrap();
        let end = prefix_end(b"r");
        let keys: Vec<_> = space.range(b"r", end.as_deref(), 100).unwrap().into_iter().map(|(k, _)| k).collect();
        assert_eq!(keys, vec![b"r\x01".to_vec(), b"r\x02".to_vec(), b"r\xff".to_vec()]);
        assert_eq!(space.range(b"r", end.as_deref(), 2).unwrap().len(), 2);
        assert_eq!(prefix_end(&[0x01, 0xff]), Some(vec![0x02]));
        assert_eq!(prefix_end(&[0xff, 0xff]), None);
    }
}
