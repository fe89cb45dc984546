#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

//! `evolve` on events that do not fit: refused with a typed misfit, the state untouched, never a
//! panic (issue 10: a stored event decided on a state the ticket never had).

use chrono::TimeDelta;
use proptest::prelude::*;

use super::{Misfit, TicketState, evolve};
use crate::command::CommandBody;
use crate::decide::decide;
use crate::event::{ClockEffect, ClockOutcome, Event, EventKind};
use crate::severity::{Metric, Severity};
use crate::testing::{agent, beijing, open, other_ticket_id, regional_operator, text};

/// The events of a real lifecycle: opened, then asked, replied, asked, replied, responded.
fn lifecycle() -> Vec<Event> {
    let policy = regional_operator();
    let t0 = beijing(2026, 10, 29, 10, 0);
    let bodies = [
        open("advanced", "technical", Severity::B),
        CommandBody::RequestCustomerInfo { request: text("logs please") },
        CommandBody::RecordCustomerReply { message: text("attached") },
        CommandBody::RequestCustomerInfo { request: text("more logs") },
        CommandBody::RecordCustomerReply { message: text("attached again") },
        CommandBody::RecordAgentResponse { message: text("found it") },
    ];
    let mut state = TicketState::initial();
    let mut events = Vec::new();
    for (i, body) in bodies.into_iter().enumerate() {
        let command = agent(t0 + TimeDelta::minutes(10 * i as i64), body);
        for e in decide(&command, &state, &policy).unwrap() {
            evolve(&mut state, &e).unwrap();
            events.push(e);
        }
    }
    events
}

fn fold(events: &[Event]) -> TicketState {
    let mut state = TicketState::initial();
    for e in events {
        evolve(&mut state, e).unwrap();
    }
    state
}

#[test]
fn a_stop_of_a_follow_up_cycle_that_is_no_longer_current_is_a_misfit_and_changes_nothing() {
    // Given a ticket whose follow-up clock is in its third cycle
    let events = lifecycle();
    let mut state = fold(&events);
    let follow_up = state.ticket().unwrap().clock(Metric::FollowUp).unwrap().cycle;
    assert!(follow_up >= 2);
    // When an event stops an earlier cycle (decided on a state the ticket never had)
    let mut stale = events.iter().rev().find(|e| !e.kind.clocks().is_empty()).unwrap().clone();
    if let EventKind::AgentResponded { clocks, .. } = &mut stale.kind {
        clocks.retain(|c| c.metric == Metric::FollowUp);
        for c in clocks.iter_mut() {
            c.cycle = follow_up - 1;
            c.effect = ClockEffect::Stopped(ClockOutcome::Met);
        }
    }
    let before = state.clone();
    let misfit = evolve(&mut state, &stale).unwrap_err();
    // Then it is refused as a misfit, naming the clock and the current cycle, and nothing changed
    assert!(matches!(misfit, Misfit::Clock { metric: Metric::FollowUp, .. }), "{misfit}");
    assert!(misfit.to_string().contains(&format!("cycle {follow_up} is current")), "{misfit}");
    assert_eq!(state, before);
}

#[test]
fn events_before_opening_of_another_ticket_and_a_second_opening_are_misfits() {
    let events = lifecycle();
    let mut unopened = TicketState::initial();
    assert_eq!(evolve(&mut unopened, &events[1]), Err(Misfit::BeforeOpened { event: events[1].kind.name() }));
    assert_eq!(unopened, TicketState::initial());

    let mut state = fold(&events);
    let before = state.clone();
    assert_eq!(evolve(&mut state, &events[0]), Err(Misfit::OpenedTwice(events[0].ticket_id)));
    let mut foreign = events[2].clone();
    foreign.ticket_id = other_ticket_id();
    assert!(matches!(evolve(&mut state, &foreign), Err(Misfit::OtherTicket { .. })));
    assert_eq!(state, before);
}

#[test]
fn a_new_cycle_must_follow_the_current_one() {
    let events = lifecycle();
    let mut state = fold(&events);
    let before = state.clone();
    let mut skipped = events.iter().find(|e| e.kind.name() == "customer_info_requested").unwrap().clone();
    if let EventKind::CustomerInfoRequested { clocks, .. } = &mut skipped.kind {
        for c in clocks.iter_mut().filter(|c| c.effect == ClockEffect::Started) {
            c.cycle += 10;
        }
    }
    assert!(matches!(evolve(&mut state, &skipped), Err(Misfit::Clock { .. })));
    assert_eq!(state, before);
}

proptest! {
    /// Any sequence of a real lifecycle's events, reordered, repeated or dropped, is applied or
    /// refused without a panic, and a refused event leaves the state as it was.
    #[test]
    fn evolve_never_panics_and_a_refusal_changes_nothing(order in proptest::collection::vec(0usize..64, 0..40)) {
        let events = lifecycle();
        let mut state = TicketState::initial();
        for i in order {
            let event = &events[i % events.len()];
            let before = state.clone();
            match evolve(&mut state, event) {
                Ok(()) => prop_assert_eq!(state.version(), before.version() + 1),
                Err(_) => prop_assert_eq!(&state, &before),
            }
        }
    }
}
