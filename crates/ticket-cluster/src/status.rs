//! The cluster's status (`tickets.admin.cluster`, `ticketctl cluster status`): each partition's
//! owner and lease expiry, its last entry in the log stream and the log position that entry
//! reaches, and how much of it the event stream has (the shared published watermark).

use async_nats::jetstream::kv;
use futures::TryStreamExt;
use ticket_domain::{Partition, Partitions};
use ticket_proto::pb;

use crate::fence::LogStream;
use crate::lease::Leases;
use crate::placement::Placement;

/// What the status is read from.
#[derive(Debug, Clone)]
pub struct StatusSources {
    pub partitions: Partitions,
    pub stream: LogStream,
    pub leases: Leases,
    /// The live nodes' bucket.
    pub nodes: kv::Store,
    /// The partitions' published watermarks (key `p<n>`), if the cluster publishes events.
    pub watermarks: Option<kv::Store>,
    /// Where operators placed partitions.
    pub placement: Placement,
}

impl StatusSources {
    /// Reads the whole cluster's status.
    pub async fn read(&self) -> Result<pb::ClusterStatus, String> {
        let mut partitions = Vec::new();
        for partition in self.partitions.all() {
            partitions.push(self.partition(partition).await?);
        }
        let nodes = self.live_nodes().await?;
        let lease_ttl_seconds = self.leases.config().ttl.as_secs();
        Ok(pb::ClusterStatus { partitions, nodes, lease_ttl_seconds })
    }

    /// The nodes saying they are alive, by name.
    pub async fn live_nodes(&self) -> Result<Vec<String>, String> {
        let keys = self.nodes.keys().await.map_err(|e| e.to_string())?;
        let mut nodes: Vec<String> = keys.try_collect().await.map_err(|e| e.to_string())?;
        nodes.sort();
        Ok(nodes)
    }

    async fn partition(&self, partition: Partition) -> Result<pb::PartitionStatus, String> {
        let lease = self.leases.expiry(partition).await.map_err(|e| e.to_string())?;
        let stream_sequence = self.stream.last(partition).await.map_err(|e| e.to_string())?;
        let head = self.head(stream_sequence).await?;
        let published = match &self.watermarks {
            Some(store) => match store.get(format!("p{partition}")).await.map_err(|e| e.to_string())? {
                Some(value) => String::from_utf8_lossy(&value).trim().parse::<u64>().unwrap_or(0),
                None => 0,
            },
            None => 0,
        };
        let (owner, lease_expires_at) = match lease {
            Some((owner, expires)) => (owner, Some(ticket_proto::wire::timestamp(&expires))),
            None => (String::new(), None),
        };
        Ok(pb::PartitionStatus {
            partition: u32::from(partition.index()),
            owner,
            lease_expires_at,
            stream_sequence,
            head,
            published,
            outbox_lag: head.saturating_sub(published),
            placed_on: self.placement.of(partition).await.map_err(|e| e.to_string())?.unwrap_or_default(),
        })
    }

    /// The log position the partition's entries up to `sequence` reach: the end of its last
    /// group (takeovers hold no records: the entry each took over after is read instead).
    async fn head(&self, mut sequence: u64) -> Result<u64, String> {
        while let Some(entry) = self.stream.entry_at(sequence).await.map_err(|e| e.to_string())? {
            match entry.kind {
                Some(pb::partition_entry::Kind::Group(group)) => {
                    return Ok((group.first_position + group.records.len() as u64).saturating_sub(1));
                }
                Some(pb::partition_entry::Kind::Takeover(takeover)) if takeover.after < sequence => {
                    sequence = takeover.after;
                }
                Some(pb::partition_entry::Kind::Takeover(_)) | None => return Ok(0),
            }
        }
        Ok(0)
    }
}
