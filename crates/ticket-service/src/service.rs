use std::collections::{HashMap, VecDeque};
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};

use lru::LruCache;
use ticket_domain::{
    Command, CommandId, DomainError, ErrorKind, Event, ImportProblem, Policy, RecordedEvent, Rules, TicketId,
    TicketState, Timestamp, TraceId, decide, evolve, evolve_recorded,
};
use ticket_log::{AppendOutcome, AppendRequest, AppendToken, EventLog, LogError, SnapshotStore, StreamAppend};
use tokio::sync::watch;
use tracing::{debug, error, warn};

use crate::clock::{Clock, SystemClock};
use crate::snapshot::{decode_snapshot, encode_snapshot};

#[derive(Debug, Clone)]
pub struct ServiceConfig {
    /// How many times a command is decided again after a version conflict.
    pub max_attempts: u32,
    /// Ticket states kept in memory.
    pub cache_capacity: usize,
    /// Write a snapshot when a ticket has this many events beyond its last snapshot.
    pub snapshot_every: u64,
    /// Commands on tickets of the same shard wait for each other.
    pub lock_shards: usize,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        Self { max_attempts: 8, cache_capacity: 100_000, snapshot_every: 64, lock_shards: 4096 }
    }
}

/// Where a command's instant comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stamp {
    /// The command's own `issued_at` (the timer's firings, replays, tests on a simulated clock).
    AsIssued,
    /// The service's clock, read once the ticket's lock is held, so that commands on one ticket
    /// get instants in the order they are decided (requests from support tools).
    ServiceClock,
    /// An importer's past instant: the history of another helpdesk moved in with its original
    /// instants. Accepted when it is not after the service's clock and not before the ticket's
    /// last event; the events are marked imported.
    Imported,
}

#[derive(Debug, Clone)]
pub struct CommandRequest {
    pub command: Command,
    pub correlation_id: Option<TraceId>,
    pub causation_id: Option<TraceId>,
    pub stamp: Stamp,
}

impl From<Command> for CommandRequest {
    fn from(command: Command) -> Self {
        Self { command, correlation_id: None, causation_id: None, stamp: Stamp::AsIssued }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandResult {
    /// The events the command appended (for a repeated command id: the original ones), with
    /// their positions.
    pub events: Vec<RecordedEvent>,
    pub duplicate: bool,
}

impl CommandResult {
    /// The position of the last event: what a read-your-writes query waits for.
    pub fn last_position(&self) -> u64 {
        self.events.last().map_or(0, |e| e.position)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ServiceError {
    #[error(transparent)]
    Rejected(#[from] DomainError),
    #[error("ticket {ticket_id} kept changing under the command: gave up after {attempts} attempts")]
    Conflict { ticket_id: TicketId, attempts: u32 },
    #[error(transparent)]
    Log(LogError),
    /// A stored event of the ticket does not fit its history: the ticket is quarantined (every
    /// command on it is refused) and the rest of the log goes on.
    #[error("ticket {ticket_id} is quarantined: its event at position {position} does not fit its history: {problem}")]
    Quarantined { ticket_id: TicketId, position: u64, problem: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ServiceErrorKind {
    /// The rules refused the command; nothing was appended.
    Rejected(ErrorKind),
    Conflict,
    /// The log failed or is corrupt; the command may be retried with the same id.
    Storage,
    Unavailable,
    /// A stored event of the ticket does not fit its history (`audit verify` reports it).
    Quarantined,
}

impl ServiceError {
    pub fn kind(&self) -> ServiceErrorKind {
        match self {
            ServiceError::Rejected(e) => ServiceErrorKind::Rejected(e.kind()),
            ServiceError::Conflict { .. } => ServiceErrorKind::Conflict,
            ServiceError::Log(LogError::Closed | LogError::NotOwner(_)) => ServiceErrorKind::Unavailable,
            ServiceError::Quarantined { .. } => ServiceErrorKind::Quarantined,
            ServiceError::Log(
                LogError::Storage(_)
                | LogError::Corrupt { .. }
                | LogError::VersionConflict { .. }
                | LogError::BasisConflict { .. }
                | LogError::InvalidAppend(_),
            ) => ServiceErrorKind::Storage,
        }
    }
}

/// A ticket's cached state: what is durable, and the appends queued after it (ADR 0007).
struct Cached {
    /// The durable state: read from the log, or produced by an append the log acknowledged.
    confirmed: Arc<TicketState>,
    /// The appends queued for this ticket and not yet settled, in queue order, each with the
    /// state it produces. Each was decided after the one before it (the first after
    /// `confirmed`), and the log appends it only if that one was appended just before it.
    staged: VecDeque<(AppendToken, Arc<TicketState>)>,
    /// The version of the last snapshot written or read for this ticket.
    snapshot_version: u64,
}

impl Cached {
    fn confirmed(state: Arc<TicketState>, snapshot_version: u64) -> Self {
        Self { confirmed: state, staged: VecDeque::new(), snapshot_version }
    }

    /// The state the next decision is made on: the last staged one, else the durable one.
    fn state(&self) -> &Arc<TicketState> {
        self.staged.back().map_or(&self.confirmed, |(_, state)| state)
    }

    /// The next decision's basis: its state, and the append it is decided after (none when the
    /// state is durable).
    fn basis(&self) -> (Arc<TicketState>, Option<AppendToken>) {
        (self.state().clone(), self.staged.back().map(|(token, _)| *token))
    }
}

/// How a command whose id was claimed ended, for sends of the same id that waited for it.
#[derive(Debug, Clone)]
enum Finished {
    /// Appended (or found in the log): the events every send of the id is answered with.
    Events(Vec<RecordedEvent>),
    /// Refused by the rules on the state it was decided on.
    Refused(DomainError),
    /// Nothing appended for a reason that may pass (conflicts, storage): a waiting send is
    /// decided on its own.
    Failed,
}

/// The command ids being executed by this service. A send of an id in the registry waits for
/// the first one's outcome instead of being decided: deciding it on a state that includes the
/// first one's staged append could refuse it while the first one succeeds.
type Flights = Mutex<HashMap<CommandId, watch::Receiver<Option<Finished>>>>;

/// The claim on a command id: while it lives, the id is in the registry.
struct Flight {
    id: CommandId,
    flights: Arc<Flights>,
    outcome: Option<watch::Sender<Option<Finished>>>,
}

impl Flight {
    fn finish(mut self, finished: Finished) {
        self.publish(finished);
    }

    /// Leaves the registry and tells the waiting sends, under the registry's lock: a send that
    /// then finds the id absent comes after the outcome.
    fn publish(&mut self, finished: Finished) {
        let Some(outcome) = self.outcome.take() else { return };
        let mut flights = self.flights.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        flights.remove(&self.id);
        outcome.send_replace(Some(finished));
    }
}

impl Drop for Flight {
    fn drop(&mut self) {
        self.publish(Finished::Failed);
    }
}

enum Claim {
    Mine(Flight),
    InFlight(watch::Receiver<Option<Finished>>),
}

/// The command service. Cheap to clone.
pub struct CommandService<L> {
    inner: Arc<Inner<L>>,
}

impl<L> Clone for CommandService<L> {
    fn clone(&self) -> Self {
        Self { inner: self.inner.clone() }
    }
}

impl<L> std::fmt::Debug for CommandService<L> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CommandService").field("policy", self.inner.policy.version()).finish_non_exhaustive()
    }
}

struct Inner<L> {
    log: L,
    snapshots: Option<Arc<dyn SnapshotStore>>,
    policy: Arc<Policy>,
    cache: Mutex<LruCache<TicketId, Cached>>,
    flights: Arc<Flights>,
    locks: Vec<tokio::sync::Mutex<()>>,
    clock: Arc<dyn Clock>,
    config: ServiceConfig,
}

impl<L: EventLog> CommandService<L> {
    /// A service on the wall clock.
    pub fn new(log: L, policy: Arc<Policy>, snapshots: Option<Arc<dyn SnapshotStore>>, config: ServiceConfig) -> Self {
        Self::with_clock(log, policy, snapshots, config, Arc::new(SystemClock))
    }

    /// A service whose [`Stamp::ServiceClock`] commands read `clock`.
    pub fn with_clock(
        log: L,
        policy: Arc<Policy>,
        snapshots: Option<Arc<dyn SnapshotStore>>,
        config: ServiceConfig,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let capacity = NonZeroUsize::new(config.cache_capacity).unwrap_or(NonZeroUsize::MIN);
        let locks = (0..config.lock_shards.max(1)).map(|_| tokio::sync::Mutex::new(())).collect();
        let cache = Mutex::new(LruCache::new(capacity));
        let flights = Arc::default();
        Self { inner: Arc::new(Inner { log, snapshots, policy, cache, flights, locks, clock, config }) }
    }

    pub fn log(&self) -> &L {
        &self.inner.log
    }

    /// The clock [`Stamp::ServiceClock`] commands read; the timer fires on it too.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.inner.clock
    }

    pub fn policy(&self) -> &Policy {
        &self.inner.policy
    }

    /// The policy, shared: for readers that outlive a borrow (the query API's calendars).
    pub fn policy_arc(&self) -> Arc<Policy> {
        self.inner.policy.clone()
    }

    /// Decides and durably appends a command; see the crate documentation.
    ///
    /// The ticket's lock is held only while the command is decided and its append is queued,
    /// not while the append is made durable: the next command on the same ticket is decided on
    /// the state the queued append will produce, and both can share one flush. The reply still
    /// waits for durability; if the earlier append fails, the later one conflicts and is decided
    /// again on what is durable.
    ///
    /// A command id is decided at most once at a time and never once it is in the log: a send
    /// of an id in flight waits for the first one's outcome (its events, or its refusal), and
    /// an id already appended is answered with the original events, `duplicate` set. Once
    /// claimed, a command runs to its end even if the caller stops waiting.
    pub async fn execute(&self, request: CommandRequest) -> Result<CommandResult, ServiceError> {
        let command = request.command.body.name();
        let started = std::time::Instant::now();
        let result = self.execute_claimed(request).await;
        crate::metrics::command_done(command, &result, started.elapsed());
        result
    }

    async fn execute_claimed(&self, request: CommandRequest) -> Result<CommandResult, ServiceError> {
        let flight = loop {
            let mut first = match self.claim(&request.command.id) {
                Claim::Mine(flight) => break flight,
                Claim::InFlight(first) => first,
            };
            let finished = first.wait_for(Option::is_some).await.ok().and_then(|f| f.clone());
            match finished {
                Some(Finished::Events(events)) => return Ok(CommandResult { events, duplicate: true }),
                Some(Finished::Refused(refused)) => return Err(ServiceError::Rejected(refused)),
                Some(Finished::Failed) | None => {}
            }
        };
        let ticket = request.command.ticket_id;
        let service = self.clone();
        let run = async move {
            let result = service.run(request).await;
            flight.finish(match &result {
                Ok(r) => Finished::Events(r.events.clone()),
                Err(ServiceError::Rejected(refused)) => Finished::Refused(refused.clone()),
                Err(ServiceError::Conflict { .. } | ServiceError::Log(_) | ServiceError::Quarantined { .. }) => {
                    Finished::Failed
                }
            });
            result
        };
        // A command whose append is queued must see it settled (or the ticket's staged chain
        // would wait for it forever) and must tell the sends waiting for it: it runs as its own
        // task, which a caller that goes away does not cancel.
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => runtime.spawn(run).await.unwrap_or_else(|e| {
                error!(ticket_id = %ticket, error = %e, "the command's task failed");
                Err(ServiceError::Log(LogError::Closed))
            }),
            Err(_) => run.await,
        }
    }

    fn claim(&self, id: &CommandId) -> Claim {
        let mut flights = self.inner.flights.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(first) = flights.get(id) {
            return Claim::InFlight(first.clone());
        }
        let (outcome, first) = watch::channel(None);
        flights.insert(id.clone(), first);
        Claim::Mine(Flight { id: id.clone(), flights: self.inner.flights.clone(), outcome: Some(outcome) })
    }

    /// Decides and appends a claimed command, deciding again after conflicts.
    async fn run(&self, request: CommandRequest) -> Result<CommandResult, ServiceError> {
        let inner = &self.inner;
        // A command id already in the log is never decided again: its events are the answer.
        if let Some(events) = self.stored_result(&request.command)? {
            return Ok(CommandResult { events, duplicate: true });
        }
        let ticket = request.command.ticket_id;
        let shard = shard_of(ticket, inner.locks.len());
        let mut command = request.command;
        for attempt in 1..=inner.config.max_attempts {
            let token = AppendToken::next();
            let queued = {
                let _serialized = inner.locks[shard].lock().await;
                // A stale cached state (another writer appended) fails the append's version or
                // basis check and is then reloaded, so deciding needs no freshness check of its own.
                let (state, after) = self.basis(ticket)?;
                if let Err(refused) = stamp(&mut command, request.stamp, &state, inner.clock.now()) {
                    return match self.stored_result(&command)? {
                        Some(events) => Ok(CommandResult { events, duplicate: true }),
                        None => Err(ServiceError::Rejected(refused)),
                    };
                }
                let events = match decide(&command, &state, &inner.policy) {
                    Ok(events) => events,
                    Err(refused) => {
                        // Another service on the same log may have appended the id meanwhile.
                        return match self.stored_result(&command)? {
                            Some(events) => Ok(CommandResult { events, duplicate: true }),
                            None => Err(ServiceError::Rejected(refused)),
                        };
                    }
                };
                // The state the append will produce: the next decision on the ticket rests on it.
                // Events that do not fit it (which `decide` never produces) are not appended.
                let mut staged = (*state).clone();
                for e in events.iter().filter(|e| e.ticket_id == ticket) {
                    evolve(&mut staged, e).map_err(|misfit| {
                        error!(ticket_id = %ticket, problem = %misfit, "decided event does not fit; not appended");
                        ServiceError::Log(LogError::InvalidAppend(format!("a decided event does not fit: {misfit}")))
                    })?;
                }
                let append = AppendRequest {
                    token,
                    command: command.clone(),
                    policy: Some(inner.policy.version().clone()),
                    rules: Rules::CURRENT,
                    correlation_id: request.correlation_id.clone(),
                    causation_id: request.causation_id.clone(),
                    imported: request.stamp == Stamp::Imported,
                    streams: streams(ticket, state.version(), after, events.clone()),
                };
                let imported = append.imported;
                let queued = inner.log.append(append);
                if imported {
                    // The next decision needs the import's instant, which the log stamps: it
                    // is decided on the ticket as the log has it, not on a staged state.
                    self.forget(ticket);
                } else {
                    self.stage(ticket, &state, token, staged);
                }
                queued
            };
            let outcome = queued.await;
            self.settle(ticket, token, matches!(outcome, Ok(AppendOutcome::Appended(_))));
            match outcome {
                Ok(outcome) => {
                    let duplicate = outcome.is_duplicate();
                    return Ok(CommandResult { events: outcome.into_events(), duplicate });
                }
                Err(LogError::VersionConflict { ticket_id, .. }) if ticket_id != ticket => {
                    // Only a split writes another stream, which must not exist yet.
                    return Err(ServiceError::Rejected(DomainError::TicketAlreadyExists(ticket_id)));
                }
                Err(LogError::VersionConflict { expected, actual, .. }) => {
                    debug!(ticket_id = %ticket, attempt, expected, actual, "version conflict, deciding again");
                }
                Err(LogError::BasisConflict { .. }) => {
                    debug!(ticket_id = %ticket, attempt, "decided after an append that failed, deciding again");
                }
                Err(e) => return Err(ServiceError::Log(e)),
            }
        }
        Err(ServiceError::Conflict { ticket_id: ticket, attempts: inner.config.max_attempts })
    }

    /// The current state of a ticket, as the next decision would see it.
    pub fn state(&self, ticket: TicketId) -> Result<Arc<TicketState>, ServiceError> {
        self.load(ticket, Freshness::Checked)
    }

    fn stored_result(&self, command: &Command) -> Result<Option<Vec<RecordedEvent>>, ServiceError> {
        let log = &self.inner.log;
        let Some(record) = log.command(&command.id).map_err(ServiceError::Log)? else { return Ok(None) };
        if record.last_position < record.first_position {
            let problem = format!("command {} covers {}..={}", command.id, record.first_position, record.last_position);
            return Err(ServiceError::Log(LogError::Corrupt { position: record.first_position, problem }));
        }
        let count = usize::try_from(record.last_position - record.first_position + 1).unwrap_or(0);
        let events = log.read_from(record.first_position, count).map_err(ServiceError::Log)?;
        Ok(Some(events))
    }

    fn load(&self, ticket: TicketId, freshness: Freshness) -> Result<Arc<TicketState>, ServiceError> {
        let log = &self.inner.log;
        let cached = self.cache().get(&ticket).map(|c| (c.state().clone(), c.staged.len()));
        if let Some((state, pending)) = cached {
            let fresh = match freshness {
                Freshness::Cached => true,
                // Unless appends are in flight, the cached state must be the durable one: no
                // other writer appended since. One index lookup.
                Freshness::Checked => {
                    pending > 0 || state.version() == log.stream_version(ticket).map_err(ServiceError::Log)?
                }
            };
            if fresh {
                return Ok(state);
            }
        }
        let (mut state, snapshot_version) = match self.read_snapshot(ticket) {
            Some(state) => {
                let version = state.version();
                (state, version)
            }
            None => (TicketState::initial(), 0),
        };
        for e in log.read_stream(ticket, state.version() + 1).map_err(ServiceError::Log)? {
            evolve_recorded(&mut state, &e).map_err(|misfit| {
                error!(ticket_id = %ticket, position = e.position, problem = %misfit, "stored event does not fit; ticket quarantined");
                ServiceError::Quarantined { ticket_id: ticket, position: e.position, problem: misfit.to_string() }
            })?;
        }
        let state = Arc::new(state);
        self.cache().put(ticket, Cached::confirmed(state.clone(), snapshot_version));
        Ok(state)
    }

    fn read_snapshot(&self, ticket: TicketId) -> Option<TicketState> {
        let store = self.inner.snapshots.as_ref()?;
        let bytes = match store.load(ticket) {
            Ok(bytes) => bytes?,
            Err(e) => {
                warn!(ticket_id = %ticket, error = %e, "snapshot unreadable, rebuilding from the log");
                return None;
            }
        };
        let state = decode_snapshot(&bytes);
        if state.is_none() {
            debug!(ticket_id = %ticket, "snapshot of another format, rebuilding from the log");
        }
        // A snapshot ahead of the log (the log was restored from an older copy) is useless.
        state.filter(|s| self.inner.log.stream_version(ticket).is_ok_and(|v| s.version() <= v))
    }

    /// The state the next decision on a ticket is made on, and the staged append it is made
    /// after: the cached chain's end, else the state loaded from the log (after nothing).
    fn basis(&self, ticket: TicketId) -> Result<(Arc<TicketState>, Option<AppendToken>), ServiceError> {
        if let Some(cached) = self.cache().get(&ticket) {
            return Ok(cached.basis());
        }
        // Only `stage`, under the ticket's lock that the caller holds, adds to a chain: whatever
        // `load` finds or puts has an empty one.
        Ok((self.load(ticket, Freshness::Cached)?, None))
    }

    /// Adds a queued append to the ticket's chain, so the next command on the ticket is decided
    /// on the state it will produce. Only if the chain still ends where the decision was made:
    /// an evicted entry, or a chain cut by a failed append, is rebuilt from the log instead.
    fn stage(&self, ticket: TicketId, basis: &Arc<TicketState>, token: AppendToken, state: TicketState) {
        let mut cache = self.cache();
        if let Some(entry) = cache.get_mut(&ticket)
            && Arc::ptr_eq(entry.state(), basis)
        {
            entry.staged.push_back((token, Arc::new(state)));
        }
    }

    /// Drops a ticket's cached state and its chain: the next command on it loads the ticket from
    /// the log, and an append of the chain still in flight settles nothing.
    fn forget(&self, ticket: TicketId) {
        self.cache().pop(&ticket);
    }

    /// A queued append finished. Appended: it and every append before it in the chain are
    /// durable (each was appended only after the one before), so its state is confirmed.
    /// Anything else (refused as a duplicate or a conflict, failed): it and every later append
    /// of the chain, which were decided after it and will be refused by the log, leave the
    /// chain; with nothing left in flight the entry goes, and the next load reads the log. An
    /// append not in the chain (evicted, already settled) changes nothing. Confirmed states are
    /// snapshotted now and then: a snapshot only ever holds durable events.
    fn settle(&self, ticket: TicketId, token: AppendToken, appended: bool) {
        let mut cache = self.cache();
        let Some(entry) = cache.get_mut(&ticket) else { return };
        let Some(index) = entry.staged.iter().position(|(t, _)| *t == token) else { return };
        if !appended {
            entry.staged.truncate(index);
            if entry.staged.is_empty() {
                cache.pop(&ticket);
            }
            return;
        }
        let Some((_, state)) = entry.staged.drain(..=index).next_back() else { return };
        entry.confirmed = state;
        let Some(store) = &self.inner.snapshots else { return };
        if entry.confirmed.version() < entry.snapshot_version + self.inner.config.snapshot_every {
            return;
        }
        let state = entry.confirmed.clone();
        entry.snapshot_version = state.version();
        drop(cache);
        match encode_snapshot(&state).map(|bytes| store.save(ticket, bytes)) {
            Some(Ok(())) => {}
            Some(Err(e)) => warn!(ticket_id = %ticket, error = %e, "snapshot not written"),
            None => warn!(ticket_id = %ticket, "snapshot not encodable"),
        }
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, LruCache<TicketId, Cached>> {
        self.inner.cache.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Freshness {
    /// Any cached state will do.
    Cached,
    /// A cached state must match the log.
    Checked,
}

/// Gives a command its instant, under the ticket's lock, on the state it is decided on.
///
/// - [`Stamp::ServiceClock`]: the clock's `now`, unless the ticket's last decision is later (the
///   wall clock was set back): instants never run backwards within a ticket, and are never later
///   than both the clock and the ticket's own history.
/// - [`Stamp::Imported`]: the importer's instant, if it is not after `now` and not before the
///   ticket's last event; otherwise refused (nothing is appended).
/// - [`Stamp::AsIssued`]: unchanged (the in-process timer, replays, tests).
fn stamp(command: &mut Command, stamp: Stamp, state: &TicketState, now: Timestamp) -> Result<(), DomainError> {
    let last_event_at = state.ticket().map(|t| t.last_event_at);
    match stamp {
        Stamp::AsIssued => Ok(()),
        Stamp::ServiceClock => {
            command.issued_at = last_event_at.map_or(now, |last| now.max(last));
            Ok(())
        }
        Stamp::Imported => {
            let issued_at = command.issued_at;
            if issued_at > now {
                return Err(DomainError::ImportedInstant { issued_at, problem: ImportProblem::AheadOfClock { now } });
            }
            match last_event_at {
                Some(last_event_at) if issued_at < last_event_at => Err(DomainError::ImportedInstant {
                    issued_at,
                    problem: ImportProblem::OutOfOrder { last_event_at },
                }),
                Some(_) | None => Ok(()),
            }
        }
    }
}

fn shard_of(ticket: TicketId, shards: usize) -> usize {
    let bytes = ticket.as_uuid().as_bytes();
    // The random tail of a uuid v7 spreads tickets evenly.
    let tail =
        u64::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11], bytes[12], bytes[13], bytes[14], bytes[15]]);
    usize::try_from(tail % shards as u64).unwrap_or(0)
}

/// Groups a decision's events by stream: the command's ticket at the version (and after the
/// staged append) decided on, and any other ticket (a split's new one) as a new stream.
fn streams(ticket: TicketId, version: u64, after: Option<AppendToken>, events: Vec<Event>) -> Vec<StreamAppend> {
    let mut out = vec![StreamAppend { ticket_id: ticket, expected_version: version, after, events: Vec::new() }];
    for event in events {
        match out.iter_mut().find(|s| s.ticket_id == event.ticket_id) {
            Some(stream) => stream.events.push(event),
            None => out.push(StreamAppend {
                ticket_id: event.ticket_id,
                expected_version: 0,
                after: None,
                events: vec![event],
            }),
        }
    }
    out.retain(|s| !s.events.is_empty());
    out
}

#[cfg(test)]
mod tests;
