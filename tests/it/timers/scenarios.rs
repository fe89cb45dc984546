//! Given/when/then for the timer's rules, on the shipped policies.

use chrono::{TimeDelta, TimeZone};
use ticket_domain::DeadlineIndex;
use ticket_domain::testing::{beijing, open, text};
use ticket_domain::{ClockEffect, CommandBody, ErrorKind, EventKind, Metric, Severity, TargetAmount, Timestamp};
use ticket_log::EventLog;
use ticket_service::{Clock, ServiceErrorKind};

use super::{Engine, RunningTimer, new_ticket};
use crate::shipped_policy;

fn respond() -> CommandBody {
    CommandBody::RecordAgentResponse { message: text("looking into it") }
}

fn ask() -> CommandBody {
    CommandBody::RequestCustomerInfo { request: text("which mailbox?") }
}

fn reply() -> CommandBody {
    CommandBody::RecordCustomerReply { message: text("the shared one") }
}

fn berlin(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> Timestamp {
    chrono_tz::Europe::Berlin.with_ymd_and_hms(y, mo, d, h, mi, 0).single().unwrap().with_timezone(&chrono::Utc)
}

const SECOND: TimeDelta = TimeDelta::seconds(1);

#[tokio::test]
async fn severity_a_opened_at_three_on_a_saturday_breaches_its_first_response_at_four_exactly() {
    // 2026-11-21 is a Saturday.
    let engine = Engine::start(shipped_policy("regional-operator.toml"), beijing(2026, 11, 21, 2, 0));
    let ticket = new_ticket();
    engine.at(beijing(2026, 11, 21, 3, 0), ticket, open("advanced", "technical", Severity::A)).await.unwrap();

    engine.advance_to(beijing(2026, 11, 21, 4, 0) - SECOND).await;
    assert!(engine.breaches(ticket).is_empty(), "nothing is breached a second early");
    assert_eq!(
        engine.names(ticket),
        ["opened", "sla_warning", "sla_warning", "escalated"],
        "the 50% and 80% warnings fired, and the 80% one escalated to tier 2"
    );

    engine.advance_to(beijing(2026, 11, 21, 4, 0)).await;
    let due = beijing(2026, 11, 21, 4, 0);
    assert_eq!(engine.breaches(ticket), [(Metric::FirstResponse, 1, due, due)]);
    let events = engine.events(ticket);
    let breach = events.iter().find(|e| e.event.kind.name() == "sla_breached").unwrap();
    assert_eq!(breach.actor.id.as_str(), "ticket-timer");
    assert_eq!(breach.command_id.as_str(), format!("timer:{ticket}:first_response:1:breach"));
    let escalated = events.last().unwrap();
    assert!(
        matches!(&escalated.event.kind, EventKind::Escalated { tier, team: Some(team), .. }
            if tier.as_str() == "tier-3" && team.as_str() == "duty-manager"),
        "the breach escalates to the duty manager: {:?}",
        escalated.event.kind
    );

    engine.advance_to(beijing(2026, 11, 22, 12, 0)).await;
    assert_eq!(engine.breaches(ticket).len(), 1, "a breach fires once");
}

/// Opens a ticket at `opened`, checks the first-response due instant, and that the breach fires
/// at it and not a second before.
async fn breaches_at(category: &str, opened: Timestamp, due: Timestamp) {
    let engine = Engine::start(shipped_policy("regional-operator.toml"), opened - TimeDelta::hours(1));
    let ticket = new_ticket();
    let result = engine.at(opened, ticket, open("standard", category, Severity::B)).await.unwrap();
    let EventKind::Opened(opened_event) = &result.events[0].event.kind else { panic!("not opened") };
    let plan = opened_event.clocks.iter().find(|c| c.metric == Metric::FirstResponse).unwrap().plan.clone().unwrap();
    assert_eq!(plan.due_at, Some(due), "{category} B opened at {opened}");

    engine.advance_to(due - SECOND).await;
    assert!(engine.breaches(ticket).is_empty(), "{category} B opened at {opened}: breached early");
    engine.advance_to(due).await;
    assert_eq!(engine.breaches(ticket), [(Metric::FirstResponse, 1, due, due)]);
}

#[tokio::test]
async fn severity_b_in_beijing_opened_late_at_night_is_due_the_next_business_evening() {
    // 09:00-24:00 every day; 1 business day. Monday 23:30 is half an hour before the close.
    breaches_at("technical", beijing(2026, 11, 23, 23, 30), beijing(2026, 11, 24, 23, 30)).await;
}

#[tokio::test]
async fn severity_b_in_beijing_opened_before_the_opening_is_due_at_that_days_close() {
    breaches_at("technical", beijing(2026, 11, 23, 8, 0), beijing(2026, 11, 24, 0, 0)).await;
}

#[tokio::test]
async fn a_holiday_week_pushes_a_billing_b_due_instant_out() {
    // Monday to Friday 09:00-18:00 with 1-7 October 2026 as holidays (ADR 0002's example).
    breaches_at("billing", beijing(2026, 9, 30, 10, 0), beijing(2026, 10, 8, 10, 0)).await;
    // Without a holiday in between: the next business day at the same position.
    breaches_at("billing", beijing(2026, 11, 23, 10, 0), beijing(2026, 11, 24, 10, 0)).await;
}

#[tokio::test]
async fn an_agent_response_cancels_the_pending_breach() {
    let engine = Engine::start(shipped_policy("regional-operator.toml"), beijing(2026, 11, 21, 2, 0));
    let ticket = new_ticket();
    engine.at(beijing(2026, 11, 21, 3, 0), ticket, open("advanced", "technical", Severity::A)).await.unwrap();
    engine.step_to(beijing(2026, 11, 21, 4, 0) - SECOND).await;
    engine.execute(ticket, respond()).await.unwrap();
    let progress = engine.advance_to(beijing(2026, 11, 21, 4, 30)).await;
    assert!(engine.breaches(ticket).is_empty());
    assert_eq!(progress.moot, 0, "the index forgot the breach when the response stopped the clock");
    // The next follow-up (4 hours) is what is pending now: its 50% warning first.
    assert_eq!(progress.next_at, Some(beijing(2026, 11, 21, 6, 0) - SECOND));
}

#[tokio::test]
async fn a_firing_made_moot_a_moment_before_is_refused_and_recorded_nowhere() {
    let engine = Engine::start(shipped_policy("regional-operator.toml"), beijing(2026, 11, 21, 2, 0));
    let ticket = new_ticket();
    engine.at(beijing(2026, 11, 21, 3, 0), ticket, open("advanced", "technical", Severity::A)).await.unwrap();
    engine.advance_to(beijing(2026, 11, 21, 3, 59)).await;
    // What a timer that has not yet seen the response would fire.
    let mut stale = DeadlineIndex::new();
    for e in engine.log().read_from(1, 100).unwrap() {
        stale.apply(&e);
    }
    let breach = *stale.next().unwrap();
    engine.at(beijing(2026, 11, 21, 4, 0) - SECOND, ticket, respond()).await.unwrap();
    engine.clock.advance_to(beijing(2026, 11, 21, 4, 0));
    let head = engine.log().head();
    let command =
        breach.command(beijing(2026, 11, 21, 4, 0), &ticket_domain::ActorId::new("timer-2").unwrap()).unwrap();
    let refused = engine.service.execute(command.into()).await.unwrap_err();
    assert_eq!(refused.kind(), ServiceErrorKind::Rejected(ErrorKind::TimerMoot), "{refused}");
    assert_eq!(engine.log().head(), head, "nothing appended");
    assert!(engine.log().command(&breach.command_id().unwrap()).unwrap().is_none(), "the firing's id is not taken");
}

#[tokio::test]
async fn a_no_response_downgrade_recomputes_the_targets_from_the_time_already_elapsed() {
    // Premier contract: A resolution 2 business days, B 5, on Monday-Friday 08:00-18:00 Berlin;
    // follow-up A 2 hours, B 8 hours; no-response window A 48 hours.
    let engine = Engine::start(shipped_policy("professional.toml"), berlin(2026, 11, 23, 8, 0));
    let ticket = new_ticket();
    engine.at(berlin(2026, 11, 23, 9, 0), ticket, open("premier-example", "technical", Severity::A)).await.unwrap();
    engine.at(berlin(2026, 11, 23, 9, 10), ticket, respond()).await.unwrap();
    engine.at(berlin(2026, 11, 23, 9, 40), ticket, ask()).await.unwrap();

    // The window ends 48 hours after the question.
    engine.advance_to(berlin(2026, 11, 25, 9, 40) - SECOND).await;
    assert!(!engine.names(ticket).contains(&"downgraded_for_no_response"));
    engine.advance_to(berlin(2026, 11, 25, 9, 40)).await;
    let events = engine.events(ticket);
    let downgrade = events.iter().find(|e| e.event.kind.name() == "downgraded_for_no_response").unwrap();
    let EventKind::DowngradedForNoResponse { from, to, due_at, clocks, .. } = &downgrade.event.kind else {
        unreachable!()
    };
    assert_eq!((*from, *to, *due_at), (Severity::A, Severity::B, berlin(2026, 11, 25, 9, 40)));
    assert_eq!(downgrade.event.occurred_at, berlin(2026, 11, 25, 9, 40));
    let resolution = clocks.iter().find(|c| c.metric == Metric::Resolution).unwrap();
    assert_eq!(resolution.effect, ClockEffect::Retargeted);
    let plan = resolution.plan.as_ref().unwrap();
    assert_eq!(plan.severity, Severity::B);
    assert_eq!(plan.target.amount, TargetAmount::BusinessDays(5));
    assert_eq!(plan.elapsed, TimeDelta::minutes(40), "09:00 to 09:40 ran before the question paused it");
    assert_eq!(plan.due_at, None, "still paused: the customer has not answered");
    let follow_up = clocks.iter().find(|c| c.metric == Metric::FollowUp).unwrap().plan.as_ref().unwrap();
    assert_eq!((follow_up.severity, follow_up.elapsed), (Severity::B, TimeDelta::zero()));

    // The customer answers on Thursday 10:00: 50 business hours less 40 minutes remain.
    // Thu 10-18 (8 h), Fri, Mon, Tue, Wed (40 h), then 1 h 20 min on Thursday 3 December.
    let result = engine.at(berlin(2026, 11, 26, 10, 0), ticket, reply()).await.unwrap();
    let EventKind::CustomerResponded { clocks, .. } = &result.events.last().unwrap().event.kind else { panic!() };
    let due = |metric| clocks.iter().find(|c| c.metric == metric).and_then(|c| c.plan.as_ref()?.due_at);
    assert_eq!(due(Metric::Resolution), Some(berlin(2026, 12, 3, 9, 20)));
    assert_eq!(due(Metric::FollowUp), Some(berlin(2026, 11, 26, 18, 0)), "B's 8 hours on a 24x7 calendar");

    engine.advance_to(berlin(2026, 12, 3, 9, 20)).await;
    let breached: Vec<_> = engine.breaches(ticket).iter().map(|b| (b.0, b.2)).collect();
    assert_eq!(
        breached,
        [(Metric::FollowUp, berlin(2026, 11, 26, 18, 0)), (Metric::Resolution, berlin(2026, 12, 3, 9, 20))]
    );
}

#[tokio::test]
async fn a_customer_reply_cancels_the_pending_downgrade() {
    let engine = Engine::start(shipped_policy("professional.toml"), berlin(2026, 11, 23, 8, 0));
    let ticket = new_ticket();
    engine.at(berlin(2026, 11, 23, 9, 0), ticket, open("premier-example", "technical", Severity::A)).await.unwrap();
    engine.at(berlin(2026, 11, 23, 9, 40), ticket, ask()).await.unwrap();
    engine.at(berlin(2026, 11, 25, 9, 40) - SECOND, ticket, reply()).await.unwrap();
    let before = engine.advance_to(berlin(2026, 11, 25, 9, 40) - SECOND).await;
    // Past the window's end, before the resumed follow-up's first warning (11:09:59).
    let after = engine.advance_to(berlin(2026, 11, 25, 11, 0)).await;
    assert!(!engine.names(ticket).contains(&"downgraded_for_no_response"));
    assert_eq!(after.moot, before.moot, "the reply removed the window from the index: nothing was issued");
    assert_eq!(engine.service.state(ticket).unwrap().ticket().unwrap().severity, Severity::A);
}

#[tokio::test]
async fn a_deadline_passed_while_the_timer_was_down_fires_at_start_with_both_instants_and_once() {
    let mut engine = Engine::start(shipped_policy("regional-operator.toml"), beijing(2026, 11, 21, 2, 0));
    let ticket = new_ticket();
    engine.at(beijing(2026, 11, 21, 3, 0), ticket, open("advanced", "technical", Severity::A)).await.unwrap();
    engine.advance_to(beijing(2026, 11, 21, 3, 50)).await;
    engine.timer.take().unwrap().stop().await;

    // Down from 03:50 to 05:30: the breach at 04:00 passes unseen.
    engine.clock.advance_to(beijing(2026, 11, 21, 5, 30));
    assert!(engine.breaches(ticket).is_empty());
    engine.timer = Some(RunningTimer::start(&engine.service, &engine.state()));
    let progress = engine.advance_to(beijing(2026, 11, 21, 5, 30)).await;
    assert_eq!(
        engine.breaches(ticket),
        [(Metric::FirstResponse, 1, beijing(2026, 11, 21, 4, 0), beijing(2026, 11, 21, 5, 30))],
        "the original due instant, and the instant of detection"
    );
    assert_eq!(progress.fired, 1);

    // A restart after the firing (from the index the stop flushed) does not fire again.
    engine.timer.take().unwrap().stop().await;
    engine.timer = Some(RunningTimer::start(&engine.service, &engine.state()));
    let progress = engine.advance_to(beijing(2026, 11, 21, 9, 0)).await;
    assert_eq!((progress.fired, progress.repeated), (0, 0));
    assert_eq!(engine.breaches(ticket).len(), 1);
}

#[tokio::test]
async fn a_restart_from_a_stale_or_broken_stored_index_fires_once() {
    let mut engine = Engine::start(shipped_policy("regional-operator.toml"), beijing(2026, 11, 21, 2, 0));
    let ticket = new_ticket();
    engine.at(beijing(2026, 11, 21, 3, 0), ticket, open("advanced", "technical", Severity::A)).await.unwrap();
    engine.advance_to(beijing(2026, 11, 21, 3, 55)).await;
    engine.timer.take().unwrap().stop().await;
    let stale = engine.dir.path().join("stale-state.redb");
    std::fs::copy(engine.state(), &stale).unwrap();

    engine.timer = Some(RunningTimer::start(&engine.service, &engine.state()));
    engine.advance_to(beijing(2026, 11, 21, 4, 30)).await;
    engine.timer.take().unwrap().stop().await;
    assert_eq!(engine.breaches(ticket).len(), 1);

    // The stored index from before the breach: the log says it was recorded.
    std::fs::copy(&stale, engine.state()).unwrap();
    engine.timer = Some(RunningTimer::start(&engine.service, &engine.state()));
    let progress = engine.advance_to(beijing(2026, 11, 21, 5, 0)).await;
    assert_eq!((progress.fired, progress.repeated, progress.moot), (0, 0, 0));
    engine.timer.take().unwrap().stop().await;

    // A row that does not decode (a torn or foreign write): rebuilt from the log, nothing fires
    // again.
    {
        let state = ticket_log_sled::RedbState::open(engine.state()).unwrap();
        let space = ticket_log::StateStore::space(&state, ticket_timer::store::SPACE).unwrap();
        let mut batch = ticket_log::StateBatch::new();
        batch.insert(b"c-not-a-clock".to_vec(), vec![1, 2, 3]);
        space.apply(batch).unwrap();
        ticket_log::StateStore::sync(&state).unwrap();
    }
    engine.timer = Some(RunningTimer::start(&engine.service, &engine.state()));
    let progress = engine.advance_to(beijing(2026, 11, 21, 6, 0)).await;
    assert_eq!((progress.fired, progress.repeated, progress.moot), (0, 0, 0));
    assert_eq!(engine.breaches(ticket).len(), 1);
    assert_eq!(progress.position, engine.log().head(), "rebuilt from the whole log");
    assert_eq!(progress.pending, 0, "a breached first response with no other target leaves nothing to fire");
}

#[tokio::test]
async fn two_timers_racing_on_one_log_fire_once() {
    let engine = Engine::start(shipped_policy("regional-operator.toml"), beijing(2026, 11, 21, 2, 0));
    // A second service on the same log (its own cache) with its own timer and checkpoint.
    let second_service = ticket_service::CommandService::with_clock(
        engine.log().clone(),
        engine.policy.clone(),
        None,
        ticket_service::ServiceConfig::default(),
        engine.clock.clone(),
    );
    let second = RunningTimer::start(&second_service, &engine.dir.path().join("second-state"));
    let tickets: Vec<_> = (0..20).map(|_| new_ticket()).collect();
    for ticket in &tickets {
        engine.execute(*ticket, open("advanced", "technical", Severity::A)).await.unwrap();
    }
    // Each instant: the 50% and 80% warnings, then the breach, seen by both timers.
    let opened = engine.clock.now();
    for minutes in [30, 48, 60] {
        let until = opened + TimeDelta::minutes(minutes);
        engine.clock.advance_to(until);
        engine.timer.as_ref().unwrap().settled(until, engine.log().head()).await;
        second.settled(until, engine.log().head()).await;
    }
    let until = engine.clock.now();
    let first = engine.timer.as_ref().unwrap().settled(until, engine.log().head()).await;
    let second_progress = second.settled(until, engine.log().head()).await;
    for ticket in &tickets {
        let names = engine.names(*ticket);
        assert_eq!(names, ["opened", "sla_warning", "sla_warning", "escalated", "sla_breached", "escalated"]);
    }
    assert_eq!(
        first.fired + second_progress.fired,
        20 * 3,
        "each firing recorded by exactly one of them: {first:?} {second_progress:?}"
    );
    second.stop().await;
}
