#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::{Arc, Condvar, Mutex};

use ticket_domain::testing::{agent, open, regional_operator, utc};
use ticket_domain::{CommandId, RecordedEvent, Severity, TicketId};
use ticket_log::{AppendOutcome, AppendRequest, CommandRecord, MemoryLog};
use ticket_service::ServiceConfig;

use super::*;

/// How long the gate holds the timer's log reads if the test never opens it (only today's code,
/// blocking the one thread, keeps the test from opening it). Not a pass/fail criterion: the test
/// asserts the order of the answer and the rebuild.
const GATE: Duration = Duration::from_secs(10);

/// A log whose global reads (the timer's rebuild) wait until the test opens the gate; stream
/// reads and appends (commands) go through.
#[derive(Clone)]
struct GatedLog {
    inner: MemoryLog,
    gate: Arc<(Mutex<bool>, Condvar)>,
    entered: watch::Sender<bool>,
}

impl GatedLog {
    fn set_gate(&self, open: bool) {
        let (state, changed) = &*self.gate;
        *state.lock().unwrap() = open;
        changed.notify_all();
    }
}

impl EventLog for GatedLog {
    fn append(&self, request: AppendRequest) -> impl Future<Output = Result<AppendOutcome, LogError>> + Send + 'static {
        self.inner.append(request)
    }
    fn stream_version(&self, ticket: TicketId) -> Result<u64, LogError> {
        self.inner.stream_version(ticket)
    }
    fn read_stream(&self, ticket: TicketId, from_version: u64) -> Result<Vec<RecordedEvent>, LogError> {
        self.inner.read_stream(ticket, from_version)
    }
    fn read_from(&self, from: u64, limit: usize) -> Result<Vec<RecordedEvent>, LogError> {
        self.entered.send_replace(true);
        let (state, changed) = &*self.gate;
        drop(changed.wait_timeout_while(state.lock().unwrap(), GATE, |open| !*open).unwrap());
        self.inner.read_from(from, limit)
    }
    fn head(&self) -> u64 {
        self.inner.head()
    }
    fn watch_head(&self) -> watch::Receiver<u64> {
        self.inner.watch_head()
    }
    fn command(&self, id: &CommandId) -> Result<Option<CommandRecord>, LogError> {
        self.inner.command(id)
    }
    fn commands_from(&self, from: u64, limit: usize) -> Result<Vec<CommandRecord>, LogError> {
        self.inner.commands_from(from, limit)
    }
    fn outbox_pending(&self, limit: usize) -> Result<Vec<u64>, LogError> {
        self.inner.outbox_pending(limit)
    }
    fn mark_published(&self, up_to: u64) -> Result<(), LogError> {
        self.inner.mark_published(up_to)
    }
    fn published(&self) -> Result<u64, LogError> {
        self.inner.published()
    }
}

fn open_ticket(now: Timestamp) -> CommandRequest {
    let mut command = agent(now, open("advanced", "technical", Severity::A));
    command.ticket_id = TicketId::from_uuid(uuid::Uuid::now_v7());
    command.id = CommandId::new(uuid::Uuid::now_v7().to_string()).unwrap();
    CommandRequest { command, correlation_id: None, causation_id: None, stamp: Stamp::AsIssued }
}

/// On a runtime with one thread, the timer rebuilds its index from a log of many pending
/// deadlines (no checkpoint) while a command comes in: the command is answered before the timer
/// reports its index ready, so the rebuild did not hold the thread commands run on.
#[tokio::test(flavor = "current_thread")]
async fn a_command_is_answered_while_the_timer_rebuilds_its_index() {
    let now = utc(2026, 11, 23, 1, 0);
    let (entered, mut rebuilding) = watch::channel(false);
    let log = GatedLog { inner: MemoryLog::new(), gate: Arc::default(), entered };
    log.set_gate(true);
    let clock: Arc<dyn Clock> = Arc::new(SimulatedClock::new(now));
    let service =
        CommandService::with_clock(log.clone(), Arc::new(regional_operator()), None, ServiceConfig::default(), clock);
    let tickets = 2_000;
    for _ in 0..tickets {
        service.execute(open_ticket(now)).await.unwrap();
    }
    let head = log.head();
    log.set_gate(false);

    let (stop, stopped) = watch::channel(false);
    let timer = Timer::new(service.clone(), None, TimerConfig::new(ActorId::new("ticket-timer").unwrap()));
    let timer = timer.spawn(stopped);
    rebuilding.wait_for(|entered| *entered).await.unwrap();
    let answer = service.execute(open_ticket(now)).await.unwrap();
    let progress_at_answer = timer.progress();
    log.set_gate(true);

    assert!(answer.last_position() > head);
    assert!(
        progress_at_answer.position < head,
        "the timer had rebuilt its index before the command was answered: {progress_at_answer:?}"
    );
    // The rebuild was real: every opened ticket's deadlines are pending.
    let settled = tokio::time::timeout(Duration::from_secs(120), timer.settled(now, answer.last_position()));
    let progress = settled.await.unwrap().unwrap();
    assert!(progress.pending > tickets, "{progress:?}");
    stop.send_replace(true);
    timer.join().await.unwrap();
}
