//! Golden bytes of the snapshots (`SNAPSHOT_FORMAT`): the bincode image of each ticket's state
//! after the golden history. A snapshot caches `evolve`, so a change of the state it folds to
//! needs a new format as much as a change of the encoding does.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;

use ticket_domain::testing::{check_golden, golden_files, golden_states};

use super::*;

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("golden")
}

#[test]
fn the_snapshot_encoding_matches_its_golden_file() {
    let snapshots: Vec<Vec<u8>> = golden_states().values().map(|s| encode_snapshot(s).expect("encodes")).collect();
    check_golden(&dir(), "snapshot", SNAPSHOT_FORMAT, &snapshots);
}

#[test]
fn the_current_golden_snapshots_decode_and_older_formats_are_ignored() {
    let files = golden_files(&dir(), "snapshot");
    assert!(files.contains_key(&SNAPSHOT_FORMAT), "no golden file for the current format");
    let states: Vec<TicketState> = golden_states().into_values().collect();
    for (format, snapshots) in files {
        let decoded: Vec<Option<TicketState>> = snapshots.iter().map(|s| decode_snapshot(s)).collect();
        if format == SNAPSHOT_FORMAT {
            assert_eq!(decoded, states.iter().cloned().map(Some).collect::<Vec<_>>());
        } else {
            // Snapshots of older formats are rebuilt from the log, never misread.
            assert!(decoded.iter().all(Option::is_none), "snapshot-format-{format}.hex decodes as the current one");
        }
    }
}
