//! One ticket whose stored history does not fit (issue 10: an event decided on a state the
//! ticket never had) is quarantined: commands on it are refused with a typed error, the timer
//! drops its firings and fires everyone else's, the read models are built around it, and the
//! audit names the event's position.

use ticket_domain::testing::{beijing, open, text};
use ticket_domain::{
    Actor, ActorId, ActorKind, ClockEffect, ClockOutcome, Command, CommandBody, CommandId, Event, EventKind, Metric,
    Severity,
};
use ticket_log::{AppendRequest, At, EventLog, StreamAppend};
use ticket_projections::ReadModels;
use ticket_service::ServiceErrorKind;

use super::{Engine, new_ticket};
use crate::shipped_policy;

#[tokio::test]
async fn a_ticket_whose_stored_event_does_not_fit_is_quarantined_and_the_rest_go_on() {
    // Given two severity A tickets opened at 03:00 on a Saturday, and one answered at 03:05
    let engine = Engine::start(shipped_policy("regional-operator.toml"), beijing(2026, 11, 21, 2, 0));
    let (healthy, poisoned) = (new_ticket(), new_ticket());
    for ticket in [healthy, poisoned] {
        engine.at(beijing(2026, 11, 21, 3, 0), ticket, open("advanced", "technical", Severity::A)).await.unwrap();
    }
    let respond = || CommandBody::RecordAgentResponse { message: text("looking into it") };
    engine.at(beijing(2026, 11, 21, 3, 5), poisoned, respond()).await.unwrap();

    // ... and a stored event of the answered one that stops a resolution cycle it never had
    let last = engine.events(poisoned).last().unwrap().clone();
    let mut misfit: Event = last.event.clone();
    let EventKind::AgentResponded { clocks, .. } = &mut misfit.kind else { panic!("{:?}", misfit.kind) };
    clocks.truncate(1);
    clocks[0].metric = Metric::Resolution;
    clocks[0].cycle = 7;
    clocks[0].effect = ClockEffect::Stopped(ClockOutcome::Met);
    let command = Command {
        id: CommandId::new("forged-stale-decision").unwrap(),
        ticket_id: poisoned,
        actor: Actor { kind: ActorKind::Agent, id: ActorId::new("agent-li").unwrap() },
        issued_at: misfit.occurred_at,
        body: respond(),
    };
    let streams =
        vec![StreamAppend { ticket_id: poisoned, expected_version: last.version, after: None, events: vec![misfit] }];
    let append = AppendRequest {
        token: ticket_log::AppendToken::next(),
        command,
        policy: Some(engine.policy.version().clone()),
        rules: ticket_domain::Rules::CURRENT,
        correlation_id: None,
        causation_id: None,
        imported: false,
        streams,
    };
    let stored = engine.log().append(append).await.unwrap().into_events();
    let bad_position = stored[0].position;

    // When commands arrive and the clock passes both tickets' due instants
    engine.service.state(healthy).unwrap();
    let refused = engine.at(beijing(2026, 11, 21, 3, 10), poisoned, respond()).await.unwrap_err();
    let progress = engine.step_to(beijing(2026, 11, 21, 8, 0)).await;

    // Then the poisoned ticket is refused with a typed error that names the position ...
    assert_eq!(refused.kind(), ServiceErrorKind::Quarantined, "{refused}");
    assert!(refused.to_string().contains(&format!("position {bad_position}")), "{refused}");
    assert_eq!(engine.events(poisoned).len() as u64, last.version + 1, "nothing more was appended to it");
    // ... the healthy ticket's first response breached at 04:00, as if nothing had happened
    let breaches = engine.breaches(healthy);
    assert_eq!(breaches.len(), 1, "{breaches:?}");
    assert_eq!(breaches[0].2, beijing(2026, 11, 21, 4, 0));
    assert!(progress.dropped >= 1, "the poisoned ticket's firings were dropped: {progress:?}");

    // ... the read models are built around it, reporting it
    let models = ReadModels::build(engine.log(), At::Now, |_, _| {}).unwrap();
    let tickets = models.tickets.model();
    assert!(tickets.ticket(healthy, u64::MAX).unwrap().unwrap().clock(Metric::FirstResponse).unwrap().breached);
    let quarantine = tickets.quarantined().get(&poisoned).expect("the poisoned ticket is quarantined");
    assert_eq!(quarantine.position, bad_position);
    assert_eq!(tickets.quarantined().len(), 1);
    assert_eq!(models.tickets.position(), engine.log().head(), "every later event was applied");

    // ... and operators see it in the projections' status (`tickets.admin.lag`, `ticketctl
    // projections status`)
    let projector = ticket_projections::Projector::open(engine.log().clone(), None, Default::default());
    projector.catch_up(|_, _| {}).unwrap();
    let status = ticket_projections::answer::projection_status(&projector);
    assert_eq!(status.quarantined.len(), 1);
    assert_eq!(status.quarantined[0].ticket_id, poisoned.to_string());
    assert_eq!(status.quarantined[0].position, bad_position);
    assert!(status.quarantined[0].problem.contains("resolution cycle 7"), "{:?}", status.quarantined[0]);

    // ... and the audit names the event by position
    let report = ticket_service::audit::audit(engine.log(), &[(*engine.policy).clone()], |_, _, _| {}).unwrap();
    assert_eq!(report.quarantined, 1);
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.position == bad_position && p.ticket_id == Some(poisoned) && p.problem.contains("does not fit")),
        "{:?}",
        report.problems
    );
    assert!(report.problems.iter().all(|p| p.ticket_id == Some(poisoned)), "{:?}", report.problems);
}
