use crate::testing::*;
use crate::*;

use super::*;
use std::collections::HashMap;

/// A log in memory: decides commands, stamps positions, feeds the index.
struct Run {
    policy: Policy,
    state: TicketState,
    index: DeadlineIndex,
    events: Vec<RecordedEvent>,
}

impl Run {
    fn new() -> Self {
        Self {
            policy: regional_operator(),
            state: TicketState::initial(),
            index: DeadlineIndex::new(),
            events: Vec::new(),
        }
    }

    fn command(&mut self, command: Command) -> Result<Vec<&'static str>, DomainError> {
        let decided = decide(&command, &self.state, &self.policy)?;
        let names = decided.iter().map(|e| e.kind.name()).collect();
        for event in decided {
            evolve(&mut self.state, &event).unwrap();
            let id = EventId::from_uuid(uuid::Uuid::from_u128(self.events.len() as u128 + 1));
            let position = self.events.len() as u64 + 1;
            let recorded = RecordedEvent::of_command(id, &command, self.state.version(), position, event);
            self.index.apply(&recorded);
            self.events.push(recorded);
        }
        Ok(names)
    }

    /// Decides an importer's command, its events appended (and marked imported) at `appended_at`.
    fn import(&mut self, command: Command, appended_at: Timestamp) -> Vec<&'static str> {
        let decided = decide(&command, &self.state, &self.policy).unwrap();
        let names = decided.iter().map(|e| e.kind.name()).collect();
        for event in decided {
            evolve(&mut self.state, &event).unwrap();
            let id = EventId::from_uuid(uuid::Uuid::from_u128(self.events.len() as u128 + 1));
            let position = self.events.len() as u64 + 1;
            let mut recorded = RecordedEvent::of_command(id, &command, self.state.version(), position, event);
            recorded.imported = true;
            recorded.recorded_at = appended_at;
            self.index.apply(&recorded);
            self.events.push(recorded);
        }
        names
    }

    /// Fires everything due up to `until`, in order, as the timer would; returns what happened.
    fn advance(&mut self, until: Timestamp) -> Vec<(Firing, Vec<&'static str>)> {
        let timer = ActorId::new("ticket-timer").unwrap();
        let mut fired = Vec::new();
        while let Some(firing) = self.index.next().copied().filter(|f| f.at <= until) {
            let outcome = self.command(firing.command(firing.at, &timer).unwrap()).unwrap_or_default();
            fired.push((firing, outcome));
        }
        fired
    }

    fn pending(&self) -> Vec<(Metric, FiringKind, Timestamp)> {
        self.index.due(Timestamp::MAX_UTC).map(|f| (f.metric, f.kind, f.at)).collect()
    }
}

fn at(h: u32, m: u32) -> Timestamp {
    beijing(2026, 11, 21, h, m)
}

#[test]
fn an_opened_ticket_has_its_warnings_and_its_breach_pending() {
    let mut run = Run::new();
    run.command(agent(at(3, 0), open("advanced", "technical", Severity::A))).unwrap();
    assert_eq!(
        run.pending(),
        [
            (Metric::FirstResponse, FiringKind::Warning(50), at(3, 30)),
            (Metric::FirstResponse, FiringKind::Warning(80), at(3, 48)),
            (Metric::FirstResponse, FiringKind::Breach, at(4, 0)),
        ]
    );
}

#[test]
fn severity_a_opened_at_three_breaches_at_four_exactly_and_escalates() {
    let mut run = Run::new();
    run.command(agent(at(3, 0), open("advanced", "technical", Severity::A))).unwrap();
    let fired: Vec<(FiringKind, Timestamp, Vec<&str>)> =
        run.advance(at(5, 0)).into_iter().map(|(f, outcome)| (f.kind, f.at, outcome)).collect();
    assert_eq!(
        fired,
        [
            (FiringKind::Warning(50), at(3, 30), vec!["sla_warning"]),
            (FiringKind::Warning(80), at(3, 48), vec!["sla_warning", "escalated"]),
            (FiringKind::Breach, at(4, 0), vec!["sla_breached", "escalated"]),
        ]
    );
    assert!(run.index.is_empty(), "a breached clock has nothing left to fire: {:?}", run.pending());
}

#[test]
fn a_response_cancels_the_pending_breach_and_starts_the_follow_up_clock() {
    let mut run = Run::new();
    run.command(agent(at(3, 0), open("advanced", "technical", Severity::A))).unwrap();
    run.command(agent(at(3, 20), CommandBody::RecordAgentResponse { message: text("on it") })).unwrap();
    let metrics: Vec<(Metric, FiringKind)> = run.pending().into_iter().map(|(m, k, _)| (m, k)).collect();
    assert_eq!(
        metrics,
        [
            (Metric::FollowUp, FiringKind::Warning(50)),
            (Metric::FollowUp, FiringKind::Warning(80)),
            (Metric::FollowUp, FiringKind::Breach)
        ]
    );
    assert_eq!(run.pending()[2].2, at(7, 20));
}

#[test]
fn awaiting_the_customer_pauses_the_follow_up_and_arms_the_no_response_window() {
    let mut run = Run::new();
    run.command(agent(at(3, 0), open("advanced", "technical", Severity::A))).unwrap();
    run.command(agent(at(3, 10), CommandBody::RequestCustomerInfo { request: text("logs") })).unwrap();
    assert_eq!(run.pending(), [(Metric::NoResponse, FiringKind::NoResponse, beijing(2026, 11, 22, 3, 10))]);
    // The window passes: A is lowered to B, and B's window is armed.
    let fired = run.advance(beijing(2026, 11, 22, 3, 10));
    assert_eq!(fired.len(), 1);
    assert_eq!(fired[0].1, ["downgraded_for_no_response"]);
    assert_eq!(run.state.ticket().unwrap().severity, Severity::B);
    let pending = run.pending();
    assert_eq!(pending.len(), 1);
    assert_eq!((pending[0].0, pending[0].1), (Metric::NoResponse, FiringKind::NoResponse));
    // A reply cancels it.
    run.command(command(
        ActorKind::Customer,
        "acme",
        beijing(2026, 11, 22, 9, 0),
        CommandBody::RecordCustomerReply { message: text("here") },
    ))
    .unwrap();
    assert!(run.pending().iter().all(|(m, _, _)| *m != Metric::NoResponse));
}

#[test]
fn applying_the_same_events_twice_changes_nothing() {
    let mut run = Run::new();
    run.command(agent(at(3, 0), open("advanced", "technical", Severity::A))).unwrap();
    run.command(agent(at(3, 20), CommandBody::RecordAgentResponse { message: text("on it") })).unwrap();
    let before = run.pending();
    let replay = run.events.clone();
    for e in &replay {
        run.index.apply(e);
    }
    assert_eq!(run.pending(), before);
    let mut rebuilt = DeadlineIndex::new();
    for e in &replay {
        rebuilt.apply(e);
    }
    assert_eq!(
        rebuilt.due(Timestamp::MAX_UTC).copied().collect::<Vec<_>>(),
        run.index.due(Timestamp::MAX_UTC).copied().collect::<Vec<_>>()
    );
}

#[test]
fn a_firing_has_one_identity_and_a_stale_one_is_moot() {
    let mut run = Run::new();
    run.command(agent(at(3, 0), open("advanced", "technical", Severity::A))).unwrap();
    let breach = *run.index.due(Timestamp::MAX_UTC).last().unwrap();
    let timer = ActorId::new("ticket-timer").unwrap();
    assert_eq!(breach.command(at(4, 0), &timer).unwrap().id, breach.command(at(4, 30), &timer).unwrap().id);
    assert_eq!(breach.command_id().unwrap().as_str(), format!("timer:{}:first_response:1:breach", ticket_id()));
    // The agent answers a minute early; the breach the timer had scheduled is refused as moot.
    run.command(agent(at(3, 59), CommandBody::RecordAgentResponse { message: text("here") })).unwrap();
    let refused = run.command(breach.command(at(4, 0), &timer).unwrap()).unwrap_err();
    assert_eq!(refused.kind(), ErrorKind::TimerMoot);
}

#[test]
fn firings_after_downtime_carry_the_original_instant() {
    let mut run = Run::new();
    run.command(agent(at(3, 0), open("advanced", "technical", Severity::A))).unwrap();
    let timer = ActorId::new("ticket-timer").unwrap();
    let breach = *run.index.due(Timestamp::MAX_UTC).last().unwrap();
    // The timer was down until 06:00: the breach is recorded then, due at 04:00.
    let command = breach.command(at(6, 0), &timer).unwrap();
    assert_eq!(command.issued_at, at(6, 0));
    let CommandBody::RecordSlaBreach { due_at, .. } = command.body else { unreachable!() };
    assert_eq!(due_at, at(4, 0));
    assert!(run.command(command).unwrap().contains(&"sla_breached"));
    assert_eq!(run.events.last().map(|e| e.event.occurred_at), Some(at(6, 0)));
}

#[test]
fn nothing_past_at_import_is_fired_but_its_breach_detected_at_import() {
    // Given a critical ticket opened at 03:00 in another helpdesk, imported at 03:50: its 50%
    // (03:30) and 80% (03:48) warnings are past at import, its 04:00 breach is not
    let mut run = Run::new();
    run.import(agent(at(3, 0), open("advanced", "technical", Severity::A)), at(3, 50));
    let first_response: Vec<(FiringKind, Timestamp)> =
        run.pending().into_iter().filter(|(m, ..)| *m == Metric::FirstResponse).map(|(_, k, t)| (k, t)).collect();
    // Then only the breach is pending (fired live at its instant): the warnings are not fired
    assert_eq!(first_response, vec![(FiringKind::Breach, at(4, 0))]);
}

#[test]
fn a_breach_already_due_at_import_is_recorded_as_detected_at_import() {
    // Given the same ticket imported at 05:00, with its breach (04:00) past at import too
    let mut run = Run::new();
    run.import(agent(at(3, 0), open("advanced", "technical", Severity::A)), at(5, 0));
    let first_response: Vec<(FiringKind, Timestamp)> =
        run.pending().into_iter().filter(|(m, ..)| *m == Metric::FirstResponse).map(|(_, k, t)| (k, t)).collect();
    // Then no warning is pending, and the breach waits as one detected at import, at 05:00
    assert_eq!(first_response, vec![(FiringKind::BreachAtImport { due_at: at(4, 0) }, at(5, 0))]);
    // When the timer fires it
    let fired = run.advance(at(5, 0));
    // Then the breach is recorded at the import's instant with its due instant, and nothing else
    assert_eq!(fired.len(), 1);
    assert_eq!(fired[0].1, vec!["sla_breached"]);
    let breach = run.events.last().unwrap();
    assert_eq!(breach.event.occurred_at, at(5, 0));
    let EventKind::SlaBreached { due_at, .. } = breach.event.kind else { panic!("not a breach") };
    assert_eq!(due_at, at(4, 0));
    assert!(run.pending().iter().all(|(m, ..)| *m != Metric::FirstResponse));
}

#[test]
fn a_later_imported_event_moves_a_breach_at_import_to_its_own_instant_or_settles_it() {
    let mut run = Run::new();
    run.import(agent(at(3, 0), open("advanced", "technical", Severity::A)), at(5, 0));
    // A later event of the history, before the due instant, appended a minute later
    run.import(agent(at(3, 10), CommandBody::RequestCustomerInfo { request: text("logs?") }), at(5, 1));
    let pending = run.pending();
    assert!(pending.iter().all(|(_, k, t)| !matches!(k, FiringKind::Warning(_)) || *t > at(5, 1)));
    // The history's late response settles the breach itself, at the response's instant
    let names = run.import(agent(at(4, 30), CommandBody::RecordAgentResponse { message: text("fixed") }), at(5, 2));
    assert!(names.contains(&"sla_breached") || names.contains(&"agent_responded"));
    assert!(
        run.pending()
            .iter()
            .all(|(m, k, _)| *m != Metric::FirstResponse || !matches!(k, FiringKind::BreachAtImport { .. }))
    );
}

/// A copy of the index kept only from its changes: writing each `take_changes` over it.
fn mirror_apply(mirror: &mut HashMap<ClockKey, ClockEntryOwned>, changes: Changes) {
    for (key, entry) in changes.clocks {
        match entry {
            Some(entry) => mirror.insert(key, entry),
            None => mirror.remove(&key),
        };
    }
}

fn entries(index: &DeadlineIndex) -> HashMap<ClockKey, ClockEntryOwned> {
    index.clock_entries().map(|e| ((e.ticket, e.metric), e.to_entry())).collect()
}

#[test]
fn the_changes_taken_keep_a_copy_equal_to_the_index() {
    let mut run = Run::new();
    assert_eq!(run.index.take_changes(), Changes::default(), "nothing is tracked until asked");
    run.index.track_changes();
    let mut mirror = HashMap::new();
    run.import(agent(at(3, 0), open("advanced", "technical", Severity::A)), at(5, 0));
    assert!(run.index.changed() > 0);
    let changes = run.index.take_changes();
    assert_eq!(changes.position, run.index.position());
    mirror_apply(&mut mirror, changes);
    assert_eq!(mirror, entries(&run.index));
    assert_eq!(run.index.changed(), 0);
    // Firings recorded (a settle before its event), a breach, responses, a request for info.
    let breach = *run.index.next().unwrap();
    run.index.settle(&breach);
    mirror_apply(&mut mirror, run.index.take_changes());
    assert_eq!(mirror, entries(&run.index));
    run.advance(at(5, 0));
    run.command(agent(at(5, 10), CommandBody::RecordAgentResponse { message: text("on it") })).unwrap();
    mirror_apply(&mut mirror, run.index.take_changes());
    assert_eq!(mirror, entries(&run.index));
    run.command(agent(at(5, 20), CommandBody::RequestCustomerInfo { request: text("logs") })).unwrap();
    run.advance(beijing(2026, 11, 23, 6, 0));
    let changes = run.index.take_changes();
    // A change taken and not written is marked again and written with the next ones.
    let keys: Vec<ClockKey> = changes.keys().collect();
    assert!(!keys.is_empty());
    run.index.mark_changed(keys.iter().copied());
    run.command(agent(beijing(2026, 11, 23, 7, 0), CommandBody::Resolve { resolution: text("done") })).ok();
    mirror_apply(&mut mirror, run.index.take_changes());
    assert_eq!(mirror, entries(&run.index));
}
