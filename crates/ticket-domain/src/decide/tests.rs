//! Given/when/then scenarios, one or more per rule of support-rules.md, plus the lifecycle and
//! timer rules of the Decider. Expected instants are worked out by hand from the policy tables.

use chrono::{TimeDelta, TimeZone, Utc};

use crate::command::{CommandBody, SplitTicket};
use crate::error::{ErrorKind, MootReason, Transition};
use crate::event::{ClockEffect, ClockOutcome, EscalationCause, Event, EventKind, LinkRelation};
use crate::ids::{CategoryId, CustomerId, Team, TicketId, Tier};
use crate::severity::{Metric, Severity};
use crate::state::{SeverityCause, Status};
use crate::testing::*;
use crate::{DomainError, Timestamp};

fn berlin(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> Timestamp {
    chrono_tz::Europe::Berlin.with_ymd_and_hms(y, mo, d, h, mi, 0).single().unwrap().with_timezone(&Utc)
}

fn respond() -> CommandBody {
    CommandBody::RecordAgentResponse { message: text("looking into it") }
}

fn request_info() -> CommandBody {
    CommandBody::RequestCustomerInfo { request: text("please send the mail server logs") }
}

fn reply() -> CommandBody {
    CommandBody::RecordCustomerReply { message: text("logs attached") }
}

fn resolve() -> CommandBody {
    CommandBody::Resolve { resolution: text("certificate renewed") }
}

fn set_severity(severity: Severity) -> CommandBody {
    CommandBody::SetSeverity { severity, reason: text("impact reassessed") }
}

fn breach(metric: Metric, cycle: u32, due_at: Timestamp) -> CommandBody {
    CommandBody::RecordSlaBreach { metric, cycle, due_at, at_import: false }
}

fn warning(metric: Metric, cycle: u32, threshold_percent: u8, warn_at: Timestamp) -> CommandBody {
    CommandBody::RecordSlaWarning { metric, cycle, threshold_percent, warn_at }
}

/// Saturday 2026-11-21, 03:00 Beijing time.
fn saturday_0300() -> Timestamp {
    beijing(2026, 11, 21, 3, 0)
}

/// A severity A technical ticket of an advanced-contract customer, opened Saturday 03:00.
fn critical_ticket() -> Given {
    given(regional_operator()).history([agent(saturday_0300(), open("advanced", "technical", Severity::A))])
}

/// The critical ticket with its 50% (03:30) and 80% (03:48, escalating to tier 2) first-response
/// warnings recorded on time, as the timer does.
fn critical_ticket_warned() -> Given {
    let (w50, w80) = (beijing(2026, 11, 21, 3, 30), beijing(2026, 11, 21, 3, 48));
    critical_ticket().history([
        timer(w50, warning(Metric::FirstResponse, 1, 50, w50)),
        timer(w80, warning(Metric::FirstResponse, 1, 80, w80)),
    ])
}

// 1. One problem per ticket.

#[test]
fn a_sub_problem_becomes_its_own_ticket_linked_both_ways() {
    let at = beijing(2026, 11, 21, 3, 20);
    let outcome = critical_ticket().when(agent(
        at,
        CommandBody::Split(SplitTicket {
            new_ticket: other_ticket_id(),
            category: CategoryId::new("billing").unwrap(),
            severity: Severity::B,
            title: text("duplicate invoice for the outage month"),
            description: text(""),
        }),
    ));
    let events = outcome.events();
    assert_eq!(events.len(), 3);
    assert_eq!(
        events[0],
        Event {
            ticket_id: ticket_id(),
            occurred_at: at,
            kind: EventKind::Linked { other: other_ticket_id(), relation: LinkRelation::SplitInto }
        }
    );
    assert_eq!(events[1].ticket_id, other_ticket_id());
    let EventKind::Opened(child) = &events[1].kind else { panic!("expected opened, got {:?}", events[1].kind) };
    assert_eq!(child.customer, CustomerId::new("acme").unwrap());
    assert_eq!(child.plan.as_str(), "advanced");
    assert_eq!(child.severity, Severity::B);
    assert_eq!(
        events[2],
        Event {
            ticket_id: other_ticket_id(),
            occurred_at: at,
            kind: EventKind::Linked { other: ticket_id(), relation: LinkRelation::SplitFrom }
        }
    );
    assert_eq!(outcome.ticket().links, vec![(other_ticket_id(), LinkRelation::SplitInto)]);
}

#[test]
fn a_split_ticket_obeys_the_entitlement_of_its_category() {
    let outcome = critical_ticket().when(agent(
        beijing(2026, 11, 21, 3, 30),
        CommandBody::Split(SplitTicket {
            new_ticket: other_ticket_id(),
            category: CategoryId::new("billing").unwrap(),
            severity: Severity::A,
            title: text("invoice"),
            description: text(""),
        }),
    ));
    outcome.then_err(ErrorKind::SeverityNotAllowedForCategory);
}

#[test]
fn a_ticket_cannot_be_split_into_itself() {
    let outcome = critical_ticket().when(agent(
        beijing(2026, 11, 21, 3, 30),
        CommandBody::Split(SplitTicket {
            new_ticket: ticket_id(),
            category: CategoryId::new("technical").unwrap(),
            severity: Severity::B,
            title: text("again"),
            description: text(""),
        }),
    ));
    outcome.then_err(ErrorKind::InvalidCommand);
}

#[test]
fn a_ticket_belongs_to_a_category_of_the_policy() {
    given(regional_operator())
        .when(agent(saturday_0300(), open("standard", "gardening", Severity::C)))
        .then_err(ErrorKind::UnknownCategory);
    given(regional_operator())
        .when(agent(saturday_0300(), open("gold", "technical", Severity::C)))
        .then_err(ErrorKind::UnknownPlan);
}

#[test]
fn a_ticket_needs_a_title() {
    let CommandBody::Open(mut body) = open("standard", "technical", Severity::C) else { unreachable!() };
    body.title = text("  ");
    given(regional_operator())
        .when(agent(saturday_0300(), CommandBody::Open(body)))
        .then_err(ErrorKind::InvalidCommand);
}

// 2. Severity levels and who may use them.

#[test]
fn severity_a_needs_the_advanced_online_service_contract() {
    let err = given(regional_operator())
        .when(agent(saturday_0300(), open("standard", "technical", Severity::A)))
        .then_err(ErrorKind::SeverityNotInContract)
        .clone();
    assert_eq!(err.to_string(), "severity A is not in the standard contract, which allows at most B");
    critical_ticket()
        .when(agent(saturday_0300(), open("advanced", "technical", Severity::A)))
        .then_err(ErrorKind::TicketAlreadyExists);
    given(regional_operator())
        .when(agent(saturday_0300(), open("advanced", "technical", Severity::A)))
        .then_names(&["opened"]);
}

#[test]
fn severity_a_exists_only_for_technical_support() {
    for category in ["billing", "subscription", "pre-sales"] {
        given(regional_operator())
            .when(agent(saturday_0300(), open("advanced", category, Severity::A)))
            .then_err(ErrorKind::SeverityNotAllowedForCategory);
    }
}

#[test]
fn billing_and_subscription_requests_are_at_most_b_and_never_clamped() {
    given(regional_operator())
        .when(agent(saturday_0300(), open("standard", "billing", Severity::B)))
        .then_names(&["opened"]);
    given(regional_operator())
        .when(agent(saturday_0300(), open("standard", "subscription", Severity::C)))
        .then_names(&["opened"]);
    let outcome =
        given(regional_operator()).when(agent(saturday_0300(), open("advanced", "subscription", Severity::A)));
    assert_eq!(
        outcome.then_err(ErrorKind::SeverityNotAllowedForCategory).to_string(),
        "severity A is not available for subscription requests, which allow at most B"
    );
}

#[test]
fn a_customer_without_the_contract_cannot_raise_a_ticket_to_a() {
    given(regional_operator())
        .history([agent(saturday_0300(), open("standard", "technical", Severity::B))])
        .when(agent(beijing(2026, 11, 21, 4, 0), set_severity(Severity::A)))
        .then_err(ErrorKind::SeverityNotInContract);
}

#[test]
fn setting_the_same_severity_is_refused() {
    critical_ticket()
        .when(agent(beijing(2026, 11, 21, 3, 5), set_severity(Severity::A)))
        .then_err(ErrorKind::InvalidTransition);
}

// 3. Initial-response targets.

#[test]
fn regional_a_first_response_is_due_one_hour_later_on_a_saturday_night() {
    let outcome = given(regional_operator()).when(agent(saturday_0300(), open("advanced", "technical", Severity::A)));
    outcome.then_names(&["opened"]);
    assert_eq!(outcome.due(Metric::FirstResponse), Some(beijing(2026, 11, 21, 4, 0)));
    let plan = outcome.clock_changes(Metric::FirstResponse)[0].plan.clone().unwrap();
    assert_eq!(plan.target_duration, TimeDelta::hours(1));
    assert_eq!(plan.policy.to_string(), "regional-operator@2026-12-01.1");
    let warnings: Vec<(u8, Timestamp)> = plan.warnings.iter().map(|w| (w.threshold_percent, w.at)).collect();
    assert_eq!(warnings, vec![(50, beijing(2026, 11, 21, 3, 30)), (80, beijing(2026, 11, 21, 3, 48))]);
    // The policy sets no resolution target: the clock measures time without a due instant.
    let resolution = outcome.clock_changes(Metric::Resolution);
    assert_eq!(resolution[0].effect, ClockEffect::Started);
    assert!(resolution[0].plan.is_none());
}

#[test]
fn regional_b_opened_at_2330_is_due_at_2330_the_next_day() {
    let outcome = given(regional_operator())
        .when(agent(beijing(2026, 11, 23, 23, 30), open("standard", "technical", Severity::B)));
    assert_eq!(outcome.due(Metric::FirstResponse), Some(beijing(2026, 11, 24, 23, 30)));
}

#[test]
fn regional_b_opened_at_0800_is_due_at_the_end_of_that_business_day() {
    let outcome =
        given(regional_operator()).when(agent(beijing(2026, 11, 23, 8, 0), open("standard", "technical", Severity::B)));
    assert_eq!(outcome.due(Metric::FirstResponse), Some(beijing(2026, 11, 24, 0, 0)));
}

#[test]
fn regional_c_is_due_three_business_days_later() {
    let outcome = given(regional_operator())
        .when(agent(beijing(2026, 11, 23, 10, 0), open("standard", "technical", Severity::C)));
    assert_eq!(outcome.due(Metric::FirstResponse), Some(beijing(2026, 11, 26, 10, 0)));
}

#[test]
fn professional_targets_are_two_four_and_eight_hours_around_the_clock() {
    let start = utc(2026, 11, 21, 22, 0);
    for (severity, hours) in [(Severity::A, 2), (Severity::B, 4), (Severity::C, 8)] {
        let outcome = given(professional()).when(agent(start, open("professional", "technical", severity)));
        assert_eq!(outcome.due(Metric::FirstResponse), Some(start + TimeDelta::hours(hours)), "severity {severity}");
    }
}

#[test]
fn premier_targets_come_from_the_contract() {
    let start = utc(2026, 11, 21, 22, 0);
    for (severity, minutes) in [(Severity::A, 30), (Severity::B, 120), (Severity::C, 240)] {
        let outcome = given(professional()).when(agent(start, open("premier-example", "technical", severity)));
        assert_eq!(
            outcome.due(Metric::FirstResponse),
            Some(start + TimeDelta::minutes(minutes)),
            "severity {severity}"
        );
    }
}

// 4. Business hours.

#[test]
fn billing_business_days_run_monday_to_friday() {
    // Friday 17:00: one hour into the last of the nine hours; due Monday 17:00.
    let outcome =
        given(regional_operator()).when(agent(beijing(2026, 11, 27, 17, 0), open("standard", "billing", Severity::B)));
    assert_eq!(outcome.due(Metric::FirstResponse), Some(beijing(2026, 11, 30, 17, 0)));
    // Saturday: the business day starts Monday 09:00 and ends Monday 18:00.
    let outcome = given(regional_operator())
        .when(agent(beijing(2026, 11, 28, 11, 0), open("standard", "pre-sales", Severity::B)));
    assert_eq!(outcome.due(Metric::FirstResponse), Some(beijing(2026, 11, 30, 18, 0)));
}

#[test]
fn holidays_push_business_days_out() {
    // Wednesday 30 September, 10:00; 1-2 October and 5-7 October are holidays, 3-4 a weekend.
    let outcome =
        given(regional_operator()).when(agent(beijing(2026, 9, 30, 10, 0), open("standard", "billing", Severity::B)));
    assert_eq!(outcome.due(Metric::FirstResponse), Some(beijing(2026, 10, 8, 10, 0)));
}

#[test]
fn severity_a_is_served_around_the_clock_but_billing_b_is_not() {
    let outcome = critical_ticket().when(agent(beijing(2026, 11, 21, 3, 1), respond()));
    assert_eq!(outcome.due(Metric::FollowUp), Some(beijing(2026, 11, 21, 7, 1)));
}

// 5. Lowering severity when the customer does not respond.

#[test]
fn awaiting_customer_starts_the_no_response_window_and_pauses_follow_up() {
    let outcome = critical_ticket()
        .history([agent(beijing(2026, 11, 21, 3, 20), respond())])
        .when(agent(beijing(2026, 11, 21, 4, 20), request_info()));
    outcome.then_names(&["customer_info_requested"]);
    assert_eq!(outcome.ticket().status, Status::AwaitingCustomer);
    assert_eq!(outcome.due(Metric::NoResponse), Some(beijing(2026, 11, 22, 4, 20)));
    let follow_up: Vec<ClockEffect> = outcome.clock_changes(Metric::FollowUp).iter().map(|c| c.effect).collect();
    assert_eq!(follow_up, vec![ClockEffect::Stopped(ClockOutcome::Met), ClockEffect::Started, ClockEffect::Paused]);
}

#[test]
fn no_response_within_the_window_lowers_a_to_b() {
    let due = beijing(2026, 11, 22, 3, 10);
    let outcome = critical_ticket()
        .history([agent(beijing(2026, 11, 21, 3, 10), request_info())])
        .when(timer(due, CommandBody::DowngradeForNoResponse { cycle: 1, due_at: due }));
    outcome.then_names(&["downgraded_for_no_response"]);
    let EventKind::DowngradedForNoResponse { from, to, cycle, due_at, .. } =
        outcome.event("downgraded_for_no_response")
    else {
        unreachable!()
    };
    assert_eq!((*from, *to, *cycle, *due_at), (Severity::A, Severity::B, 1, due));
    let ticket = outcome.ticket();
    assert_eq!(ticket.severity, Severity::B);
    assert_eq!(ticket.status, Status::AwaitingCustomer);
    assert_eq!(ticket.severity_history.last().unwrap().cause, SeverityCause::NoResponse);
    // A new window at B: three business days on the 09:00-24:00 calendar from Sunday 03:10.
    let no_response: Vec<(u32, ClockEffect)> =
        outcome.clock_changes(Metric::NoResponse).iter().map(|c| (c.cycle, c.effect)).collect();
    assert_eq!(no_response, vec![(1, ClockEffect::Stopped(ClockOutcome::Breached)), (2, ClockEffect::Started)]);
    assert_eq!(outcome.due(Metric::NoResponse), Some(beijing(2026, 11, 25, 0, 0)));
}

#[test]
fn b_is_lowered_to_c_and_c_stays_c() {
    let opened = beijing(2026, 11, 23, 10, 0);
    let asked = beijing(2026, 11, 23, 11, 0);
    // Three business days of 15 hours from Monday 11:00: Thursday 11:00.
    let due = beijing(2026, 11, 26, 11, 0);
    let outcome = given(regional_operator())
        .history([agent(opened, open("standard", "technical", Severity::B)), agent(asked, request_info())])
        .when(timer(due, CommandBody::DowngradeForNoResponse { cycle: 1, due_at: due }));
    outcome.then_names(&["downgraded_for_no_response"]);
    assert_eq!(outcome.ticket().severity, Severity::C);
    // C has no window: the clock runs on without a due instant, so nothing lowers C.
    let window = outcome.ticket().clock(Metric::NoResponse).unwrap();
    assert_eq!((window.cycle, window.plan.as_ref()), (2, None));
    assert_eq!(window.due_at(), None);
}

#[test]
fn a_customer_reply_cancels_the_pending_downgrade() {
    let due = beijing(2026, 11, 22, 3, 10);
    let given = critical_ticket().history([
        agent(beijing(2026, 11, 21, 3, 10), request_info()),
        command(crate::ActorKind::Customer, "acme-admin", beijing(2026, 11, 21, 9, 0), reply()),
    ]);
    let ticket = given.state().ticket().unwrap();
    assert_eq!(ticket.status, Status::Open);
    assert_eq!(ticket.clock(Metric::NoResponse).unwrap().status, crate::ClockStatus::Stopped(ClockOutcome::Met));
    let err = given
        .when(timer(due, CommandBody::DowngradeForNoResponse { cycle: 1, due_at: due }))
        .then_err(ErrorKind::TimerMoot)
        .clone();
    assert_eq!(err, DomainError::TimerMoot { metric: Metric::NoResponse, cycle: 1, reason: MootReason::NotRunning });
}

#[test]
fn a_reply_resumes_paused_clocks_with_their_remaining_time() {
    // Premier A, Berlin office hours 08:00-18:00 on weekdays; resolution target 2 business days.
    let opened = berlin(2026, 11, 23, 9, 0);
    let outcome = given(professional())
        .history([
            agent(opened, open("premier-example", "technical", Severity::A)),
            agent(berlin(2026, 11, 23, 11, 0), request_info()),
        ])
        .when(command(crate::ActorKind::Customer, "acme-admin", berlin(2026, 11, 24, 12, 0), reply()));
    // Two business hours elapsed before the pause; 18 remain from Tuesday 12:00:
    // 6 on Tuesday, 10 on Wednesday, 2 on Thursday.
    assert_eq!(outcome.due(Metric::Resolution), Some(berlin(2026, 11, 26, 10, 0)));
    let plan = outcome.clock_changes(Metric::Resolution).last().unwrap().plan.clone().unwrap();
    assert_eq!((plan.target_duration, plan.elapsed), (TimeDelta::hours(20), TimeDelta::hours(2)));
    assert_eq!(outcome.due(Metric::FollowUp), Some(berlin(2026, 11, 24, 14, 0)));
}

#[test]
fn a_no_response_downgrade_recomputes_targets_from_the_time_already_elapsed() {
    let opened = berlin(2026, 11, 23, 9, 0);
    let asked = berlin(2026, 11, 23, 11, 0);
    let due = berlin(2026, 11, 25, 11, 0); // 48 hours, around the clock.
    let outcome = given(professional())
        .history([
            agent(opened, open("premier-example", "technical", Severity::A)),
            agent(asked, request_info()),
            timer(due, CommandBody::DowngradeForNoResponse { cycle: 1, due_at: due }),
        ])
        .when(command(crate::ActorKind::Customer, "acme-admin", berlin(2026, 11, 25, 12, 0), reply()));
    // B: 5 business days from Monday 09:00 is 50 business hours; 2 elapsed, 48 remain from
    // Wednesday 12:00: 6 + 10 (Thu) + 10 (Fri) + 10 (Mon) + 10 (Tue) + 2 (Wed 2 December).
    assert_eq!(outcome.due(Metric::Resolution), Some(berlin(2026, 12, 2, 10, 0)));
    let plan = outcome.clock_changes(Metric::Resolution).last().unwrap().plan.clone().unwrap();
    assert_eq!(
        (plan.severity, plan.target_duration, plan.elapsed),
        (Severity::B, TimeDelta::hours(50), TimeDelta::hours(2))
    );
    // Follow-up at B is every 8 hours.
    assert_eq!(outcome.due(Metric::FollowUp), Some(berlin(2026, 11, 25, 20, 0)));
}

#[test]
fn an_upgrade_keeps_the_elapsed_time_and_applies_the_new_target() {
    // B opened Monday 10:00 (due Tuesday 10:00); upgraded to A at 10:20: 20 of 60 minutes gone.
    let outcome = given(regional_operator())
        .history([agent(beijing(2026, 11, 23, 10, 0), open("advanced", "technical", Severity::B))])
        .when(agent(beijing(2026, 11, 23, 10, 20), set_severity(Severity::A)));
    outcome.then_names(&["severity_set"]);
    assert_eq!(outcome.due(Metric::FirstResponse), Some(beijing(2026, 11, 23, 11, 0)));
    let change = outcome.clock_changes(Metric::FirstResponse)[0];
    assert_eq!((change.effect, change.cycle), (ClockEffect::Retargeted, 1));
}

#[test]
fn a_downgrade_measures_elapsed_time_on_the_new_calendar() {
    // A opened Monday 10:00, lowered to B at 10:30: 30 minutes of business time elapsed; B's one
    // business day from 10:00 is 15 hours, so 14.5 remain: due Tuesday 10:00.
    let outcome = given(regional_operator())
        .history([agent(beijing(2026, 11, 23, 10, 0), open("advanced", "technical", Severity::A))])
        .when(agent(beijing(2026, 11, 23, 10, 30), set_severity(Severity::B)));
    assert_eq!(outcome.due(Metric::FirstResponse), Some(beijing(2026, 11, 24, 10, 0)));
    // A night-time A ticket lowered to B has used no B business time at all.
    let outcome = critical_ticket().when(agent(beijing(2026, 11, 21, 3, 30), set_severity(Severity::B)));
    assert_eq!(outcome.due(Metric::FirstResponse), Some(beijing(2026, 11, 22, 0, 0)));
}

// 6. Escalation.

#[test]
fn a_support_tool_escalates_to_a_tier_and_team() {
    let cmd = agent(
        beijing(2026, 11, 21, 3, 5),
        CommandBody::Escalate {
            tier: Tier::new("tier-2").unwrap(),
            team: Some(Team::new("mail").unwrap()),
            reason: text("needs the mail team"),
        },
    );
    let outcome = critical_ticket().when(cmd.clone());
    outcome.then(&[Event {
        ticket_id: ticket_id(),
        occurred_at: cmd.issued_at,
        kind: EventKind::Escalated {
            tier: Tier::new("tier-2").unwrap(),
            team: Some(Team::new("mail").unwrap()),
            reason: text("needs the mail team"),
            cause: EscalationCause::Manual,
        },
    }]);
    assert_eq!(outcome.ticket().tier.as_ref().map(Tier::as_str), Some("tier-2"));
    let mut again = cmd;
    again.issued_at = beijing(2026, 11, 21, 3, 6);
    critical_ticket()
        .history([agent(beijing(2026, 11, 21, 3, 5), again.body.clone())])
        .when(again)
        .then_err(ErrorKind::InvalidTransition);
}

#[test]
fn crossing_the_80_percent_warning_escalates_a_critical_ticket() {
    let (w50, at) = (beijing(2026, 11, 21, 3, 30), beijing(2026, 11, 21, 3, 48));
    let outcome = critical_ticket()
        .history([timer(w50, warning(Metric::FirstResponse, 1, 50, w50))])
        .when(timer(at, warning(Metric::FirstResponse, 1, 80, at)));
    outcome.then_names(&["sla_warning", "escalated"]);
    let EventKind::Escalated { tier, cause, .. } = outcome.event("escalated") else { unreachable!() };
    assert_eq!(tier.as_str(), "tier-2");
    assert_eq!(*cause, EscalationCause::Warning { metric: Metric::FirstResponse, cycle: 1, threshold_percent: 80 });
    let at = beijing(2026, 11, 21, 3, 30);
    critical_ticket().when(timer(at, warning(Metric::FirstResponse, 1, 50, at))).then_names(&["sla_warning"]);
}

#[test]
fn a_breached_first_response_escalates_to_the_duty_manager() {
    let due = beijing(2026, 11, 21, 4, 0);
    let outcome = critical_ticket_warned().when(timer(due, breach(Metric::FirstResponse, 1, due)));
    outcome.then_names(&["sla_breached", "escalated"]);
    let EventKind::SlaBreached { severity, due_at, .. } = outcome.event("sla_breached") else { unreachable!() };
    assert_eq!((*severity, *due_at), (Severity::A, due));
    assert_eq!(outcome.ticket().team.as_ref().map(Team::as_str), Some("duty-manager"));
}

#[test]
fn an_automatic_escalation_is_not_repeated_for_a_ticket_already_there() {
    let due = beijing(2026, 11, 21, 4, 0);
    critical_ticket_warned()
        .history([agent(
            beijing(2026, 11, 21, 3, 50),
            CommandBody::Escalate {
                tier: Tier::new("tier-3").unwrap(),
                team: Some(Team::new("duty-manager").unwrap()),
                reason: text("vip"),
            },
        )])
        .when(timer(due, breach(Metric::FirstResponse, 1, due)))
        .then_names(&["sla_breached"]);
}

#[test]
fn an_automatic_escalation_never_lowers_the_tier_a_person_chose() {
    // Given a critical ticket a person escalated to tier 3 before its 80% warning
    let (w50, at) = (beijing(2026, 11, 21, 3, 30), beijing(2026, 11, 21, 3, 48));
    let to_tier_3 = CommandBody::Escalate { tier: Tier::new("tier-3").unwrap(), team: None, reason: text("vip") };
    let given = critical_ticket().history([
        agent(beijing(2026, 11, 21, 3, 10), to_tier_3),
        timer(w50, warning(Metric::FirstResponse, 1, 50, w50)),
    ]);
    // When the 80% warning (which escalates to tier 2) is recorded
    let warned = timer(at, warning(Metric::FirstResponse, 1, 80, at));
    let outcome = given.clone().when(warned.clone());
    // Then the ticket stays at tier 3
    outcome.then_names(&["sla_warning"]);
    assert_eq!(outcome.ticket().tier.as_ref().map(Tier::as_str), Some("tier-3"));
    // (Under rules V2 it was moved down to tier 2.)
    let v2 = crate::decide::decide_under(crate::Rules::V2, &warned, given.state(), &regional_operator()).unwrap();
    assert!(v2.iter().any(|e| matches!(&e.kind, EventKind::Escalated { tier, .. } if tier.as_str() == "tier-2")));
    // And the breach still brings the duty manager in, at tier 3
    let due = beijing(2026, 11, 21, 4, 0);
    let breached = given.history([warned]).when(timer(due, breach(Metric::FirstResponse, 1, due)));
    breached.then_names(&["sla_breached", "escalated"]);
    assert_eq!(breached.ticket().team.as_ref().map(Team::as_str), Some("duty-manager"));
}

#[test]
fn an_automatic_escalation_raises_a_ticket_a_person_put_in_a_lower_tier() {
    let (w50, at) = (beijing(2026, 11, 21, 3, 30), beijing(2026, 11, 21, 3, 48));
    let to_tier_1 = CommandBody::Escalate { tier: Tier::new("tier-1").unwrap(), team: None, reason: text("triage") };
    let outcome = critical_ticket()
        .history([
            agent(beijing(2026, 11, 21, 3, 10), to_tier_1),
            timer(w50, warning(Metric::FirstResponse, 1, 50, w50)),
        ])
        .when(timer(at, warning(Metric::FirstResponse, 1, 80, at)));
    outcome.then_names(&["sla_warning", "escalated"]);
    assert_eq!(outcome.ticket().tier.as_ref().map(Tier::as_str), Some("tier-2"));
}

// Severity A follow-up continues until resolved.

#[test]
fn each_response_restarts_the_follow_up_clock_until_resolved() {
    let outcome = critical_ticket()
        .history([agent(beijing(2026, 11, 21, 3, 20), respond())])
        .when(agent(beijing(2026, 11, 21, 5, 0), respond()));
    let follow_up: Vec<(u32, ClockEffect)> =
        outcome.clock_changes(Metric::FollowUp).iter().map(|c| (c.cycle, c.effect)).collect();
    assert_eq!(follow_up, vec![(1, ClockEffect::Stopped(ClockOutcome::Met)), (2, ClockEffect::Started)]);
    assert_eq!(outcome.due(Metric::FollowUp), Some(beijing(2026, 11, 21, 9, 0)));
    let resolved = critical_ticket()
        .history([agent(beijing(2026, 11, 21, 3, 20), respond())])
        .when(agent(beijing(2026, 11, 21, 5, 0), resolve()));
    assert!(resolved.ticket().clocks.values().all(|c| !c.is_active()));
}

// Responses, breaches and the timer.

#[test]
fn a_response_in_time_meets_the_first_response_target() {
    let outcome = critical_ticket().when(agent(beijing(2026, 11, 21, 3, 20), respond()));
    outcome.then_names(&["agent_responded"]);
    assert_eq!(outcome.clock_changes(Metric::FirstResponse)[0].effect, ClockEffect::Stopped(ClockOutcome::Met));
    assert_eq!(outcome.ticket().first_response_at, Some(beijing(2026, 11, 21, 3, 20)));
}

#[test]
fn a_late_response_records_the_breach_the_timer_had_not_yet_recorded() {
    let outcome = critical_ticket_warned().when(agent(beijing(2026, 11, 21, 4, 10), respond()));
    outcome.then_names(&["sla_breached", "escalated", "agent_responded"]);
    assert_eq!(outcome.clock_changes(Metric::FirstResponse)[0].effect, ClockEffect::Stopped(ClockOutcome::Breached));
}

#[test]
fn a_late_response_records_every_warning_and_breach_the_timer_had_not_at_their_own_instants() {
    // Given a critical ticket on which the timer recorded nothing (it was down)
    // When an agent responds at 04:10
    let outcome = critical_ticket().when(agent(beijing(2026, 11, 21, 4, 10), respond()));
    // Then the 50% and 80% warnings (with the 80% escalation to tier 2) and the breach (with its
    // escalation to the duty manager) are recorded first, in due order, each with its instant
    outcome.then_names(&["sla_warning", "sla_warning", "escalated", "sla_breached", "escalated", "agent_responded"]);
    let instants: Vec<Timestamp> = outcome
        .events()
        .iter()
        .filter_map(|e| {
            if let EventKind::SlaWarning { warn_at, .. } = &e.kind {
                return Some(*warn_at);
            }
            if let EventKind::SlaBreached { due_at, .. } = &e.kind {
                return Some(*due_at);
            }
            None
        })
        .collect();
    assert_eq!(instants, [beijing(2026, 11, 21, 3, 30), beijing(2026, 11, 21, 3, 48), beijing(2026, 11, 21, 4, 0)]);
    assert!(outcome.events().iter().all(|e| e.occurred_at == beijing(2026, 11, 21, 4, 10)), "detected at 04:10");
    assert_eq!(outcome.ticket().team.as_ref().map(Team::as_str), Some("duty-manager"));
}

#[test]
fn a_response_exactly_at_the_due_instant_is_late() {
    let outcome = critical_ticket_warned().when(agent(beijing(2026, 11, 21, 4, 0), respond()));
    outcome.then_names(&["sla_breached", "escalated", "agent_responded"]);
}

#[test]
fn an_agent_response_cancels_the_pending_breach() {
    let due = beijing(2026, 11, 21, 4, 0);
    let given = critical_ticket().history([agent(beijing(2026, 11, 21, 3, 59), respond())]);
    let err = given.when(timer(due, breach(Metric::FirstResponse, 1, due))).then_err(ErrorKind::TimerMoot).clone();
    assert_eq!(err, DomainError::TimerMoot { metric: Metric::FirstResponse, cycle: 1, reason: MootReason::NotRunning });
}

#[test]
fn a_firing_before_its_instant_is_refused() {
    let due = beijing(2026, 11, 21, 4, 0);
    critical_ticket()
        .when(timer(due - TimeDelta::seconds(1), breach(Metric::FirstResponse, 1, due)))
        .then_err(ErrorKind::TimerNotDue);
}

#[test]
fn a_firing_for_a_retargeted_clock_is_moot() {
    let due = beijing(2026, 11, 21, 4, 0);
    let err = critical_ticket()
        .history([agent(beijing(2026, 11, 21, 3, 10), set_severity(Severity::B))])
        .when(timer(due, breach(Metric::FirstResponse, 1, due)))
        .then_err(ErrorKind::TimerMoot)
        .clone();
    assert!(matches!(err, DomainError::TimerMoot { reason: MootReason::Retargeted, .. }));
}

#[test]
fn a_breach_is_recorded_once() {
    let due = beijing(2026, 11, 21, 4, 0);
    let err = critical_ticket()
        .history([timer(due, breach(Metric::FirstResponse, 1, due))])
        .when(timer(due + TimeDelta::seconds(1), breach(Metric::FirstResponse, 1, due)))
        .then_err(ErrorKind::TimerMoot)
        .clone();
    assert!(matches!(err, DomainError::TimerMoot { reason: MootReason::AlreadyRecorded, .. }));
}

#[test]
fn a_warning_fired_after_its_breach_was_due_records_both_at_their_instants() {
    // Given a critical ticket whose 50% warning was recorded on time
    let (w50, w80) = (beijing(2026, 11, 21, 3, 30), beijing(2026, 11, 21, 3, 48));
    let given = critical_ticket().history([timer(w50, warning(Metric::FirstResponse, 1, 50, w50))]);
    // When the 80% warning fires only at 04:05, after the breach was due at 04:00
    let outcome = given.when(timer(beijing(2026, 11, 21, 4, 5), warning(Metric::FirstResponse, 1, 80, w80)));
    // Then the warning and the breach are both recorded, the warning first, each at its instant
    outcome.then_names(&["sla_warning", "escalated", "sla_breached", "escalated"]);
    let EventKind::SlaWarning { warn_at, .. } = outcome.event("sla_warning") else { unreachable!() };
    assert_eq!(*warn_at, w80);
    let EventKind::SlaBreached { due_at, .. } = outcome.event("sla_breached") else { unreachable!() };
    assert_eq!(*due_at, beijing(2026, 11, 21, 4, 0));
}

#[test]
fn under_the_first_rules_a_warning_whose_breach_is_due_too_is_superseded() {
    // Stored histories decided under rules V1 re-run as they were decided.
    let policy = regional_operator();
    let given = critical_ticket();
    let warn_at = beijing(2026, 11, 21, 3, 48);
    let late = timer(beijing(2026, 11, 21, 4, 5), warning(Metric::FirstResponse, 1, 80, warn_at));
    let err = crate::decide::decide_under(crate::Rules::V1, &late, given.state(), &policy).unwrap_err();
    assert!(matches!(err, DomainError::TimerMoot { reason: MootReason::SupersededByBreach, .. }));
    let response = agent(beijing(2026, 11, 21, 4, 10), respond());
    let events = crate::decide::decide_under(crate::Rules::V1, &response, given.state(), &policy).unwrap();
    let names: Vec<&str> = events.iter().map(|e| e.kind.name()).collect();
    assert_eq!(names, ["sla_breached", "escalated", "agent_responded"]);
}

#[test]
fn a_firing_for_an_old_cycle_is_moot() {
    let given = critical_ticket()
        .history([agent(beijing(2026, 11, 21, 3, 20), respond()), agent(beijing(2026, 11, 21, 5, 0), respond())]);
    let due = beijing(2026, 11, 21, 7, 20);
    let err = given.when(timer(due, breach(Metric::FollowUp, 1, due))).then_err(ErrorKind::TimerMoot).clone();
    assert!(matches!(err, DomainError::TimerMoot { reason: MootReason::OtherCycle, .. }));
}

#[test]
fn only_the_engine_records_sla_firings() {
    let due = beijing(2026, 11, 21, 4, 0);
    critical_ticket().when(agent(due, breach(Metric::FirstResponse, 1, due))).then_err(ErrorKind::InvalidCommand);
    critical_ticket().when(timer(due, breach(Metric::NoResponse, 1, due))).then_err(ErrorKind::InvalidCommand);
}

// Lifecycle.

#[test]
fn commands_on_an_unknown_ticket_are_refused() {
    let err =
        given(regional_operator()).when(agent(saturday_0300(), respond())).then_err(ErrorKind::TicketNotFound).clone();
    assert_eq!(err, DomainError::TicketNotFound(ticket_id()));
}

#[test]
fn no_response_on_a_resolved_ticket() {
    let resolved = || critical_ticket().history([agent(beijing(2026, 11, 21, 3, 20), resolve())]);
    let later = beijing(2026, 11, 21, 5, 0);
    resolved().when(agent(later, respond())).then_err(ErrorKind::TicketResolved);
    resolved().when(agent(later, request_info())).then_err(ErrorKind::TicketResolved);
    resolved().when(agent(later, reply())).then_err(ErrorKind::TicketResolved);
    resolved().when(agent(later, set_severity(Severity::B))).then_err(ErrorKind::TicketResolved);
}

#[test]
fn no_double_resolve() {
    let err = critical_ticket()
        .history([agent(beijing(2026, 11, 21, 3, 20), resolve())])
        .when(agent(beijing(2026, 11, 21, 3, 25), resolve()))
        .then_err(ErrorKind::InvalidTransition)
        .clone();
    assert_eq!(err, DomainError::InvalidTransition(Transition::AlreadyResolved));
}

#[test]
fn reopen_only_a_resolved_ticket() {
    let reopen = CommandBody::Reopen { reason: text("still failing") };
    critical_ticket().when(agent(beijing(2026, 11, 21, 3, 25), reopen.clone())).then_err(ErrorKind::InvalidTransition);
    let outcome = critical_ticket()
        .history([agent(beijing(2026, 11, 21, 3, 20), respond()), agent(beijing(2026, 11, 21, 3, 40), resolve())])
        .when(agent(beijing(2026, 11, 21, 6, 0), reopen));
    outcome.then_names(&["reopened"]);
    assert_eq!(outcome.ticket().status, Status::Open);
    let cycles: Vec<(Metric, u32)> = outcome.events()[0].kind.clocks().iter().map(|c| (c.metric, c.cycle)).collect();
    assert_eq!(cycles, vec![(Metric::Resolution, 2), (Metric::FollowUp, 2)]);
    assert_eq!(outcome.due(Metric::FollowUp), Some(beijing(2026, 11, 21, 10, 0)));
}

#[test]
fn resolving_stops_every_clock_and_cancels_the_no_response_window() {
    let outcome = critical_ticket()
        .history([agent(beijing(2026, 11, 21, 3, 10), request_info())])
        .when(agent(beijing(2026, 11, 21, 5, 0), resolve()));
    let effects: Vec<(Metric, ClockEffect)> =
        outcome.events()[0].kind.clocks().iter().map(|c| (c.metric, c.effect)).collect();
    assert_eq!(
        effects,
        vec![
            (Metric::FollowUp, ClockEffect::Stopped(ClockOutcome::Met)),
            (Metric::Resolution, ClockEffect::Stopped(ClockOutcome::Untargeted)),
            (Metric::NoResponse, ClockEffect::Stopped(ClockOutcome::Cancelled)),
        ]
    );
    assert_eq!(outcome.ticket().status, Status::Resolved);
}

#[test]
fn asking_the_customer_twice_is_refused() {
    critical_ticket()
        .history([agent(beijing(2026, 11, 21, 3, 10), request_info())])
        .when(agent(beijing(2026, 11, 21, 3, 20), request_info()))
        .then_err(ErrorKind::InvalidTransition);
}

#[test]
fn a_customer_may_comment_on_an_open_ticket_without_changing_clocks() {
    let outcome = critical_ticket().when(command(
        crate::ActorKind::Customer,
        "acme-admin",
        beijing(2026, 11, 21, 3, 10),
        reply(),
    ));
    outcome.then_names(&["customer_responded"]);
    assert!(outcome.events()[0].kind.clocks().is_empty());
}

#[test]
fn time_never_runs_backwards_within_a_ticket() {
    critical_ticket().when(agent(beijing(2026, 11, 21, 2, 59), respond())).then_err(ErrorKind::InvalidCommand);
}

#[test]
fn a_command_for_another_ticket_is_refused() {
    let mut cmd = agent(beijing(2026, 11, 21, 3, 10), respond());
    cmd.ticket_id = TicketId::from_uuid(uuid::Uuid::from_u128(99));
    critical_ticket().when(cmd).then_err(ErrorKind::InvalidCommand);
}

#[test]
fn versions_count_the_events_applied() {
    let due = beijing(2026, 11, 21, 4, 0);
    let outcome = critical_ticket_warned().when(timer(due, breach(Metric::FirstResponse, 1, due)));
    assert_eq!(outcome.before.version(), 4);
    assert_eq!(outcome.after.version(), 6);
}

// Imported history: consequences past at import.

fn breach_at_import(metric: Metric, cycle: u32, due_at: Timestamp) -> CommandBody {
    CommandBody::RecordSlaBreach { metric, cycle, due_at, at_import: true }
}

#[test]
fn a_breach_past_at_import_is_recorded_as_detected_at_import_without_warnings_or_escalations() {
    // Given a critical ticket imported as opened at 03:00 (its 50% and 80% warnings, the 80% one
    // escalating, and its 04:00 breach, escalating too, all past), its history appended days later
    let imported_at = beijing(2026, 11, 30, 12, 0);
    let due = beijing(2026, 11, 21, 4, 0);
    // When the timer records the first-response breach at the import's instant
    let outcome = critical_ticket().when(timer(imported_at, breach_at_import(Metric::FirstResponse, 1, due)));
    // Then the breach is recorded as detected at import, with its due instant, and the warnings
    // and escalations past at import are not
    outcome.then(&[Event {
        ticket_id: ticket_id(),
        occurred_at: imported_at,
        kind: EventKind::SlaBreached { metric: Metric::FirstResponse, cycle: 1, severity: Severity::A, due_at: due },
    }]);
    assert_eq!(outcome.ticket().team, None, "no escalation past at import");
    assert!(outcome.ticket().clocks.values().any(|c| c.metric == Metric::FirstResponse && c.breached));
}

#[test]
fn a_breach_at_import_is_recorded_once() {
    let imported_at = beijing(2026, 11, 30, 12, 0);
    let due = beijing(2026, 11, 21, 4, 0);
    critical_ticket()
        .history([timer(imported_at, breach_at_import(Metric::FirstResponse, 1, due))])
        .when(timer(imported_at, breach_at_import(Metric::FirstResponse, 1, due)))
        .then_err(ErrorKind::TimerMoot);
}

#[test]
fn a_breach_at_import_is_not_due_before_its_instant() {
    let due = beijing(2026, 11, 21, 4, 0);
    critical_ticket()
        .when(timer(beijing(2026, 11, 21, 3, 59), breach_at_import(Metric::FirstResponse, 1, due)))
        .then_err(ErrorKind::TimerNotDue);
}

// Imported history: a live decision after the import settles nothing past at import (rules V3).

/// The critical ticket opened Saturday 03:00, its history imported (appended) at `imported_at`.
fn critical_ticket_imported(imported_at: Timestamp, later: impl IntoIterator<Item = crate::command::Command>) -> Given {
    let opening = agent(saturday_0300(), open("advanced", "technical", Severity::A));
    given(regional_operator()).imported(imported_at, std::iter::once(opening).chain(later))
}

#[test]
fn a_live_decision_after_an_import_records_a_past_breach_as_detected_at_import_and_no_past_warning_or_escalation() {
    // Given the critical ticket's history imported at 12:00: its 50% and 80% warnings (the 80%
    // one escalating) and its 04:00 breach (escalating too) were past at import
    let imported_at = beijing(2026, 11, 21, 12, 0);
    let given = critical_ticket_imported(imported_at, []);
    // When an agent responds at 12:10, before the timer recorded the breach at import
    let response = beijing(2026, 11, 21, 12, 10);
    let outcome = given.clone().when(agent(response, respond()));
    // Then the breach is recorded with its due instant, as the timer would at import, and
    // neither the warnings nor an escalation are
    outcome.then_names(&["sla_breached", "agent_responded"]);
    let EventKind::SlaBreached { metric, due_at, .. } = outcome.event("sla_breached") else { unreachable!() };
    assert_eq!((*metric, *due_at), (Metric::FirstResponse, beijing(2026, 11, 21, 4, 0)));
    assert_eq!(outcome.ticket().team, None, "no escalation past at import");
    // (Under rules V2 the same decision fired both warnings and both escalations.)
    let v2 =
        crate::decide::decide_under(crate::Rules::V2, &agent(response, respond()), given.state(), &regional_operator())
            .unwrap();
    assert!(v2.iter().any(|e| e.kind.name() == "sla_warning") && v2.iter().any(|e| e.kind.name() == "escalated"));
}

#[test]
fn a_live_decision_after_an_import_settles_what_fell_due_after_it() {
    // Given the critical ticket's history imported at 03:40, after its 50% warning (03:30) and
    // before its 80% one (03:48, escalating to tier 2)
    let given = critical_ticket_imported(beijing(2026, 11, 21, 3, 40), []);
    // When an agent responds at 03:50
    let outcome = given.when(agent(beijing(2026, 11, 21, 3, 50), respond()));
    // Then only the 80% warning and its escalation are settled: they fell due after the import
    outcome.then_names(&["sla_warning", "escalated", "agent_responded"]);
    let EventKind::SlaWarning { threshold_percent, .. } = outcome.event("sla_warning") else { unreachable!() };
    assert_eq!(*threshold_percent, 80);
}

#[test]
fn a_no_response_window_past_at_import_does_not_lower_the_severity_of_a_live_decision() {
    // Given an imported history: the critical ticket answered at 03:20, the customer asked at
    // 04:20 (the no-response window ran out Sunday 04:20), imported Sunday 12:00
    let history = [agent(beijing(2026, 11, 21, 3, 20), respond()), agent(beijing(2026, 11, 21, 4, 20), request_info())];
    let given = critical_ticket_imported(beijing(2026, 11, 22, 12, 0), history);
    // When the customer replies at 12:30
    let outcome =
        given.clone().when(command(crate::command::ActorKind::Customer, "c-1", beijing(2026, 11, 22, 12, 30), reply()));
    // Then the ticket keeps severity A: the window's expiry was past at import
    assert!(!outcome.events().iter().any(|e| e.kind.name() == "downgraded_for_no_response"));
    assert_eq!(outcome.ticket().severity, Severity::A);
    assert_eq!(outcome.ticket().status, Status::Open);
    // (Under rules V2 the same reply was decided after a downgrade to B.)
    let reply_v2 = command(crate::command::ActorKind::Customer, "c-1", beijing(2026, 11, 22, 12, 30), reply());
    let v2 = crate::decide::decide_under(crate::Rules::V2, &reply_v2, given.state(), &regional_operator()).unwrap();
    assert!(v2.iter().any(|e| e.kind.name() == "downgraded_for_no_response"));
}

#[test]
fn an_importers_own_decisions_settle_the_history_between_its_instants() {
    // Given the critical ticket's opening imported at 12:00
    let given = critical_ticket_imported(beijing(2026, 11, 21, 12, 0), []);
    // When the importer's next command, at 03:50 of the history, is decided
    let outcome = given.when(agent(beijing(2026, 11, 21, 3, 50), respond()));
    // Then the warnings due within the history are part of it
    outcome.then_names(&["sla_warning", "sla_warning", "escalated", "agent_responded"]);
}
