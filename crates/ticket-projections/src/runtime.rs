//! The projector runtime: follows the log for every read model, applies each event once
//! (position-guarded), checkpoints, reports lag, rebuilds a projection beside the live one and
//! swaps it in once it has caught up, and lets queries wait for a position (read-your-writes).

use std::sync::{Arc, RwLock, RwLockReadGuard};
use std::time::Duration;

use ticket_domain::{RecordedEvent, TicketId};
use ticket_log::{EventLog, LogError};
use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::{Board, CheckpointError, Checkpoints, Compliance, Projected, Quarantine, ReadModel, Tickets, Timeline};

#[derive(Debug, Clone)]
pub struct ProjectorConfig {
    /// Events read from the log per batch.
    pub batch: usize,
    /// Checkpoint a projection once this much (real) time has passed since its last one...
    pub checkpoint_every: Duration,
    /// ...or once it has applied this many events since.
    pub checkpoint_events: u64,
}

impl Default for ProjectorConfig {
    fn default() -> Self {
        Self { batch: 1024, checkpoint_every: Duration::from_secs(30), checkpoint_events: 100_000 }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ProjectorError {
    #[error("the log failed: {0}")]
    Log(#[from] LogError),
    #[error("checkpoint of {name}: {source}")]
    Checkpoint { name: &'static str, source: CheckpointError },
    #[error("no projection is named {0:?} (tickets, board, timeline, compliance)")]
    UnknownProjection(String),
    #[error("the projector stopped")]
    Stopped,
}

/// One live projection: read by queries, written by the runtime, swapped by a rebuild.
#[derive(Debug)]
pub struct Shared<M> {
    inner: Arc<RwLock<Projected<M>>>,
    applied: watch::Sender<u64>,
}

impl<M> Clone for Shared<M> {
    fn clone(&self) -> Self {
        Self { inner: self.inner.clone(), applied: self.applied.clone() }
    }
}

impl<M: ReadModel> Shared<M> {
    fn new(projected: Projected<M>) -> Self {
        let position = projected.position();
        Self { inner: Arc::new(RwLock::new(projected)), applied: watch::Sender::new(position) }
    }

    /// The projection as it is now (hold the guard briefly: the runtime waits for it).
    pub fn read(&self) -> RwLockReadGuard<'_, Projected<M>> {
        self.inner.read().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn position(&self) -> u64 {
        *self.applied.borrow()
    }

    /// Waits until the projection has applied `position`; false at the deadline (or when the
    /// projector is gone).
    pub async fn wait_for(&self, position: u64, deadline: Duration) -> bool {
        let mut applied = self.applied.subscribe();
        matches!(tokio::time::timeout(deadline, applied.wait_for(|p| *p >= position)).await, Ok(Ok(_)))
    }

    fn apply(&self, events: &[RecordedEvent]) -> u64 {
        let mut guard = self.inner.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        let applied = events.iter().filter(|e| guard.apply(e)).count() as u64;
        let position = guard.position();
        drop(guard);
        self.applied.send_if_modified(|p| {
            let moved = *p != position;
            *p = position;
            moved
        });
        applied
    }

    fn save(&self, checkpoints: &Checkpoints) -> Result<u64, ProjectorError> {
        // The image is encoded under the read lock; the file is written after it is released.
        let guard = self.read();
        let position = guard.position();
        let bytes = crate::checkpoint::encode(&*guard)
            .map_err(|source| ProjectorError::Checkpoint { name: M::NAME, source })?;
        drop(guard);
        checkpoints.write(M::NAME, &bytes).map_err(|source| ProjectorError::Checkpoint { name: M::NAME, source })?;
        Ok(position)
    }

    /// Builds the projection anew from the log beside the live one, then swaps it in (the live
    /// one keeps serving until the new one has caught up with it) and checkpoints it. Returns
    /// the events applied.
    fn rebuild<L: EventLog>(
        &self,
        log: &L,
        batch: usize,
        progress: &mut dyn FnMut(u64, u64),
        checkpoints: Option<&Checkpoints>,
    ) -> Result<u64, ProjectorError> {
        let mut fresh = Projected::<M>::new();
        let mut applied = 0;
        // Most of the work without the lock...
        let head = log.head();
        crate::set::read_in_order(log, 1, head, batch, |events| {
            applied += events.iter().filter(|e| fresh.apply(e)).count() as u64;
            progress(fresh.position(), head);
            events
        })?;
        // ...the tail (what was appended meanwhile) under it, then the swap.
        let mut guard = self.inner.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        while fresh.position() < guard.position() || fresh.position() < log.head() {
            let events = log.read_from(fresh.position() + 1, batch)?;
            if events.is_empty() {
                break;
            }
            applied += events.iter().filter(|e| fresh.apply(e)).count() as u64;
        }
        *guard = fresh;
        let position = guard.position();
        drop(guard);
        self.applied.send_replace(position);
        if let Some(cp) = checkpoints {
            self.save(cp)?;
        }
        Ok(applied)
    }

    /// The projection itself, when nothing else holds it; else a copy.
    fn into_projected(self) -> Projected<M> {
        match Arc::try_unwrap(self.inner) {
            Ok(lock) => lock.into_inner().unwrap_or_else(std::sync::PoisonError::into_inner),
            Err(shared) => shared.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone(),
        }
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

/// The live read models, following a log.
#[derive(Debug)]
pub struct Projector<L> {
    log: L,
    checkpoints: Option<Checkpoints>,
    config: ProjectorConfig,
    pub tickets: Shared<Tickets>,
    pub board: Shared<Board>,
    pub timeline: Shared<Timeline>,
    pub compliance: Shared<Compliance>,
}

impl<L> Clone for Projector<L>
where
    L: Clone,
{
    fn clone(&self) -> Self {
        Self {
            log: self.log.clone(),
            checkpoints: self.checkpoints.clone(),
            config: self.config.clone(),
            tickets: self.tickets.clone(),
            board: self.board.clone(),
            timeline: self.timeline.clone(),
            compliance: self.compliance.clone(),
        }
    }
}

fn restore<M: ReadModel>(checkpoints: Option<&Checkpoints>, head: u64) -> Projected<M> {
    let Some(checkpoints) = checkpoints else { return Projected::new() };
    match checkpoints.load::<M>() {
        Ok(Some(p)) if p.position() <= head => {
            debug!(projection = M::NAME, position = p.position(), "projection restored from its checkpoint");
            p
        }
        Ok(Some(p)) => {
            warn!(projection = M::NAME, checkpoint = p.position(), head, "checkpoint is ahead of the log; rebuilding");
            Projected::new()
        }
        Ok(None) => Projected::new(),
        Err(e) => {
            warn!(projection = M::NAME, error = %e, "checkpoint unusable; rebuilding");
            Projected::new()
        }
    }
}

impl<L: EventLog> Projector<L> {
    /// The read models of `log`, restored from `checkpoints` where they are usable (else empty,
    /// to be caught up from the log by [`Projector::spawn`] or [`Projector::catch_up`]).
    pub fn open(log: L, checkpoints: Option<Checkpoints>, config: ProjectorConfig) -> Self {
        let head = log.head();
        let cp = checkpoints.as_ref();
        Self {
            tickets: Shared::new(restore(cp, head)),
            board: Shared::new(restore(cp, head)),
            timeline: Shared::new(restore(cp, head)),
            compliance: Shared::new(restore(cp, head)),
            log,
            checkpoints,
            config,
        }
    }

    pub fn log(&self) -> &L {
        &self.log
    }

    /// The lowest position every projection has applied.
    pub fn position(&self) -> u64 {
        self.lag().iter().map(|l| l.position).min().unwrap_or(0)
    }

    /// Tickets whose stored history does not fit, with the first event that does not.
    pub fn quarantined(&self) -> Vec<(TicketId, Quarantine)> {
        let tickets = self.tickets.read();
        tickets.model().quarantined().iter().map(|(id, q)| (*id, q.clone())).collect()
    }

    pub fn lag(&self) -> Vec<Lag> {
        let head = self.log.head();
        let lag = |name, position: u64| Lag { name, position, head, behind: head.saturating_sub(position) };
        vec![
            lag(Tickets::NAME, self.tickets.position()),
            lag(Board::NAME, self.board.position()),
            lag(Timeline::NAME, self.timeline.position()),
            lag(Compliance::NAME, self.compliance.position()),
        ]
    }

    /// Waits until every projection has applied `position`; false at the deadline.
    pub async fn wait_for(&self, position: u64, deadline: Duration) -> bool {
        let until = tokio::time::Instant::now() + deadline;
        let left = || until.saturating_duration_since(tokio::time::Instant::now());
        self.tickets.wait_for(position, left()).await
            && self.board.wait_for(position, left()).await
            && self.timeline.wait_for(position, left()).await
            && self.compliance.wait_for(position, left()).await
    }

    fn apply(&self, events: &[RecordedEvent]) -> u64 {
        self.tickets.apply(events);
        self.board.apply(events);
        self.timeline.apply(events);
        let applied = self.compliance.apply(events);
        self.lag().iter().for_each(|l| {
            metrics::gauge!("ticketd_projection_lag_positions", "projection" => l.name).set(l.behind as f64)
        });
        applied
    }

    /// Applies everything the log holds now, without following it; `progress(position, head)`
    /// after each batch. Returns the last position applied.
    pub fn catch_up(&self, mut progress: impl FnMut(u64, u64)) -> Result<u64, ProjectorError> {
        let mut next = self.position() + 1;
        let mut since_checkpoint = 0;
        loop {
            let head = self.log.head();
            let events = self.log.read_from(next, self.config.batch)?;
            let Some(last) = events.last().map(|e| e.position) else { break };
            self.apply(&events);
            since_checkpoint += events.len() as u64;
            next = last + 1;
            progress(last, head);
            if since_checkpoint >= self.config.checkpoint_events {
                self.checkpoint()?;
                since_checkpoint = 0;
            }
        }
        Ok(next - 1)
    }

    /// The read models themselves, for a one-shot reader (copies when a clone of this
    /// projector or a running follower still holds them).
    pub fn into_read_models(self) -> crate::ReadModels {
        crate::ReadModels {
            tickets: self.tickets.into_projected(),
            board: self.board.into_projected(),
            timeline: self.timeline.into_projected(),
            compliance: self.compliance.into_projected(),
        }
    }

    /// Writes every projection's checkpoint (nothing without a checkpoint directory).
    pub fn checkpoint(&self) -> Result<(), ProjectorError> {
        let Some(cp) = &self.checkpoints else { return Ok(()) };
        let positions =
            [self.tickets.save(cp)?, self.board.save(cp)?, self.timeline.save(cp)?, self.compliance.save(cp)?];
        debug!(?positions, "projections checkpointed");
        Ok(())
    }

    /// Rebuilds one projection from the log beside the live one and swaps it in (see
    /// [`Shared`]); `progress(position, head)` as it goes. Returns the events applied.
    pub fn rebuild(&self, name: &str, mut progress: impl FnMut(u64, u64)) -> Result<u64, ProjectorError> {
        let started = std::time::Instant::now();
        let batch = self.config.batch.max(4096);
        let (log, cp) = (&self.log, self.checkpoints.as_ref());
        let applied = match name {
            Tickets::NAME => self.tickets.rebuild(log, batch, &mut progress, cp)?,
            Board::NAME => self.board.rebuild(log, batch, &mut progress, cp)?,
            Timeline::NAME => self.timeline.rebuild(log, batch, &mut progress, cp)?,
            Compliance::NAME => self.compliance.rebuild(log, batch, &mut progress, cp)?,
            other => return Err(ProjectorError::UnknownProjection(other.to_owned())),
        };
        info!(
            projection = name,
            events = applied,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "projection rebuilt and swapped in"
        );
        Ok(applied)
    }

    /// Catches up with the log (on the blocking pool), then follows it until `shutdown` turns
    /// true (or its sender is dropped), checkpointing as configured and once more at the end.
    pub fn spawn(&self, mut shutdown: watch::Receiver<bool>) -> tokio::task::JoinHandle<Result<(), ProjectorError>> {
        let this = self.clone();
        tokio::spawn(async move {
            // What the log holds already (all of it without checkpoints: a long scan) is applied
            // on the blocking pool, so that the catch-up does not hold a worker commands need.
            let catcher = this.clone();
            match tokio::task::spawn_blocking(move || catcher.catch_up(|_, _| {})).await {
                Ok(Ok(position)) => debug!(position, "projections caught up with the log"),
                Ok(Err(e)) => {
                    warn!(error = %e, "the projector stopped catching up with the log");
                    return Err(e);
                }
                Err(_) => return Err(ProjectorError::Stopped),
            }
            let mut subscription = this.log.subscribe(this.position() + 1).with_batch(this.config.batch);
            let mut since = (0u64, tokio::time::Instant::now());
            loop {
                tokio::select! {
                    changed = shutdown.changed() => {
                        if changed.is_err() || *shutdown.borrow() {
                            break;
                        }
                    }
                    batch = subscription.next_batch() => {
                        let batch = match batch {
                            Ok(batch) => batch,
                            Err(LogError::Closed) => break,
                            Err(e) => {
                                warn!(error = %e, "the projector stopped following the log");
                                return Err(e.into());
                            }
                        };
                        this.apply(&batch);
                        since.0 += batch.len() as u64;
                        if this.checkpoints.is_some()
                            && (since.0 >= this.config.checkpoint_events
                                || (since.0 > 0 && since.1.elapsed() >= this.config.checkpoint_every))
                        {
                            let saver = this.clone();
                            match tokio::task::spawn_blocking(move || saver.checkpoint()).await {
                                Ok(Ok(())) => {
                                    for lag in this.lag() {
                                        info!(projection = lag.name, position = lag.position, behind = lag.behind, "projection checkpointed");
                                    }
                                }
                                Ok(Err(e)) => warn!(error = %e, "projection checkpoint not written"),
                                Err(e) => warn!(error = %e, "projection checkpoint task failed"),
                            }
                            since = (0, tokio::time::Instant::now());
                        }
                    }
                }
            }
            let saver = this.clone();
            tokio::task::spawn_blocking(move || saver.checkpoint()).await.map_err(|_| ProjectorError::Stopped)??;
            Ok(())
        })
    }
}
