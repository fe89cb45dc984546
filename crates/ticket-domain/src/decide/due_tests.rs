//! Rules V2 (issue 10): every time-driven consequence takes effect at its due instant, whether
//! the timer records it on time, late, or the next decision settles it; warnings are exact.
//! Given/when/then on both shipped policies, and a property test of warning instants.

use chrono::{TimeDelta, TimeZone, Utc};
use proptest::prelude::*;

use crate::command::CommandBody;
use crate::event::{ClockEffect, ClockOutcome, Event, EventKind};
use crate::policy::Policy;
use crate::severity::{Metric, Severity};
use crate::state::{SeverityCause, TicketState};
use crate::testing::*;
use crate::{ErrorKind, Timestamp};

fn ask() -> CommandBody {
    CommandBody::RequestCustomerInfo { request: text("please send the logs") }
}

fn customer_reply(at: Timestamp) -> crate::Command {
    command(crate::ActorKind::Customer, "acme-admin", at, CommandBody::RecordCustomerReply { message: text("here") })
}

/// The ticket's no-response window: (cycle, due instant).
fn window(state: &TicketState) -> (u32, Timestamp) {
    let clock = state.ticket().unwrap().clock(Metric::NoResponse).unwrap();
    (clock.cycle, clock.due_at().unwrap())
}

/// Events with the detection instant taken out: what remains is the SLA history they state.
fn as_of_due(events: &[Event]) -> Vec<Event> {
    events.iter().map(Event::without_detection).collect()
}

/// Given a ticket awaiting the customer, its downgrade fired `lag` late states exactly what the
/// on-time firing states, only detected later; the window closes with its whole target elapsed.
fn a_late_downgrade_equals_the_on_time_one(
    policy: Policy,
    open_body: CommandBody,
    opened: Timestamp,
    asked: Timestamp,
) {
    let given = given(policy).history([agent(opened, open_body), agent(asked, ask())]);
    let (cycle, due) = window(given.state());
    let firing = |at| timer(at, CommandBody::DowngradeForNoResponse { cycle, due_at: due });

    let on_time = given.clone().when(firing(due));
    let lag = TimeDelta::minutes(27) + TimeDelta::milliseconds(350);
    let late = given.when(firing(due + lag));

    late.then_names(&["downgraded_for_no_response"]);
    assert_eq!(as_of_due(late.events()), as_of_due(on_time.events()), "the same consequence, only detected later");
    assert_eq!(late.events()[0].occurred_at, due + lag, "detected when the timer fired");
    let stop = late.clock_changes(Metric::NoResponse)[0];
    assert_eq!(stop.effect, ClockEffect::Stopped(ClockOutcome::Breached));
    assert_eq!(stop.at, Some(due));
    let plan = stop.plan.as_ref().unwrap();
    assert_eq!(plan.elapsed, plan.target_duration, "the expired window ran exactly its target");
    let change = late.ticket().severity_history.last().unwrap();
    assert_eq!((change.at, change.cause.clone()), (due, SeverityCause::NoResponse));
    let new_window = late.ticket().clock(Metric::NoResponse).unwrap();
    assert_eq!(new_window.started_at, due, "the next window starts when the first expired");
}

#[test]
fn a_late_no_response_downgrade_takes_effect_at_its_due_instant_regional_operator() {
    // The client's case: standard / subscription / B opened Thursday 2026-10-29, the customer
    // asked Sunday 18:12:17 Beijing time, the downgrade firing 27 minutes late.
    let opened = beijing(2026, 10, 29, 10, 0);
    let asked = beijing(2026, 11, 1, 18, 12) + TimeDelta::seconds(17);
    a_late_downgrade_equals_the_on_time_one(
        regional_operator(),
        open("standard", "subscription", Severity::B),
        opened,
        asked,
    );
}

#[test]
fn a_late_no_response_downgrade_takes_effect_at_its_due_instant_professional() {
    let opened = utc(2026, 11, 20, 16, 0);
    a_late_downgrade_equals_the_on_time_one(
        professional(),
        open("professional", "technical", Severity::A),
        opened,
        opened + TimeDelta::minutes(20),
    );
}

/// Without a timer: the customer replies long after the window expired. The reply's decision
/// first records the downgrade as of the window's due instant, then the reply stops the window
/// of the lower severity, which started then.
fn the_next_decision_settles_an_expired_window(policy: Policy, open_body: CommandBody, opened: Timestamp) {
    let asked = opened + TimeDelta::minutes(10);
    let given = given(policy).history([agent(opened, open_body), agent(asked, ask())]);
    let (_, due) = window(given.state());
    let replied = due + TimeDelta::hours(6);
    let outcome = given.when(customer_reply(replied));

    outcome.then_names(&["downgraded_for_no_response", "customer_responded"]);
    let EventKind::DowngradedForNoResponse { from, to, due_at, .. } = outcome.event("downgraded_for_no_response")
    else {
        unreachable!()
    };
    assert_eq!((*from, *to, *due_at), (Severity::A, Severity::B, due));
    let stops: Vec<_> = outcome
        .clock_changes(Metric::NoResponse)
        .into_iter()
        .filter(|c| matches!(c.effect, ClockEffect::Stopped(_)))
        .map(|c| (c.cycle, c.effect, c.effective_at(replied)))
        .collect();
    assert_eq!(
        stops,
        [(1, ClockEffect::Stopped(ClockOutcome::Breached), due), (2, ClockEffect::Stopped(ClockOutcome::Met), replied)],
        "the A window expired at its due instant; the B window the reply stopped had started then"
    );
    let ticket = outcome.ticket();
    assert_eq!(ticket.severity, Severity::B);
    assert_eq!(ticket.severity_history.last().map(|c| c.at), Some(due));
    let first = ticket.clock(Metric::NoResponse).unwrap();
    assert_eq!(first.started_at, due);
}

#[test]
fn without_a_timer_the_next_decision_settles_an_expired_window_regional_operator() {
    // Severity A opened Saturday 03:00 Beijing, the customer asked at 03:10; the A window (24
    // hours) expired Sunday 03:10.
    the_next_decision_settles_an_expired_window(
        regional_operator(),
        open("advanced", "technical", Severity::A),
        beijing(2026, 11, 21, 3, 0),
    );
}

#[test]
fn without_a_timer_the_next_decision_settles_an_expired_window_professional() {
    the_next_decision_settles_an_expired_window(
        professional(),
        open("professional", "technical", Severity::A),
        utc(2026, 11, 20, 16, 0),
    );
}

/// Setting B at the instant the B window expires (A lowered to B, then B to C, neither
/// recorded): by the rules B is then an upgrade from C.
fn setting_b_when_both_windows_expired_is_an_upgrade_from_c(policy: Policy, open_body: CommandBody, opened: Timestamp) {
    let asked = opened + TimeDelta::minutes(10);
    let history = given(policy.clone()).history([agent(opened, open_body.clone()), agent(asked, ask())]);
    let (cycle, a_due) = window(history.state());
    // The B window's due instant, as the downgrade on time would state it.
    let on_time = history.when(timer(a_due, CommandBody::DowngradeForNoResponse { cycle, due_at: a_due }));
    let b_due = on_time.ticket().clock(Metric::NoResponse).unwrap().due_at().unwrap();

    let set_b = CommandBody::SetSeverity { severity: Severity::B, reason: text("the customer called") };
    let given = given(policy).history([agent(opened, open_body), agent(asked, ask())]);
    let outcome = given.clone().when(agent(b_due, set_b));
    outcome.then_names(&["downgraded_for_no_response", "downgraded_for_no_response", "severity_set"]);
    let severities: Vec<(Option<Severity>, Severity, Timestamp)> =
        outcome.ticket().severity_history.iter().map(|c| (c.from, c.to, c.at)).collect();
    assert_eq!(
        severities,
        [
            (None, Severity::A, opened),
            (Some(Severity::A), Severity::B, a_due),
            (Some(Severity::B), Severity::C, b_due),
            (Some(Severity::C), Severity::B, b_due),
        ]
    );
    // Setting C then is refused: it already is C.
    let set_c = CommandBody::SetSeverity { severity: Severity::C, reason: text("x") };
    let again = given.when(agent(b_due, set_c));
    again.then_err(ErrorKind::InvalidTransition);
}

#[test]
fn setting_b_when_the_b_window_expired_is_an_upgrade_from_c_regional_operator() {
    setting_b_when_both_windows_expired_is_an_upgrade_from_c(
        regional_operator(),
        open("advanced", "technical", Severity::A),
        beijing(2026, 11, 21, 3, 0),
    );
}

#[test]
fn setting_b_when_the_b_window_expired_is_an_upgrade_from_c_professional() {
    setting_b_when_both_windows_expired_is_an_upgrade_from_c(
        professional(),
        open("professional", "technical", Severity::A),
        utc(2026, 11, 20, 16, 0),
    );
}

/// The shipped policy text with other warning thresholds, and its two-hour targets made seven
/// minutes on business hours: shares of a target that are not whole seconds, starting at any
/// instant of a business day, make rounding visible.
fn with_thresholds(name: &str, text: &str, thresholds: &str) -> Policy {
    let text = text
        .lines()
        .map(|l| if l.starts_with("warning_thresholds_percent") { thresholds.to_owned() } else { l.to_owned() })
        .collect::<Vec<_>>()
        .join("\n")
        .replace(r#"{ hours = 2, calendar = "always" }"#, r#"{ minutes = 7, calendar = "premier-office" }"#);
    Policy::from_toml(name, &text).unwrap()
}

fn policies() -> Vec<Policy> {
    let thresholds = "warning_thresholds_percent = [33, 75, 80, 95, 99]";
    vec![
        with_thresholds(
            "regional-operator.toml",
            include_str!("../../../../deploy/policies/regional-operator.toml"),
            thresholds,
        ),
        with_thresholds("professional.toml", include_str!("../../../../deploy/policies/professional.toml"), thresholds),
    ]
}

const PLANS: [(usize, &str, &str); 6] = [
    (0, "advanced", "technical"),
    (0, "standard", "billing"),
    (0, "standard", "subscription"),
    (1, "professional", "technical"),
    (1, "premier-example", "technical"),
    (1, "professional", "licensing"),
];

#[test]
fn a_warning_after_a_start_at_a_fraction_of_a_second_is_not_early() {
    // Opened Monday 17:53:04.5 Berlin, a seven-minute first response on office hours (08:00 to
    // 18:00): 99% of it is 415.8 s, of which 415.5 s remain before closing, so the warning is
    // due Tuesday 08:00:00.3. Rounded down to 415 s it came at 17:59:59.5 on Monday: a whole
    // closed night early.
    let policy = &policies()[1];
    let berlin =
        |d, h, mi, s| chrono_tz::Europe::Berlin.with_ymd_and_hms(2026, 11, d, h, mi, s).unwrap().with_timezone(&Utc);
    let opened = berlin(23, 17, 53, 4) + TimeDelta::milliseconds(500);
    warnings_are_exact(policy, "professional", "technical", Severity::A, opened);
    let command = agent(opened, open("professional", "technical", Severity::A));
    let events = crate::decide(&command, &TicketState::initial(), policy).unwrap();
    let first_response = events[0].kind.clocks().iter().find(|c| c.metric == Metric::FirstResponse).unwrap();
    let w99 = first_response.plan.as_ref().unwrap().warnings.iter().find(|w| w.threshold_percent == 99).unwrap();
    assert_eq!(w99.at, berlin(24, 8, 0, 0) + TimeDelta::milliseconds(300));
}

/// Every warning of every clock a ticket opens with is at the first instant the clock has run
/// its share of the target: exact to the nanosecond, never early.
fn warnings_are_exact(policy: &Policy, plan: &str, category: &str, severity: Severity, opened: Timestamp) {
    let command = agent(opened, open(plan, category, severity));
    let events = crate::decide(&command, &TicketState::initial(), policy).unwrap();
    for change in events[0].kind.clocks() {
        let Some(clock_plan) = &change.plan else { continue };
        let calendar = policy.calendar(&clock_plan.target.calendar).unwrap();
        for w in &clock_plan.warnings {
            let nanos = i128::from(clock_plan.target_duration.num_nanoseconds().unwrap());
            let share =
                TimeDelta::nanoseconds(i64::try_from((nanos * i128::from(w.threshold_percent) + 99) / 100).unwrap());
            let at_warning = calendar.elapsed(opened, w.at);
            let just_before = calendar.elapsed(opened, w.at - TimeDelta::nanoseconds(1));
            assert!(
                at_warning >= share,
                "{}% warning at {} is early: {at_warning} < {share}",
                w.threshold_percent,
                w.at
            );
            assert!(just_before < share, "{}% warning at {} is late", w.threshold_percent, w.at);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]
    #[test]
    fn warning_instants_are_exact_and_never_early(
        which in 0..PLANS.len(),
        severity in prop_oneof![Just(Severity::A), Just(Severity::B), Just(Severity::C)],
        seconds in 0i64..(60 * 86_400),
        nanos in 0u32..1_000_000_000,
    ) {
        let policies = policies();
        let (p, plan, category) = PLANS[which];
        prop_assume!(crate::check_entitlement(
            &policies[p],
            &crate::PlanId::new(plan).unwrap(),
            &crate::CategoryId::new(category).unwrap(),
            severity
        )
        .is_ok());
        let opened = utc(2026, 11, 1, 0, 0) + TimeDelta::seconds(seconds) + TimeDelta::nanoseconds(i64::from(nanos));
        warnings_are_exact(&policies[p], plan, category, severity, opened);
    }
}

#[test]
fn an_escalation_is_compared_with_where_the_ticket_is_once_due_escalations_are_settled() {
    // Given a critical ticket escalated to tier 2 by its 80% warning (03:48), whose breach at
    // 04:00 (escalating to tier 3, the duty manager) nobody has recorded yet
    let (w50, w80) = (beijing(2026, 11, 21, 3, 30), beijing(2026, 11, 21, 3, 48));
    let given = given(regional_operator()).history([
        agent(beijing(2026, 11, 21, 3, 0), open("advanced", "technical", Severity::A)),
        timer(
            w50,
            CommandBody::RecordSlaWarning {
                metric: Metric::FirstResponse,
                cycle: 1,
                threshold_percent: 50,
                warn_at: w50,
            },
        ),
        timer(
            w80,
            CommandBody::RecordSlaWarning {
                metric: Metric::FirstResponse,
                cycle: 1,
                threshold_percent: 80,
                warn_at: w80,
            },
        ),
    ]);
    assert_eq!(given.state().ticket().unwrap().tier.as_ref().map(|t| t.as_str()), Some("tier-2"));
    // When an agent sends it (back) to tier 2 at 04:05
    let back =
        CommandBody::Escalate { tier: crate::Tier::new("tier-2").unwrap(), team: None, reason: text("mail team") };
    let outcome = given.when(agent(beijing(2026, 11, 21, 4, 5), back));
    // Then it is not "already there": at 04:05 the breach had taken it to the duty manager
    outcome.then_names(&["sla_breached", "escalated", "escalated"]);
    assert_eq!(outcome.ticket().tier.as_ref().map(|t| t.as_str()), Some("tier-2"));
    assert_eq!(outcome.ticket().team, None);
}
