//! Every read model at once, built from the log in one pass: time travel (as of a position or an
//! instant), rebuilds, and the benchmark.

use ticket_domain::RecordedEvent;
use ticket_log::{EventLog, LogError};

use crate::{Board, Compliance, Projected, Tickets};

pub use ticket_log::At;

/// Events read from the log per round.
const BATCH: usize = 8192;

/// Every read model in memory (no state store), as of a moment of the log. The timeline has no
/// model: it is read from the log, as of the same moment.
#[derive(Debug)]
pub struct ReadModels {
    pub tickets: Projected<Tickets>,
    pub board: Projected<Board>,
    pub compliance: Projected<Compliance>,
    /// The moment the models were built as of (the timeline is read from the log as of it too).
    pub at: At,
}

impl Default for ReadModels {
    fn default() -> Self {
        Self::new()
    }
}

impl ReadModels {
    pub fn new() -> Self {
        Self { tickets: Projected::new(), board: Projected::new(), compliance: Projected::new(), at: At::Now }
    }

    pub fn apply(&mut self, event: &RecordedEvent) {
        self.tickets.apply(event);
        self.board.apply(event);
        self.compliance.apply(event);
    }

    /// The position applied.
    pub fn position(&self) -> u64 {
        self.tickets.position()
    }

    /// Every read model as of `at`, computed from the log (it touches no live read model).
    /// `progress(read, head)` is called after each batch.
    pub fn build<L: EventLog>(log: &L, at: At, mut progress: impl FnMut(u64, u64)) -> Result<Self, LogError> {
        let head = match at {
            At::Position(p) => p.min(log.head()),
            At::Instant(_) | At::Now => log.head(),
        };
        let mut models = Self { at, ..Self::new() };
        read_in_order(log, 1, head, BATCH, |batch| {
            for event in batch.iter().filter(|e| at.includes(e)) {
                models.apply(event);
            }
            if let Some(last) = batch.last() {
                progress(last.position, head);
            }
            (batch, true)
        })?;
        Ok(models)
    }
}

/// Reads positions `from..=to` in batches on several threads (reading and decoding the log is
/// most of a rebuild's work) and hands the batches to `apply` in log order, on this thread, until
/// it answers false (to stop early).
pub(crate) fn read_in_order<L: EventLog>(
    log: &L,
    from: u64,
    to: u64,
    batch: usize,
    mut apply: impl FnMut(Vec<RecordedEvent>) -> (Vec<RecordedEvent>, bool),
) -> Result<(), LogError> {
    if from > to {
        return Ok(());
    }
    let batch = batch.max(1) as u64;
    let batches = (to - from) / batch + 1;
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get()).clamp(1, 4) as u64;
    std::thread::scope(|scope| {
        let mut receivers = Vec::new();
        let mut recyclers = Vec::new();
        for worker in 0..workers {
            // Two batches ahead per worker at most: memory stays bounded.
            let (tx, rx) = std::sync::mpsc::sync_channel::<Result<Vec<RecordedEvent>, LogError>>(2);
            // Applied batches go back to the thread that allocated them to be freed there: the
            // allocator frees fastest on the thread that allocated, and the applying thread is
            // the busiest.
            let (recycle, recycled) = std::sync::mpsc::channel::<Vec<RecordedEvent>>();
            receivers.push(rx);
            recyclers.push(recycle);
            scope.spawn(move || {
                let mut b = worker;
                while b < batches {
                    while let Ok(done) = recycled.try_recv() {
                        drop(done);
                    }
                    let start = from + b * batch;
                    let limit = batch.min(to - start + 1) as usize;
                    let read = log.read_from(start, limit);
                    let failed = read.is_err();
                    if tx.send(read).is_err() || failed {
                        return;
                    }
                    b += workers;
                }
                drop(tx);
                // Free the last batches as they come back.
                while let Ok(done) = recycled.recv() {
                    drop(done);
                }
            });
        }
        // Batch b comes from worker b % workers, each worker's in order.
        let mut result = Ok(());
        for b in 0..batches {
            let worker = (b % workers) as usize;
            let Some(rx) = receivers.get(worker) else { break };
            match rx.recv() {
                Ok(Ok(events)) if events.is_empty() => break,
                Ok(Ok(events)) => {
                    let (events, go_on) = apply(events);
                    if let Some(recycle) = recyclers.get(worker) {
                        let _ = recycle.send(events);
                    }
                    if !go_on {
                        break;
                    }
                }
                Ok(Err(e)) => {
                    result = Err(e);
                    break;
                }
                Err(_) => break,
            }
        }
        // The workers stop once their receivers and recyclers are gone.
        drop(receivers);
        drop(recyclers);
        result
    })
}
