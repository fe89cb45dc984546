//! Durable whole-file writes for state kept beside the log (checkpoints).

use std::io::Write;
use std::path::Path;

/// Replaces `path` with `bytes` so that a crash at any moment leaves either the old content or
/// the new one: written to a temporary file beside it, synced, renamed over it, and the
/// directory synced.
pub fn write_file(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}
