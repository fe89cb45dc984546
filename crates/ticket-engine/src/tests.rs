#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::Duration;

use ticket_domain::testing::{agent, open, regional_operator, utc};
use ticket_domain::{ActorId, Severity, TicketId};
use ticket_service::{Clock, CommandRequest, SimulatedClock, Stamp};

use super::*;

fn config(dir: &Path, clock: Arc<SimulatedClock>) -> EngineConfig {
    EngineConfig {
        clock: EngineClock::Simulated(clock),
        timer: Some(TimerConfig::new(ActorId::new("ticket-timer").unwrap())),
        ..EngineConfig::new(DataDir::new(dir), Arc::new(regional_operator()))
    }
}

#[test]
fn the_layout_keeps_the_paths_deployed_directories_hold() {
    let dir = DataDir::new("/var/lib/ticketd");
    assert_eq!(
        [dir.log(), dir.timer_checkpoint(), dir.projections(), dir.nats_store()],
        [
            "/var/lib/ticketd/log",
            "/var/lib/ticketd/timer.checkpoint",
            "/var/lib/ticketd/projections",
            "/var/lib/ticketd/nats"
        ]
        .map(PathBuf::from)
    );
    assert_eq!(dir.state(), PathBuf::from("/var/lib/ticketd/state.redb"));
    assert_eq!(dir.state_sled(), PathBuf::from("/var/lib/ticketd/state"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_engine_decides_projects_and_leaves_its_checkpoints_at_stop() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(SimulatedClock::new(utc(2026, 11, 23, 1, 0)));
    let engine = Engine::start(config(dir.path(), clock.clone())).await.unwrap();
    let ticket = TicketId::from_uuid(uuid::Uuid::now_v7());
    let mut command = agent(clock.now(), open("advanced", "technical", Severity::A));
    command.ticket_id = ticket;
    let request = CommandRequest { command, correlation_id: None, causation_id: None, stamp: Stamp::AsIssued };
    let result = engine.service().execute(request).await.unwrap();
    let views = engine.views().unwrap();
    assert!(views.wait_for(result.last_position(), Duration::from_secs(30)).await);
    assert!(ticket_projections::answer::Views::ticket(views, ticket).unwrap().0.is_some());
    assert_eq!(views.live_rows(), [1, 1, 1], "the open ticket's rows are in memory");
    let timer = engine.timer().unwrap();
    let pending = timer.settled(clock.now(), result.last_position());
    let progress = tokio::time::timeout(Duration::from_secs(30), pending).await.unwrap().unwrap();
    assert!(progress.pending > 0, "{progress:?}");

    let stopped = engine.stop(Duration::from_secs(30)).await;
    assert!(stopped.clean, "{stopped:?}");
    assert_eq!(stopped.timer.map(|p| p.pending), Some(progress.pending));
    let layout = DataDir::new(dir.path());
    assert!(layout.state().is_file() && !layout.timer_checkpoint().exists() && !layout.projections().exists());

    // Started again on the same directory, the engine reads what it left.
    let engine = Engine::start(config(dir.path(), clock.clone())).await.unwrap();
    assert_eq!(engine.log().head(), result.last_position());
    assert_eq!(engine.views().unwrap().position(), result.last_position());
    assert!(engine.stop(Duration::from_secs(30)).await.clean);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_test_clock_fires_everything_due_on_the_way_and_a_log_keeps_its_clock_kind() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(SimulatedClock::new(utc(2026, 11, 23, 1, 0)));
    let engine = Engine::start(config(dir.path(), clock.clone())).await.unwrap();
    assert_eq!(engine.clock_kind(), ClockKind::Simulated);
    let test_clock = engine.test_clock().unwrap();
    let mut command = agent(clock.now(), open("advanced", "technical", Severity::A));
    command.ticket_id = TicketId::from_uuid(uuid::Uuid::now_v7());
    let request = CommandRequest { command, correlation_id: None, causation_id: None, stamp: Stamp::ServiceClock };
    let opened = engine.service().execute(request).await.unwrap();

    // Two hours on: the critical ticket's warnings, breach and escalations, each at its instant.
    let to = utc(2026, 11, 23, 3, 0);
    let advanced = test_clock.advance_to(to).await.unwrap();
    assert_eq!(
        (advanced.from, advanced.now, advanced.from_position),
        (utc(2026, 11, 23, 1, 0), to, opened.last_position())
    );
    let recorded = test_clock.recorded(advanced.from_position + 1, 100).unwrap();
    assert_eq!(recorded.len() as u64, advanced.head - advanced.from_position);
    assert!(recorded.iter().any(|e| e.event.kind.name() == "sla_breached"), "{recorded:?}");
    assert!(recorded.windows(2).all(|w| w[0].event.occurred_at <= w[1].event.occurred_at));
    assert!(recorded.iter().all(|e| e.event.occurred_at > advanced.from && e.event.occurred_at <= to));
    // Nothing fires twice, and the clock never runs backwards.
    let again = test_clock.advance_to(utc(2026, 11, 23, 4, 0)).await.unwrap();
    assert_eq!(again.head, again.from_position);
    assert!(matches!(test_clock.advance_to(to).await, Err(AdvanceError::Backwards { .. })));
    // The test clock holds the log open, as the engine does.
    drop(test_clock);
    assert!(engine.stop(Duration::from_secs(30)).await.clean);

    // The directory is a test clock's: the wall clock is refused.
    let wall = EngineConfig { clock: EngineClock::Wall, ..config(dir.path(), clock.clone()) };
    let refused = Engine::start(wall).await.unwrap_err();
    assert!(
        matches!(refused, EngineError::ClockKind { recorded: ClockKind::Simulated, requested: ClockKind::Wall, .. }),
        "{refused}"
    );
    assert!(refused.to_string().contains("refusing to run on the wall clock"), "{refused}");
    // Restarted on a clock set earlier, a test clock resumes at the log's last event.
    let behind = Arc::new(SimulatedClock::new(utc(2026, 11, 23, 0, 0)));
    let engine = Engine::start(config(dir.path(), behind.clone())).await.unwrap();
    assert_eq!(behind.now(), recorded.last().unwrap().event.occurred_at);
    assert!(engine.stop(Duration::from_secs(30)).await.clean);
}
