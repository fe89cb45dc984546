//! Golden bytes of the stored log record (`RECORD_FORMAT`): the protobuf `LogRecord` with its
//! event envelope and hash chain, for every kind of event; and of the stored command record
//! (`COMMAND_RECORD_FORMAT`), which `audit` re-decides.

#![allow(clippy::unwrap_used, clippy::panic)]

use std::path::PathBuf;

use ticket_domain::testing::{check_golden, golden_commands, golden_files, golden_history, golden_policy};
use ticket_domain::{Rules, TraceId};
use ticket_log::CommandRecord;

use crate::record::{
    COMMAND_RECORD_FORMAT, GENESIS, RECORD_FORMAT, decode_command, decode_event, decode_record, encode_command,
    encode_record,
};

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("golden")
}

fn records() -> Vec<Vec<u8>> {
    let mut prev = GENESIS;
    golden_history()
        .iter()
        .map(|event| {
            let (bytes, hash) = encode_record(event, &prev);
            prev = hash;
            bytes
        })
        .collect()
}

#[test]
fn the_log_record_encoding_matches_its_golden_file() {
    check_golden(&dir(), "log-record", RECORD_FORMAT, &records());
}

#[test]
fn every_supported_golden_log_record_decodes_to_the_golden_history() {
    let files = golden_files(&dir(), "log-record");
    assert!(files.contains_key(&RECORD_FORMAT), "no golden file for the current format");
    for (format, records) in files {
        // Every record format this engine reads is decoded here; add a line per older one.
        assert_eq!(format, RECORD_FORMAT, "log-record-format-{format}.hex: a format this engine no longer reads");
        let mut prev = GENESIS;
        let decoded: Vec<_> = records
            .iter()
            .enumerate()
            .map(|(i, bytes)| {
                let record = decode_record(i as u64 + 1, bytes).unwrap();
                assert_eq!(record.prev_hash, prev, "the hash chain of format {format} breaks at {}", i + 1);
                prev = record.hash;
                decode_event(i as u64 + 1, bytes).unwrap()
            })
            .collect();
        assert_eq!(decoded, golden_history(), "format {format}");
    }
}

/// The golden history's command records, as the log stores them beside its events.
fn command_records() -> Vec<CommandRecord> {
    let history = golden_history();
    let policy = golden_policy().version().clone();
    golden_commands()
        .into_iter()
        .enumerate()
        .map(|(n, command)| {
            let positions: Vec<u64> =
                history.iter().filter(|e| e.command_id == command.id).map(|e| e.position).collect();
            let trace = |prefix: &str| (n % 2 == 1).then(|| TraceId::new(format!("{prefix}-{n}")).unwrap());
            CommandRecord {
                policy: Some(policy.clone()),
                rules: Rules::V2,
                correlation_id: trace("corr"),
                causation_id: trace("cause"),
                first_position: positions.first().copied().unwrap(),
                last_position: positions.last().copied().unwrap(),
                command,
            }
        })
        .collect()
}

#[test]
fn the_command_record_encoding_matches_its_golden_file() {
    let bytes: Vec<Vec<u8>> = command_records().iter().map(encode_command).collect();
    check_golden(&dir(), "command-record", COMMAND_RECORD_FORMAT, &bytes);
}

#[test]
fn every_supported_golden_command_record_decodes_to_the_golden_commands() {
    let files = golden_files(&dir(), "command-record");
    assert!(files.contains_key(&COMMAND_RECORD_FORMAT), "no golden file for the current format");
    for (format, records) in files {
        assert_eq!(format, COMMAND_RECORD_FORMAT, "command-record-format-{format}.hex: a format no longer read");
        let decoded: Vec<CommandRecord> =
            records.iter().enumerate().map(|(i, bytes)| decode_command(i as u64 + 1, bytes).unwrap()).collect();
        assert_eq!(decoded, command_records(), "format {format}");
    }
}
