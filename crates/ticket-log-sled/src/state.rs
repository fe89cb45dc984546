//! The state store on redb (`ticket_log::StateStore`): one redb database file of its own beside
//! the log (`data_dir/state.redb`), one table per space (ADR 0013).
//!
//! - A batch is one write transaction, committed without fsync (`Durability::None`): atomic and
//!   visible at once, durable at the next `sync`.
//! - `sync` is one durable commit (fsync) with quick repair: redb saves its allocator state in
//!   it, so that reopening after a kill is instant instead of a walk of the whole file. A kill
//!   keeps the state of the last `sync`, which is a prefix of the batches applied (the contract
//!   of `StateStore`).
//! - Its page cache is small and fixed: the components keep what they need in memory themselves.
//!
//! Why redb and not a second sled database (the first version): sled took 7 us per insert in a
//! rebuild (a copy of the leaf node on every write), and scanned a million timer rows at 20k/s;
//! redb inserts 3 times faster and scans at millions a second (`docs/benchmarks.md`).

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use redb::{Database, Durability, ReadableDatabase, ReadableTableMetadata, TableDefinition, TableError};
use ticket_log::state::Entry;
use ticket_log::{LogError, StateBatch, StateSpace, StateStore};

use crate::storage;

/// redb's page cache for the state store, in bytes.
pub const STATE_CACHE_BYTES: usize = 64 * 1024 * 1024;

/// The state store of a data directory.
#[derive(Clone)]
pub struct RedbState {
    db: Arc<Database>,
    path: PathBuf,
}

impl fmt::Debug for RedbState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedbState").field("path", &self.path).finish_non_exhaustive()
    }
}

impl RedbState {
    /// Opens (or creates) the store in the file `path` (its directory is created). Blocking.
    /// One process, and one handle in it, at a time (redb locks the file).
    pub fn open(path: impl Into<PathBuf>) -> Result<Self, LogError> {
        let path = path.into();
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| failed("create its directory", e))?;
        }
        let mut builder = redb::Builder::new();
        builder.set_cache_size(STATE_CACHE_BYTES);
        let db = builder.create(&path).map_err(|e| failed(&format!("open {}", path.display()), e))?;
        Ok(Self { db: Arc::new(db), path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// One table, named after the space.
struct RedbSpace {
    db: Arc<Database>,
    name: String,
}

impl fmt::Debug for RedbSpace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedbSpace").field("name", &self.name).finish_non_exhaustive()
    }
}

type Table<'a> = TableDefinition<'a, &'static [u8], &'static [u8]>;

impl RedbSpace {
    fn table(&self) -> Table<'_> {
        TableDefinition::new(&self.name)
    }

    /// Runs `read` on the table in a read transaction (`None`: the table does not exist yet).
    fn read<T>(
        &self,
        read: impl FnOnce(&redb::ReadOnlyTable<&'static [u8], &'static [u8]>) -> Result<T, LogError>,
    ) -> Result<Option<T>, LogError> {
        let tx = self.db.begin_read().map_err(|e| failed("begin a read", e))?;
        match tx.open_table(self.table()) {
            Ok(table) => read(&table).map(Some),
            Err(TableError::TableDoesNotExist(_)) => Ok(None),
            Err(e) => Err(failed("open a table", e)),
        }
    }

    /// Runs `write` in a write transaction committed without fsync.
    fn write(&self, write: impl FnOnce(&redb::WriteTransaction) -> Result<(), LogError>) -> Result<(), LogError> {
        let mut tx = self.db.begin_write().map_err(|e| failed("begin a write", e))?;
        tx.set_durability(Durability::None).map_err(|e| failed("set the durability", e))?;
        write(&tx)?;
        tx.commit().map_err(|e| failed("commit", e))
    }
}

fn failed(what: &str, e: impl fmt::Display) -> LogError {
    storage(&format!("state store: {what}"), e)
}

impl StateSpace for RedbSpace {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, LogError> {
        let value =
            self.read(|table| Ok(table.get(key).map_err(|e| failed("read", e))?.map(|v| v.value().to_vec())))?;
        Ok(value.flatten())
    }

    fn range(&self, from: &[u8], to: Option<&[u8]>, limit: usize) -> Result<Vec<Entry>, LogError> {
        let entries = self.read(|table| {
            let range = match to {
                Some(to) => table.range::<&[u8]>(from..to),
                None => table.range::<&[u8]>(from..),
            };
            range
                .map_err(|e| failed("scan", e))?
                .take(limit)
                .map(|entry| {
                    entry.map(|(k, v)| (k.value().to_vec(), v.value().to_vec())).map_err(|e| failed("scan", e))
                })
                .collect()
        })?;
        Ok(entries.unwrap_or_default())
    }

    fn apply(&self, batch: StateBatch) -> Result<(), LogError> {
        if batch.is_empty() {
            return Ok(());
        }
        self.write(|tx| {
            let mut table = tx.open_table(self.table()).map_err(|e| failed("open a table", e))?;
            for (key, value) in batch.ops() {
                match value {
                    Some(v) => table.insert(key.as_slice(), v.as_slice()).map(drop),
                    None => table.remove(key.as_slice()).map(drop),
                }
                .map_err(|e| failed("write", e))?;
            }
            Ok(())
        })
    }

    fn clear(&self) -> Result<(), LogError> {
        self.write(|tx| tx.delete_table(self.table()).map(drop).map_err(|e| failed("delete a table", e)))
    }

    fn count(&self) -> Result<u64, LogError> {
        let count = self.read(|table| table.len().map_err(|e| failed("count", e)))?;
        Ok(count.unwrap_or(0))
    }
}

impl StateStore for RedbState {
    fn space(&self, name: &str) -> Result<Arc<dyn StateSpace>, LogError> {
        Ok(Arc::new(RedbSpace { db: self.db.clone(), name: name.to_owned() }))
    }

    fn sync(&self) -> Result<(), LogError> {
        let mut tx = self.db.begin_write().map_err(|e| failed("begin a sync", e))?;
        tx.set_durability(Durability::Immediate).map_err(|e| failed("set the durability", e))?;
        tx.set_quick_repair(true);
        tx.commit().map_err(|e| failed("sync", e))
    }

    fn size_on_disk(&self) -> u64 {
        std::fs::metadata(&self.path).map_or(0, |m| m.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_survive_a_reopen_and_clear_empties_a_space() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = RedbState::open(dir.path().join("state.redb")).unwrap();
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
        let store = RedbState::open(dir.path().join("state.redb")).unwrap();
        let space = store.space("board").unwrap();
        assert_eq!(space.get(b"r2").unwrap(), Some(b"two".to_vec()));
        assert_eq!(space.range(b"r", None, 10).unwrap().len(), 2);
        space.clear().unwrap();
        assert_eq!(space.count().unwrap(), 0);
        assert_eq!(space.get(b"r1").unwrap(), None);
        assert_eq!(store.space("timer").unwrap().count().unwrap(), 1, "other spaces are untouched");
    }

    /// Given a batch that writes keys out of order and some twice, when it is applied, then
    /// each key holds its last write in the batch.
    #[test]
    fn a_batch_keeps_each_keys_last_write() {
        let dir = tempfile::tempdir().unwrap();
        let store = RedbState::open(dir.path().join("state.redb")).unwrap();
        let space = store.space("tickets").unwrap();
        let mut batch = StateBatch::new();
        batch.insert(b"z".to_vec(), b"1".to_vec());
        batch.insert(b"a".to_vec(), b"1".to_vec());
        batch.remove(b"z".to_vec());
        batch.insert(b"m".to_vec(), b"1".to_vec());
        batch.remove(b"a".to_vec());
        batch.insert(b"a".to_vec(), b"2".to_vec());
        batch.insert(b"m".to_vec(), b"3".to_vec());
        space.apply(batch).unwrap();
        assert_eq!(space.get(b"z").unwrap(), None);
        assert_eq!(space.get(b"a").unwrap(), Some(b"2".to_vec()));
        assert_eq!(space.get(b"m").unwrap(), Some(b"3".to_vec()));
        assert_eq!(space.count().unwrap(), 2);
    }
}
