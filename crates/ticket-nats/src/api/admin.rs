//! The operators' endpoints (`tickets.admin.<endpoint>`): the projections' lag, a rebuild
//! in place in the state store, and the engine's clock (read on any deployment, advanced only on
//! one started with a test clock).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use ticket_domain::{RecordedEvent, Timestamp};
use ticket_log::EventLog;
use ticket_projections::{Projector, ProjectorError, answer};
use ticket_proto::{AdminEndpoint, AdminRequest, pb, wire};
use ticket_service::Clock;
use tracing::info;

use super::reply::{Reply, error, query_error, query_error_of, query_reply};

/// The most events an advance's reply carries (the count and the last position are always
/// there).
pub const MAX_ADVANCE_EVENTS: usize = 1000;

/// What moving a test clock did.
#[derive(Debug, Clone, PartialEq)]
pub struct ClockAdvance {
    pub from: Timestamp,
    pub now: Timestamp,
    /// Events appended while the clock moved, and the log's head after.
    pub recorded: u64,
    pub last_position: u64,
    /// The first [`MAX_ADVANCE_EVENTS`] of them, in log order.
    pub events: Vec<RecordedEvent>,
}

/// Why a test clock did not move (all the way).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClockAdvanceError {
    /// The instant asked for is earlier than the clock's.
    Backwards(String),
    /// The timer did not settle at some instant in time.
    NotSettled(String),
    /// Anything else (the timer stopped, the log failed).
    Failed(String),
}

/// A test clock operators may move: a deployment started with one gives it to the API (see
/// [`ApiConfig::test_clock`](super::ApiConfig::test_clock)).
pub trait TestClockControl: Send + Sync + 'static {
    fn now(&self) -> Timestamp;

    /// Moves the clock to `to` through every firing instant on the way, in order.
    fn advance_to(
        &self,
        to: Timestamp,
    ) -> Pin<Box<dyn Future<Output = Result<ClockAdvance, ClockAdvanceError>> + Send + '_>>;
}

/// A shared [`TestClockControl`].
#[derive(Clone)]
pub struct TestClockHandle(pub Arc<dyn TestClockControl>);

impl std::fmt::Debug for TestClockHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("TestClockHandle").field(&self.0.now()).finish()
    }
}

pub(super) async fn handle<L: EventLog>(
    endpoint: AdminEndpoint,
    payload: &[u8],
    views: Projector<L>,
    clock: &dyn Clock,
    test_clock: Option<&TestClockHandle>,
) -> Reply {
    let request = match AdminRequest::decode(endpoint, payload) {
        Ok(r) => r,
        Err(e) => {
            return query_error(pb::ErrorCode::MalformedRequest, format!("not a {}: {e}", endpoint.message_name()));
        }
    };
    match request {
        AdminRequest::Lag(_) => query_reply(pb::query_reply::Result::Lag(answer::projection_status(&views))),
        AdminRequest::Rebuild(request) => rebuild(views, request.name).await,
        AdminRequest::Clock(_) => clock_now(clock, test_clock),
        AdminRequest::AdvanceClock(request) => advance(test_clock, request).await,
        AdminRequest::Cluster(_) | AdminRequest::Move(_) => query_error(
            pb::ErrorCode::UnknownEndpoint,
            "this ticketd is a single node, not a cluster (ticketd serve --cluster-node, ADR 0015)".into(),
        ),
    }
}

/// The engine's clock: the test clock's instant where there is one, else the wall clock's.
pub(super) fn clock_now(clock: &dyn Clock, test_clock: Option<&TestClockHandle>) -> Reply {
    let (now, kind) = match test_clock {
        Some(test) => (test.0.now(), pb::ClockKind::Simulated),
        None => (clock.now(), pb::ClockKind::Wall),
    };
    query_reply(pb::query_reply::Result::Clock(pb::ClockNow { now: Some(wire::timestamp(&now)), kind: kind as i32 }))
}

/// Moves the test clock, refused on a wall-clock deployment (see `AdvanceClock` in the proto).
async fn advance(test_clock: Option<&TestClockHandle>, request: pb::AdvanceClock) -> Reply {
    let Some(TestClockHandle(test)) = test_clock else {
        return query_error(
            pb::ErrorCode::UnknownEndpoint,
            "this deployment runs on the wall clock, which cannot be advanced: only `ticketd dev --test-clock` \
             serves tickets.admin.advance_clock"
                .into(),
        );
    };
    let now = test.now();
    let to = match request.target {
        Some(pb::advance_clock::Target::To(to)) => match wire::opt_instant("to", Some(to)) {
            Ok(Some(to)) => to,
            Ok(None) => return query_error(pb::ErrorCode::MalformedRequest, "to: missing".into()),
            Err(e) => return query_error(pb::ErrorCode::MalformedRequest, e.to_string()),
        },
        Some(pb::advance_clock::Target::By(by)) => match wire::duration_of("by", Some(by)) {
            Ok(by) if by < chrono::TimeDelta::zero() => {
                return query_error(
                    pb::ErrorCode::MalformedRequest,
                    format!("by: {by} is negative; the clock never runs backwards"),
                );
            }
            Ok(by) => match now.checked_add_signed(by) {
                Some(to) => to,
                None => return query_error(pb::ErrorCode::MalformedRequest, "by: out of range".into()),
            },
            Err(e) => return query_error(pb::ErrorCode::MalformedRequest, e.to_string()),
        },
        None => {
            return query_error(pb::ErrorCode::MalformedRequest, "an advance needs a target: `to` or `by`".into());
        }
    };
    info!(from = %now, to = %to, "test clock advance requested");
    match test.advance_to(to).await {
        Ok(advance) => {
            let truncated = advance.recorded > advance.events.len() as u64;
            query_reply(pb::query_reply::Result::ClockAdvanced(pb::ClockAdvanced {
                from: Some(wire::timestamp(&advance.from)),
                now: Some(wire::timestamp(&advance.now)),
                recorded: advance.recorded,
                last_position: advance.last_position,
                events: advance.events.iter().map(pb::EventEnvelope::from).collect(),
                truncated,
            }))
        }
        Err(ClockAdvanceError::Backwards(why)) => query_error(pb::ErrorCode::MalformedRequest, why),
        Err(ClockAdvanceError::NotSettled(why)) => query_error(pb::ErrorCode::Timeout, why),
        Err(ClockAdvanceError::Failed(why)) => query_error(pb::ErrorCode::Internal, why),
    }
}

/// Rebuilds a projection from the log (a long storage read: off the async runtime).
async fn rebuild<L: EventLog>(views: Projector<L>, name: String) -> Reply {
    info!(projection = %name, "projection rebuild requested");
    match rebuilt(views, name.clone()).await {
        Ok((events, position)) => query_reply(pb::query_reply::Result::Rebuilt(pb::ProjectionRebuilt {
            name,
            events,
            position,
            ..Default::default()
        })),
        Err(error) => query_error_of(error),
    }
}

/// Rebuilds projection `name` of `views` off the async runtime: the events it applied and the
/// position it reached, or the error to answer (an unknown name is a malformed request).
pub(super) async fn rebuilt<L: EventLog>(views: Projector<L>, name: String) -> Result<(u64, u64), pb::Error> {
    let rebuilding = name.clone();
    let rebuilt = tokio::task::spawn_blocking(move || {
        let events = views.rebuild(&rebuilding, |_, _| {})?;
        let position = views.lag().into_iter().find(|l| l.name == rebuilding).map_or(0, |l| l.position);
        Ok::<_, ProjectorError>((events, position))
    })
    .await;
    match rebuilt {
        Ok(Ok(done)) => Ok(done),
        Ok(Err(e @ ProjectorError::UnknownProjection(_))) => Err(error(pb::ErrorCode::MalformedRequest, e.to_string())),
        Ok(Err(e)) => Err(error(pb::ErrorCode::Unavailable, e.to_string())),
        Err(e) => Err(error(pb::ErrorCode::Internal, format!("the rebuild failed: {e}"))),
    }
}
