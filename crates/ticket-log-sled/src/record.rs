//! Encoding of log records and command records, and the hash chain.

use prost::Message;
use sha2::{Digest, Sha256};
use ticket_domain::{PolicyVersion, RecordedEvent, TraceId};
use ticket_log::{CommandRecord, LogError};
use ticket_proto::pb;

pub const RECORD_FORMAT: u32 = 1;
/// The stored command record's encoding (`ticket.v1.CommandRecord`); a change needs a new
/// number and golden file (`golden/command-record-format-<N>.hex`).
pub const COMMAND_RECORD_FORMAT: u32 = 1;
pub const GENESIS: [u8; 32] = [0; 32];

pub fn chain_hash(prev: &[u8; 32], envelope: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(prev);
    h.update(envelope);
    h.finalize().into()
}

/// Encodes an event as a chained record; returns the bytes and the record's hash.
pub fn encode_record(event: &RecordedEvent, prev: &[u8; 32]) -> (Vec<u8>, [u8; 32]) {
    let envelope = ticket_proto::encode_envelope(event);
    let hash = chain_hash(prev, &envelope);
    let record = pb::LogRecord { format: RECORD_FORMAT, envelope, prev_hash: prev.to_vec(), hash: hash.to_vec() };
    (record.encode_to_vec(), hash)
}

/// A decoded record, before its envelope is decoded: the envelope borrowed from the stored
/// bytes (a rebuild decodes every record, and copying each envelope was a twentieth of it).
pub struct Record<'a> {
    pub envelope: &'a [u8],
    pub prev_hash: [u8; 32],
    pub hash: [u8; 32],
}

/// Decodes a `ticket.v1.LogRecord` as prost does (the last occurrence of a field wins, unknown
/// fields are skipped), borrowing its envelope.
pub fn decode_record(position: u64, bytes: &[u8]) -> Result<Record<'_>, LogError> {
    let corrupt = |problem: String| LogError::Corrupt { position, problem };
    let (mut format, mut envelope, mut prev_hash, mut hash): (u64, &[u8], &[u8], &[u8]) = (0, &[], &[], &[]);
    for field in wire::Fields(bytes) {
        let (tag, value) = field.map_err(|e| corrupt(format!("record does not decode: {e}")))?;
        match (tag, value) {
            (1, wire::Value::Varint(v)) => format = v,
            (2, wire::Value::Bytes(b)) => envelope = b,
            (3, wire::Value::Bytes(b)) => prev_hash = b,
            (4, wire::Value::Bytes(b)) => hash = b,
            (1..=4, _) => return Err(corrupt(format!("record does not decode: field {tag} has the wrong wire type"))),
            _ => {}
        }
    }
    if format != u64::from(RECORD_FORMAT) {
        return Err(corrupt(format!("unknown record format {format}")));
    }
    let prev_hash: [u8; 32] = prev_hash.try_into().map_err(|_| corrupt("previous hash is not 32 bytes".into()))?;
    let hash: [u8; 32] = hash.try_into().map_err(|_| corrupt("hash is not 32 bytes".into()))?;
    Ok(Record { envelope, prev_hash, hash })
}

/// The protobuf wire format's fields, read without copying (only what a record needs).
mod wire {
    pub enum Value<'a> {
        Varint(u64),
        Bytes(&'a [u8]),
        Fixed,
    }

    fn varint(bytes: &mut &[u8]) -> Result<u64, &'static str> {
        let mut value = 0u64;
        for i in 0..10 {
            let (&byte, rest) = bytes.split_first().ok_or("a varint runs past the end")?;
            *bytes = rest;
            // The tenth byte may only carry the 64th bit.
            if i == 9 && byte > 1 {
                return Err("a varint overflows 64 bits");
            }
            value |= u64::from(byte & 0x7f) << (7 * i);
            if byte < 0x80 {
                return Ok(value);
            }
        }
        Err("a varint overflows 64 bits")
    }

    fn take<'a>(bytes: &mut &'a [u8], n: u64) -> Result<&'a [u8], &'static str> {
        let n = usize::try_from(n).map_err(|_| "a length runs past the end")?;
        if n > bytes.len() {
            return Err("a length runs past the end");
        }
        let (head, rest) = bytes.split_at(n);
        *bytes = rest;
        Ok(head)
    }

    /// Every field of a message, in order: (tag, value). Groups (deprecated, never written by
    /// this engine) are refused.
    pub struct Fields<'a>(pub &'a [u8]);

    impl<'a> Fields<'a> {
        fn field(&mut self) -> Result<(u32, Value<'a>), &'static str> {
            let bytes = &mut self.0;
            let key = u32::try_from(varint(bytes)?).map_err(|_| "a field key overflows 32 bits")?;
            let tag = key >> 3;
            if tag == 0 {
                return Err("a field has tag 0");
            }
            let value = match key & 7 {
                0 => Value::Varint(varint(bytes)?),
                1 => take(bytes, 8).map(|_| Value::Fixed)?,
                2 => {
                    let n = varint(bytes)?;
                    Value::Bytes(take(bytes, n)?)
                }
                5 => take(bytes, 4).map(|_| Value::Fixed)?,
                _ => return Err("a field has an unsupported wire type"),
            };
            Ok((tag, value))
        }
    }

    impl<'a> Iterator for Fields<'a> {
        type Item = Result<(u32, Value<'a>), &'static str>;

        fn next(&mut self) -> Option<Self::Item> {
            if self.0.is_empty() {
                return None;
            }
            let field = self.field();
            if field.is_err() {
                // Nothing more after a malformed field.
                self.0 = &[];
            }
            Some(field)
        }
    }
}

/// The hash a stored record carries (the chain's link at its position).
pub fn record_hash(position: u64, bytes: &[u8]) -> Result<[u8; 32], LogError> {
    Ok(decode_record(position, bytes)?.hash)
}

pub fn decode_event(position: u64, bytes: &[u8]) -> Result<RecordedEvent, LogError> {
    let record = decode_record(position, bytes)?;
    let event = ticket_proto::decode_envelope(record.envelope)
        .map_err(|e| LogError::Corrupt { position, problem: format!("envelope does not decode: {e}") })?;
    if event.position != position {
        return Err(LogError::Corrupt { position, problem: format!("record claims position {}", event.position) });
    }
    Ok(event)
}

pub fn encode_command(record: &CommandRecord) -> Vec<u8> {
    let trace = |t: &Option<TraceId>| t.as_ref().map(ToString::to_string).unwrap_or_default();
    pb::CommandRecord {
        command: Some(pb::Command::from(&record.command)),
        policy: record.policy.as_ref().map(pb::PolicyVersion::from),
        rules: record.rules.number(),
        first_position: record.first_position,
        last_position: record.last_position,
        correlation_id: trace(&record.correlation_id),
        causation_id: trace(&record.causation_id),
    }
    .encode_to_vec()
}

pub fn decode_command(position: u64, bytes: &[u8]) -> Result<CommandRecord, LogError> {
    let corrupt = |problem: String| LogError::Corrupt { position, problem };
    let r = pb::CommandRecord::decode(bytes).map_err(|e| corrupt(format!("command record does not decode: {e}")))?;
    let command = r.command.ok_or_else(|| corrupt("command record has no command".into()))?;
    let command = ticket_domain::Command::try_from(command).map_err(|e| corrupt(format!("stored command: {e}")))?;
    let trace = |s: String| {
        if s.is_empty() {
            Ok(None)
        } else {
            TraceId::new(s).map(Some).map_err(|e| corrupt(format!("stored trace id: {e}")))
        }
    };
    let rules = ticket_domain::Rules::from_number(r.rules)
        .ok_or_else(|| corrupt(format!("command decided under rules {}, which this engine does not know", r.rules)))?;
    Ok(CommandRecord {
        command,
        policy: r.policy.map(|p| PolicyVersion { name: p.name, version: p.version }),
        rules,
        correlation_id: trace(r.correlation_id)?,
        causation_id: trace(r.causation_id)?,
        first_position: r.first_position,
        last_position: r.last_position,
    })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use prost::Message;
    use ticket_proto::pb;

    use super::{RECORD_FORMAT, decode_record};

    /// What prost makes of the same bytes, with the checks `decode_record` adds.
    fn by_prost(bytes: &[u8]) -> Option<(Vec<u8>, Vec<u8>, Vec<u8>)> {
        let r = pb::LogRecord::decode(bytes).ok()?;
        (r.format == RECORD_FORMAT && r.prev_hash.len() == 32 && r.hash.len() == 32).then_some((
            r.envelope,
            r.prev_hash,
            r.hash,
        ))
    }

    fn mine(bytes: &[u8]) -> Option<(Vec<u8>, Vec<u8>, Vec<u8>)> {
        let r = decode_record(1, bytes).ok()?;
        Some((r.envelope.to_vec(), r.prev_hash.to_vec(), r.hash.to_vec()))
    }

    proptest! {
        /// Every record prost encodes, with fields repeated, reordered or unknown, decodes as
        /// prost decodes it.
        #[test]
        fn a_record_decodes_as_prost_decodes_it(
            format in prop_oneof![Just(RECORD_FORMAT), any::<u32>()],
            envelope in proptest::collection::vec(any::<u8>(), 0..300),
            prev in proptest::collection::vec(any::<u8>(), 30..34),
            hash in proptest::collection::vec(any::<u8>(), 30..34),
            extra in proptest::collection::vec(any::<u8>(), 0..40),
            order in 0usize..3,
        ) {
            let record = pb::LogRecord { format, envelope, prev_hash: prev, hash };
            let mut bytes = record.encode_to_vec();
            // An unknown field (tag 9, bytes), and the record again after it: the last one wins.
            let unknown = pb::LogRecord::default();
            match order {
                0 => {}
                1 => {
                    // Under 128 bytes: its length is one byte.
                    bytes.extend_from_slice(&[9 << 3 | 2, extra.len() as u8]);
                    bytes.extend_from_slice(&extra);
                }
                _ => {
                    let mut first = pb::LogRecord { envelope: extra, ..unknown }.encode_to_vec();
                    first.extend_from_slice(&bytes);
                    bytes = first;
                }
            }
            prop_assert_eq!(mine(&bytes), by_prost(&bytes));
        }

        /// Whatever bytes it is given, a record it accepts is the one prost reads.
        #[test]
        fn any_bytes_it_accepts_are_what_prost_reads(bytes in proptest::collection::vec(any::<u8>(), 0..120)) {
            if let Some(decoded) = mine(&bytes) {
                prop_assert_eq!(Some(decoded), by_prost(&bytes));
            }
        }
    }
}
