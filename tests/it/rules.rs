//! A log written under the first decision rules (issue 10: histories already stored) still
//! passes `audit verify`: each decision is re-run under the rules recorded with it. The same
//! commands decided under today's rules give other events, so the recorded rules are what make
//! the audit pass.

use chrono::TimeDelta;
use ticket_domain::testing::{agent, beijing, command, open, text, ticket_id, timer};
use ticket_domain::{ActorKind, CommandBody, Metric, Rules, Severity, TicketState, decide_under, evolve};
use ticket_log::{AppendRequest, AppendToken, EventLog, StreamAppend};
use ticket_log_sled::{SledConfig, SledLog};

use crate::shipped_policy;

/// Decides each command under `rules` and appends it with that record, as the engine of the
/// time did.
async fn write(log: &SledLog, rules: Rules, commands: &[ticket_domain::Command]) -> Vec<Vec<&'static str>> {
    let policy = shipped_policy("regional-operator.toml");
    let mut state = TicketState::initial();
    let mut decided = Vec::new();
    for c in commands {
        let events = decide_under(rules, c, &state, &policy).unwrap();
        decided.push(events.iter().map(|e| e.kind.name()).collect());
        let append = AppendRequest {
            token: AppendToken::next(),
            command: c.clone(),
            policy: Some(policy.version().clone()),
            rules,
            correlation_id: None,
            causation_id: None,
            imported: false,
            streams: vec![StreamAppend {
                ticket_id: c.ticket_id,
                expected_version: state.version(),
                after: None,
                events: events.clone(),
            }],
        };
        log.append(append).await.unwrap();
        for e in &events {
            evolve(&mut state, e).unwrap();
        }
    }
    decided
}

#[tokio::test]
async fn a_history_decided_under_the_first_rules_still_verifies() {
    // A critical ticket on which the timer recorded nothing: the agent answers late, asks the
    // customer, who never answers; a day later the timer's downgrade fires 27 minutes late.
    let at = beijing(2026, 11, 21, 3, 0);
    let asked = at + TimeDelta::minutes(70);
    let late = asked + TimeDelta::hours(24) + TimeDelta::minutes(27);
    let commands = [
        agent(at, open("advanced", "technical", Severity::A)),
        agent(at + TimeDelta::minutes(65), CommandBody::RecordAgentResponse { message: text("on it") }),
        agent(asked, CommandBody::RequestCustomerInfo { request: text("logs?") }),
        timer(late, CommandBody::DowngradeForNoResponse { cycle: 1, due_at: asked + TimeDelta::hours(24) }),
        command(
            ActorKind::Customer,
            "acme-admin",
            late + TimeDelta::hours(1),
            CommandBody::RecordCustomerReply { message: text("here") },
        ),
    ];
    let dir = tempfile::tempdir().unwrap();
    let log = SledLog::open(SledConfig::new(dir.path().join("log"))).unwrap();
    let v1 = write(&log, Rules::V1, &commands).await;

    let policies = [shipped_policy("regional-operator.toml")];
    let report = ticket_service::audit::audit(&log, &policies, |_, _, _| {}).unwrap();
    assert!(report.is_clean(), "{:?}", report.problems);
    assert_eq!(report.replayed, commands.len() as u64);
    let stored = log.command(&commands[3].id).unwrap().unwrap();
    assert_eq!(stored.rules, Rules::V1);

    // Under today's rules the late response settles the warnings first, and the late downgrade
    // takes effect at its due instant: other events, which the audit would flag under V2.
    let v2_dir = tempfile::tempdir().unwrap();
    let v2_log = SledLog::open(SledConfig::new(v2_dir.path().join("log"))).unwrap();
    let v2 = write(&v2_log, Rules::V2, &commands).await;
    assert_ne!(v1[1], v2[1], "{:?} / {:?}", v1[1], v2[1]);
    assert_eq!(v1[1], ["sla_breached", "escalated", "agent_responded"]);
    let v1_stop = log.read_stream(ticket_id(), 1).unwrap();
    let v2_stop = v2_log.read_stream(ticket_id(), 1).unwrap();
    let window_stop = |events: &[ticket_domain::RecordedEvent]| {
        events
            .iter()
            .flat_map(|e| e.event.kind.clocks().iter().map(move |c| (c.clone(), e.event.occurred_at)))
            .find(|(c, _)| c.metric == Metric::NoResponse && c.effect != ticket_domain::ClockEffect::Started)
            .map(|(c, at)| (c.plan.as_ref().unwrap().elapsed, c.effective_at(at)))
            .unwrap()
    };
    assert_eq!(window_stop(&v1_stop), (TimeDelta::hours(24) + TimeDelta::minutes(27), late), "V1: at detection");
    assert_eq!(window_stop(&v2_stop), (TimeDelta::hours(24), asked + TimeDelta::hours(24)), "V2: at the due instant");

    // And the audit re-runs each under its own rules: the V2 log verifies too.
    let report = ticket_service::audit::audit(&v2_log, &policies, |_, _, _| {}).unwrap();
    assert!(report.is_clean(), "{:?}", report.problems);
}
