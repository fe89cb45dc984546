//! ticketd as a cluster on NATS JetStream (issue 14, ADR 0015).
//!
//! Tickets are divided among a fixed number of partitions ([`ticket_domain::Partitions`]); each
//! partition has one owner at a time, and every append of an owner goes to the partition's
//! subject of one replicated stream, fenced: [`fence`].

pub mod fence;
pub mod follow;
pub mod lease;
pub mod node;
pub mod partition_log;
pub mod placement;
pub mod status;
#[cfg(test)]
mod test_support;

pub use fence::{AppendError, Fenced, LogStream, LogStreamConfig, PARTITIONS_METADATA, StreamError};
pub use follow::{Copies, CopyState, FollowConfig, FollowError, Followers};
pub use lease::{BootInstant, Lease, LeaseConfig, LeaseError, LeaseWatch, Leases};
pub use node::{LogsOnly, NodeConfig, NodeError, NodeHandle, Owned, PartitionService, Serving, start, start_serving};
pub use partition_log::{CatchUpError, StreamReplicator, catch_up, catch_up_from, catch_up_remembered};
pub use placement::Placement;
pub use status::StatusSources;
