//! Read models over generated histories: random commands on several tickets at random instants,
//! decided by the Decider, with every timer firing fired at its instant.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use chrono::TimeDelta;
use proptest::prelude::*;
use ticket_domain::DeadlineIndex;
use ticket_domain::testing::*;
use ticket_domain::*;
use ticket_log::{
    AppendOutcome, AppendRequest, CommandRecord, EventLog, LogError, MemoryState, StateBatch, StateStore,
};
use ticket_proto::pb;

use super::*;

/// A log of given events, of which the first `visible` are there (it grows as a test says);
/// counts the events read by position (the replay of a catch-up).
#[derive(Debug, Clone)]
struct VecLog {
    events: Arc<Vec<RecordedEvent>>,
    visible: Arc<AtomicU64>,
    read: Arc<AtomicU64>,
    head: Arc<tokio::sync::watch::Sender<u64>>,
    /// A ticket's stream cannot be read (a failing disk).
    broken: Arc<std::sync::atomic::AtomicBool>,
    /// Reads of positions from this one on fail (0: none do).
    failing_from: Arc<AtomicU64>,
}

impl VecLog {
    fn new(events: Vec<RecordedEvent>) -> Self {
        let visible = events.len() as u64;
        Self {
            events: Arc::new(events),
            visible: Arc::new(AtomicU64::new(visible)),
            read: Arc::new(AtomicU64::new(0)),
            head: Arc::new(tokio::sync::watch::channel(visible).0),
            broken: Arc::default(),
            failing_from: Arc::default(),
        }
    }

    fn show(&self, visible: u64) {
        let visible = visible.min(self.events.len() as u64);
        self.visible.store(visible, Ordering::SeqCst);
        self.head.send_replace(visible);
    }

    fn visible(&self) -> &[RecordedEvent] {
        let n = usize::try_from(self.head()).unwrap_or(usize::MAX).min(self.events.len());
        &self.events[..n]
    }
}

impl EventLog for VecLog {
    fn append(
        &self,
        _request: AppendRequest,
    ) -> impl std::future::Future<Output = Result<AppendOutcome, LogError>> + Send + 'static {
        std::future::ready(Err(LogError::Closed))
    }
    fn stream_version(&self, ticket: TicketId) -> Result<u64, LogError> {
        Ok(self.visible().iter().filter(|e| e.event.ticket_id == ticket).count() as u64)
    }
    fn read_stream(&self, ticket: TicketId, from_version: u64) -> Result<Vec<RecordedEvent>, LogError> {
        if self.broken.load(Ordering::SeqCst) {
            return Err(LogError::Storage("an input/output error".to_owned()));
        }
        Ok(self
            .visible()
            .iter()
            .filter(|e| e.event.ticket_id == ticket && e.version >= from_version)
            .cloned()
            .collect())
    }
    fn read_from(&self, from: u64, limit: usize) -> Result<Vec<RecordedEvent>, LogError> {
        let failing = self.failing_from.load(Ordering::SeqCst);
        if failing > 0 && from.saturating_add(limit as u64) > failing {
            return Err(LogError::Storage("a failing disk under the log".to_owned()));
        }
        let skip = usize::try_from(from.saturating_sub(1)).unwrap_or(usize::MAX);
        let events: Vec<_> = self.visible().iter().skip(skip).take(limit).cloned().collect();
        self.read.fetch_add(events.len() as u64, Ordering::SeqCst);
        Ok(events)
    }
    fn head(&self) -> u64 {
        self.visible.load(Ordering::SeqCst)
    }
    fn watch_head(&self) -> tokio::sync::watch::Receiver<u64> {
        self.head.subscribe()
    }
    fn command(&self, _id: &CommandId) -> Result<Option<CommandRecord>, LogError> {
        Ok(None)
    }
    fn commands_from(&self, _from: u64, _limit: usize) -> Result<Vec<CommandRecord>, LogError> {
        Ok(Vec::new())
    }
    fn outbox_pending(&self, _limit: usize) -> Result<Vec<u64>, LogError> {
        Ok(Vec::new())
    }
    fn mark_published(&self, _up_to: u64) -> Result<(), LogError> {
        Ok(())
    }
    fn rewind_published(&self, _to: u64) -> Result<(), LogError> {
        Ok(())
    }
    fn published_sequence(&self) -> Result<u64, LogError> {
        Ok(0)
    }
    fn set_published_sequence(&self, _sequence: u64) -> Result<(), LogError> {
        Ok(())
    }
    fn published(&self) -> Result<u64, LogError> {
        Ok(0)
    }
}

/// Every query's answer, as the API replies.
#[derive(Debug, PartialEq)]
struct Answers {
    tickets: Vec<Result<pb::TicketView, pb::Error>>,
    customers: Vec<pb::TicketList>,
    board: pb::Board,
    compliance: Vec<pb::ComplianceReport>,
    timelines: Vec<Result<pb::Timeline, pb::Error>>,
}

fn answers(views: &impl answer::Views, h: &History, log: &VecLog) -> Answers {
    let now = h.now;
    let ids: Vec<TicketId> = h.tickets.iter().map(|(id, _)| *id).collect();
    let mut customers = Vec::new();
    for c in 0..3 {
        let customer = CustomerId::new(format!("customer-{c}")).unwrap();
        for (resolved, limit) in [(false, 100), (true, 100), (true, 2), (false, 1)] {
            customers.push(answer::customer(views, &customer, resolved, limit, &h.policy, now).unwrap());
        }
    }
    let instants: Vec<Timestamp> = log.visible().iter().map(|e| e.event.occurred_at).collect();
    let mid = instants.get(instants.len() / 2).copied();
    let periods = [
        Period::default(),
        Period { from: mid, to: None },
        Period { from: None, to: mid },
        Period { from: instants.first().copied(), to: mid.map(|m| m + TimeDelta::hours(2)) },
    ];
    Answers {
        tickets: ids.iter().map(|id| answer::ticket(views, *id, &h.policy, now)).collect(),
        customers,
        board: answer::board(views, 1000).unwrap(),
        compliance: periods.iter().map(|p| answer::compliance(views, *p, &h.policy).unwrap()).collect(),
        timelines: ids.iter().map(|id| answer::timeline(views, *id, log)).collect(),
    }
}

fn open_tickets(events: &[RecordedEvent]) -> usize {
    let models = single_pass(events);
    models.tickets.model().iter_live().filter(|t| t.status != Status::Resolved).count()
}

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
        .iter_live()
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

    /// A projector on a state store, following a growing log and flushing at random points, is
    /// killed (mid-flush too: any prefix of the unflushed batches survives), reopened and caught
    /// up: every answer equals the in-memory models built from scratch, the reopened projector
    /// replayed only the log after its durable position, and memory holds only open tickets.
    #[test]
    fn a_projector_killed_at_any_point_resumes_to_the_models_of_a_single_pass(
        ops in ops(),
        cuts in prop::collection::vec((any::<u16>(), 0u8..6), 0..8),
        flush_events in 1u64..400,
        sync_events in 1u64..800,
        last in 0u8..6,
        keep in any::<u16>(),
        parallel in any::<bool>(),
    ) {
        let h = history(&ops);
        let total = h.events.len() as u64;
        let log = VecLog::new(h.events.clone());
        let store = MemoryState::new();
        let config = ProjectorConfig {
            batch: 5,
            flush_events,
            catch_up_flush_events: flush_events,
            catch_up_sync_events: sync_events,
            // The models applied side by side, or one after the other.
            parallel_batch: if parallel { 1 } else { usize::MAX },
            ..ProjectorConfig::default()
        };
        log.show(0);
        let live = Projector::open(log.clone(), Some(Arc::new(store.clone()) as Arc<dyn StateStore>), config.clone());
        let mut cuts: Vec<(u64, u8)> = cuts.into_iter().map(|(c, f)| (u64::from(c) % (total + 1), f)).collect();
        cuts.sort_unstable();
        cuts.push((total, last));
        for (cut, flush) in cuts {
            log.show(cut);
            live.catch_up(|_, _| {}).unwrap();
            // A flush, none, or the writes of some spaces not yet synced (a kill mid-flush).
            match flush {
                0 => live.flush().unwrap(),
                1 => live.tickets.flush().unwrap(),
                2 => live.board.flush().unwrap(),
                3 => live.compliance.flush().unwrap(),
                _ => {}
            }
        }

        // The kill: each space keeps its synced state and some prefix of the batches after it.
        let crashed = store.crash(|_, unsynced| usize::from(keep) % (unsynced + 1));
        let reopened = Projector::open(log.clone(), Some(Arc::new(crashed) as Arc<dyn StateStore>), config);
        let durable = reopened.position();
        log.read.store(0, Ordering::SeqCst);
        prop_assert_eq!(reopened.catch_up(|_, _| {}).unwrap(), total);
        prop_assert!(log.read.load(Ordering::SeqCst) <= total - durable, "replayed only the tail after {}", durable);

        let expected = single_pass(&h.events);
        prop_assert_eq!(answers(&reopened, &h, &log), answers(&expected, &h, &log));
        prop_assert_eq!(answers(&live, &h, &log), answers(&expected, &h, &log));
        // Flushed: resolved tickets' rows left memory.
        reopened.flush().unwrap();
        let open = open_tickets(&h.events);
        prop_assert_eq!(reopened.live_rows(), [open, open, open]);
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
            let line = timeline_of(&h.events, |e| e.event.ticket_id == *ticket);
            prop_assert_eq!(models.position(), h.events.len() as u64);
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

    /// A cluster's compliance: the tickets split among partitions, each partition's tally of its
    /// own tickets' events added up, gives the report of all of them (counts, compliance and
    /// percentiles alike), over any period.
    #[test]
    fn partitions_tallies_add_up_to_the_whole_report(ops in ops(), count in 1u64..6) {
        let h = history(&ops);
        let partitions = Partitions::new(count).unwrap();
        let whole = single_pass(&h.events);
        let parts: Vec<ReadModels> = partitions
            .all()
            .map(|p| {
                let own: Vec<RecordedEvent> =
                    h.events.iter().filter(|e| partitions.of(e.event.ticket_id) == p).cloned().collect();
                single_pass(&own)
            })
            .collect();
        let mid = h.events.get(h.events.len() / 2).map(|e| e.event.occurred_at);
        for period in [Period::default(), Period { from: mid, to: None }, Period { from: None, to: mid }] {
            let mut added = Tally::default();
            for part in &parts {
                added.add(part.compliance.model().tally(period, &h.policy).unwrap());
            }
            prop_assert_eq!(added.rows(), whole.compliance.model().report(period, &h.policy).unwrap());
        }
    }

    /// Compliance counts each breach recorded once, and a met or breached outcome per stopped cycle.
    #[test]
    fn compliance_counts_every_recorded_breach_once(ops in ops()) {
        let h = history(&ops);
        let models = single_pass(&h.events);
        let rows = models.compliance.model().report(Period::default(), &h.policy).unwrap();
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

    let detail = TicketDetail::of(
        &models.tickets.model().ticket(ticket, u64::MAX).unwrap().unwrap(),
        &h.policy,
        utc(2026, 11, 21, 4, 30),
    );
    let first = detail.clocks.iter().find(|c| c.metric == "first_response").unwrap();
    assert_eq!(first.due_at.as_deref(), Some("2026-11-21T04:00:00Z"));
    assert_eq!(first.remaining.as_deref(), Some("-00:30:00"), "thirty minutes overdue");
    assert!(first.breached);

    let rows = models.compliance.model().report(Period::default(), &h.policy).unwrap();
    let a = rows.iter().find(|r| r.severity == "A" && r.metric == "first_response").unwrap();
    assert_eq!((a.met, a.breached), (0, 1));

    let line = timeline_of(&h.events, |e| e.event.ticket_id == ticket);
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
    let rows = models.compliance.model().report(Period::default(), &h.policy).unwrap();
    let row = rows.iter().find(|r| r.metric == "first_response").unwrap();
    assert_eq!(row.first_responses, 1);
    let calendar_hours = row.median_first_response_secs.unwrap();
    let ticket = models.tickets.model().ticket(h.tickets[0].0, u64::MAX).unwrap().unwrap();
    let clock = ticket.clock(Metric::FirstResponse).unwrap();
    let calendar = h.policy.calendar(&clock.plan.as_ref().unwrap().target.calendar).unwrap();
    assert_eq!(calendar_hours, calendar.elapsed(beijing(2026, 11, 20, 17, 0), at).num_seconds());
    assert!(calendar_hours < 3 * 24 * 3600, "business time, not wall time");
}

#[test]
fn a_stored_model_of_another_format_or_unreadable_is_cleared_and_rebuilt() {
    let h = history(&[(0, 0, 0), (1, 0, 30), (0, 3, 5), (2, 1, 20), (6, 0, 10)]);
    let log = VecLog::new(h.events.clone());
    let store = MemoryState::new();
    let shared = || Some(Arc::new(store.clone()) as Arc<dyn StateStore>);
    let projector = Projector::open(log.clone(), shared(), ProjectorConfig::default());
    projector.catch_up(|_, _| {}).unwrap();
    projector.flush().unwrap();
    let expected = answers(&projector, &h, &log);

    // Resumed as stored: nothing to replay.
    let resumed = Projector::open(log.clone(), shared(), ProjectorConfig::default());
    assert_eq!(resumed.position(), log.head());
    assert_eq!(answers(&resumed, &h, &log), expected);

    // Another format: cleared, rebuilt from the log to the same answers.
    let space = store.space("board").unwrap();
    let mut batch = StateBatch::new();
    batch.insert(b"m:format".to_vec(), b"\0\0\0\x01\0\0\0\x63".to_vec());
    batch.insert(b"lgarbage-row-with-16-bytes".to_vec(), b"not bincode".to_vec());
    space.apply(batch).unwrap();
    // A row that does not decode under the right format: the same.
    let tickets = store.space("tickets").unwrap();
    let mut batch = StateBatch::new();
    batch.insert(b"l0123456789abcdef".to_vec(), b"\xff\xff".to_vec());
    tickets.apply(batch).unwrap();
    let reopened = Projector::open(log.clone(), shared(), ProjectorConfig::default());
    assert_eq!(reopened.board.position(), 0, "board cleared");
    assert_eq!(reopened.tickets.position(), 0, "tickets cleared");
    assert_eq!(reopened.compliance.position(), log.head(), "compliance kept");
    assert!(space.get(b"lgarbage-row-with-16-bytes").unwrap().is_none());
    reopened.catch_up(|_, _| {}).unwrap();
    reopened.flush().unwrap();
    assert_eq!(answers(&reopened, &h, &log), expected);

    // A log shorter than the stored position (another log): rebuilt.
    log.show(2);
    let shorter = Projector::open(log.clone(), shared(), ProjectorConfig::default());
    assert_eq!(shorter.position(), 0);
}

#[test]
fn memory_holds_the_open_tickets_rows_only() {
    // Twenty tickets opened, fifteen resolved, one of them reopened.
    let mut ops = Vec::new();
    for i in 0..20u8 {
        ops.push((0, i, 1));
    }
    for i in 0..15u8 {
        ops.push((6, i, 1));
    }
    ops.push((7, 3, 1));
    let h = history(&ops);
    let open = open_tickets(&h.events);
    assert_eq!(open, 6, "five never resolved and one reopened");
    let log = VecLog::new(h.events.clone());
    let store: Arc<dyn StateStore> = Arc::new(MemoryState::new());
    let projector = Projector::open(log.clone(), Some(store.clone()), ProjectorConfig::default());
    projector.catch_up(|_, _| {}).unwrap();
    projector.flush().unwrap();
    assert_eq!(projector.live_rows(), [open, open, open]);
    // The resolved tickets are served from the store.
    let expected = single_pass(&h.events);
    assert_eq!(answers(&projector, &h, &log), answers(&expected, &h, &log));
    // And a restart loads only the live rows.
    let reopened = Projector::open(log.clone(), Some(store), ProjectorConfig::default());
    assert_eq!(reopened.live_rows(), [open, open, open]);
    assert_eq!(answers(&reopened, &h, &log), answers(&expected, &h, &log));
}

#[test]
fn a_rebuild_in_place_gives_the_same_answers_and_stops_when_asked() {
    let ops: Vec<(u8, u8, u16)> = (0..60u8).map(|i| (i % 9, i.wrapping_mul(7), u16::from(i) * 5)).collect();
    let h = history(&ops);
    let log = VecLog::new(h.events.clone());
    let store: Arc<dyn StateStore> = Arc::new(MemoryState::new());
    let config = ProjectorConfig { batch: 3, flush_events: 5, catch_up_flush_events: 5, ..ProjectorConfig::default() };
    let projector = Projector::open(log.clone(), Some(store.clone()), config.clone());
    projector.catch_up(|_, _| {}).unwrap();
    let expected = answers(&projector, &h, &log);
    for name in ["tickets", "board", "compliance", "timeline"] {
        projector.rebuild(name, |_, _| {}).unwrap();
        assert_eq!(answers(&projector, &h, &log), expected, "{name}");
    }
    assert!(matches!(projector.rebuild("nonsense", |_, _| {}), Err(ProjectorError::UnknownProjection(_))));
    // Asked to stop: it stops between batches with what it applied flushed, and a restart
    // resumes from there.
    let asked = AtomicU64::new(0);
    let stopped = projector.rebuild_until("compliance", |_, _| {}, &|| asked.fetch_add(1, Ordering::SeqCst) >= 1);
    assert!(matches!(stopped, Err(ProjectorError::Stopped)), "{stopped:?}");
    let reopened = Projector::open(log.clone(), Some(store), config);
    assert!(reopened.compliance.position() < log.head());
    reopened.catch_up(|_, _| {}).unwrap();
    assert_eq!(answers(&reopened, &h, &log), expected);
}

#[test]
fn a_catch_up_stops_between_batches_when_asked_with_what_it_applied_flushed() {
    let ops: Vec<(u8, u8, u16)> = (0..80u8).map(|i| (i % 9, i.wrapping_mul(5), u16::from(i) * 3)).collect();
    let h = history(&ops);
    let log = VecLog::new(h.events.clone());
    let store: Arc<dyn StateStore> = Arc::new(MemoryState::new());
    let config = ProjectorConfig {
        batch: 4,
        flush_events: 1_000_000,
        catch_up_flush_events: 1_000_000,
        catch_up_sync_events: 1_000_000,
        ..ProjectorConfig::default()
    };
    let projector = Projector::open(log.clone(), Some(store.clone()), config.clone());
    let asked = AtomicU64::new(0);
    let position = projector.catch_up_until(|_, _| {}, &|| asked.fetch_add(1, Ordering::SeqCst) >= 2).unwrap();
    assert!(position > 0 && position < log.head(), "stopped early, at {position} of {}", log.head());
    // What it applied was flushed: a restart resumes from there.
    let reopened = Projector::open(log.clone(), Some(store), config);
    assert_eq!(reopened.position(), position);
    reopened.catch_up(|_, _| {}).unwrap();
    let expected = single_pass(&h.events);
    assert_eq!(answers(&reopened, &h, &log), answers(&expected, &h, &log));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_follower_stops_when_told_and_flushes_and_so_does_a_rebuild_beside_it() {
    let ops: Vec<(u8, u8, u16)> = (0..80u8).map(|i| (i % 9, i.wrapping_mul(5), u16::from(i) * 3)).collect();
    let h = history(&ops);
    let log = VecLog::new(h.events.clone());
    let store: Arc<dyn StateStore> = Arc::new(MemoryState::new());
    let projector = Projector::open(log.clone(), Some(store.clone()), ProjectorConfig::default());
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let task = projector.spawn(stopped);
    assert!(projector.wait_for(log.head(), std::time::Duration::from_secs(30)).await);
    stop.send_replace(true);
    task.await.unwrap().unwrap();
    let reopened = Projector::open(log.clone(), Some(store), ProjectorConfig::default());
    assert_eq!(reopened.position(), log.head(), "flushed at the stop");
    // The follower was told to stop: a rebuild on the same projector stops at once.
    assert!(matches!(projector.rebuild("board", |_, _| {}), Err(ProjectorError::Stopped)));
}

#[test]
fn a_query_that_cannot_read_the_log_is_unavailable_not_an_unknown_ticket_or_a_shorter_list() {
    // Given the read models in a state store, with resolved tickets (folded from the log on
    // demand) and open ones (in memory)
    let ops: Vec<(u8, u8, u16)> = (0..80u8).map(|i| (i % 9, i.wrapping_mul(5), u16::from(i) * 3)).collect();
    let h = history(&ops);
    let log = VecLog::new(h.events.clone());
    let store: Arc<dyn StateStore> = Arc::new(MemoryState::new());
    let projector = Projector::open(log.clone(), Some(store), ProjectorConfig::default());
    projector.catch_up(|_, _| {}).unwrap();
    projector.flush().unwrap();
    let expected = single_pass(&h.events);
    let status = |id: &TicketId| expected.tickets.model().ticket(*id, u64::MAX).unwrap().map(|t| t.status);
    let resolved = h.tickets.iter().map(|(id, _)| *id).find(|id| status(id) == Some(Status::Resolved)).unwrap();
    let open = h.tickets.iter().map(|(id, _)| *id).find(|id| status(id) == Some(Status::Open)).unwrap();
    let customer = expected.tickets.model().ticket(resolved, u64::MAX).unwrap().unwrap().customer;
    let now = h.now;
    // When the log's streams cannot be read
    log.broken.store(true, Ordering::SeqCst);
    // Then a resolved ticket and a list with resolved tickets are UNAVAILABLE, with the cause
    let unavailable = pb::ErrorCode::Unavailable as i32;
    let err = answer::ticket(&projector, resolved, &h.policy, now).unwrap_err();
    assert_eq!(err.code, unavailable, "{err:?}");
    assert!(err.message.contains("an input/output error"), "{}", err.message);
    let err = answer::customer(&projector, &customer, true, 1000, &h.policy, now).unwrap_err();
    assert_eq!(err.code, unavailable, "{err:?}");
    // And what memory holds is still answered
    assert!(answer::ticket(&projector, open, &h.policy, now).is_ok());
    assert!(answer::board(&projector, 1000).is_ok());
    // And once the log reads again, so do they
    log.broken.store(false, Ordering::SeqCst);
    assert_eq!(answer::ticket(&projector, resolved, &h.policy, now).unwrap().status, pb::TicketStatus::Resolved as i32);
}

/// Given a resolved ticket whose board row rests in the store, when that row cannot be read
/// (it does not decode) as the ticket is reopened, then the board stops before the reopening
/// and is never flushed (its stored row is not replaced by a fresh one, and a restart goes on
/// from its last flush, to stop there again), while the other models go on to the log's head;
/// a rebuild of the board repairs it. (The row was taken as absent before: the reopening was
/// dropped from the board, silently.)
#[test]
fn a_stored_row_that_cannot_be_read_stops_the_model_before_the_event_and_is_never_overwritten() {
    let h = history(&[(0, 0, 1), (6, 0, 5), (7, 0, 5)]);
    let reopened_at = h
        .events
        .iter()
        .find(|e| matches!(e.event.kind, EventKind::Reopened { .. }))
        .map(|e| e.position)
        .expect("the ticket is reopened");
    let log = VecLog::new(h.events.clone());
    log.show(reopened_at - 1);
    let store = MemoryState::new();
    let shared = || Some(Arc::new(store.clone()) as Arc<dyn StateStore>);
    let projector = Projector::open(log.clone(), shared(), ProjectorConfig::default());
    projector.catch_up(|_, _| {}).unwrap();
    projector.flush().unwrap();
    // The resolved ticket's row rests in the board's space; it turns unreadable.
    let board = store.space("board").unwrap();
    let dormant = board.range(b"d", Some(b"e"), 10).unwrap();
    assert_eq!(dormant.len(), 1, "the resolved ticket's row rests in the store");
    let key = dormant[0].0.clone();
    let mut batch = StateBatch::new();
    batch.insert(key.clone(), b"\xff\xff not a row".to_vec());
    board.apply(batch).unwrap();

    log.show(h.events.len() as u64);
    projector.catch_up(|_, _| {}).unwrap();
    assert_eq!(projector.board.position(), reopened_at - 1, "the board stops before the reopening");
    assert_eq!(projector.tickets.position(), log.head());
    assert_eq!(projector.compliance.position(), log.head());
    projector.flush().unwrap();
    assert_eq!(board.get(&key).unwrap().as_deref(), Some(&b"\xff\xff not a row"[..]), "the stored row is kept");
    assert_eq!(board.get(b"m:position").unwrap(), Some((reopened_at - 1).to_be_bytes().to_vec()));
    let lag = projector.lag().into_iter().find(|l| l.name == "board").unwrap();
    assert_eq!(lag.behind, log.head() - (reopened_at - 1), "its lag shows it stopped");
    // A query of the stopped board answers why, rather than a board without the reopening; the
    // other models answer, and read-your-writes up to the head does not wait for the board.
    let refused = answer::board(&projector, 100).unwrap_err();
    assert_eq!(refused.code, pb::ErrorCode::Unavailable as i32);
    assert!(refused.message.contains("board") && refused.message.contains("rebuild"), "{}", refused.message);
    let reopened = h.events.iter().find(|e| e.position == reopened_at).unwrap().event.ticket_id;
    assert!(answer::ticket(&projector, reopened, &h.policy, h.now).is_ok());
    let runtime = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
    let reached = runtime.block_on(projector.wait_for(log.head(), std::time::Duration::from_secs(30)));
    assert!(reached, "read-your-writes waited for the stopped board until its deadline");

    // A restart resumes from the last flush and stops at the same event, never past it.
    let restarted = Projector::open(log.clone(), shared(), ProjectorConfig::default());
    restarted.catch_up(|_, _| {}).unwrap();
    assert_eq!(restarted.board.position(), reopened_at - 1);
    // A rebuild of the board clears it and folds the log again, to the answers of one pass.
    restarted.rebuild("board", |_, _| {}).unwrap();
    assert_eq!(restarted.board.position(), log.head());
    assert_eq!(answers(&restarted, &h, &log), answers(&single_pass(&h.events), &h, &log));
}

/// A store whose spaces fail to read resting rows (`d` keys) while `failing` is set.
#[derive(Debug, Clone, Default)]
struct FailingStore {
    inner: MemoryState,
    failing: Arc<std::sync::atomic::AtomicBool>,
}

#[derive(Debug)]
struct FailingSpace {
    inner: Arc<dyn ticket_log::StateSpace>,
    failing: Arc<std::sync::atomic::AtomicBool>,
}

impl ticket_log::StateSpace for FailingSpace {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, LogError> {
        if self.failing.load(Ordering::SeqCst) && key.first() == Some(&b'd') {
            return Err(LogError::Storage("a failing disk".to_owned()));
        }
        self.inner.get(key)
    }

    fn range(&self, from: &[u8], to: Option<&[u8]>, limit: usize) -> Result<Vec<ticket_log::state::Entry>, LogError> {
        self.inner.range(from, to, limit)
    }

    fn apply(&self, batch: StateBatch) -> Result<(), LogError> {
        self.inner.apply(batch)
    }

    fn clear(&self) -> Result<(), LogError> {
        self.inner.clear()
    }

    fn count(&self) -> Result<u64, LogError> {
        self.inner.count()
    }
}

impl StateStore for FailingStore {
    fn space(&self, name: &str) -> Result<Arc<dyn ticket_log::StateSpace>, LogError> {
        Ok(Arc::new(FailingSpace { inner: self.inner.space(name)?, failing: self.failing.clone() }))
    }

    fn sync(&self) -> Result<(), LogError> {
        self.inner.sync()
    }

    fn size_on_disk(&self) -> u64 {
        0
    }
}

/// Given a rebuild of the board that flushes as it goes, when a resting row it wrote cannot be
/// read back (a failing disk) as its ticket is reopened, then the rebuild stops with an error
/// naming it (it read the same events again and again before), and the others go on.
#[test]
fn a_rebuild_that_cannot_read_a_stored_row_back_stops_with_an_error() {
    let h = history(&[(0, 0, 1), (6, 0, 5), (7, 0, 5)]);
    let log = VecLog::new(h.events.clone());
    let store = FailingStore::default();
    let config = ProjectorConfig { batch: 1, catch_up_flush_events: 1, ..ProjectorConfig::default() };
    let projector = Projector::open(log.clone(), Some(Arc::new(store.clone()) as Arc<dyn StateStore>), config);
    projector.catch_up(|_, _| {}).unwrap();
    store.failing.store(true, Ordering::SeqCst);
    let (done, outcome) = std::sync::mpsc::channel();
    let rebuilding = projector.clone();
    std::thread::spawn(move || done.send(rebuilding.rebuild("board", |_, _| {}).map_err(|e| e.to_string())));
    let outcome = outcome.recv_timeout(std::time::Duration::from_secs(60)).expect("the rebuild ends");
    let refused = outcome.unwrap_err();
    assert!(refused.contains("board") && refused.contains("a failing disk"), "{refused}");
    assert!(projector.board.position() < log.head());
    assert_eq!(projector.tickets.position(), log.head());
    assert_eq!(projector.position(), log.head(), "the stopped board is not waited for");
}

/// Given caught-up read models, when a rebuild of the board cannot read the log half way, then
/// the rebuild fails, and the board, which holds only what it had folded by then, answers
/// `UNAVAILABLE` naming the failed rebuild instead of a short board; read-your-writes does not
/// wait for it; once the log reads again, a rebuild repairs it to the answers of one pass.
#[test]
fn a_failed_rebuild_leaves_the_model_answering_why_until_a_rebuild_succeeds() {
    let h = history(&[(0, 0, 1), (1, 0, 2), (6, 0, 5), (7, 0, 5), (0, 1, 3)]);
    let log = VecLog::new(h.events.clone());
    let config = ProjectorConfig { batch: 1, ..ProjectorConfig::default() };
    let projector = Projector::open(log.clone(), None, config);
    projector.catch_up(|_, _| {}).unwrap();
    assert!(answer::board(&projector, 100).is_ok());

    log.failing_from.store(log.head() / 2, Ordering::SeqCst);
    assert!(projector.rebuild("board", |_, _| {}).is_err());
    let refused = answer::board(&projector, 100).unwrap_err();
    assert_eq!(refused.code, pb::ErrorCode::Unavailable as i32);
    assert!(refused.message.contains("board") && refused.message.contains("failing disk"), "{}", refused.message);
    assert_eq!(projector.position(), log.head(), "the halted board is not waited for");
    let runtime = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
    assert!(runtime.block_on(projector.wait_for(log.head(), std::time::Duration::from_secs(30))));

    log.failing_from.store(0, Ordering::SeqCst);
    projector.rebuild("board", |_, _| {}).unwrap();
    assert_eq!(projector.board.position(), log.head());
    assert_eq!(answers(&projector, &h, &log), answers(&single_pass(&h.events), &h, &log));
}
