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
            timer(due, CommandBody::RecordSlaBreach { metric: Metric::FirstResponse, cycle: 1, due_at: due }).into(),
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
    assert_eq!(without.skipped.get("regional-operator@2026-11-21.1"), Some(&5));
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
