//! The timer's deadline index in the state store on sled: what a flush wrote is what a process
//! killed after it (no clean stop, no last flush) finds at its next start.

use std::collections::BTreeMap;
use std::sync::Arc;

use ticket_domain::testing::{beijing, open};
use ticket_domain::{DeadlineIndex, Firing, Severity};
use ticket_log::{EventLog, StateStore};
use ticket_log_sled::RedbState;
use ticket_timer::IndexStore;

use super::{Engine, new_ticket};
use crate::shipped_policy;

/// Each clock by its key: cycle, breached, pending firings.
type Clocks = BTreeMap<String, (u32, bool, Vec<Firing>)>;

fn view(index: &DeadlineIndex) -> (u64, Clocks) {
    let clocks = index
        .clock_entries()
        .map(|e| (format!("{}:{}", e.ticket, e.metric), (e.cycle, e.breached, e.pending.to_vec())))
        .collect();
    (index.position(), clocks)
}

#[tokio::test]
async fn a_flushed_index_is_what_a_killed_process_finds_on_sled() {
    let engine = Engine::start_without_timer(shipped_policy("regional-operator.toml"), beijing(2026, 11, 21, 2, 0));
    for severity in [Severity::A, Severity::B, Severity::C, Severity::A] {
        engine.execute(new_ticket(), open("advanced", "technical", severity)).await.unwrap();
    }
    let path = engine.dir.path().join("timer-state");
    let (flushed, head) = {
        let state = RedbState::open(&path).unwrap();
        let store = IndexStore::open(Arc::new(state.clone())).unwrap();
        let head = engine.log().head();
        let mut index = store.load(head).unwrap().index;
        ticket_timer::catch_up(engine.log(), &mut index, 2, |_| {}).unwrap();
        let written = store.flush(&mut index).unwrap();
        assert_eq!(written.position, head);
        assert!(written.clocks > 0 && written.bytes > 0, "{written:?}");
        let flushed = view(&index);
        // Changed afterwards and never flushed: a kill loses it.
        let first = *index.next().unwrap();
        index.settle(&first);
        assert_ne!(view(&index), flushed);
        assert!(state.size_on_disk() > 0);
        (flushed, head)
        // Dropped here without a flush: the process is gone.
    };
    assert!(!flushed.1.is_empty());
    let state = RedbState::open(&path).unwrap();
    let loaded = IndexStore::open(Arc::new(state)).unwrap().load(head).unwrap();
    assert_eq!(loaded.rebuild, None, "the stored index is used");
    assert_eq!(view(&loaded.index), flushed, "position and clocks as flushed");
}

/// Measures (run by hand: `cargo test -p tests timers::store::measure -- --ignored --nocapture`)
/// a flush of every clock of a large index, a flush of 10,000 changed clocks, and a load.
#[test]
#[ignore = "a measurement, not a check"]
fn measure_flush_and_load_of_a_large_index() {
    use ticket_domain::{ClockEntryOwned, FiringKind, Metric, TicketId};
    let clocks = 1_000_000u128;
    let dir = tempfile::tempdir().unwrap();
    let state = RedbState::open(dir.path().join("state.redb")).unwrap();
    let store = IndexStore::open(Arc::new(state.clone())).unwrap();
    store.load(0).unwrap();
    let at = beijing(2026, 11, 21, 2, 0);
    let entry = |i: u128, cycle: u32| {
        let ticket = TicketId::from_uuid(uuid::Uuid::from_u128(i + 1));
        let metric = Metric::Resolution;
        let pending = [FiringKind::Warning(50), FiringKind::Warning(80), FiringKind::Breach]
            .map(|kind| Firing { at, ticket, metric, cycle, kind })
            .to_vec();
        ClockEntryOwned { ticket, metric, cycle, breached: false, pending }
    };
    // Written as a rebuild writes it: a flush every 100,000 events (about 50,000 clocks).
    let started = std::time::Instant::now();
    let mut bytes = 0;
    for chunk in 0..clocks / 50_000 {
        let some = ticket_domain::Changes {
            position: 1,
            clocks: (chunk * 50_000..(chunk + 1) * 50_000)
                .map(|i| entry(i, 1))
                .map(|e| ((e.ticket, e.metric), Some(e)))
                .collect(),
        };
        let batch = IndexStore::batch(&some);
        bytes += ticket_timer::store::batch_bytes(&batch);
        store.write(batch).unwrap();
    }
    eprintln!("{clocks} clocks in flushes of 50000: {bytes} bytes, {:?}", started.elapsed());
    for round in 0..3u32 {
        let some = ticket_domain::Changes {
            position: 2 + u64::from(round),
            clocks: (0..10_000u128)
                .map(|i| entry(i * 97, 2 + round))
                .map(|e| ((e.ticket, e.metric), Some(e)))
                .collect(),
        };
        let started = std::time::Instant::now();
        let batch = IndexStore::batch(&some);
        let bytes = ticket_timer::store::batch_bytes(&batch);
        store.write(batch).unwrap();
        eprintln!("flush of 10000 changed clocks: {bytes} bytes, {:?}", started.elapsed());
    }
    drop(store);
    drop(state);
    let started = std::time::Instant::now();
    let state = RedbState::open(dir.path().join("state.redb")).unwrap();
    let opened = started.elapsed();
    let space = state.space(ticket_timer::store::SPACE).unwrap();
    let started = std::time::Instant::now();
    let mut from = b"c".to_vec();
    let mut rows = 0;
    loop {
        let page = space.range(&from, Some(b"d"), 4096).unwrap();
        let Some((last, _)) = page.last() else { break };
        rows += page.len();
        from = last.clone();
        from.push(0);
    }
    let scanned = started.elapsed();
    let started = std::time::Instant::now();
    let loaded = IndexStore::open(Arc::new(state.clone())).unwrap().load(10).unwrap();
    assert!(loaded.rebuild.is_none());
    assert_eq!(loaded.index.clocks(), clocks as usize);
    eprintln!(
        "{clocks} clocks ({} firings): sled open {opened:?}, scan of {rows} rows {scanned:?}, load (scan again, decode, index) {:?}; {} bytes on disk",
        loaded.index.len(),
        started.elapsed(),
        state.size_on_disk()
    );
}
