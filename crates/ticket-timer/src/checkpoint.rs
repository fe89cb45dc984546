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
        encode_clock(&mut out, entry.cycle, entry.breached, entry.pending);
    }
    let digest = Sha256::digest(&out);
    out.extend_from_slice(&digest);
    out
}

/// One clock's entry after its key (ticket and metric): cycle, breach, pending firings. Shared
/// by the image and the state store's rows (`crate::store`).
pub(crate) fn encode_clock(out: &mut Vec<u8>, cycle: u32, breached: bool, pending: &[Firing]) {
    out.extend_from_slice(&cycle.to_le_bytes());
    out.push(u8::from(breached));
    out.extend_from_slice(&(pending.len() as u32).to_le_bytes());
    for f in pending {
        out.extend_from_slice(&f.at.timestamp().to_le_bytes());
        out.extend_from_slice(&f.at.timestamp_subsec_nanos().to_le_bytes());
        let (kind, percent, due_at) = match f.kind {
            FiringKind::Warning(p) => (0, p, None),
            FiringKind::Breach => (1, 0, None),
            FiringKind::NoResponse => (2, 0, None),
            // Added with imports: images without one read as before.
            FiringKind::BreachAtImport { due_at } => (3, 0, Some(due_at)),
        };
        out.push(kind);
        out.push(percent);
        if let Some(due_at) = due_at {
            out.extend_from_slice(&due_at.timestamp().to_le_bytes());
            out.extend_from_slice(&due_at.timestamp_subsec_nanos().to_le_bytes());
        }
    }
}

/// Reads what [`encode_clock`] wrote, for the clock of `ticket` and `metric`.
pub(crate) fn decode_clock(
    r: &mut Reader<'_>,
    ticket: TicketId,
    metric: Metric,
) -> Result<ClockEntryOwned, CheckpointError> {
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
            (3, _) => {
                let secs = i64::from_le_bytes(r.array()?);
                let nanos = u32::from_le_bytes(r.array()?);
                let due_at = DateTime::from_timestamp(secs, nanos).ok_or(CheckpointError::Malformed(r.at))?;
                FiringKind::BreachAtImport { due_at }
            }
            _ => return Err(CheckpointError::Malformed(r.at)),
        };
        pending.push(Firing { at, ticket, metric, cycle, kind });
    }
    Ok(ClockEntryOwned { ticket, metric, cycle, breached, pending })
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
        clocks.push(decode_clock(&mut r, ticket, metric)?);
    }
    if r.at != body.len() {
        return Err(CheckpointError::Malformed(r.at));
    }
    Ok(DeadlineIndex::from_clock_entries(position, clocks))
}

pub(crate) fn metric_code(metric: Metric) -> u8 {
    match metric {
        Metric::FirstResponse => 0,
        Metric::FollowUp => 1,
        Metric::Resolution => 2,
        Metric::NoResponse => 3,
    }
}

pub(crate) struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Self { bytes, at: 0 }
    }

    /// True when every byte was read.
    pub(crate) fn done(&self) -> bool {
        self.at == self.bytes.len()
    }

    pub(crate) fn array<const N: usize>(&mut self) -> Result<[u8; N], CheckpointError> {
        let end = self.at.checked_add(N).ok_or(CheckpointError::Malformed(self.at))?;
        let slice = self.bytes.get(self.at..end).ok_or(CheckpointError::Malformed(self.at))?;
        self.at = end;
        slice.try_into().map_err(|_| CheckpointError::Malformed(self.at))
    }

    pub(crate) fn u8(&mut self) -> Result<u8, CheckpointError> {
        Ok(self.array::<1>()?[0])
    }

    fn u64(&mut self) -> Result<u64, CheckpointError> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    pub(crate) fn metric(&mut self) -> Result<Metric, CheckpointError> {
        let code = self.u8()?;
        Metric::ALL.into_iter().find(|m| metric_code(*m) == code).ok_or(CheckpointError::Malformed(self.at))
    }
}

/// Golden bytes of the checkpoint image (format 1, the last byte of its magic), encoding a
/// deadline index of `ticket_domain::testing::golden_history`. The index keeps its clocks in a
/// hash map, so the order of the clocks in an image varies between runs: the golden image must
/// decode to the same index, and a fresh image must have its length.
#[cfg(test)]
mod golden {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use std::path::PathBuf;

    use ticket_domain::testing::{check_golden, golden_files, golden_history};

    use super::*;

    const FORMAT: u32 = MAGIC[7] as u32;
    const STEM: &str = "timer-checkpoint";

    fn dir() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("golden")
    }

    /// The index after the first half of the golden history (by its end, every deadline has been
    /// met, breached or stopped).
    fn golden_index() -> DeadlineIndex {
        let history = golden_history();
        let mut index = DeadlineIndex::new();
        for recorded in &history[..history.len() / 2] {
            index.apply(recorded);
        }
        index
    }

    /// The index's clocks in a stable order, to compare two indexes.
    fn clocks(index: &DeadlineIndex) -> Vec<ClockEntryOwned> {
        let mut clocks: Vec<ClockEntryOwned> = index.clock_entries().map(|e| e.to_entry()).collect();
        clocks.sort_by_key(|c| (c.ticket, c.metric));
        clocks
    }

    #[test]
    fn the_checkpoint_image_matches_its_golden_file() {
        let index = golden_index();
        assert!(!index.is_empty(), "the golden history leaves deadlines pending ({} clocks)", index.clocks());
        let image = encode(&index);
        if !dir().join(format!("{STEM}-format-{FORMAT}.hex")).exists() {
            // Writes the file under GOLDEN_BLESS=1, else fails saying what to do.
            check_golden(&dir(), STEM, FORMAT, std::slice::from_ref(&image));
        }
        let files = golden_files(&dir(), STEM);
        let golden = files.get(&FORMAT).and_then(|items| items.first()).expect("a golden image of this format");
        let decoded = decode(golden).unwrap_or_else(|e| {
            panic!(
                "{STEM}-format-{FORMAT}.hex no longer decodes ({e}): the image changed but its format (the magic's \
                 last byte) did not. Bump it, run this test with GOLDEN_BLESS=1 to write the new golden file, and \
                 keep the old one"
            )
        });
        assert_eq!(decoded.position(), index.position());
        assert_eq!(clocks(&decoded), clocks(&index), "the golden image decodes to another index: bump the format");
        assert_eq!(image.len(), golden.len(), "the image's layout changed but its format did not: bump the format");
        for (format, items) in files.iter().filter(|(f, _)| **f != FORMAT) {
            // An image of another format is rebuilt from the log, never misread.
            assert!(
                items.iter().all(|i| decode(i).is_err()),
                "{STEM}-format-{format}.hex decodes as the current format"
            );
        }
    }

    #[test]
    fn a_breach_at_import_survives_the_checkpoint() {
        let mut entries = clocks(&golden_index());
        let at = ticket_domain::testing::utc(2027, 1, 1, 0, 0);
        let first = entries.first_mut().expect("a pending clock");
        let due_at = first.pending.first().expect("a pending firing").at;
        first.pending.push(Firing {
            at,
            ticket: first.ticket,
            metric: first.metric,
            cycle: first.cycle,
            kind: FiringKind::BreachAtImport { due_at },
        });
        let index = DeadlineIndex::from_clock_entries(7, entries);
        let decoded = decode(&encode(&index)).unwrap();
        assert_eq!(clocks(&decoded), clocks(&index));
        assert!(decoded.iter().any(|f| f.kind == FiringKind::BreachAtImport { due_at } && f.at == at));
    }
}
