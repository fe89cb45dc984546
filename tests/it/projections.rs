//! The read models through the whole engine: a sled log, the command service, the timer on a
//! simulated clock, and the projector following the log.

use std::time::Duration;

use chrono::TimeDelta;
use ticket_domain::testing::{beijing, open, text};
use ticket_domain::{CommandBody, Policy, Severity, Status, TicketId, Timestamp};
use ticket_log::EventLog;
use ticket_projections::whatif::what_if;
use ticket_projections::{At, Checkpoints, Period, Projector, ProjectorConfig, ReadModels};
use ticket_service::Clock;
use tokio::sync::watch;

use crate::shipped_policy;
use crate::timers::{Engine, new_ticket};

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
        .replace("version = \"2026-11-21.1\"", "version = \"candidate\"");
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
    let config = ProjectorConfig { batch: 7, checkpoint_events: 25, ..ProjectorConfig::default() };
    let projector = Projector::open(engine.log().clone(), Some(Checkpoints::new(dir.path())), config.clone());
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
        assert!(projector.tickets.read().model().ticket(ticket).is_some(), "the open is visible");
        assert!(projector.board.read().model().entry(ticket).is_some(), "and on the board");
        if i % 2 == 0 {
            let resolved = engine.execute(ticket, CommandBody::Resolve { resolution: text("fixed") }).await.unwrap();
            assert!(projector.wait_for(resolved.last_position(), Duration::from_secs(30)).await);
            let status = projector.tickets.read().model().ticket(ticket).map(|t| t.status);
            assert_eq!(status, Some(Status::Resolved));
            assert!(projector.board.read().model().entry(ticket).is_none(), "resolved tickets leave the board");
        }
        tickets.push(ticket);
    }
    engine.step_to(beijing(2026, 11, 22, 12, 0)).await;
    let head = engine.log().head();
    assert!(projector.wait_for(head, Duration::from_secs(30)).await);

    // A rebuild beside the live one, swapped in while the live one keeps serving.
    let rebuilt = ReadModels::build(engine.log(), At::Now, |_, _| {}).unwrap();
    assert_eq!(*projector.board.read(), rebuilt.board);
    projector.rebuild("board", |_, _| {}).unwrap();
    projector.rebuild("compliance", |_, _| {}).unwrap();
    assert!(projector.rebuild("nonsense", |_, _| {}).is_err());
    assert_eq!(*projector.tickets.read(), rebuilt.tickets);
    assert_eq!(*projector.board.read(), rebuilt.board);
    assert_eq!(*projector.timeline.read(), rebuilt.timeline);
    assert_eq!(*projector.compliance.read(), rebuilt.compliance);
    assert!(projector.lag().iter().all(|l| l.behind == 0), "{:?}", projector.lag());
    let mut line = projector.timeline.read().model().ticket(tickets[0]);
    ticket_projections::add_details(&mut line, tickets[0], engine.log()).unwrap();
    assert!(line.iter().all(|e| !e.summary.is_empty() && e.actor.contains(':') && !e.policy.is_empty()));
    assert_eq!(line.first().map(|e| e.event_type.as_str()), Some("opened"));
    assert_eq!(line.last().map(|e| e.event_type.as_str()), Some("resolved"));

    // Stopped and reopened from its checkpoints: the same read models, nothing to catch up.
    stop.send_replace(true);
    task.await.unwrap().unwrap();
    let reopened = Projector::open(engine.log().clone(), Some(Checkpoints::new(dir.path())), config);
    assert_eq!(reopened.position(), head);
    assert_eq!(*reopened.timeline.read(), rebuilt.timeline);
    assert_eq!(*reopened.compliance.read(), rebuilt.compliance);

    // Time travel: as of an earlier instant, the resolved tickets were still open.
    let earlier = ReadModels::build(engine.log(), At::Instant(beijing(2026, 11, 21, 3, 8)), |_, _| {}).unwrap();
    assert_eq!(earlier.tickets.model().len(), 2);
    assert!(earlier.tickets.model().ticket(tickets[0]).is_some_and(|t| t.status == Status::Resolved));
    assert!(earlier.tickets.model().ticket(tickets[1]).is_some_and(|t| t.status == Status::Open));
    assert!(earlier.board.model().entry(tickets[1]).is_some());
    let before = ReadModels::build(engine.log(), At::Instant(beijing(2026, 11, 21, 2, 59)), |_, _| {}).unwrap();
    assert!(before.tickets.model().is_empty());
    let at_two = ReadModels::build(engine.log(), At::Position(2), |_, _| {}).unwrap();
    assert_eq!(at_two.timeline.position(), 2);
}

/// A log of `tickets` tickets with a few commands each, written by the engine.
async fn busy_log(tickets: usize) -> (Engine, Timestamp) {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_projector_killed_mid_rebuild_resumes_from_its_checkpoints_to_the_same_read_models() {
    let (engine, _) = busy_log(1500).await;
    let data = engine.dir.path().to_path_buf();
    let head = engine.log().head();
    let expected = ReadModels::build(engine.log(), At::Now, |_, _| {}).unwrap();
    // Everything holding the log lets go of it: ticketctl opens it exclusively.
    let Engine { dir: _keep, timer, service, .. } = engine;
    timer.unwrap().stop().await;
    drop(service);
    let checkpoints = Checkpoints::new(data.join("projections"));

    // A rebuild that checkpoints every 50 events, killed once its first checkpoint is written.
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_it-ticketctl"))
        .arg("--data-dir")
        .arg(&data)
        .args(["projections", "rebuild", "--checkpoint-events", "50"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while !checkpoints.path("compliance").exists() {
        assert!(std::time::Instant::now() < deadline, "no checkpoint written");
        assert!(child.try_wait().unwrap().is_none(), "the rebuild ended before it could be killed");
        std::thread::yield_now();
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let partial = checkpoints.load::<ticket_projections::Tickets>().unwrap().unwrap();
    assert!(partial.position() < head, "killed mid-rebuild ({} of {head})", partial.position());

    // Restarted: caught up from its checkpoints, the read models equal a rebuild from scratch.
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
    assert_eq!(checkpoints.load::<ticket_projections::Tickets>().unwrap().unwrap(), expected.tickets);
    assert_eq!(checkpoints.load::<ticket_projections::Board>().unwrap().unwrap(), expected.board);
    assert_eq!(checkpoints.load::<ticket_projections::Timeline>().unwrap().unwrap(), expected.timeline);
    assert_eq!(checkpoints.load::<ticket_projections::Compliance>().unwrap().unwrap(), expected.compliance);
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
/// clock), with the projector following the log live and restarted from its checkpoints now
/// and then; at the end its read models equal a rebuild from scratch.
async fn live_equals_rebuilt(ops: Vec<Op>) {
    let engine = Engine::start(shipped_policy("regional-operator.toml"), beijing(2026, 11, 20, 8, 0));
    let dir = tempfile::tempdir().unwrap();
    let config = ProjectorConfig { batch: 5, checkpoint_events: 7, ..ProjectorConfig::default() };
    let open_projector = || Projector::open(engine.log().clone(), Some(Checkpoints::new(dir.path())), config.clone());
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
    assert_eq!(*projector.tickets.read(), rebuilt.tickets);
    assert_eq!(*projector.board.read(), rebuilt.board);
    assert_eq!(*projector.timeline.read(), rebuilt.timeline);
    assert_eq!(*projector.compliance.read(), rebuilt.compliance);
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
