//! Rewriting sled once sealing has left it mostly empty (ADR 0014).
//!
//! sled does not give back the space of deleted records to its recovery: a database that held a
//! long history costs, at open, about what it cost before its history was sealed (a 13 GB file
//! with 5% of it live took 3.6–10 s and 1.4 GB to open). So when sled's file is much larger
//! than its live records need, the log copies those records into a fresh sled database in a
//! directory of its own (`sled-<n>` in the log's directory) and names it in `CURRENT`, which is
//! replaced atomically. A crash before the switch leaves the old database current and the copy
//! is deleted at the next open; after it, the old database's files are.
//!
//! A log never compacted has sled's files in the log's directory itself and no `CURRENT`.

use std::path::{Path, PathBuf};

use ticket_log::LogError;
use tracing::info;

use crate::{SledConfig, open_db, storage};

const CURRENT: &str = "CURRENT";
const PREFIX: &str = "sled-";
/// The trees of a log's sled database.
const TREES: [&str; 2] = ["log", "snapshots"];

/// sled's directory of the log in `root`.
pub fn sled_dir(root: &Path) -> Result<PathBuf, LogError> {
    match std::fs::read_to_string(root.join(CURRENT)) {
        Ok(name) => {
            let name = name.trim();
            let valid =
                name.strip_prefix(PREFIX).is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
            if !valid {
                return Err(LogError::Storage(format!(
                    "{} names {name:?}, not a sled directory",
                    root.join(CURRENT).display()
                )));
            }
            Ok(root.join(name))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(root.to_path_buf()),
        Err(e) => Err(storage(&format!("read {}", root.join(CURRENT).display()), e)),
    }
}

/// Deletes what an earlier compaction left: sled directories that are not `current` (a copy a
/// crash interrupted), and sled's files in the log's directory once `current` is elsewhere.
pub fn remove_leftovers(root: &Path, current: &Path) -> Result<(), LogError> {
    let entries = match std::fs::read_dir(root) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(storage(&format!("list {}", root.display()), e)),
    };
    for entry in entries {
        let entry = entry.map_err(|e| storage(&format!("list {}", root.display()), e))?;
        let (name, path) = (entry.file_name().to_string_lossy().into_owned(), entry.path());
        let stale_copy = name.starts_with(PREFIX) && path != current;
        let former =
            current != root && (name == "db" || name == "conf" || name == "blobs" || name.starts_with("snap."));
        if !(stale_copy || former) {
            continue;
        }
        let removed = if path.is_dir() { std::fs::remove_dir_all(&path) } else { std::fs::remove_file(&path) };
        removed.map_err(|e| storage(&format!("remove {}", path.display()), e))?;
        info!(path = %path.display(), "removed a former sled database of the log");
    }
    Ok(())
}

/// Whether sled's file in `dir` is much larger than `live_events` need: over `above` bytes and
/// over 16 KiB a live event (a log sealing as it goes stays at a few KiB an event).
pub fn needed(dir: &Path, above: u64, live_events: u64) -> bool {
    let size = std::fs::metadata(dir.join("db")).map_or(0, |m| m.len());
    size > above && size > live_events.saturating_mul(16 * 1024)
}

/// Copies the live records of `old` (in `current`) into a new sled directory, durably, and
/// makes it current. Returns the new directory and database; `old` is left as it was, to be
/// closed.
pub fn compact(
    root: &Path,
    current: &Path,
    old: &sled::Db,
    config: &SledConfig,
) -> Result<(PathBuf, sled::Db), LogError> {
    let number = current
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_prefix(PREFIX))
        .and_then(|n| n.parse::<u64>().ok())
        .map_or(1, |n| n + 1);
    let name = format!("{PREFIX}{number}");
    let dir = root.join(&name);
    if dir.exists() {
        std::fs::remove_dir_all(&dir).map_err(|e| storage(&format!("remove {}", dir.display()), e))?;
    }
    let started = std::time::Instant::now();
    info!(
        from = %current.display(),
        to = %dir.display(),
        file_bytes = std::fs::metadata(current.join("db")).map_or(0, |m| m.len()),
        "compacting the log's sled database, mostly sealed history: once, some 40 s per million events in sled"
    );
    let new = open_db(&dir, config)?;
    let mut records = 0u64;
    for tree in TREES {
        let from = old.open_tree(tree).map_err(|e| storage("open tree", e))?;
        let to = new.open_tree(tree).map_err(|e| storage("open tree", e))?;
        let mut batch = sled::Batch::default();
        let mut in_batch = 0;
        for item in from.iter() {
            let (key, value) = item.map_err(|e| storage("read the log to compact it", e))?;
            batch.insert(key, value);
            in_batch += 1;
            if in_batch == 10_000 {
                to.apply_batch(std::mem::take(&mut batch)).map_err(|e| storage("write the compacted log", e))?;
                records += in_batch;
                in_batch = 0;
            }
        }
        to.apply_batch(batch).map_err(|e| storage("write the compacted log", e))?;
        records += in_batch;
    }
    new.flush().map_err(|e| storage("flush the compacted log", e))?;
    ticket_log::durable::write_file(&root.join(CURRENT), name.as_bytes())
        .map_err(|e| storage(&format!("write {}", root.join(CURRENT).display()), e))?;
    info!(
        from = %current.display(),
        to = %dir.display(),
        records,
        took_ms = started.elapsed().as_millis() as u64,
        "the log's sled database was compacted"
    );
    Ok((dir, new))
}
