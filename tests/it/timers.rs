//! The timer service through the whole engine: a sled log, the command service and the
//! scheduler, all on a simulated clock that the tests advance instantly.

mod lag;
mod paging;
mod quarantine;
mod random;
mod scenarios;
mod store;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use ticket_domain::{
    Actor, ActorId, ActorKind, Command, CommandBody, CommandId, EventKind, Policy, RecordedEvent, TicketId, Timestamp,
};
use ticket_engine::DataDir;
use ticket_log::EventLog;
use ticket_log_sled::{SledConfig, SledLog};
use ticket_service::{
    Clock, CommandRequest, CommandResult, CommandService, ServiceConfig, ServiceError, SimulatedClock, Stamp,
};
use ticket_timer::{IndexStore, Progress, Timer, TimerConfig, TimerHandle};
use tokio::sync::watch;

/// How long a test waits for the timer to settle before it fails.
const SETTLE: Duration = Duration::from_secs(120);

/// A timer and its shutdown switch.
pub struct RunningTimer {
    handle: TimerHandle,
    shutdown: watch::Sender<bool>,
}

impl RunningTimer {
    /// A timer keeping its index in the state store at `state` (a sled directory).
    pub fn start(service: &CommandService<SledLog>, state: &Path) -> Self {
        let (shutdown, stop) = watch::channel(false);
        let config = TimerConfig::new(ActorId::new("ticket-timer").unwrap());
        let store = IndexStore::open(Arc::new(ticket_log_sled::RedbState::open(state).unwrap())).unwrap();
        let handle = Timer::new(service.clone(), Some(store), config).spawn(stop);
        Self { handle, shutdown }
    }

    pub async fn stop(self) -> Progress {
        self.shutdown.send_replace(true);
        tokio::time::timeout(SETTLE, self.handle.join()).await.expect("the timer stops").unwrap()
    }

    pub async fn settled(&self, until: Timestamp, position: u64) -> Progress {
        tokio::time::timeout(SETTLE, self.handle.settled(until, position))
            .await
            .unwrap_or_else(|_| panic!("the timer did not settle at {until}: {:?}", self.handle.progress()))
            .expect("the timer is running")
    }
}

/// The engine: one sled log in a temporary directory, a command service and a timer, on one
/// simulated clock.
pub struct Engine {
    pub dir: tempfile::TempDir,
    pub clock: Arc<SimulatedClock>,
    pub service: CommandService<SledLog>,
    pub timer: Option<RunningTimer>,
    pub policy: Arc<Policy>,
}

impl Engine {
    pub fn start(policy: Policy, start: Timestamp) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(SimulatedClock::new(start));
        let policy = Arc::new(policy);
        let service = service(&DataDir::new(dir.path()).log(), &policy, &clock);
        let timer = Some(RunningTimer::start(&service, &DataDir::new(dir.path()).state()));
        Self { dir, clock, service, timer, policy }
    }

    /// The engine without a timer: only decisions settle what is due.
    pub fn start_without_timer(policy: Policy, start: Timestamp) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(SimulatedClock::new(start));
        let policy = Arc::new(policy);
        let service = service(&DataDir::new(dir.path()).log(), &policy, &clock);
        Self { dir, clock, service, timer: None, policy }
    }

    pub fn log(&self) -> &SledLog {
        self.service.log()
    }

    /// The state store the timer keeps its index in.
    pub fn state(&self) -> std::path::PathBuf {
        DataDir::new(self.dir.path()).state()
    }

    /// Moves the clock and waits until the timer has fired everything due by then.
    pub async fn advance_to(&self, to: Timestamp) -> Progress {
        self.clock.advance_to(to);
        let timer = self.timer.as_ref().expect("a timer is running");
        timer.settled(to, self.log().head()).await
    }

    /// Moves the clock to `until` through every firing instant on the way, as a real clock
    /// passes them, waiting for the timer at each.
    pub async fn step_to(&self, until: Timestamp) -> Progress {
        let timer = self.timer.as_ref().expect("a timer is running");
        timer
            .handle
            .step_to(&self.clock, until, || self.log().head(), SETTLE)
            .await
            .unwrap_or_else(|| panic!("the timer did not settle on the way to {until}: {:?}", timer.handle.progress()))
    }

    /// At `at`: advance the clock there, then issue the command (stamped by the service clock).
    pub async fn at(&self, at: Timestamp, ticket: TicketId, body: CommandBody) -> Result<CommandResult, ServiceError> {
        self.advance_to(at).await;
        self.execute(ticket, body).await
    }

    /// Issues a command now, stamped by the service clock.
    pub async fn execute(&self, ticket: TicketId, body: CommandBody) -> Result<CommandResult, ServiceError> {
        let command = support_command(ticket, self.clock.now(), body);
        let request = CommandRequest { command, correlation_id: None, causation_id: None, stamp: Stamp::ServiceClock };
        self.service.execute(request).await
    }

    pub fn events(&self, ticket: TicketId) -> Vec<RecordedEvent> {
        self.log().read_stream(ticket, 1).unwrap()
    }

    pub fn names(&self, ticket: TicketId) -> Vec<&'static str> {
        self.events(ticket).iter().map(|e| e.event.kind.name()).collect()
    }

    /// The breaches recorded for a ticket: (metric, cycle, due instant, instant recorded).
    pub fn breaches(&self, ticket: TicketId) -> Vec<(ticket_domain::Metric, u32, Timestamp, Timestamp)> {
        self.events(ticket)
            .iter()
            .filter_map(|e| {
                let EventKind::SlaBreached { metric, cycle, due_at, .. } = &e.event.kind else {
                    return None;
                };
                Some((*metric, *cycle, *due_at, e.event.occurred_at))
            })
            .collect()
    }
}

pub fn service(path: &Path, policy: &Arc<Policy>, clock: &Arc<SimulatedClock>) -> CommandService<SledLog> {
    let log = SledLog::open(SledConfig::new(path)).unwrap();
    let snapshots: Arc<dyn ticket_log::SnapshotStore> = Arc::new(log.snapshots());
    let clock: Arc<dyn Clock> = clock.clone();
    CommandService::with_clock(log, policy.clone(), Some(snapshots), ServiceConfig::default(), clock)
}

/// A support tool's command with a fresh id.
pub fn support_command(ticket: TicketId, at: Timestamp, body: CommandBody) -> Command {
    Command {
        id: CommandId::new(format!("test-{}", uuid::Uuid::now_v7())).unwrap(),
        ticket_id: ticket,
        actor: Actor { kind: ActorKind::Agent, id: ActorId::new("agent-li").unwrap() },
        issued_at: at,
        body,
    }
}

pub fn new_ticket() -> TicketId {
    TicketId::from_uuid(uuid::Uuid::now_v7())
}
