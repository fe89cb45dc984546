//! Who owns which partition: a lease per partition in a JetStream key-value bucket
//! (`TICKETS_LEASES`, replicated like the log), key `p<partition>`, value the owner's node name.
//!
//! - **Taken** with a create, which succeeds only while the key is absent (never held,
//!   released, or expired): of nodes racing for a partition, one gets it.
//! - **Renewed** with a compare-and-set on the revision the owner holds: it fails once anyone
//!   else wrote the key, so a lease never silently changes hands.
//! - **Expired** by the server: the bucket's `max_age` is the lease's time to live, and every
//!   renewal is a new revision whose age starts at zero, so a lease that is not renewed
//!   disappears on the servers' clock. No node's clock is trusted to decide who owns what.
//! - **Released** with a delete on the owner's revision, for a planned handover.
//!
//! A lease says who should own a partition, which keeps nodes from fighting over it; it is not
//! what makes an append safe. That is the fence in the log ([`crate::fence`]): a node that lost
//! its lease without noticing (paused past the time to live) is refused at its next append by
//! the new owner's takeover, whatever it believes about its lease.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_nats::jetstream::{self, kv};
use bytes::Bytes;
use ticket_domain::Partition;
use tracing::{debug, info};

/// How the leases are kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseConfig {
    pub bucket: String,
    /// A lease not renewed for this long expires.
    pub ttl: Duration,
    /// Replicas of the bucket: 3 on a three-server cluster.
    pub replicas: usize,
}

impl Default for LeaseConfig {
    fn default() -> Self {
        Self { bucket: "TICKETS_LEASES".to_owned(), ttl: Duration::from_secs(5), replicas: 1 }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LeaseError {
    /// Someone else wrote the partition's lease (it expired and was taken, or was released):
    /// this node no longer holds it.
    #[error("partition {partition}: the lease was lost{}", holder.as_ref().map(|h| format!(" (held by {h})")).unwrap_or_default())]
    Lost { partition: Partition, holder: Option<String> },
    #[error("the leases: {what}: {detail}")]
    Nats { what: &'static str, detail: String },
    /// The bucket is kept otherwise than this node is configured (its time to live): trying
    /// again does not help.
    #[error("the leases bucket: {0}")]
    Misconfigured(String),
}

fn nats(what: &'static str) -> impl FnOnce(&dyn std::fmt::Display) -> LeaseError {
    move |e| LeaseError::Nats { what, detail: e.to_string() }
}

/// A lease this node holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    partition: Partition,
    node: String,
    revision: u64,
    /// When this node last wrote it (its own [`BootInstant`]: the lease cannot have expired
    /// before `written + ttl` on the server, which received the write after this instant).
    written: BootInstant,
}

impl Lease {
    pub fn partition(&self) -> Partition {
        self.partition
    }

    pub fn node(&self) -> &str {
        &self.node
    }

    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// When this node last took or renewed it.
    pub fn written(&self) -> BootInstant {
        self.written
    }
}

/// An instant on the clock a lease's time to live is measured on here: time since the host
/// booted, counting the time it was suspended (`CLOCK_BOOTTIME` on Linux).
///
/// Not std's `Instant`: on Linux that is `CLOCK_MONOTONIC`, which stops while the host (or the
/// virtual machine) is suspended, while the servers, elsewhere, go on expiring the lease. A node
/// resumed after a suspension longer than the time to live would still believe its lease held
/// and answer as the owner from a state another node may have moved on from. The boot clock
/// counts the suspension, so the lease is seen to have lapsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct BootInstant(Duration);

impl BootInstant {
    pub fn now() -> Self {
        Self(boot_clock())
    }

    /// The time from `earlier` to this instant; zero if `earlier` is later.
    pub fn saturating_duration_since(self, earlier: BootInstant) -> Duration {
        self.0.saturating_sub(earlier.0)
    }

    pub fn checked_add(self, by: Duration) -> Option<Self> {
        self.0.checked_add(by).map(Self)
    }
}

impl std::ops::Add<Duration> for BootInstant {
    type Output = BootInstant;

    /// Saturates at the clock's end (centuries away) rather than overflow.
    fn add(self, by: Duration) -> BootInstant {
        Self(self.0.saturating_add(by))
    }
}

/// Time since boot, suspensions included.
#[cfg(any(target_os = "linux", target_os = "android"))]
fn boot_clock() -> Duration {
    let now = rustix::time::clock_gettime(rustix::time::ClockId::Boottime);
    Duration::new(u64::try_from(now.tv_sec).unwrap_or(0), u32::try_from(now.tv_nsec).unwrap_or(0))
}

/// Elsewhere, std's monotonic clock (since the first reading): what the platform offers without
/// a boot clock.
#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn boot_clock() -> Duration {
    static BASE: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    BASE.get_or_init(std::time::Instant::now).elapsed()
}

/// Until when this node may act as a partition's owner, on its own boot clock: its lease's
/// last write (taken before the request was sent) plus the time to live, less a margin for the
/// clocks' rates. No other node can hold the lease before then, since the servers expire it
/// only a time to live after they received the write. What the owner answers without appending
/// (a refusal decided on its state, a query) is sent only while this holds: a deposed owner
/// that has not noticed yet must not answer from a state that may be stale (an append is
/// refused by the fence anyway).
#[derive(Debug, Clone, Default)]
pub struct LeaseWatch {
    /// Nanoseconds on the boot clock ([`BootInstant`]); 0: not held.
    until: Arc<AtomicU64>,
}

fn nanos(at: BootInstant) -> u64 {
    u64::try_from(at.0.as_nanos()).unwrap_or(u64::MAX)
}

impl LeaseWatch {
    /// Whether the lease is certainly still this node's.
    pub fn held(&self) -> bool {
        self.held_at(BootInstant::now())
    }

    fn held_at(&self, now: BootInstant) -> bool {
        nanos(now) < self.until.load(Ordering::Acquire)
    }

    /// The lease was written at `written` and lives `ttl`.
    pub(crate) fn renewed(&self, written: BootInstant, ttl: Duration) {
        let margin = ttl / 8;
        let Some(until) = written.checked_add(ttl.saturating_sub(margin)) else {
            self.lapse();
            return;
        };
        self.until.store(nanos(until), Ordering::Release);
    }

    /// The lease is lost or given up.
    pub(crate) fn lapse(&self) {
        self.until.store(0, Ordering::Release);
    }
}

/// The partitions' leases.
#[derive(Debug, Clone)]
pub struct Leases {
    kv: kv::Store,
    config: LeaseConfig,
}

impl Leases {
    /// Opens the bucket, creating it if there is none.
    pub async fn ensure(js: &jetstream::Context, config: LeaseConfig) -> Result<Self, LeaseError> {
        let kv =
            expiring_bucket(js, &config.bucket, "ticketd's partition leases (ADR 0015)", config.ttl, config.replicas)
                .await
                .map_err(|e| nats("create the bucket")(&e))?;
        // The time to live is the cluster's: every node must renew within it, and a bucket
        // whose entries never expire would keep a dead node's partitions forever.
        let max_age = kv.status().await.map_err(|e| nats("read the bucket's configuration")(&e))?.max_age();
        if max_age != config.ttl {
            return Err(LeaseError::Misconfigured(format!(
                "its entries live {max_age:?} but this node renews for a time to live of {:?} (every node of a cluster uses the bucket's)",
                config.ttl
            )));
        }
        Ok(Self { kv, config })
    }

    pub fn config(&self) -> &LeaseConfig {
        &self.config
    }

    fn key(partition: Partition) -> String {
        format!("p{partition}")
    }

    /// The node holding the partition's lease, if any (with the lease's revision).
    pub async fn holder(&self, partition: Partition) -> Result<Option<(String, u64)>, LeaseError> {
        let entry = self.kv.entry(Self::key(partition)).await.map_err(|e| nats("read a lease")(&e))?;
        Ok(entry.filter(|e| e.operation == kv::Operation::Put).map(|e| {
            let node = String::from_utf8_lossy(&e.value).into_owned();
            (node, e.revision)
        }))
    }

    /// The node holding the partition's lease, if any, and when the lease expires unless renewed
    /// (by the servers' clock: its last write plus the time to live).
    pub async fn expiry(&self, partition: Partition) -> Result<Option<(String, ticket_domain::Timestamp)>, LeaseError> {
        let entry = self.kv.entry(Self::key(partition)).await.map_err(|e| nats("read a lease")(&e))?;
        Ok(entry.filter(|e| e.operation == kv::Operation::Put).map(|e| {
            let node = String::from_utf8_lossy(&e.value).into_owned();
            let written = ticket_domain::Timestamp::from_timestamp(e.created.unix_timestamp(), e.created.nanosecond())
                .unwrap_or_default();
            let ttl = chrono_ttl(self.config.ttl);
            (node, written + ttl)
        }))
    }

    /// Takes the partition's lease for `node` if nobody holds it; None if someone does.
    pub async fn acquire(&self, partition: Partition, node: &str) -> Result<Option<Lease>, LeaseError> {
        let written = BootInstant::now();
        match self.kv.create(Self::key(partition), Bytes::from(node.to_owned())).await {
            Ok(revision) => {
                info!(partition = partition.index(), node, revision, "lease acquired");
                Ok(Some(Lease { partition, node: node.to_owned(), revision, written }))
            }
            // Held (or two creates raced on a released key and the other one won).
            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => Ok(None),
            Err(e) => Err(nats("acquire a lease")(&e)),
        }
    }

    /// Renews a lease this node holds; [`LeaseError::Lost`] if anyone else wrote it since.
    pub async fn renew(&self, lease: &mut Lease) -> Result<(), LeaseError> {
        let written = BootInstant::now();
        match self.kv.update(Self::key(lease.partition), Bytes::from(lease.node.clone()), lease.revision).await {
            Ok(revision) => {
                debug!(partition = lease.partition.index(), revision, "lease renewed");
                lease.revision = revision;
                lease.written = written;
                Ok(())
            }
            Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => {
                let holder = self.holder(lease.partition).await.ok().flatten().map(|(node, _)| node);
                Err(LeaseError::Lost { partition: lease.partition, holder })
            }
            Err(e) => Err(nats("renew a lease")(&e)),
        }
    }

    /// The leases' changes from now on: a node watching for released ones takes them at once
    /// (see [`Leases::released`]).
    pub async fn watch(&self) -> Result<kv::Watch, LeaseError> {
        self.kv.watch_all().await.map_err(|e| nats("watch the leases")(&e))
    }

    /// The partition whose lease `change` (from [`Leases::watch`]) released, if it did: a
    /// delete, as [`Leases::release`] writes (an expiry is not seen).
    pub fn released(change: &kv::Entry, partitions: ticket_domain::Partitions) -> Option<Partition> {
        if change.operation == kv::Operation::Put {
            return None;
        }
        partitions.get(change.key.strip_prefix('p')?.parse().ok()?)
    }

    /// Gives a lease up (a planned handover): another node can take it at once.
    /// [`LeaseError::Lost`] if it was not this node's any more.
    pub async fn release(&self, lease: Lease) -> Result<(), LeaseError> {
        match self.kv.delete_expect_revision(Self::key(lease.partition), Some(lease.revision)).await {
            Ok(()) => {
                info!(partition = lease.partition.index(), node = %lease.node, "lease released");
                Ok(())
            }
            Err(e) if wrong_sequence(&e) => {
                let holder = self.holder(lease.partition).await.ok().flatten().map(|(node, _)| node);
                Err(LeaseError::Lost { partition: lease.partition, holder })
            }
            Err(e) => Err(nats("release a lease")(&e)),
        }
    }
}

/// The key-value bucket `bucket` (one value per key, on file, entries expiring after `ttl`),
/// created if there is none; an existing one is opened as it is.
pub(crate) async fn expiring_bucket(
    js: &jetstream::Context,
    bucket: &str,
    description: &str,
    ttl: Duration,
    replicas: usize,
) -> Result<kv::Store, jetstream::context::CreateKeyValueError> {
    if let Ok(kv) = js.get_key_value(bucket).await {
        return Ok(kv);
    }
    js.create_key_value(kv::Config {
        bucket: bucket.to_owned(),
        description: description.to_owned(),
        history: 1,
        max_age: ttl,
        storage: jetstream::stream::StorageType::File,
        num_replicas: replicas.max(1),
        ..Default::default()
    })
    .await
}

/// A write refused because the key's revision was not the one expected (somewhere in the
/// error's sources).
fn wrong_sequence(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(e);
    while let Some(s) = source {
        if let Some(publish) = s.downcast_ref::<jetstream::context::PublishError>()
            && publish.kind() == jetstream::context::PublishErrorKind::WrongLastSequence
        {
            return true;
        }
        if let Some(server) = s.downcast_ref::<jetstream::Error>()
            && [
                jetstream::ErrorCode::STREAM_WRONG_LAST_SEQUENCE,
                jetstream::ErrorCode::STREAM_WRONG_LAST_SEQUENCE_CONSTANT,
            ]
            .contains(&server.error_code())
        {
            return true;
        }
        source = s.source();
    }
    false
}

#[cfg(test)]
mod tests;

/// A time to live as a span of the domain's instants.
fn chrono_ttl(ttl: Duration) -> chrono::TimeDelta {
    chrono::TimeDelta::milliseconds(i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX))
}
