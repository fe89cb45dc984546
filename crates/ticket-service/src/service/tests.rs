use std::sync::Arc;

use chrono::TimeDelta;
use ticket_domain::testing::*;
use ticket_domain::*;
use ticket_log::{EventLog, MemoryLog, MemorySnapshots, SnapshotStore};

use crate::audit::audit;
use crate::replay::{At, state_at};
use crate::*;

fn service(log: MemoryLog) -> CommandService<MemoryLog> {
    CommandService::new(log, Arc::new(regional_operator()), None, ServiceConfig::default())
}

fn opened_at() -> Timestamp {
    beijing(2026, 11, 21, 3, 0)
}

fn with_id(mut command: Command, id: &str) -> Command {
    command.id = CommandId::new(id).unwrap();
    command
}

async fn open_critical(service: &CommandService<MemoryLog>) -> CommandResult {
    service.execute(agent(opened_at(), open("advanced", "technical", Severity::A)).into()).await.unwrap()
}

#[tokio::test]
async fn a_command_is_decided_and_appended() {
    let service = service(MemoryLog::new());
    let result = open_critical(&service).await;
    assert!(!result.duplicate);
    assert_eq!(result.last_position(), 1);
    assert_eq!(service.state(ticket_id()).unwrap().version(), 1);
}

#[tokio::test]
async fn the_same_command_id_twice_returns_the_same_result_and_appends_once() {
    let log = MemoryLog::new();
    let service = service(log.clone());
    open_critical(&service).await;
    let respond =
        agent(opened_at() + TimeDelta::minutes(5), CommandBody::RecordAgentResponse { message: text("on it") });
    let first = service.execute(respond.clone().into()).await.unwrap();
    let second = service.execute(respond.into()).await.unwrap();
    assert!(second.duplicate);
    assert_eq!(first.events, second.events);
    assert_eq!(log.head(), 2);
    // Even a fresh service (an empty cache, a restart) answers from the log.
    let restarted = self::service(log.clone());
    let third = restarted
        .execute(
            agent(opened_at() + TimeDelta::minutes(5), CommandBody::RecordAgentResponse { message: text("on it") })
                .into(),
        )
        .await
        .unwrap();
    assert_eq!((third.duplicate, third.events), (true, first.events));
}

#[tokio::test]
async fn a_refused_command_appends_nothing() {
    let log = MemoryLog::new();
    let service = service(log.clone());
    let err = service.execute(agent(opened_at(), open("standard", "technical", Severity::A)).into()).await.unwrap_err();
    assert_eq!(err.kind(), ServiceErrorKind::Rejected(ErrorKind::SeverityNotInContract));
    assert_eq!(log.head(), 0);
}

async fn sixty_four_replies(services: &[CommandService<MemoryLog>]) {
    let at = opened_at() + TimeDelta::minutes(1);
    let mut tasks = Vec::new();
    for i in 0..64 {
        let service = services[i % services.len()].clone();
        let command = with_id(
            command(ActorKind::Customer, "acme-admin", at, CommandBody::RecordCustomerReply { message: text("more") }),
            &format!("reply-{i}"),
        );
        tasks.push(tokio::spawn(async move { service.execute(command.into()).await }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
}

#[tokio::test]
async fn sixty_four_concurrent_commands_on_one_ticket_lose_no_update() {
    let log = MemoryLog::new();
    let service = service(log.clone());
    open_critical(&service).await;
    sixty_four_replies(&[service]).await;
    let versions: Vec<u64> = log.read_stream(ticket_id(), 1).unwrap().iter().map(|e| e.version).collect();
    assert_eq!(versions, (1..=65).collect::<Vec<_>>());
}

#[tokio::test]
async fn two_services_on_one_log_resolve_conflicts_by_deciding_again() {
    let log = MemoryLog::new();
    let a = service(log.clone());
    let b = service(log.clone());
    open_critical(&a).await;
    // Warm b's cache, so that its state is stale once a appends.
    b.state(ticket_id()).unwrap();
    sixty_four_replies(&[a.clone(), b.clone()]).await;
    let versions: Vec<u64> = log.read_stream(ticket_id(), 1).unwrap().iter().map(|e| e.version).collect();
    assert_eq!(versions, (1..=65).collect::<Vec<_>>());
    assert_eq!(a.state(ticket_id()).unwrap().version(), 65);
}

#[tokio::test]
async fn a_split_creates_the_new_ticket_and_refuses_an_existing_one() {
    let log = MemoryLog::new();
    let service = service(log.clone());
    open_critical(&service).await;
    let split = |id: &str, new_ticket| {
        with_id(
            agent(
                opened_at() + TimeDelta::minutes(2),
                CommandBody::Split(SplitTicket {
                    new_ticket,
                    category: CategoryId::new("billing").unwrap(),
                    severity: Severity::B,
                    title: text("refund"),
                    description: text(""),
                }),
            ),
            id,
        )
    };
    let result = service.execute(split("split-1", other_ticket_id()).into()).await.unwrap();
    assert_eq!(result.events.len(), 3);
    assert_eq!(log.stream_version(other_ticket_id()).unwrap(), 2);
    let err = service.execute(split("split-2", other_ticket_id()).into()).await.unwrap_err();
    assert_eq!(err, ServiceError::Rejected(DomainError::TicketAlreadyExists(other_ticket_id())));
}

#[tokio::test]
async fn snapshots_are_written_and_used_and_a_bad_one_is_rebuilt() {
    let log = MemoryLog::new();
    let snapshots = MemorySnapshots::default();
    let config = ServiceConfig { snapshot_every: 2, ..ServiceConfig::default() };
    let make = || {
        CommandService::new(
            log.clone(),
            Arc::new(regional_operator()),
            Some(Arc::new(snapshots.clone()) as Arc<dyn SnapshotStore>),
            config.clone(),
        )
    };
    let service = make();
    open_critical(&service).await;
    for i in 0..5 {
        let c = with_id(
            command(
                ActorKind::Customer,
                "c",
                opened_at() + TimeDelta::minutes(i),
                CommandBody::RecordCustomerReply { message: text("x") },
            ),
            &format!("r{i}"),
        );
        service.execute(c.into()).await.unwrap();
    }
    let bytes = snapshots.load(ticket_id()).unwrap().expect("a snapshot was written");
    let snap = decode_snapshot(&bytes).unwrap();
    assert!(snap.version() >= 4);
    let (expected, _) = state_at(&log, ticket_id(), At::Now).unwrap();
    assert_eq!(*make().state(ticket_id()).unwrap(), expected);
    snapshots.save(ticket_id(), b"\x00\x00\x00\x09old format".to_vec()).unwrap();
    assert_eq!(*make().state(ticket_id()).unwrap(), expected);
    snapshots.save(ticket_id(), vec![0, 0, 0, 1, 0xff, 0xff]).unwrap();
    assert_eq!(*make().state(ticket_id()).unwrap(), expected);
}

#[tokio::test]
async fn state_at_a_position_or_an_instant() {
    let log = MemoryLog::new();
    let service = service(log.clone());
    open_critical(&service).await;
    service
        .execute(
            agent(opened_at() + TimeDelta::minutes(20), CommandBody::RecordAgentResponse { message: text("m") }).into(),
        )
        .await
        .unwrap();
    service
        .execute(agent(opened_at() + TimeDelta::minutes(40), CommandBody::Resolve { resolution: text("r") }).into())
        .await
        .unwrap();
    let (at_one, last) = state_at(&log, ticket_id(), At::Position(1)).unwrap();
    assert_eq!((at_one.version(), last), (1, 1));
    let (at_30, _) = state_at(&log, ticket_id(), At::Instant(opened_at() + TimeDelta::minutes(30))).unwrap();
    assert_eq!(at_30.ticket().unwrap().status, Status::Open);
    assert!(at_30.ticket().unwrap().first_response_at.is_some());
    let (now, _) = state_at(&log, ticket_id(), At::Now).unwrap();
    assert_eq!(now.ticket().unwrap().status, Status::Resolved);
    let (before, last) = state_at(&log, ticket_id(), At::Instant(opened_at() - TimeDelta::seconds(1))).unwrap();
    assert_eq!((before, last), (TicketState::Unopened, 0));
}

async fn lifecycle(service: &CommandService<MemoryLog>) {
    open_critical(service).await;
    let due = opened_at() + TimeDelta::hours(1);
    service
        .execute(
            timer(
                due,
                CommandBody::RecordSlaBreach { metric: Metric::FirstResponse, cycle: 1, due_at: due, at_import: false },
            )
            .into(),
        )
        .await
        .unwrap();
    service
        .execute(agent(due + TimeDelta::minutes(1), CommandBody::RequestCustomerInfo { request: text("logs") }).into())
        .await
        .unwrap();
    service
        .execute(
            command(
                ActorKind::Customer,
                "c",
                due + TimeDelta::minutes(30),
                CommandBody::RecordCustomerReply { message: text("here") },
            )
            .into(),
        )
        .await
        .unwrap();
    service
        .execute(agent(due + TimeDelta::hours(2), CommandBody::Resolve { resolution: text("done") }).into())
        .await
        .unwrap();
}

#[tokio::test]
async fn the_audit_re_runs_every_decision() {
    let log = MemoryLog::new();
    let service = service(log.clone());
    lifecycle(&service).await;
    let report = audit(&log, &[regional_operator()], |_, _, _| {}).unwrap();
    assert!(report.is_clean(), "{:?}", report.problems);
    assert_eq!((report.events, report.tickets, report.commands, report.replayed), (log.head(), 1, 5, 5));
    let without = audit(&log, &[], |_, _, _| {}).unwrap();
    assert_eq!(without.skipped.get("regional-operator@2026-12-01.1"), Some(&5));
    assert!(without.is_clean());
}

#[tokio::test]
async fn the_audit_catches_a_policy_changed_without_a_new_version() {
    let log = MemoryLog::new();
    lifecycle(&service(log.clone())).await;
    let text = include_str!("../../../../deploy/policies/regional-operator.toml");
    let altered = Policy::from_toml(
        "altered.toml",
        &text.replace(
            "first_response = { hours = 1, calendar = \"always\" }",
            "first_response = { hours = 2, calendar = \"always\" }",
        ),
    )
    .unwrap();
    let report = audit(&log, &[altered], |_, _, _| {}).unwrap();
    assert!(!report.is_clean());
    assert_eq!(report.problems[0].position, 1);
}

#[tokio::test]
async fn service_clock_commands_are_stamped_when_decided() {
    let log = MemoryLog::new();
    let at = beijing(2026, 11, 21, 9, 30);
    let service = CommandService::with_clock(
        log.clone(),
        Arc::new(regional_operator()),
        None,
        ServiceConfig::default(),
        Arc::new(crate::SimulatedClock::new(at)),
    );
    let mut request = CommandRequest::from(agent(utc(1999, 1, 1, 0, 0), open("advanced", "technical", Severity::A)));
    request.stamp = Stamp::ServiceClock;
    let result = service.execute(request).await.unwrap();
    assert_eq!(result.events[0].event.occurred_at, at);
    let stored = log.command(&result.events[0].command_id).unwrap().unwrap();
    assert_eq!(stored.command.issued_at, at, "the stored command carries the instant it was decided at");
}

/// A log whose appends wait, in call order, until the test opens its gate: appends of a ticket
/// are then in flight together, as under load, and are applied in the order they were called.
#[derive(Debug, Clone, Default)]
struct GatedLog {
    log: MemoryLog,
    gate: Arc<std::sync::Mutex<Gate>>,
}

type Held =
    (ticket_log::AppendRequest, tokio::sync::oneshot::Sender<Result<ticket_log::AppendOutcome, ticket_log::LogError>>);

#[derive(Debug, Default)]
struct Gate {
    closed: bool,
    held: Vec<Held>,
}

impl GatedLog {
    fn close(&self) {
        self.gate.lock().unwrap().closed = true;
    }

    fn held(&self) -> usize {
        self.gate.lock().unwrap().held.len()
    }

    /// Applies the held appends in call order and lets later ones through.
    fn open(&self) {
        let mut gate = self.gate.lock().unwrap();
        gate.closed = false;
        for (request, reply) in gate.held.drain(..) {
            let applied = self.log.append(request);
            tokio::spawn(async move { reply.send(applied.await) });
        }
    }
}

impl EventLog for GatedLog {
    fn append(
        &self,
        request: ticket_log::AppendRequest,
    ) -> impl std::future::Future<Output = Result<ticket_log::AppendOutcome, ticket_log::LogError>> + Send + 'static
    {
        let mut gate = self.gate.lock().unwrap();
        let (reply, answer) = tokio::sync::oneshot::channel();
        let now = if gate.closed {
            gate.held.push((request, reply));
            None
        } else {
            Some(self.log.append(request))
        };
        async move {
            match now {
                Some(applied) => applied.await,
                None => answer.await.unwrap(),
            }
        }
    }
    fn stream_version(&self, ticket: TicketId) -> Result<u64, ticket_log::LogError> {
        self.log.stream_version(ticket)
    }
    fn read_stream(&self, ticket: TicketId, from: u64) -> Result<Vec<RecordedEvent>, ticket_log::LogError> {
        self.log.read_stream(ticket, from)
    }
    fn read_from(&self, from: u64, limit: usize) -> Result<Vec<RecordedEvent>, ticket_log::LogError> {
        self.log.read_from(from, limit)
    }
    fn head(&self) -> u64 {
        self.log.head()
    }
    fn watch_head(&self) -> tokio::sync::watch::Receiver<u64> {
        self.log.watch_head()
    }
    fn command(&self, id: &CommandId) -> Result<Option<ticket_log::CommandRecord>, ticket_log::LogError> {
        self.log.command(id)
    }
    fn commands_from(&self, from: u64, limit: usize) -> Result<Vec<ticket_log::CommandRecord>, ticket_log::LogError> {
        self.log.commands_from(from, limit)
    }
    fn outbox_pending(&self, limit: usize) -> Result<Vec<u64>, ticket_log::LogError> {
        self.log.outbox_pending(limit)
    }
    fn mark_published(&self, up_to: u64) -> Result<(), ticket_log::LogError> {
        self.log.mark_published(up_to)
    }
    fn rewind_published(&self, to: u64) -> Result<(), ticket_log::LogError> {
        self.log.rewind_published(to)
    }
    fn published_sequence(&self) -> Result<u64, ticket_log::LogError> {
        self.log.published_sequence()
    }
    fn set_published_sequence(&self, sequence: u64) -> Result<(), ticket_log::LogError> {
        self.log.set_published_sequence(sequence)
    }
    fn published(&self) -> Result<u64, ticket_log::LogError> {
        self.log.published()
    }
}

fn gated_service(log: &GatedLog) -> CommandService<GatedLog> {
    CommandService::new(log.clone(), Arc::new(regional_operator()), None, ServiceConfig::default())
}

/// Runs the other tasks of this (current-thread) runtime until `done`, within a deadline.
async fn until(mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !done() {
        assert!(std::time::Instant::now() < deadline, "condition not reached within 10 s");
        tokio::task::yield_now().await;
    }
}

/// Polls a future once: its output if it is ready at once.
async fn poll_once<F: std::future::Future + Unpin>(future: &mut F) -> Option<F::Output> {
    tokio::select! {
        biased;
        output = future => Some(output),
        () = std::future::ready(()) => None,
    }
}

fn spawn_execute<L: EventLog>(
    service: &CommandService<L>,
    command: Command,
) -> tokio::task::JoinHandle<Result<CommandResult, ServiceError>> {
    let service = service.clone();
    tokio::spawn(async move { service.execute(command.into()).await })
}

fn assert_audit_clean<L: EventLog>(log: &L) {
    let report = audit(log, &[regional_operator()], |_, _, _| {}).unwrap();
    assert!(report.is_clean(), "{:?}", report.problems);
    assert_eq!(report.replayed, report.commands);
}

fn resolve(minutes: i64, id: &str) -> Command {
    with_id(agent(opened_at() + TimeDelta::minutes(minutes), CommandBody::Resolve { resolution: text("r") }), id)
}

fn respond(minutes: i64, id: &str) -> Command {
    with_id(
        agent(opened_at() + TimeDelta::minutes(minutes), CommandBody::RecordAgentResponse { message: text("m") }),
        id,
    )
}

#[tokio::test]
async fn a_retry_of_a_command_in_flight_gets_its_result_not_a_refusal() {
    let log = GatedLog::default();
    let service = gated_service(&log);
    service.execute(agent(opened_at(), open("advanced", "technical", Severity::A)).into()).await.unwrap();
    log.close();
    let first = spawn_execute(&service, resolve(10, "resolve"));
    until(|| log.held() == 1).await;
    // Decided on the staged state (resolved), the retry would be refused: it must wait instead.
    let mut retry = Box::pin(service.execute(resolve(11, "resolve").into()));
    assert!(poll_once(&mut retry).await.is_none(), "the retry did not wait for the first send");
    log.open();
    let first = first.await.unwrap().unwrap();
    let retry = retry.await.unwrap();
    assert_eq!((first.duplicate, retry.duplicate), (false, true));
    assert_eq!(first.events, retry.events);
    assert_eq!(log.head(), 2);
}

#[tokio::test]
async fn a_retry_of_a_durable_command_is_answered_from_the_log_while_others_are_in_flight() {
    let log = GatedLog::default();
    let service = gated_service(&log);
    service.execute(agent(opened_at(), open("advanced", "technical", Severity::A)).into()).await.unwrap();
    let stored = service.execute(respond(5, "c").into()).await.unwrap();
    log.close();
    let w = spawn_execute(&service, resolve(10, "w"));
    until(|| log.held() == 1).await;
    // The sequence of issue 10: a retry of `c` decided now would be staged after `w` and
    // answered as a duplicate; `x`, decided after it, would then pass the version check.
    let retry = spawn_execute(&service, respond(11, "c"));
    until(|| retry.is_finished()).await;
    assert_eq!(log.held(), 1, "the retry was decided and queued");
    let retry = retry.await.unwrap().unwrap();
    assert_eq!((retry.duplicate, &retry.events), (true, &stored.events));
    let reopen = with_id(
        command(
            ActorKind::Customer,
            "acme-admin",
            opened_at() + TimeDelta::minutes(12),
            CommandBody::Reopen { reason: text("no") },
        ),
        "x",
    );
    let x = spawn_execute(&service, reopen);
    until(|| log.held() == 2).await;
    log.open();
    assert!(!w.await.unwrap().unwrap().duplicate);
    assert_eq!(x.await.unwrap().unwrap().events[0].version, 4);
    assert_eq!(log.head(), 4);
    assert_audit_clean(&log.log);
}

/// Two services on one log: the second decides a command id the first has in flight (its
/// registry cannot know), and then another command after it. The log answers the first as a
/// duplicate, refuses the second by its basis, and the service decides it again.
#[tokio::test]
async fn a_duplicate_in_the_same_group_cuts_the_chain_and_what_was_decided_after_it_is_decided_again() {
    let log = GatedLog::default();
    let (a, b) = (gated_service(&log), gated_service(&log));
    a.execute(agent(opened_at(), open("advanced", "technical", Severity::A)).into()).await.unwrap();
    b.state(ticket_id()).unwrap();
    log.close();
    let original = spawn_execute(&a, respond(5, "c"));
    until(|| log.held() == 1).await;
    let repeat = spawn_execute(&b, respond(5, "c"));
    until(|| log.held() == 2).await;
    let after = spawn_execute(&b, resolve(10, "x"));
    until(|| log.held() == 3).await;
    log.open();
    let (original, repeat) = (original.await.unwrap().unwrap(), repeat.await.unwrap().unwrap());
    assert_eq!((original.duplicate, repeat.duplicate), (false, true));
    assert_eq!(original.events, repeat.events);
    let after = after.await.unwrap().unwrap();
    assert_eq!((after.duplicate, after.events[0].version), (false, 3));
    assert_eq!(log.head(), 3);
    assert_audit_clean(&log.log);
}

/// The cache keeps at most one ticket: a ticket evicted with an append in flight is reloaded
/// from the log and decided on its durable version, which the append in flight then moves.
#[tokio::test]
async fn a_ticket_evicted_with_appends_in_flight_is_decided_again_on_the_log() {
    let log = GatedLog::default();
    let config = ServiceConfig { cache_capacity: 1, ..ServiceConfig::default() };
    let service = CommandService::new(log.clone(), Arc::new(regional_operator()), None, config);
    service.execute(agent(opened_at(), open("advanced", "technical", Severity::A)).into()).await.unwrap();
    let mut other = agent(opened_at(), open("advanced", "technical", Severity::B));
    (other.id, other.ticket_id) = (CommandId::new("open-other").unwrap(), other_ticket_id());
    service.execute(other.into()).await.unwrap();
    log.close();
    let w = spawn_execute(&service, respond(5, "w"));
    until(|| log.held() == 1).await;
    service.state(other_ticket_id()).unwrap();
    let x = spawn_execute(&service, resolve(10, "x"));
    until(|| log.held() == 2).await;
    log.open();
    assert_eq!(w.await.unwrap().unwrap().events[0].version, 2);
    assert_eq!(x.await.unwrap().unwrap().events[0].version, 3);
    assert_audit_clean(&log.log);
}

#[tokio::test]
async fn settling_confirms_a_staged_append_and_those_before_it_and_a_failure_cuts_the_rest() {
    let service = service(MemoryLog::new());
    open_critical(&service).await;
    let base = service.state(ticket_id()).unwrap();
    let tokens: Vec<ticket_log::AppendToken> = (0..3).map(|_| ticket_log::AppendToken::next()).collect();
    let stage_chain = || {
        let mut basis = service.basis(ticket_id()).unwrap().0;
        for token in &tokens {
            service.stage(ticket_id(), &basis, *token, (*basis).clone());
            basis = service.basis(ticket_id()).unwrap().0;
        }
    };
    let staged = |service: &CommandService<MemoryLog>| -> Vec<ticket_log::AppendToken> {
        service.cache().get(&ticket_id()).map(|c| c.staged.iter().map(|(t, _)| *t).collect()).unwrap_or_default()
    };
    stage_chain();
    assert_eq!(staged(&service), tokens);
    // A decision made on a state the chain has moved past is not staged.
    service.stage(ticket_id(), &base, ticket_log::AppendToken::next(), (*base).clone());
    assert_eq!(staged(&service), tokens);

    // Settled out of order: the second one confirms the first as well.
    service.settle(ticket_id(), tokens[1], true);
    assert_eq!(staged(&service), &tokens[2..]);
    service.settle(ticket_id(), tokens[0], true);
    assert_eq!(staged(&service), &tokens[2..]);
    assert_eq!(service.basis(ticket_id()).unwrap().1, Some(tokens[2]));
    // The last one failed: nothing is in flight, the entry goes.
    service.settle(ticket_id(), tokens[2], false);
    assert!(service.cache().get(&ticket_id()).is_none());
    service.settle(ticket_id(), tokens[2], true);
    assert!(service.cache().get(&ticket_id()).is_none());

    // A failure in the middle cuts it and what follows; the one before stays in flight.
    service.state(ticket_id()).unwrap();
    stage_chain();
    service.settle(ticket_id(), tokens[1], false);
    assert_eq!(staged(&service), &tokens[..1]);
    let (state, after) = service.basis(ticket_id()).unwrap();
    assert_eq!(after, Some(tokens[0]));
    service.settle(ticket_id(), tokens[0], true);
    assert_eq!(service.basis(ticket_id()).unwrap(), (state, None));
}

/// A wall clock an operator can set back.
#[derive(Debug)]
struct SettableClock(std::sync::Mutex<Timestamp>);

impl SettableClock {
    fn set(&self, at: Timestamp) {
        *self.0.lock().unwrap() = at;
    }
}

impl crate::Clock for SettableClock {
    fn now(&self) -> Timestamp {
        *self.0.lock().unwrap()
    }
    fn wait_until(&self, _at: Timestamp) -> Wait<'_> {
        Box::pin(std::future::ready(()))
    }
}

fn on_clock(log: MemoryLog, at: Timestamp) -> (CommandService<MemoryLog>, Arc<SettableClock>) {
    let clock = Arc::new(SettableClock(std::sync::Mutex::new(at)));
    let service =
        CommandService::with_clock(log, Arc::new(regional_operator()), None, ServiceConfig::default(), clock.clone());
    (service, clock)
}

fn stamped(command: Command, stamp: Stamp) -> CommandRequest {
    CommandRequest { stamp, ..CommandRequest::from(command) }
}

#[tokio::test]
async fn a_wall_clock_set_back_never_runs_a_tickets_instants_backwards() {
    // Given a ticket opened on the service clock at 09:30
    let log = MemoryLog::new();
    let (service, clock) = on_clock(log.clone(), beijing(2026, 11, 21, 9, 30));
    let open = agent(utc(2100, 1, 1, 0, 0), open("advanced", "technical", Severity::A));
    service.execute(stamped(open, Stamp::ServiceClock)).await.unwrap();
    // When the wall clock is set back half an hour and an agent responds
    clock.set(beijing(2026, 11, 21, 9, 0));
    let respond = agent(utc(2100, 1, 1, 0, 0), CommandBody::RecordAgentResponse { message: text("on it") });
    let result = service.execute(stamped(respond, Stamp::ServiceClock)).await.unwrap();
    // Then the response is decided at the ticket's last instant, not before it, and not refused
    assert_eq!(result.events[0].event.occurred_at, beijing(2026, 11, 21, 9, 30));
    // And once the clock passes it again, commands take the clock's instant
    clock.set(beijing(2026, 11, 21, 9, 45));
    let reply = command(
        ActorKind::Customer,
        "acme",
        utc(1999, 1, 1, 0, 0),
        CommandBody::RecordCustomerReply { message: text("thanks") },
    );
    let result = service.execute(stamped(reply, Stamp::ServiceClock)).await.unwrap();
    assert_eq!(result.events[0].event.occurred_at, beijing(2026, 11, 21, 9, 45));
    assert!(result.events.iter().all(|e| !e.imported), "live events are not marked imported");
}

#[tokio::test]
async fn an_imported_command_keeps_its_past_instant_and_is_marked_imported() {
    let log = MemoryLog::new();
    let (service, _clock) = on_clock(log.clone(), beijing(2026, 11, 30, 12, 0));
    let result =
        service.execute(stamped(agent(opened_at(), open("advanced", "technical", Severity::A)), Stamp::Imported)).await;
    let result = result.unwrap();
    assert_eq!(result.events[0].event.occurred_at, opened_at());
    assert!(result.events.iter().all(|e| e.imported));
    assert!(log.read_from(1, 10).unwrap().iter().all(|e| e.imported), "the mark is stored");
    // Sent again (a resumed import), it is a duplicate, not a refusal.
    let again =
        service.execute(stamped(agent(opened_at(), open("advanced", "technical", Severity::A)), Stamp::Imported)).await;
    assert!(again.unwrap().duplicate);
}

#[tokio::test]
async fn an_imported_instant_ahead_of_the_service_clock_is_refused_and_nothing_appended() {
    let log = MemoryLog::new();
    let (service, _clock) = on_clock(log.clone(), opened_at());
    let future = agent(opened_at() + TimeDelta::seconds(1), open("advanced", "technical", Severity::A));
    let refused = service.execute(stamped(future, Stamp::Imported)).await.unwrap_err();
    assert_eq!(refused.kind(), ServiceErrorKind::Rejected(ErrorKind::InvalidCommand));
    let ServiceError::Rejected(DomainError::ImportedInstant { problem: ImportProblem::AheadOfClock { now }, .. }) =
        refused
    else {
        panic!("not refused as ahead of the clock: {refused:?}");
    };
    assert_eq!(now, opened_at());
    assert_eq!(log.head(), 0);
}

#[tokio::test]
async fn an_imported_instant_before_the_tickets_last_event_is_refused_and_nothing_appended() {
    let log = MemoryLog::new();
    let (service, _clock) = on_clock(log.clone(), beijing(2026, 11, 30, 12, 0));
    service
        .execute(stamped(agent(opened_at(), open("advanced", "technical", Severity::A)), Stamp::Imported))
        .await
        .unwrap();
    let respond = agent(opened_at() + TimeDelta::minutes(20), CommandBody::RecordAgentResponse { message: text("a") });
    service.execute(stamped(respond, Stamp::Imported)).await.unwrap();
    let earlier = agent(opened_at() + TimeDelta::minutes(10), CommandBody::RequestCustomerInfo { request: text("b") });
    let refused = service.execute(stamped(earlier, Stamp::Imported)).await.unwrap_err();
    let ServiceError::Rejected(DomainError::ImportedInstant {
        problem: ImportProblem::OutOfOrder { last_event_at },
        ..
    }) = refused
    else {
        panic!("not refused as out of order: {refused:?}");
    };
    assert_eq!(last_event_at, opened_at() + TimeDelta::minutes(20));
    assert_eq!(log.head(), 2);
}

#[tokio::test]
async fn the_audit_reports_decision_instants_that_run_backwards_or_lie_ahead_of_their_append() {
    // Given a hand-made log: a ticket opened, then an event stamped before the opening, then
    // one stamped a year after its append
    let log = MemoryLog::new();
    let open = agent(opened_at(), open("advanced", "technical", Severity::A));
    let opened = decide(&open, &TicketState::initial(), &regional_operator()).unwrap();
    let append = |command: Command, version: u64, events: Vec<Event>| ticket_log::AppendRequest {
        token: ticket_log::AppendToken::next(),
        command,
        policy: None,
        rules: Rules::CURRENT,
        correlation_id: None,
        causation_id: None,
        imported: false,
        streams: vec![ticket_log::StreamAppend {
            ticket_id: ticket_id(),
            expected_version: version,
            after: None,
            events,
        }],
    };
    log.append(append(open, 0, opened)).await.unwrap();
    let note = |at: Timestamp| Event {
        ticket_id: ticket_id(),
        occurred_at: at,
        kind: EventKind::AgentResponded { message: text("note"), clocks: Vec::new() },
    };
    let early = opened_at() - TimeDelta::minutes(5);
    let respond = agent(early, CommandBody::RecordAgentResponse { message: text("note") });
    log.append(append(respond, 1, vec![note(early)])).await.unwrap();
    let ahead = ticket_log::now() + TimeDelta::days(365);
    let respond = agent(ahead, CommandBody::RecordAgentResponse { message: text("note") });
    log.append(append(respond, 2, vec![note(ahead)])).await.unwrap();
    // When it is audited
    let report = audit(&log, &[], |_, _, _| {}).unwrap();
    // Then both are reported, by position, for the ticket
    let instants: Vec<(u64, &str)> = report
        .problems
        .iter()
        .filter(|p| p.problem.starts_with("decided at"))
        .map(|p| (p.position, if p.problem.contains("ahead") { "ahead" } else { "backwards" }))
        .collect();
    assert_eq!(instants, vec![(2, "backwards"), (3, "ahead")], "{:?}", report.problems);
    assert!(report.problems.iter().all(|p| p.ticket_id == Some(ticket_id())));
    // And on a test clock's log, whose instants run ahead of the wall clock by design, only the
    // instant running backwards is
    let simulated = crate::audit::audit_on(&log, &[], ticket_log::ClockKind::Simulated, |_, _, _| {}).unwrap();
    let instants: Vec<u64> =
        simulated.problems.iter().filter(|p| p.problem.starts_with("decided at")).map(|p| p.position).collect();
    assert_eq!(instants, vec![2], "{:?}", simulated.problems);
}

/// A severity A ticket opened three hours ago, imported (appended) now: its first-response
/// warnings, breach and escalations were all past at import.
fn imported_three_hours_ago() -> Command {
    agent(ticket_log::now() - TimeDelta::hours(3), open("advanced", "technical", Severity::A))
}

fn live_response() -> CommandRequest {
    stamped(
        agent(utc(2100, 1, 1, 0, 0), CommandBody::RecordAgentResponse { message: text("on it") }),
        Stamp::ServiceClock,
    )
}

fn names(result: &CommandResult) -> Vec<&'static str> {
    result.events.iter().map(|e| e.event.kind.name()).collect()
}

#[tokio::test]
async fn a_live_command_after_an_import_fires_nothing_past_at_import_and_the_audit_re_runs_it() {
    // Given a ticket whose history was imported
    let log = MemoryLog::new();
    let service = service(log.clone());
    service.execute(stamped(imported_three_hours_ago(), Stamp::Imported)).await.unwrap();
    // When an agent responds on the service's (wall) clock
    let result = service.execute(live_response()).await.unwrap();
    // Then the breach past at import is recorded as detected at import, and no warning and no
    // escalation past at import is
    assert_eq!(names(&result), ["sla_breached", "agent_responded"]);
    assert!(result.events.iter().all(|e| !e.imported));
    // And the audit, folding the log, decides it the same way
    assert_audit_clean(&log);
}

#[tokio::test]
async fn a_live_command_sent_while_an_import_is_in_flight_is_decided_on_the_import_as_stored() {
    // Given a ticket opened by an import, and an imported response held before the log
    let log = GatedLog::default();
    let service = gated_service(&log);
    let opening = with_id(imported_three_hours_ago(), "import-open");
    let opened_at = opening.issued_at;
    service.execute(stamped(opening, Stamp::Imported)).await.unwrap();
    log.close();
    let response = with_id(
        agent(opened_at + TimeDelta::minutes(10), CommandBody::RecordAgentResponse { message: text("imported") }),
        "import-respond",
    );
    let imported = {
        let service = service.clone();
        tokio::spawn(async move { service.execute(stamped(response, Stamp::Imported)).await })
    };
    until(|| log.held() == 1).await;
    // When a live command arrives before the import's append is durable
    let live = {
        let service = service.clone();
        let request = stamped(
            agent(
                utc(2100, 1, 1, 0, 0),
                CommandBody::Escalate { tier: Tier::new("tier-2").unwrap(), team: None, reason: text("x") },
            ),
            Stamp::ServiceClock,
        );
        tokio::spawn(async move { service.execute(request).await })
    };
    for _ in 0..100 {
        tokio::task::yield_now().await;
    }
    log.open();
    let imported = imported.await.unwrap().unwrap();
    let live = live.await.unwrap().unwrap();
    // Then the live decision comes after the imported one and settles nothing past at import
    assert!(live.events[0].position > imported.events[imported.events.len() - 1].position);
    assert!(
        live.events.iter().all(|e| !matches!(e.event.kind.name(), "sla_warning" | "sla_breached")),
        "{:?}",
        names(&live)
    );
    assert_audit_clean(&log.log);
}
