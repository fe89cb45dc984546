//! The composition root of ticketd: the one place that knows the data directory's layout and
//! wires the engine's parts together.
//!
//! - [`DataDir`] spells the layout once: the sled log (`log/`), the state store (`state/`: the
//!   read models' rows and the timer's deadline index, ADR 0013), the former checkpoints
//!   (`timer.checkpoint`, `projections/`, no longer read) and, in `ticketd dev`, the nats-server
//!   store (`nats/`).
//! - [`Engine`] opens the log and the state store, builds the command service (with its
//!   snapshots), the timer and the projector (both on the state store) on a given [`Clock`] and
//!   [`Policy`], starts them, exposes what the adapters need, and stops them with one
//!   [`Engine::stop`] bounded by a deadline.
//! - [`EngineClock`] is the wall clock or a simulated one; the kind is recorded in the log when
//!   it is first used, and an engine refuses to start on a log recorded with the other kind.
//!   [`TestClock`] moves a simulated engine's clock through every firing on the way.
//!
//! Adapters (the NATS API, ticketctl's local mode, the demo, the benchmarks) receive the parts of
//! a running engine; none of them opens a log or starts a timer or a projector of its own.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ticket_domain::{Policy, RecordedEvent, Timestamp};
pub use ticket_log::ClockKind;
use ticket_log::{EventLog, LogError};
pub use ticket_log_sled::SledLog;
use ticket_log_sled::{RedbState, SledConfig};
pub use ticket_projections::{Projector, ProjectorConfig, ProjectorError};
use ticket_service::{Clock, CommandService, ServiceConfig};
pub use ticket_service::{SimulatedClock, SystemClock};
use ticket_timer::{IndexStore, Progress, TimerConfig, TimerHandle};
use tokio::sync::{Mutex, watch};
use tokio::task::JoinHandle;
use tracing::{info, warn};

/// A ticketd data directory and its layout. These names are what existing data directories
/// hold: changing one strands every deployed directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataDir {
    root: PathBuf,
}

impl DataDir {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The sled event log (events, snapshots, the outbox watermark).
    pub fn log(&self) -> PathBuf {
        self.root.join("log")
    }

    /// The timer's former whole-image checkpoint (the index is now in the state store): deleted
    /// when a timer starts.
    pub fn timer_checkpoint(&self) -> PathBuf {
        self.root.join("timer.checkpoint")
    }

    /// The directory of the read models' checkpoints before issue 13 (they live in the state
    /// store now): an old data directory may still hold it; it is not read.
    pub fn projections(&self) -> PathBuf {
        self.root.join("projections")
    }

    /// The state store: the read models' and the timer's durable state, rebuildable from the
    /// log (ADR 0013), one redb file.
    pub fn state(&self) -> PathBuf {
        self.root.join("state.redb")
    }

    /// The state store's directory when it was a sled database (before redb): an old data
    /// directory may still hold it; it is deleted when the store is opened.
    pub fn state_sled(&self) -> PathBuf {
        self.root.join("state")
    }

    /// The nats-server store of `ticketd dev`.
    pub fn nats_store(&self) -> PathBuf {
        self.root.join("nats")
    }

    /// True when the directory holds a log.
    pub fn has_log(&self) -> bool {
        self.log().exists()
    }

    /// Creates the directory (and its parents).
    pub fn create(&self) -> Result<(), EngineError> {
        std::fs::create_dir_all(&self.root).map_err(|source| EngineError::DataDir { path: self.root.clone(), source })
    }

    /// Opens (or creates) the log. Blocking: sled opens and recovers its files.
    pub fn open_log(&self) -> Result<SledLog, LogError> {
        SledLog::open(SledConfig::new(self.log()))
    }

    /// Opens (or creates) the state store, deleting a former sled state store (rebuildable:
    /// the models and the timer index are then rebuilt from the log). Blocking.
    pub fn open_state(&self) -> Result<RedbState, LogError> {
        remove_former(&self.state_sled(), "the former sled state store (the state is rebuilt from the log into redb)");
        RedbState::open(self.state())
    }

    /// The timer's index in the state store, with the former checkpoint file deleted. Blocking.
    pub fn open_timer_store(&self, state: RedbState) -> Result<IndexStore, LogError> {
        remove_former(&self.timer_checkpoint(), "the timer's former checkpoint file (its index is in the state store)");
        IndexStore::open(Arc::new(state))
    }
}

/// Deletes a file or directory an older ticketd left and this one no longer reads (state that
/// is rebuilt from the log), saying so; a failure to delete is only reported.
fn remove_former(path: &std::path::Path, what: &str) {
    let removed = if path.is_dir() {
        std::fs::remove_dir_all(path)
    } else if path.exists() {
        std::fs::remove_file(path)
    } else {
        return;
    };
    match removed {
        Ok(()) => info!(path = %path.display(), "{what} is deleted"),
        Err(e) => warn!(path = %path.display(), error = %e, "{what} is not deleted (it is not read)"),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("cannot create the data directory {}: {source}", path.display())]
    DataDir { path: PathBuf, source: std::io::Error },
    #[error("the log: {0}")]
    Log(#[from] LogError),
    #[error("the engine's start-up task failed: {0}")]
    Task(String),
    #[error("{}", clock_refusal(.data_dir, *.recorded, *.requested))]
    ClockKind { data_dir: PathBuf, recorded: ClockKind, requested: ClockKind },
}

fn clock_refusal(data_dir: &Path, recorded: ClockKind, requested: ClockKind) -> String {
    let dir = data_dir.display();
    match (recorded, requested) {
        (ClockKind::Wall, ClockKind::Simulated) => format!(
            "refusing to run a test clock on {dir}: its log was written on the wall clock (a production \
             log); start the test clock on a new data directory"
        ),
        (ClockKind::Simulated, ClockKind::Wall) => format!(
            "refusing to run on the wall clock on {dir}: its log was written on a test clock (its instants \
             are simulated); start it with `ticketd dev --test-clock`, or use a new data directory"
        ),
        (ClockKind::Wall, ClockKind::Wall) | (ClockKind::Simulated, ClockKind::Simulated) => {
            format!("{dir} was written on the {recorded} clock")
        }
    }
}

/// The clock an engine decides and fires by.
#[derive(Debug, Clone)]
pub enum EngineClock {
    /// The wall clock: production.
    Wall,
    /// A simulated clock that only moves when advanced (tests, the demo, `ticketd dev
    /// --test-clock`).
    Simulated(Arc<SimulatedClock>),
}

impl EngineClock {
    pub fn kind(&self) -> ClockKind {
        match self {
            EngineClock::Wall => ClockKind::Wall,
            EngineClock::Simulated(_) => ClockKind::Simulated,
        }
    }

    pub fn clock(&self) -> Arc<dyn Clock> {
        match self {
            EngineClock::Wall => Arc::new(SystemClock),
            EngineClock::Simulated(clock) => clock.clone(),
        }
    }
}

/// What an engine runs besides the log and the command service.
#[derive(Clone)]
pub struct EngineConfig {
    pub data_dir: DataDir,
    pub policy: Arc<Policy>,
    /// The instant commands are decided at and the timer fires by.
    pub clock: EngineClock,
    pub service: ServiceConfig,
    /// The timer, its index in the state store (none: no firings in this process).
    pub timer: Option<TimerConfig>,
    /// The projector, its read models in the state store (none: no live read models).
    pub projector: Option<ProjectorConfig>,
}

impl std::fmt::Debug for EngineConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineConfig")
            .field("data_dir", &self.data_dir)
            .field("clock", &self.clock.kind())
            .field("policy", &self.policy.version())
            .field("service", &self.service)
            .field("timer", &self.timer)
            .field("projector", &self.projector)
            .finish_non_exhaustive()
    }
}

impl EngineConfig {
    /// The wall clock, the default service, the projector; no timer.
    pub fn new(data_dir: DataDir, policy: Arc<Policy>) -> Self {
        Self {
            data_dir,
            policy,
            clock: EngineClock::Wall,
            service: ServiceConfig::default(),
            timer: None,
            projector: Some(ProjectorConfig::default()),
        }
    }
}

/// A running projector's task: its outcome once told to stop.
pub type ProjectorTask = JoinHandle<Result<(), ProjectorError>>;

/// Read models on a log this process only reads (a cluster node's copy of a partition, written
/// from the log stream: ADR 0015): the projector on the state store of `data_dir`, following
/// the log until `shutdown` turns true.
pub async fn start_views(
    log: SledLog,
    data_dir: DataDir,
    config: ProjectorConfig,
    shutdown: watch::Receiver<bool>,
) -> Result<(Projector<SledLog>, ProjectorTask), EngineError> {
    let views = blocking(move || {
        let state: Arc<dyn ticket_log::StateStore> = Arc::new(data_dir.open_state()?);
        Ok(Projector::open(log, Some(state), config))
    })
    .await?;
    let task = views.spawn(shutdown);
    Ok((views, task))
}

/// A running engine: the log, the command service, the live read models and the timer.
#[derive(Debug)]
pub struct Engine {
    data_dir: DataDir,
    log: SledLog,
    service: CommandService<SledLog>,
    views: Option<Projector<SledLog>>,
    timer: Option<TimerHandle>,
    projector_task: Option<ProjectorTask>,
    stop: watch::Sender<bool>,
    clock: EngineClock,
    /// Serializes the advances of a test clock.
    advancing: Arc<Mutex<()>>,
}

/// What [`Engine::stop`] could finish by its deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stopped {
    /// The timer's last report, when it stopped and checkpointed in time.
    pub timer: Option<Progress>,
    /// Every part stopped and flushed its checkpoints by the deadline.
    pub clean: bool,
}

impl Engine {
    /// Opens the data directory's log and starts the engine on it. The blocking parts (opening
    /// sled, reading checkpoints) run off the async runtime.
    pub async fn start(config: EngineConfig) -> Result<Self, EngineError> {
        let dir = config.data_dir.clone();
        let log = blocking(move || {
            dir.create()?;
            Ok(dir.open_log()?)
        })
        .await?;
        Self::start_on(log, config).await
    }

    /// Starts the engine on a log already opened from `config.data_dir` (the demo looks at it
    /// first). The clock's kind is recorded in the log when it is first used; a log recorded
    /// with the other kind is refused ([`EngineError::ClockKind`]).
    pub async fn start_on(log: SledLog, config: EngineConfig) -> Result<Self, EngineError> {
        let EngineConfig { data_dir, policy, clock: engine_clock, service, timer, projector } = config;
        let requested = engine_clock.kind();
        let claiming = log.clone();
        let recorded = blocking(move || Ok(claiming.claim_clock(requested)?)).await?;
        if recorded != requested {
            return Err(EngineError::ClockKind { data_dir: data_dir.root().to_owned(), recorded, requested });
        }
        if let (EngineClock::Simulated(simulated), Some(head)) = (&engine_clock, log.head().checked_sub(1)) {
            // A simulated clock restarted on its log resumes no earlier than the log's last
            // decision: its instants never run backwards.
            if let Some(last) = log.read_from(head + 1, 1)?.first() {
                simulated.advance_to(last.event.occurred_at);
            }
        }
        let clock = engine_clock.clock();
        let snapshots: Arc<dyn ticket_log::SnapshotStore> = Arc::new(log.snapshots());
        let service = CommandService::with_clock(log.clone(), policy, Some(snapshots), service, clock);
        let (stop, stopped) = watch::channel(false);
        // One state store for the projector and the timer (sled locks its directory).
        let state = match (&projector, &timer) {
            (None, None) => None,
            (Some(_), _) | (_, Some(_)) => {
                let layout = data_dir.clone();
                Some(blocking(move || Ok(layout.open_state()?)).await?)
            }
        };
        let (views, projector_task) = match (projector, state.clone()) {
            (Some(projector_config), Some(state)) => {
                let (log, layout) = (log.clone(), data_dir.clone());
                let views = blocking(move || {
                    let state: Arc<dyn ticket_log::StateStore> = Arc::new(state);
                    if layout.projections().exists() {
                        info!(
                            dir = %layout.projections().display(),
                            "the read models' old checkpoints are not read any more (they live in the state store)"
                        );
                    }
                    Ok(Projector::open(log, Some(state), projector_config))
                })
                .await?;
                let task = views.spawn(stopped.clone());
                (Some(views), Some(task))
            }
            (None, _) | (Some(_), None) => (None, None),
        };
        let timer = match (timer, state) {
            (Some(timer_config), Some(state)) => {
                let dir = data_dir.clone();
                let store = blocking(move || Ok(dir.open_timer_store(state)?)).await?;
                Some(ticket_timer::Timer::new(service.clone(), Some(store), timer_config).spawn(stopped))
            }
            (None, _) | (Some(_), None) => None,
        };
        info!(
            data_dir = %data_dir.root().display(),
            head = log.head(),
            clock = %requested,
            timer = timer.is_some(),
            projector = views.is_some(),
            "engine started"
        );
        let advancing = Arc::new(Mutex::new(()));
        Ok(Self { data_dir, log, service, views, timer, projector_task, stop, clock: engine_clock, advancing })
    }

    /// The kind of clock the engine runs on.
    pub fn clock_kind(&self) -> ClockKind {
        self.clock.kind()
    }

    /// The control of the engine's simulated clock; `None` on the wall clock.
    pub fn test_clock(&self) -> Option<TestClock> {
        let EngineClock::Simulated(clock) = &self.clock else { return None };
        Some(TestClock {
            clock: clock.clone(),
            log: self.log.clone(),
            progress: self.timer.as_ref().map(TimerHandle::watch),
            advancing: self.advancing.clone(),
            settle: Duration::from_secs(60),
        })
    }

    pub fn data_dir(&self) -> &DataDir {
        &self.data_dir
    }

    pub fn log(&self) -> &SledLog {
        &self.log
    }

    pub fn service(&self) -> &CommandService<SledLog> {
        &self.service
    }

    /// The live read models, followed by the running projector (when the config has one).
    pub fn views(&self) -> Option<&Projector<SledLog>> {
        self.views.as_ref()
    }

    /// The running timer (when the config has one).
    pub fn timer(&self) -> Option<&TimerHandle> {
        self.timer.as_ref()
    }

    /// Stops the timer and the projector and waits for their last checkpoints, all within
    /// `deadline`; logs what could not be flushed by then. Appends are durable when answered,
    /// so nothing acknowledged depends on this: what is not flushed is rebuilt from the log.
    pub async fn stop(mut self, deadline: Duration) -> Stopped {
        self.stop.send_replace(true);
        let until = tokio::time::Instant::now() + deadline;
        let mut stopped = Stopped { timer: None, clean: true };
        if let Some(timer) = self.timer.take() {
            match tokio::time::timeout_at(until, timer.join()).await {
                Ok(Ok(progress)) => {
                    info!(fired = progress.fired, pending = progress.pending, "timer stopped");
                    stopped.timer = Some(progress);
                }
                Ok(Err(e)) => {
                    warn!(error = %e, "the timer failed; its checkpoint may be older (rebuilt from the log)");
                    stopped.clean = false;
                }
                Err(_) => {
                    warn!(
                        "the timer did not stop by the deadline; its checkpoint may be older (its firings are idempotent)"
                    );
                    stopped.clean = false;
                }
            }
        }
        if let Some(task) = self.projector_task.take() {
            match tokio::time::timeout_at(until, task).await {
                Ok(Ok(Ok(()))) => info!("projector stopped"),
                Ok(Ok(Err(e))) => {
                    warn!(error = %e, "the projector failed; its checkpoints are older (caught up from the log)");
                    stopped.clean = false;
                }
                Ok(Err(e)) => {
                    warn!(error = %e, "the projector's task failed; its checkpoints are older");
                    stopped.clean = false;
                }
                Err(_) => {
                    warn!("the projector did not stop by the deadline; its checkpoints are older");
                    stopped.clean = false;
                }
            }
        }
        stopped
    }
}

/// Moves a simulated engine clock forward through every firing instant on the way, as a real
/// clock passes them: at each, the timer records what is due (and reacts to what it recorded)
/// before the clock moves on. Advances are serialized. Cheap to clone; it holds the log open,
/// so the data directory is free again once the engine and every clone are dropped.
#[derive(Debug, Clone)]
pub struct TestClock {
    clock: Arc<SimulatedClock>,
    log: SledLog,
    /// The timer's reports (none: the engine runs no timer, and nothing fires).
    progress: Option<watch::Receiver<Progress>>,
    advancing: Arc<Mutex<()>>,
    /// How long the timer may take to settle at one instant.
    settle: Duration,
}

/// What an advance of a [`TestClock`] did.
#[derive(Debug, Clone, PartialEq)]
pub struct Advanced {
    pub from: Timestamp,
    pub now: Timestamp,
    /// The log's head before and after.
    pub from_position: u64,
    pub head: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdvanceError {
    #[error("the clock never runs backwards: it reads {now}, {to} is earlier")]
    Backwards { now: Timestamp, to: Timestamp },
    #[error("the timer did not settle within {settle:?} at {at} (the clock stays there)")]
    NotSettled { at: Timestamp, settle: Duration },
    #[error("the timer stopped")]
    TimerStopped,
}

impl TestClock {
    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }

    /// Moves the clock to `to` through every firing instant on the way, waiting at each until
    /// the timer has handled what is due and applied the log. An earlier `to` is refused.
    pub async fn advance_to(&self, to: Timestamp) -> Result<Advanced, AdvanceError> {
        let _one_at_a_time = self.advancing.lock().await;
        let from = self.clock.now();
        if to < from {
            return Err(AdvanceError::Backwards { now: from, to });
        }
        let from_position = self.log.head();
        if let Some(progress) = &self.progress {
            let mut progress = progress.clone();
            loop {
                let now = self.clock.now();
                let settled = self.settled(&mut progress, now).await?;
                match settled.next_at.filter(|next| *next <= to) {
                    Some(next) => self.clock.advance_to(next),
                    None => break,
                }
            }
            self.clock.advance_to(to);
            self.settled(&mut progress, to).await?;
        } else {
            self.clock.advance_to(to);
        }
        Ok(Advanced { from, now: self.clock.now(), from_position, head: self.log.head() })
    }

    /// The events appended from `from` on (at most `limit`), in log order.
    pub fn recorded(&self, from: u64, limit: usize) -> Result<Vec<RecordedEvent>, LogError> {
        self.log.read_from(from, limit)
    }

    async fn settled(&self, progress: &mut watch::Receiver<Progress>, at: Timestamp) -> Result<Progress, AdvanceError> {
        let head = self.log.head();
        match tokio::time::timeout(self.settle, progress.wait_for(|p| p.settled(at, head))).await {
            Ok(Ok(p)) => Ok(*p),
            Ok(Err(_)) => Err(AdvanceError::TimerStopped),
            Err(_) => Err(AdvanceError::NotSettled { at, settle: self.settle }),
        }
    }
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, EngineError> + Send + 'static,
) -> Result<T, EngineError> {
    tokio::task::spawn_blocking(work).await.map_err(|e| EngineError::Task(e.to_string()))?
}

#[cfg(test)]
mod tests;
