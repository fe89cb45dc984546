//! The timer service: keeps the deadline index caught up with the log and fires what is due by
//! issuing commands to the command service.
//!
//! - At start the index is read from its checkpoint and caught up from the log, or rebuilt from
//!   the log when the checkpoint is missing, unreadable or ahead of the log.
//! - Every firing due by the clock's current instant is issued as a command with its
//!   deterministic id, stamped by the service's clock under the ticket's lock. A firing detected
//!   late (the timer was down) records the original due instant in the event and the instant of
//!   detection as the event's own instant.
//! - A recorded firing, a repeated one (another timer got there first) and a moot one (the
//!   Decider refused it: the agent responded a moment before) leave the index. Storage failures
//!   and refusals that may pass (a clock behind the ticket's) are retried with backoff.
//! - The scheduler waits for whichever comes first: the next firing's instant on the clock, new
//!   events in the log, a command finishing, a retry, or shutdown.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ticket_domain::{ActorId, ErrorKind, Timestamp};
use ticket_log::{EventLog, LogError};
use ticket_service::{
    Clock, CommandRequest, CommandResult, CommandService, ServiceError, ServiceErrorKind, SimulatedClock, Stamp,
};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::{debug, error, info, warn};

use crate::{CheckpointError, DeadlineIndex, Firing, FiringKind};

#[derive(Debug, Clone)]
pub struct TimerConfig {
    /// The system actor the firings are recorded as.
    pub actor: ActorId,
    /// Commands issued and not yet answered, at most.
    pub max_in_flight: usize,
    /// Events read from the log per round while catching up.
    pub read_batch: usize,
    /// How often (real time) the index is checkpointed while it changes.
    pub checkpoint_every: Duration,
    /// The first wait before a failed firing is issued again; it doubles up to `max_backoff`.
    pub backoff: Duration,
    pub max_backoff: Duration,
    /// A firing refused for a reason that may pass is dropped after this many attempts.
    pub max_attempts: u32,
    /// How long (on the clock) after a ticket's last imported event its breaches past at import
    /// wait before they are recorded: the rest of the ticket's history may still be coming, and
    /// an event at the import's instant would refuse it (time order per ticket).
    pub import_quiet: chrono::TimeDelta,
}

impl TimerConfig {
    pub fn new(actor: ActorId) -> Self {
        Self {
            actor,
            max_in_flight: 512,
            read_batch: 4096,
            checkpoint_every: Duration::from_secs(30),
            backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(5),
            max_attempts: 8,
            import_quiet: chrono::TimeDelta::seconds(60),
        }
    }
}

/// The checkpoint file: written to a temporary file, synced, renamed over the old one.
#[derive(Debug, Clone)]
pub struct CheckpointFile {
    path: PathBuf,
}

impl CheckpointFile {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The stored index; `Ok(None)` when there is none, `Err` when it is unusable.
    pub fn load(&self) -> Result<Option<DeadlineIndex>, CheckpointError> {
        match std::fs::read(&self.path) {
            Ok(bytes) => crate::checkpoint::decode(&bytes).map(Some),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(_) => Err(CheckpointError::Format),
        }
    }

    pub fn save(&self, index: &DeadlineIndex) -> std::io::Result<()> {
        ticket_log::durable::write_file(&self.path, &crate::checkpoint::encode(index))
    }
}

/// What the scheduler reports after each round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// The last log position applied to the index.
    pub position: u64,
    /// The clock's instant at the start of the round.
    pub now: Timestamp,
    /// The earliest pending firing.
    pub next_at: Option<Timestamp>,
    /// Pending firings in the index.
    pub pending: usize,
    /// Nothing is due, nothing is in flight or waiting for a retry, and the index had caught up
    /// with the log.
    pub idle: bool,
    /// Firings recorded by this timer.
    pub fired: u64,
    /// Firings another timer (or an earlier run) had already recorded.
    pub repeated: u64,
    /// Firings the Decider refused as moot.
    pub moot: u64,
    /// Firings given up after refusals.
    pub dropped: u64,
}

impl Progress {
    /// True when everything due at or before `until` has been handled and the index reflects at
    /// least `position`: nothing more happens until the clock passes `until` or the log grows.
    pub fn settled(&self, until: Timestamp, position: u64) -> bool {
        self.idle && self.position >= position && self.next_at.is_none_or(|next| next > until)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TimerError {
    #[error("the log failed while the timer read it: {0}")]
    Log(#[from] LogError),
    #[error("the timer's task was cancelled")]
    Cancelled,
}

/// Called with each firing this timer recorded and the instant its command was acknowledged.
pub type FiredHook = Arc<dyn Fn(&Firing, Timestamp) + Send + Sync>;

pub struct Timer<L> {
    service: CommandService<L>,
    checkpoint: Option<CheckpointFile>,
    config: TimerConfig,
    on_fired: Option<FiredHook>,
}

impl<L> std::fmt::Debug for Timer<L> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Timer")
            .field("checkpoint", &self.checkpoint)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl<L: EventLog> Timer<L> {
    /// A timer issuing commands to `service`, on the service's clock.
    pub fn new(service: CommandService<L>, checkpoint: Option<CheckpointFile>, config: TimerConfig) -> Self {
        Self { service, checkpoint, config, on_fired: None }
    }

    pub fn on_fired(mut self, hook: FiredHook) -> Self {
        self.on_fired = Some(hook);
        self
    }

    /// Starts the scheduler; it runs until `shutdown` turns true (or its sender is dropped), then
    /// checkpoints the index.
    pub fn spawn(self, shutdown: watch::Receiver<bool>) -> TimerHandle {
        let (progress_tx, progress) = watch::channel(Progress {
            position: 0,
            now: self.service.clock().now(),
            next_at: None,
            pending: 0,
            idle: false,
            fired: 0,
            repeated: 0,
            moot: 0,
            dropped: 0,
        });
        let task = tokio::spawn(self.run(shutdown, progress_tx));
        TimerHandle { progress, task }
    }

    /// The index as of the log's head: from the checkpoint plus the events after it, or from the
    /// whole log. Also used by operators and the benchmark. Blocking (file and log reads, a full
    /// replay without a checkpoint): the scheduler runs it on the blocking pool.
    pub fn load_index(&self) -> Result<DeadlineIndex, TimerError> {
        load_index(self.service.log(), self.checkpoint.as_ref(), self.config.read_batch)
    }

    async fn run(
        self,
        mut shutdown: watch::Receiver<bool>,
        progress: watch::Sender<Progress>,
    ) -> Result<Progress, TimerError> {
        let clock = self.service.clock().clone();
        let log = self.service.log().clone();
        let mut head = log.watch_head();
        // Loading reads a file and the log (a full replay without a checkpoint: seconds for a
        // million deadlines), so it runs on the blocking pool, not on a worker that commands need.
        let (loader, checkpoint, batch) = (log.clone(), self.checkpoint.clone(), self.config.read_batch);
        let mut index = tokio::task::spawn_blocking(move || load_index(&loader, checkpoint.as_ref(), batch))
            .await
            .map_err(|_| TimerError::Cancelled)??;
        let mut state = Progress { position: index.position(), ..*progress.borrow() };
        let mut in_flight: HashSet<Firing> = HashSet::new();
        let mut retries: HashMap<Firing, Retry> = HashMap::new();
        let mut tasks: JoinSet<(Firing, Result<CommandResult, ServiceError>)> = JoinSet::new();
        let mut checkpointed = (index.position(), tokio::time::Instant::now());
        loop {
            if *shutdown.borrow() {
                break;
            }
            catch_up(&log, &mut index, self.config.read_batch, |_| {})?;
            let now = clock.now();
            let retry_now = tokio::time::Instant::now();
            let mut next_wake = None;
            // The earliest instant something pending acts at (a breach at import: once its
            // quiet time has passed).
            let mut next_at: Option<Timestamp> = None;
            let mut due_left = false;
            for firing in index.iter() {
                if firing.at > now {
                    next_wake = Some(next_wake.map_or(firing.at, |w: Timestamp| w.min(firing.at)));
                    next_at = Some(next_at.map_or(firing.at, |n| n.min(firing.at)));
                    break;
                }
                if let FiringKind::BreachAtImport { .. } = firing.kind {
                    let quiet_until = firing.at + self.config.import_quiet;
                    if quiet_until > now {
                        next_wake = Some(next_wake.map_or(quiet_until, |w: Timestamp| w.min(quiet_until)));
                        next_at = Some(next_at.map_or(quiet_until, |n| n.min(quiet_until)));
                        continue;
                    }
                }
                next_at = Some(next_at.map_or(firing.at, |n| n.min(firing.at)));
                if in_flight.contains(firing) {
                    continue;
                }
                if retries.get(firing).is_some_and(|r| r.not_before > retry_now) {
                    continue;
                }
                if in_flight.len() >= self.config.max_in_flight {
                    due_left = true;
                    break;
                }
                in_flight.insert(*firing);
                let service = self.service.clone();
                // A breach at import keeps the import's instant (checked like an importer's: past,
                // and not before the ticket's last event); every other firing takes the clock's.
                let stamp = match firing.kind {
                    FiringKind::BreachAtImport { .. } => Stamp::Imported,
                    FiringKind::Warning(_) | FiringKind::Breach | FiringKind::NoResponse => Stamp::ServiceClock,
                };
                let request = match firing.command(now, &self.config.actor) {
                    Ok(command) => CommandRequest { command, correlation_id: None, causation_id: None, stamp },
                    Err(e) => {
                        warn!(error = %e, "a firing has no valid command id; skipped");
                        continue;
                    }
                };
                let firing = *firing;
                tasks.spawn(async move { (firing, service.execute(request).await) });
            }
            let next_retry = retries.values().map(|r| r.not_before).min();
            state.position = index.position();
            state.now = now;
            state.next_at = next_at;
            state.pending = index.len();
            metrics::gauge!("ticketd_timer_pending_deadlines").set(state.pending as f64);
            state.idle = tasks.is_empty() && retries.is_empty() && !due_left && state.position >= log.head();
            progress.send_replace(state);

            if index.position() > checkpointed.0 && checkpointed.1.elapsed() >= self.config.checkpoint_every {
                self.save(&index).await;
                checkpointed = (index.position(), tokio::time::Instant::now());
            }

            let wake = async {
                match next_wake {
                    Some(at) => clock.wait_until(at).await,
                    None => std::future::pending().await,
                }
            };
            let retry = async {
                match next_retry {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                changed = shutdown.changed() => {
                    if changed.is_err() {
                        break;
                    }
                }
                Some(joined) = tasks.join_next() => {
                    let Ok((firing, outcome)) = joined else { continue };
                    in_flight.remove(&firing);
                    self.settle(&mut index, &mut retries, &mut state, firing, outcome);
                    // Gather whatever else finished before deciding again.
                    while let Some(Ok((firing, outcome))) = tasks.try_join_next() {
                        in_flight.remove(&firing);
                        self.settle(&mut index, &mut retries, &mut state, firing, outcome);
                    }
                }
                changed = head.changed() => {
                    if changed.is_err() {
                        // The log closed: nothing more will happen.
                        break;
                    }
                }
                () = wake => {}
                () = retry => {}
            }
        }
        // Commands in flight finish (their replies are durable or not; either way they are
        // idempotent), then the index is checkpointed.
        while let Some(joined) = tasks.join_next().await {
            if let Ok((firing, outcome)) = joined {
                self.settle(&mut index, &mut retries, &mut state, firing, outcome);
            }
        }
        if catch_up(&log, &mut index, self.config.read_batch, |_| {}).is_ok() {
            self.save(&index).await;
        }
        state.position = index.position();
        state.pending = index.len();
        progress.send_replace(state);
        Ok(state)
    }

    fn settle(
        &self,
        index: &mut DeadlineIndex,
        retries: &mut HashMap<Firing, Retry>,
        state: &mut Progress,
        firing: Firing,
        outcome: Result<CommandResult, ServiceError>,
    ) {
        let kind = kind_name(firing.kind);
        match outcome {
            Ok(result) => {
                retries.remove(&firing);
                index.settle(&firing);
                let recorded_at = result.events.first().map_or(firing.at, |e| e.event.occurred_at);
                if result.duplicate {
                    state.repeated += 1;
                    debug!(ticket_id = %firing.ticket, metric = %firing.metric, cycle = firing.cycle, kind, "firing already recorded");
                } else {
                    state.fired += 1;
                    let lag_ms = (recorded_at - firing.at).num_milliseconds();
                    metrics::histogram!("ticketd_timer_firing_lag_seconds").record(lag_ms.max(0) as f64 / 1000.0);
                    info!(
                        ticket_id = %firing.ticket, metric = %firing.metric, cycle = firing.cycle, kind,
                        due_at = %firing.at, detected_at = %recorded_at, lag_ms, position = result.last_position(),
                        "sla firing recorded"
                    );
                    if let Some(hook) = &self.on_fired {
                        hook(&firing, self.service.clock().now());
                    }
                }
            }
            Err(ServiceError::Rejected(e)) if e.kind() == ErrorKind::TimerMoot => {
                retries.remove(&firing);
                index.settle(&firing);
                state.moot += 1;
                debug!(ticket_id = %firing.ticket, metric = %firing.metric, cycle = firing.cycle, kind, reason = %e, "firing moot");
            }
            Err(e @ ServiceError::Quarantined { .. }) => {
                // The ticket's stored history does not fit: nothing can be decided on it until an
                // operator repairs it. The other tickets' firings go on.
                retries.remove(&firing);
                index.settle(&firing);
                state.dropped += 1;
                error!(ticket_id = %firing.ticket, metric = %firing.metric, cycle = firing.cycle, kind, error = %e, "firing dropped: ticket quarantined");
            }
            Err(e) => {
                let retry =
                    retries.entry(firing).or_insert(Retry { attempts: 0, not_before: tokio::time::Instant::now() });
                retry.attempts += 1;
                let transient = !matches!(e.kind(), ServiceErrorKind::Rejected(_));
                if !transient && retry.attempts >= self.config.max_attempts {
                    retries.remove(&firing);
                    index.settle(&firing);
                    state.dropped += 1;
                    warn!(ticket_id = %firing.ticket, metric = %firing.metric, cycle = firing.cycle, kind, error = %e, "firing refused; given up");
                    return;
                }
                let exponent = retry.attempts.saturating_sub(1).min(16);
                let wait = self.config.backoff.saturating_mul(1 << exponent).min(self.config.max_backoff);
                retry.not_before = tokio::time::Instant::now() + wait;
                warn!(
                    ticket_id = %firing.ticket, metric = %firing.metric, cycle = firing.cycle, kind, error = %e,
                    attempts = retry.attempts, retry_in_ms = wait.as_millis() as u64, "firing failed; retrying"
                );
            }
        }
    }

    /// Writes the checkpoint: the image is encoded here, and written and synced (tens of MB for
    /// a million deadlines) on the blocking pool.
    async fn save(&self, index: &DeadlineIndex) {
        let Some(file) = self.checkpoint.clone() else { return };
        let (position, pending, image) = (index.position(), index.len(), crate::checkpoint::encode(index));
        let path = file.path().to_owned();
        match tokio::task::spawn_blocking(move || ticket_log::durable::write_file(file.path(), &image)).await {
            Ok(Ok(())) => debug!(position, pending, "deadline index checkpointed"),
            Ok(Err(e)) => warn!(error = %e, path = %path.display(), "deadline checkpoint not written"),
            Err(e) => warn!(error = %e, path = %path.display(), "deadline checkpoint task failed"),
        }
    }
}

/// See [`Timer::load_index`].
fn load_index<L: EventLog>(
    log: &L,
    checkpoint: Option<&CheckpointFile>,
    batch: usize,
) -> Result<DeadlineIndex, TimerError> {
    let head = log.head();
    let from_checkpoint = match checkpoint.map(CheckpointFile::load) {
        None | Some(Ok(None)) => None,
        Some(Ok(Some(index))) if index.position() <= head => Some(index),
        Some(Ok(Some(index))) => {
            warn!(checkpoint = index.position(), head, "deadline checkpoint is ahead of the log; rebuilding");
            None
        }
        Some(Err(e)) => {
            warn!(error = %e, "deadline checkpoint unusable; rebuilding");
            None
        }
    };
    let rebuilt = from_checkpoint.is_none();
    let mut index = from_checkpoint.unwrap_or_default();
    let started = std::time::Instant::now();
    let from = index.position();
    catch_up(log, &mut index, batch, |applied| {
        info!(position = applied, head, "deadline index catching up");
    })?;
    info!(
        rebuilt,
        from,
        position = index.position(),
        pending = index.len(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "deadline index ready"
    );
    Ok(index)
}

/// The scheduler's task and what it reports.
#[derive(Debug)]
pub struct TimerHandle {
    progress: watch::Receiver<Progress>,
    task: tokio::task::JoinHandle<Result<Progress, TimerError>>,
}

impl TimerHandle {
    pub fn progress(&self) -> Progress {
        *self.progress.borrow()
    }

    pub fn watch(&self) -> watch::Receiver<Progress> {
        self.progress.clone()
    }

    /// Waits until everything due at or before `until` is handled and the index reflects at
    /// least `position` (see [`Progress::settled`]); `None` when the scheduler stopped first.
    pub async fn settled(&self, until: Timestamp, position: u64) -> Option<Progress> {
        let mut progress = self.progress.clone();
        progress.wait_for(|p| p.settled(until, position)).await.ok().map(|p| *p)
    }

    /// Moves a simulated `clock` to `until` through every firing instant on the way, as a real
    /// clock passes them, waiting at each until the timer has handled what is due and applied
    /// the log up to `head()`. `None` when the timer stopped, or did not settle within
    /// `deadline` at some instant.
    pub async fn step_to(
        &self,
        clock: &SimulatedClock,
        until: Timestamp,
        head: impl Fn() -> u64,
        deadline: Duration,
    ) -> Option<Progress> {
        loop {
            let progress = tokio::time::timeout(deadline, self.settled(clock.now(), head())).await.ok()??;
            match progress.next_at.filter(|next| *next <= until) {
                Some(next) => clock.advance_to(next),
                None => {
                    clock.advance_to(until);
                    return tokio::time::timeout(deadline, self.settled(until, head())).await.ok()?;
                }
            }
        }
    }

    /// Waits for the scheduler to stop (after its shutdown signal).
    pub async fn join(self) -> Result<Progress, TimerError> {
        match self.task.await {
            Ok(result) => result,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(_) => Err(TimerError::Cancelled),
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Retry {
    attempts: u32,
    not_before: tokio::time::Instant,
}

fn kind_name(kind: FiringKind) -> &'static str {
    match kind {
        FiringKind::Warning(_) => "warning",
        FiringKind::Breach => "breach",
        FiringKind::BreachAtImport { .. } => "breach_at_import",
        FiringKind::NoResponse => "no_response",
    }
}

/// Applies every event after the index's position, in batches.
pub fn catch_up<L: EventLog>(
    log: &L,
    index: &mut DeadlineIndex,
    batch: usize,
    mut progress: impl FnMut(u64),
) -> Result<(), LogError> {
    let mut rounds = 0u64;
    loop {
        let events = log.read_from(index.position() + 1, batch.max(1))?;
        let Some(last) = events.last() else { return Ok(()) };
        let last = last.position;
        for event in &events {
            index.apply(event);
        }
        // An index that did not move would loop forever; the log must hand out later positions.
        if index.position() < last {
            return Ok(());
        }
        rounds += 1;
        if rounds.is_multiple_of(64) {
            progress(index.position());
        }
    }
}

#[cfg(test)]
mod tests;
