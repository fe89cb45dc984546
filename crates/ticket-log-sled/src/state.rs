//! The state store on sled (`ticket_log::StateStore`): one sled database of its own beside the
//! log (`data_dir/state`), one tree per space. A batch is one atomic sled batch; `sync` is one
//! flush (fsync) of the whole database. Its page cache is small and fixed: the components keep
//! what they need in memory themselves, and the rest stays on disk.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use ticket_log::state::Entry;
use ticket_log::{LogError, StateBatch, StateSpace, StateStore};

use crate::{SledConfig, open_db, storage};

/// sled's page cache for the state store, in bytes.
pub const STATE_CACHE_BYTES: u64 = 64 * 1024 * 1024;

/// The state store of a data directory.
#[derive(Debug, Clone)]
pub struct SledState {
    db: sled::Db,
    path: PathBuf,
}

impl SledState {
    /// Opens (or creates) the store at `path`. Blocking: sled opens and recovers its files.
    pub fn open(path: impl Into<PathBuf>) -> Result<Self, LogError> {
        let path = path.into();
        let config = SledConfig { cache_capacity_bytes: STATE_CACHE_BYTES, ..SledConfig::new(path.clone()) };
        Ok(Self { db: open_db(&config)?, path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// One tree. `clear` drops the tree and opens it anew, so the handle is replaceable.
#[derive(Debug)]
struct SledSpace {
    db: sled::Db,
    name: String,
    tree: RwLock<sled::Tree>,
}

impl SledSpace {
    fn tree(&self) -> sled::Tree {
        self.tree.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }
}

fn failed(what: &str, e: impl std::fmt::Display) -> LogError {
    storage(&format!("state store: {what}"), e)
}

impl StateSpace for SledSpace {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, LogError> {
        Ok(self.tree().get(key).map_err(|e| failed("read", e))?.map(|v| v.to_vec()))
    }

    fn range(&self, from: &[u8], to: Option<&[u8]>, limit: usize) -> Result<Vec<Entry>, LogError> {
        let tree = self.tree();
        let iter = match to {
            Some(to) => tree.range(from..to),
            None => tree.range(from..),
        };
        iter.take(limit)
            .map(|entry| entry.map(|(k, v)| (k.to_vec(), v.to_vec())).map_err(|e| failed("scan", e)))
            .collect()
    }

    fn apply(&self, batch: StateBatch) -> Result<(), LogError> {
        let mut sled_batch = sled::Batch::default();
        for (key, value) in batch.into_ops() {
            match value {
                Some(v) => sled_batch.insert(key, v),
                None => sled_batch.remove(key),
            }
        }
        self.tree().apply_batch(sled_batch).map_err(|e| failed("write", e))
    }

    fn clear(&self) -> Result<(), LogError> {
        let mut tree = self.tree.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        self.db.drop_tree(self.name.as_bytes()).map_err(|e| failed("drop", e))?;
        *tree = self.db.open_tree(self.name.as_bytes()).map_err(|e| failed("open", e))?;
        Ok(())
    }

    fn count(&self) -> Result<u64, LogError> {
        Ok(self.tree().len() as u64)
    }
}

impl StateStore for SledState {
    fn space(&self, name: &str) -> Result<Arc<dyn StateSpace>, LogError> {
        let tree = self.db.open_tree(name.as_bytes()).map_err(|e| failed("open", e))?;
        Ok(Arc::new(SledSpace { db: self.db.clone(), name: name.to_owned(), tree: RwLock::new(tree) }))
    }

    fn sync(&self) -> Result<(), LogError> {
        self.db.flush().map(|_| ()).map_err(|e| failed("flush", e))
    }

    fn size_on_disk(&self) -> u64 {
        self.db.size_on_disk().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_survive_a_reopen_and_clear_empties_a_space() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = SledState::open(dir.path().join("state")).unwrap();
            let space = store.space("board").unwrap();
            let mut batch = StateBatch::new();
            batch.insert(b"r1".to_vec(), b"one".to_vec());
            batch.insert(b"r2".to_vec(), b"two".to_vec());
            space.apply(batch).unwrap();
            store
                .space("timer")
                .unwrap()
                .apply({
                    let mut b = StateBatch::new();
                    b.insert(b"p".to_vec(), b"x".to_vec());
                    b
                })
                .unwrap();
            store.sync().unwrap();
        }
        let store = SledState::open(dir.path().join("state")).unwrap();
        let space = store.space("board").unwrap();
        assert_eq!(space.get(b"r2").unwrap(), Some(b"two".to_vec()));
        assert_eq!(space.range(b"r", None, 10).unwrap().len(), 2);
        space.clear().unwrap();
        assert_eq!(space.count().unwrap(), 0);
        assert_eq!(space.get(b"r1").unwrap(), None);
        assert_eq!(store.space("timer").unwrap().count().unwrap(), 1, "other spaces are untouched");
    }
}
