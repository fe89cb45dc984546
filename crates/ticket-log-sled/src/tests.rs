use ticket_log::{EventLog, contract};

use super::*;

/// The raw sled database of a closed log, to tamper with it as an attacker with disk access would.
fn raw(dir: &tempfile::TempDir) -> (sled::Db, sled::Tree) {
    let db = open_db(&SledConfig::new(dir.path().join("log"))).unwrap();
    let tree = db.open_tree("log").unwrap();
    (db, tree)
}

fn open(dir: &tempfile::TempDir) -> SledLog {
    SledLog::open(SledConfig::new(dir.path().join("log"))).unwrap()
}

#[tokio::test]
async fn the_sled_log_keeps_the_contract() {
    let dirs: std::sync::Mutex<Vec<tempfile::TempDir>> = std::sync::Mutex::new(Vec::new());
    contract::run_all(|| {
        let dir = tempfile::tempdir().unwrap();
        let log = open(&dir);
        dirs.lock().unwrap().push(dir);
        log
    })
    .await;
}

#[tokio::test]
async fn appends_survive_a_reopen_and_the_chain_verifies() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = open(&dir);
        log.append(contract::append("c1", contract::ticket(1), 0, &["a", "b"])).await.unwrap();
        log.append(contract::append("c2", contract::ticket(2), 0, &["c"])).await.unwrap();
    }
    let log = open(&dir);
    assert_eq!(log.head(), 3);
    assert_eq!(log.stream_version(contract::ticket(1)).unwrap(), 2);
    let again = log.append(contract::append("c1", contract::ticket(1), 0, &["x"])).await.unwrap();
    assert!(again.is_duplicate());
    log.append(contract::append("c3", contract::ticket(1), 2, &["d"])).await.unwrap();
    let report = log.verify_chain(|_, _| {}).unwrap();
    assert_eq!(report, ChainReport { events: 4, head: 4, broken: None });
}

/// After a reopen the writer no longer knows which append wrote a stream's end: a decision made
/// after an append of the previous run is refused, one made on the durable state is not.
#[tokio::test]
async fn a_reopened_log_forgets_every_basis() {
    let dir = tempfile::tempdir().unwrap();
    let first = contract::append("c1", contract::ticket(1), 0, &["a"]);
    {
        let log = open(&dir);
        log.append(first.clone()).await.unwrap();
    }
    let log = open(&dir);
    let after = contract::append_after("c2", contract::ticket(1), 1, &first, &["b"]);
    assert_eq!(log.append(after).await.unwrap_err(), LogError::BasisConflict { ticket_id: contract::ticket(1) });
    log.append(contract::append("c2", contract::ticket(1), 1, &["b"])).await.unwrap();
    assert_eq!(log.stream_version(contract::ticket(1)).unwrap(), 2);
}

#[tokio::test]
async fn a_flipped_byte_breaks_the_chain_at_its_position() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = open(&dir);
        for i in 0..5u64 {
            log.append(contract::append(&format!("c{i}"), contract::ticket(1), i, &["note"])).await.unwrap();
        }
    }
    {
        let (db, tree) = raw(&dir);
        let key = keys::positional(keys::EVENT, 3);
        let mut bytes = tree.get(key).unwrap().unwrap().to_vec();
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0x01;
        tree.insert(key, bytes).unwrap();
        db.flush().unwrap();
    }
    let log = open(&dir);
    let report = log.verify_chain(|_, _| {}).unwrap();
    assert_eq!(report.broken.map(|(p, _)| p), Some(3), "the break is reported at the tampered position");
}

#[tokio::test]
async fn a_corrupt_record_is_an_error_with_its_position_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = open(&dir);
        log.append(contract::append("c1", contract::ticket(1), 0, &["a", "b", "c"])).await.unwrap();
    }
    {
        let (db, tree) = raw(&dir);
        tree.insert(keys::positional(keys::EVENT, 2), &b"\xff\xff garbage"[..]).unwrap();
        db.flush().unwrap();
    }
    let log = open(&dir);
    let err = log.read_from(1, 10).unwrap_err();
    assert!(matches!(err, LogError::Corrupt { position: 2, .. }), "{err}");
    assert_eq!(log.verify_chain(|_, _| {}).unwrap().broken.map(|(p, _)| p), Some(2));
}

#[tokio::test]
async fn a_head_that_disagrees_with_the_records_is_reported_at_open() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = open(&dir);
        log.append(contract::append("c1", contract::ticket(1), 0, &["a", "b"])).await.unwrap();
    }
    {
        let (db, tree) = raw(&dir);
        tree.remove(keys::positional(keys::EVENT, 2)).unwrap();
        db.flush().unwrap();
    }
    let err = SledLog::open(SledConfig::new(dir.path().join("log"))).unwrap_err();
    assert!(matches!(err, LogError::Corrupt { position: 2, .. }), "{err}");
}

#[tokio::test]
async fn concurrent_appends_share_group_commits_and_stay_gapless() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(&dir);
    let mut tasks = Vec::new();
    for i in 0..200u128 {
        let log = log.clone();
        tasks.push(tokio::spawn(async move {
            log.append(contract::append(&format!("c{i}"), contract::ticket(i), 0, &["a", "b"])).await.unwrap()
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let positions: Vec<u64> = log.read_from(1, 1000).unwrap().iter().map(|e| e.position).collect();
    assert_eq!(positions, (1..=400).collect::<Vec<_>>());
    assert_eq!(log.verify_chain(|_, _| {}).unwrap().broken, None);
}

#[tokio::test]
async fn snapshots_are_kept_beside_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(&dir);
    let store = log.snapshots();
    assert_eq!(store.load(contract::ticket(1)).unwrap(), None);
    store.save(contract::ticket(1), vec![1, 2, 3]).unwrap();
    assert_eq!(store.load(contract::ticket(1)).unwrap(), Some(vec![1, 2, 3]));
}

#[tokio::test]
async fn the_first_clock_kind_claimed_is_kept_across_reopens() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = open(&dir);
        assert_eq!(log.clock_kind().unwrap(), None);
        assert_eq!(log.claim_clock(ClockKind::Simulated).unwrap(), ClockKind::Simulated);
        assert_eq!(log.claim_clock(ClockKind::Wall).unwrap(), ClockKind::Simulated, "the first claim stays");
    }
    let log = open(&dir);
    assert_eq!(log.clock_kind().unwrap(), Some(ClockKind::Simulated));
    assert_eq!(log.claim_clock(ClockKind::Wall).unwrap(), ClockKind::Simulated);
}

/// A log written before clock kinds were recorded was written by the wall clock.
#[tokio::test]
async fn a_log_with_events_and_no_clock_kind_is_a_wall_clock_log() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(&dir);
    log.append(contract::append("c1", contract::ticket(1), 0, &["a"])).await.unwrap();
    assert_eq!(log.claim_clock(ClockKind::Simulated).unwrap(), ClockKind::Wall);
    assert_eq!(log.clock_kind().unwrap(), Some(ClockKind::Wall));
}
