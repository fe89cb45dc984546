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

/// A decoded record, before its envelope is decoded.
pub struct Record {
    pub envelope: Vec<u8>,
    pub prev_hash: [u8; 32],
    pub hash: [u8; 32],
}

pub fn decode_record(position: u64, bytes: &[u8]) -> Result<Record, LogError> {
    let corrupt = |problem: String| LogError::Corrupt { position, problem };
    let record = pb::LogRecord::decode(bytes).map_err(|e| corrupt(format!("record does not decode: {e}")))?;
    if record.format != RECORD_FORMAT {
        return Err(corrupt(format!("unknown record format {}", record.format)));
    }
    let prev_hash: [u8; 32] =
        record.prev_hash.try_into().map_err(|_| corrupt("previous hash is not 32 bytes".into()))?;
    let hash: [u8; 32] = record.hash.try_into().map_err(|_| corrupt("hash is not 32 bytes".into()))?;
    Ok(Record { envelope: record.envelope, prev_hash, hash })
}

pub fn decode_event(position: u64, bytes: &[u8]) -> Result<RecordedEvent, LogError> {
    let record = decode_record(position, bytes)?;
    let event = ticket_proto::decode_envelope(&record.envelope)
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
