//! Checkpoints of read models: one file per projection holding its position and its bincode
//! image, sealed with SHA-256, written with `ticket_log::durable::write_file`, so a crash at
//! any moment leaves either the old checkpoint or the new one. A checkpoint is a cache of the
//! log: any defect means rebuilding, never failing.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::{Projected, ReadModel};

const MAGIC: &[u8; 8] = b"TKPROJ\x00\x01";
const DIGEST: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("not a checkpoint of this projection and format")]
    Format,
    #[error("the checkpoint's digest does not match its content (torn or altered)")]
    Digest,
    #[error("the checkpoint does not decode: {0}")]
    Decode(String),
    #[error("the checkpoint could not be read or written: {0}")]
    Io(#[from] std::io::Error),
}

/// The directory holding the projections' checkpoints.
#[derive(Debug, Clone)]
pub struct Checkpoints {
    dir: PathBuf,
}

impl Checkpoints {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.checkpoint"))
    }

    /// The stored projection; `Ok(None)` when there is none.
    pub fn load<M: ReadModel>(&self) -> Result<Option<Projected<M>>, CheckpointError> {
        match std::fs::read(self.path(M::NAME)) {
            Ok(bytes) => decode::<M>(&bytes).map(Some),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    pub fn save<M: ReadModel>(&self, projected: &Projected<M>) -> Result<(), CheckpointError> {
        self.write(M::NAME, &encode(projected)?)
    }

    /// Writes an encoded image atomically: a temporary file, synced, renamed over the old one.
    pub(crate) fn write(&self, name: &str, bytes: &[u8]) -> Result<(), CheckpointError> {
        std::fs::create_dir_all(&self.dir)?;
        ticket_log::durable::write_file(&self.path(name), bytes)?;
        Ok(())
    }
}

fn header<M: ReadModel>() -> Vec<u8> {
    let mut out = MAGIC.to_vec();
    out.extend_from_slice(&M::FORMAT.to_le_bytes());
    let name = M::NAME.as_bytes();
    out.push(u8::try_from(name.len()).unwrap_or(u8::MAX));
    out.extend_from_slice(&name[..name.len().min(255)]);
    out
}

pub(crate) fn encode<M: ReadModel>(projected: &Projected<M>) -> Result<Vec<u8>, CheckpointError> {
    let mut out = header::<M>();
    bincode::serde::encode_into_std_write(projected, &mut out, bincode::config::standard())
        .map_err(|e| CheckpointError::Decode(e.to_string()))?;
    let digest = Sha256::digest(&out);
    out.extend_from_slice(&digest);
    Ok(out)
}

pub(crate) fn decode<M: ReadModel>(bytes: &[u8]) -> Result<Projected<M>, CheckpointError> {
    let header = header::<M>();
    if bytes.len() < header.len() + DIGEST || !bytes.starts_with(&header) {
        return Err(CheckpointError::Format);
    }
    let (content, digest) = bytes.split_at(bytes.len() - DIGEST);
    if Sha256::digest(content).as_slice() != digest {
        return Err(CheckpointError::Digest);
    }
    let body = &content[header.len()..];
    let (projected, read): (Projected<M>, usize) = bincode::serde::decode_from_slice(body, bincode::config::standard())
        .map_err(|e| CheckpointError::Decode(e.to_string()))?;
    if read != body.len() {
        return Err(CheckpointError::Decode(format!("{} trailing bytes", body.len() - read)));
    }
    Ok(projected)
}

#[cfg(test)]
mod tests;
