#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};

use proptest::prelude::*;
use ticket_domain::testing::{command, open, regional_operator, text, utc};
use ticket_domain::{
    ActorId, ActorKind, CommandBody, CommandId, EventId, Firing, Policy, RecordedEvent, Severity, TicketState,
    Timestamp, decide, evolve,
};
use ticket_log::MemoryState;

use super::*;
use crate::catch_up_durably;

/// A state store in memory whose syncs can be held back (the OS has not written them yet): a
/// crash then keeps any prefix of the batches applied since the last sync that went through.
#[derive(Debug, Default)]
struct LazyStore {
    inner: MemoryState,
    hold_syncs: AtomicBool,
}

impl StateStore for LazyStore {
    fn space(&self, name: &str) -> Result<Arc<dyn StateSpace>, LogError> {
        self.inner.space(name)
    }
    fn sync(&self) -> Result<(), LogError> {
        if self.hold_syncs.load(Ordering::SeqCst) { Ok(()) } else { self.inner.sync() }
    }
    fn size_on_disk(&self) -> u64 {
        0
    }
}

/// The index's clocks in key order, and its pending firings.
fn view(index: &DeadlineIndex) -> (BTreeMap<ClockKey, ClockEntryOwned>, Vec<Firing>) {
    let clocks = index.clock_entries().map(|e| ((e.ticket, e.metric), e.to_entry())).collect();
    (clocks, index.iter().copied().collect())
}

fn read_from(log: &[RecordedEvent], from: u64, limit: usize) -> Vec<RecordedEvent> {
    log.iter().filter(|e| e.position >= from).take(limit).cloned().collect()
}

#[derive(Debug, Clone)]
enum Op {
    Open {
        ticket: usize,
        severity: Severity,
    },
    /// Opened in another helpdesk `minutes_ago` before its history is imported now, and with
    /// an escalation soon after, imported a minute later, when `more`.
    Import {
        ticket: usize,
        severity: Severity,
        minutes_ago: i64,
        more: bool,
    },
    Respond(usize),
    Ask(usize),
    Reply(usize),
    Resolve(usize),
    Reopen(usize),
    /// The clock moves on; the timer (caught up) fires what is due and settles each answer
    /// before it applies the events that recorded it.
    Advance {
        minutes: i64,
    },
    /// The index applies up to this many more events of the log.
    CatchUp(usize),
    Flush,
    /// A flush whose sync has not reached the disk yet.
    FlushUnsynced,
}

fn op() -> impl Strategy<Value = Op> {
    let severity = prop_oneof![Just(Severity::A), Just(Severity::B), Just(Severity::C)];
    let ticket = 0..4usize;
    prop_oneof![
        2 => (ticket.clone(), severity.clone()).prop_map(|(ticket, severity)| Op::Open { ticket, severity }),
        1 => (ticket.clone(), severity, 2..900i64, any::<bool>())
            .prop_map(|(ticket, severity, minutes_ago, more)| Op::Import { ticket, severity, minutes_ago, more }),
        1 => ticket.clone().prop_map(Op::Respond),
        1 => ticket.clone().prop_map(Op::Ask),
        1 => ticket.clone().prop_map(Op::Reply),
        1 => ticket.clone().prop_map(Op::Resolve),
        1 => ticket.prop_map(Op::Reopen),
        4 => (1..900i64).prop_map(|minutes| Op::Advance { minutes }),
        3 => (1..4usize).prop_map(Op::CatchUp),
        2 => Just(Op::Flush),
        2 => Just(Op::FlushUnsynced),
    ]
}

/// Tickets decided by the Decider, their events appended to a log in memory, and a timer's
/// index applying that log, settling firings and flushing to a store.
struct World {
    policy: Policy,
    now: Timestamp,
    tickets: Vec<(TicketId, TicketState)>,
    log: Vec<RecordedEvent>,
    recorded: HashSet<CommandId>,
    index: DeadlineIndex,
    /// Firings settled, in order, with the number of flushes before each.
    settles: Vec<(usize, Firing)>,
    /// The index as each flush wrote it (0: as the store was stamped, empty).
    flushes: Vec<DeadlineIndex>,
    seq: u64,
}

impl World {
    fn new() -> Self {
        let tickets = (0..4u128).map(|i| (TicketId::from_uuid(uuid::Uuid::from_u128(i + 1)), TicketState::initial()));
        let mut index = DeadlineIndex::new();
        index.track_changes();
        Self {
            policy: regional_operator(),
            now: utc(2026, 11, 23, 1, 0),
            tickets: tickets.collect(),
            log: Vec::new(),
            recorded: HashSet::new(),
            index,
            settles: Vec::new(),
            flushes: vec![DeadlineIndex::new()],
            seq: 0,
        }
    }

    /// Decides `body` by `kind` at `at` on ticket `i`; appends its events (imported ones as
    /// appended at `imported_at`). The command's id is `id` or a fresh one.
    fn decide(
        &mut self,
        i: usize,
        kind: ActorKind,
        at: Timestamp,
        body: CommandBody,
        id: Option<CommandId>,
        imported_at: Option<Timestamp>,
    ) -> Result<(), ()> {
        self.seq += 1;
        let actor = match kind {
            ActorKind::Customer => "acme",
            ActorKind::Agent => "agent-li",
            ActorKind::System => "ticket-timer",
        };
        let mut cmd = command(kind, actor, at, body);
        cmd.ticket_id = self.tickets[i].0;
        cmd.id = id.unwrap_or_else(|| CommandId::new(format!("c{}", self.seq)).unwrap());
        let (_, state) = &mut self.tickets[i];
        let events = decide(&cmd, state, &self.policy).map_err(|_| ())?;
        for event in events {
            evolve(state, &event).unwrap();
            let position = self.log.len() as u64 + 1;
            let id = EventId::from_uuid(uuid::Uuid::from_u128(u128::from(position)));
            let mut recorded = RecordedEvent::of_command(id, &cmd, state.version(), position, event);
            if let Some(appended_at) = imported_at {
                recorded.imported = true;
                recorded.recorded_at = appended_at;
            }
            self.log.push(recorded);
        }
        self.recorded.insert(cmd.id);
        Ok(())
    }

    fn catch_up(&mut self) {
        self.apply_some(usize::MAX);
    }

    fn apply_some(&mut self, n: usize) {
        for event in self.log[self.index.position() as usize..].iter().take(n) {
            self.index.apply(event);
        }
    }

    /// The command of `firing` issued now: recorded (now or before) or refused.
    fn fire(&mut self, firing: &Firing) {
        let cmd = firing.command(self.now, &ActorId::new("ticket-timer").unwrap()).unwrap();
        if self.recorded.contains(&cmd.id) {
            return;
        }
        let i = self.tickets.iter().position(|(t, _)| *t == firing.ticket).unwrap();
        // Recorded, or refused (moot, or given up): settled either way.
        let _ = self.decide(i, ActorKind::System, cmd.issued_at, cmd.body, Some(cmd.id), None);
    }

    /// Would the timer's command for `firing` be answered as repeated or refused, now?
    fn repeated_or_refused(&self, firing: &Firing) -> bool {
        let cmd = firing.command(self.now, &ActorId::new("ticket-timer").unwrap()).unwrap();
        let state = &self.tickets.iter().find(|(t, _)| *t == firing.ticket).unwrap().1;
        self.recorded.contains(&cmd.id) || decide(&cmd, state, &self.policy).is_err()
    }

    fn run(&mut self, op: &Op, store: &IndexStore, lazy: &LazyStore) {
        let agent = ActorKind::Agent;
        match op.clone() {
            Op::Open { ticket, severity } => {
                let _ = self.decide(ticket, agent, self.now, open("advanced", "technical", severity), None, None);
            }
            Op::Import { ticket, severity, minutes_ago, more } => {
                let at = self.now - chrono::TimeDelta::minutes(minutes_ago);
                let body = open("advanced", "technical", severity);
                if self.decide(ticket, agent, at, body, None, Some(self.now)).is_ok() && more {
                    // The rest of its history, appended a minute later: it moves what was past
                    // at import (an escalation changes no clock itself).
                    let opened = at;
                    let at = opened + chrono::TimeDelta::minutes(minutes_ago / 8);
                    self.now += chrono::TimeDelta::minutes(1);
                    let tier = ticket_domain::Tier::new("tier-2").unwrap();
                    let body = CommandBody::Escalate { tier, team: None, reason: text("imported") };
                    let _ = self.decide(ticket, agent, at, body, None, Some(self.now));
                }
            }
            Op::Respond(i) => {
                let body = CommandBody::RecordAgentResponse { message: text("on it") };
                let _ = self.decide(i, agent, self.now, body, None, None);
            }
            Op::Ask(i) => {
                let body = CommandBody::RequestCustomerInfo { request: text("logs?") };
                let _ = self.decide(i, agent, self.now, body, None, None);
            }
            Op::Reply(i) => {
                let body = CommandBody::RecordCustomerReply { message: text("here") };
                let _ = self.decide(i, ActorKind::Customer, self.now, body, None, None);
            }
            Op::Resolve(i) => {
                let _ = self.decide(i, agent, self.now, CommandBody::Resolve { resolution: text("done") }, None, None);
            }
            Op::Reopen(i) => {
                let _ = self.decide(i, agent, self.now, CommandBody::Reopen { reason: text("again") }, None, None);
            }
            Op::Advance { minutes } => {
                self.now += chrono::TimeDelta::minutes(minutes);
                self.catch_up();
                let due: Vec<Firing> = self.index.due(self.now).copied().collect();
                for firing in due {
                    self.fire(&firing);
                    self.index.settle(&firing);
                    self.settles.push((self.flushes.len(), firing));
                }
            }
            Op::CatchUp(n) => self.apply_some(n),
            Op::Flush | Op::FlushUnsynced => {
                lazy.hold_syncs.store(matches!(op, Op::FlushUnsynced), Ordering::SeqCst);
                store.flush(&mut self.index).unwrap();
                lazy.hold_syncs.store(false, Ordering::SeqCst);
                self.flushes.push(self.index.clone());
            }
        }
    }
}

fn check_kill_and_restart(ops: &[Op], kill_keep: usize) {
    let lazy = Arc::new(LazyStore::default());
    let store = IndexStore::open(lazy.clone()).unwrap();
    assert!(store.load(0).unwrap().rebuild.is_some(), "an empty store is stamped and built from the log");
    let mut world = World::new();
    // Flushes whose batch was synced: a later synced one makes the earlier unsynced durable.
    let mut synced = 0usize;
    for op in ops {
        world.run(op, &store, &lazy);
        if matches!(op, Op::Flush) {
            synced = world.flushes.len() - 1;
        }
    }
    // The kill: the synced state plus some prefix of the batches applied after it.
    let unsynced = world.flushes.len() - 1 - synced;
    let kept = kill_keep % (unsynced + 1);
    let crashed = lazy.inner.crash(|_, n| {
        assert_eq!(n, unsynced, "one batch per flush");
        kept
    });
    let durable = synced + kept;
    let at_flush = &world.flushes[durable];

    // The restart: the stored index, caught up from the log.
    let reopened = IndexStore::open(Arc::new(crashed)).unwrap();
    let Loaded { mut index, rebuild } = reopened.load(world.log.len() as u64).unwrap();
    assert_eq!(rebuild, None, "the stored index is used");
    assert_eq!(index.position(), at_flush.position(), "the position of the last durable flush");
    let mut read = 0u64;
    let caught = catch_up_durably(
        |from, limit| {
            let events = read_from(&world.log, from, limit);
            read += events.len() as u64;
            Ok(events)
        },
        &mut index,
        Some(&reopened),
        7,
        5,
        || false,
        |_| {},
    )
    .unwrap();
    assert_eq!(caught.read, read);
    assert_eq!(read, world.log.len() as u64 - at_flush.position(), "only the tail after the durable position is read");

    // (a) Exactly the index the timer had at its last durable flush, with the rest of the log
    // applied: what the running timer would have become without the settles made since.
    let mut expected = at_flush.clone();
    for event in &world.log {
        expected.apply(event);
    }
    assert_eq!(view(&index), view(&expected), "restarted index vs the durable flush plus the tail");

    // (b) Against the timer that was not killed (every settle, caught up): they differ only on
    // the clocks of settles made after the last durable flush, and each firing pending only
    // after the restart would be answered as repeated (recorded before) or refused again.
    world.catch_up();
    let lost: BTreeSet<ClockKey> =
        world.settles.iter().filter(|(flushes, _)| *flushes > durable).map(|(_, f)| (f.ticket, f.metric)).collect();
    let (restarted_clocks, restarted_firings) = view(&index);
    let (live_clocks, live_firings) = view(&world.index);
    let keys: BTreeSet<ClockKey> = restarted_clocks.keys().chain(live_clocks.keys()).copied().collect();
    for key in keys {
        if restarted_clocks.get(&key) != live_clocks.get(&key) {
            assert!(lost.contains(&key), "clock {key:?} differs without a lost settle");
        }
    }
    for firing in restarted_firings.iter().filter(|f| !live_firings.contains(f)) {
        assert!(lost.contains(&(firing.ticket, firing.metric)), "{firing:?} reappeared without a lost settle");
        assert!(world.repeated_or_refused(firing), "{firing:?} reappeared and would be recorded anew");
    }

    // The restarted index flushes and reopens to itself.
    reopened.flush(&mut index).unwrap();
    let again = reopened.load(world.log.len() as u64).unwrap();
    assert_eq!(view(&again.index), view(&index));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// A timer's index killed at a random point (including between a flush's write and its
    /// sync) and restarted from its store replays only the log after its durable position and
    /// comes back as the index it had then, caught up.
    #[test]
    fn a_killed_index_resumes_from_its_last_flush(ops in prop::collection::vec(op(), 1..80), keep in 0..8usize) {
        check_kill_and_restart(&ops, keep);
    }
}

/// A settled breach whose recording event is applied after the flush, and a breach past at
/// import settled before the import's later event: the stored copy (position before those
/// events, settles already in it) caught up equals the live index.
#[test]
fn settles_ahead_of_the_stored_position_replay_to_the_live_index() {
    let ops = [
        Op::Open { ticket: 0, severity: Severity::A },
        Op::Import { ticket: 1, severity: Severity::A, minutes_ago: 300, more: false },
        Op::Import { ticket: 2, severity: Severity::B, minutes_ago: 900, more: true },
        Op::Advance { minutes: 30 },
        Op::Advance { minutes: 18 },
        Op::Advance { minutes: 12 },
        // The breaches are settled, their events not yet applied: flushed like that.
        Op::Flush,
        Op::Reply(1),
        Op::Respond(1),
        Op::CatchUp(usize::MAX),
        Op::Advance { minutes: 600 },
        Op::Flush,
        Op::Ask(0),
        Op::Advance { minutes: 3000 },
    ];
    for keep in 0..2 {
        check_kill_and_restart(&ops, keep);
    }
}

/// A store written in another format, or with no format at all, is cleared and rebuilt.
#[test]
fn a_store_of_another_format_is_cleared_and_rebuilt() {
    let state = Arc::new(MemoryState::new());
    let space = state.space(SPACE).unwrap();
    let mut batch = StateBatch::new();
    batch.insert(FORMAT_KEY, (FORMAT + 1).to_be_bytes().to_vec());
    batch.insert(POSITION_KEY, 3u64.to_be_bytes().to_vec());
    batch.insert(b"c-some-row-of-the-other-format".to_vec(), vec![9; 40]);
    space.apply(batch).unwrap();
    let store = IndexStore::open(state.clone()).unwrap();
    let loaded = store.load(10).unwrap();
    assert!(loaded.rebuild.unwrap().contains("format 2"));
    assert_eq!(loaded.index.position(), 0);
    assert!(loaded.index.tracks_changes());
    assert_eq!(space.count().unwrap(), 2, "only the format and the position are left");
    assert_eq!(space.get(FORMAT_KEY).unwrap(), Some(FORMAT.to_be_bytes().to_vec()));
    // Stamped and synced: a kill now keeps the stamp.
    let crashed = state.crash(|_, _| 0);
    assert!(IndexStore::open(Arc::new(crashed)).unwrap().load(10).unwrap().rebuild.is_none());

    // No format key at all (rows of something else): cleared too.
    space.clear().unwrap();
    let mut batch = StateBatch::new();
    batch.insert(b"c".to_vec(), vec![1]);
    space.apply(batch).unwrap();
    assert!(store.load(10).unwrap().rebuild.unwrap().contains("no format key"));
    assert_eq!(space.get(b"c").unwrap(), None);
}

/// A row that does not decode, or a position ahead of the log: rebuilt, never a panic.
#[test]
fn an_undecodable_row_or_a_position_ahead_of_the_log_means_rebuilding() {
    let mut world = World::new();
    let lazy = Arc::new(LazyStore::default());
    let store = IndexStore::open(lazy.clone()).unwrap();
    store.load(0).unwrap();
    world.run(&Op::Open { ticket: 0, severity: Severity::A }, &store, &lazy);
    world.run(&Op::CatchUp(usize::MAX), &store, &lazy);
    world.run(&Op::Flush, &store, &lazy);
    let head = world.log.len() as u64;
    let loaded = store.load(head).unwrap();
    assert!(loaded.rebuild.is_none());
    assert_eq!(view(&loaded.index), view(&world.index));
    assert!(store.load(head - 1).unwrap().rebuild.unwrap().contains("ahead of the log"));
    assert_eq!(store.position().unwrap(), Some(0));

    // Stored again from scratch; then one row loses its last byte.
    let mut index = DeadlineIndex::new();
    index.track_changes();
    for event in &world.log {
        index.apply(event);
    }
    store.flush(&mut index).unwrap();
    let space = lazy.space(SPACE).unwrap();
    let (key, value) = space.range(b"c", Some(b"d"), 1).unwrap().remove(0);
    let mut batch = StateBatch::new();
    batch.insert(key, value[..value.len() - 1].to_vec());
    space.apply(batch).unwrap();
    let loaded = store.load(head).unwrap();
    assert!(loaded.rebuild.unwrap().contains("does not decode"));
    assert!(loaded.index.is_empty());
    assert_eq!(space.count().unwrap(), 2, "cleared");
}

/// Loading pages through more rows than one page.
#[test]
fn a_large_index_loads_across_pages() {
    let state = Arc::new(MemoryState::new());
    let store = IndexStore::open(state).unwrap();
    store.load(0).unwrap();
    let at = utc(2026, 11, 23, 1, 0);
    let entries: Vec<ClockEntryOwned> = (0..PAGE as u128 * 2 + 17)
        .map(|i| {
            let ticket = TicketId::from_uuid(uuid::Uuid::from_u128(i + 1));
            let metric = ticket_domain::Metric::Resolution;
            let firing = Firing { at, ticket, metric, cycle: 1, kind: ticket_domain::FiringKind::Breach };
            ClockEntryOwned { ticket, metric, cycle: 1, breached: false, pending: vec![firing] }
        })
        .collect();
    let changes =
        Changes { position: 5, clocks: entries.iter().map(|e| ((e.ticket, e.metric), Some(e.clone()))).collect() };
    store.write(IndexStore::batch(&changes)).unwrap();
    let loaded = store.load(5).unwrap();
    assert!(loaded.rebuild.is_none());
    assert_eq!(loaded.index.clocks(), entries.len());
    assert_eq!(loaded.index.position(), 5);
}

/// An imported event that changes no clock itself (an escalation) still changes what is past
/// at import (a breach due between the two appends becomes one detected at import): that clock
/// is written by the next flush.
#[test]
fn a_breach_past_at_a_later_import_is_flushed() {
    let ops = [
        Op::Import { ticket: 0, severity: Severity::A, minutes_ago: 59, more: true },
        Op::CatchUp(1),
        Op::Flush,
        Op::CatchUp(1),
        Op::Flush,
    ];
    check_kill_and_restart(&ops, 0);
}
