//! The command and query API as the NATS micro service `tickets`: the wiring (`start`, one
//! served endpoint per [`Endpoint`], typed errors to unknown names), with the handlers split by
//! concern: `commands`, `queries`, `admin`, and `reply` for the replies and their error headers.

use std::sync::Arc;
use std::time::Duration;

use async_nats::Client;
use async_nats::service::ServiceExt;
use futures::StreamExt;
use futures::future::BoxFuture;
use ticket_log::EventLog;
use ticket_projections::Projector;
#[cfg(doc)]
use ticket_proto::{AdminEndpoint, CommandEndpoint, QueryEndpoint};
use ticket_proto::{Endpoint, Family, SERVICE_NAME, pb};
use ticket_service::CommandService;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

mod admin;
mod cluster;
mod commands;
pub mod identity;
mod queries;
mod reply;

pub use admin::{ClockAdvance, ClockAdvanceError, MAX_ADVANCE_EVENTS, TestClockControl, TestClockHandle};
pub use cluster::{
    ClusterApi, ClusterControl, CopyStatus, LeaseCheck, PartitionApi, Replicas, partition_subject, start_cluster,
};
use reply::Reply;
pub use reply::service_error;

/// The subject of the command endpoint named `command`, for callers holding a name (see
/// [`CommandEndpoint::subject`]).
pub fn command_subject(command: &str) -> String {
    format!("{}.{command}", Family::Command.group())
}

/// The subject of the query endpoint named `query` (see [`QueryEndpoint::subject`]).
pub fn query_subject(query: &str) -> String {
    format!("{}.{query}", Family::Query.group())
}

/// The subject of the operators' endpoint named `endpoint` (see [`AdminEndpoint::subject`]).
pub fn admin_subject(endpoint: &str) -> String {
    format!("{}.{endpoint}", Family::Admin.group())
}

/// The key of the instance id in the micro service's metadata (`$SRV.INFO`, `$SRV.PING`).
pub const INSTANCE_METADATA: &str = "instance";

#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// Requests larger than this are refused with `PAYLOAD_TOO_LARGE`.
    pub max_payload: usize,
    /// Commands handled at once; more wait.
    pub max_in_flight: usize,
    /// How long a query waits for the view to reach the position it names.
    pub read_your_writes_deadline: Duration,
    /// The most tickets a list query returns (and its default).
    pub max_list: usize,
    /// Who may do what: the identities nats-server stamps, mapped to actors and roles, and what a
    /// request without a stamp is taken as (by default: refused).
    pub identities: identity::Identities,
    /// This deployment's instance id, in the micro service's metadata (`instance`), so that a
    /// second ticketd on the same account can tell who already serves (none: no metadata).
    pub instance_id: Option<String>,
    /// The deployment's test clock, which `tickets.admin.advance_clock` moves (none: the wall
    /// clock, and advances are refused).
    pub test_clock: Option<TestClockHandle>,
}

impl ApiConfig {
    /// The defaults, with requests from ticketd's own account taken as sent (see
    /// [`identity::Identities::trust_own_account`]): a single-account setup.
    pub fn trusting() -> Self {
        Self { identities: identity::Identities::trust_own_account(), ..Self::default() }
    }
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            max_payload: 64 * 1024,
            max_in_flight: 1024,
            read_your_writes_deadline: Duration::from_secs(5),
            max_list: 1000,
            test_clock: None,
            identities: identity::Identities::default(),
            instance_id: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("cannot start the service: {0}")]
    Start(String),
    #[error("cannot subscribe: {0}")]
    Subscribe(String),
}

/// The running API. Dropping it does not stop it; call [`ApiHandle::stop`].
#[derive(Debug)]
pub struct ApiHandle {
    tasks: JoinSet<()>,
    service: Option<async_nats::service::Service>,
    in_flight: Arc<Semaphore>,
    max_in_flight: u32,
}

impl ApiHandle {
    /// Stops taking requests, then waits up to `deadline` for the commands being handled to be
    /// decided, appended and answered. Returns false if some were still running at the deadline.
    pub async fn stop(mut self, deadline: Duration) -> bool {
        if let Some(service) = self.service.take() {
            let _ = service.stop().await;
        }
        self.tasks.abort_all();
        while self.tasks.join_next().await.is_some() {}
        let drained = tokio::time::timeout(deadline, self.in_flight.acquire_many(self.max_in_flight)).await;
        matches!(drained, Ok(Ok(_)))
    }
}

/// Starts the API on `client` in front of a running engine's `service` and `views` (its
/// projector, following the same log). The API starts nothing of its own: the engine runs and
/// stops the projector.
pub async fn start<L: EventLog>(
    client: Client,
    service: CommandService<L>,
    views: Projector<L>,
    config: ApiConfig,
) -> Result<ApiHandle, ApiError> {
    let api = Arc::new(Api { service, views, config: config.clone(), placement: None });
    serve(client, api, &config).await
}

/// Answers the requests to the API's endpoints: one engine's [`Api`], or a cluster node's front
/// (`cluster.rs`), which routes each request to its partition's owner.
pub(crate) trait Handler: Send + Sync + 'static {
    /// The reply to a request to `endpoint`, sent with the `Nats-Request-Info` header `stamp`.
    fn answer(&self, endpoint: Endpoint, stamp: Option<String>, payload: bytes::Bytes) -> BoxFuture<'_, Reply>;
}

impl<L: EventLog> Handler for Api<L> {
    fn answer(&self, endpoint: Endpoint, stamp: Option<String>, payload: bytes::Bytes) -> BoxFuture<'_, Reply> {
        Box::pin(async move { self.handle(endpoint, stamp.as_deref(), &payload).await })
    }
}

/// The stamp nats-server put on a request (`Nats-Request-Info`), if any.
fn stamp_of(message: &async_nats::Message) -> Option<String> {
    message.headers.as_ref().and_then(|h| h.get(identity::REQUEST_INFO_HEADER)).map(|v| v.as_str().to_owned())
}

/// Serves every endpoint of the micro service `tickets` with `handler`, and answers the names no
/// endpoint serves.
async fn serve(client: Client, handler: Arc<dyn Handler>, config: &ApiConfig) -> Result<ApiHandle, ApiError> {
    let metadata = config.instance_id.iter().map(|id| (INSTANCE_METADATA.to_owned(), id.clone())).collect();
    let micro = client
        .service_builder()
        .description("ticketd: commands and queries of the ticket lifecycle engine")
        .metadata(metadata)
        .start(SERVICE_NAME, env!("CARGO_PKG_VERSION"))
        .await
        .map_err(|e| ApiError::Start(e.to_string()))?;
    let max_in_flight = u32::try_from(config.max_in_flight.clamp(1, 1 << 20)).unwrap_or(1024);
    let limit = Arc::new(Semaphore::new(max_in_flight as usize));
    let mut tasks = JoinSet::new();

    for endpoint in Endpoint::all() {
        let group = micro.group(endpoint.family().group());
        let mut requests = group.endpoint(endpoint.name()).await.map_err(|e| ApiError::Start(e.to_string()))?;
        let (handler, limit) = (handler.clone(), limit.clone());
        tasks.spawn(async move {
            while let Some(request) = requests.next().await {
                // Commands wait for one of the in-flight permits; queries and operators do not.
                let permit = match endpoint {
                    Endpoint::Command(_) => match limit.clone().acquire_owned().await {
                        Ok(permit) => Some(permit),
                        Err(_) => return,
                    },
                    Endpoint::Query(_) | Endpoint::Admin(_) => None,
                };
                let handler = handler.clone();
                tokio::spawn(async move {
                    let stamp = stamp_of(&request.message);
                    let payload = request.message.payload.clone();
                    let (body, headers) = handler.answer(endpoint, stamp, payload).await;
                    if let Err(e) = request.respond_with_headers(Ok(body), headers).await {
                        warn!(endpoint = endpoint.name(), error = %e, "reply not sent");
                    }
                    drop(permit);
                });
            }
        });
    }

    // Requests to names no endpoint serves get a typed error instead of "no responders". These
    // plain subscriptions also see requests to known endpoints, and leave those alone. They cover
    // the API's subjects only: `tickets.events.>` is the event stream, whose publishes carry
    // JetStream's acknowledgement inbox as their reply subject.
    for family in Family::ALL {
        let mut unknown =
            client.subscribe(format!("{}.>", family.group())).await.map_err(|e| ApiError::Subscribe(e.to_string()))?;
        let catch_all_client = client.clone();
        tasks.spawn(async move {
            while let Some(message) = unknown.next().await {
                let subject = message.subject.as_str();
                let known = Endpoint::from_subject(subject).is_some();
                let Some(reply) = message.reply.clone().filter(|_| !known) else { continue };
                debug!(subject, "request to an unknown endpoint");
                let (body, headers) = unknown_endpoint(family, subject);
                let _ = catch_all_client.publish_with_headers(reply, headers, body).await;
            }
        });
    }
    info!(service = SERVICE_NAME, endpoints = Endpoint::all().count(), "command api ready");
    Ok(ApiHandle { tasks, service: Some(micro), in_flight: limit, max_in_flight })
}

/// The typed error to a request for a name no endpoint serves, in the reply type its client
/// decodes: commands get a `CommandReply`, queries and the operators' requests a `QueryReply`.
fn unknown_endpoint(family: Family, subject: &str) -> Reply {
    let message = format!("no endpoint {subject} (see $SRV.INFO.{SERVICE_NAME})");
    let error = pb::Error { code: pb::ErrorCode::UnknownEndpoint as i32, message, details: Default::default() };
    reply::error_of(family, error)
}

/// What the handlers share.
struct Api<L: EventLog> {
    service: CommandService<L>,
    views: Projector<L>,
    config: ApiConfig,
    /// The cluster's partitions and the one this engine serves (none on a single node): where
    /// ids the service mints go, the partition a command reply names, and the commands refused
    /// because their ticket is another partition's.
    placement: Option<commands::Placement>,
}

impl<L: EventLog> Api<L> {
    /// Answers a request to `endpoint` sent with the `Nats-Request-Info` header `stamp` (if any):
    /// who sent it first, refused with `PERMISSION_DENIED` before anything else when its role may
    /// not; then each endpoint's handler, by an exhaustive match.
    async fn handle(&self, endpoint: Endpoint, stamp: Option<&str>, payload: &[u8]) -> Reply {
        let caller = match admit(&self.config.identities, stamp, endpoint) {
            Ok(caller) => caller,
            Err(refused) => return refused,
        };
        match endpoint {
            Endpoint::Command(command) => {
                commands::handle(command, &caller, payload, &self.service, &self.config, self.placement).await
            }
            Endpoint::Query(query) => {
                let policy = self.service.policy_arc();
                let clock = self.service.clock().clone();
                queries::handle(query, &caller, payload, &self.views, &policy, clock.as_ref(), &self.config).await
            }
            Endpoint::Admin(admin) => {
                let clock = self.service.clock().clone();
                let test_clock = self.config.test_clock.as_ref();
                admin::handle(admin, payload, self.views.clone(), clock.as_ref(), test_clock).await
            }
        }
    }
}

/// Who sent a request with the stamp `stamp`, if its role may use `endpoint`; else the
/// `PERMISSION_DENIED` reply.
fn admit(
    identities: &identity::Identities,
    stamp: Option<&str>,
    endpoint: Endpoint,
) -> Result<identity::Caller, Reply> {
    let caller = identities.caller(stamp, endpoint).map_err(|denied| refuse(endpoint, &denied))?;
    if let identity::Caller::Identified { role, .. } = &caller
        && !role.may(endpoint)
    {
        return Err(refuse(endpoint, &identity::Denied::new(&caller, endpoint, "the role may not use this endpoint")));
    }
    Ok(caller)
}

/// A `PERMISSION_DENIED` reply, in the reply type of the endpoint's family, logged.
fn refuse(endpoint: Endpoint, denied: &identity::Denied) -> Reply {
    debug!(
        endpoint = endpoint.name(),
        account = %denied.account,
        user = %denied.user,
        role = denied.role.unwrap_or(""),
        reason = %denied.reason,
        "request refused"
    );
    reply::error_of(endpoint.family(), denied.error())
}

#[cfg(test)]
mod tests;
