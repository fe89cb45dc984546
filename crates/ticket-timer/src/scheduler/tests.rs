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
    fn rewind_published(&self, to: u64) -> Result<(), LogError> {
        self.inner.rewind_published(to)
    }
    fn published_sequence(&self) -> Result<u64, LogError> {
        self.inner.published_sequence()
    }
    fn set_published_sequence(&self, sequence: u64) -> Result<(), LogError> {
        self.inner.set_published_sequence(sequence)
    }
    fn published(&self) -> Result<u64, LogError> {
        self.inner.published()
    }
}

/// A gated log holding `tickets` opened tickets at `now`, its command service, and the watch
/// that turns true when a read enters the gate (the gate is open again on return).
async fn gated_log_of(tickets: usize, now: Timestamp) -> (GatedLog, CommandService<GatedLog>, watch::Receiver<bool>) {
    let (entered, rebuilding) = watch::channel(false);
    let log = GatedLog { inner: MemoryLog::new(), gate: Arc::default(), entered };
    log.set_gate(true);
    let clock: Arc<dyn Clock> = Arc::new(SimulatedClock::new(now));
    let service =
        CommandService::with_clock(log.clone(), Arc::new(regional_operator()), None, ServiceConfig::default(), clock);
    for _ in 0..tickets {
        service.execute(open_ticket(now)).await.unwrap();
    }
    log.set_gate(false);
    (log, service, rebuilding)
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
    let tickets = 2_000;
    let (log, service, mut rebuilding) = gated_log_of(tickets, now).await;
    let head = log.head();

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

/// A ticket opened in another helpdesk 20 minutes before its history is imported: its warnings
/// and breach are still ahead and fire live. Another, opened two hours before: its warnings and
/// its breach (with the escalations the policy attaches) are past at import.
#[tokio::test]
async fn the_timer_fires_nothing_past_at_import_and_records_past_breaches_as_detected_at_import() {
    // The import's append instant is the log's (the wall clock): the simulated clock starts there.
    let imported_at = ticket_log::now();
    let clock = Arc::new(SimulatedClock::new(imported_at));
    let log = MemoryLog::new();
    let service = CommandService::with_clock(
        log.clone(),
        Arc::new(regional_operator()),
        None,
        ServiceConfig::default(),
        clock.clone() as Arc<dyn Clock>,
    );
    let mut recent = open_ticket(imported_at - chrono::TimeDelta::minutes(20));
    recent.stamp = Stamp::Imported;
    let mut old = open_ticket(imported_at - chrono::TimeDelta::hours(2));
    old.stamp = Stamp::Imported;
    let (recent_id, old_id) = (recent.command.ticket_id, old.command.ticket_id);
    service.execute(recent).await.unwrap();
    let imported = service.execute(old).await.unwrap();
    let (head, appended_at) = (imported.last_position(), imported.events[0].recorded_at);

    let mut config = TimerConfig::new(ActorId::new("ticket-timer").unwrap());
    config.import_quiet = chrono::TimeDelta::minutes(1);
    let (stop, stopped) = watch::channel(false);
    let timer = Timer::new(service.clone(), None, config).spawn(stopped);
    // Within the quiet minute after the import nothing is recorded, past or not.
    let mut progress = timer.watch();
    let quiet = tokio::time::timeout(Duration::from_secs(30), progress.wait_for(|p| p.position >= head && p.idle));
    quiet.await.unwrap().unwrap();
    assert_eq!(log.head(), head, "nothing recorded while the import may go on");
    // A minute later the old ticket's breach is recorded as detected at import; two hours on,
    // the recent one's breach fires live.
    let until = imported_at + chrono::TimeDelta::hours(2);
    let progress = timer.step_to(&clock, until, || log.head(), Duration::from_secs(30)).await.unwrap();
    // (after the recent one's 50% and 80% warnings, 10 and 28 minutes after the import)
    assert_eq!(progress.fired, 4, "{progress:?}");
    stop.send_replace(true);
    timer.join().await.unwrap();

    let after: Vec<RecordedEvent> = log.read_from(head + 1, 100).unwrap();
    let described: Vec<(TicketId, &str, Timestamp, bool)> =
        after.iter().map(|e| (e.event.ticket_id, e.event.kind.name(), e.event.occurred_at, e.imported)).collect();
    assert!(
        after.iter().all(|e| {
            let ticket_domain::EventKind::SlaWarning { warn_at, .. } = e.event.kind else { return true };
            warn_at > appended_at
        }),
        "no warning past at import: {described:?}"
    );
    let old_breach = after.iter().find(|e| e.event.ticket_id == old_id).expect("the old ticket's breach");
    let ticket_domain::EventKind::SlaBreached { due_at, .. } = old_breach.event.kind else {
        panic!("not a breach: {described:?}")
    };
    assert_eq!(due_at, imported_at - chrono::TimeDelta::hours(1));
    assert_eq!(old_breach.event.occurred_at, appended_at, "detected at the import's instant");
    assert!(old_breach.imported, "marked as detected at import");
    assert_eq!(after.iter().filter(|e| e.event.ticket_id == old_id).count(), 1, "no escalation: {described:?}");
    let recent_breach = after
        .iter()
        .find(|e| e.event.ticket_id == recent_id && e.event.kind.name() == "sla_breached")
        .expect("the recent ticket's breach");
    assert_eq!(recent_breach.event.occurred_at, imported_at + chrono::TimeDelta::minutes(40));
    assert!(!recent_breach.imported);
}

/// SIGTERM during a long rebuild: the catch-up stops between batches, flushes what it applied,
/// and the timer ends at once; the next start resumes from there and reads only the rest.
#[tokio::test]
async fn a_shutdown_during_a_long_catch_up_stops_it_and_keeps_its_progress() {
    let now = utc(2026, 11, 23, 1, 0);
    let (log, service, mut rebuilding) = gated_log_of(300, now).await;
    let head = log.head();

    let state = Arc::new(ticket_log::MemoryState::new());
    let store = IndexStore::open(state.clone()).unwrap();
    let mut config = TimerConfig::new(ActorId::new("ticket-timer").unwrap());
    config.read_batch = 10;
    config.catch_up_flush_events = 20;
    let (stop, stopped) = watch::channel(false);
    let timer = Timer::new(service.clone(), Some(store.clone()), config.clone()).spawn(stopped);
    rebuilding.wait_for(|entered| *entered).await.unwrap();
    stop.send_replace(true);
    log.set_gate(true);
    let progress = tokio::time::timeout(Duration::from_secs(10), timer.join()).await.unwrap().unwrap();
    assert!(progress.position > 0 && progress.position < head, "stopped part way: {progress:?} of {head}");
    // What it applied is durable (a kill now keeps it).
    let crashed = IndexStore::open(Arc::new(state.crash(|_, _| 0))).unwrap();
    assert_eq!(crashed.position().unwrap(), Some(progress.position));

    // The next start reads only the events after it.
    let loaded = crashed.load(head).unwrap();
    assert!(loaded.rebuild.is_none());
    let mut index = loaded.index;
    let caught = catch_up_durably(
        |from, limit| log.inner.read_from(from, limit),
        &mut index,
        Some(&crashed),
        100,
        1_000,
        || false,
        |_| {},
    )
    .unwrap();
    assert_eq!(caught.read, head - progress.position);
    let mut rebuilt = DeadlineIndex::new();
    catch_up(&log.inner, &mut rebuilt, 100, |_| {}).unwrap();
    assert_eq!(index.iter().collect::<Vec<_>>(), rebuilt.iter().collect::<Vec<_>>());
    assert_eq!(crashed.position().unwrap(), Some(head), "flushed at the end of the catch-up");
}
