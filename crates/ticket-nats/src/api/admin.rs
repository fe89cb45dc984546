//! The operators' endpoints (`tickets.admin.<endpoint>`): the projections' lag, and a rebuild
//! beside the live projection.

use ticket_log::EventLog;
use ticket_projections::{Projector, ProjectorError, answer};
use ticket_proto::{AdminEndpoint, AdminRequest, pb};
use tracing::info;

use super::reply::{Reply, query_error, query_reply};

pub(super) async fn handle<L: EventLog>(endpoint: AdminEndpoint, payload: &[u8], views: Projector<L>) -> Reply {
    let request = match AdminRequest::decode(endpoint, payload) {
        Ok(r) => r,
        Err(e) => {
            return query_error(pb::ErrorCode::MalformedRequest, format!("not a {}: {e}", endpoint.message_name()));
        }
    };
    match request {
        AdminRequest::Lag(_) => query_reply(pb::query_reply::Result::Lag(answer::projection_status(&views))),
        AdminRequest::Rebuild(request) => rebuild(views, request.name).await,
    }
}

/// Rebuilds a projection from the log (a long storage read: off the async runtime).
async fn rebuild<L: EventLog>(views: Projector<L>, name: String) -> Reply {
    info!(projection = %name, "projection rebuild requested");
    let rebuilding = name.clone();
    let rebuilt = tokio::task::spawn_blocking(move || {
        let events = views.rebuild(&rebuilding, |_, _| {})?;
        let position = views.lag().into_iter().find(|l| l.name == rebuilding).map_or(0, |l| l.position);
        Ok::<_, ProjectorError>((events, position))
    })
    .await;
    match rebuilt {
        Ok(Ok((events, position))) => {
            query_reply(pb::query_reply::Result::Rebuilt(pb::ProjectionRebuilt { name, events, position }))
        }
        Ok(Err(e @ ProjectorError::UnknownProjection(_))) => {
            query_error(pb::ErrorCode::MalformedRequest, e.to_string())
        }
        Ok(Err(e)) => query_error(pb::ErrorCode::Unavailable, e.to_string()),
        Err(e) => query_error(pb::ErrorCode::Internal, format!("the rebuild failed: {e}")),
    }
}
