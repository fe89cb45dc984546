//! Golden bytes of the stored log record (`RECORD_FORMAT`): the protobuf `LogRecord` with its
//! event envelope and hash chain, for every kind of event.

#![allow(clippy::unwrap_used, clippy::panic)]

use std::path::PathBuf;

use ticket_domain::testing::{check_golden, golden_files, golden_history};

use crate::record::{GENESIS, RECORD_FORMAT, decode_event, decode_record, encode_record};

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
