//! Read models over generated histories: random commands on several tickets at random instants,
//! decided by the Decider, with every timer firing fired at its instant.

use chrono::TimeDelta;
use proptest::prelude::*;
use ticket_domain::DeadlineIndex;
use ticket_domain::testing::*;
use ticket_domain::*;

use super::*;

/// A log in memory written by the Decider and a timer that is never late.
struct History {
    policy: Policy,
    now: Timestamp,
    tickets: Vec<(TicketId, TicketState)>,
    index: DeadlineIndex,
    events: Vec<RecordedEvent>,
    commands: u64,
}

impl History {
    fn new() -> Self {
        Self {
            policy: regional_operator(),
            now: utc(2026, 3, 27, 22, 0),
            tickets: Vec::new(),
            index: DeadlineIndex::new(),
            events: Vec::new(),
            commands: 0,
        }
    }

    fn issue(&mut self, slot: usize, kind: ActorKind, at: Timestamp, body: CommandBody) {
        let Some((ticket, state)) = self.tickets.get(slot).cloned() else { return };
        self.commands += 1;
        let command = Command {
            id: CommandId::new(format!("c-{}", self.commands)).unwrap(),
            ticket_id: ticket,
            actor: Actor {
                kind,
                id: ActorId::new(if kind == ActorKind::System { "ticket-timer" } else { "agent-li" }).unwrap(),
            },
            issued_at: at,
            body,
        };
        let Ok(events) = decide(&command, &state, &self.policy) else { return };
        let mut state = state;
        for event in events {
            evolve(&mut state, &event).unwrap();
            let id = EventId::from_uuid(uuid::Uuid::from_u128(self.events.len() as u128 + 1));
            let recorded =
                RecordedEvent::of_command(id, &command, state.version(), self.events.len() as u64 + 1, event);
            self.index.apply(&recorded);
            self.events.push(recorded);
        }
        self.tickets[slot].1 = state;
    }

    fn advance(&mut self, to: Timestamp) {
        let timer = ActorId::new("ticket-timer").unwrap();
        while let Some(f) = self.index.next().copied().filter(|f| f.at <= to) {
            self.index.settle(&f);
            let slot = self.tickets.iter().position(|(id, _)| *id == f.ticket).unwrap();
            let command = f.command(f.at, &timer).unwrap();
            self.issue(slot, ActorKind::System, f.at, command.body);
        }
        self.now = to;
    }

    fn step(&mut self, op: u8, pick: u8, minutes: u16) {
        self.advance(self.now + TimeDelta::minutes(i64::from(minutes)));
        let at = self.now;
        let slot = if self.tickets.is_empty() { 0 } else { usize::from(pick) % self.tickets.len() };
        let body = match op % 9 {
            0 => {
                let (plan, category, severity) = [
                    ("advanced", "technical", Severity::A),
                    ("advanced", "technical", Severity::B),
                    ("standard", "technical", Severity::B),
                    ("standard", "billing", Severity::C),
                    ("advanced", "subscription", Severity::B),
                ][usize::from(pick) % 5];
                self.tickets.push((
                    TicketId::from_uuid(uuid::Uuid::from_u128(0xA000 + self.tickets.len() as u128)),
                    TicketState::initial(),
                ));
                let body = open(plan, category, severity);
                let CommandBody::Open(mut o) = body else { unreachable!() };
                o.customer = CustomerId::new(format!("customer-{}", pick % 3)).unwrap();
                self.issue(self.tickets.len() - 1, ActorKind::Agent, at, CommandBody::Open(o));
                return;
            }
            1 => CommandBody::RecordAgentResponse { message: text("looking") },
            2 => CommandBody::RequestCustomerInfo { request: text("logs please") },
            3 => CommandBody::RecordCustomerReply { message: text("attached") },
            4 => CommandBody::SetSeverity {
                severity: [Severity::A, Severity::B, Severity::C][usize::from(pick) % 3],
                reason: text("impact changed"),
            },
            5 => CommandBody::Escalate {
                tier: Tier::new("tier-2").unwrap(),
                team: None,
                reason: text("needs an expert"),
            },
            6 => CommandBody::Resolve { resolution: text("fixed") },
            7 => CommandBody::Reopen { reason: text("back again") },
            _ => CommandBody::RecordAgentResponse { message: text("update") },
        };
        let kind = if op % 9 == 3 { ActorKind::Customer } else { ActorKind::Agent };
        self.issue(slot, kind, at, body);
    }
}

fn history(ops: &[(u8, u8, u16)]) -> History {
    let mut h = History::new();
    for (op, pick, minutes) in ops {
        h.step(*op, *pick, *minutes);
    }
    let end = h.now + TimeDelta::days(3);
    h.advance(end);
    h
}

fn single_pass(events: &[RecordedEvent]) -> ReadModels {
    let mut models = ReadModels::new();
    for e in events {
        models.apply(e);
    }
    models
}

fn ops() -> impl Strategy<Value = Vec<(u8, u8, u16)>> {
    prop::collection::vec((any::<u8>(), any::<u8>(), 0u16..600), 1..120)
}

/// The board's reference: computed from each ticket's full state, not from the board's fold.
fn board_reference(tickets: &Tickets) -> Vec<(TicketId, Metric, u32, Timestamp, bool, bool, Severity)> {
    let mut rows: Vec<_> = tickets
        .iter()
        .filter(|t| t.status != Status::Resolved)
        .filter_map(|t| {
            let c = t
                .clocks
                .values()
                .filter(|c| c.metric.is_sla())
                .filter(|c| c.due_at().is_some())
                .min_by_key(|c| (c.due_at(), c.metric))?;
            Some((t.id, c.metric, c.cycle, c.due_at()?, !c.warned.is_empty(), c.breached, t.severity))
        })
        .collect();
    rows.sort_by_key(|r| (r.3, r.0));
    rows
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Applying the log in batches, with checkpoints written and read back at arbitrary cuts and
    /// batches delivered again after a restart, gives the read models of one pass.
    #[test]
    fn batches_checkpoints_and_repeats_give_the_single_pass_models(ops in ops(), cuts in prop::collection::vec(any::<u16>(), 0..6)) {
        let h = history(&ops);
        let expected = single_pass(&h.events);
        let mut cuts: Vec<usize> = cuts.into_iter().map(|c| usize::from(c) % (h.events.len() + 1)).collect();
        cuts.sort_unstable();
        let mut live = ReadModels::new();
        let mut from = 0;
        for cut in cuts.into_iter().chain([h.events.len()]) {
            for e in &h.events[from..cut.max(from)] {
                live.apply(e);
            }
            // A restart: the checkpoint is read back and the last batch is delivered again.
            live = ReadModels {
                tickets: checkpoint::decode(&checkpoint::encode(&live.tickets).unwrap()).unwrap(),
                board: checkpoint::decode(&checkpoint::encode(&live.board).unwrap()).unwrap(),
                timeline: checkpoint::decode(&checkpoint::encode(&live.timeline).unwrap()).unwrap(),
                compliance: checkpoint::decode(&checkpoint::encode(&live.compliance).unwrap()).unwrap(),
            };
            for e in &h.events[from.saturating_sub(3)..cut.max(from)] {
                live.apply(e);
            }
            from = cut.max(from);
        }
        prop_assert_eq!(&live, &expected);
        prop_assert_eq!(live.tickets.position(), h.events.len() as u64);
    }

    /// The board's own fold of the clock plans agrees with the tickets' full states.
    #[test]
    fn the_board_agrees_with_the_tickets_states(ops in ops()) {
        let h = history(&ops);
        let models = single_pass(&h.events);
        let board: Vec<_> = models.board.model().entries(usize::MAX).into_iter()
            .map(|e| (e.ticket_id, e.metric, e.cycle, e.due_at, e.at_risk, e.breached, e.severity)).collect();
        prop_assert_eq!(board, board_reference(models.tickets.model()));
    }

    /// Every event is on its ticket's timeline once, in order, with its actor and command.
    #[test]
    fn the_timeline_holds_every_event_once_in_order(ops in ops()) {
        let h = history(&ops);
        let models = single_pass(&h.events);
        let mut total = 0;
        for (ticket, _) in &h.tickets {
            let line = models.timeline.model().ticket(*ticket);
            let events: Vec<&RecordedEvent> = h.events.iter().filter(|e| e.event.ticket_id == *ticket).collect();
            prop_assert_eq!(line.len(), events.len());
            for (entry, e) in line.iter().zip(events) {
                prop_assert_eq!(entry.position, e.position);
                prop_assert_eq!(&entry.command_id, &e.command_id.to_string());
                prop_assert_eq!(&entry.event_type, e.event.kind.name());
                prop_assert!(!entry.policy.is_empty());
            }
            total += line.len();
        }
        prop_assert_eq!(total, h.events.len());
    }

    /// Compliance counts each breach recorded once, and a met or breached outcome per stopped cycle.
    #[test]
    fn compliance_counts_every_recorded_breach_once(ops in ops()) {
        let h = history(&ops);
        let models = single_pass(&h.events);
        let rows = models.compliance.model().report(Period::default(), &h.policy);
        let breached: u64 = rows.iter().map(|r| r.breached).sum();
        let recorded = h.events.iter().filter(|e| matches!(e.event.kind, EventKind::SlaBreached { .. })).count() as u64;
        prop_assert_eq!(breached, recorded);
        let met_clocks = h.events.iter().flat_map(|e| e.event.kind.clocks())
            .filter(|c| c.metric.is_sla() && c.effect == ClockEffect::Stopped(ClockOutcome::Met)).count() as u64;
        prop_assert_eq!(rows.iter().map(|r| r.met).sum::<u64>(), met_clocks);
    }
}

#[test]
fn a_severity_a_ticket_at_three_on_a_saturday_is_first_on_the_board_and_breached_at_four() {
    let mut h = History::new();
    h.now = utc(2026, 11, 21, 3, 0);
    h.step(0, 0, 0); // advanced / technical / A
    let ticket = h.tickets[0].0;
    h.step(0, 3, 10); // standard / billing / C, opened 03:10
    let models = single_pass(&h.events);
    let board = models.board.model().entries(10);
    assert_eq!(board.len(), 2);
    assert_eq!(board[0].ticket_id, ticket);
    assert_eq!(board[0].due_at, utc(2026, 11, 21, 4, 0));
    assert!(!board[0].at_risk && !board[0].breached);

    h.advance(utc(2026, 11, 21, 3, 50));
    let models = single_pass(&h.events);
    assert!(models.board.model().entry(ticket).unwrap().at_risk, "past the 80% warning");
    h.advance(utc(2026, 11, 21, 4, 0));
    let models = single_pass(&h.events);
    let entry = models.board.model().entry(ticket).unwrap();
    assert!(entry.breached && entry.at_risk);

    let detail = TicketDetail::of(models.tickets.model().ticket(ticket).unwrap(), &h.policy, utc(2026, 11, 21, 4, 30));
    let first = detail.clocks.iter().find(|c| c.metric == "first_response").unwrap();
    assert_eq!(first.due_at.as_deref(), Some("2026-11-21T04:00:00Z"));
    assert_eq!(first.remaining.as_deref(), Some("-00:30:00"), "thirty minutes overdue");
    assert!(first.breached);

    let rows = models.compliance.model().report(Period::default(), &h.policy);
    let a = rows.iter().find(|r| r.severity == "A" && r.metric == "first_response").unwrap();
    assert_eq!((a.met, a.breached), (0, 1));

    let line = models.timeline.model().ticket(ticket);
    assert_eq!(line.first().unwrap().event_type, "opened");
    assert!(line.iter().any(|e| e.event_type == "sla_breached" && e.actor == "system:ticket-timer"));
}

#[test]
fn first_response_business_time_is_measured_on_the_targets_calendar() {
    // Standard technical B: first response on the China business calendar. Opened on Friday
    // 17:00 Beijing time, answered on Monday 10:00: one business hour on Friday, one on Monday.
    let mut h = History::new();
    h.now = beijing(2026, 11, 20, 17, 0);
    h.step(0, 2, 0);
    let at = beijing(2026, 11, 23, 10, 0);
    h.advance(at);
    h.issue(0, ActorKind::Agent, at, CommandBody::RecordAgentResponse { message: text("on it") });
    let models = single_pass(&h.events);
    let rows = models.compliance.model().report(Period::default(), &h.policy);
    let row = rows.iter().find(|r| r.metric == "first_response").unwrap();
    assert_eq!(row.first_responses, 1);
    let calendar_hours = row.median_first_response_secs.unwrap();
    let ticket = models.tickets.model().ticket(h.tickets[0].0).unwrap();
    let clock = ticket.clock(Metric::FirstResponse).unwrap();
    let calendar = h.policy.calendar(&clock.plan.as_ref().unwrap().target.calendar).unwrap();
    assert_eq!(calendar_hours, calendar.elapsed(beijing(2026, 11, 20, 17, 0), at).num_seconds());
    assert!(calendar_hours < 3 * 24 * 3600, "business time, not wall time");
}

#[test]
fn a_damaged_checkpoint_is_refused_and_a_good_one_restores() {
    let h = history(&[(0, 0, 0), (1, 0, 30), (0, 3, 5), (2, 1, 20)]);
    let models = single_pass(&h.events);
    let dir = tempfile::tempdir().unwrap();
    let cps = Checkpoints::new(dir.path());
    cps.save(&models.tickets).unwrap();
    assert_eq!(cps.load::<Tickets>().unwrap().unwrap(), models.tickets);
    assert!(cps.load::<Board>().unwrap().is_none());
    let path = cps.path("tickets");
    let mut bytes = std::fs::read(&path).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x40;
    std::fs::write(&path, &bytes).unwrap();
    assert!(matches!(cps.load::<Tickets>(), Err(CheckpointError::Digest)));
    std::fs::write(&path, &bytes[..10]).unwrap();
    assert!(matches!(cps.load::<Tickets>(), Err(CheckpointError::Format)));
    // Another projection's image under this name is not taken for this one.
    std::fs::write(&path, checkpoint::encode(&models.board).unwrap()).unwrap();
    assert!(matches!(cps.load::<Tickets>(), Err(CheckpointError::Format)));
}
