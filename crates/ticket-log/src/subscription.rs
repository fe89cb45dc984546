//! Catch up from a position, then follow live appends.

use ticket_domain::RecordedEvent;
use tokio::sync::watch;

use crate::{EventLog, LogError};

/// Events from a starting position on: first the stored ones, then each new append as it
/// becomes durable. Positions are delivered in order, without gaps or repeats.
#[derive(Debug)]
pub struct Subscription<L> {
    log: L,
    next: u64,
    head: watch::Receiver<u64>,
    batch: usize,
}

impl<L: EventLog> Subscription<L> {
    pub(crate) fn new(log: L, from: u64) -> Self {
        let head = log.watch_head();
        Self { log, next: from.max(1), head, batch: 1024 }
    }

    /// Reads at most `batch` events per call (default 1024).
    pub fn with_batch(mut self, batch: usize) -> Self {
        self.batch = batch.max(1);
        self
    }

    /// The position the next event will have.
    pub fn position(&self) -> u64 {
        self.next
    }

    /// The next events, waiting for an append when caught up. Never returns an empty batch.
    pub async fn next_batch(&mut self) -> Result<Vec<RecordedEvent>, LogError> {
        loop {
            let head = *self.head.borrow_and_update();
            if head >= self.next {
                let events = self.log.read_from(self.next, self.batch)?;
                if let Some(last) = events.last() {
                    debug_assert_eq!(events[0].position, self.next, "subscription skipped a position");
                    self.next = last.position + 1;
                    return Ok(events);
                }
            }
            self.head.changed().await.map_err(|_| LogError::Closed)?;
        }
    }
}
