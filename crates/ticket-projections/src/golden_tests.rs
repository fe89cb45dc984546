//! Golden bytes of the read models' stored state (each model's `FORMAT`): every entry of the
//! model's state space after the golden history and one flush, in key order (a key, then its
//! value). The rows cache the model's fold, so a change of what the fold keeps needs a new format
//! as much as a change of the encoding does. (The `checkpoint-*.hex` files are the whole-image
//! checkpoints of before the state store, no longer read.)

#![allow(clippy::unwrap_used, clippy::panic)]

use std::path::PathBuf;
use std::sync::Arc;

use ticket_domain::testing::{check_golden, golden_history};
use ticket_domain::{RecordedEvent, TicketId};
use ticket_log::{LogError, MemoryState, StateStore};

use crate::{Board, Compliance, History, Projected, ReadModel, Tickets};

/// The golden history's streams, as the log gives them to a model in production.
#[derive(Debug)]
struct Streams(Vec<RecordedEvent>);

impl History for Streams {
    fn stream(&self, ticket: TicketId) -> Result<Vec<RecordedEvent>, LogError> {
        Ok(self.0.iter().filter(|e| e.event.ticket_id == ticket).cloned().collect())
    }
}

fn streams() -> Arc<dyn History> {
    Arc::new(Streams(golden_history()))
}

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("golden")
}

fn stored<M: ReadModel>() -> Vec<Vec<u8>> {
    let store = MemoryState::new();
    let space = store.space(M::NAME).unwrap();
    let mut projected = Projected::<M>::stored(space.clone());
    projected.set_history(streams());
    for event in golden_history() {
        projected.apply(&event);
    }
    projected.flush().unwrap();
    space.range(&[], None, usize::MAX).unwrap().into_iter().flat_map(|(k, v)| [k, v]).collect()
}

fn check<M: ReadModel>() {
    check_golden(&dir(), &format!("state-{}", M::NAME), M::FORMAT, &stored::<M>());
}

#[test]
fn each_stored_model_matches_its_golden_file() {
    check::<Tickets>();
    check::<Board>();
    check::<Compliance>();
}

/// The golden state reopens as the model of the golden history (the whole history applied), and
/// answers as that model built in memory does.
#[test]
fn each_golden_state_reopens_at_the_end_of_the_golden_history() {
    let store = MemoryState::new();
    let golden = ticket_domain::testing::golden_files(&dir(), "state-tickets");
    let Some(items) = golden.get(&Tickets::FORMAT) else { panic!("no golden state of tickets") };
    let space = store.space(Tickets::NAME).unwrap();
    let mut batch = ticket_log::StateBatch::new();
    for pair in items.chunks(2) {
        let [key, value] = pair else { panic!("a key without a value") };
        batch.insert(key.clone(), value.clone());
    }
    space.apply(batch).unwrap();
    let history = golden_history();
    let mut reopened = Projected::<Tickets>::open(Arc::clone(&space), history.len() as u64);
    reopened.set_history(streams());
    assert_eq!(reopened.position(), history.len() as u64);
    let mut expected = Projected::<Tickets>::new();
    for event in &history {
        expected.apply(event);
    }
    for event in &history {
        let id = event.event.ticket_id;
        assert_eq!(reopened.model().ticket(id, u64::MAX), expected.model().ticket(id, u64::MAX));
    }
}
