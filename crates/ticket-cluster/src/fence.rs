//! The partitions' replicated log: one JetStream stream (`TICKETS_LOG`: file storage, R3 on a
//! three-server cluster), one subject per partition (`tickets.log.<partition>`), one message per
//! group commit of the partition's owner ([`pb::PartitionEntry`]).
//!
//! **The fence is in the log, not only in the lease.** An owner publishes every entry with
//! `Nats-Expected-Last-Subject-Sequence` set to the last sequence of its partition's subject
//! that it knows, so the stream takes an entry only directly after the one its publisher saw
//! last. A node that takes a partition over first appends a [`pb::Takeover`] the same way; from
//! then on an earlier owner's append, which expects an earlier sequence, is refused (error
//! 10071 "wrong last sequence", or 10164 while another append on the subject is still being
//! replicated), however long that owner was paused or cut off. Nothing depends on clocks.
//!
//! An append whose outcome is unknown (the acknowledgement timed out, the connection broke)
//! poisons the fence: the owner must take the partition again before it appends anything else.
//! The new takeover settles what the stream holds (everything before it is final, and the
//! owner reads back whether its group is there), as Temporal re-acquires a shard, bumping its
//! range id, after a write of unknown outcome (ADR 0015).

use std::time::Duration;

use async_nats::jetstream::{self, consumer, context::PublishErrorKind, message::PublishMessage, stream};
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use prost::Message as _;
use ticket_domain::{Partition, Partitions};
use ticket_proto::pb;
use tracing::{debug, info, warn};

/// How the log stream is named and kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogStreamConfig {
    /// The stream's name.
    pub name: String,
    /// Partition `p` appends on `<subject_prefix>.<p>`.
    pub subject_prefix: String,
    /// Replicas of every entry: 3 on a three-server cluster (an append is acknowledged once a
    /// majority stored it), 1 on a single server.
    pub replicas: usize,
    /// A read of the stream that receives nothing for this long fails instead of waiting.
    pub read_idle: Duration,
    /// Takeovers tried in a row before [`LogStream::take`] gives up because other nodes keep
    /// appending in between.
    pub take_attempts: u32,
    /// The cluster's partition count, when what opens the stream is a node of the cluster: the
    /// stream records it when it is created ([`PARTITIONS_METADATA`]), and a node configured with
    /// another count is refused ([`StreamError::PartitionCount`]). `None` opens the stream
    /// whatever count it records (readers that only follow or verify it).
    pub partitions: Option<Partitions>,
}

/// The key of the log stream's metadata recording the cluster's partition count: a ticket's
/// partition is its id's hash modulo the count, so nodes that disagreed on it would serve the
/// same ticket in two partitions.
pub const PARTITIONS_METADATA: &str = "ticketd.partitions";

impl Default for LogStreamConfig {
    fn default() -> Self {
        Self {
            name: "TICKETS_LOG".to_owned(),
            subject_prefix: "tickets.log".to_owned(),
            replicas: 1,
            read_idle: Duration::from_secs(10),
            take_attempts: 16,
            partitions: None,
        }
    }
}

impl LogStreamConfig {
    /// The stream as JetStream keeps it: every entry on file, replicated, never discarded,
    /// deleted or purged (the log is never truncated), duplicates of a publish id (a retried
    /// publish) dropped within two minutes.
    pub fn stream_config(&self) -> stream::Config {
        stream::Config {
            name: self.name.clone(),
            description: Some("ticketd's partitions' log (issue 14, ADR 0015)".to_owned()),
            subjects: vec![format!("{}.*", self.subject_prefix)],
            storage: stream::StorageType::File,
            num_replicas: self.replicas.max(1),
            retention: stream::RetentionPolicy::Limits,
            discard: stream::DiscardPolicy::New,
            deny_delete: true,
            deny_purge: true,
            duplicate_window: Duration::from_secs(120),
            metadata: self
                .partitions
                .map(|p| [(PARTITIONS_METADATA.to_owned(), p.count().to_string())].into())
                .unwrap_or_default(),
            ..Default::default()
        }
    }
}

/// A failure of the stream itself (not of one append's fence).
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error("the log stream: {what}: {detail}")]
    Nats { what: &'static str, detail: String },
    #[error("partition {partition}: other nodes kept appending while it was being taken over ({attempts} attempts)")]
    Contended { partition: Partition, attempts: u32 },
    #[error("partition {partition}: the entry at stream sequence {sequence} does not decode: {problem}")]
    Corrupt { partition: Partition, sequence: u64, problem: String },
    #[error("partition {partition}: nothing arrived for {idle:?} while reading up to stream sequence {upto}")]
    Stalled { partition: Partition, upto: u64, idle: Duration },
    /// The stream records another partition count than this node's: the node must not serve.
    #[error(
        "the log stream {stream} belongs to a cluster of {recorded} partitions, and this node is configured with {configured} (the count is fixed when a cluster is created; set [cluster] partitions = {recorded})"
    )]
    PartitionCount { stream: String, recorded: String, configured: u16 },
    /// The stream's metadata names no partition count that can be.
    #[error(
        "the log stream {stream} records {value:?} as its cluster's partition count, which is none (set it to the cluster's count: nats stream edit {stream} --metadata ticketd.partitions=N)"
    )]
    UnreadablePartitionCount { stream: String, value: String },
}

/// The partition number a subject under `prefix` names (`<prefix>.<number>`), if it names one.
fn subject_index(prefix: &str, subject: &str) -> Option<u64> {
    subject.strip_prefix(prefix)?.strip_prefix('.')?.parse().ok()
}

/// The partition count `value` of the stream's metadata says, if it is one.
fn recorded_count(stream: &str, value: &str) -> Result<u16, StreamError> {
    value
        .parse::<u64>()
        .ok()
        .and_then(|count| Partitions::new(count).ok())
        .map(Partitions::count)
        .ok_or_else(|| StreamError::UnreadablePartitionCount { stream: stream.to_owned(), value: value.to_owned() })
}

fn nats(what: &'static str) -> impl FnOnce(&dyn std::fmt::Display) -> StreamError {
    move |e| StreamError::Nats { what, detail: e.to_string() }
}

/// Why an owner's append did not land, or may not have.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AppendError {
    /// Another node appended to the partition after the entry this owner saw last (it took
    /// the partition over): this owner is deposed and must stop serving the partition.
    #[error("partition {partition}: deposed, another node appended after stream sequence {expected}{}", found.map(|f| format!(" (the partition's last is {f})")).unwrap_or_default())]
    Deposed { partition: Partition, expected: u64, found: Option<u64> },
    /// The append may or may not be in the stream (no acknowledgement came): the fence is
    /// poisoned until the partition is taken again.
    #[error("partition {partition}: the append's outcome is unknown ({detail}); the partition must be taken again")]
    Unknown { partition: Partition, detail: String },
    /// An earlier append's outcome is unknown: nothing more is appended until the partition is
    /// taken again.
    #[error("partition {partition}: an earlier append's outcome is unknown; the partition must be taken again")]
    Poisoned { partition: Partition },
    /// The stream refused the append for another reason (too large, no stream): it is not there.
    #[error("partition {partition}: the log stream refused the append: {detail}")]
    Refused { partition: Partition, detail: String },
}

/// The partitions' log stream.
#[derive(Debug, Clone)]
pub struct LogStream {
    js: jetstream::Context,
    stream: stream::Stream,
    config: LogStreamConfig,
}

impl LogStream {
    /// Opens the stream, creating it as `config` says if there is none. An existing stream is
    /// used as it is (a replica count differing from the configuration is reported), unless it
    /// records another partition count than `config.partitions`
    /// ([`StreamError::PartitionCount`]; one that records none is given the configured one).
    pub async fn ensure(js: jetstream::Context, config: LogStreamConfig) -> Result<Self, StreamError> {
        let mut stream =
            js.get_or_create_stream(config.stream_config()).await.map_err(|e| nats("create or open the stream")(&e))?;
        let existing = stream.info().await.map_err(|e| nats("read the stream's configuration")(&e))?.config.clone();
        if existing.num_replicas != config.replicas.max(1) {
            warn!(stream = %config.name, replicas = existing.num_replicas, configured = config.replicas, "the log stream has another replica count than configured; kept as it is");
        }
        if let Some(partitions) = config.partitions {
            let configured = partitions.count();
            let refused =
                |recorded: String| StreamError::PartitionCount { stream: config.name.clone(), recorded, configured };
            let recorded = match existing.metadata.get(PARTITIONS_METADATA) {
                Some(recorded) => recorded.clone(),
                None => {
                    // A stream created before the count was recorded: this node records its own,
                    // unless the stream holds entries of a partition beyond it.
                    let mut subjects = stream
                        .info_with_subjects(format!("{}.*", config.subject_prefix))
                        .await
                        .map_err(|e| nats("read the stream's subjects")(&e))?;
                    let mut highest: Option<u64> = None;
                    while let Some((subject, _)) =
                        subjects.try_next().await.map_err(|e| nats("read the stream's subjects")(&e))?
                    {
                        highest = highest.max(subject_index(&config.subject_prefix, &subject));
                    }
                    if let Some(highest) = highest.filter(|h| *h >= u64::from(configured)) {
                        return Err(refused(format!("at least {}", highest + 1)));
                    }
                    let mut updated = existing.clone();
                    updated.metadata.insert(PARTITIONS_METADATA.to_owned(), configured.to_string());
                    let info = js
                        .update_stream(updated)
                        .await
                        .map_err(|e| nats("record the partition count in the stream's metadata")(&e))?;
                    info!(stream = %config.name, partitions = configured, "the log stream now records the cluster's partition count");
                    info.config.metadata.get(PARTITIONS_METADATA).cloned().ok_or_else(|| StreamError::Nats {
                        what: "record the partition count in the stream's metadata",
                        detail: "the server kept no metadata (nats-server 2.10 or later keeps it)".to_owned(),
                    })?
                }
            };
            match recorded_count(&config.name, &recorded)? {
                recorded if recorded == configured => {}
                recorded => return Err(refused(recorded.to_string())),
            }
        }
        Ok(Self { js, stream, config })
    }

    /// Opens the stream as it is; an error if there is none (not a cluster's NATS).
    pub async fn open(js: jetstream::Context, config: LogStreamConfig) -> Result<Self, StreamError> {
        let stream = js.get_stream(&config.name).await.map_err(|e| nats("open the stream")(&e))?;
        Ok(Self { js, stream, config })
    }

    /// [`LogStream::ensure`], tried again until `within` has passed: a cluster of servers that
    /// just started elects its JetStream leaders first, and refuses until then.
    pub async fn ensure_within(
        js: jetstream::Context,
        config: LogStreamConfig,
        within: Duration,
    ) -> Result<Self, StreamError> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            match Self::ensure(js.clone(), config.clone()).await {
                Err(e) if tokio::time::Instant::now() < deadline => {
                    debug!(error = %e, "the log stream is not there yet");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                done => return done,
            }
        }
    }

    pub fn config(&self) -> &LogStreamConfig {
        &self.config
    }

    /// The subject partition `p` appends on.
    pub fn subject(&self, partition: Partition) -> String {
        format!("{}.{partition}", self.config.subject_prefix)
    }

    /// The stream sequence of the partition's last entry; 0 when it has none.
    pub async fn last(&self, partition: Partition) -> Result<u64, StreamError> {
        match self.stream.get_last_raw_message_by_subject(&self.subject(partition)).await {
            Ok(message) => Ok(message.sequence),
            Err(e) if e.kind() == stream::LastRawMessageErrorKind::NoMessageFound => Ok(0),
            Err(e) => Err(nats("read a partition's last entry")(&e)),
        }
    }

    /// The partition count the stream records ([`PARTITIONS_METADATA`]); `None` if it records
    /// none (created before the count was recorded, or by a reader); an error if it is not a
    /// partition count.
    pub async fn recorded_partitions(&self) -> Result<Option<u16>, StreamError> {
        let mut stream = self.stream.clone();
        let info = stream.info().await.map_err(|e| nats("read the stream's configuration")(&e))?;
        info.config.metadata.get(PARTITIONS_METADATA).map(|count| recorded_count(&self.config.name, count)).transpose()
    }

    /// The stream's last sequence, of any partition; 0 when it is empty.
    pub async fn last_of_all(&self) -> Result<u64, StreamError> {
        let mut stream = self.stream.clone();
        Ok(stream.info().await.map_err(|e| nats("read the stream's state")(&e))?.state.last_sequence)
    }

    /// Every partition's entries from stream sequence `from` on, as they are appended (an
    /// ordered consumer, which JetStream recreates past a lost message).
    pub async fn tail(&self, from: u64) -> Result<consumer::pull::Ordered, StreamError> {
        let consumer = self
            .stream
            .create_consumer(consumer::pull::OrderedConfig {
                filter_subject: format!("{}.*", self.config.subject_prefix),
                deliver_policy: consumer::DeliverPolicy::ByStartSequence { start_sequence: from.max(1) },
                ..Default::default()
            })
            .await
            .map_err(|e| nats("open a follower of the partitions")(&e))?;
        consumer.messages().await.map_err(|e| nats("follow the partitions")(&e))
    }

    /// The partition an entry's subject names, if it is one of `partitions`.
    pub fn partition_of(&self, subject: &str, partitions: ticket_domain::Partitions) -> Option<Partition> {
        // Only the subject the partition appends on (not `07` or `+7`).
        partitions.get(subject_index(&self.config.subject_prefix, subject)?).filter(|p| self.subject(*p) == subject)
    }

    /// The entry at stream sequence `sequence`, if there is one.
    pub async fn entry_at(&self, sequence: u64) -> Result<Option<pb::PartitionEntry>, StreamError> {
        if sequence == 0 {
            return Ok(None);
        }
        let message = match self.stream.get_raw_message(sequence).await {
            Ok(message) => message,
            Err(e) if e.kind() == stream::RawMessageErrorKind::NoMessageFound => return Ok(None),
            Err(e) => return Err(nats("read an entry")(&e)),
        };
        let entry = pb::PartitionEntry::decode(message.payload)
            .map_err(|e| StreamError::Nats { what: "decode an entry", detail: e.to_string() })?;
        Ok(Some(entry))
    }

    /// Takes the partition over for `node`: appends a [`pb::Takeover`] directly after the
    /// partition's last entry, retrying while other nodes append in between. Once it is
    /// acknowledged, every earlier owner is fenced off and every entry before it is final.
    pub async fn take(&self, partition: Partition, node: &str) -> Result<Fenced, StreamError> {
        let subject = self.subject(partition);
        let tenure = uuid::Uuid::now_v7().simple().to_string();
        for attempt in 1..=self.config.take_attempts.max(1) {
            let after = self.last(partition).await?;
            let entry = pb::PartitionEntry {
                kind: Some(pb::partition_entry::Kind::Takeover(pb::Takeover { node: node.to_owned(), after })),
            };
            let id = PublishId { node, tenure: &tenure, kind: "takeover", after };
            match publish(&self.js, &subject, partition, id, entry.encode_to_vec()).await {
                Ok(sequence) => {
                    info!(partition = partition.index(), node, after, sequence, attempt, "partition taken over");
                    return Ok(Fenced {
                        stream: self.clone(),
                        partition,
                        node: node.to_owned(),
                        tenure,
                        last: sequence,
                        poisoned: false,
                    });
                }
                // Someone appended after what was read: read again and take over after it, a
                // little later each time (and at a different moment than the other nodes).
                Err(e @ AppendError::Deposed { .. }) => {
                    debug!(partition = partition.index(), node, attempt, error = %e, "takeover raced; trying again");
                    tokio::time::sleep(backoff(attempt)).await;
                }
                // A takeover of unknown outcome is harmless (the next one goes after it), but the
                // stream is not answering: the caller tries again later.
                Err(AppendError::Refused { detail, .. } | AppendError::Unknown { detail, .. }) => {
                    return Err(StreamError::Nats { what: "append a takeover", detail });
                }
                Err(e @ AppendError::Poisoned { .. }) => {
                    return Err(StreamError::Nats { what: "append a takeover", detail: e.to_string() });
                }
            }
        }
        Err(StreamError::Contended { partition, attempts: self.config.take_attempts.max(1) })
    }

    /// Calls `each(sequence, entry)` for every entry of the partition with a stream sequence in
    /// `from..=upto`, in order; `upto` must be the sequence of one of the partition's entries
    /// (its last, or a takeover's). Fails if the stream goes quiet before `upto`.
    pub async fn read(
        &self,
        partition: Partition,
        from: u64,
        upto: u64,
        mut each: impl FnMut(u64, pb::PartitionEntry) -> Result<(), StreamError>,
    ) -> Result<(), StreamError> {
        let mut entries = self.entries(partition, from, upto).await?;
        while let Some((sequence, entry)) = entries.next().await? {
            each(sequence, entry)?;
        }
        Ok(())
    }

    /// The entries of the partition with a stream sequence in `from..=upto`, in order, read as
    /// they are asked for (see [`LogStream::read`]).
    pub async fn entries(&self, partition: Partition, from: u64, upto: u64) -> Result<Entries, StreamError> {
        let idle = self.config.read_idle;
        if from.max(1) > upto {
            return Ok(Entries { messages: None, partition, upto, idle });
        }
        let consumer = self
            .stream
            .create_consumer(consumer::pull::OrderedConfig {
                filter_subject: self.subject(partition),
                deliver_policy: consumer::DeliverPolicy::ByStartSequence { start_sequence: from.max(1) },
                ..Default::default()
            })
            .await
            .map_err(|e| nats("open a reader of a partition")(&e))?;
        let messages = consumer.messages().await.map_err(|e| nats("read a partition")(&e))?;
        Ok(Entries { messages: Some(messages), partition, upto, idle })
    }
}

/// A partition's entries up to a stream sequence, read one by one ([`LogStream::entries`]).
pub struct Entries {
    /// None once `upto` was read.
    messages: Option<consumer::pull::Ordered>,
    partition: Partition,
    upto: u64,
    idle: Duration,
}

impl std::fmt::Debug for Entries {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Entries").field("partition", &self.partition).field("upto", &self.upto).finish_non_exhaustive()
    }
}

impl Entries {
    /// The next entry with its stream sequence; None after `upto`.
    pub async fn next(&mut self) -> Result<Option<(u64, pb::PartitionEntry)>, StreamError> {
        let (partition, upto, idle) = (self.partition, self.upto, self.idle);
        let Some(messages) = self.messages.as_mut() else { return Ok(None) };
        let message = match tokio::time::timeout(idle, messages.next()).await {
            Ok(Some(Ok(message))) => message,
            Ok(Some(Err(e))) => return Err(nats("read a partition")(&e)),
            Ok(None) | Err(_) => return Err(StreamError::Stalled { partition, upto, idle }),
        };
        let sequence = message.info().map_err(|e| nats("read an entry's sequence")(&e))?.stream_sequence;
        if sequence >= upto {
            self.messages = None;
            if sequence > upto {
                return Ok(None);
            }
        }
        let entry = pb::PartitionEntry::decode(message.payload.as_ref()).map_err(|e| StreamError::Corrupt {
            partition,
            sequence,
            problem: e.to_string(),
        })?;
        Ok(Some((sequence, entry)))
    }
}

/// A partition taken over by this node: appends go directly after the last entry it knows.
#[derive(Debug)]
pub struct Fenced {
    stream: LogStream,
    partition: Partition,
    node: String,
    /// Unique to this takeover, in every publish id of it ([`PublishId`]).
    tenure: String,
    /// The stream sequence of the partition's last entry, as this owner knows it.
    last: u64,
    poisoned: bool,
}

impl Fenced {
    pub fn partition(&self) -> Partition {
        self.partition
    }

    pub fn node(&self) -> &str {
        &self.node
    }

    /// The stream sequence of the partition's last entry (this owner's takeover, or its last
    /// append).
    pub fn last(&self) -> u64 {
        self.last
    }

    /// Appends one group commit, fenced; returns its stream sequence once a majority of the
    /// stream's replicas stored it. One append at a time per partition (the stream refuses a
    /// second one on the subject while the first is being replicated).
    pub async fn append(&mut self, mut group: pb::PartitionGroup) -> Result<u64, AppendError> {
        if self.poisoned {
            return Err(AppendError::Poisoned { partition: self.partition });
        }
        group.node.clone_from(&self.node);
        let entry = pb::PartitionEntry { kind: Some(pb::partition_entry::Kind::Group(group)) };
        let subject = self.stream.subject(self.partition);
        let id = PublishId { node: &self.node, tenure: &self.tenure, kind: "group", after: self.last };
        match publish(&self.stream.js, &subject, self.partition, id, entry.encode_to_vec()).await {
            Ok(sequence) => {
                self.last = sequence;
                Ok(sequence)
            }
            Err(e) => {
                if matches!(e, AppendError::Unknown { .. }) {
                    self.poisoned = true;
                }
                Err(e)
            }
        }
    }
}

/// Up to 5 ms times the attempt, jittered.
fn backoff(attempt: u32) -> Duration {
    use std::hash::BuildHasher;
    let jitter = std::collections::hash_map::RandomState::new().hash_one(attempt) % 1000;
    Duration::from_micros(u64::from(attempt.min(20)) * 5 * jitter)
}

/// The publish id (`Nats-Msg-Id`) of an append: the stream drops a publish whose id it stored
/// in the last two minutes and answers it with the stored one's sequence, as if stored. So an
/// id names one publish only: the node, the takeover it belongs to (a fresh id per
/// [`LogStream::take`]), what it is, and the sequence it goes after. Node name and sequence alone
/// are not enough: a process replacing a paused one under the same node name takes the
/// partition over directly after the entry the paused one would append after, and the paused
/// one's append, once it resumes, would be answered as a duplicate of that takeover (a
/// replicated stream checks the id before the fence) and acknowledged without being stored.
#[derive(Debug, Clone, Copy)]
struct PublishId<'a> {
    node: &'a str,
    tenure: &'a str,
    kind: &'static str,
    after: u64,
}

impl std::fmt::Display for PublishId<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}:{}:{}", self.node, self.tenure, self.kind, self.after)
    }
}

/// Publishes `payload` on `subject` only directly after stream sequence `id.after` of that
/// subject. No other publish shares its id, so an answer "duplicate" is never this publish
/// stored: it is an unknown outcome.
async fn publish(
    js: &jetstream::Context,
    subject: &str,
    partition: Partition,
    id: PublishId<'_>,
    payload: Vec<u8>,
) -> Result<u64, AppendError> {
    let after = id.after;
    let message = PublishMessage::build()
        .payload(Bytes::from(payload))
        .expected_last_subject_sequence(after)
        .message_id(id.to_string());
    let acked = match js.send_publish(subject.to_owned(), message).await {
        Ok(ack) => ack.await,
        Err(e) => Err(e),
    };
    match acked {
        // The client sends a publish once (a publish buffered across a reconnection too), and no
        // other publish has its id: a duplicate cannot be this publish stored. Whatever it is,
        // the outcome of this one is not known.
        Ok(ack) if ack.duplicate => Err(AppendError::Unknown {
            partition,
            detail: format!("the stream answered publish {id} as a duplicate of its message {}", ack.sequence),
        }),
        Ok(ack) => Ok(ack.sequence),
        Err(e) => Err(classify(&e, partition, after)),
    }
}

/// What a failed publish means for the fence.
fn classify(e: &jetstream::context::PublishError, partition: Partition, expected: u64) -> AppendError {
    let server = std::error::Error::source(e).and_then(|s| s.downcast_ref::<jetstream::Error>());
    match e.kind() {
        PublishErrorKind::WrongLastSequence => {
            AppendError::Deposed { partition, expected, found: server.and_then(|s| found_sequence(&s.to_string())) }
        }
        // Another append on the subject is being replicated: not this owner's (it appends one
        // at a time), so another node's.
        PublishErrorKind::Other
            if server.is_some_and(|s| s.error_code() == jetstream::ErrorCode::STREAM_WRONG_LAST_SEQUENCE_CONSTANT) =>
        {
            AppendError::Deposed { partition, expected, found: None }
        }
        // The server answered with an error: nothing was stored.
        PublishErrorKind::Other if server.is_some() => AppendError::Refused { partition, detail: e.to_string() },
        PublishErrorKind::StreamNotFound
        | PublishErrorKind::MaxPayloadExceeded
        | PublishErrorKind::WrongLastMessageId
        | PublishErrorKind::MaxAckPending => AppendError::Refused { partition, detail: e.to_string() },
        PublishErrorKind::TimedOut | PublishErrorKind::BrokenPipe | PublishErrorKind::Other => {
            AppendError::Unknown { partition, detail: e.to_string() }
        }
    }
}

/// The sequence in "wrong last sequence: 42 (code 400, error code 10071)".
fn found_sequence(description: &str) -> Option<u64> {
    let rest = description.split("wrong last sequence:").nth(1)?;
    rest.trim_start().split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
}

#[cfg(test)]
mod tests;
