//! Every read model at once, built from the log in one pass: time travel (as of a position or an
//! instant), rebuilds, and the benchmark.

use ticket_domain::{RecordedEvent, Timestamp};
use ticket_log::{EventLog, LogError};

use crate::{Board, Compliance, Projected, Tickets, Timeline};

/// A moment in the log's history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum At {
    /// After the event at this global position and every earlier one.
    Position(u64),
    /// After every event that occurred at or before this instant.
    Instant(Timestamp),
    /// After every event.
    Now,
}

impl At {
    pub fn includes(&self, event: &RecordedEvent) -> bool {
        match self {
            At::Position(p) => event.position <= *p,
            At::Instant(t) => event.event.occurred_at <= *t,
            At::Now => true,
        }
    }
}

/// Events read from the log per round.
const BATCH: usize = 8192;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReadModels {
    pub tickets: Projected<Tickets>,
    pub board: Projected<Board>,
    pub timeline: Projected<Timeline>,
    pub compliance: Projected<Compliance>,
}

impl ReadModels {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn apply(&mut self, event: &RecordedEvent) {
        self.tickets.apply(event);
        self.board.apply(event);
        self.timeline.apply(event);
        self.compliance.apply(event);
    }

    /// Every read model as of `at`, computed from the log (it touches no live read model).
    /// `progress(read, head)` is called after each batch.
    pub fn build<L: EventLog>(log: &L, at: At, mut progress: impl FnMut(u64, u64)) -> Result<Self, LogError> {
        let head = match at {
            At::Position(p) => p.min(log.head()),
            At::Instant(_) | At::Now => log.head(),
        };
        let mut models = Self::new();
        let mut next = 1;
        while next <= head {
            let batch = log.read_from(next, BATCH.min((head - next + 1) as usize))?;
            let Some(last) = batch.last().map(|e| e.position) else { break };
            for event in batch.iter().filter(|e| at.includes(e)) {
                models.apply(event);
            }
            next = last + 1;
            progress(last, head);
        }
        Ok(models)
    }
}
