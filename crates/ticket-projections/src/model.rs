use std::sync::Arc;

use ticket_domain::RecordedEvent;
use ticket_log::{StateBatch, StateSpace};
use tracing::{info, warn};

use crate::History;
use crate::rows::StateError;

/// A read model: a pure fold over the log's events. It is state that can be rebuilt from the
/// log at any time: with a state space it keeps its rows there incrementally (live rows in
/// memory, dormant ones on disk, see `rows.rs`), without one everything stays in memory.
pub trait ReadModel: Send + Sync + Sized + 'static {
    /// The projection's name: its state space and its label in lag reports.
    const NAME: &'static str;
    /// Bump when the model's stored shape changes: older state is then cleared and rebuilt.
    const FORMAT: u32;

    /// An empty model keeping its rows in `space` (or in memory without one).
    fn empty(space: Option<Arc<dyn StateSpace>>) -> Self;

    /// The model stored in `space` (its live rows loaded into memory).
    fn load(space: Arc<dyn StateSpace>) -> Result<Self, StateError>;

    /// Applies one event; events arrive in log order, each once.
    fn apply(&mut self, event: &RecordedEvent);

    /// Adds what changed since the last flush to `batch`.
    fn write(&self, batch: &mut StateBatch) -> Result<(), StateError>;

    /// The batch of [`ReadModel::write`] was applied: forget what changed, let dormant rows go.
    fn written(&mut self);

    /// Rows and records changed since the last flush.
    fn dirty(&self) -> usize;

    /// Rows held in memory.
    fn live_rows(&self) -> usize;

    /// The log's streams, for a model that gets resting rows back from them rather than keeping
    /// them (by default a model keeps all its rows and ignores it).
    fn set_history(&mut self, _history: Arc<dyn History>) {}

    /// What [`ReadModel::set_history`] gave.
    fn history(&self) -> Option<Arc<dyn History>> {
        None
    }

    /// Why a stored row could not be read while an event was applied, if one could not: the
    /// model is wrong from that event on, so it applies nothing more and is never flushed (its
    /// store keeps its last flush, from which the next start goes on, and a rebuild of the model
    /// clears it); the other models go on. Its lag shows it stopped.
    fn unreadable(&self) -> Option<&str> {
        None
    }
}

/// The meta keys of a model's space.
const POSITION_KEY: &[u8] = b"m:position";
const FORMAT_KEY: &[u8] = b"m:format";
/// The layout of the spaces themselves (`rows.rs`), beside each model's own format.
const LAYOUT: u32 = 1;

fn format_of<M: ReadModel>() -> Vec<u8> {
    let mut format = LAYOUT.to_be_bytes().to_vec();
    format.extend_from_slice(&M::FORMAT.to_be_bytes());
    format
}

/// A read model and the position of the last event it applied; with a state space, the position
/// it was last flushed at.
#[derive(Debug)]
pub struct Projected<M> {
    position: u64,
    model: M,
    space: Option<Arc<dyn StateSpace>>,
    flushed: u64,
}

impl<M: ReadModel> Default for Projected<M> {
    fn default() -> Self {
        Self::new()
    }
}

impl<M: ReadModel> Projected<M> {
    /// An empty model in memory.
    pub fn new() -> Self {
        Self { position: 0, model: M::empty(None), space: None, flushed: 0 }
    }

    /// An empty model stored in `space` (the space must be empty: see [`Projected::open`]).
    pub fn stored(space: Arc<dyn StateSpace>) -> Self {
        Self { position: 0, model: M::empty(Some(space.clone())), space: Some(space), flushed: 0 }
    }

    /// The model stored in `space`, if it is of this format and not ahead of the log's `head`;
    /// anything else (another format, state that does not decode, a store that fails) is
    /// cleared, to be rebuilt from the log. Never fails on stored state.
    pub fn open(space: Arc<dyn StateSpace>, head: u64) -> Self {
        match Self::restore(&space, head) {
            Ok(Some(projected)) => {
                info!(projection = M::NAME, position = projected.position, "projection resumed from the state store");
                return projected;
            }
            Ok(None) => {}
            Err(e) => warn!(projection = M::NAME, error = %e, "stored projection unusable; rebuilding from the log"),
        }
        if let Err(e) = space.clear() {
            warn!(projection = M::NAME, error = %e, "stored projection could not be cleared");
        }
        Self::stored(space)
    }

    fn restore(space: &Arc<dyn StateSpace>, head: u64) -> Result<Option<Self>, StateError> {
        let Some(format) = space.get(FORMAT_KEY)? else {
            if space.count()? > 0 {
                warn!(projection = M::NAME, "stored projection without a format; rebuilding from the log");
            }
            return Ok(None);
        };
        if format != format_of::<M>() {
            warn!(
                projection = M::NAME, stored = ?format, expected = ?format_of::<M>(),
                "stored projection of another format; rebuilding from the log"
            );
            return Ok(None);
        }
        let position = match space.get(POSITION_KEY)? {
            Some(bytes) => u64::from_be_bytes(
                bytes.as_slice().try_into().map_err(|_| StateError::Decode("position is not 8 bytes".to_owned()))?,
            ),
            None => 0,
        };
        if position > head {
            warn!(projection = M::NAME, position, head, "stored projection is ahead of the log; rebuilding");
            return Ok(None);
        }
        let model = M::load(space.clone())?;
        Ok(Some(Self { position, model, space: Some(space.clone()), flushed: position }))
    }

    /// The last position applied (0: none).
    pub fn position(&self) -> u64 {
        self.position
    }

    pub fn model(&self) -> &M {
        &self.model
    }

    /// Gives the model the log's streams (see [`ReadModel::set_history`]).
    pub fn set_history(&mut self, history: Arc<dyn History>) {
        self.model.set_history(history);
    }

    /// Applies an event after the applied position; an earlier one is ignored.
    pub fn apply(&mut self, event: &RecordedEvent) -> bool {
        if event.position <= self.position || self.model.unreadable().is_some() {
            return false;
        }
        self.model.apply(event);
        if let Some(problem) = self.model.unreadable() {
            tracing::error!(
                model = M::NAME,
                position = event.position,
                problem,
                "a stored row could not be read: this read model stops before this event, unflushed (the next start goes on from its last flush)"
            );
            return false;
        }
        self.position = event.position;
        true
    }

    /// Why the model stopped (see [`ReadModel::unreadable`]), if it did.
    pub fn unreadable(&self) -> Option<&str> {
        self.model.unreadable()
    }

    /// Changes not yet flushed.
    pub fn unflushed(&self) -> bool {
        self.space.is_some() && (self.position != self.flushed || self.model.dirty() > 0)
    }

    /// Writes what changed, with the position and the format, as one atomic batch to the space
    /// (durable at the store's next sync). Nothing without a space.
    pub fn flush(&mut self) -> Result<(), StateError> {
        let Some(space) = &self.space else { return Ok(()) };
        if self.model.unreadable().is_some() {
            // Said when it stopped: the store keeps its last flush, the other models go on.
            return Ok(());
        }
        if !self.unflushed() {
            return Ok(());
        }
        let mut batch = StateBatch::new();
        self.model.write(&mut batch)?;
        batch.insert(POSITION_KEY.to_vec(), self.position.to_be_bytes().to_vec());
        batch.insert(FORMAT_KEY.to_vec(), format_of::<M>());
        space.apply(batch)?;
        self.model.written();
        self.flushed = self.position;
        Ok(())
    }

    /// Empties the model (and its space): a rebuild from nothing.
    pub fn clear(&mut self) -> Result<(), StateError> {
        let history = self.model.history();
        *self = match &self.space {
            Some(space) => {
                space.clear()?;
                Self::stored(space.clone())
            }
            None => Self::new(),
        };
        if let Some(history) = history {
            self.model.set_history(history);
        }
        Ok(())
    }
}
