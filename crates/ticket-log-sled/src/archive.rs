//! The log's sealed history (ADR 0014): the part of the log older than its hot tail, moved out
//! of sled into one redb file (`<log>/archive.redb`) so that opening the log does not grow with
//! history.
//!
//! sled rebuilds its whole page table at open (1.6 s and 1.1 GB of memory for a 10^7-event log,
//! whatever its cache size); redb opens a cleanly committed file by reading its header. So the
//! log keeps its newest events in sled, where appends, group commit and the hash chain work as
//! before, and a sealer moves older ones here in chunks, verbatim: the same keys (`e` position,
//! `s` ticket version, `i` command id) and the same bytes. Reads look in sled first, then here.
//!
//! A chunk is moved in two steps, in this order:
//! 1. one durable redb commit (fsync, quick repair) adds the chunk's records and raises the
//!    archive's `sealed` position;
//! 2. one atomic sled batch deletes the same keys and raises sled's `sealed` marker.
//!
//! So every record is always in at least one tier, and a crash between the steps leaves the
//! chunk in both: [`crate::SledLog::open`] finishes step 2 from the archive.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use redb::{Database, Durability, ReadableDatabase, TableDefinition, TableError};
use ticket_log::LogError;

use crate::storage;

/// redb's page cache for the archive: reads of old history are rare and sequential.
pub const ARCHIVE_CACHE_BYTES: usize = 32 * 1024 * 1024;

/// Every sealed record, under its sled key.
const RECORDS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("records");
/// `sealed`: the last position whose event is here (every event up to it is).
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

/// A record as stored: its sled key and its bytes.
pub type Entry = (Vec<u8>, Vec<u8>);

pub struct Archive {
    db: Database,
    sealed: AtomicU64,
    path: PathBuf,
}

impl fmt::Debug for Archive {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Archive").field("path", &self.path).field("sealed", &self.sealed()).finish()
    }
}

fn failed(what: &str, e: impl fmt::Display) -> LogError {
    storage(&format!("log archive: {what}"), e)
}

impl Archive {
    /// Opens (or creates) the archive file. Blocking.
    pub fn open(path: impl Into<PathBuf>) -> Result<Self, LogError> {
        let path = path.into();
        let mut builder = redb::Builder::new();
        builder.set_cache_size(ARCHIVE_CACHE_BYTES);
        let db = builder.create(&path).map_err(|e| failed(&format!("open {}", path.display()), e))?;
        let archive = Self { db, sealed: AtomicU64::new(0), path };
        let sealed = archive.read_sealed()?;
        archive.sealed.store(sealed, Ordering::Release);
        Ok(archive)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The last position sealed here (0: none).
    pub fn sealed(&self) -> u64 {
        self.sealed.load(Ordering::Acquire)
    }

    fn read_sealed(&self) -> Result<u64, LogError> {
        let tx = self.db.begin_read().map_err(|e| failed("begin a read", e))?;
        match tx.open_table(META) {
            Ok(table) => Ok(table.get("sealed").map_err(|e| failed("read", e))?.map_or(0, |v| v.value())),
            Err(TableError::TableDoesNotExist(_)) => Ok(0),
            Err(e) => Err(failed("open a table", e)),
        }
    }

    /// Runs `read` on the records table (`None`: nothing sealed yet).
    fn read<T>(
        &self,
        read: impl FnOnce(&redb::ReadOnlyTable<&'static [u8], &'static [u8]>) -> Result<T, LogError>,
    ) -> Result<Option<T>, LogError> {
        let tx = self.db.begin_read().map_err(|e| failed("begin a read", e))?;
        match tx.open_table(RECORDS) {
            Ok(table) => read(&table).map(Some),
            Err(TableError::TableDoesNotExist(_)) => Ok(None),
            Err(e) => Err(failed("open a table", e)),
        }
    }

    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, LogError> {
        let value =
            self.read(|table| Ok(table.get(key).map_err(|e| failed("read", e))?.map(|v| v.value().to_vec())))?;
        Ok(value.flatten())
    }

    /// The records with keys in `from..=to`, in key order.
    pub fn range(&self, from: &[u8], to: &[u8]) -> Result<Vec<Entry>, LogError> {
        let entries = self.read(|table| {
            table
                .range::<&[u8]>(from..=to)
                .map_err(|e| failed("scan", e))?
                .map(|entry| {
                    entry.map(|(k, v)| (k.value().to_vec(), v.value().to_vec())).map_err(|e| failed("scan", e))
                })
                .collect()
        })?;
        Ok(entries.unwrap_or_default())
    }

    /// Calls `each` on every record with a key in `from..=to`, in key order, on the stored
    /// bytes (nothing copied).
    pub fn each(
        &self,
        from: &[u8],
        to: &[u8],
        mut each: impl FnMut(&[u8], &[u8]) -> Result<(), LogError>,
    ) -> Result<(), LogError> {
        // Nothing sealed yet: nothing to call `each` on.
        self.read(|table| {
            for entry in table.range::<&[u8]>(from..=to).map_err(|e| failed("scan", e))? {
                let (key, value) = entry.map_err(|e| failed("scan", e))?;
                each(key.value(), value.value())?;
            }
            Ok(())
        })?;
        Ok(())
    }

    /// The last record with a key in `from..=to`.
    pub fn last(&self, from: &[u8], to: &[u8]) -> Result<Option<Entry>, LogError> {
        let entry = self.read(|table| {
            let mut range = table.range::<&[u8]>(from..=to).map_err(|e| failed("scan", e))?;
            range
                .next_back()
                .transpose()
                .map(|e| e.map(|(k, v)| (k.value().to_vec(), v.value().to_vec())))
                .map_err(|e| failed("scan", e))
        })?;
        Ok(entry.flatten())
    }

    /// Step 1 of a move: adds `records` and raises `sealed` to `upto`, durably.
    pub fn seal(&self, records: &[Entry], upto: u64) -> Result<(), LogError> {
        let mut tx = self.db.begin_write().map_err(|e| failed("begin a write", e))?;
        tx.set_durability(Durability::Immediate).map_err(|e| failed("set the durability", e))?;
        tx.set_quick_repair(true);
        {
            let mut table = tx.open_table(RECORDS).map_err(|e| failed("open a table", e))?;
            for (key, value) in records {
                table.insert(key.as_slice(), value.as_slice()).map_err(|e| failed("write", e))?;
            }
            let mut meta = tx.open_table(META).map_err(|e| failed("open a table", e))?;
            meta.insert("sealed", upto).map_err(|e| failed("write", e))?;
        }
        tx.commit().map_err(|e| failed("commit", e))?;
        self.sealed.store(upto, Ordering::Release);
        Ok(())
    }
}
