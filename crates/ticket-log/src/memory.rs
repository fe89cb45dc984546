//! An in-memory [`EventLog`] for fast unit tests: the same contract as the durable engines,
//! without durability.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use ticket_domain::{CommandId, RecordedEvent, TicketId};
use tokio::sync::watch;

use crate::{
    AppendOutcome, AppendRequest, AppendToken, CommandRecord, EventLog, LogError, SnapshotStore, StreamTip, now,
    stamp_events,
};

#[derive(Debug, Default)]
struct Inner {
    events: Vec<RecordedEvent>,
    /// Positions of each stream's events, in version order.
    streams: HashMap<TicketId, Vec<u64>>,
    commands: BTreeMap<u64, CommandRecord>,
    command_ids: HashMap<CommandId, u64>,
    /// The append that wrote each stream's last event.
    last_appends: HashMap<TicketId, AppendToken>,
    published: u64,
    published_sequence: u64,
}

#[derive(Debug, Clone)]
pub struct MemoryLog {
    inner: Arc<Mutex<Inner>>,
    head: Arc<watch::Sender<u64>>,
}

impl Default for MemoryLog {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryLog {
    pub fn new() -> Self {
        Self { inner: Arc::default(), head: Arc::new(watch::channel(0).0) }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave a half-applied append: appends build
        // everything first and then mutate with infallible operations.
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn events_at(inner: &Inner, first: u64, last: u64) -> Vec<RecordedEvent> {
        (first..=last).filter_map(|p| inner.events.get(usize::try_from(p - 1).ok()?).cloned()).collect()
    }

    fn append_now(&self, request: AppendRequest) -> Result<AppendOutcome, LogError> {
        let mut inner = self.lock();
        if let Some(first) = inner.command_ids.get(&request.command.id) {
            let record = &inner.commands[first];
            return Ok(AppendOutcome::Duplicate(Self::events_at(&inner, record.first_position, record.last_position)));
        }
        let head = inner.events.len() as u64;
        let events = stamp_events(&request, head, now(), |t| {
            Ok(StreamTip {
                version: inner.streams.get(&t).map_or(0, |v| v.len() as u64),
                last: inner.last_appends.get(&t).copied(),
            })
        })?;
        let (first, last) = (head + 1, head + events.len() as u64);
        for e in &events {
            inner.streams.entry(e.event.ticket_id).or_default().push(e.position);
            inner.last_appends.insert(e.event.ticket_id, request.token);
        }
        inner.events.extend(events.iter().cloned());
        inner.command_ids.insert(request.command.id.clone(), first);
        inner.commands.insert(
            first,
            CommandRecord {
                command: request.command,
                policy: request.policy,
                rules: request.rules,
                correlation_id: request.correlation_id,
                causation_id: request.causation_id,
                first_position: first,
                last_position: last,
            },
        );
        drop(inner);
        self.head.send_replace(last);
        Ok(AppendOutcome::Appended(events))
    }
}

impl EventLog for MemoryLog {
    fn append(
        &self,
        request: AppendRequest,
    ) -> impl std::future::Future<Output = Result<AppendOutcome, LogError>> + Send + 'static {
        // Applied at the call, so calls are ordered as made.
        std::future::ready(self.append_now(request))
    }

    fn stream_version(&self, ticket: TicketId) -> Result<u64, LogError> {
        Ok(self.lock().streams.get(&ticket).map_or(0, |v| v.len() as u64))
    }

    fn read_stream(&self, ticket: TicketId, from_version: u64) -> Result<Vec<RecordedEvent>, LogError> {
        let inner = self.lock();
        let Some(positions) = inner.streams.get(&ticket) else { return Ok(Vec::new()) };
        let skip = usize::try_from(from_version.saturating_sub(1)).unwrap_or(usize::MAX);
        Ok(positions.iter().skip(skip).flat_map(|p| Self::events_at(&inner, *p, *p)).collect())
    }

    fn read_from(&self, from: u64, limit: usize) -> Result<Vec<RecordedEvent>, LogError> {
        let inner = self.lock();
        let skip = usize::try_from(from.saturating_sub(1)).unwrap_or(usize::MAX);
        Ok(inner.events.iter().skip(skip).take(limit).cloned().collect())
    }

    fn head(&self) -> u64 {
        *self.head.borrow()
    }

    fn watch_head(&self) -> watch::Receiver<u64> {
        self.head.subscribe()
    }

    fn command(&self, id: &CommandId) -> Result<Option<CommandRecord>, LogError> {
        let inner = self.lock();
        Ok(inner.command_ids.get(id).map(|first| inner.commands[first].clone()))
    }

    fn commands_from(&self, from: u64, limit: usize) -> Result<Vec<CommandRecord>, LogError> {
        Ok(self.lock().commands.range(from..).take(limit).map(|(_, c)| c.clone()).collect())
    }

    fn outbox_pending(&self, limit: usize) -> Result<Vec<u64>, LogError> {
        let inner = self.lock();
        Ok((inner.published + 1..=inner.events.len() as u64).take(limit).collect())
    }

    fn mark_published(&self, up_to: u64) -> Result<(), LogError> {
        let mut inner = self.lock();
        let head = inner.events.len() as u64;
        inner.published = inner.published.max(up_to.min(head));
        Ok(())
    }

    fn rewind_published(&self, to: u64) -> Result<(), LogError> {
        let mut inner = self.lock();
        inner.published = inner.published.min(to);
        Ok(())
    }

    fn published_sequence(&self) -> Result<u64, LogError> {
        Ok(self.lock().published_sequence)
    }

    fn set_published_sequence(&self, sequence: u64) -> Result<(), LogError> {
        self.lock().published_sequence = sequence;
        Ok(())
    }

    fn published(&self) -> Result<u64, LogError> {
        Ok(self.lock().published)
    }
}

/// In-memory snapshots, for tests.
#[derive(Debug, Default, Clone)]
pub struct MemorySnapshots {
    inner: Arc<Mutex<HashMap<TicketId, Vec<u8>>>>,
}

impl SnapshotStore for MemorySnapshots {
    fn load(&self, ticket: TicketId) -> Result<Option<Vec<u8>>, LogError> {
        Ok(self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get(&ticket).cloned())
    }

    fn save(&self, ticket: TicketId, bytes: Vec<u8>) -> Result<(), LogError> {
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(ticket, bytes);
        Ok(())
    }
}

#[cfg(test)]
mod tests;
