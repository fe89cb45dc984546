//! The timer's deadline index in the state store on sled: what a flush wrote is what a process
//! killed after it (no clean stop, no last flush) finds at its next start.

use std::collections::BTreeMap;
use std::sync::Arc;

use ticket_domain::testing::{beijing, open};
use ticket_domain::{DeadlineIndex, Firing, Severity};
use ticket_log::{EventLog, StateStore};
use ticket_log_sled::SledState;
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
        let state = SledState::open(&path).unwrap();
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
    let state = SledState::open(&path).unwrap();
    let loaded = IndexStore::open(Arc::new(state)).unwrap().load(head).unwrap();
    assert_eq!(loaded.rebuild, None, "the stored index is used");
    assert_eq!(view(&loaded.index), flushed, "position and clocks as flushed");
}
