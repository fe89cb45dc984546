//! The outbox publisher: drains the log's outbox into a JetStream stream, in log order.
//!
//! - Each event is published on `tickets.events.<ticket_id>.<event_type>` with `Nats-Msg-Id` = its
//!   event id and headers for its type, ticket version and global position.
//! - Events are published one after the other, each after the previous one's acknowledgement, so
//!   the stream holds them in log order (and so in order per ticket); a position is marked
//!   published only after its acknowledgement.
//! - At start and after any failure, the publisher reads the position of the stream's last message
//!   and moves the published watermark there: an event whose acknowledgement was lost is not
//!   published again, however long the outage. Publishing with the same `Nats-Msg-Id` is a second
//!   guard (the stream's duplicate window).
//! - A breach is also published, just before its event, on
//!   `tickets.sla.breached.<severity>` (`A`, `B`, `C`), so that a paging system can subscribe to
//!   severity A alone. The copy carries the same envelope, `Nats-Msg-Id` = `<event id>:sla` and
//!   the header `Ticket-Copy: sla-breached`; a position counts as published only once its event
//!   (after the copy) is acknowledged, so reconciling after a failure sends a lost copy again.
//! - While NATS is unreachable, appends go on and the outbox grows; the publisher retries with
//!   backoff and drains in order once NATS is back.

use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::{self, stream};
use ticket_domain::{EventKind, RecordedEvent};
use ticket_log::{EventLog, LogError};
use tokio::sync::watch;
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
    /// The JetStream stream (default `TICKETS`).
    pub stream: String,
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
}

impl Default for PublisherConfig {
    fn default() -> Self {
        Self {
            stream: "TICKETS".into(),
            subject_prefix: "tickets.events".into(),
            breach_subject_prefix: "tickets.sla.breached".into(),
            duplicate_window: Duration::from_secs(2 * 60 * 60),
            replicas: 1,
            batch: 512,
            max_backoff: Duration::from_secs(2),
        }
    }
}

impl PublisherConfig {
    /// The stream's settings: file storage, limits retention (events are kept; consumers track
    /// their own position), every event subject, the duplicate window, the replicas.
    pub fn stream_config(&self) -> stream::Config {
        stream::Config {
            name: self.stream.clone(),
            subjects: vec![format!("{}.>", self.subject_prefix), format!("{}.>", self.breach_subject_prefix)],
            storage: stream::StorageType::File,
            retention: stream::RetentionPolicy::Limits,
            duplicate_window: self.duplicate_window,
            num_replicas: self.replicas,
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

/// Creates the stream, or updates it to the configured settings.
pub async fn ensure_stream(js: &jetstream::Context, config: &PublisherConfig) -> Result<(), PublishError> {
    js.create_or_update_stream(config.stream_config()).await.map_err(js_error)?;
    Ok(())
}

/// The position of the last event the stream holds (0 when it holds none).
pub async fn last_published_position(js: &jetstream::Context, config: &PublisherConfig) -> Result<u64, PublishError> {
    let stream = js.get_stream(&config.stream).await.map_err(js_error)?;
    let last = stream.get_info().await.map_err(js_error)?.state.last_sequence;
    if last == 0 {
        return Ok(0);
    }
    let message = stream.get_raw_message(last).await.map_err(js_error)?;
    let position: u64 = message
        .headers
        .get(HEADER_POSITION)
        .and_then(|v| v.as_str().parse().ok())
        .ok_or_else(|| PublishError::JetStream(format!("stream message {last} has no {HEADER_POSITION} header")))?;
    // A copy goes out before its event: when the copy is the last message, the event is not in.
    let copy = message.headers.get(HEADER_COPY).is_some();
    Ok(if copy { position - 1 } else { position })
}

/// Publishes what the outbox holds until `shutdown` turns true; then returns once the outbox is
/// drained or the last round failed.
pub async fn run<L: EventLog>(
    log: L,
    js: jetstream::Context,
    config: PublisherConfig,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), PublishError> {
    let mut head = log.watch_head();
    let mut backoff = Duration::from_millis(50);
    let mut reconciled = false;
    loop {
        if !reconciled {
            match reconcile(&log, &js, &config).await {
                Ok(()) => reconciled = true,
                Err(e) => {
                    warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "cannot reach the stream, will retry");
                    if wait(&mut shutdown, backoff).await {
                        return Err(e);
                    }
                    backoff = (backoff * 2).min(config.max_backoff);
                    continue;
                }
            }
        }
        let pending = log.outbox_pending(config.batch)?;
        if pending.is_empty() {
            if *shutdown.borrow() {
                return Ok(());
            }
            tokio::select! {
                changed = head.changed() => if changed.is_err() { return Ok(()) },
                _ = shutdown.changed() => {}
            }
            continue;
        }
        match publish_in_order(&log, &js, &config, pending[0], pending.len()).await {
            Ok(()) => backoff = Duration::from_millis(50),
            Err(e) => {
                warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "publishing failed, will reconcile and retry");
                reconciled = false;
                if wait(&mut shutdown, backoff).await {
                    return Err(e);
                }
                backoff = (backoff * 2).min(config.max_backoff);
            }
        }
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

async fn reconcile<L: EventLog>(
    log: &L,
    js: &jetstream::Context,
    config: &PublisherConfig,
) -> Result<(), PublishError> {
    ensure_stream(js, config).await?;
    let last = last_published_position(js, config).await?;
    if last > log.published()? {
        info!(position = last, "the stream is ahead of the published watermark; moving it");
        log.mark_published(last)?;
    }
    Ok(())
}

async fn publish_in_order<L: EventLog>(
    log: &L,
    js: &jetstream::Context,
    config: &PublisherConfig,
    from: u64,
    count: usize,
) -> Result<(), PublishError> {
    for event in log.read_from(from, count)? {
        let mut headers = HeaderMap::new();
        headers.insert(async_nats::header::NATS_MESSAGE_ID, event.event_id.to_string().as_str());
        headers.insert(HEADER_EVENT_TYPE, event.event.kind.name());
        headers.insert(HEADER_VERSION, event.version.to_string().as_str());
        headers.insert(HEADER_POSITION, event.position.to_string().as_str());
        let payload = bytes::Bytes::from(ticket_proto::encode_envelope(&event));
        if let Some(subject) = config.breach_subject(&event) {
            let mut copy = headers.clone();
            copy.insert(async_nats::header::NATS_MESSAGE_ID, format!("{}:sla", event.event_id).as_str());
            copy.insert(HEADER_COPY, COPY_SLA_BREACHED);
            js.publish_with_headers(subject, copy, payload.clone()).await.map_err(js_error)?.await.map_err(js_error)?;
        }
        let ack = js
            .publish_with_headers(config.subject(&event), headers, payload)
            .await
            .map_err(js_error)?
            .await
            .map_err(js_error)?;
        debug!(position = event.position, sequence = ack.sequence, duplicate = ack.duplicate, "event published");
        log.mark_published(event.position)?;
    }
    Ok(())
}
