//! The event log of ticketd: the interface every storage engine implements, a subscription that
//! catches up and then follows live appends, and an in-memory log for fast unit tests.
//!
//! This crate never depends on a storage engine (`ticket-log-sled` implements [`EventLog`] on
//! sled); only binaries choose one.
//!
//! The log stores, for each append, the events (each with a gapless global position and a
//! contiguous per-ticket version), the command that produced them (so an audit can re-run the
//! decision), a permanent command-id index (idempotency), and a published watermark: the
//! outbox is every position after it.

#[cfg(any(test, feature = "testing"))]
pub mod contract;
pub mod durable;
mod memory;
pub mod replica;
pub mod state;
mod subscription;

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};

use ticket_domain::{Command, CommandId, Event, PolicyVersion, RecordedEvent, Rules, TicketId, TraceId};

pub use memory::{MemoryLog, MemorySnapshots};
pub use replica::{ReplicaGroup, Replicator};
pub use state::{MemoryState, StateBatch, StateSpace, StateStore};
pub use subscription::Subscription;

/// Identifies one append within this process, so that a later append can name it as the basis
/// it was decided on (see [`StreamAppend::after`]). Tokens are never reused within a process and
/// mean nothing across processes: a log forgets them when it is reopened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AppendToken(u64);

impl AppendToken {
    /// A token no other append of this process has had.
    pub fn next() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        Self(NEXT.fetch_add(1, Ordering::Relaxed))
    }
}

/// Events to append to one ticket's stream, if its version is still `expected_version` and, when
/// the decision was made on an append not yet durable, that append is the stream's last one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamAppend {
    pub ticket_id: TicketId,
    /// The stream's version the decision was made on (0: the stream must not exist yet).
    pub expected_version: u64,
    /// The append whose resulting state the decision was made on, when that append was not yet
    /// durable (pipelining); `None` when the state was read from the durable log.
    ///
    /// A version counts events, it does not name them: a decision made on a staged append that
    /// then fails, followed by another append of the same length, would pass the version check
    /// on a state the stream never had. With `after`, the log appends only if the stream's last
    /// append is that one (committed, or earlier in the same group); an append it does not know
    /// (failed, refused, from before a reopen, evicted from its memory) is a
    /// [`LogError::BasisConflict`]. A durable prefix never changes, so `None` needs only the
    /// version check.
    pub after: Option<AppendToken>,
    pub events: Vec<Event>,
}

/// What a log knows about the end of a stream when it checks an append.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StreamTip {
    pub version: u64,
    /// The append that wrote the stream's last event, while the log remembers it.
    pub last: Option<AppendToken>,
}

/// One command's result: events for one or more streams (a split writes two), appended
/// atomically with the command itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppendRequest {
    /// This append's identity, for appends decided after it.
    pub token: AppendToken,
    pub command: Command,
    /// The policy the decision was made with, so an audit can re-run it.
    pub policy: Option<PolicyVersion>,
    /// The decision rules it was made under, for the same reason.
    pub rules: Rules,
    pub correlation_id: Option<TraceId>,
    pub causation_id: Option<TraceId>,
    /// The command is an importer's: every event it appends is marked imported.
    pub imported: bool,
    pub streams: Vec<StreamAppend>,
}

impl AppendRequest {
    /// Every event of the request, in append order.
    pub fn events(&self) -> impl Iterator<Item = &Event> {
        self.streams.iter().flat_map(|s| s.events.iter())
    }

    pub(crate) fn validate(&self) -> Result<(), LogError> {
        if self.streams.is_empty() || self.streams.iter().any(|s| s.events.is_empty()) {
            return Err(LogError::InvalidAppend("an append needs at least one event per stream".into()));
        }
        for (i, s) in self.streams.iter().enumerate() {
            if s.events.iter().any(|e| e.ticket_id != s.ticket_id) {
                return Err(LogError::InvalidAppend(format!(
                    "stream {} holds an event of another ticket",
                    s.ticket_id
                )));
            }
            if self.streams[..i].iter().any(|o| o.ticket_id == s.ticket_id) {
                return Err(LogError::InvalidAppend(format!("stream {} appears twice", s.ticket_id)));
            }
        }
        Ok(())
    }
}

/// What an append did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AppendOutcome {
    /// The events are durable at these positions.
    Appended(Vec<RecordedEvent>),
    /// The command id was appended before: these are the original events, nothing was written.
    Duplicate(Vec<RecordedEvent>),
}

impl AppendOutcome {
    pub fn events(&self) -> &[RecordedEvent] {
        match self {
            AppendOutcome::Appended(e) | AppendOutcome::Duplicate(e) => e,
        }
    }

    pub fn into_events(self) -> Vec<RecordedEvent> {
        match self {
            AppendOutcome::Appended(e) | AppendOutcome::Duplicate(e) => e,
        }
    }

    pub fn is_duplicate(&self) -> bool {
        matches!(self, AppendOutcome::Duplicate(_))
    }
}

/// A moment in the log's history: for time travel over a ticket or the read models.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum At {
    /// After the event at this global position and every earlier one.
    Position(u64),
    /// After every event that occurred at or before this instant.
    Instant(ticket_domain::Timestamp),
    /// After every event.
    Now,
}

impl At {
    /// Whether `event` belongs to the history as of this moment.
    pub fn includes(&self, event: &RecordedEvent) -> bool {
        match self {
            At::Position(p) => event.position <= *p,
            At::Instant(t) => event.event.occurred_at <= *t,
            At::Now => true,
        }
    }
}

/// A stored command and where its events are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandRecord {
    pub command: Command,
    pub policy: Option<PolicyVersion>,
    pub rules: Rules,
    pub correlation_id: Option<TraceId>,
    pub causation_id: Option<TraceId>,
    pub first_position: u64,
    pub last_position: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LogError {
    #[error("version conflict on ticket {ticket_id}: expected version {expected}, the stream is at {actual}")]
    VersionConflict { ticket_id: TicketId, expected: u64, actual: u64 },
    #[error("ticket {ticket_id} was decided after an append that is not its last one")]
    BasisConflict { ticket_id: TicketId },
    #[error("invalid append: {0}")]
    InvalidAppend(String),
    #[error("corrupt record at position {position}: {problem}")]
    Corrupt { position: u64, problem: String },
    #[error("storage error: {0}")]
    Storage(String),
    #[error("the log is closed")]
    Closed,
    /// This node does not own the log's partition (any more): another node appends to it, or
    /// will once this one has given it up (its fence refused, or could not confirm, an append).
    /// The command may be retried with the same id; it reaches the owner once routing knows it.
    #[error("not the owner of this log: {0}")]
    NotOwner(String),
}

/// Which clock a log's instants come from, recorded in the log's data when it is first used so
/// that a simulated clock's instants and the wall clock's never mix in one log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ClockKind {
    /// The wall clock: production.
    Wall,
    /// A simulated clock that an operator advances (`ticketd dev --test-clock`, the demo).
    Simulated,
}

impl ClockKind {
    /// The name stored in the log (never changed: existing logs hold it).
    pub const fn name(self) -> &'static str {
        match self {
            ClockKind::Wall => "wall",
            ClockKind::Simulated => "simulated",
        }
    }

    /// The kind stored under `name`, if there is one.
    pub fn from_name(name: &str) -> Option<Self> {
        [ClockKind::Wall, ClockKind::Simulated].into_iter().find(|k| k.name() == name)
    }
}

impl std::fmt::Display for ClockKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A stable classification of [`LogError`] for callers to match on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LogErrorKind {
    VersionConflict,
    BasisConflict,
    InvalidAppend,
    Corrupt,
    Storage,
    Closed,
    NotOwner,
}

impl LogError {
    pub fn kind(&self) -> LogErrorKind {
        match self {
            LogError::VersionConflict { .. } => LogErrorKind::VersionConflict,
            LogError::BasisConflict { .. } => LogErrorKind::BasisConflict,
            LogError::InvalidAppend(_) => LogErrorKind::InvalidAppend,
            LogError::Corrupt { .. } => LogErrorKind::Corrupt,
            LogError::Storage(_) => LogErrorKind::Storage,
            LogError::Closed => LogErrorKind::Closed,
            LogError::NotOwner(_) => LogErrorKind::NotOwner,
        }
    }
}

/// An append-only event log. Appends are durable when they return `Ok`; reads are consistent
/// with every append that has returned.
///
/// Reads are synchronous: they are served from memory or the engine's cache and never wait for
/// a disk flush. Appends are asynchronous: they wait for durability.
pub trait EventLog: Clone + Send + Sync + 'static {
    /// Appends a command's events, checking each stream's expected version. A command id seen
    /// before returns [`AppendOutcome::Duplicate`] with the original events, however long ago.
    ///
    /// Appends are ordered by the *call*, not by the await: an append called after another is
    /// applied after it, so a caller may decide its next command on the state an earlier append
    /// will produce and append it before the earlier one is durable (pipelining). The returned
    /// future resolves once the append is durable or refused.
    fn append(&self, request: AppendRequest) -> impl Future<Output = Result<AppendOutcome, LogError>> + Send + 'static;

    /// The number of events in a ticket's stream (0 when it does not exist).
    fn stream_version(&self, ticket: TicketId) -> Result<u64, LogError>;

    /// A ticket's events with version `from_version` or later, in order.
    fn read_stream(&self, ticket: TicketId, from_version: u64) -> Result<Vec<RecordedEvent>, LogError>;

    /// Up to `limit` events from global position `from` on, in order.
    fn read_from(&self, from: u64, limit: usize) -> Result<Vec<RecordedEvent>, LogError>;

    /// The last position appended (0 when empty).
    fn head(&self) -> u64;

    /// Follows the head: changes after every append.
    fn watch_head(&self) -> tokio::sync::watch::Receiver<u64>;

    /// The stored command with this id, if it was appended.
    fn command(&self, id: &CommandId) -> Result<Option<CommandRecord>, LogError>;

    /// Up to `limit` stored commands whose first event is at `from` or later, in log order.
    fn commands_from(&self, from: u64, limit: usize) -> Result<Vec<CommandRecord>, LogError>;

    /// Up to `limit` positions appended but not yet published, ascending. Events are published
    /// in log order, so the outbox is every durable position after the published watermark.
    fn outbox_pending(&self, limit: usize) -> Result<Vec<u64>, LogError>;

    /// Records that every position up to and including `up_to` is published (after the broker
    /// acknowledged them). The watermark never moves forward past the durable head, nor back but
    /// by [`EventLog::rewind_published`].
    fn mark_published(&self, up_to: u64) -> Result<(), LogError>;

    /// Moves the published watermark back to `to` (never forward): the event stream lost what
    /// was published after it (a stream recreated, or restored from an older copy), which the
    /// outbox then publishes again. Only the outbox's publisher calls it, between its rounds.
    fn rewind_published(&self, to: u64) -> Result<(), LogError>;

    /// The event stream's sequence at the last event the publisher saw it acknowledge, as it
    /// last recorded it (0: none recorded). A stream's sequences never go back unless it lost
    /// messages (recreated, or restored from an older copy), which is how the publisher tells a
    /// lost tail from a purge.
    fn published_sequence(&self) -> Result<u64, LogError>;

    /// Records [`EventLog::published_sequence`] (not flushed with it: it reaches the disk with the
    /// next append's commit, so a crash leaves an older one, below which a lost stream is still
    /// seen; a stream lost after it, while the process was down, only from there).
    fn set_published_sequence(&self, sequence: u64) -> Result<(), LogError>;

    /// The published watermark: every position up to it has been published.
    fn published(&self) -> Result<u64, LogError>;

    /// Catches up from `from`, then follows live appends.
    fn subscribe(&self, from: u64) -> Subscription<Self> {
        Subscription::new(self.clone(), from)
    }
}

/// A store for rebuildable per-ticket snapshots. Losing one costs a replay, never data.
pub trait SnapshotStore: Send + Sync + 'static {
    fn load(&self, ticket: TicketId) -> Result<Option<Vec<u8>>, LogError>;
    fn save(&self, ticket: TicketId, bytes: Vec<u8>) -> Result<(), LogError>;
}

/// Checks every stream's expected version and basis ([`StreamAppend::after`]) against its tip,
/// and gives each event its metadata: a uuid v7, the next global position after `head`, the next
/// version of its stream, `recorded_at`. Every engine appends through this, so positions,
/// versions and basis checks mean the same everywhere. After a successful append, each of the
/// request's streams has the tip `StreamTip { version: its last event's, last: Some(request.token) }`.
pub fn stamp_events(
    request: &AppendRequest,
    head: u64,
    recorded_at: ticket_domain::Timestamp,
    mut stream_tip: impl FnMut(TicketId) -> Result<StreamTip, LogError>,
) -> Result<Vec<RecordedEvent>, LogError> {
    request.validate()?;
    let mut out = Vec::with_capacity(request.events().count());
    let mut position = head;
    for stream in &request.streams {
        let tip = stream_tip(stream.ticket_id)?;
        let actual = tip.version;
        if actual != stream.expected_version {
            return Err(LogError::VersionConflict {
                ticket_id: stream.ticket_id,
                expected: stream.expected_version,
                actual,
            });
        }
        if let Some(after) = stream.after
            && tip.last != Some(after)
        {
            return Err(LogError::BasisConflict { ticket_id: stream.ticket_id });
        }
        for (version, event) in (actual + 1..).zip(&stream.events) {
            position += 1;
            out.push(RecordedEvent {
                event_id: new_event_id(),
                version,
                position,
                recorded_at,
                actor: request.command.actor.clone(),
                command_id: request.command.id.clone(),
                correlation_id: request.correlation_id.clone(),
                causation_id: request.causation_id.clone(),
                imported: request.imported,
                event: event.clone(),
            });
        }
    }
    Ok(out)
}

/// A fresh uuid v7 event id, as every log engine mints them.
pub fn new_event_id() -> ticket_domain::EventId {
    ticket_domain::EventId::from_uuid(uuid::Uuid::now_v7())
}

/// The wall-clock instant an event is recorded at.
pub fn now() -> ticket_domain::Timestamp {
    ticket_domain::Timestamp::from(std::time::SystemTime::now())
}
