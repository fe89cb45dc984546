//! A log's group commits copied elsewhere before they are written (cluster mode, ADR 0015): the
//! engine hands each group, exactly as it stores it, to a [`Replicator`] first, and writes it
//! only once the replicator made it durable; another copy of the log applies the same groups in
//! order (`SledLog::apply_replicated`) and ends with the same records and hash chain.

use crate::LogError;

/// One group commit as the log stores it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ReplicaGroup {
    /// The position of the first record.
    pub first_position: u64,
    /// The stored records (`ticket.v1.LogRecord` bytes, hash chain included), in order.
    pub records: Vec<Vec<u8>>,
    /// The stored command records (`ticket.v1.CommandRecord` bytes) of the group's commands.
    pub commands: Vec<Vec<u8>>,
}

impl ReplicaGroup {
    /// The position of the last record (`first_position - 1` for an empty group).
    pub fn last_position(&self) -> u64 {
        (self.first_position + self.records.len() as u64).saturating_sub(1)
    }
}

/// Where a log's group commits go before the log writes them.
pub trait Replicator: Send + Sync + std::fmt::Debug {
    /// Makes `group` durable elsewhere, blocking (it runs on the log's writer thread). The log
    /// writes the group only after this returned `Ok`. An error fails every append of the group
    /// with that error, and the log accepts no more appends until it is reopened: after an error
    /// it cannot know what the other copy holds ([`LogError::NotOwner`]: another node appends
    /// there now).
    fn replicate(&self, group: &ReplicaGroup) -> Result<(), LogError>;
}
