//! The read models through the whole engine: a sled log, the command service, the timer on a
//! simulated clock, and the projector following the log.

use std::sync::Arc;
use std::time::Duration;

use chrono::TimeDelta;
use ticket_domain::testing::{beijing, open, text};
use ticket_domain::{CommandBody, CustomerId, Policy, Severity, Status, TicketId, Timestamp};
use ticket_log::{EventLog, StateBatch, StateStore};
use ticket_log_sled::RedbState;
use ticket_projections::answer::{self, Views};
use ticket_projections::whatif::what_if;
use ticket_projections::{At, Period, Projector, ProjectorConfig, ReadModels};
use ticket_proto::pb;
use ticket_service::Clock;
use tokio::sync::watch;

use crate::shipped_policy;
use crate::timers::{Engine, new_ticket};

/// Every query's answer, as the API replies.
#[derive(Debug, PartialEq)]
struct Answers {
    tickets: Vec<Result<pb::TicketView, pb::Error>>,
    customers: Vec<pb::TicketList>,
    board: pb::Board,
    compliance: Vec<pb::ComplianceReport>,
    timelines: Vec<Result<pb::Timeline, pb::Error>>,
}

fn answers(views: &impl Views, log: &impl EventLog, tickets: &[TicketId], policy: &Policy) -> Answers {
    let now = beijing(2026, 11, 23, 12, 0);
    let mut customers: Vec<CustomerId> =
        tickets.iter().filter_map(|t| views.ticket(*t).unwrap().0.map(|t| t.customer)).collect();
    customers.sort();
    customers.dedup();
    let day = |d| Some(beijing(2026, 11, d, 0, 0));
    Answers {
        tickets: tickets.iter().map(|t| answer::ticket(views, *t, policy, now)).collect(),
        customers: customers
            .iter()
            .flat_map(|c| {
                [(false, 100), (true, 1000), (true, 3)]
                    .map(|(r, l)| answer::customer(views, c, r, l, policy, now).unwrap())
            })
            .collect(),
        board: answer::board(views, 1000).unwrap(),
        compliance: [Period::default(), Period { from: day(21), to: day(22) }, Period { from: day(22), to: None }]
            .into_iter()
            .map(|p| answer::compliance(views, p, policy).unwrap())
            .collect(),
        timelines: tickets.iter().map(|t| answer::timeline(views, *t, log)).collect(),
    }
}

fn respond() -> CommandBody {
    CommandBody::RecordAgentResponse { message: text("looking into it") }
}

/// The shipped regional-operator policy with severity A's first response tightened to 30 minutes.
fn tightened() -> Policy {
    let text = std::fs::read_to_string(crate::policy_path("regional-operator.toml")).unwrap();
    let a = "first_response = { hours = 1, calendar = \"always\" }";
    assert!(text.contains(a), "the shipped policy states A's first response as the test expects");
    let candidate = text
        .replace(a, "first_response = { minutes = 30, calendar = \"always\" }")
        .replace("version = \"2026-12-01.1\"", "version = \"candidate\"");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("candidate.toml");
    std::fs::write(&path, candidate).unwrap();
    Policy::load(&path).unwrap()
}

/// Four tickets on a Saturday night: X answered at 45 minutes, Y at 10, W never, Z a B ticket.
async fn saturday(engine: &Engine) -> [TicketId; 4] {
    let [x, y, w, z] = [new_ticket(), new_ticket(), new_ticket(), new_ticket()];
    let at = |h, m| beijing(2026, 11, 21, h, m);
    engine.at(at(3, 0), x, open("advanced", "technical", Severity::A)).await.unwrap();
    engine.at(at(3, 0), w, open("advanced", "technical", Severity::A)).await.unwrap();
    engine.at(at(3, 0), z, open("standard", "technical", Severity::B)).await.unwrap();
    engine.at(at(3, 10), y, open("advanced", "technical", Severity::A)).await.unwrap();
    engine.step_to(at(3, 20)).await;
    engine.execute(y, respond()).await.unwrap();
    engine.step_to(at(3, 30)).await;
    engine.execute(z, respond()).await.unwrap();
    engine.step_to(at(3, 45)).await;
    engine.execute(x, respond()).await.unwrap();
    engine.step_to(at(6, 0)).await;
    [x, y, w, z]
}

#[tokio::test]
async fn what_if_reports_nothing_under_the_live_policy_and_exactly_the_tightened_tickets() {
    let engine = Engine::start(shipped_policy("regional-operator.toml"), beijing(2026, 11, 21, 2, 0));
    let [x, y, w, z] = saturday(&engine).await;
    let horizon = beijing(2026, 11, 21, 6, 0);
    let head = engine.log().head();

    let live = what_if(engine.log(), &engine.policy, Period::default(), horizon, |_, _| {}).unwrap();
    assert_eq!((live.tickets, live.commands), (4, 7));
    assert_eq!(live.changed, [], "the live policy replays to exactly what was recorded");
    assert_eq!((live.breaches_live, live.breaches_candidate), (1, 1), "W breached");

    let candidate = what_if(engine.log(), &tightened(), Period::default(), horizon, |_, _| {}).unwrap();
    let changed: std::collections::BTreeSet<TicketId> = candidate.changed.iter().map(|t| t.ticket_id).collect();
    assert_eq!(changed, [x, y, w].into_iter().collect(), "the A tickets change; the B ticket Z does not");
    assert!(!changed.contains(&z));
    let changes = |t: TicketId| candidate.changed.iter().find(|c| c.ticket_id == t).unwrap().changes.clone();
    let x_breach = changes(x).into_iter().find(|c| c.kind == "breach").expect("X breaches under the candidate");
    assert_eq!(x_breach.live, None);
    assert_eq!(x_breach.candidate.as_deref(), Some("breached, was due 2026-11-20T19:30:00Z"));
    assert!(changes(y).iter().all(|c| c.kind == "due"), "Y was answered in time either way: {:?}", changes(y));
    let w_breaches: Vec<_> = changes(w).into_iter().filter(|c| c.kind == "breach").collect();
    assert_eq!(w_breaches.len(), 2, "W's breach moves from 04:00 to 03:30 (Beijing)");
    assert_eq!((candidate.breaches_live, candidate.breaches_candidate), (1, 2));
    assert_eq!(engine.log().head(), head, "what-if writes nothing");

    // Only the tickets opened in a period are replayed.
    let period = Period { from: Some(beijing(2026, 11, 21, 3, 5)), to: None };
    let late = what_if(engine.log(), &tightened(), period, horizon, |_, _| {}).unwrap();
    assert_eq!(late.tickets, 1);
    assert_eq!(late.changed.iter().map(|t| t.ticket_id).collect::<Vec<_>>(), [y]);
}

#[tokio::test]
async fn queries_see_their_writes_and_a_rebuilt_projection_equals_the_live_one() {
    let engine = Engine::start(shipped_policy("regional-operator.toml"), beijing(2026, 11, 21, 2, 0));
    let dir = tempfile::tempdir().unwrap();
    let config =
        ProjectorConfig { batch: 7, flush_events: 25, catch_up_flush_events: 25, ..ProjectorConfig::default() };
    let store: Arc<dyn StateStore> = Arc::new(RedbState::open(dir.path().join("state.redb")).unwrap());
    let projector = Projector::open(engine.log().clone(), Some(store.clone()), config.clone());
    let (stop, stopped) = watch::channel(false);
    let task = projector.spawn(stopped);

    // Read-your-writes: each acknowledged command's position is visible once waited for.
    let mut tickets = Vec::new();
    for i in 0..12u32 {
        let ticket = new_ticket();
        let at = beijing(2026, 11, 21, 3, 0) + TimeDelta::minutes(i64::from(i) * 7);
        let severity = if i % 3 == 0 { Severity::A } else { Severity::B };
        let opened = engine.at(at, ticket, open("advanced", "technical", severity)).await.unwrap();
        assert!(projector.wait_for(opened.last_position(), Duration::from_secs(30)).await);
        assert!(
            ticket_projections::answer::Views::ticket(&projector, ticket).unwrap().0.is_some(),
            "the open is visible"
        );
        assert!(projector.board.read().model().entry(ticket).is_some(), "and on the board");
        if i % 2 == 0 {
            let resolved = engine.execute(ticket, CommandBody::Resolve { resolution: text("fixed") }).await.unwrap();
            assert!(projector.wait_for(resolved.last_position(), Duration::from_secs(30)).await);
            let status = ticket_projections::answer::Views::ticket(&projector, ticket).unwrap().0.map(|t| t.status);
            assert_eq!(status, Some(Status::Resolved));
            assert!(projector.board.read().model().entry(ticket).is_none(), "resolved tickets leave the board");
        }
        tickets.push(ticket);
    }
    engine.step_to(beijing(2026, 11, 22, 12, 0)).await;
    let head = engine.log().head();
    assert!(projector.wait_for(head, Duration::from_secs(30)).await);

    // A rebuild in place, the follower running.
    let rebuilt = ReadModels::build(engine.log(), At::Now, |_, _| {}).unwrap();
    let log = engine.log();
    let expected = answers(&rebuilt, log, &tickets, &engine.policy);
    assert_eq!(answers(&projector, log, &tickets, &engine.policy), expected);
    projector.rebuild("board", |_, _| {}).unwrap();
    projector.rebuild("compliance", |_, _| {}).unwrap();
    assert!(projector.rebuild("nonsense", |_, _| {}).is_err());
    assert_eq!(answers(&projector, log, &tickets, &engine.policy), expected);
    assert!(projector.lag().iter().all(|l| l.behind == 0), "{:?}", projector.lag());
    let line = projector.timeline(tickets[0], log).unwrap().0;
    assert!(line.iter().all(|e| !e.summary.is_empty() && e.actor.contains(':') && !e.policy.is_empty()));
    assert_eq!(line.first().map(|e| e.event_type.as_str()), Some("opened"));
    assert_eq!(line.last().map(|e| e.event_type.as_str()), Some("resolved"));

    // Stopped and reopened from the state store: the same read models, nothing to catch up, and
    // in memory only the open tickets' rows.
    stop.send_replace(true);
    task.await.unwrap().unwrap();
    drop(projector);
    let reopened = Projector::open(engine.log().clone(), Some(store), config);
    assert_eq!(reopened.position(), head);
    assert_eq!(answers(&reopened, log, &tickets, &engine.policy), expected);
    let open = rebuilt.tickets.model().iter_live().filter(|t| t.status != Status::Resolved).count();
    assert_eq!(reopened.live_rows(), [open; 3]);

    // Time travel: as of an earlier instant, the resolved tickets were still open.
    let earlier = ReadModels::build(engine.log(), At::Instant(beijing(2026, 11, 21, 3, 8)), |_, _| {}).unwrap();
    assert_eq!(earlier.tickets.model().live(), 2);
    assert!(
        earlier.tickets.model().ticket(tickets[0], u64::MAX).unwrap().is_some_and(|t| t.status == Status::Resolved)
    );
    assert!(earlier.tickets.model().ticket(tickets[1], u64::MAX).unwrap().is_some_and(|t| t.status == Status::Open));
    assert!(earlier.board.model().entry(tickets[1]).is_some());
    let before = ReadModels::build(engine.log(), At::Instant(beijing(2026, 11, 21, 2, 59)), |_, _| {}).unwrap();
    assert_eq!(before.tickets.model().live(), 0);
    let at_two = ReadModels::build(engine.log(), At::Position(2), |_, _| {}).unwrap();
    assert_eq!(at_two.timeline(tickets[0], log).unwrap().1, 2);
}

/// A log of `tickets` tickets with a few commands each, written by the engine.
pub(crate) async fn busy_log(tickets: usize) -> (Engine, Timestamp) {
    let engine = Engine::start(shipped_policy("regional-operator.toml"), beijing(2026, 11, 21, 2, 0));
    let start = beijing(2026, 11, 21, 3, 0);
    engine.advance_to(start).await;
    let mut handles = Vec::new();
    for i in 0..tickets {
        let ticket = new_ticket();
        let service = engine.service.clone();
        handles.push(async move {
            let run = |body| {
                let command = crate::timers::support_command(ticket, start, body);
                let service = service.clone();
                async move { service.execute(ticket_service::CommandRequest::from(command)).await.unwrap() }
            };
            run(open("advanced", "technical", if i % 2 == 0 { Severity::A } else { Severity::B })).await;
            run(respond()).await;
            run(CommandBody::RequestCustomerInfo { request: text("logs?") }).await;
            if i % 3 == 0 {
                run(CommandBody::Resolve { resolution: text("fixed") }).await;
            }
        });
    }
    futures::future::join_all(handles).await;
    (engine, start)
}

/// The position stored in a model's space.
fn stored_position(store: &RedbState, name: &str) -> u64 {
    let space = store.space(name).unwrap();
    space.get(b"m:position").unwrap().map_or(0, |b| u64::from_be_bytes(b.as_slice().try_into().unwrap()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_projector_killed_mid_rebuild_resumes_from_the_state_store_to_the_same_read_models() {
    let (engine, _) = busy_log(1500).await;
    let data = engine.dir.path().to_path_buf();
    let head = engine.log().head();
    let expected = ReadModels::build(engine.log(), At::Now, |_, _| {}).unwrap();
    let mut tickets = Vec::new();
    let mut next = 1;
    while let Some(batch) = Some(engine.log().read_from(next, 4096).unwrap()).filter(|b| !b.is_empty()) {
        next += batch.len() as u64;
        tickets.extend(batch.iter().map(|e| e.event.ticket_id));
    }
    tickets.sort();
    tickets.dedup();
    let policy = engine.policy.clone();
    let expected = answers(&expected, engine.log(), &tickets, &policy);
    // Everything holding the log lets go of it: ticketctl opens it exclusively.
    let Engine { dir: _keep, timer, service, .. } = engine;
    timer.unwrap().stop().await;
    drop(service);
    let layout = ticket_engine::DataDir::new(&data);

    // A rebuild that flushes every 50 events, killed once it has flushed some and not all. (The
    // engine's state goes first, so that the file's growth is the rebuild's.)
    std::fs::remove_file(layout.state()).unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_it-ticketctl"))
        .arg("--data-dir")
        .arg(&data)
        .args(["projections", "rebuild", "--checkpoint-events", "50"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // The store is ticketctl's while it runs (redb locks its file): watch the file grow instead.
    // Its first durable flush (after the first batch of 1024 events) has happened by 2 MiB; the
    // whole rebuild leaves some 4 MiB.
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let size = |file: &std::path::Path| std::fs::metadata(file).map_or(0, |m| m.len());
    while size(&layout.state()) < 2 * 1024 * 1024 {
        assert!(std::time::Instant::now() < deadline, "nothing flushed");
        assert!(child.try_wait().unwrap().is_none(), "the rebuild ended before it could be killed");
        std::thread::sleep(Duration::from_millis(1));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let store = RedbState::open(layout.state()).unwrap();
    let partial = stored_position(&store, "tickets");
    drop(store);
    assert!(partial > 0 && partial < head, "killed mid-rebuild ({partial} of {head})");

    // Restarted: caught up from the store, the read models equal a rebuild from scratch.
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_it-ticketctl"))
        .arg("--data-dir")
        .arg(&data)
        .args(["--json", "projections", "status", "--update"])
        .output()
        .unwrap();
    assert!(status.status.success(), "{}", String::from_utf8_lossy(&status.stderr));
    // Canonical proto3 JSON (`ticket.v1.ProjectionLags`), as remotely: a zero `behind` is left out.
    let lag: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    let projections = lag["projections"].as_array().unwrap();
    assert_eq!(projections.len(), 4, "{lag}");
    assert!(projections.iter().all(|l| l.get("behind").is_none_or(|b| b == "0")), "{lag}");
    assert!(lag.get("quarantined").is_none(), "{lag}");
    let log = ticket_log_sled::SledLog::open(ticket_log_sled::SledConfig::new(layout.log())).unwrap();
    let store: Arc<dyn StateStore> = Arc::new(RedbState::open(layout.state()).unwrap());
    let projector = Projector::open(log.clone(), Some(store), ProjectorConfig::default());
    assert_eq!(projector.position(), head, "flushed at the end");
    assert_eq!(answers(&projector, &log, &tickets, &policy), expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sled_store_resumes_as_flushed_after_a_drop_without_a_stop_and_rebuilds_another_format() {
    let (engine, _) = busy_log(60).await;
    let head = engine.log().head();
    let log = engine.log().clone();
    let tickets: Vec<TicketId> = {
        let mut t: Vec<_> = log.read_from(1, 100_000).unwrap().iter().map(|e| e.event.ticket_id).collect();
        t.sort();
        t.dedup();
        t
    };
    let expected = answers(&ReadModels::build(&log, At::Now, |_, _| {}).unwrap(), &log, &tickets, &engine.policy);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.redb");
    {
        let store: Arc<dyn StateStore> = Arc::new(RedbState::open(&path).unwrap());
        let projector = Projector::open(log.clone(), Some(store), ProjectorConfig::default());
        projector.catch_up(|_, _| {}).unwrap();
        projector.flush().unwrap();
        // Dropped without a stop (nothing more flushed).
    }
    let store = RedbState::open(&path).unwrap();
    assert_eq!(stored_position(&store, "board"), head);
    let shared: Arc<dyn StateStore> = Arc::new(store.clone());
    let reopened = Projector::open(log.clone(), Some(shared.clone()), ProjectorConfig::default());
    assert_eq!(reopened.position(), head);
    assert_eq!(answers(&reopened, &log, &tickets, &engine.policy), expected);
    drop(reopened);

    // Another format of the board: cleared and rebuilt from the log.
    let mut batch = StateBatch::new();
    batch.insert(b"m:format".to_vec(), vec![0, 0, 0, 9, 0, 0, 0, 9]);
    store.space("board").unwrap().apply(batch).unwrap();
    store.sync().unwrap();
    let rebuilt = Projector::open(log.clone(), Some(shared), ProjectorConfig::default());
    assert_eq!(rebuilt.board.position(), 0);
    assert_eq!(rebuilt.tickets.position(), head);
    rebuilt.catch_up(|_, _| {}).unwrap();
    assert_eq!(answers(&rebuilt, &log, &tickets, &engine.policy), expected);
}

/// One step of a random history.
#[derive(Debug, Clone, Copy)]
struct Op {
    kind: u8,
    pick: u8,
    minutes: u16,
    restart: bool,
}

fn ops() -> impl proptest::strategy::Strategy<Value = Vec<Op>> {
    use proptest::prelude::*;
    prop::collection::vec(
        (any::<u8>(), any::<u8>(), 0u16..900, proptest::bool::weighted(0.08))
            .prop_map(|(kind, pick, minutes, restart)| Op { kind, pick, minutes, restart }),
        1..60,
    )
}

/// Random commands through the engine (sled, the command service, the timer on a simulated
/// clock), with the projector following the log live and restarted from the state store now
/// and then; at the end its read models equal a rebuild from scratch.
async fn live_equals_rebuilt(ops: Vec<Op>) {
    let engine = Engine::start(shipped_policy("regional-operator.toml"), beijing(2026, 11, 20, 8, 0));
    let dir = tempfile::tempdir().unwrap();
    let config = ProjectorConfig {
        batch: 5,
        flush_events: 7,
        catch_up_flush_events: 7,
        catch_up_sync_events: 20,
        ..ProjectorConfig::default()
    };
    let store: Arc<dyn StateStore> = Arc::new(RedbState::open(dir.path().join("state.redb")).unwrap());
    let open_projector = || Projector::open(engine.log().clone(), Some(store.clone()), config.clone());
    let mut projector = open_projector();
    let (mut stop, stopped) = watch::channel(false);
    let mut task = projector.spawn(stopped);
    let mut tickets: Vec<TicketId> = Vec::new();
    let kinds = [
        ("advanced", "technical", Severity::A),
        ("advanced", "billing", Severity::B),
        ("standard", "technical", Severity::B),
        ("standard", "subscription", Severity::C),
    ];
    for op in ops {
        engine.step_to(engine.clock.now() + TimeDelta::minutes(i64::from(op.minutes))).await;
        let target = tickets.get(usize::from(op.pick) % tickets.len().max(1)).copied();
        let body = match (op.kind % 8, target) {
            (0, _) | (_, None) => {
                let (plan, category, severity) = kinds[usize::from(op.pick) % kinds.len()];
                let ticket = new_ticket();
                tickets.push(ticket);
                let _ = engine.execute(ticket, open(plan, category, severity)).await;
                continue;
            }
            (1, _) => respond(),
            (2, _) => CommandBody::RequestCustomerInfo { request: text("logs?") },
            (3, _) => CommandBody::RecordCustomerReply { message: text("attached") },
            (4, _) => CommandBody::SetSeverity { severity: Severity::B, reason: text("impact changed") },
            (5, _) => CommandBody::Escalate {
                tier: ticket_domain::Tier::new("tier-2").unwrap(),
                team: None,
                reason: text("expert"),
            },
            (6, _) => CommandBody::Resolve { resolution: text("fixed") },
            _ => CommandBody::Reopen { reason: text("again") },
        };
        if let Some(ticket) = target {
            // Refusals (a transition the rules do not allow) are part of a random history.
            let _ = engine.execute(ticket, body).await;
        }
        if op.restart {
            stop.send_replace(true);
            task.await.unwrap().unwrap();
            projector = open_projector();
            let (s, stopped) = watch::channel(false);
            stop = s;
            task = projector.spawn(stopped);
        }
    }
    engine.step_to(engine.clock.now() + TimeDelta::days(4)).await;
    let head = engine.log().head();
    assert!(projector.wait_for(head, Duration::from_secs(60)).await, "the projector caught up");
    let rebuilt = ReadModels::build(engine.log(), At::Now, |_, _| {}).unwrap();
    let log = engine.log();
    assert_eq!(answers(&projector, log, &tickets, &engine.policy), answers(&rebuilt, log, &tickets, &engine.policy));
    stop.send_replace(true);
    task.await.unwrap().unwrap();
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig { cases: 16, ..Default::default() })]

    #[test]
    fn the_live_projector_equals_a_rebuild_after_any_history(ops in ops()) {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        runtime.block_on(live_equals_rebuilt(ops));
    }
}
