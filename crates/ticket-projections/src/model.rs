use serde::Serialize;
use serde::de::DeserializeOwned;
use ticket_domain::RecordedEvent;

/// A read model: a pure fold over the log's events. It is state that can be rebuilt from the
/// log at any time, so it is checkpointed with bincode (ADR 0004), never stored as the truth.
pub trait ReadModel: Default + Clone + Serialize + DeserializeOwned + Send + Sync + 'static {
    /// The projection's name: its checkpoint file and its label in lag reports.
    const NAME: &'static str;
    /// Bump when the model's shape changes: older checkpoints are then rebuilt.
    const FORMAT: u32;

    /// Applies one event; events arrive in log order, each once.
    fn apply(&mut self, event: &RecordedEvent);
}

/// A read model and the position of the last event it applied.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Projected<M> {
    position: u64,
    model: M,
}

impl<M: ReadModel> Projected<M> {
    pub fn new() -> Self {
        Self::default()
    }

    /// The last position applied (0: none).
    pub fn position(&self) -> u64 {
        self.position
    }

    pub fn model(&self) -> &M {
        &self.model
    }

    /// Applies an event after the applied position; an earlier one is ignored.
    pub fn apply(&mut self, event: &RecordedEvent) -> bool {
        if event.position <= self.position {
            return false;
        }
        self.model.apply(event);
        self.position = event.position;
        true
    }
}
