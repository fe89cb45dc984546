use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};

use lru::LruCache;
use ticket_domain::{
    Command, DomainError, ErrorKind, Event, Policy, RecordedEvent, Rules, TicketId, TicketState, TraceId, decide,
    evolve,
};
use ticket_log::{AppendOutcome, AppendRequest, EventLog, LogError, SnapshotStore, StreamAppend};
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
            ServiceError::Log(LogError::Closed) => ServiceErrorKind::Unavailable,
            ServiceError::Quarantined { .. } => ServiceErrorKind::Quarantined,
            ServiceError::Log(
                LogError::Storage(_)
                | LogError::Corrupt { .. }
                | LogError::VersionConflict { .. }
                | LogError::InvalidAppend(_),
            ) => ServiceErrorKind::Storage,
        }
    }
}

struct Cached {
    /// The ticket's state including the events of appends still in flight.
    state: Arc<TicketState>,
    /// The version of the last snapshot written or read for this ticket.
    snapshot_version: u64,
    /// Appends queued for this ticket and not yet durable.
    pending: u32,
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
        Self { inner: Arc::new(Inner { log, snapshots, policy, cache, locks, clock, config }) }
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
    pub async fn execute(&self, request: CommandRequest) -> Result<CommandResult, ServiceError> {
        let inner = &self.inner;
        // Idempotency: the log's writer answers an appended command id with the original events.
        // A repeated command may also be refused on re-decision (resolving a resolved ticket), so
        // a refusal first looks the id up; a fresh command pays no lookup.
        let ticket = request.command.ticket_id;
        let shard = shard_of(ticket, inner.locks.len());
        let mut command = request.command;
        for attempt in 1..=inner.config.max_attempts {
            let queued = {
                let _serialized = inner.locks[shard].lock().await;
                if request.stamp == Stamp::ServiceClock {
                    command.issued_at = inner.clock.now();
                }
                // A stale cached state (another writer appended) fails the append's version check
                // and is then reloaded, so deciding needs no freshness check of its own.
                let state = self.load(ticket, Freshness::Cached)?;
                let events = match decide(&command, &state, &inner.policy) {
                    Ok(events) => events,
                    Err(refused) => {
                        return match self.stored_result(&command)? {
                            Some(events) => Ok(CommandResult { events, duplicate: true }),
                            None => Err(ServiceError::Rejected(refused)),
                        };
                    }
                };
                let append = AppendRequest {
                    command: command.clone(),
                    policy: Some(inner.policy.version().clone()),
                    rules: Rules::CURRENT,
                    correlation_id: request.correlation_id.clone(),
                    causation_id: request.causation_id.clone(),
                    streams: streams(ticket, state.version(), events.clone()),
                };
                let queued = inner.log.append(append);
                self.stage(ticket, state, &events);
                queued
            };
            let outcome = queued.await;
            self.settle(ticket, matches!(outcome, Ok(AppendOutcome::Appended(_))));
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
        let count = usize::try_from(record.last_position - record.first_position + 1).unwrap_or(0);
        let events = log.read_from(record.first_position, count).map_err(ServiceError::Log)?;
        Ok(Some(events))
    }

    fn load(&self, ticket: TicketId, freshness: Freshness) -> Result<Arc<TicketState>, ServiceError> {
        let log = &self.inner.log;
        let cached = self.cache().get(&ticket).map(|c| (c.state.clone(), c.pending));
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
            evolve(&mut state, &e.event).map_err(|misfit| {
                error!(ticket_id = %ticket, position = e.position, problem = %misfit, "stored event does not fit; ticket quarantined");
                ServiceError::Quarantined { ticket_id: ticket, position: e.position, problem: misfit.to_string() }
            })?;
        }
        let state = Arc::new(state);
        self.cache().put(ticket, Cached { state: state.clone(), snapshot_version, pending: 0 });
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

    /// Caches the state a queued append will produce, so the next command on the ticket is
    /// decided on it. The cached state is evolved in place when nothing else holds it.
    fn stage(&self, ticket: TicketId, before: Arc<TicketState>, events: &[Event]) {
        let mut cache = self.cache();
        let (snapshot_version, pending) = cache.pop(&ticket).map_or((0, 0), |c| (c.snapshot_version, c.pending));
        let mut state = Arc::try_unwrap(before).unwrap_or_else(|shared| (*shared).clone());
        for e in events.iter().filter(|e| e.ticket_id == ticket) {
            if let Err(misfit) = evolve(&mut state, e) {
                // `decide` never produces such an event; should it, no later decision may rest
                // on the staged state: the next load reads what is durable.
                error!(ticket_id = %ticket, problem = %misfit, "decided event does not fit; staged state dropped");
                return;
            }
        }
        cache.put(ticket, Cached { state: Arc::new(state), snapshot_version, pending: pending + 1 });
    }

    /// A queued append finished. A failed one makes the staged state wrong: forget it, and the
    /// next load reads what is durable. A ticket with nothing in flight is snapshotted now and
    /// then (a snapshot only ever holds durable events).
    fn settle(&self, ticket: TicketId, appended: bool) {
        let mut cache = self.cache();
        if !appended {
            cache.pop(&ticket);
            return;
        }
        let Some(entry) = cache.get_mut(&ticket) else { return };
        entry.pending = entry.pending.saturating_sub(1);
        let Some(store) = &self.inner.snapshots else { return };
        if entry.pending > 0 || entry.state.version() < entry.snapshot_version + self.inner.config.snapshot_every {
            return;
        }
        let state = entry.state.clone();
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

fn shard_of(ticket: TicketId, shards: usize) -> usize {
    let bytes = ticket.as_uuid().as_bytes();
    // The random tail of a uuid v7 spreads tickets evenly.
    let tail =
        u64::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11], bytes[12], bytes[13], bytes[14], bytes[15]]);
    usize::try_from(tail % shards as u64).unwrap_or(0)
}

/// Groups a decision's events by stream: the command's ticket at the version decided on, and
/// any other ticket (a split's new one) as a new stream.
fn streams(ticket: TicketId, version: u64, events: Vec<Event>) -> Vec<StreamAppend> {
    let mut out = vec![StreamAppend { ticket_id: ticket, expected_version: version, events: Vec::new() }];
    for event in events {
        match out.iter_mut().find(|s| s.ticket_id == event.ticket_id) {
            Some(stream) => stream.events.push(event),
            None => out.push(StreamAppend { ticket_id: event.ticket_id, expected_version: 0, events: vec![event] }),
        }
    }
    out.retain(|s| !s.events.is_empty());
    out
}

#[cfg(test)]
mod tests;
