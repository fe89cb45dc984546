//! The timer service: keeps the deadline index caught up with the log and fires what is due by
//! issuing commands to the command service.
//!
//! - At start the index is read from its durable copy in the state store (`crate::store`) and
//!   caught up from the log (only the events after the copy's position), or rebuilt from the
//!   log when the copy is missing, of another format, unreadable or ahead of the log. A long
//!   catch-up flushes every `catch_up_flush_events` events (a kill keeps its progress) and stops
//!   between batches when shutdown is asked.
//! - While running, what changed in the index (events applied, firings settled) is flushed to
//!   the store, coalesced: once `flush_every` has passed since the last flush, or at once when
//!   `flush_changed` clocks are waiting, and at a clean stop.
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
use std::sync::Arc;
use std::time::Duration;

use ticket_domain::{ActorId, ErrorKind, RecordedEvent, Timestamp};
use ticket_log::{EventLog, LogError};
use ticket_service::{
    Clock, CommandRequest, CommandResult, CommandService, ServiceError, ServiceErrorKind, SimulatedClock, Stamp,
};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::{debug, error, info, warn};

use crate::store::IndexStore;
use crate::{DeadlineIndex, Firing, FiringKind};

#[derive(Debug, Clone)]
pub struct TimerConfig {
    /// The system actor the firings are recorded as.
    pub actor: ActorId,
    /// Commands issued and not yet answered, at most.
    pub max_in_flight: usize,
    /// Events read from the log per round while catching up.
    pub read_batch: usize,
    /// At most how long (real time) a change of the index waits before it is flushed to the
    /// state store: changes are coalesced into one batch and one sync.
    pub flush_every: Duration,
    /// Changed clocks that are flushed at once, without waiting for `flush_every`.
    pub flush_changed: usize,
    /// While catching up (at start, or after a rebuild), the index is flushed every this many
    /// events, so that a kill during a long catch-up keeps what it applied. Each flush rewrites
    /// the clocks changed since the last, so fewer flushes cost less: a rebuild from nothing
    /// of 10^7 events took 65 s flushing every 100,000 events and 48 s every 500,000, for
    /// about the same memory.
    pub catch_up_flush_events: u64,
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
            flush_every: Duration::from_millis(200),
            flush_changed: 10_000,
            catch_up_flush_events: 500_000,
            backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(5),
            max_attempts: 8,
            import_quiet: chrono::TimeDelta::seconds(60),
        }
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
    store: Option<IndexStore>,
    config: TimerConfig,
    on_fired: Option<FiredHook>,
}

impl<L> std::fmt::Debug for Timer<L> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Timer").field("store", &self.store).field("config", &self.config).finish_non_exhaustive()
    }
}

impl<L: EventLog> Timer<L> {
    /// A timer issuing commands to `service`, on the service's clock, keeping its index in
    /// `store` (`None`: in memory only, rebuilt from the log at each start).
    pub fn new(service: CommandService<L>, store: Option<IndexStore>, config: TimerConfig) -> Self {
        Self { service, store, config, on_fired: None }
    }

    pub fn on_fired(mut self, hook: FiredHook) -> Self {
        self.on_fired = Some(hook);
        self
    }

    /// Starts the scheduler; it runs until `shutdown` turns true (or its sender is dropped), then
    /// flushes the index.
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

    /// The index as of the log's head: from the store plus the events after its position, or
    /// from the whole log (flushed to the store as it goes). Also used by operators and the
    /// benchmark. Blocking (store and log reads, a full replay without a usable copy): the
    /// scheduler runs it on the blocking pool.
    pub fn load_index(&self) -> Result<DeadlineIndex, TimerError> {
        let (_, never) = watch::channel(false);
        load_index(self.service.log(), self.store.as_ref(), &self.config, &never).map(|(index, _)| index)
    }

    async fn run(
        self,
        mut shutdown: watch::Receiver<bool>,
        progress: watch::Sender<Progress>,
    ) -> Result<Progress, TimerError> {
        let clock = self.service.clock().clone();
        let log = self.service.log().clone();
        let mut head = log.watch_head();
        // Loading reads the store and the log (a full replay without a usable copy: seconds for
        // a million deadlines), so it runs on the blocking pool, not on a worker that commands
        // need. It stops between batches when shutdown is asked, keeping what it applied.
        let (loader, store, config, stop) = (log.clone(), self.store.clone(), self.config.clone(), shutdown.clone());
        let (mut index, store) = tokio::task::spawn_blocking(move || {
            load_index(&loader, store.as_ref(), &config, &stop).map(|(index, usable)| (index, store.filter(|_| usable)))
        })
        .await
        .map_err(|_| TimerError::Cancelled)??;
        let mut state = Progress { position: index.position(), ..*progress.borrow() };
        let mut in_flight: HashSet<Firing> = HashSet::new();
        let mut retries: HashMap<Firing, Retry> = HashMap::new();
        let mut tasks: JoinSet<(Firing, Result<CommandResult, ServiceError>)> = JoinSet::new();
        let mut flushed = FlushState { position: index.position(), at: tokio::time::Instant::now() };
        // Events applied per round at most, so that flushes and shutdown are seen in between.
        let round = self.config.read_batch.max(1).saturating_mul(16);
        loop {
            if *shutdown.borrow() {
                break;
            }
            let caught_up = catch_up_some(&log, &mut index, self.config.read_batch, round)?;
            if flushed.due(&index, &self.config) {
                flush(store.as_ref(), &mut index, &mut flushed).await;
            }
            if !caught_up {
                // Firings are decided on an index caught up with the log.
                tokio::task::yield_now().await;
                continue;
            }
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
            let flush_at = (store.is_some() && flushed.dirty(&index)).then(|| flushed.at + self.config.flush_every);
            let flush_wait = async {
                match flush_at {
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
                () = flush_wait => {}
            }
        }
        // Commands in flight finish (their replies are durable or not; either way they are
        // idempotent), then what changed is flushed. The events after the index's position are
        // not applied now: the next start replays them.
        while let Some(joined) = tasks.join_next().await {
            if let Ok((firing, outcome)) = joined {
                self.settle(&mut index, &mut retries, &mut state, firing, outcome);
            }
        }
        if flushed.dirty(&index) {
            flush(store.as_ref(), &mut index, &mut flushed).await;
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
}

/// When the index was last flushed, and at which position.
#[derive(Debug, Clone, Copy)]
struct FlushState {
    position: u64,
    at: tokio::time::Instant,
}

impl FlushState {
    /// Something changed since the last flush.
    fn dirty(&self, index: &DeadlineIndex) -> bool {
        index.changed() > 0 || index.position() > self.position
    }

    /// A flush is due: something changed and `flush_every` has passed, or many clocks changed.
    fn due(&self, index: &DeadlineIndex, config: &TimerConfig) -> bool {
        self.dirty(index) && (self.at.elapsed() >= config.flush_every || index.changed() >= config.flush_changed)
    }
}

/// Flushes what changed in `index` to `store` (none: nothing to do): the batch is encoded here,
/// written and synced on the blocking pool. A failed flush keeps the changes for the next one.
async fn flush(store: Option<&IndexStore>, index: &mut DeadlineIndex, flushed: &mut FlushState) {
    let Some(store) = store.cloned() else {
        // No durability: nothing is kept, so nothing needs remembering.
        index.take_changes();
        *flushed = FlushState { position: index.position(), at: tokio::time::Instant::now() };
        return;
    };
    let changes = index.take_changes();
    let batch = IndexStore::batch(&changes);
    let (position, clocks, bytes) = (changes.position, changes.clocks.len(), crate::store::batch_bytes(&batch));
    let started = std::time::Instant::now();
    let written = tokio::task::spawn_blocking(move || store.write(batch)).await;
    let elapsed_us = started.elapsed().as_micros() as u64;
    let failure = match written {
        Ok(Ok(())) => {
            debug!(position, clocks, bytes, elapsed_us, "deadline index flushed");
            metrics::histogram!("ticketd_timer_flush_seconds").record(elapsed_us as f64 / 1e6);
            None
        }
        Ok(Err(e)) => Some(e.to_string()),
        Err(e) => Some(e.to_string()),
    };
    match failure {
        None => *flushed = FlushState { position, at: tokio::time::Instant::now() },
        Some(error) => {
            // Written again with the next changes; the store keeps its older, consistent copy.
            index.mark_changed(changes.keys());
            flushed.at = tokio::time::Instant::now();
            warn!(position, clocks, error, "deadline index not flushed; retrying with the next changes");
        }
    }
}

/// Applies up to `limit` events after the index's position (in reads of `batch`); true when
/// the index reached the log's head.
fn catch_up_some<L: EventLog>(
    log: &L,
    index: &mut DeadlineIndex,
    batch: usize,
    limit: usize,
) -> Result<bool, LogError> {
    let mut applied = 0usize;
    loop {
        let events = log.read_from(index.position() + 1, batch.max(1))?;
        let Some(last) = events.last().map(|e| e.position) else { return Ok(true) };
        for event in &events {
            index.apply(event);
        }
        // An index that did not move would loop forever; the log must hand out later positions.
        if index.position() < last {
            return Ok(true);
        }
        applied += events.len();
        if applied >= limit {
            return Ok(index.position() >= log.head());
        }
    }
}

/// See [`Timer::load_index`]. Also says whether `store` is usable (false: it failed, and the
/// index lives in memory only until the next start). When `shutdown` turns true it stops
/// between batches: the index returned is then behind the log (and flushed as far as it got).
fn load_index<L: EventLog>(
    log: &L,
    store: Option<&IndexStore>,
    config: &TimerConfig,
    shutdown: &watch::Receiver<bool>,
) -> Result<(DeadlineIndex, bool), TimerError> {
    let head = log.head();
    let started = std::time::Instant::now();
    let (mut index, rebuilt, usable) = match store.map(|s| s.load(head)) {
        None => (DeadlineIndex::new(), true, false),
        Some(Ok(loaded)) => (loaded.index, loaded.rebuild.is_some(), true),
        Some(Err(e)) => {
            warn!(error = %e, "the state store failed; the deadline index is rebuilt from the log and kept in memory only");
            (DeadlineIndex::new(), true, false)
        }
    };
    let store = store.filter(|_| usable);
    let from = index.position();
    let caught = catch_up_durably(
        |from, limit| log.read_from(from, limit),
        &mut index,
        store,
        config.read_batch,
        config.catch_up_flush_events,
        || *shutdown.borrow(),
        |applied| info!(position = applied, head, "deadline index catching up"),
    )?;
    info!(
        rebuilt,
        from,
        position = index.position(),
        read = caught.read,
        pending = index.len(),
        durable = store.is_some(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "deadline index ready"
    );
    if caught.stopped {
        info!(
            position = index.position(),
            head, "deadline index catch-up stopped for shutdown; the rest is replayed at the next start"
        );
    }
    Ok((index, usable))
}

/// What [`catch_up_durably`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CaughtUp {
    /// Events read from the log.
    pub read: u64,
    /// It stopped before the log's end because `stop` said so.
    pub stopped: bool,
}

/// Applies every event after the index's position, read in batches through `read` (`from`,
/// `limit`, as `EventLog::read_from`), flushing the index to `store` every `flush_every` events
/// and at the end, so that a kill during a long catch-up keeps what it applied. Between batches
/// it asks `stop`; when true it flushes and returns (`stopped`). A failed flush is logged and
/// written again with the next one.
pub fn catch_up_durably(
    mut read: impl FnMut(u64, usize) -> Result<Vec<RecordedEvent>, LogError>,
    index: &mut DeadlineIndex,
    store: Option<&IndexStore>,
    batch: usize,
    flush_every: u64,
    stop: impl Fn() -> bool,
    mut progress: impl FnMut(u64),
) -> Result<CaughtUp, LogError> {
    let mut caught = CaughtUp::default();
    let mut since_flush = 0u64;
    let mut rounds = 0u64;
    let flush = |index: &mut DeadlineIndex| {
        if let Some(store) = store {
            match store.flush(index) {
                Ok(flushed) => debug!(
                    position = flushed.position,
                    clocks = flushed.clocks,
                    "deadline index flushed while catching up"
                ),
                Err(e) => {
                    warn!(position = index.position(), error = %e, "deadline index not flushed while catching up")
                }
            }
        }
    };
    loop {
        if stop() {
            caught.stopped = true;
            break;
        }
        let events = read(index.position() + 1, batch.max(1))?;
        let Some(last) = events.last().map(|e| e.position) else { break };
        caught.read += events.len() as u64;
        since_flush += events.len() as u64;
        for event in &events {
            index.apply(event);
        }
        // An index that did not move would loop forever; the log must hand out later positions.
        if index.position() < last {
            break;
        }
        if since_flush >= flush_every.max(1) {
            flush(index);
            since_flush = 0;
        }
        rounds += 1;
        if rounds.is_multiple_of(64) {
            progress(index.position());
        }
    }
    if since_flush > 0 || caught.stopped {
        flush(index);
    }
    Ok(caught)
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
