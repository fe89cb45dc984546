//! The read side the API serves today: an in-memory view that follows the log (catching up from
//! position 1, then live) and answers "one ticket", "a customer's tickets" and "the SLA board"
//! as of the position it has applied. The read-model issue replaces it with checkpointed
//! projections; the queries stay.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, RwLock};

use ticket_domain::{CustomerId, Metric, Status, TicketId, TicketState, Timestamp, evolve};
use ticket_log::EventLog;
use tokio::sync::watch;
use tracing::warn;

#[derive(Debug, Default)]
struct Inner {
    tickets: HashMap<TicketId, TicketState>,
    by_customer: BTreeMap<CustomerId, BTreeSet<TicketId>>,
}

/// A shared, live view of every ticket. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Views {
    inner: Arc<RwLock<Inner>>,
    position: watch::Receiver<u64>,
}

/// One entry of the SLA board: an open ticket's nearest due instant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BoardEntry {
    pub ticket_id: TicketId,
    pub metric: Metric,
    pub cycle: u32,
    pub due_at: Timestamp,
    /// A warning was recorded for this clock's cycle.
    pub at_risk: bool,
    pub breached: bool,
}

impl Views {
    /// Starts following `log`; the view catches up in the background.
    pub fn follow<L: EventLog>(log: &L) -> Self {
        let inner: Arc<RwLock<Inner>> = Arc::default();
        let (applied, position) = watch::channel(0);
        let mut subscription = log.subscribe(1);
        let writer = inner.clone();
        tokio::spawn(async move {
            loop {
                let batch = match subscription.next_batch().await {
                    Ok(batch) => batch,
                    Err(e) => {
                        warn!(error = %e, "the query view stopped following the log");
                        return;
                    }
                };
                let Some(last) = batch.last().map(|e| e.position) else { continue };
                {
                    let mut inner = writer.write().unwrap_or_else(std::sync::PoisonError::into_inner);
                    for recorded in batch {
                        let id = recorded.event.ticket_id;
                        let state = inner.tickets.remove(&id).unwrap_or_default();
                        let state = evolve(state, &recorded.event);
                        if let Some(t) = state.ticket() {
                            inner.by_customer.entry(t.customer.clone()).or_default().insert(id);
                        }
                        inner.tickets.insert(id, state);
                    }
                }
                applied.send_replace(last);
            }
        });
        Self { inner, position }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The last position the view has applied.
    pub fn position(&self) -> u64 {
        *self.position.borrow()
    }

    /// Waits until the view has applied `position`; false at the deadline.
    pub async fn wait_for(&self, position: u64, deadline: std::time::Duration) -> bool {
        let mut watch = self.position.clone();
        matches!(tokio::time::timeout(deadline, watch.wait_for(|p| *p >= position)).await, Ok(Ok(_)))
    }

    pub fn ticket(&self, id: TicketId) -> Option<TicketState> {
        self.read().tickets.get(&id).cloned()
    }

    /// A customer's tickets, open ones first by opening instant; resolved ones only if asked.
    pub fn customer_tickets(&self, customer: &CustomerId, include_resolved: bool, limit: usize) -> Vec<TicketState> {
        let inner = self.read();
        let mut tickets: Vec<&TicketState> = inner
            .by_customer
            .get(customer)
            .into_iter()
            .flatten()
            .filter_map(|id| inner.tickets.get(id))
            .filter(|s| include_resolved || s.ticket().is_some_and(|t| t.status != Status::Resolved))
            .collect();
        tickets.sort_by_key(|s| s.ticket().map(|t| (t.status == Status::Resolved, t.opened_at)));
        tickets.into_iter().take(limit).cloned().collect()
    }

    /// Open tickets by their nearest due instant, soonest (or most overdue) first.
    pub fn board(&self, limit: usize) -> Vec<(BoardEntry, TicketState)> {
        let inner = self.read();
        let mut entries: Vec<(BoardEntry, &TicketState)> = inner
            .tickets
            .iter()
            .filter_map(|(id, state)| {
                let t = state.ticket().filter(|t| t.status != Status::Resolved)?;
                let clock = t.clocks.values().filter(|c| c.due_at().is_some()).min_by_key(|c| c.due_at())?;
                let entry = BoardEntry {
                    ticket_id: *id,
                    metric: clock.metric,
                    cycle: clock.cycle,
                    due_at: clock.due_at()?,
                    at_risk: !clock.warned.is_empty(),
                    breached: clock.breached,
                };
                Some((entry, state))
            })
            .collect();
        entries.sort_by_key(|(e, _)| (e.due_at, e.ticket_id));
        entries.into_iter().take(limit).map(|(e, s)| (e, s.clone())).collect()
    }
}
