//! The projector runtime: follows the log for every read model, applies each event once
//! (position-guarded), flushes what changed to the state store, reports lag, rebuilds a
//! projection, and lets queries wait for a position (read-your-writes).
//!
//! Durability (issue 13): each model keeps its rows in its own space of a
//! [`ticket_log::StateStore`]. A flush writes, per model, one atomic batch of the rows and
//! records changed since the last flush with the model's position and format, then syncs the
//! store once. Flushes are coalesced: every `flush_every` (200 ms) or `flush_events` (10,000
//! events) while following the log; during a catch-up or a rebuild, rows are written every
//! `catch_up_flush_events` (200,000) and made durable every `catch_up_sync_events` (1,000,000)
//! and at its end; and at a clean stop. After a kill, each model resumes from the position its space holds and the
//! catch-up replays only the tail of the log after it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use ticket_domain::{CustomerId, Policy, RecordedEvent, Ticket, TicketId};
use ticket_log::{EventLog, LogError, StateStore};
use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::answer::Views;
use crate::history::{History, LogHistory};
use crate::rows::StateError;
use crate::{Board, BoardEntry, Compliance, Period, Projected, Quarantine, ReadModel, Tally, Tickets};
use crate::{TimelineEntry, models::timeline};

#[derive(Debug, Clone)]
pub struct ProjectorConfig {
    /// Events read from the log per batch.
    pub batch: usize,
    /// Flush what changed once this much (real) time has passed since the first change not
    /// flushed...
    pub flush_every: Duration,
    /// ...or once this many events were applied since the last flush.
    pub flush_events: u64,
    /// A catch-up or a rebuild writes what changed to the store once this many events were
    /// applied since it last did: the resolved tickets' rows leave memory then, so this bounds
    /// its memory. Each write also rewrites every open ticket's changed row, so fewer, larger
    /// writes cost much less: at 10^7 events, 10,000 took 132 s and 250,000 took 80 s.
    pub catch_up_flush_events: u64,
    /// ...and makes it durable (one fsync, a commit of the whole store) once this many were
    /// applied since it last did, and at its end: a kill during a catch-up replays at most this
    /// many events.
    pub catch_up_sync_events: u64,
    /// A batch of at least this many events (a catch-up's) is applied to the models on threads
    /// of their own, side by side; a smaller one (the follower's) on the caller's thread.
    pub parallel_batch: usize,
}

impl Default for ProjectorConfig {
    fn default() -> Self {
        Self {
            batch: 1024,
            flush_every: Duration::from_millis(200),
            flush_events: 10_000,
            catch_up_flush_events: 200_000,
            catch_up_sync_events: 1_000_000,
            parallel_batch: 256,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ProjectorError {
    #[error("the log failed: {0}")]
    Log(#[from] LogError),
    #[error("the state of {name}: {source}")]
    State { name: &'static str, source: StateError },
    #[error("no projection is named {0:?} (tickets, board, timeline, compliance)")]
    UnknownProjection(String),
    #[error("the projector stopped")]
    Stopped,
}

/// One live projection: read by queries, written by the runtime, rebuilt in place.
#[derive(Debug)]
pub struct Shared<M> {
    inner: Arc<RwLock<Projected<M>>>,
    applied: watch::Sender<u64>,
    /// A rebuild owns the projection: the follower leaves it alone.
    rebuilding: Arc<AtomicBool>,
    /// The projection applies nothing more until it is rebuilt: it stopped on a stored row it
    /// could not read, or a rebuild of it failed (see `failed_rebuild`). Queries of it answer
    /// why ([`Shared::answerable`]); read-your-writes does not wait for it.
    halted: Arc<AtomicBool>,
    /// Why the last rebuild failed, if it did: the projection holds what it had folded by then.
    failed_rebuild: Arc<std::sync::Mutex<Option<String>>>,
}

impl<M> Clone for Shared<M> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            applied: self.applied.clone(),
            rebuilding: self.rebuilding.clone(),
            halted: self.halted.clone(),
            failed_rebuild: self.failed_rebuild.clone(),
        }
    }
}

impl<M: ReadModel> Shared<M> {
    fn new(projected: Projected<M>) -> Self {
        let position = projected.position();
        Self {
            inner: Arc::new(RwLock::new(projected)),
            applied: watch::Sender::new(position),
            rebuilding: Arc::new(AtomicBool::new(false)),
            halted: Arc::new(AtomicBool::new(false)),
            failed_rebuild: Arc::new(std::sync::Mutex::new(None)),
        }
    }

    /// The projection as it is now (hold the guard briefly: the runtime waits for it).
    pub fn read(&self) -> RwLockReadGuard<'_, Projected<M>> {
        self.inner.read().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, Projected<M>> {
        self.inner.write().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn position(&self) -> u64 {
        *self.applied.borrow()
    }

    /// The position applied, unless the projection is halted (see [`Shared::halted`]): it
    /// applies nothing more, so nothing waits for it.
    fn going(&self) -> Option<u64> {
        (!self.halted.load(Ordering::Acquire)).then(|| self.position())
    }

    /// Waits until the projection has applied `position`, or is halted (it stopped on a stored
    /// row it could not read, or its rebuild failed: it applies nothing more, and a query of it
    /// answers why, see [`Shared::answerable`]); false at the deadline (or when the projector
    /// is gone).
    pub async fn wait_for(&self, position: u64, deadline: Duration) -> bool {
        let mut applied = self.applied.subscribe();
        let done = |p: &u64| *p >= position || self.halted.load(Ordering::Acquire);
        matches!(tokio::time::timeout(deadline, applied.wait_for(done)).await, Ok(Ok(_)))
    }

    /// A rebuild failed with `e`: unless it stopped for a shutdown, the projection is halted
    /// with the error (see [`Shared::answerable`]). It holds a fold of the log up to where the
    /// rebuild stopped, which the follower must not continue past the gap (a rebuild owns it
    /// still), until a rebuild succeeds.
    fn rebuild_failed(&self, e: &ProjectorError) {
        if matches!(e, ProjectorError::Stopped) {
            return;
        }
        *self.failed_rebuild.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(e.to_string());
        self.halt();
    }

    /// The projection applies nothing more; whoever waits for a later position stops waiting.
    fn halt(&self) {
        self.halted.store(true, Ordering::Release);
        self.applied.send_modify(|_| {});
    }

    /// The projection, unless it is halted: then the error a query answers (its answers would
    /// silently leave out everything since).
    fn answerable(&self) -> Result<RwLockReadGuard<'_, Projected<M>>, LogError> {
        let projected = self.read();
        if !self.halted.load(Ordering::Acquire) {
            return Ok(projected);
        }
        let failed = self.failed_rebuild.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
        let why = match (projected.unreadable(), failed) {
            (Some(problem), _) => format!("stopped on a stored row it could not read ({problem})"),
            (None, Some(failed)) => format!("holds what its failed rebuild had folded ({failed})"),
            (None, None) => "applies nothing more".to_owned(),
        };
        Err(LogError::Storage(format!(
            "the {} read model {why} at position {}; an operator rebuilds it (tickets.admin.rebuild)",
            M::NAME,
            projected.position()
        )))
    }

    fn publish(&self, position: u64) {
        self.applied.send_if_modified(|p| {
            let moved = *p != position;
            *p = position;
            moved
        });
    }

    /// Applies `events` (unless a rebuild owns the projection).
    fn apply(&self, events: &[RecordedEvent]) -> u64 {
        if self.rebuilding.load(Ordering::Acquire) {
            return 0;
        }
        let mut guard = self.write();
        if self.rebuilding.load(Ordering::Acquire) {
            return 0;
        }
        let applied = events.iter().filter(|e| guard.apply(e)).count() as u64;
        let position = guard.position();
        let stopped = guard.unreadable().is_some();
        drop(guard);
        self.publish(position);
        if stopped {
            self.halt();
        }
        applied
    }

    /// Writes what changed to the space (durable at the store's next sync).
    pub(crate) fn flush(&self) -> Result<(), ProjectorError> {
        self.write().flush().map_err(|source| ProjectorError::State { name: M::NAME, source })
    }

    fn unflushed(&self) -> bool {
        self.read().unflushed()
    }

    /// Rebuilds the projection in place: under the lock, clears it (and its space); then
    /// applies the log batch by batch, each under the lock, writing every `catch_up_flush_events`;
    /// the follower leaves it alone meanwhile. Queries see it lagging (from position 0 up) while
    /// it rebuilds, and read-your-writes waits for it. Simpler than building beside the live
    /// one in a second space, and memory stays bounded (the old model is not kept). Stops
    /// between batches when `stop()` turns true, flushing what it applied (a restart resumes
    /// from there). Returns the events applied.
    ///
    /// A rebuild that fails (but for a shutdown) leaves the projection halted with the error:
    /// see [`Shared::rebuild_failed`].
    fn rebuild<L: EventLog>(
        &self,
        log: &L,
        config: &ProjectorConfig,
        progress: &mut dyn FnMut(u64, u64),
        stop: &dyn Fn() -> bool,
        store: Option<&Arc<dyn StateStore>>,
    ) -> Result<u64, ProjectorError> {
        let state = |source| ProjectorError::State { name: M::NAME, source };
        if stop() {
            return Err(ProjectorError::Stopped);
        }
        self.rebuilding.store(true, Ordering::Release);
        {
            let mut cleared = self.write();
            cleared.clear().map_err(state)?;
            *self.failed_rebuild.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = None;
            self.halted.store(false, Ordering::Release);
        }
        self.applied.send_replace(0);
        let batch = config.batch.max(1);
        let mut applied = 0u64;
        let mut since_flush = 0u64;
        let mut apply = |events: &[RecordedEvent]| -> Result<(), ProjectorError> {
            let mut guard = self.write();
            applied += events.iter().filter(|e| guard.apply(e)).count() as u64;
            // Stopped on a stored row it could not read: it applies nothing more (the same
            // events would be read again and again).
            if let Some(problem) = guard.unreadable() {
                let problem = format!("stopped on a stored row it could not read: {problem}");
                return Err(state(StateError::Store(LogError::Storage(problem))));
            }
            since_flush += events.len() as u64;
            if since_flush >= config.catch_up_flush_events {
                guard.flush().map_err(state)?;
                since_flush = 0;
            }
            let position = guard.position();
            drop(guard);
            self.publish(position);
            Ok(())
        };
        // Most of the log read on several threads...
        let head = log.head();
        let mut failed = Ok(());
        crate::set::read_in_order(log, 1, head, batch, |events| {
            failed = apply(&events);
            if let Some(last) = events.last() {
                progress(last.position, head);
            }
            let go_on = failed.is_ok() && !stop();
            (events, go_on)
        })?;
        failed?;
        // ...then the tail, until the log has nothing more: then the follower takes over, under
        // the lock (it applies what comes after, and skips what the rebuild applied).
        loop {
            if stop() {
                self.write().flush().map_err(state)?;
                if let Some(store) = store {
                    store.sync()?;
                }
                return Err(ProjectorError::Stopped);
            }
            let next = self.read().position() + 1;
            let events = log.read_from(next, batch)?;
            if events.is_empty() {
                let mut guard = self.write();
                if log.read_from(next, 1)?.is_empty() {
                    guard.flush().map_err(state)?;
                    self.rebuilding.store(false, Ordering::Release);
                    break;
                }
                continue;
            }
            apply(&events)?;
            progress(next + events.len() as u64 - 1, log.head());
        }
        if let Some(store) = store {
            store.sync()?;
        }
        Ok(applied)
    }
}

/// How far a projection is behind the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Lag {
    pub name: &'static str,
    pub position: u64,
    pub head: u64,
    /// Positions not yet applied.
    pub behind: u64,
}

/// The live read models, following a log, kept in a state store (or in memory without one).
#[derive(Debug)]
pub struct Projector<L> {
    log: L,
    store: Option<Arc<dyn StateStore>>,
    config: ProjectorConfig,
    /// Set when the follower of [`Projector::spawn`] is told to stop: a rebuild running beside
    /// it stops between batches too.
    stopping: Arc<AtomicBool>,
    pub tickets: Shared<Tickets>,
    pub board: Shared<Board>,
    pub compliance: Shared<Compliance>,
}

impl<L> Clone for Projector<L>
where
    L: Clone,
{
    fn clone(&self) -> Self {
        Self {
            log: self.log.clone(),
            store: self.store.clone(),
            config: self.config.clone(),
            stopping: self.stopping.clone(),
            tickets: self.tickets.clone(),
            board: self.board.clone(),
            compliance: self.compliance.clone(),
        }
    }
}

fn restore<M: ReadModel>(store: Option<&Arc<dyn StateStore>>, head: u64, history: Arc<dyn History>) -> Projected<M> {
    let mut projected = match store.map(|store| store.space(M::NAME)) {
        None => Projected::new(),
        Some(Ok(space)) => Projected::open(space, head),
        Some(Err(e)) => {
            warn!(projection = M::NAME, error = %e, "the state store has no space for the projection; kept in memory");
            Projected::new()
        }
    };
    projected.set_history(history);
    projected
}

impl<L: EventLog> Projector<L> {
    /// The read models of `log`, resumed from `store` where it holds them (else empty, to be
    /// caught up from the log by [`Projector::spawn`] or [`Projector::catch_up`]). Without a
    /// store they live in memory. Blocking: it loads the live rows.
    pub fn open(log: L, store: Option<Arc<dyn StateStore>>, config: ProjectorConfig) -> Self {
        let head = log.head();
        let st = store.as_ref();
        let history: Arc<dyn History> = Arc::new(LogHistory(log.clone()));
        Self {
            tickets: Shared::new(restore(st, head, history.clone())),
            board: Shared::new(restore(st, head, history.clone())),
            compliance: Shared::new(restore(st, head, history)),
            log,
            store,
            config,
            stopping: Arc::new(AtomicBool::new(false)),
        }
    }

    pub fn log(&self) -> &L {
        &self.log
    }

    /// The lowest position every projection has applied, of those that go on (one stopped on
    /// a stored row it could not read keeps its own position, and the others go on from theirs).
    pub fn position(&self) -> u64 {
        [self.tickets.going(), self.board.going(), self.compliance.going()]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or_else(|| self.log.head())
    }

    /// Tickets whose stored history does not fit, with the first event that does not.
    pub fn quarantined(&self) -> Vec<(TicketId, Quarantine)> {
        let tickets = self.tickets.read();
        tickets.model().quarantined().iter().map(|(id, q)| (*id, q.clone())).collect()
    }

    /// Rows held in memory by tickets, board and compliance (the open tickets' with a store).
    pub fn live_rows(&self) -> [usize; 3] {
        [
            self.tickets.read().model().live_rows(),
            self.board.read().model().live_rows(),
            self.compliance.read().model().live_rows(),
        ]
    }

    pub fn lag(&self) -> Vec<Lag> {
        let head = self.log.head();
        let lag = |name, position: u64| Lag { name, position, head, behind: head.saturating_sub(position) };
        vec![
            lag(Tickets::NAME, self.tickets.position()),
            lag(Board::NAME, self.board.position()),
            // Served from the log, as of every model's position.
            lag(timeline::NAME, self.position()),
            lag(Compliance::NAME, self.compliance.position()),
        ]
    }

    /// Waits until every projection has applied `position` (or stopped, see
    /// [`Shared::wait_for`]); false at the deadline.
    pub async fn wait_for(&self, position: u64, deadline: Duration) -> bool {
        let until = tokio::time::Instant::now() + deadline;
        let left = || until.saturating_duration_since(tokio::time::Instant::now());
        self.tickets.wait_for(position, left()).await
            && self.board.wait_for(position, left()).await
            && self.compliance.wait_for(position, left()).await
    }

    fn apply(&self, events: &[RecordedEvent]) -> u64 {
        // The models are independent: a large batch (a catch-up's) is applied to board and
        // compliance on threads of their own beside the tickets model, each under its own lock.
        let applied = if events.len() >= self.config.parallel_batch {
            std::thread::scope(|scope| {
                let board = scope.spawn(|| self.board.apply(events));
                let compliance = scope.spawn(|| self.compliance.apply(events));
                self.tickets.apply(events);
                let rethrow = |panicked| std::panic::resume_unwind(panicked);
                board.join().unwrap_or_else(rethrow);
                compliance.join().unwrap_or_else(rethrow)
            })
        } else {
            self.tickets.apply(events);
            self.board.apply(events);
            self.compliance.apply(events)
        };
        self.lag().iter().for_each(|l| {
            metrics::gauge!("ticketd_projection_lag_positions", "projection" => l.name).set(l.behind as f64)
        });
        applied
    }

    /// Applies everything the log holds now, without following it; `progress(position, head)`
    /// after each batch. Returns the last position applied.
    pub fn catch_up(&self, progress: impl FnMut(u64, u64)) -> Result<u64, ProjectorError> {
        self.catch_up_until(progress, &|| false)
    }

    /// [`Projector::catch_up`] that stops between batches once `stop()` turns true, flushing
    /// what it applied; writes every `catch_up_flush_events` and syncs every `catch_up_sync_events` events on the way, so a kill keeps the
    /// progress (the rest is left to the caller's [`Projector::flush`] or the follower's rhythm).
    pub fn catch_up_until(
        &self,
        mut progress: impl FnMut(u64, u64),
        stop: &dyn Fn() -> bool,
    ) -> Result<u64, ProjectorError> {
        let started = std::time::Instant::now();
        let from = self.position() + 1;
        let (mut since_write, mut since_sync) = (0u64, 0u64);
        // Rows written since the last sync: not durable until the next one.
        let mut unsynced = false;
        let mut read = 0u64;
        let mut failed = Ok(());
        let mut step = |events: &[RecordedEvent], head: u64| -> Result<(), ProjectorError> {
            self.apply(events);
            read += events.len() as u64;
            since_write += events.len() as u64;
            since_sync += events.len() as u64;
            if let Some(last) = events.last() {
                progress(last.position, head);
            }
            if since_sync >= self.config.catch_up_sync_events {
                self.flush()?;
                (since_write, since_sync, unsynced) = (0, 0, false);
            } else if since_write >= self.config.catch_up_flush_events {
                self.write_rows()?;
                (since_write, unsynced) = (0, true);
            }
            Ok(())
        };
        // The bulk on several threads, then the tail.
        let head = self.log.head();
        crate::set::read_in_order(&self.log, from, head, self.config.batch.max(1), |events| {
            failed = step(&events, head);
            let go_on = failed.is_ok() && !stop();
            (events, go_on)
        })?;
        failed?;
        while !stop() {
            let head = self.log.head();
            let events = self.log.read_from(self.position() + 1, self.config.batch)?;
            if events.is_empty() {
                break;
            }
            step(&events, head)?;
        }
        // What is left is flushed by the follower's rhythm (or the caller); a stop flushes now,
        // and so does a catch-up that wrote rows it did not make durable yet.
        let stopped = stop();
        if stopped || unsynced {
            self.flush()?;
        }
        let position = self.position();
        if stopped {
            info!(
                from = from - 1,
                position,
                head = self.log.head(),
                events = read,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "projections stopped catching up (shutdown); what they applied is flushed"
            );
        } else if read > 0 {
            info!(
                from = from - 1,
                position,
                events = read,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "projections caught up with the log"
            );
        }
        Ok(position)
    }

    /// Changes applied and not yet flushed.
    pub fn unflushed(&self) -> bool {
        self.tickets.unflushed() || self.board.unflushed() || self.compliance.unflushed()
    }

    /// Writes what changed in every projection to the state store and syncs it once (nothing
    /// without a store). Blocking I/O.
    pub fn flush(&self) -> Result<(), ProjectorError> {
        let Some(store) = &self.store else { return Ok(()) };
        self.write_rows()?;
        store.sync()?;
        debug!(position = self.position(), "projections flushed");
        Ok(())
    }

    /// Writes what changed in every projection to the state store, durable at its next sync.
    fn write_rows(&self) -> Result<(), ProjectorError> {
        if self.store.is_none() {
            return Ok(());
        }
        // Each model encodes its changed rows on its own thread (the store applies one batch
        // at a time).
        std::thread::scope(|scope| {
            let board = scope.spawn(|| self.board.flush());
            let compliance = scope.spawn(|| self.compliance.flush());
            let tickets = self.tickets.flush();
            let rethrow = |panicked| std::panic::resume_unwind(panicked);
            tickets.and(board.join().unwrap_or_else(rethrow)).and(compliance.join().unwrap_or_else(rethrow))
        })
    }

    /// Rebuilds one projection from the log, in place (see [`Shared`]'s `rebuild`);
    /// `progress(position, head)` as it goes. Returns the events applied. The timeline has no
    /// model to rebuild (it is read from the log): 0. Stops between batches
    /// ([`ProjectorError::Stopped`]) once the follower of [`Projector::spawn`] is told to stop.
    pub fn rebuild(&self, name: &str, progress: impl FnMut(u64, u64)) -> Result<u64, ProjectorError> {
        let stopping = self.stopping.clone();
        self.rebuild_until(name, progress, &|| stopping.load(Ordering::Acquire))
    }

    /// [`Projector::rebuild`] that stops between batches once `stop()` turns true
    /// ([`ProjectorError::Stopped`], what it applied flushed).
    pub fn rebuild_until(
        &self,
        name: &str,
        mut progress: impl FnMut(u64, u64),
        stop: &dyn Fn() -> bool,
    ) -> Result<u64, ProjectorError> {
        let started = std::time::Instant::now();
        let (log, config, store) = (&self.log, &self.config, self.store.as_ref());
        let applied = match name {
            Tickets::NAME => self
                .tickets
                .rebuild(log, config, &mut progress, stop, store)
                .inspect_err(|e| self.tickets.rebuild_failed(e))?,
            Board::NAME => self
                .board
                .rebuild(log, config, &mut progress, stop, store)
                .inspect_err(|e| self.board.rebuild_failed(e))?,
            Compliance::NAME => self
                .compliance
                .rebuild(log, config, &mut progress, stop, store)
                .inspect_err(|e| self.compliance.rebuild_failed(e))?,
            timeline::NAME => 0,
            other => return Err(ProjectorError::UnknownProjection(other.to_owned())),
        };
        info!(
            projection = name,
            events = applied,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "projection rebuilt"
        );
        Ok(applied)
    }

    /// Catches up with the log (on the blocking pool), then follows it until `shutdown` turns
    /// true (or its sender is dropped), flushing as configured and once more at the end. The
    /// catch-up stops between batches when `shutdown` turns true.
    pub fn spawn(&self, mut shutdown: watch::Receiver<bool>) -> tokio::task::JoinHandle<Result<(), ProjectorError>>
    where
        L: Clone + 'static,
    {
        let this = self.clone();
        tokio::spawn(async move {
            // What the log holds already (all of it with an empty store: a long scan) is applied
            // on the blocking pool, so that the catch-up does not hold a worker commands need.
            let catcher = this.clone();
            let watching = shutdown.clone();
            let caught_up = tokio::task::spawn_blocking(move || {
                let stop = || {
                    let stop = *watching.borrow() || watching.has_changed().is_err();
                    if stop {
                        catcher.stopping.store(true, Ordering::Release);
                    }
                    stop
                };
                catcher.catch_up_until(|_, _| {}, &stop)
            });
            match caught_up.await {
                Ok(Ok(position)) => debug!(position, "projections caught up with the log"),
                Ok(Err(e)) => {
                    warn!(error = %e, "the projector stopped catching up with the log");
                    return Err(e);
                }
                Err(_) => return Err(ProjectorError::Stopped),
            }
            if *shutdown.borrow() {
                // Told to stop once the catch-up had ended: stopped all the same (a rebuild beside
                // it stops too), with what it applied flushed.
                this.stopping.store(true, Ordering::Release);
                let flusher = this.clone();
                return tokio::task::spawn_blocking(move || flusher.flush())
                    .await
                    .map_err(|_| ProjectorError::Stopped)?;
            }
            let mut subscription = this.log.subscribe(this.position() + 1).with_batch(this.config.batch);
            // Events applied since the last flush, and when the first of them was.
            let mut since: (u64, Option<tokio::time::Instant>) = (0, this.unflushed().then(tokio::time::Instant::now));
            loop {
                let flush_at = since.1.map(|first| first + this.config.flush_every);
                let due = async {
                    match flush_at {
                        Some(at) => tokio::time::sleep_until(at).await,
                        None => std::future::pending().await,
                    }
                };
                let flush = tokio::select! {
                    changed = shutdown.changed() => {
                        if changed.is_err() || *shutdown.borrow() {
                            this.stopping.store(true, Ordering::Release);
                            break;
                        }
                        false
                    }
                    () = due => true,
                    batch = subscription.next_batch() => {
                        let batch = match batch {
                            Ok(batch) => batch,
                            Err(LogError::Closed) => {
                                this.stopping.store(true, Ordering::Release);
                                break;
                            }
                            Err(e) => {
                                warn!(error = %e, "the projector stopped following the log");
                                return Err(e.into());
                            }
                        };
                        this.apply(&batch);
                        since.0 += batch.len() as u64;
                        since.1.get_or_insert_with(tokio::time::Instant::now);
                        since.0 >= this.config.flush_events
                    }
                };
                if flush && this.store.is_some() {
                    let flusher = this.clone();
                    match tokio::task::spawn_blocking(move || flusher.flush()).await {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => warn!(error = %e, "projections not flushed"),
                        Err(e) => warn!(error = %e, "projection flush task failed"),
                    }
                    since = (0, None);
                }
            }
            let flusher = this.clone();
            tokio::task::spawn_blocking(move || flusher.flush()).await.map_err(|_| ProjectorError::Stopped)??;
            Ok(())
        })
    }
}

impl<L: EventLog> Views for Projector<L> {
    fn ticket(&self, id: TicketId) -> Result<(Option<Ticket>, u64), LogError> {
        let tickets = self.tickets.answerable()?;
        let position = tickets.position();
        Ok((tickets.model().ticket(id, position)?, position))
    }

    fn customer(
        &self,
        customer: &CustomerId,
        include_resolved: bool,
        limit: usize,
    ) -> Result<(Vec<Ticket>, u64), LogError> {
        let tickets = self.tickets.answerable()?;
        let position = tickets.position();
        Ok((tickets.model().customer(customer, include_resolved, limit, position)?, position))
    }

    fn board(&self, limit: usize) -> Result<(Vec<BoardEntry>, u64), LogError> {
        let board = self.board.answerable()?;
        Ok((board.model().entries(limit), board.position()))
    }

    fn timeline<E: EventLog>(&self, id: TicketId, log: &E) -> Result<(Vec<TimelineEntry>, u64), LogError> {
        let position = self.position();
        Ok((timeline::read_timeline(log, id, |e| e.position <= position)?, position))
    }

    fn tally(&self, period: Period, policy: &Policy) -> Result<(Tally, u64), LogError> {
        let compliance = self.compliance.answerable()?;
        Ok((compliance.model().tally(period, policy)?, compliance.position()))
    }
}
