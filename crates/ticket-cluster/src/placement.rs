//! Where operators placed partitions (`ticketctl cluster move`, ADR 0015): the bucket
//! `TICKETS_PLACEMENT`, one key `p<n>` per placed partition naming its node. Entries never
//! expire: a placement stays until the partition is moved again.
//!
//! The nodes follow it (see [`crate::node`]): the owner of a partition placed on another live
//! node hands it over at once; the others leave it to that node, which takes it beyond its fair
//! share; a placement on a node that is not live is not waited for.

use std::collections::BTreeMap;

use async_nats::jetstream::{self, kv};
use bytes::Bytes;
use ticket_domain::{Partition, Partitions};

use crate::lease::LeaseError;

/// The partitions' placements.
#[derive(Debug, Clone)]
pub struct Placement {
    kv: kv::Store,
}

fn nats(what: &'static str) -> impl FnOnce(&dyn std::fmt::Display) -> LeaseError {
    move |e| LeaseError::Nats { what, detail: e.to_string() }
}

impl Placement {
    /// Opens the bucket `bucket`, creating it (on file, `replicas` copies) if there is none.
    pub async fn ensure(js: &jetstream::Context, bucket: &str, replicas: usize) -> Result<Self, LeaseError> {
        if let Ok(kv) = js.get_key_value(bucket).await {
            return Ok(Self { kv });
        }
        let kv = js
            .create_key_value(kv::Config {
                bucket: bucket.to_owned(),
                description: "ticketd's partitions placed by operators (ADR 0015)".to_owned(),
                history: 1,
                storage: jetstream::stream::StorageType::File,
                num_replicas: replicas.max(1),
                ..Default::default()
            })
            .await
            .map_err(|e| nats("create the placement bucket")(&e))?;
        Ok(Self { kv })
    }

    fn key(partition: Partition) -> String {
        format!("p{partition}")
    }

    /// Places `partition` on `node`.
    pub async fn place(&self, partition: Partition, node: &str) -> Result<(), LeaseError> {
        self.kv
            .put(Self::key(partition), Bytes::from(node.to_owned()))
            .await
            .map_err(|e| nats("place a partition")(&e))?;
        Ok(())
    }

    /// Drops the placement of `partition` (the partition is then balanced like any other).
    pub async fn clear(&self, partition: Partition) -> Result<(), LeaseError> {
        self.kv.delete(Self::key(partition)).await.map_err(|e| nats("drop a placement")(&e))
    }

    /// The node `partition` is placed on, if any.
    pub async fn of(&self, partition: Partition) -> Result<Option<String>, LeaseError> {
        let entry = self.kv.entry(Self::key(partition)).await.map_err(|e| nats("read a placement")(&e))?;
        Ok(entry.filter(|e| e.operation == kv::Operation::Put).map(|e| String::from_utf8_lossy(&e.value).into_owned()))
    }

    /// Every placement now, then each change as it comes.
    pub async fn watch(&self) -> Result<kv::Watch, LeaseError> {
        self.kv.watch_with_history(">").await.map_err(|e| nats("watch the placements")(&e))
    }

    /// Applies a change from [`Placement::watch`] to `placed`; the partition it concerns.
    pub fn apply(
        change: &kv::Entry,
        partitions: Partitions,
        placed: &mut BTreeMap<Partition, String>,
    ) -> Option<Partition> {
        let partition = partitions.get(change.key.strip_prefix('p')?.parse().ok()?)?;
        match change.operation {
            kv::Operation::Put => placed.insert(partition, String::from_utf8_lossy(&change.value).into_owned()),
            kv::Operation::Delete | kv::Operation::Purge => placed.remove(&partition),
        };
        Some(partition)
    }
}
