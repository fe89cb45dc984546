use ticket_log::{EventLog, contract};

use super::*;

/// The raw sled database of a closed log, to tamper with it as an attacker with disk access would.
fn raw(dir: &tempfile::TempDir) -> (sled::Db, sled::Tree) {
    let root = dir.path().join("log");
    let db = open_db(&compact::sled_dir(&root).unwrap(), &SledConfig::new(&root)).unwrap();
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

fn open_sealing(dir: &tempfile::TempDir, hot_events: u64, seal_chunk: u64) -> SledLog {
    let mut config = SledConfig::new(dir.path().join("log"));
    config.hot_events = hot_events;
    config.seal_chunk = seal_chunk;
    SledLog::open(config).unwrap()
}

/// Waits (with a deadline) until the sealer has moved events up to `at_least`.
async fn wait_sealed(log: &SledLog, at_least: u64) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while log.sealed() < at_least {
        assert!(std::time::Instant::now() < deadline, "sealed only up to {} of {at_least}", log.sealed());
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}

/// The contract again, with the sealer moving every event but the newest into the archive
/// while the contract appends and reads.
#[tokio::test]
async fn the_sled_log_keeps_the_contract_while_sealing_constantly() {
    let dirs: std::sync::Mutex<Vec<(tempfile::TempDir, SledLog)>> = std::sync::Mutex::new(Vec::new());
    contract::run_all(|| {
        let dir = tempfile::tempdir().unwrap();
        let log = open_sealing(&dir, 1, 1);
        dirs.lock().unwrap().push((dir, log.clone()));
        log
    })
    .await;
    let sealed: u64 = dirs.lock().unwrap().iter().map(|(_, log)| log.sealed()).sum();
    assert!(sealed > 0, "the sealer moved nothing while the contract ran");
}

/// Given a log whose older events were sealed into the archive, when it is read and appended
/// to (before and after a reopen), then it behaves as one log, and sled keeps none of them.
#[tokio::test]
async fn sealed_history_reads_as_one_log_and_leaves_sled() {
    let dir = tempfile::tempdir().unwrap();
    let old = contract::ticket(100);
    {
        let log = open_sealing(&dir, 10, 4);
        log.append(contract::append("old", old, 0, &["a", "b"])).await.unwrap();
        for round in 0..5u64 {
            for t in 0..6u128 {
                let id = format!("c{round}-{t}");
                log.append(contract::append(&id, contract::ticket(t), round * 2, &["x", "y"])).await.unwrap();
            }
        }
        wait_sealed(&log, 40).await;
    }
    let log = open_sealing(&dir, 10, 4);
    let sealed = log.sealed();
    assert!(sealed >= 40, "sealed {sealed}");
    assert_eq!(log.head(), 62);
    let positions: Vec<u64> = log.read_from(1, usize::MAX).unwrap().iter().map(|e| e.position).collect();
    assert_eq!(positions, (1..=62).collect::<Vec<_>>());
    for t in 0..6u128 {
        let versions: Vec<u64> = log.read_stream(contract::ticket(t), 0).unwrap().iter().map(|e| e.version).collect();
        assert_eq!(versions, (1..=10).collect::<Vec<_>>(), "ticket {t}");
        let tail: Vec<u64> = log.read_stream(contract::ticket(t), 4).unwrap().iter().map(|e| e.version).collect();
        assert_eq!(tail, (4..=10).collect::<Vec<_>>());
        assert_eq!(log.stream_version(contract::ticket(t)).unwrap(), 10);
    }
    assert_eq!(log.stream_version(old).unwrap(), 2, "a stream wholly in the archive");
    let record = log.command(&CommandId::new("old").unwrap()).unwrap().unwrap();
    assert_eq!((record.first_position, record.last_position), (1, 2));
    let retried = log.append(contract::append("old", old, 0, &["a", "b"])).await.unwrap();
    assert!(retried.is_duplicate());
    assert_eq!(retried.events().iter().map(|e| e.position).collect::<Vec<_>>(), vec![1, 2]);
    assert_eq!(log.commands_from(1, usize::MAX).unwrap().len(), 31);
    assert_eq!(log.verify_chain(|_, _| {}).unwrap(), ChainReport { events: 62, head: 62, broken: None });
    assert_eq!(
        log.append(contract::append("stale", old, 1, &["c"])).await.unwrap_err(),
        LogError::VersionConflict { ticket_id: old, expected: 1, actual: 2 },
        "the version of a sealed stream is known to the writer"
    );
    log.append(contract::append("new", old, 2, &["c"])).await.unwrap();
    assert_eq!(log.read_stream(old, 0).unwrap().iter().map(|e| e.position).collect::<Vec<_>>(), vec![1, 2, 63]);
    drop(log);

    let (_db, tree) = raw(&dir);
    // The sealer went on after the reopen: the marker is at least where it was then.
    let marker = tree.get(keys::META_SEALED).unwrap().and_then(|v| keys::trailing_u64(&v)).unwrap();
    assert!(marker >= sealed, "sled's marker {marker} is behind {sealed}");
    for position in 1..=marker {
        assert!(tree.get(keys::positional(keys::EVENT, position)).unwrap().is_none(), "{position} still in sled");
    }
    assert!(tree.get(keys::stream(old, 1)).unwrap().is_none());
    assert!(tree.get(keys::command_id(&CommandId::new("old").unwrap())).unwrap().is_none());
    assert!(tree.get(keys::positional(keys::EVENT, 62)).unwrap().is_some(), "the hot tail stays");
}

/// Given a crash after a chunk was committed to the archive and before sled's copy was
/// deleted, when the log is reopened, then the move is finished and the log reads once.
#[tokio::test]
async fn a_move_interrupted_between_its_steps_is_finished_at_open() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = open(&dir);
        for i in 0..10u64 {
            log.append(contract::append(&format!("c{i}"), contract::ticket(1), i * 2, &["a", "b"])).await.unwrap();
        }
    }
    {
        let (db, tree) = raw(&dir);
        let tiers = Tiers::new(tree.clone(), Archive::open(dir.path().join("log").join(ARCHIVE_FILE)).unwrap());
        let records = tiers.sealable(1, 7).unwrap();
        assert!(records.iter().any(|(k, _)| k[0] == keys::COMMAND_ID), "command records move with their events");
        tiers.archive.seal(&records, 7).unwrap();
        assert!(tree.get(keys::positional(keys::EVENT, 1)).unwrap().is_some(), "step 2 never ran");
        db.flush().unwrap();
    }
    {
        let log = open(&dir);
        assert_eq!(log.sealed(), 7);
        let positions: Vec<u64> = log.read_from(1, 100).unwrap().iter().map(|e| e.position).collect();
        assert_eq!(positions, (1..=20).collect::<Vec<_>>());
        assert_eq!(log.read_stream(contract::ticket(1), 0).unwrap().len(), 20);
        assert_eq!(log.verify_chain(|_, _| {}).unwrap().broken, None);
        // c3 wrote 7 and 8: its record stays in sled until its last event is sealed.
        assert!(log.command(&CommandId::new("c3").unwrap()).unwrap().is_some());
    }
    let (_db, tree) = raw(&dir);
    assert!(tree.get(keys::positional(keys::EVENT, 1)).unwrap().is_none(), "the move was finished");
    assert!(tree.get(keys::positional(keys::EVENT, 8)).unwrap().is_some());
    assert_eq!(tree.get(keys::META_SEALED).unwrap().and_then(|v| keys::trailing_u64(&v)), Some(7));
}

/// Sealed history is part of the log: losing the archive is refused at open, and a record
/// tampered with in the archive breaks the chain at its position.
#[tokio::test]
async fn a_lost_or_tampered_archive_is_found() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = open_sealing(&dir, 2, 2);
        for i in 0..8u64 {
            log.append(contract::append(&format!("c{i}"), contract::ticket(1), i, &["a"])).await.unwrap();
        }
        wait_sealed(&log, 4).await;
    }
    let archive = dir.path().join("log").join(ARCHIVE_FILE);
    {
        let archive = Archive::open(&archive).unwrap();
        let key = keys::positional(keys::EVENT, 3);
        let mut bytes = archive.get(&key).unwrap().unwrap();
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0x01;
        let sealed = archive.sealed();
        archive.seal(&[(key.to_vec(), bytes)], sealed).unwrap();
    }
    {
        let log = open_sealing(&dir, 2, 2);
        assert_eq!(log.verify_chain(|_, _| {}).unwrap().broken.map(|(p, _)| p), Some(3));
    }
    std::fs::remove_file(&archive).unwrap();
    let err = SledLog::open(SledConfig::new(dir.path().join("log"))).unwrap_err();
    assert!(matches!(err, LogError::Corrupt { position: 1, .. }), "{err}");
}

/// Given a log with a long backlog to seal (a log of an earlier version, or a smaller hot
/// tier), when it is closed at once, then the close does not wait for the backlog, and what was
/// moved and what was not read as one log after a reopen.
#[tokio::test]
async fn closing_does_not_wait_for_the_sealing_backlog() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = open(&dir);
        let mut tasks = Vec::new();
        for i in 0..2500u128 {
            let log = log.clone();
            tasks.push(tokio::spawn(async move {
                log.append(contract::append(&format!("c{i}"), contract::ticket(i), 0, &["a", "b"])).await.unwrap()
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
    }
    {
        // 4999 moves of one event each, one fsync each: far longer than a close.
        let log = open_sealing(&dir, 1, 1);
        drop(log);
    }
    let log = open(&dir);
    assert!(log.sealed() < 4999, "the close waited for the whole backlog ({} sealed)", log.sealed());
    assert_eq!(log.read_from(1, usize::MAX).unwrap().len(), 5000);
    assert_eq!(log.verify_chain(|_, _| {}).unwrap().broken, None);
}

/// Given appends and reads running while the sealer moves every event but the newest, then no
/// read ever sees a gap, a stream out of order, or a stored command without its events.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reads_racing_the_sealer_never_see_a_gap() {
    let dir = tempfile::tempdir().unwrap();
    // Every stream's newest events sealed as soon as they are written: a read of a stream races
    // the deletion of its tail.
    let log = open_sealing(&dir, 1, 3);
    let done = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for t in 0..8u128 {
        let log = log.clone();
        writers.push(tokio::spawn(async move {
            for round in 0..100u64 {
                let id = format!("w{t}-{round}");
                log.append(contract::append(&id, contract::ticket(t), round * 2, &["a", "b"])).await.unwrap();
            }
        }));
    }
    let mut readers = Vec::new();
    for r in 0..3u128 {
        let (log, done) = (log.clone(), done.clone());
        readers.push(tokio::task::spawn_blocking(move || {
            let mut reads = 0u64;
            while !done.load(Ordering::Acquire) || reads == 0 {
                let head = log.head();
                let positions: Vec<u64> = log.read_from(1, usize::MAX).unwrap().iter().map(|e| e.position).collect();
                assert!(positions.len() as u64 >= head, "read {} of {head} events", positions.len());
                assert_eq!(positions, (1..=positions.len() as u64).collect::<Vec<_>>());
                let ticket = contract::ticket((reads as u128 + r) % 8);
                let version = log.stream_version(ticket).unwrap();
                let stream: Vec<u64> = log.read_stream(ticket, 0).unwrap().iter().map(|e| e.version).collect();
                assert!(stream.len() as u64 >= version, "stream of {} versions at version {version}", stream.len());
                assert_eq!(stream, (1..=stream.len() as u64).collect::<Vec<_>>());
                if let Some(record) = log.command(&CommandId::new(format!("w{r}-0")).unwrap()).unwrap() {
                    assert_eq!(record.last_position - record.first_position, 1);
                }
                reads += 1;
            }
            reads
        }));
    }
    for w in writers {
        w.await.unwrap();
    }
    done.store(true, Ordering::Release);
    for r in readers {
        assert!(r.await.unwrap() > 0);
    }
    assert!(log.sealed() > 0, "the sealer moved nothing");
    assert_eq!(log.verify_chain(|_, _| {}).unwrap(), ChainReport { events: 1600, head: 1600, broken: None });
    for t in 0..8u128 {
        assert_eq!(log.read_stream(contract::ticket(t), 0).unwrap().len(), 200);
    }
}

fn open_compacting(dir: &tempfile::TempDir) -> SledLog {
    let mut config = SledConfig::new(dir.path().join("log"));
    config.hot_events = 2;
    config.seal_chunk = 2;
    config.compact_above_bytes = 0;
    SledLog::open(config).unwrap()
}

/// Given a log whose sled file is mostly sealed history, when it is opened, then sled is
/// rewritten into a directory of its own named in `CURRENT` and the former files are removed;
/// the log reads, verifies, deduplicates and appends as before, across repeated compactions.
#[tokio::test]
async fn a_mostly_sealed_sled_is_compacted_at_open_and_the_log_is_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("log");
    {
        let log = open_sealing(&dir, 2, 2);
        for i in 0..20u64 {
            log.append(contract::append(&format!("c{i}"), contract::ticket(1), i * 2, &["a", "b"])).await.unwrap();
        }
        wait_sealed(&log, 30).await;
        log.snapshots().save(contract::ticket(1), vec![7; 3]).unwrap();
    }
    assert!(root.join("db").exists() && !root.join("CURRENT").exists());
    for round in 1..=2u64 {
        let log = open_compacting(&dir);
        assert_eq!(std::fs::read_to_string(root.join("CURRENT")).unwrap(), format!("sled-{round}"));
        assert!(!root.join("db").exists() && !root.join("conf").exists(), "the former sled files are removed");
        assert!(!root.join(format!("sled-{}", round - 1)).exists(), "the former copy is removed");
        assert_eq!(log.head(), 40 + round - 1);
        assert_eq!(log.verify_chain(|_, _| {}).unwrap().broken, None);
        assert_eq!(log.read_stream(contract::ticket(1), 0).unwrap().len() as u64, 40 + round - 1);
        assert!(log.append(contract::append("c3", contract::ticket(1), 0, &["x"])).await.unwrap().is_duplicate());
        assert_eq!(log.snapshots().load(contract::ticket(1)).unwrap(), Some(vec![7; 3]));
        assert_eq!(log.clock_kind().unwrap(), None);
        let version = 40 + round - 1;
        log.append(contract::append(&format!("n{round}"), contract::ticket(1), version, &["c"])).await.unwrap();
    }
}

/// Given a crash in the middle of a compaction (a partial copy, `CURRENT` not switched), when
/// the log is opened, then the copy is discarded and the log is as it was.
#[tokio::test]
async fn a_compaction_interrupted_before_its_switch_is_discarded() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("log");
    {
        let log = open(&dir);
        log.append(contract::append("c1", contract::ticket(1), 0, &["a", "b"])).await.unwrap();
    }
    std::fs::create_dir_all(root.join("sled-1")).unwrap();
    std::fs::write(root.join("sled-1").join("db"), b"half a copy").unwrap();
    let log = open(&dir);
    assert!(!root.join("sled-1").exists());
    assert!(!root.join("CURRENT").exists());
    assert_eq!(log.read_from(1, 10).unwrap().len(), 2);
}

/// Every group commit a log hands its replicator; refuses from the `refuse_from`th group on.
#[derive(Debug, Default)]
struct Recording {
    groups: std::sync::Mutex<Vec<ticket_log::ReplicaGroup>>,
    refuse_from: Option<usize>,
}

impl ticket_log::Replicator for Recording {
    fn replicate(&self, group: &ticket_log::ReplicaGroup) -> Result<(), LogError> {
        let mut groups = self.groups.lock().unwrap();
        if self.refuse_from.is_some_and(|n| groups.len() >= n) {
            return Err(LogError::NotOwner("node-b took the partition over".into()));
        }
        groups.push(group.clone());
        Ok(())
    }
}

fn open_replicating(dir: &tempfile::TempDir, replicator: Arc<Recording>) -> SledLog {
    let mut config = SledConfig::new(dir.path().join("log"));
    config.replicator = Some(replicator);
    SledLog::open(config).unwrap()
}

/// Given a log that hands its group commits to a replicator, when another log applies the same
/// groups in order, then both hold the same records, hash chain, streams and command records,
/// and a retried command is answered from the copy as from the original.
#[tokio::test]
async fn a_copy_fed_with_the_replicated_groups_is_the_same_log() {
    let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let replicator = Arc::new(Recording::default());
    let original = open_replicating(&a_dir, replicator.clone());
    let mut appends = Vec::new();
    for i in 0..12u64 {
        let ticket = contract::ticket(u128::from(i % 3 + 1));
        appends.push(original.append(contract::append(&format!("c{i}"), ticket, i / 3 * 2, &["a", "b"])));
    }
    for append in appends {
        append.await.unwrap();
    }
    let groups = replicator.groups.lock().unwrap().clone();
    assert_eq!(groups.iter().map(|g| g.records.len()).sum::<usize>(), 24);
    assert_eq!(groups.iter().map(|g| g.commands.len()).sum::<usize>(), 12);

    let copy = open(&b_dir);
    for group in groups {
        let head = copy.apply_replicated(group.clone()).await.unwrap();
        assert_eq!(head, group.last_position());
    }
    assert_eq!(copy.chain_head().unwrap(), original.chain_head().unwrap());
    assert_eq!(copy.read_from(1, 100).unwrap(), original.read_from(1, 100).unwrap());
    for n in 1..=3 {
        let t = contract::ticket(n);
        assert_eq!(copy.read_stream(t, u64::MAX).unwrap(), original.read_stream(t, u64::MAX).unwrap());
    }
    let retried = copy.append(contract::append("c5", contract::ticket(3), 1, &["x"])).await.unwrap();
    assert!(retried.is_duplicate());
    assert_eq!(copy.verify_chain(|_, _| {}).unwrap().broken, None);
    // The copy goes on appending after the replicated history (it became the owner).
    copy.append(contract::append("c12", contract::ticket(1), 8, &["c"])).await.unwrap();
    assert_eq!(copy.head(), 25);
}

/// Given a copy that does not flush the groups it is fed (a cluster node's copy) and seals its
/// older events into its archive, when it is flushed and reopened, then it holds every group,
/// its chain verifies, and the archive holds nothing sled lost (the sealer flushes first).
#[tokio::test]
async fn an_unflushed_copy_seals_and_reopens_whole_once_flushed() {
    let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let replicator = Arc::new(Recording::default());
    let original = open_replicating(&a_dir, replicator.clone());
    for i in 0..30u64 {
        let ticket = contract::ticket(u128::from(i % 3 + 1));
        original.append(contract::append(&format!("c{i}"), ticket, i / 3 * 2, &["a", "b"])).await.unwrap();
    }
    let groups = replicator.groups.lock().unwrap().clone();
    let config = SledConfig {
        hot_events: 8,
        seal_chunk: 8,
        sync_replicated: false,
        ..SledConfig::new(b_dir.path().join("log"))
    };
    let copy = SledLog::open(config.clone()).unwrap();
    for group in groups {
        copy.apply_replicated(group).await.unwrap();
    }
    wait_sealed(&copy, 48).await;
    copy.flush().unwrap();
    drop(copy);
    let copy = SledLog::open(config).unwrap();
    assert_eq!(copy.chain_head().unwrap(), original.chain_head().unwrap());
    assert_eq!(copy.read_from(1, 100).unwrap(), original.read_from(1, 100).unwrap());
    assert_eq!(copy.verify_chain(|_, _| {}).unwrap().broken, None);
}

/// A replicated group that does not continue the log exactly (a gap, a repeat, a broken chain,
/// a ticket's version skipped) is refused with the reason, and nothing of it is written.
#[tokio::test]
async fn a_group_that_does_not_continue_the_log_is_refused_whole() {
    let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let replicator = Arc::new(Recording::default());
    let original = open_replicating(&a_dir, replicator.clone());
    for i in 0..3u64 {
        original.append(contract::append(&format!("c{i}"), contract::ticket(1), i, &["a"])).await.unwrap();
    }
    let groups = replicator.groups.lock().unwrap().clone();
    assert_eq!(groups.len(), 3);
    let copy = open(&b_dir);

    // A gap: the second group before the first.
    assert!(matches!(copy.apply_replicated(groups[1].clone()).await, Err(LogError::InvalidAppend(_))));
    copy.apply_replicated(groups[0].clone()).await.unwrap();
    // A repeat.
    assert!(matches!(copy.apply_replicated(groups[0].clone()).await, Err(LogError::InvalidAppend(_))));
    // A flipped byte in the envelope: the hash does not match.
    let mut flipped = groups[1].clone();
    let record = &mut flipped.records[0];
    let middle = record.len() / 2;
    record[middle] ^= 0x01;
    assert!(matches!(copy.apply_replicated(flipped).await, Err(LogError::Corrupt { position: 2, .. })));
    // Another log's record at the right position: it does not chain.
    let other_dir = tempfile::tempdir().unwrap();
    let other_replicator = Arc::new(Recording::default());
    let other = open_replicating(&other_dir, other_replicator.clone());
    other.append(contract::append("x0", contract::ticket(9), 0, &["a"])).await.unwrap();
    other.append(contract::append("x1", contract::ticket(9), 1, &["a"])).await.unwrap();
    let foreign = other_replicator.groups.lock().unwrap()[1].clone();
    assert!(matches!(copy.apply_replicated(foreign).await, Err(LogError::Corrupt { position: 2, .. })));
    assert_eq!(copy.head(), 1, "nothing of a refused group was written");
    // The right one still fits.
    copy.apply_replicated(groups[1].clone()).await.unwrap();
    copy.apply_replicated(groups[2].clone()).await.unwrap();
    assert_eq!(copy.chain_head().unwrap(), original.chain_head().unwrap());
}

/// Given a replicator that refuses a group (this node was deposed), the group's appends fail
/// with its reason, nothing of the group is written, and every later append is refused the same
/// way, in this run and not after a reopen without the replicator's refusal.
#[tokio::test]
async fn a_group_the_replicator_refuses_is_not_written_and_the_log_stops() {
    let dir = tempfile::tempdir().unwrap();
    let replicator = Arc::new(Recording { refuse_from: Some(2), ..Recording::default() });
    {
        let log = open_replicating(&dir, replicator.clone());
        log.append(contract::append("c0", contract::ticket(1), 0, &["a"])).await.unwrap();
        log.append(contract::append("c1", contract::ticket(1), 1, &["b"])).await.unwrap();
        let refused = log.append(contract::append("c2", contract::ticket(1), 2, &["c"])).await.unwrap_err();
        assert_eq!(refused, LogError::NotOwner("node-b took the partition over".into()));
        assert_eq!(log.head(), 2);
        let later = log.append(contract::append("c3", contract::ticket(2), 0, &["d"])).await.unwrap_err();
        assert_eq!(later, refused);
        assert!(matches!(log.apply_replicated(ticket_log::ReplicaGroup::default()).await, Err(LogError::NotOwner(_))));
    }
    let log = open(&dir);
    assert_eq!(log.head(), 2);
    assert_eq!(log.verify_chain(|_, _| {}).unwrap().broken, None);
}
