//! A cluster node's API (ADR 0015). Every node serves the public endpoints (`tickets.cmd.*`,
//! `tickets.query.*`, `tickets.admin.*`) in the micro service's queue group, so a client knows
//! nothing of partitions. A request about one ticket is answered by its partition's owner:
//!
//! - by this node's own engine of the partition, when it owns it;
//! - else forwarded, as it came (the sender's `Nats-Request-Info` stamp with it), on the
//!   partition's subject `tickets.part.<p>.<endpoint subject>`, which only the owner subscribes
//!   to (a queue group, so that a handover's short overlap still answers once). These subjects
//!   stay inside ticketd's account: no client account imports them.
//!
//! A partition with no owner (a failover or a handover under way) answers at once with
//! `UNAVAILABLE` and its details (`partition`, `retry_after_ms`); so does a forwarded request
//! whose owner did not answer in time. Retrying the same command (the same command id) is safe:
//! a command that was appended is answered from the log. An `open` without a ticket id is given
//! one in the partition its command id names, so that its retry reaches the same log.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock, RwLock};
use std::time::Duration;

use async_nats::{Client, HeaderMap};
use bytes::Bytes;
use futures::StreamExt;
use futures::future::BoxFuture;
use prost::Message;
use ticket_domain::{Partition, Partitions, Policy, TicketId};
use ticket_log::EventLog;
use ticket_projections::Projector;
use ticket_proto::{AdminEndpoint, Endpoint, Family, Query, QueryEndpoint, pb};
use ticket_service::{Clock, CommandService};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

use super::reply::{self, Reply};
use super::{Api, ApiConfig, ApiError, ApiHandle, Handler, admin, admit, commands, identity, queries};

/// The subjects a partition's owner answers on: `tickets.part.<p>.<endpoint subject>`.
pub const PARTITION_SUBJECT_PREFIX: &str = "tickets.part";
/// The queue group of a partition's subjects.
const OWNER_QUEUE: &str = "owner";
/// The retry hint of an `UNAVAILABLE` partition (its details' `retry_after_ms`).
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// The subject a request to `endpoint` about a ticket of `partition` is forwarded on.
pub fn partition_subject(partition: Partition, endpoint: Endpoint) -> String {
    format!("{PARTITION_SUBJECT_PREFIX}.{}.{}", partition.index(), endpoint.subject())
}

/// The subjects a node answers the operators' requests about its own read models on
/// (`tickets.admin.lag`, `tickets.admin.rebuild` naming it): `tickets.node.<node>.<endpoint
/// subject>`, inside ticketd's account like the partitions' subjects.
pub const NODE_SUBJECT_PREFIX: &str = "tickets.node";

/// The subject a request to `endpoint` about node `node`'s read models is forwarded on.
fn node_subject(node: &str, endpoint: Endpoint) -> String {
    format!("{NODE_SUBJECT_PREFIX}.{node}.{}", endpoint.subject())
}

/// How long a rebuild forwarded to another node is waited for (every partition's copy of a
/// read model folded again from its log): the operator's client gives up at its own timeout.
const REBUILD_WAIT: Duration = Duration::from_secs(15 * 60);

/// Whether `node` is a node name (as `[cluster] node` takes them), and so one subject token.
fn is_node_name(node: &str) -> bool {
    !node.is_empty() && node.len() <= 64 && node.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// What the operators' cluster endpoints ask of the node's cluster library.
pub trait ClusterControl: Send + Sync + 'static {
    /// `tickets.admin.cluster`: the partitions' leases, heads and placements.
    fn status(&self) -> BoxFuture<'_, Result<pb::ClusterStatus, String>>;
    /// `tickets.admin.move`: places `partition` on `node` (a live node); the owner then hands it
    /// over. Refused (`MALFORMED_REQUEST`) for a node that is not live.
    fn place(&self, partition: Partition, node: String) -> BoxFuture<'_, Result<pb::PartitionMove, pb::Error>>;
    /// This node's name.
    fn node(&self) -> &str;
}

/// Whether this node certainly still holds a partition's lease. What a partition's engine
/// answers is sent only while it does; else `UNAVAILABLE` (a deposed owner that has not noticed
/// yet must not answer from a state that may be stale).
pub type LeaseCheck = Arc<dyn Fn() -> bool + Send + Sync>;

/// Every partition's read models on this node, built from its copies of the partitions' logs,
/// which follow the log stream (`ticket_cluster::Followers`): what the queries that read every
/// partition answer from, and a ticket's queries while its partition has no owner.
pub struct Replicas<L: EventLog> {
    pub views: BTreeMap<Partition, Projector<L>>,
    /// The policy the answers are computed on (the calendars of the business times).
    pub policy: Arc<Policy>,
    /// Where each copy stands against the log stream.
    pub copies: Arc<dyn CopyStatus>,
}

/// Where this node's copies of the partitions' logs stand against the log stream.
pub trait CopyStatus: Send + Sync + 'static {
    /// Why the copy of `partition` does not follow the stream, if it does not.
    fn broken(&self, partition: Partition) -> Option<String>;
    /// Whether the copy of `partition` holds everything the stream has for it now (the stream
    /// is asked); why not if it does not.
    fn current(&self, partition: Partition) -> BoxFuture<'_, Result<(), String>>;
}

impl<L: EventLog> std::fmt::Debug for Replicas<L> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let partitions: Vec<u16> = self.views.keys().map(|p| p.index()).collect();
        f.debug_struct("Replicas").field("partitions", &partitions).field("policy", &self.policy.version()).finish()
    }
}

/// A partition this node serves: its engine's API, and its lease.
struct Served<L: EventLog> {
    api: Arc<Api<L>>,
    held: LeaseCheck,
    /// The requests being answered, which the partition's stop waits for.
    answering: Arc<Answering>,
}

impl<L: EventLog> Clone for Served<L> {
    fn clone(&self) -> Self {
        Self { api: self.api.clone(), held: self.held.clone(), answering: self.answering.clone() }
    }
}

/// The requests a partition's engine is answering (this node's own and forwarded ones), and
/// whether it still takes new ones.
#[derive(Default)]
struct Answering {
    count: std::sync::atomic::AtomicUsize,
    closed: std::sync::atomic::AtomicBool,
    done: tokio::sync::Notify,
}

/// One request being answered (counted until dropped).
struct Taken<'a>(&'a Answering);

impl Drop for Taken<'_> {
    fn drop(&mut self) {
        if self.0.count.fetch_sub(1, std::sync::atomic::Ordering::SeqCst) == 1 {
            self.0.done.notify_waiters();
        }
    }
}

impl Answering {
    /// Counts a request in; none once closed.
    fn take(&self) -> Option<Taken<'_>> {
        use std::sync::atomic::Ordering::SeqCst;
        self.count.fetch_add(1, SeqCst);
        let taken = Taken(self);
        (!self.closed.load(SeqCst)).then_some(taken)
    }

    /// Takes no more requests, and waits up to `deadline` for those being answered; false if
    /// some still were.
    async fn close(&self, deadline: Duration) -> bool {
        use std::sync::atomic::Ordering::SeqCst;
        self.closed.store(true, SeqCst);
        let until = tokio::time::Instant::now() + deadline;
        loop {
            let done = self.done.notified();
            if self.count.load(SeqCst) == 0 {
                return true;
            }
            if tokio::time::timeout_at(until, done).await.is_err() {
                return self.count.load(SeqCst) == 0;
            }
        }
    }
}

/// A partition's engine here did not take a request, and decided nothing: the partition is
/// being handed over by this node (its lease is not certain any more).
struct NotHere;

/// The detail of an `UNAVAILABLE` that decided nothing because the partition is being handed
/// over: the front that forwarded it tries again (see [`Front::route`]).
const HANDOVER_DETAIL: &str = "handover";

impl<L: EventLog> Served<L> {
    /// The engine's answer, while the lease is held; [`NotHere`] if it was not held before the
    /// request was taken.
    async fn answer(
        &self,
        partition: Partition,
        endpoint: Endpoint,
        stamp: Option<&str>,
        payload: &[u8],
    ) -> Result<Reply, NotHere> {
        // Counted while it is answered: the partition's stop waits for it, so that what was
        // taken under the lease is answered under it.
        let Some(_taken) = self.answering.take() else { return Err(NotHere) };
        if !(self.held)() {
            return Err(NotHere);
        }
        let answer = self.api.handle(endpoint, stamp, payload).await;
        if !(self.held)() {
            return Ok(unavailable(
                endpoint,
                partition,
                "was given up by this node while answering; the outcome is unknown",
            ));
        }
        Ok(with_retry_hint(answer, endpoint, partition))
    }
}

/// The partitions this node serves, shared by its front (the public endpoints) and the
/// partitions' own subscriptions.
struct Front<L: EventLog> {
    client: Client,
    partitions: Partitions,
    config: ApiConfig,
    clock: Arc<dyn Clock>,
    local: RwLock<BTreeMap<Partition, Served<L>>>,
    /// How long a forwarded request waits for the owner's answer.
    forward_timeout: Duration,
    /// How long a request waits for a partition being handed over (see [`Front::reach`]).
    handover_wait: Duration,
    control: Arc<dyn ClusterControl>,
    /// Set once this node's copies of every partition are caught up.
    replicas: OnceLock<Arc<Replicas<L>>>,
}

/// A cluster node's API: [`ClusterApi::serve`] adds a partition this node took, and the
/// returned [`PartitionApi`] stops serving it.
pub struct ClusterApi<L: EventLog> {
    front: Arc<Front<L>>,
}

impl<L: EventLog> Clone for ClusterApi<L> {
    fn clone(&self) -> Self {
        Self { front: self.front.clone() }
    }
}

impl<L: EventLog> std::fmt::Debug for ClusterApi<L> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let served: Vec<u16> = self.front.served().iter().map(|p| p.index()).collect();
        f.debug_struct("ClusterApi").field("partitions", &self.front.partitions).field("served", &served).finish()
    }
}

/// Starts a cluster node's public endpoints on `client`, for `partitions` (none served yet: see
/// [`ClusterApi::serve`]). `clock` answers `tickets.admin.clock`, `control`
/// `tickets.admin.cluster` and `tickets.admin.move`. A forwarded request waits up to
/// `forward_timeout` for the owner; a request about a partition being handed over is tried
/// again for up to `handover_wait`.
pub async fn start_cluster<L: EventLog>(
    client: Client,
    partitions: Partitions,
    clock: Arc<dyn Clock>,
    control: Arc<dyn ClusterControl>,
    config: ApiConfig,
    (forward_timeout, handover_wait): (Duration, Duration),
) -> Result<(ApiHandle, ClusterApi<L>), ApiError> {
    let front = Arc::new(Front {
        client: client.clone(),
        partitions,
        config: config.clone(),
        clock,
        local: RwLock::new(BTreeMap::new()),
        forward_timeout,
        handover_wait,
        control,
        replicas: OnceLock::new(),
    });
    let mut handle = super::serve(client.clone(), front.clone(), &config).await?;
    // The operators' requests about this node's own read models, forwarded by whichever node
    // took them.
    let node = front.control.node().to_owned();
    let prefix = format!("{NODE_SUBJECT_PREFIX}.{node}.");
    let mut requests = client.subscribe(format!("{prefix}>")).await.map_err(|e| ApiError::Subscribe(e.to_string()))?;
    // Subscribed before this node answers anything: a lag it names is reachable from then on.
    let _ = client.flush().await;
    let answering = front.clone();
    handle.tasks.spawn(async move {
        while let Some(message) = requests.next().await {
            let Some(reply_to) = message.reply.clone() else { continue };
            let endpoint = message.subject.as_str().strip_prefix(&prefix).and_then(Endpoint::from_subject);
            let (front, client) = (answering.clone(), client.clone());
            tokio::spawn(async move {
                let (body, headers) = match endpoint {
                    Some(endpoint @ Endpoint::Admin(AdminEndpoint::Lag | AdminEndpoint::Rebuild)) => {
                        front.answer_request(endpoint, super::stamp_of(&message), message.payload.clone()).await
                    }
                    Some(_) | None => reply::query_error(
                        pb::ErrorCode::UnknownEndpoint,
                        format!("no endpoint {} on a node's subject", message.subject),
                    ),
                };
                if let Err(e) = client.publish_with_headers(reply_to, headers, body).await {
                    warn!(error = %e, "a forwarded operators' request's reply was not sent");
                }
            });
        }
    });
    Ok((handle, ClusterApi { front }))
}

impl<L: EventLog> ClusterApi<L> {
    /// Serves `partition` from this node with its engine's `service` and `views`, while `held`
    /// says its lease is: the node's own requests about it are answered here, and so are those
    /// other nodes forward.
    pub async fn serve(
        &self,
        partition: Partition,
        service: CommandService<L>,
        views: Projector<L>,
        held: LeaseCheck,
    ) -> Result<PartitionApi, ApiError> {
        let api = Arc::new(Api {
            service,
            views,
            config: self.front.config.clone(),
            placement: Some(super::commands::Placement { all: self.front.partitions, served: Some(partition) }),
        });
        let answering = Arc::new(Answering::default());
        let served = Served { api, held, answering: answering.clone() };
        let subject = format!("{PARTITION_SUBJECT_PREFIX}.{}.>", partition.index());
        let mut requests = self
            .front
            .client
            .queue_subscribe(subject.clone(), OWNER_QUEUE.to_owned())
            .await
            .map_err(|e| ApiError::Subscribe(e.to_string()))?;
        // Subscribed before it is listed: what this node routes here, others can too.
        let _ = self.front.client.flush().await;
        if let Ok(mut local) = self.front.local.write() {
            local.insert(partition, served.clone());
        }
        let (stop, mut stopped) = watch::channel(false);
        let client = self.front.client.clone();
        let prefix = format!("{PARTITION_SUBJECT_PREFIX}.{}.", partition.index());
        let task = tokio::spawn(async move {
            let mut handling = JoinSet::new();
            loop {
                tokio::select! {
                    message = requests.next() => {
                        let Some(message) = message else { break };
                        let Some(reply_to) = message.reply.clone() else { continue };
                        let endpoint = message.subject.as_str().strip_prefix(&prefix).and_then(Endpoint::from_subject);
                        let (served, client) = (served.clone(), client.clone());
                        handling.spawn(async move {
                            let (body, headers) = match endpoint {
                                Some(endpoint) => {
                                    let stamp = super::stamp_of(&message);
                                    match served.answer(partition, endpoint, stamp.as_deref(), &message.payload).await {
                                        Ok(answer) => answer,
                                        Err(NotHere) => handing_over(endpoint, partition),
                                    }
                                }
                                None => reply::command_error(
                                    pb::ErrorCode::UnknownEndpoint,
                                    format!("no endpoint {}", message.subject),
                                ),
                            };
                            if let Err(e) = client.publish_with_headers(reply_to, headers, body).await {
                                warn!(error = %e, "a forwarded request's reply was not sent");
                            }
                        });
                    }
                    Some(_) = handling.join_next(), if !handling.is_empty() => {}
                    _ = stopped.changed() => break,
                }
            }
            let _ = requests.unsubscribe().await;
            // What arrived before the unsubscription is told to come again (nothing decided):
            // its sender tries the next owner.
            while let Ok(Some(message)) = tokio::time::timeout(LEFTOVER_WAIT, requests.next()).await {
                let endpoint = message.subject.as_str().strip_prefix(&prefix).and_then(Endpoint::from_subject);
                if let (Some(reply_to), Some(endpoint)) = (message.reply, endpoint) {
                    let (body, headers) = handing_over(endpoint, partition);
                    let _ = client.publish_with_headers(reply_to, headers, body).await;
                }
            }
            // What was taken is answered before the partition's engine stops.
            while handling.join_next().await.is_some() {}
        });
        let front = self.front.clone();
        let unlist: Box<dyn FnOnce() + Send + Sync> = Box::new(move || {
            if let Ok(mut local) = front.local.write() {
                local.remove(&partition);
            }
        });
        info!(partition = partition.index(), "partition's api served");
        Ok(PartitionApi { partition, stop, task, unlist, answering })
    }

    /// The partitions this node serves now.
    pub fn served(&self) -> Vec<Partition> {
        self.front.served()
    }

    /// Answers the queries that read every partition from `replicas` (until then they are
    /// `UNAVAILABLE` here). Once only: false if it was set already.
    pub fn read_from(&self, replicas: Replicas<L>) -> bool {
        self.front.replicas.set(Arc::new(replicas)).is_ok()
    }
}

/// One partition's share of a node's API; [`PartitionApi::stop`] ends it.
pub struct PartitionApi {
    partition: Partition,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
    unlist: Box<dyn FnOnce() + Send + Sync>,
    answering: Arc<Answering>,
}

impl std::fmt::Debug for PartitionApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PartitionApi").field("partition", &self.partition).finish_non_exhaustive()
    }
}

impl PartitionApi {
    /// Stops taking the partition's requests (this node's and forwarded ones), then waits up to
    /// `deadline` for those being handled to be answered. False if some were still running.
    pub async fn stop(self, deadline: Duration) -> bool {
        let until = tokio::time::Instant::now() + deadline;
        (self.unlist)();
        self.stop.send_replace(true);
        let mut task = self.task;
        let forwarded = match tokio::time::timeout_at(until, &mut task).await {
            Ok(_) => true,
            Err(_) => {
                task.abort();
                false
            }
        };
        // This node's own requests too (routed here by its front, not through the subscription).
        let own = self.answering.close(until.saturating_duration_since(tokio::time::Instant::now())).await;
        forwarded && own
    }
}

impl<L: EventLog> Front<L> {
    fn served(&self) -> Vec<Partition> {
        self.local.read().map(|l| l.keys().copied().collect()).unwrap_or_default()
    }

    async fn answer_request(&self, endpoint: Endpoint, stamp: Option<String>, payload: Bytes) -> Reply {
        // Refused before anything is routed: who may not use an endpoint learns it here.
        let caller = match admit(&self.config.identities, stamp.as_deref(), endpoint) {
            Ok(caller) => caller,
            Err(refused) => return refused,
        };
        match endpoint {
            Endpoint::Command(command) => {
                let wire = match commands::prepared(command, &payload, &self.config, self.partitions) {
                    Ok(wire) => wire,
                    Err(refused) => return refused,
                };
                let ticket = match TicketId::parse(&wire.ticket_id) {
                    Ok(ticket) => ticket,
                    Err(e) => {
                        return reply::command_error(pb::ErrorCode::MalformedRequest, format!("ticket_id: {e}"));
                    }
                };
                let answer = self.route(self.partitions.of(ticket), endpoint, stamp, wire.encode_to_vec().into()).await;
                // The command id the retry must carry, which the client may not know: the
                // service minted it when the command came without one.
                amend_unavailable(answer, endpoint, |error| {
                    error.details.insert("command_id".to_owned(), wire.command_id.clone());
                    if endpoint == Endpoint::Command(ticket_proto::CommandEndpoint::Open) {
                        error.details.insert("ticket_id".to_owned(), wire.ticket_id.clone());
                    }
                })
            }
            Endpoint::Query(query @ (QueryEndpoint::Ticket | QueryEndpoint::Timeline)) => {
                let ticket_id = match queries::decoded(query, &payload, &self.config) {
                    Ok(
                        Query::Ticket(pb::GetTicket { ticket_id, .. })
                        | Query::Timeline(pb::GetTimeline { ticket_id, .. }),
                    ) => ticket_id,
                    Ok(Query::Customer(_) | Query::Board(_) | Query::Compliance(_)) => String::new(),
                    Err(refused) => return refused,
                };
                let partition = match TicketId::parse(&ticket_id) {
                    Ok(ticket) => self.partitions.of(ticket),
                    Err(e) => {
                        return reply::query_error(pb::ErrorCode::MalformedRequest, format!("not a ticket id: {e}"));
                    }
                };
                match self.reach(partition, endpoint, stamp.as_deref(), &payload).await {
                    Ok(answer) => answer,
                    Err(Unreached::Failed(why)) => unavailable(endpoint, partition, &why),
                    // No owner anywhere: this node's copy of the partition answers (the
                    // stream's truth as of the position the answer names).
                    Err(Unreached::NoOwner(why)) => {
                        match self.replicas.get().and_then(|r| Some((r.views.get(&partition)?.clone(), r))) {
                            // Only a copy holding all the stream has for the partition (a node
                            // that was paused, or is catching up, may hold less).
                            Some((views, replicas)) => {
                                if let Err(behind) = replicas.copies.current(partition).await {
                                    return unavailable(endpoint, partition, &format!("{why}, and {behind}"));
                                }
                                debug!(
                                    partition = partition.index(),
                                    why, "a ticket's query answered from this node's copy"
                                );
                                let clock = self.clock.clone();
                                queries::handle(
                                    query,
                                    &caller,
                                    &payload,
                                    &views,
                                    &replicas.policy,
                                    clock.as_ref(),
                                    &self.config,
                                )
                                .await
                            }
                            None => unavailable(endpoint, partition, &why),
                        }
                    }
                }
            }
            Endpoint::Query(query @ (QueryEndpoint::Customer | QueryEndpoint::Board | QueryEndpoint::Compliance)) => {
                self.across(query, &caller, payload).await
            }
            Endpoint::Admin(AdminEndpoint::Clock) => admin::clock_now(self.clock.as_ref(), None),
            Endpoint::Admin(AdminEndpoint::Cluster) => match self.control.status().await {
                Ok(status) => reply::query_reply(pb::query_reply::Result::Cluster(status)),
                Err(e) => reply::query_error(pb::ErrorCode::Unavailable, format!("the cluster's status: {e}")),
            },
            Endpoint::Admin(AdminEndpoint::Move) => {
                let request = match pb::MovePartition::decode(payload) {
                    Ok(request) => request,
                    Err(e) => {
                        return reply::query_error(
                            pb::ErrorCode::MalformedRequest,
                            format!("not a ticket.v1.MovePartition: {e}"),
                        );
                    }
                };
                let Some(partition) = self.partitions.get(u64::from(request.partition)) else {
                    return reply::query_error(
                        pb::ErrorCode::MalformedRequest,
                        format!(
                            "partition: the cluster has partitions 0 to {}, not {}",
                            self.partitions.count() - 1,
                            request.partition
                        ),
                    );
                };
                match self.control.place(partition, request.node).await {
                    Ok(moved) => reply::query_reply(pb::query_reply::Result::Moved(moved)),
                    Err(error) => reply::query_error_of(error),
                }
            }
            Endpoint::Admin(admin @ (AdminEndpoint::Lag | AdminEndpoint::Rebuild)) => {
                self.on_node(admin, stamp, payload).await
            }
            Endpoint::Admin(AdminEndpoint::AdvanceClock) => reply::query_error(
                pb::ErrorCode::Unavailable,
                "tickets.admin.advance_clock: a cluster node runs on the wall clock (ADR 0015)".to_owned(),
            ),
        }
    }

    /// A query that reads every partition (a customer's tickets, the board, compliance),
    /// answered from this node's copies of every partition once each has reached the position
    /// `min_partition_positions` names for it. Lists are merged in the order one read model
    /// keeps (tickets: open first, then by opening instant and id; the board: by due instant
    /// and ticket) and cut at the limit; compliance adds up every partition's outcomes. The
    /// answer's `position` is 0, and `partition_positions` has each partition's; a plain
    /// `min_position` is refused, since positions are per partition.
    async fn across(&self, query: QueryEndpoint, caller: &identity::Caller, payload: Bytes) -> Reply {
        let decoded = match queries::decoded(query, &payload, &self.config) {
            Ok(decoded) => decoded,
            Err(refused) => return refused,
        };
        if decoded.min_position() > 0 {
            return reply::query_error(
                pb::ErrorCode::MalformedRequest,
                format!(
                    "min_position: a cluster's positions are per partition, and tickets.query.{} reads them all; \
                     name them in min_partition_positions (each command reply names its partition)",
                    query.name()
                ),
            );
        }
        let Some(replicas) = self.replicas.get().cloned() else { return not_caught_up(Endpoint::Query(query)) };
        if let Some((partition, broken)) = replicas.views.keys().find_map(|p| Some((*p, replicas.copies.broken(*p)?))) {
            return unavailable(
                Endpoint::Query(query),
                partition,
                &format!("cannot be read on this node: its copy does not follow the stream ({broken})"),
            );
        }
        let deadline = tokio::time::Instant::now() + self.config.read_your_writes_deadline;
        for (&index, &position) in decoded.min_partition_positions() {
            let Some(views) = self.partitions.get(u64::from(index)).and_then(|p| replicas.views.get(&p)) else {
                return reply::query_error(
                    pb::ErrorCode::MalformedRequest,
                    format!("min_partition_positions: the cluster has no partition {index}"),
                );
            };
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if !views.wait_for(position, left).await {
                return reply::query_error(
                    pb::ErrorCode::Timeout,
                    format!("partition {index}'s position {position} not reached in time"),
                );
            }
        }
        let asked = match &decoded {
            Query::Customer(q) => q.limit,
            Query::Board(q) => q.limit,
            Query::Compliance(q) => {
                let views = replicas.views.iter().map(|(p, v)| (*p, v.clone())).collect();
                return queries::compliance_across(caller, q, views, replicas.policy.clone()).await;
            }
            Query::Ticket(_) | Query::Timeline(_) => 0,
        };
        let limit = if asked == 0 { self.config.max_list } else { (asked as usize).min(self.config.max_list) };
        let (mut tickets, mut entries, mut positions) = (Vec::new(), Vec::new(), BTreeMap::new());
        for (partition, views) in &replicas.views {
            let clock = self.clock.clone();
            let answer =
                queries::handle(query, caller, &payload, views, &replicas.policy, clock.as_ref(), &self.config).await;
            let result = match pb::QueryReply::decode(answer.0.clone()) {
                Ok(pb::QueryReply { result: Some(result) }) => result,
                Ok(pb::QueryReply { result: None }) | Err(_) => {
                    return reply::query_error(pb::ErrorCode::Internal, "a partition's answer does not decode".into());
                }
            };
            let index = u32::from(partition.index());
            match result {
                pb::query_reply::Result::Tickets(list) => {
                    positions.insert(index, list.position);
                    tickets.extend(list.tickets);
                }
                pb::query_reply::Result::Board(board) => {
                    positions.insert(index, board.position);
                    entries.extend(board.entries);
                }
                pb::query_reply::Result::Error(_)
                | pb::query_reply::Result::Ticket(_)
                | pb::query_reply::Result::Timeline(_)
                | pb::query_reply::Result::Compliance(_)
                | pb::query_reply::Result::Lag(_)
                | pb::query_reply::Result::Rebuilt(_)
                | pb::query_reply::Result::Clock(_)
                | pb::query_reply::Result::ClockAdvanced(_)
                | pb::query_reply::Result::Cluster(_)
                | pb::query_reply::Result::Moved(_) => return answer,
            }
        }
        let instant = |t: Option<&pbjson_types::Timestamp>| t.map_or((i64::MIN, 0), |t| (t.seconds, t.nanos));
        match query {
            QueryEndpoint::Customer => {
                let resolved = pb::TicketStatus::Resolved as i32;
                tickets.sort_by(|a, b| {
                    (a.status == resolved, instant(a.opened_at.as_ref()), &a.ticket_id).cmp(&(
                        b.status == resolved,
                        instant(b.opened_at.as_ref()),
                        &b.ticket_id,
                    ))
                });
                tickets.truncate(limit);
                let list = pb::TicketList { tickets, position: 0, partition_positions: positions };
                reply::query_reply(pb::query_reply::Result::Tickets(list))
            }
            QueryEndpoint::Board | QueryEndpoint::Ticket | QueryEndpoint::Timeline | QueryEndpoint::Compliance => {
                entries.sort_by(|a, b| {
                    (instant(a.due_at.as_ref()), &a.ticket_id).cmp(&(instant(b.due_at.as_ref()), &b.ticket_id))
                });
                entries.truncate(limit);
                let board = pb::Board { entries, position: 0, partition_positions: positions };
                reply::query_reply(pb::query_reply::Result::Board(board))
            }
        }
    }

    /// `tickets.admin.lag` and `tickets.admin.rebuild`: about one node's read models (its
    /// copies of every partition, which each node keeps for itself). Answered here when the
    /// request names this node, or, for the lag, no node (the answer names this one); else
    /// forwarded on the named node's subject, the sender's stamp with it. A rebuild must name
    /// its node: which node takes a request is the queue group's choice.
    async fn on_node(&self, admin: AdminEndpoint, stamp: Option<String>, payload: Bytes) -> Reply {
        let endpoint = Endpoint::Admin(admin);
        let request = match ticket_proto::AdminRequest::decode(admin, &payload) {
            Ok(request) => request,
            Err(e) => {
                let message = format!("not a {}: {e}", admin.message_name());
                return reply::query_error(pb::ErrorCode::MalformedRequest, message);
            }
        };
        // The node asked about, and for a rebuild the projection's name.
        let (node, rebuild) = match request {
            ticket_proto::AdminRequest::Lag(r) => (r.node, None),
            ticket_proto::AdminRequest::Rebuild(r) => (r.node, Some(r.name)),
            ticket_proto::AdminRequest::Clock(_)
            | ticket_proto::AdminRequest::AdvanceClock(_)
            | ticket_proto::AdminRequest::Cluster(_)
            | ticket_proto::AdminRequest::Move(_) => {
                let message = format!("tickets.admin.{} is not about a node's read models", admin.name());
                return reply::query_error(pb::ErrorCode::UnknownEndpoint, message);
            }
        };
        let here = self.control.node();
        if node.is_empty() && rebuild.is_some() {
            return reply::query_error(
                pb::ErrorCode::MalformedRequest,
                "node: each node of a cluster keeps read models of its own; name the node whose copies to rebuild \
                 (ticketctl cluster status lists the nodes)"
                    .to_owned(),
            );
        }
        if node.is_empty() || node == here {
            let Some(replicas) = self.replicas.get().cloned() else { return not_caught_up(endpoint) };
            return match rebuild {
                Some(name) => self.rebuild_here(&replicas, name).await,
                None => self.lag_here(&replicas),
            };
        }
        if !is_node_name(&node) {
            return reply::query_error(
                pb::ErrorCode::MalformedRequest,
                format!("node: {node:?} is not a node name (letters, digits, '-' and '_', at most 64)"),
            );
        }
        let wait = if rebuild.is_some() { REBUILD_WAIT } else { self.forward_timeout };
        match self.client.send_request(node_subject(&node, endpoint), forwarded(payload, stamp.as_deref(), wait)).await
        {
            Ok(answer) => (answer.payload, answer.headers.unwrap_or_default()),
            Err(e) => {
                use async_nats::client::RequestErrorKind;
                let why = match e.kind() {
                    RequestErrorKind::NoResponders => {
                        "does not answer: no node of that name is running (ticketctl cluster status lists the live ones)"
                            .to_owned()
                    }
                    RequestErrorKind::TimedOut => format!("did not answer within {} s", wait.as_secs()),
                    RequestErrorKind::InvalidSubject
                    | RequestErrorKind::MaxPayloadExceeded
                    | RequestErrorKind::Other => format!("could not be reached: {e}"),
                };
                reply::query_error(pb::ErrorCode::Unavailable, format!("node {node} {why}"))
            }
        }
    }

    /// A rebuild of projection `name` on this node's copy of every partition, one after
    /// another (each off the async runtime).
    async fn rebuild_here(&self, replicas: &Replicas<L>, name: String) -> Reply {
        let node = self.control.node().to_owned();
        info!(projection = %name, node, "projection rebuild requested on this node's copies");
        let mut rebuilt = pb::ProjectionRebuilt { name: name.clone(), node, ..Default::default() };
        for (partition, views) in &replicas.views {
            match admin::rebuilt(views.clone(), name.clone()).await {
                Ok((events, position)) => {
                    rebuilt.events += events;
                    rebuilt.partition_positions.insert(u32::from(partition.index()), position);
                }
                Err(mut error) => {
                    error.message = format!("partition {partition}'s copy: {}", error.message);
                    error.details.insert("partition".to_owned(), partition.index().to_string());
                    return reply::query_error_of(error);
                }
            }
        }
        reply::query_reply(pb::query_reply::Result::Rebuilt(rebuilt))
    }

    /// The lag of this node's read models: each partition's copy's, named `p<partition>/<model>`.
    fn lag_here(&self, replicas: &Replicas<L>) -> Reply {
        let mut all = pb::ProjectionLags { node: self.control.node().to_owned(), ..Default::default() };
        for (partition, views) in &replicas.views {
            let lags = ticket_projections::answer::projection_status(views);
            all.projections.extend(
                lags.projections
                    .into_iter()
                    .map(|lag| pb::ProjectionLag { name: format!("p{}/{}", partition.index(), lag.name), ..lag }),
            );
            all.quarantined.extend(lags.quarantined);
        }
        reply::query_reply(pb::query_reply::Result::Lag(all))
    }

    /// The partition's engine on this node, if it serves it.
    fn served_here(&self, partition: Partition) -> Option<Served<L>> {
        self.local.read().ok().and_then(|l| l.get(&partition).cloned())
    }

    /// Answers a request about a ticket of `partition`: here if this node serves it, else by
    /// its owner.
    async fn route(&self, partition: Partition, endpoint: Endpoint, stamp: Option<String>, payload: Bytes) -> Reply {
        match self.reach(partition, endpoint, stamp.as_deref(), &payload).await {
            Ok(answer) => answer,
            Err(Unreached::NoOwner(why) | Unreached::Failed(why)) => unavailable(endpoint, partition, &why),
        }
    }

    /// The answer of the partition's owner: this node's engine if it serves it, else the owner
    /// the request is forwarded to. While the partition is being handed over (no owner, or one
    /// giving it up, and nothing decided) it is tried again for up to `handover_wait`, so that a
    /// planned handover fails no request; past that, [`Unreached::NoOwner`]. An owner that
    /// took the request but did not answer in time is [`Unreached::Failed`] at once (the
    /// outcome is unknown).
    async fn reach(
        &self,
        partition: Partition,
        endpoint: Endpoint,
        stamp: Option<&str>,
        payload: &[u8],
    ) -> Result<Reply, Unreached> {
        let until = tokio::time::Instant::now() + self.handover_wait;
        loop {
            let (why, here) = match self.served_here(partition) {
                Some(served) => match served.answer(partition, endpoint, stamp, payload).await {
                    Ok(answer) => return Ok(answer),
                    Err(NotHere) => ("is being given up by this node (its lease is not certain)".to_owned(), true),
                },
                None => match self.forward(partition, endpoint, stamp, Bytes::copy_from_slice(payload)).await {
                    Ok(answer) if !is_handing_over(&answer, endpoint) => return Ok(answer),
                    Ok(_) => ("is being handed over by its owner".to_owned(), false),
                    Err(Unreached::NoOwner(why)) => (why, false),
                    Err(failed @ Unreached::Failed(_)) => return Err(failed),
                },
            };
            if tokio::time::Instant::now() + HANDOVER_STEP >= until {
                // Still being given up here: another node may own it already (this one may have
                // been paused), so nothing here may answer for it.
                return Err(if here { Unreached::Failed(why) } else { Unreached::NoOwner(why) });
            }
            tokio::time::sleep(HANDOVER_STEP).await;
        }
    }

    /// The owner's answer to a request forwarded on the partition's subject; why there is none
    /// (no owner, or none in time).
    async fn forward(
        &self,
        partition: Partition,
        endpoint: Endpoint,
        stamp: Option<&str>,
        payload: Bytes,
    ) -> Result<Reply, Unreached> {
        let request = forwarded(payload, stamp, self.forward_timeout);
        match self.client.send_request(partition_subject(partition, endpoint), request).await {
            Ok(answer) => Ok((answer.payload, answer.headers.unwrap_or_default())),
            Err(e) => {
                use async_nats::client::RequestErrorKind;
                let unreached = match e.kind() {
                    RequestErrorKind::NoResponders => Unreached::NoOwner(
                        "has no owner at the moment (a failover or a handover is under way)".to_owned(),
                    ),
                    RequestErrorKind::TimedOut => Unreached::Failed(format!(
                        "did not answer within {} ms; the outcome is unknown",
                        self.forward_timeout.as_millis()
                    )),
                    RequestErrorKind::InvalidSubject
                    | RequestErrorKind::MaxPayloadExceeded
                    | RequestErrorKind::Other => Unreached::Failed(format!("could not be reached: {e}")),
                };
                debug!(partition = partition.index(), endpoint = endpoint.name(), why = ?unreached, "partition unavailable");
                Err(unreached)
            }
        }
    }
}

/// A request forwarded to another node as it came: its payload and its sender's
/// `Nats-Request-Info` stamp, answered within `wait`.
fn forwarded(payload: Bytes, stamp: Option<&str>, wait: Duration) -> async_nats::Request {
    let mut headers = HeaderMap::new();
    if let Some(stamp) = stamp {
        headers.insert(identity::REQUEST_INFO_HEADER, stamp);
    }
    async_nats::Request::new().payload(payload).headers(headers).timeout(Some(wait))
}

/// Why a partition's owner did not answer.
#[derive(Debug)]
enum Unreached {
    /// Nobody serves it (a failover, or a handover that took longer than the wait): nothing was
    /// decided.
    NoOwner(String),
    /// The owner was asked and did not answer, or could not be asked: the outcome is unknown.
    Failed(String),
}

/// How long a stopping partition waits for requests that arrived before it unsubscribed.
const LEFTOVER_WAIT: Duration = Duration::from_millis(50);

/// How often a request is tried again while its partition is being handed over.
const HANDOVER_STEP: Duration = Duration::from_millis(50);

/// `UNAVAILABLE` from a partition being handed over by this node, nothing decided: the front
/// that forwarded the request tries again.
fn handing_over(endpoint: Endpoint, partition: Partition) -> Reply {
    let mut error = pb::Error {
        code: pb::ErrorCode::Unavailable as i32,
        message: format!("partition {partition} is being handed over by this node; nothing was decided"),
        details: Default::default(),
    };
    hint(&mut error, partition);
    error.details.insert(HANDOVER_DETAIL.to_owned(), "true".to_owned());
    reply::error_of(endpoint.family(), error)
}

/// Whether `answer` is a [`handing_over`] one.
fn is_handing_over(answer: &Reply, endpoint: Endpoint) -> bool {
    unavailable_error(answer, endpoint).is_some_and(|e| e.details.get(HANDOVER_DETAIL).is_some_and(|v| v == "true"))
}

/// `UNAVAILABLE` while this node's copies of the partitions are being caught up (another node
/// may answer: the retry may reach it).
fn not_caught_up(endpoint: Endpoint) -> Reply {
    let retry = RETRY_AFTER.as_millis().to_string();
    let error = pb::Error {
        code: pb::ErrorCode::Unavailable as i32,
        message: format!(
            "this node's copies of the partitions are still being caught up from the log stream; retry in {retry} ms"
        ),
        details: [("retry_after_ms".to_owned(), retry)].into(),
    };
    reply::error_of(endpoint.family(), error)
}

/// `UNAVAILABLE` for a partition, in the reply type of the endpoint's family, with the
/// partition and a retry hint in its details.
fn unavailable(endpoint: Endpoint, partition: Partition, why: &str) -> Reply {
    let retry = RETRY_AFTER.as_millis().to_string();
    let mut error = pb::Error {
        code: pb::ErrorCode::Unavailable as i32,
        message: format!(
            "partition {partition} {why}; retry in {retry} ms (a command with the same command id is safe to retry)"
        ),
        details: Default::default(),
    };
    hint(&mut error, partition);
    reply::error_of(endpoint.family(), error)
}

/// The partition and the retry hint in an `UNAVAILABLE` error's details.
fn hint(error: &mut pb::Error, partition: Partition) {
    error.details.insert("partition".to_owned(), partition.to_string());
    error.details.insert("retry_after_ms".to_owned(), RETRY_AFTER.as_millis().to_string());
}

/// A partition's own answer, its `UNAVAILABLE` (the partition given up under it: deposed, or an
/// append of unknown outcome) given the partition and the retry hint, as the front's own.
fn with_retry_hint(answer: Reply, endpoint: Endpoint, partition: Partition) -> Reply {
    amend_unavailable(answer, endpoint, |error| hint(error, partition))
}

/// `answer`, its error given `amend` if it is `UNAVAILABLE`; as it is otherwise.
fn amend_unavailable(answer: Reply, endpoint: Endpoint, amend: impl FnOnce(&mut pb::Error)) -> Reply {
    match unavailable_error(&answer, endpoint) {
        Some(mut error) => {
            amend(&mut error);
            reply::error_of(endpoint.family(), error)
        }
        None => answer,
    }
}

/// The error of an `UNAVAILABLE` answer (none for any other).
fn unavailable_error(answer: &Reply, endpoint: Endpoint) -> Option<pb::Error> {
    let code = answer.1.get(async_nats::service::NATS_SERVICE_ERROR_CODE).map(|v| v.as_str().to_owned());
    if code.as_deref() != Some((pb::ErrorCode::Unavailable as i32).to_string().as_str()) {
        return None;
    }
    match endpoint.family() {
        Family::Command => pb::CommandReply::decode(answer.0.clone()).ok().and_then(|r| match r.result {
            Some(pb::command_reply::Result::Error(e)) => Some(e),
            Some(pb::command_reply::Result::Accepted(_)) | None => None,
        }),
        Family::Query | Family::Admin => pb::QueryReply::decode(answer.0.clone()).ok().and_then(|r| match r.result {
            Some(pb::query_reply::Result::Error(e)) => Some(e),
            Some(_) | None => None,
        }),
    }
}

impl<L: EventLog> Handler for Front<L> {
    fn answer(&self, endpoint: Endpoint, stamp: Option<String>, payload: Bytes) -> BoxFuture<'_, Reply> {
        Box::pin(self.answer_request(endpoint, stamp, payload))
    }
}
