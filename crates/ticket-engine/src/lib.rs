//! The composition root of ticketd: the one place that knows the data directory's layout and
//! wires the engine's parts together.
//!
//! - [`DataDir`] spells the layout once: the sled log (`log/`), the timer's checkpoint
//!   (`timer.checkpoint`), the projections' checkpoints (`projections/`) and, in `ticketd dev`,
//!   the nats-server store (`nats/`).
//! - [`Engine`] opens the log, builds the command service (with its snapshots), the timer (with
//!   its checkpoint) and the projector (with its checkpoints) on a given [`Clock`] and
//!   [`Policy`], starts them, exposes what the adapters need, and stops them with one
//!   [`Engine::stop`] bounded by a deadline.
//!
//! Adapters (the NATS API, ticketctl's local mode, the demo, the benchmarks) receive the parts of
//! a running engine; none of them opens a log or starts a timer or a projector of its own.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ticket_domain::Policy;
use ticket_log::{EventLog, LogError};
use ticket_log_sled::{SledConfig, SledLog};
use ticket_projections::{Checkpoints, Projector, ProjectorConfig, ProjectorError};
use ticket_service::{Clock, CommandService, ServiceConfig, SystemClock};
use ticket_timer::{CheckpointFile, Progress, TimerConfig, TimerHandle};
use tokio::sync::watch;
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

    /// The timer's deadline index checkpoint.
    pub fn timer_checkpoint(&self) -> PathBuf {
        self.root.join("timer.checkpoint")
    }

    /// The directory of the read models' checkpoints.
    pub fn projections(&self) -> PathBuf {
        self.root.join("projections")
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

    pub fn timer_checkpoint_file(&self) -> CheckpointFile {
        CheckpointFile::new(self.timer_checkpoint())
    }

    pub fn checkpoints(&self) -> Checkpoints {
        Checkpoints::new(self.projections())
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
}

/// What an engine runs besides the log and the command service.
#[derive(Clone)]
pub struct EngineConfig {
    pub data_dir: DataDir,
    pub policy: Arc<Policy>,
    /// The instant commands are decided at and the timer fires by.
    pub clock: Arc<dyn Clock>,
    pub service: ServiceConfig,
    /// The timer, checkpointed in the data directory (none: no firings in this process).
    pub timer: Option<TimerConfig>,
    /// The projector, checkpointed in the data directory (none: no live read models).
    pub projector: Option<ProjectorConfig>,
}

impl std::fmt::Debug for EngineConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineConfig")
            .field("data_dir", &self.data_dir)
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
            clock: Arc::new(SystemClock),
            service: ServiceConfig::default(),
            timer: None,
            projector: Some(ProjectorConfig::default()),
        }
    }
}

type ProjectorTask = JoinHandle<Result<(), ProjectorError>>;

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
    /// first).
    pub async fn start_on(log: SledLog, config: EngineConfig) -> Result<Self, EngineError> {
        let EngineConfig { data_dir, policy, clock, service, timer, projector } = config;
        let snapshots: Arc<dyn ticket_log::SnapshotStore> = Arc::new(log.snapshots());
        let service = CommandService::with_clock(log.clone(), policy, Some(snapshots), service, clock);
        let (stop, stopped) = watch::channel(false);
        let (views, projector_task) = match projector {
            Some(projector_config) => {
                let (log, checkpoints) = (log.clone(), data_dir.checkpoints());
                let views = blocking(move || Ok(Projector::open(log, Some(checkpoints), projector_config))).await?;
                let task = views.spawn(stopped.clone());
                (Some(views), Some(task))
            }
            None => (None, None),
        };
        let timer = timer.map(|timer_config| {
            ticket_timer::Timer::new(service.clone(), Some(data_dir.timer_checkpoint_file()), timer_config)
                .spawn(stopped)
        });
        info!(
            data_dir = %data_dir.root().display(),
            head = log.head(),
            timer = timer.is_some(),
            projector = views.is_some(),
            "engine started"
        );
        Ok(Self { data_dir, log, service, views, timer, projector_task, stop })
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

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, EngineError> + Send + 'static,
) -> Result<T, EngineError> {
    tokio::task::spawn_blocking(work).await.map_err(|e| EngineError::Task(e.to_string()))?
}

#[cfg(test)]
mod tests;
