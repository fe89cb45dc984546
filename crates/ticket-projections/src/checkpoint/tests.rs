//! Golden bytes of the read models' checkpoints (each model's `FORMAT`): the sealed bincode
//! image of each model after the golden history. A checkpoint caches the model's fold, so a
//! change of what the fold keeps needs a new format as much as a change of the encoding does.

#![allow(clippy::unwrap_used, clippy::panic)]

use std::path::PathBuf;

use ticket_domain::testing::{check_golden, golden_files, golden_history};

use super::*;
use crate::{Board, Compliance, Tickets, Timeline};

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("golden")
}

fn projected<M: ReadModel>() -> Projected<M> {
    let mut projected = Projected::<M>::new();
    for event in golden_history() {
        projected.apply(&event);
    }
    projected
}

/// The models keep hash maps, whose order (and so the image's byte order) differs from one
/// process to the next: the golden image is one valid encoding, so it must decode to exactly the
/// golden projection, and a fresh image must have its length. Any other outcome fails with
/// `check_golden`'s message (bump the format, add a golden file).
fn check<M: ReadModel + PartialEq + std::fmt::Debug>() {
    let stem = format!("checkpoint-{}", M::NAME);
    let expected = projected::<M>();
    let fresh = encode(&expected).unwrap();
    let files = golden_files(&dir(), &stem);
    let Some([golden]) = files.get(&M::FORMAT).map(Vec::as_slice) else {
        return check_golden(&dir(), &stem, M::FORMAT, &[fresh]);
    };
    let same = decode::<M>(golden).is_ok_and(|decoded| decoded == expected) && fresh.len() == golden.len();
    if !same {
        check_golden(&dir(), &stem, M::FORMAT, &[fresh]);
    }
}

/// The current format's golden image decodes; older ones are refused as another format, which
/// means a rebuild from the log.
fn decode_golden<M: ReadModel>() {
    let stem = format!("checkpoint-{}", M::NAME);
    let files = golden_files(&dir(), &stem);
    assert!(files.contains_key(&M::FORMAT), "no golden file for {stem} format {}", M::FORMAT);
    for (format, images) in files {
        let [image] = images.as_slice() else { panic!("{stem}-format-{format}.hex holds one image") };
        match decode::<M>(image) {
            Ok(decoded) if format == M::FORMAT => assert_eq!(decoded.position(), golden_history().len() as u64),
            Ok(_) => panic!("{stem}-format-{format}.hex decodes as format {}", M::FORMAT),
            Err(CheckpointError::Format) if format != M::FORMAT => {}
            Err(e) => panic!("{stem}-format-{format}.hex: {e}"),
        }
    }
}

#[test]
fn each_checkpoint_encoding_matches_its_golden_file() {
    check::<Tickets>();
    check::<Board>();
    check::<Timeline>();
    check::<Compliance>();
}

#[test]
fn each_current_golden_checkpoint_decodes_and_older_formats_are_rebuilt() {
    decode_golden::<Tickets>();
    decode_golden::<Board>();
    decode_golden::<Timeline>();
    decode_golden::<Compliance>();
}
