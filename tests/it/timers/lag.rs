//! Rules V2 through the engine (issue 10): random lifecycles recorded with the timer on time,
//! with the timer lagging by random amounts, and with no timer at all state the same SLA history
//! (severities over time, every clock's due and warning instants, warnings, breaches and
//! downgrades with their due instants, escalations, refusals); only detection instants differ.

use std::collections::BTreeMap;

use chrono::{TimeDelta, TimeZone, Utc};
use ticket_domain::testing::{open, text};
use ticket_domain::{
    CategoryId, CommandBody, EscalationCause, Event, EventKind, Policy, Severity, SplitTicket, Team, TicketId, Tier,
    Timestamp,
};

use super::random::Rng;
use super::{Engine, new_ticket};
use crate::shipped_policy;

const TICKETS: usize = 300;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Timer {
    OnTime,
    Lagging(u64),
    Off,
}

/// Every ticket's commands, by instant.
type Script = BTreeMap<Timestamp, Vec<(TicketId, CommandBody)>>;

fn script(
    rng: &mut Rng,
    start: Timestamp,
    open_body: impl Fn(Severity) -> CommandBody,
    split_category: &str,
) -> (Script, Vec<TicketId>) {
    let mut script = Script::new();
    let mut tickets = Vec::new();
    for _ in 0..TICKETS {
        let ticket = new_ticket();
        tickets.push(ticket);
        let severity = [Severity::A, Severity::B, Severity::C][rng.below(3) as usize];
        // Instants anywhere, to the nanosecond: nothing lines up with a due instant by accident.
        let mut at = start + TimeDelta::seconds(rng.below(3 * 86_400) as i64) + nanos(rng);
        script.entry(at).or_default().push((ticket, open_body(severity)));
        for _ in 0..1 + rng.below(7) {
            let gap = if rng.below(10) < 5 { rng.below(4 * 3600) } else { rng.below(5 * 86_400) };
            at += TimeDelta::seconds(1 + gap as i64) + nanos(rng);
            let body = match rng.below(24) {
                0..6 => CommandBody::RecordAgentResponse { message: text("an update") },
                6..10 => CommandBody::RequestCustomerInfo { request: text("which device?") },
                10..15 => CommandBody::RecordCustomerReply { message: text("the tablet") },
                15..18 => CommandBody::SetSeverity {
                    severity: [Severity::A, Severity::B, Severity::C][rng.below(3) as usize],
                    reason: text("reassessed"),
                },
                // Sometimes to where the policy's own escalations put a ticket.
                18..20 => CommandBody::Escalate {
                    tier: Tier::new(["tier-2", "tier-3"][rng.below(2) as usize]).unwrap(),
                    team: (rng.below(2) == 0).then(|| Team::new("duty-manager").unwrap()),
                    reason: text("needs more eyes"),
                },
                20..22 => {
                    let child = new_ticket();
                    tickets.push(child);
                    CommandBody::Split(SplitTicket {
                        new_ticket: child,
                        category: CategoryId::new(split_category).unwrap(),
                        severity: Severity::B,
                        title: text("a second problem"),
                        description: text(""),
                    })
                }
                _ => CommandBody::Resolve { resolution: text("fixed") },
            };
            script.entry(at).or_default().push((ticket, body));
        }
    }
    (script, tickets)
}

fn nanos(rng: &mut Rng) -> TimeDelta {
    TimeDelta::nanoseconds(rng.below(1_000_000_000) as i64)
}

/// One run: the script's commands at their instants, the timer as given. Returns every
/// command's outcome (accepted, or the refusal's kind) and the engine.
async fn run(policy: Policy, start: Timestamp, script: &Script, timer: Timer) -> (Vec<String>, Engine) {
    let engine = match timer {
        Timer::OnTime | Timer::Lagging(_) => Engine::start(policy, start),
        Timer::Off => Engine::start_without_timer(policy, start),
    };
    let mut rng = Rng(match timer {
        Timer::Lagging(seed) => seed,
        Timer::OnTime | Timer::Off => 0,
    });
    let mut outcomes = Vec::new();
    for (at, commands) in script {
        match timer {
            // As a real clock passes every firing instant.
            Timer::OnTime => {
                engine.step_to(*at).await;
            }
            // The clock jumps by up to six hours at a time, and the timer fires what is due
            // only then: up to six hours late.
            Timer::Lagging(_) => {
                let mut now = ticket_service::Clock::now(&*engine.clock);
                while now < *at {
                    let jump = TimeDelta::seconds(1 + rng.below(6 * 3600) as i64) + nanos(&mut rng);
                    now = (now + jump).min(*at);
                    engine.advance_to(now).await;
                }
            }
            Timer::Off => engine.clock.advance_to(*at),
        }
        for (ticket, body) in commands {
            let outcome = match engine.execute(*ticket, body.clone()).await {
                Ok(_) => "accepted".to_owned(),
                Err(e) => format!("refused: {:?}", e.kind()),
            };
            outcomes.push(format!("{ticket} {}: {outcome}", body.name()));
        }
    }
    (outcomes, engine)
}

/// A ticket's events as the SLA history they state, up to `until`: detection instants taken
/// out, every clock change with the instant it takes effect, and what the timer recorded after
/// `until` (the ticket's last accepted command, after which a run without a timer records
/// nothing) left out.
fn history(engine: &Engine, ticket: TicketId, until: Timestamp) -> Vec<Event> {
    let mut out = Vec::new();
    let mut consequence_at = None;
    for recorded in engine.events(ticket) {
        let e = recorded.event;
        let occurred_at = e.occurred_at;
        let effective = match &e.kind {
            EventKind::SlaWarning { warn_at, .. } => *warn_at,
            EventKind::SlaBreached { due_at, .. } | EventKind::DowngradedForNoResponse { due_at, .. } => *due_at,
            EventKind::Escalated {
                cause: EscalationCause::Warning { .. } | EscalationCause::Breach { .. }, ..
            } => consequence_at.unwrap_or(occurred_at),
            EventKind::Opened(_)
            | EventKind::SeveritySet { .. }
            | EventKind::AgentResponded { .. }
            | EventKind::CustomerInfoRequested { .. }
            | EventKind::CustomerResponded { .. }
            | EventKind::Escalated { .. }
            | EventKind::Resolved { .. }
            | EventKind::Reopened { .. }
            | EventKind::Linked { .. } => occurred_at,
        };
        consequence_at = Some(effective);
        if effective > until {
            continue;
        }
        out.push(e.without_detection());
    }
    out
}

async fn same_history_whatever_the_timer(
    policy_file: &str,
    open_body: impl Fn(Severity) -> CommandBody,
    split_category: &str,
    seed: u64,
) {
    let start = Utc.with_ymd_and_hms(2026, 11, 16, 0, 0, 0).unwrap();
    let mut rng = Rng(seed);
    let (script, tickets) = script(&mut rng, start, open_body, split_category);
    let (on_time_outcomes, on_time) = run(shipped_policy(policy_file), start, &script, Timer::OnTime).await;
    let (lagging_outcomes, lagging) = run(shipped_policy(policy_file), start, &script, Timer::Lagging(seed)).await;
    let (off_outcomes, off) = run(shipped_policy(policy_file), start, &script, Timer::Off).await;
    assert_eq!(lagging_outcomes, on_time_outcomes, "{policy_file}, seed {seed}: outcomes with a lagging timer");
    assert_eq!(off_outcomes, on_time_outcomes, "{policy_file}, seed {seed}: outcomes without a timer");

    let (mut downgrades, mut breaches, mut late) = (0, 0, 0);
    for ticket in &tickets {
        // The ticket's last accepted command: what is due by then, every run has recorded.
        let Some(until) = off.events(*ticket).last().map(|e| e.event.occurred_at) else {
            // A split the rules refused (its parent was resolved): no ticket in any run.
            assert!(on_time.events(*ticket).is_empty() && lagging.events(*ticket).is_empty());
            continue;
        };
        let expected = history(&on_time, *ticket, until);
        assert_eq!(history(&lagging, *ticket, until), expected, "{policy_file}, seed {seed}: {ticket}, lagging");
        assert_eq!(history(&off, *ticket, until), expected, "{policy_file}, seed {seed}: {ticket}, no timer");
        downgrades += expected.iter().filter(|e| e.kind.name() == "downgraded_for_no_response").count();
        breaches += expected.iter().filter(|e| e.kind.name() == "sla_breached").count();
        late += lagging.events(*ticket).iter().filter(|e| e.event.kind.clocks().iter().any(|c| c.at.is_some())).count();
    }
    // The runs exercised what they claim to.
    assert!(breaches > TICKETS / 4, "{breaches} breaches");
    assert!(downgrades > 5, "{downgrades} downgrades");
    assert!(late > 5, "{late} clock changes recorded after their instant by the lagging timer");
    eprintln!(
        "{policy_file} seed {seed}: {TICKETS} tickets, {breaches} breaches, {downgrades} downgrades, {late} late"
    );
}

fn seed() -> u64 {
    std::env::var("TIMER_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0x1a6_2026)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_time_lagging_or_off_the_timer_leaves_the_same_sla_history_regional_operator() {
    same_history_whatever_the_timer(
        "regional-operator.toml",
        |severity| {
            let plan = if severity == Severity::A { "advanced" } else { "standard" };
            open(plan, if severity == Severity::A { "technical" } else { "subscription" }, severity)
        },
        "billing",
        seed(),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_time_lagging_or_off_the_timer_leaves_the_same_sla_history_professional() {
    same_history_whatever_the_timer(
        "professional.toml",
        |severity| {
            open(if severity == Severity::C { "professional" } else { "premier-example" }, "technical", severity)
        },
        "licensing",
        seed() ^ 0xffff,
    )
    .await;
}
