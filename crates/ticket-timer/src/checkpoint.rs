//! The index's checkpoint: a compact binary image of its clocks and the position it reflects,
//! sealed with a SHA-256 digest. It is state rebuilt from the log, so any doubt (another format,
//! a torn or altered file, a position ahead of the log) means rebuilding, never failing.

use chrono::DateTime;
use sha2::{Digest, Sha256};
use ticket_domain::{ClockEntryOwned, DeadlineIndex, Firing, FiringKind, Metric, TicketId};
use uuid::Uuid;

const MAGIC: &[u8; 8] = b"TKTIMER\x01";
const DIGEST: usize = 32;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckpointError {
    #[error("not a deadline index checkpoint of this format")]
    Format,
    #[error("the checkpoint's digest does not match its content (torn or altered)")]
    Digest,
    #[error("the checkpoint is truncated or malformed at byte {0}")]
    Malformed(usize),
}

/// The checkpoint image of `index`: header, position, then each clock with its pending firings.
pub fn encode(index: &DeadlineIndex) -> Vec<u8> {
    let mut out = Vec::with_capacity(32 + index.clocks() * 24 + index.len() * 14);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&index.position().to_le_bytes());
    out.extend_from_slice(&(index.clocks() as u64).to_le_bytes());
    for entry in index.clock_entries() {
        out.extend_from_slice(entry.ticket.as_uuid().as_bytes());
        out.push(metric_code(entry.metric));
        out.extend_from_slice(&entry.cycle.to_le_bytes());
        out.push(u8::from(entry.breached));
        out.extend_from_slice(&(entry.pending.len() as u32).to_le_bytes());
        for f in entry.pending {
            out.extend_from_slice(&f.at.timestamp().to_le_bytes());
            out.extend_from_slice(&f.at.timestamp_subsec_nanos().to_le_bytes());
            let (kind, percent) = match f.kind {
                FiringKind::Warning(p) => (0, p),
                FiringKind::Breach => (1, 0),
                FiringKind::NoResponse => (2, 0),
            };
            out.push(kind);
            out.push(percent);
        }
    }
    let digest = Sha256::digest(&out);
    out.extend_from_slice(&digest);
    out
}

/// Reads a checkpoint image; any defect is an error (and the caller rebuilds).
pub fn decode(bytes: &[u8]) -> Result<DeadlineIndex, CheckpointError> {
    if bytes.len() < MAGIC.len() + DIGEST || !bytes.starts_with(MAGIC) {
        return Err(CheckpointError::Format);
    }
    let (body, digest) = bytes.split_at(bytes.len() - DIGEST);
    if Sha256::digest(body).as_slice() != digest {
        return Err(CheckpointError::Digest);
    }
    let mut r = Reader { bytes: body, at: MAGIC.len() };
    let position = r.u64()?;
    let count = r.u64()?;
    let mut clocks = Vec::new();
    for _ in 0..count {
        let ticket = TicketId::from_uuid(Uuid::from_bytes(r.array()?));
        let metric = r.metric()?;
        let cycle = u32::from_le_bytes(r.array()?);
        let breached = r.u8()? != 0;
        let n = u32::from_le_bytes(r.array()?);
        let mut pending = Vec::new();
        for _ in 0..n {
            let secs = i64::from_le_bytes(r.array()?);
            let nanos = u32::from_le_bytes(r.array()?);
            let at = DateTime::from_timestamp(secs, nanos).ok_or(CheckpointError::Malformed(r.at))?;
            let kind = match (r.u8()?, r.u8()?) {
                (0, p) => FiringKind::Warning(p),
                (1, _) => FiringKind::Breach,
                (2, _) => FiringKind::NoResponse,
                _ => return Err(CheckpointError::Malformed(r.at)),
            };
            pending.push(Firing { at, ticket, metric, cycle, kind });
        }
        clocks.push(ClockEntryOwned { ticket, metric, cycle, breached, pending });
    }
    if r.at != body.len() {
        return Err(CheckpointError::Malformed(r.at));
    }
    Ok(DeadlineIndex::from_clock_entries(position, clocks))
}

fn metric_code(metric: Metric) -> u8 {
    match metric {
        Metric::FirstResponse => 0,
        Metric::FollowUp => 1,
        Metric::Resolution => 2,
        Metric::NoResponse => 3,
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn array<const N: usize>(&mut self) -> Result<[u8; N], CheckpointError> {
        let end = self.at.checked_add(N).ok_or(CheckpointError::Malformed(self.at))?;
        let slice = self.bytes.get(self.at..end).ok_or(CheckpointError::Malformed(self.at))?;
        self.at = end;
        slice.try_into().map_err(|_| CheckpointError::Malformed(self.at))
    }

    fn u8(&mut self) -> Result<u8, CheckpointError> {
        Ok(self.array::<1>()?[0])
    }

    fn u64(&mut self) -> Result<u64, CheckpointError> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    fn metric(&mut self) -> Result<Metric, CheckpointError> {
        let code = self.u8()?;
        Metric::ALL.into_iter().find(|m| metric_code(*m) == code).ok_or(CheckpointError::Malformed(self.at))
    }
}
