//! The outbox publisher: drains the log's outbox into a JetStream stream, in log order.
//!
//! - Each event is published on `tickets.events.<ticket_id>.<event_type>` with `Nats-Msg-Id` = its
//!   event id and headers for its type, ticket version and global position.
//! - Events are published in log order, so the stream holds them in that order (and so in order
//!   per ticket): a run of events goes as one atomic batch (NATS server 2.12+, `allow_atomic` on
//!   the stream: one replicated write for the run, stored whole and in order or not at all), each
//!   after the previous one's acknowledgement. An event with a paging copy to send goes alone,
//!   and so does every event for a while after a failed round (a batch holding an event the
//!   stream already has is refused whole). A position is marked published only after its
//!   acknowledgement.
//! - At start and after any failure, the publisher reads the position of the stream's last message
//!   and moves the published watermark there: an event whose acknowledgement was lost is not
//!   published again, however long the outage. Publishing with the same `Nats-Msg-Id` is a second
//!   guard (the stream's duplicate window).
//! - Single-node ticketd is the stream's only writer: every publish (every batch's first message)
//!   goes only directly after the stream sequence of the last one (`Nats-Expected-Last-Sequence`),
//!   and the log records that sequence. A stream whose last sequence went below it lost messages
//!   it had acknowledged (recreated, or restored from an older copy, while ticketd ran or not):
//!   the watermark moves back to the stream's last event and what it lost is published again. A
//!   purge or a delete keeps the stream's sequence, and is not undone.
//! - A breach is also published, just before its event, on `tickets.sla.breached.<severity>`
//!   (`A`, `B`, `C`), so that a paging system can subscribe to severity A alone. These copies go
//!   to their own stream (`TICKETS_SLA`), so that a consumer of the whole event stream
//!   (`TICKETS`, `tickets.events.>` only) sees each event once. A copy carries the same envelope,
//!   `Nats-Msg-Id` = `<event id>:sla` and the header `Ticket-Copy: sla-breached`. A position
//!   counts as published only once its event (after the copy) is acknowledged; reconciling reads
//!   the last position of each stream, so a copy that reached its stream before a failure is not
//!   sent again, and one that did not is.
//! - A `TICKETS` stream created by an older ticketd also captured `tickets.sla.>`: at start its
//!   subjects are set to the event subjects only and the copies it holds are purged from it
//!   (each is a duplicate of an event it keeps).
//! - While NATS is unreachable, appends go on and the outbox grows; the publisher retries with
//!   backoff and drains in order once NATS is back.

use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::{self, kv, stream};
use ticket_domain::{EventKind, RecordedEvent};
use ticket_log::{EventLog, LogError};
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{debug, info, warn};

/// Header: the event type (`opened`, `sla_breached`, ...).
pub const HEADER_EVENT_TYPE: &str = "Ticket-Event-Type";
/// Header: the event's version in its ticket's stream.
pub const HEADER_VERSION: &str = "Ticket-Version";
/// Header: the event's global position in the log.
pub const HEADER_POSITION: &str = "Ticket-Position";
/// Header on a copy of an event published on another subject (`sla-breached`).
pub const HEADER_COPY: &str = "Ticket-Copy";
const COPY_SLA_BREACHED: &str = "sla-breached";

#[derive(Debug, Clone)]
pub struct PublisherConfig {
    /// The JetStream stream of the events (default `TICKETS`).
    pub stream: String,
    /// The JetStream stream of the breaches' paging copies (default `TICKETS_SLA`).
    pub breach_stream: String,
    /// Events go to `<subject_prefix>.<ticket_id>.<event_type>` (default `tickets.events`).
    pub subject_prefix: String,
    /// Breaches are also published on `<breach_subject_prefix>.<severity>` (default
    /// `tickets.sla.breached`).
    pub breach_subject_prefix: String,
    /// How long JetStream remembers message ids to drop duplicates.
    pub duplicate_window: Duration,
    /// Replicas of the stream (1 on a single server, 3 on a cluster).
    pub replicas: usize,
    /// Events read from the outbox per round.
    pub batch: usize,
    /// The longest wait between retries while NATS is unreachable.
    pub max_backoff: Duration,
    /// How long the publisher waits for more events before a round that is not a backlog: when
    /// new events arrive after it drained the outbox, and after a round that published less
    /// than `batch`. More of them go in one batch (one replicated write in cluster mode), and
    /// reach downstream up to this much later.
    pub linger: Duration,
    /// Cluster mode: how often, at most, the published watermark is shared (a compare-and-set
    /// in the watermarks' bucket). A next owner sends again what was published after the last
    /// share, dropped by the stream as duplicates (`Nats-Msg-Id`).
    pub share_every: Duration,
}

impl Default for PublisherConfig {
    fn default() -> Self {
        Self {
            stream: "TICKETS".into(),
            breach_stream: "TICKETS_SLA".into(),
            subject_prefix: "tickets.events".into(),
            breach_subject_prefix: "tickets.sla.breached".into(),
            duplicate_window: Duration::from_secs(2 * 60 * 60),
            replicas: 1,
            batch: 512,
            max_backoff: Duration::from_secs(2),
            linger: Duration::ZERO,
            share_every: Duration::from_millis(250),
        }
    }
}

impl PublisherConfig {
    /// The event stream's settings: file storage, limits retention (events are kept; consumers
    /// track their own position), the event subjects, the duplicate window, the replicas.
    pub fn stream_config(&self) -> stream::Config {
        self.config_of(&self.stream, &self.subject_prefix)
    }

    /// The paging copies' stream: the same settings on the breach subjects.
    pub fn breach_stream_config(&self) -> stream::Config {
        self.config_of(&self.breach_stream, &self.breach_subject_prefix)
    }

    fn config_of(&self, name: &str, prefix: &str) -> stream::Config {
        stream::Config {
            name: name.to_owned(),
            subjects: vec![format!("{prefix}.>")],
            storage: stream::StorageType::File,
            retention: stream::RetentionPolicy::Limits,
            duplicate_window: self.duplicate_window,
            num_replicas: self.replicas,
            allow_atomic_publish: true,
            ..Default::default()
        }
    }

    pub fn subject(&self, event: &RecordedEvent) -> String {
        format!("{}.{}.{}", self.subject_prefix, event.event.ticket_id, event.event.kind.name())
    }

    /// The breach subject of an event, for breaches only.
    pub fn breach_subject(&self, event: &RecordedEvent) -> Option<String> {
        let EventKind::SlaBreached { severity, .. } = &event.event.kind else {
            return None;
        };
        Some(format!("{}.{severity}", self.breach_subject_prefix))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("log: {0}")]
    Log(#[from] LogError),
    #[error("jetstream: {0}")]
    JetStream(String),
}

fn js_error(e: impl std::fmt::Display) -> PublishError {
    PublishError::JetStream(e.to_string())
}

/// Creates both streams, or updates them to the configured settings. The event stream goes
/// first: one created by an older ticketd also captured the breach subjects, which the copies'
/// stream cannot take while it does; the copies it holds are purged from it.
pub async fn ensure_stream(js: &jetstream::Context, config: &PublisherConfig) -> Result<(), PublishError> {
    ensure_streams(js, config).await.map(drop)
}

/// [`ensure_stream`]; returns whether the event stream, as the server answered, takes atomic
/// batches (`allow_atomic`: a server older than 2.12 ignores it).
async fn ensure_streams(js: &jetstream::Context, config: &PublisherConfig) -> Result<bool, PublishError> {
    let breach_subjects = format!("{}.>", config.breach_subject_prefix);
    let older = match js.get_stream(&config.stream).await {
        Ok(mut stream) => {
            let older = stream.info().await.map_err(js_error)?.config.subjects.contains(&breach_subjects);
            older.then_some(stream)
        }
        Err(e) => match e.kind() {
            jetstream::context::GetStreamErrorKind::JetStream(error)
                if error.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND =>
            {
                None
            }
            jetstream::context::GetStreamErrorKind::EmptyName
            | jetstream::context::GetStreamErrorKind::Request
            | jetstream::context::GetStreamErrorKind::InvalidStreamName
            | jetstream::context::GetStreamErrorKind::JetStream(_) => return Err(js_error(e)),
        },
    };
    // Purged while the stream still takes their subjects: the server purges only those.
    if let Some(stream) = older {
        let purged = stream.purge().filter(breach_subjects).await.map_err(js_error)?.purged;
        info!(
            stream = %config.stream,
            purged,
            "the event stream no longer takes the breach copies (they have their own stream); its copies purged"
        );
    }
    let events = js.create_or_update_stream(config.stream_config()).await.map_err(js_error)?;
    debug!(stream = %config.stream, subjects = ?events.config.subjects, "event stream ready");
    js.create_or_update_stream(config.breach_stream_config()).await.map_err(js_error)?;
    Ok(events.config.allow_atomic_publish)
}

/// What the streams hold, as positions of the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamPositions {
    /// The position of the last event in the event stream (0: none).
    pub events: u64,
    /// The position of the last paging copy in the copies' stream (0: none).
    pub copies: u64,
}

/// The position of the last event the event stream holds (0 when it holds none).
pub async fn last_published_position(js: &jetstream::Context, config: &PublisherConfig) -> Result<u64, PublishError> {
    Ok(stream_positions(js, config).await?.events)
}

/// The positions of the last event and of the last paging copy the streams hold.
pub async fn stream_positions(
    js: &jetstream::Context,
    config: &PublisherConfig,
) -> Result<StreamPositions, PublishError> {
    let events = last_position(js, &config.stream, &format!("{}.>", config.subject_prefix)).await?;
    let copies = last_position(js, &config.breach_stream, &format!("{}.>", config.breach_subject_prefix)).await?;
    Ok(StreamPositions { events, copies })
}

/// The `Ticket-Position` of the last message on `subjects` in `stream` (0 when there is none).
/// Read by subject, not by the stream's last sequence: purged messages keep their sequences.
async fn last_position(js: &jetstream::Context, stream: &str, subjects: &str) -> Result<u64, PublishError> {
    let stream = js.get_stream(stream).await.map_err(js_error)?;
    let message = match stream.get_last_raw_message_by_subject(subjects).await {
        Ok(message) => message,
        Err(e) if e.kind() == stream::LastRawMessageErrorKind::NoMessageFound => return Ok(0),
        Err(e) => return Err(js_error(e)),
    };
    message.headers.get(HEADER_POSITION).and_then(|v| v.as_str().parse().ok()).ok_or_else(|| {
        PublishError::JetStream(format!("stream message {} has no {HEADER_POSITION} header", message.sequence))
    })
}

/// Header: the partition whose log the event's position is in (cluster mode, ADR 0015).
pub const HEADER_PARTITION: &str = "Ticket-Partition";

/// How the publisher learns, at start and after a failure, what the streams already hold.
#[derive(Debug, Clone)]
pub enum Reconcile {
    /// The event stream's last message names the log's position: one log feeds the stream
    /// (single-node ticketd).
    LastMessage,
    /// A cluster's partition: every partition's log feeds the stream, so its last message says
    /// nothing of this log. The watermark is shared in a key-value bucket instead (`key`, moved
    /// forward by compare-and-set at most every `share_every` while events flow, and once they
    /// stop, so the partition's next owner starts there); what was published after it is sent
    /// again with the same `Nats-Msg-Id` and dropped by the streams as a duplicate (ADR 0015).
    /// Each event carries `Ticket-Partition`.
    Shared { store: Box<kv::Store>, key: String, partition: u16, held: Held },
}

/// Whether this node still certainly holds the partition (its lease): a cluster partition's
/// outbox publishes nothing otherwise, so that a node paused past the stream's duplicate window
/// cannot publish again, when it resumes, what the next owner published meanwhile.
#[derive(Clone)]
pub struct Held(pub std::sync::Arc<dyn Fn() -> bool + Send + Sync>);

impl std::fmt::Debug for Held {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Held").field(&(self.0)()).finish()
    }
}

/// Publishes what the outbox holds until `shutdown` turns true; then returns once the outbox is
/// drained or the last round failed.
pub async fn run<L: EventLog>(
    log: L,
    js: jetstream::Context,
    config: PublisherConfig,
    shutdown: watch::Receiver<bool>,
) -> Result<(), PublishError> {
    run_with(log, js, config, Reconcile::LastMessage, shutdown).await
}

/// [`run`], reconciling as `reconcile` says.
pub async fn run_with<L: EventLog>(
    log: L,
    js: jetstream::Context,
    config: PublisherConfig,
    reconcile: Reconcile,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), PublishError> {
    let mut head = log.watch_head();
    let mut backoff = Duration::from_millis(50);
    // The position of the last paging copy in its stream, once reconciled.
    let mut copies = None;
    // Until when events go one at a time (after a failed round).
    let mut sequential_until: Option<Instant> = None;
    // Cluster mode: whether this log's watermark moved since it was last shared, and when it was.
    let (mut unshared, mut shared_at): (bool, Option<Instant>) = (false, None);
    // Whether the event stream refused atomic batches (an older server ignores `allow_atomic`
    // and would store a batch's messages one by one, unacknowledged but the last).
    let mut batching_off = false;
    // Single-node: the event stream's last sequence as this publisher knows it. Every publish
    // goes only directly after it (`Nats-Expected-Last-Sequence`), so a stream that lost
    // messages meanwhile (recreated, restored) refuses the next one, and the reconciliation
    // that follows publishes again what it lost.
    let mut expect: Option<u64> = None;
    loop {
        let Some(copied) = copies else {
            let reconciled = match ensure_streams(&js, &config).await {
                Ok(atomic) => reconcile_by(&reconcile, &log, &js, &config).await.map(|copied| (copied, atomic)),
                Err(e) => Err(e),
            };
            match reconciled {
                Ok(((copied, last), atomic)) => {
                    copies = Some(copied);
                    expect = last;
                    (unshared, shared_at) = (false, Some(Instant::now()));
                    if !atomic && !batching_off {
                        warn!(stream = %config.stream, "the event stream takes no atomic batches (NATS server 2.12+); events go one at a time");
                    }
                    batching_off = !atomic;
                }
                Err(e) => {
                    warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "cannot reach the stream, will retry");
                    if wait(&mut shutdown, backoff).await {
                        return Err(e);
                    }
                    backoff = (backoff * 2).min(config.max_backoff);
                }
            }
            continue;
        };
        let pending = log.outbox_pending(config.batch)?;
        metrics::gauge!("ticketd_outbox_lag_positions").set(log.head().saturating_sub(log.published()?) as f64);
        // When the watermark is to be shared next (it moved since it last was).
        let share_at = unshared.then(|| shared_at.map_or_else(Instant::now, |at| at + config.share_every));
        let share_now = share_at.is_some_and(|at| Instant::now() >= at);
        // What the round did: its outcome, whether it published batches, whether it shared.
        let (result, batched, sharing) = if pending.is_empty() {
            metrics::gauge!("ticketd_outbox_lag_seconds").set(0.0);
            // Shared now when due, or before stopping.
            let sharing = share_now || (unshared && *shutdown.borrow());
            if !sharing {
                if *shutdown.borrow() {
                    return Ok(());
                }
                tokio::select! {
                    changed = head.changed() => {
                        if changed.is_err() {
                            // The log closed: what was published is shared, then done.
                            return share_before_leaving(unshared, &reconcile, &log).await;
                        }
                        // A few more events, for a larger batch.
                        if !config.linger.is_zero() {
                            wait(&mut shutdown, config.linger).await;
                        }
                    }
                    changed = shutdown.changed() => {
                        if changed.is_err() {
                            // Nobody can tell it to stop any more: stops now.
                            return share_before_leaving(unshared, &reconcile, &log).await;
                        }
                    }
                    () = sleep_until(share_at) => {}
                }
                continue;
            }
            (share(&reconcile, &log).await.map(|()| copied), false, true)
        } else {
            let shared = match &reconcile {
                Reconcile::LastMessage => None,
                Reconcile::Shared { partition, held, .. } => Some((*partition, held)),
            };
            let batched = !batching_off && sequential_until.is_none_or(|until| Instant::now() >= until);
            let round = Round { from: pending[0], count: pending.len(), shared, batched, expect };
            let published = match publish_in_order(&log, &js, &config, round, copied).await {
                Ok((copied, last)) => {
                    if let Some(last) = last.filter(|_| expect.is_some()) {
                        expect = Some(last);
                        log.set_published_sequence(last)?;
                    }
                    Ok(copied)
                }
                Err(e) => Err(e),
            };
            unshared |= published.is_ok() && shared.is_some();
            let sharing = unshared && shared_at.is_none_or(|at| at.elapsed() >= config.share_every);
            let result = match published {
                Ok(copied) if sharing => share(&reconcile, &log).await.map(|()| copied),
                other => other,
            };
            (result, batched, sharing)
        };
        match result {
            Ok(copied) => {
                copies = Some(copied);
                backoff = Duration::from_millis(50);
                if sharing {
                    (unshared, shared_at) = (false, Some(Instant::now()));
                }
                // Not a backlog: the events arriving meanwhile go in the next round together
                // (cut short when told to stop; the next round drains what is left).
                if !pending.is_empty() && pending.len() < config.batch && !config.linger.is_zero() {
                    wait(&mut shutdown, config.linger).await;
                }
            }
            Err(e) => {
                warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "publishing failed, will reconcile and retry");
                copies = None;
                // A batch holding an event the stream already has is refused whole: one at a
                // time for a while, where such a duplicate is dropped alone.
                if batched {
                    sequential_until = Some(Instant::now() + SEQUENTIAL_AFTER_FAILURE);
                }
                if wait(&mut shutdown, backoff).await {
                    // What was published before the failure is shared (forward only: true even
                    // from an owner that lost the partition), so that the next owner resends less.
                    let _ = share_before_leaving(unshared, &reconcile, &log).await;
                    return Err(e);
                }
                backoff = (backoff * 2).min(config.max_backoff);
            }
        }
    }
}

/// Shares the watermark if it moved since it last was (cluster mode), before the publisher
/// returns.
async fn share_before_leaving<L: EventLog>(unshared: bool, reconcile: &Reconcile, log: &L) -> Result<(), PublishError> {
    if unshared { share(reconcile, log).await } else { Ok(()) }
}

/// Shares this log's published watermark (cluster mode; nothing to do otherwise).
async fn share<L: EventLog>(reconcile: &Reconcile, log: &L) -> Result<(), PublishError> {
    match reconcile {
        Reconcile::Shared { store, key, .. } => share_watermark(store, key, log.published()?).await,
        Reconcile::LastMessage => Ok(()),
    }
}

/// Sleeps until `at`, or forever when there is none.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Waits `delay`; true when shutdown was asked meanwhile.
async fn wait(shutdown: &mut watch::Receiver<bool>, delay: Duration) -> bool {
    if *shutdown.borrow() {
        return true;
    }
    tokio::select! {
        _ = tokio::time::sleep(delay) => false,
        _ = shutdown.changed() => true,
    }
}

/// Moves the published watermark to what the streams hold (made sure of first, by the caller), as
/// `how` says (forward; back only on a single node's stream that lost messages, see
/// [`reconcile`]); returns the position of the last paging copy known to be in its stream, and,
/// on a single node, the event stream's last sequence.
async fn reconcile_by<L: EventLog>(
    how: &Reconcile,
    log: &L,
    js: &jetstream::Context,
    config: &PublisherConfig,
) -> Result<(u64, Option<u64>), PublishError> {
    let (store, key) = match how {
        Reconcile::LastMessage => return reconcile(log, js, config).await.map(|(copied, last)| (copied, Some(last))),
        Reconcile::Shared { store, key, .. } => (store, key),
    };
    let shared = shared_watermark(store, key).await?.map_or(0, |(position, _)| position);
    if shared > log.published()? {
        info!(key = %key, position = shared, "the shared watermark is ahead of this log's; moving it");
        log.mark_published(shared.min(log.head()))?;
    }
    // This log's own watermark may be ahead: it published them when it owned the partition
    // before, and the shared one could not be moved then (NATS was failing over).
    share_watermark(store, key, log.published()?).await?;
    // The copies after the watermark are sent again, and dropped as duplicates if they are in.
    Ok((log.published()?, None))
}

/// The shared watermark under `key` and its revision (none: nothing published yet).
async fn shared_watermark(store: &kv::Store, key: &str) -> Result<Option<(u64, u64)>, PublishError> {
    let Some(entry) = store.entry(key).await.map_err(js_error)? else { return Ok(None) };
    if entry.operation != kv::Operation::Put {
        return Ok(None);
    }
    let text = std::str::from_utf8(&entry.value).map_err(js_error)?;
    let position = text.trim().parse::<u64>().map_err(js_error)?;
    Ok(Some((position, entry.revision)))
}

/// Moves the shared watermark under `key` forward to `position` (never back: a deposed owner's
/// late round cannot undo its successor's).
async fn share_watermark(store: &kv::Store, key: &str, position: u64) -> Result<(), PublishError> {
    for _ in 0..3 {
        let written = match shared_watermark(store, key).await? {
            Some((shared, _)) if shared >= position => return Ok(()),
            Some((_, revision)) => store.update(key, position.to_string().into(), revision).await.is_ok(),
            None => store.create(key, position.to_string().into()).await.is_ok(),
        };
        if written {
            return Ok(());
        }
    }
    Err(PublishError::JetStream(format!("the shared watermark {key} kept changing under this publisher")))
}

/// Moves the published watermark to the last event the event stream holds, forward or back;
/// returns the position of the last copy the copies' stream holds, and the event stream's last
/// sequence (which the next publish expects).
///
/// Back only when the stream lost messages it had acknowledged: its last sequence is below the
/// one the log recorded at the last event published ([`EventLog::published_sequence`]; a
/// stream's sequences never go back, but when it is recreated or restored from an older copy).
/// The events after its last one are then published again from the log, in order. A stream
/// whose events were purged or deleted (all of them, or a ticket's) keeps its sequence, and is
/// not given them back.
async fn reconcile<L: EventLog>(
    log: &L,
    js: &jetstream::Context,
    config: &PublisherConfig,
) -> Result<(u64, u64), PublishError> {
    let sequence = js.get_stream(&config.stream).await.map_err(js_error)?.cached_info().state.last_sequence;
    let last = stream_positions(js, config).await?;
    let published = log.published()?;
    let recorded = log.published_sequence()?;
    if last.events > published {
        info!(position = last.events, "the stream is ahead of the published watermark; moving it");
        log.mark_published(last.events)?;
    } else if sequence < recorded && last.events < published {
        warn!(
            stream = %config.stream,
            stream_sequence = sequence,
            recorded_sequence = recorded,
            stream_position = last.events,
            published,
            events = published - last.events,
            "the event stream lost messages it had acknowledged (recreated, or restored from an older copy); publishing its lost events again from the log"
        );
        metrics::counter!("ticketd_outbox_republished_total").increment(published - last.events);
        log.rewind_published(last.events)?;
    }
    log.set_published_sequence(sequence)?;
    Ok((last.copies, sequence))
}

/// Publishes `count` events of the outbox from position `from`, in log order; returns the
/// position of the last paging copy published. Runs of events with no paging copy to send go as
/// atomic batches when `batched` (all stored, in order, or none); the others one at a time.
async fn publish_in_order<L: EventLog>(
    log: &L,
    js: &jetstream::Context,
    config: &PublisherConfig,
    round: Round<'_>,
    mut copied: u64,
) -> Result<(u64, Option<u64>), PublishError> {
    // Every publish goes directly after the last one (single node), so a stream recreated or
    // restored in the middle of a round refuses the rest of it.
    let Round { from, count, shared, batched, mut expect } = round;
    // The event stream's sequence at the last event acknowledged (stored, not a duplicate) in
    // this round.
    let mut last = None;
    let partition = shared.map(|(partition, _)| partition);
    let events = log.read_from(from, count)?;
    let mut rest = events.as_slice();
    while let Some(event) = rest.first() {
        if let Some((partition, held)) = shared
            && !(held.0)()
        {
            return Err(PublishError::JetStream(format!(
                "partition {partition}: not certainly this node's any more; publishing stopped"
            )));
        }
        let copy = |event: &RecordedEvent| config.breach_subject(event).filter(|_| event.position > copied);
        let run =
            if batched { rest.iter().take(MAX_ATOMIC_BATCH).take_while(|e| copy(e).is_none()).count() } else { 0 };
        if run >= 2 {
            let (batch, after) = rest.split_at(run);
            if let Some(sequence) = publish_batch(js, config, batch, partition, expect).await? {
                expect = expect.map(|_| sequence);
                last = Some(sequence);
            }
            published(log, &batch[run - 1])?;
            rest = after;
            continue;
        }
        let mut headers = event_headers(event, partition);
        let payload = bytes::Bytes::from(ticket_proto::encode_envelope(event));
        if let Some(subject) = copy(event) {
            let mut copy = headers.clone();
            copy.insert(async_nats::header::NATS_MESSAGE_ID, format!("{}:sla", event.event_id).as_str());
            copy.insert(HEADER_COPY, COPY_SLA_BREACHED);
            acknowledged(js, subject, copy, payload.clone()).await?;
            copied = event.position;
        }
        if let Some(after) = expect {
            headers.insert(async_nats::header::NATS_EXPECTED_LAST_SEQUENCE, after.to_string().as_str());
        }
        let ack = acknowledged(js, config.subject(event), headers, payload).await?;
        debug!(position = event.position, sequence = ack.sequence, duplicate = ack.duplicate, "event published");
        // A duplicate's sequence is the stored one's, not the stream's last.
        if !ack.duplicate {
            expect = expect.map(|_| ack.sequence);
            last = Some(ack.sequence);
        }
        published(log, event)?;
        rest = &rest[1..];
    }
    Ok((copied, last))
}

/// One round of the publisher: the outbox's `count` events from position `from`; the partition
/// and its lease check in cluster mode; whether runs of events may go as atomic batches.
#[derive(Clone, Copy)]
struct Round<'a> {
    from: u64,
    count: usize,
    shared: Option<(u16, &'a Held)>,
    batched: bool,
    /// Single-node: the event stream's last sequence, which the round's first publish expects
    /// (each later one expects the one before it).
    expect: Option<u64>,
}

/// Publishes a message to JetStream and waits for its acknowledgement.
async fn acknowledged(
    js: &jetstream::Context,
    subject: String,
    headers: HeaderMap,
    payload: bytes::Bytes,
) -> Result<jetstream::publish::PublishAck, PublishError> {
    js.publish_with_headers(subject, headers, payload).await.map_err(js_error)?.await.map_err(js_error)
}

/// The most events in one atomic batch (the server's default limit).
const MAX_ATOMIC_BATCH: usize = 1000;

/// How long events go one at a time after a failed round that published batches.
const SEQUENTIAL_AFTER_FAILURE: Duration = Duration::from_secs(10);

/// The headers of an event's message: its id (deduplication), type, version, position, and
/// partition in cluster mode.
fn event_headers(event: &RecordedEvent, partition: Option<u16>) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(async_nats::header::NATS_MESSAGE_ID, event.event_id.to_string().as_str());
    headers.insert(HEADER_EVENT_TYPE, event.event.kind.name());
    headers.insert(HEADER_VERSION, event.version.to_string().as_str());
    headers.insert(HEADER_POSITION, event.position.to_string().as_str());
    if let Some(partition) = partition {
        headers.insert(HEADER_PARTITION, partition.to_string().as_str());
    }
    headers
}

/// Marks `event` published, once JetStream took it, and reports how old it was then.
fn published<L: EventLog>(log: &L, event: &RecordedEvent) -> Result<(), PublishError> {
    log.mark_published(event.position)?;
    let age = (ticket_log::now() - event.recorded_at).num_milliseconds().max(0) as f64 / 1000.0;
    metrics::gauge!("ticketd_outbox_lag_seconds").set(age);
    Ok(())
}

/// Publishes `events` to the event stream as one atomic batch (ADR-50 of NATS, server 2.12+):
/// one replicated write for all of them, stored in order or not at all. Only the commit asks
/// for an acknowledgement; the messages before it go on the same connection, so they reach the
/// server first. A batch holding an event the stream already has (its `Nats-Msg-Id`, after a
/// lost acknowledgement or a takeover) is refused whole: the caller then publishes one at a time,
/// where a duplicate is dropped alone. With `expect`, the batch goes only directly after that
/// stream sequence. Returns the stream sequence of its last event (None if the stream answered
/// the batch as a duplicate).
async fn publish_batch(
    js: &jetstream::Context,
    config: &PublisherConfig,
    events: &[RecordedEvent],
    partition: Option<u16>,
    expect: Option<u64>,
) -> Result<Option<u64>, PublishError> {
    let id = uuid::Uuid::now_v7().simple().to_string();
    let client = js.client();
    let last = events.len();
    for (index, event) in events.iter().enumerate() {
        let mut headers = event_headers(event, partition);
        headers.insert(async_nats::header::NATS_BATCH_ID, id.as_str());
        headers.insert(async_nats::header::NATS_BATCH_SEQUENCE, (index + 1).to_string().as_str());
        if let Some(after) = expect.filter(|_| index == 0) {
            headers.insert(async_nats::header::NATS_EXPECTED_LAST_SEQUENCE, after.to_string().as_str());
        }
        let payload = bytes::Bytes::from(ticket_proto::encode_envelope(event));
        if index + 1 < last {
            client.publish_with_headers(config.subject(event), headers, payload).await.map_err(js_error)?;
            continue;
        }
        headers.insert(async_nats::header::NATS_BATCH_COMMIT, "1");
        let ack = acknowledged(js, config.subject(event), headers, payload).await?;
        debug!(
            first = events[0].position,
            last = event.position,
            sequence = ack.sequence,
            "events published as one atomic batch"
        );
        return Ok((!ack.duplicate).then_some(ack.sequence));
    }
    Err(PublishError::JetStream("an atomic batch of no events".to_owned()))
}
