//! Where ticketctl's commands and views are answered: the engine embedded on a data directory
//! ([`Local`]) or a running ticketd over NATS ([`Remote`]). Both answer with the API's reply
//! messages, which `render` prints, so a view is the same in either mode.

use std::path::Path;
use std::sync::Arc;

use ticket_domain::{Command, CustomerId, Policy, Ticket, TicketId, Timestamp};
use ticket_engine::{DataDir, Engine, EngineConfig};
use ticket_log::{EventLog, StateStore};
use ticket_log_sled::SledLog;
use ticket_projections::answer::Views;
use ticket_projections::{
    At, BoardEntry, Period, Projector, ProjectorConfig, ReadModels, Tally, TimelineEntry, answer,
};
use ticket_proto::pb;
use ticket_service::{CommandRequest, Stamp};

use crate::Failure;
use crate::output::progress;
use ticket_client::{Client, ClientError};

/// What ticketctl asks of an engine.
pub trait Backend {
    /// A running ticketd's connection settings, for what only a running ticketd does (its
    /// clock); `None` in local mode.
    fn remote(&self) -> Option<&Remote<'_>> {
        None
    }
    /// Decides and appends a command; a refusal is [`Failure::Refused`].
    fn command(&self, command: Command) -> Result<pb::CommandAccepted, Failure>;
    /// A ticket from the ticket detail read model.
    fn detail(&self, ticket: TicketId, at: At) -> Result<pb::TicketView, Failure>;
    /// A ticket folded from its own events in the log (remotely: the detail read model).
    fn state(&self, ticket: TicketId, at: At) -> Result<pb::TicketView, Failure>;
    fn customer(
        &self,
        customer: CustomerId,
        include_resolved: bool,
        limit: u32,
        at: At,
    ) -> Result<pb::TicketList, Failure>;
    fn board(&self, limit: u32, at: At) -> Result<pb::Board, Failure>;
    fn timeline(&self, ticket: TicketId, at: At) -> Result<pb::Timeline, Failure>;
    fn compliance(&self, period: Period, at: At) -> Result<pb::ComplianceReport, Failure>;
    /// The projections' positions; with `update`, caught up (and flushed to the state store) first (local).
    /// On a cluster, `node` names the node whose read models are reported.
    fn lags(&self, update: bool, checkpoint_events: u64, node: Option<&str>) -> Result<pb::ProjectionLags, Failure>;
    /// Rebuilds one projection in place, or (locally, no name) all from scratch; on a cluster,
    /// on the copies of node `node`.
    fn rebuild(
        &self,
        name: Option<&str>,
        checkpoint_events: u64,
        node: Option<&str>,
    ) -> Result<pb::ProjectionRebuilt, Failure>;
}

/// A query's error reply as a failure.
/// A query's refusal: an unknown ticket as ticketctl reports one, anything else (the stored
/// state could not be read: `UNAVAILABLE`) as the API's error.
fn refused(e: pb::Error, ticket: TicketId) -> Failure {
    if e.code == pb::ErrorCode::TicketNotFound as i32 { not_found(ticket) } else { Failure::Refused(e) }
}

/// `--node` names a node of a running cluster: local mode reads one data directory.
fn local_has_no_node(node: Option<&str>) -> Result<(), Failure> {
    match node {
        Some(node) => Err(Failure::Usage(format!(
            "--node {node}: names a node of a running cluster, reached with --nats-url (local mode reads --data-dir)"
        ))),
        None => Ok(()),
    }
}

fn not_found(ticket: TicketId) -> Failure {
    Failure::Refused(pb::Error {
        code: pb::ErrorCode::TicketNotFound as i32,
        message: format!("ticket {ticket} not found at that moment"),
        details: Default::default(),
    })
}

/// The engine embedded on a data directory. The log is opened exclusively: ticketd must not be
/// running on it.
pub struct Local<'a> {
    pub data_dir: &'a Path,
    /// The policy file given, else the embedded default.
    pub policy: Option<&'a Path>,
    pub runtime: &'a tokio::runtime::Runtime,
}

impl Local<'_> {
    fn policy(&self) -> Result<Policy, Failure> {
        crate::load_policy(self.policy)
    }

    fn open(&self) -> Result<SledLog, Failure> {
        crate::local::open(self.data_dir)
    }

    fn state(&self) -> Result<Arc<dyn StateStore>, Failure> {
        Ok(Arc::new(DataDir::new(self.data_dir).open_state()?))
    }

    /// The read models kept in the data directory's state store (opened exclusively, like the
    /// log), made durable every `checkpoint_events` events while catching up.
    fn projector(&self, log: SledLog, checkpoint_events: u64) -> Result<Projector<SledLog>, Failure> {
        let defaults = ProjectorConfig::default();
        let sync = checkpoint_events.max(1);
        let config = ProjectorConfig {
            catch_up_flush_events: defaults.catch_up_flush_events.min(sync),
            catch_up_sync_events: sync,
            ..defaults
        };
        Ok(Projector::open(log, Some(self.state()?), config))
    }

    /// The read models as of `at`: for now, those of the state store caught up from the log (and
    /// flushed), answering from their rows in memory and on disk; for a past moment, computed from
    /// the log in memory, touching nothing. With the instant the models describe (for the
    /// business time of running clocks).
    fn models(&self, at: At) -> Result<(Models, SledLog, Timestamp), Failure> {
        let log = self.open()?;
        if at != At::Now {
            let bar = progress(log.head(), "replaying");
            let models = ReadModels::build(&log, at, |done, _| bar.set_position(done))?;
            bar.finish_and_clear();
            let now = as_of(at, &log)?;
            return Ok((Models::At(Box::new(models)), log, now));
        }
        let projector = self.projector(log.clone(), ProjectorConfig::default().catch_up_sync_events)?;
        catch_up(&projector)?;
        let now = as_of(at, &log)?;
        Ok((Models::Live(projector), log, now))
    }
}

/// The read models a local query is answered from.
enum Models {
    /// The store-backed projector, caught up.
    Live(Projector<SledLog>),
    /// Built in memory as of a past moment.
    At(Box<ReadModels>),
}

impl Views for Models {
    fn ticket(&self, id: TicketId) -> Result<(Option<Ticket>, u64), ticket_log::LogError> {
        match self {
            Models::Live(p) => p.ticket(id),
            Models::At(m) => m.ticket(id),
        }
    }
    fn customer(
        &self,
        customer: &CustomerId,
        include_resolved: bool,
        limit: usize,
    ) -> Result<(Vec<Ticket>, u64), ticket_log::LogError> {
        match self {
            Models::Live(p) => p.customer(customer, include_resolved, limit),
            Models::At(m) => m.customer(customer, include_resolved, limit),
        }
    }
    fn board(&self, limit: usize) -> Result<(Vec<BoardEntry>, u64), ticket_log::LogError> {
        match self {
            Models::Live(p) => p.board(limit),
            Models::At(m) => m.board(limit),
        }
    }
    fn timeline<L: EventLog>(&self, id: TicketId, log: &L) -> Result<(Vec<TimelineEntry>, u64), ticket_log::LogError> {
        match self {
            Models::Live(p) => p.timeline(id, log),
            Models::At(m) => m.timeline(id, log),
        }
    }
    fn tally(&self, period: Period, policy: &Policy) -> Result<(Tally, u64), ticket_log::LogError> {
        match self {
            Models::Live(p) => p.tally(period, policy),
            Models::At(m) => m.tally(period, policy),
        }
    }
}

/// Catches the projector up with the log and flushes it.
fn catch_up(projector: &Projector<SledLog>) -> Result<u64, Failure> {
    let bar = progress(projector.log().head(), "catching up");
    bar.set_position(projector.position());
    let last = projector.catch_up(|done, _| bar.set_position(done)).map_err(|e| Failure::Data(e.into()))?;
    projector.flush().map_err(|e| Failure::Data(e.into()))?;
    bar.finish_and_clear();
    Ok(last)
}

/// The instant the read models describe: the moment asked for, else the newest event's.
/// For now, the later of the wall clock and the newest event (a log may hold instants ahead of
/// the wall clock: a simulated one).
fn as_of(at: At, log: &SledLog) -> Result<Timestamp, Failure> {
    let head = match at {
        At::Instant(t) => return Ok(t),
        At::Position(p) => p.min(log.head()),
        At::Now => log.head(),
    };
    let newest = if head == 0 { None } else { log.read_from(head, 1)?.first().map(|e| e.event.occurred_at) };
    Ok(match (at, newest) {
        (At::Position(_) | At::Instant(_), Some(t)) => t,
        (At::Now, Some(t)) => t.max(ticket_log::now()),
        (At::Position(_) | At::Instant(_) | At::Now, None) => ticket_log::now(),
    })
}

impl Backend for Local<'_> {
    fn command(&self, command: Command) -> Result<pb::CommandAccepted, Failure> {
        let policy = std::sync::Arc::new(self.policy()?);
        let ticket_id = command.ticket_id;
        let request = CommandRequest { command, correlation_id: None, causation_id: None, stamp: Stamp::ServiceClock };
        let result = self.runtime.block_on(async {
            // One command: the service on the log, with neither the timer nor the read models.
            let config = EngineConfig { projector: None, ..EngineConfig::new(DataDir::new(self.data_dir), policy) };
            let engine = Engine::start(config).await?;
            let result = engine.service().execute(request).await;
            engine.stop(std::time::Duration::ZERO).await;
            anyhow::Ok(result)
        })?;
        match result {
            Ok(result) => Ok(pb::CommandAccepted {
                // The events name the ticket: for a repeated `open`, the original one.
                ticket_id: result.events.first().map_or(ticket_id, |e| e.event.ticket_id).to_string(),
                events: result.events.iter().map(pb::EventEnvelope::from).collect(),
                duplicate: result.duplicate,
                partition: None,
            }),
            Err(e) => Err(Failure::Refused(ticket_nats::service_error(&e))),
        }
    }

    fn detail(&self, ticket: TicketId, at: At) -> Result<pb::TicketView, Failure> {
        let policy = self.policy()?;
        let (models, _, now) = self.models(at)?;
        answer::ticket(&models, ticket, &policy, now).map_err(|e| refused(e, ticket))
    }

    fn state(&self, ticket: TicketId, at: At) -> Result<pb::TicketView, Failure> {
        let policy = self.policy()?;
        let log = self.open()?;
        let (state, last) = ticket_service::replay::state_at(&log, ticket, at)?;
        let Some(t) = state.ticket() else { return Err(not_found(ticket)) };
        // As of the log's position, as a read model says it (for an instant: the ticket's last
        // event by then).
        let position = match at {
            At::Now => log.head(),
            At::Position(p) => p.min(log.head()),
            At::Instant(_) => last,
        };
        Ok(answer::ticket_view(t, position, &policy, as_of(at, &log)?))
    }

    fn customer(
        &self,
        customer: CustomerId,
        include_resolved: bool,
        limit: u32,
        at: At,
    ) -> Result<pb::TicketList, Failure> {
        let policy = self.policy()?;
        let (models, _, now) = self.models(at)?;
        answer::customer(&models, &customer, include_resolved, limit as usize, &policy, now).map_err(Failure::Refused)
    }

    fn board(&self, limit: u32, at: At) -> Result<pb::Board, Failure> {
        let (models, _, _) = self.models(at)?;
        answer::board(&models, limit as usize).map_err(Failure::Refused)
    }

    fn timeline(&self, ticket: TicketId, at: At) -> Result<pb::Timeline, Failure> {
        let (models, log, _) = self.models(at)?;
        answer::timeline(&models, ticket, &log).map_err(|e| refused(e, ticket))
    }

    fn compliance(&self, period: Period, at: At) -> Result<pb::ComplianceReport, Failure> {
        let policy = self.policy()?;
        let (models, _, _) = self.models(at)?;
        answer::compliance(&models, period, &policy).map_err(Failure::Refused)
    }

    fn lags(&self, update: bool, checkpoint_events: u64, node: Option<&str>) -> Result<pb::ProjectionLags, Failure> {
        local_has_no_node(node)?;
        let projector = self.projector(self.open()?, checkpoint_events)?;
        if update {
            catch_up(&projector)?;
        }
        Ok(answer::projection_status(&projector))
    }

    fn rebuild(
        &self,
        name: Option<&str>,
        checkpoint_events: u64,
        node: Option<&str>,
    ) -> Result<pb::ProjectionRebuilt, Failure> {
        local_has_no_node(node)?;
        let log = self.open()?;
        let head = log.head();
        let Some(name) = name else {
            // From scratch: the stored models go (and the checkpoints of before the state store),
            // then everything is applied again, flushed every `checkpoint_events`.
            let old = DataDir::new(self.data_dir).projections();
            if old.exists() {
                std::fs::remove_dir_all(old)?;
            }
            let state = self.state()?;
            for space in ["tickets", "board", "compliance"] {
                state.space(space)?.clear()?;
            }
            state.sync()?;
            drop(state);
            let projector = self.projector(log, checkpoint_events)?;
            let events = catch_up(&projector)?;
            return Ok(pb::ProjectionRebuilt { name: "all".into(), events, position: head, ..Default::default() });
        };
        let projector = self.projector(log, checkpoint_events)?;
        let bar = progress(head, "rebuilding");
        let events = projector.rebuild(name, |done, _| bar.set_position(done)).map_err(|e| match e {
            ticket_projections::ProjectorError::UnknownProjection(_) => Failure::Usage(e.to_string()),
            ticket_projections::ProjectorError::Log(_)
            | ticket_projections::ProjectorError::State { .. }
            | ticket_projections::ProjectorError::Stopped => Failure::Data(e.into()),
        })?;
        bar.finish_and_clear();
        Ok(pb::ProjectionRebuilt {
            name: name.to_owned(),
            events,
            position: projector.position(),
            ..Default::default()
        })
    }
}

/// A running ticketd over NATS, through the typed client. It serves the read models as they are
/// now; `--at` moments are computed from a log, in local mode.
pub struct Remote<'a> {
    pub url: &'a ticket_nats::connection::NatsUrl,
    pub credentials: ticket_nats::connection::Credentials,
    pub tls: ticket_nats::connection::Tls,
    pub runtime: &'a tokio::runtime::Runtime,
    /// No `--actor` was given: the command goes without one, and ticketd records the identity
    /// the NATS server stamped on the request.
    pub stamped_actor: bool,
}

impl Remote<'_> {
    /// Connects, then runs `work` with the client.
    pub fn with_client<T, F: Future<Output = Result<T, Failure>>>(
        &self,
        work: impl FnOnce(Client) -> F,
    ) -> Result<T, Failure> {
        self.runtime.block_on(async {
            let client =
                Client::connect_with_tls(self.url, &self.credentials, &self.tls, "ticketctl").await.map_err(failure)?;
            work(client).await
        })
    }

    fn now_only(at: At) -> Result<(), Failure> {
        match at {
            At::Now => Ok(()),
            At::Position(_) | At::Instant(_) => Err(Failure::Usage(
                "--at is computed from the log: run it in local mode on the data directory (without --nats-url)".into(),
            )),
        }
    }

    /// Connects and runs one request: a refusal is [`Failure::Refused`] with ticketd's wire
    /// error, anything else (no ticketd, a timeout, the connection) a data failure.
    fn ask<T, F: Future<Output = Result<T, ClientError>>>(
        &self,
        request: impl FnOnce(Client) -> F,
    ) -> Result<T, Failure> {
        self.runtime.block_on(async {
            let client =
                Client::connect_with_tls(self.url, &self.credentials, &self.tls, "ticketctl").await.map_err(failure)?;
            request(client).await.map_err(failure)
        })
    }
}

pub(crate) fn failure(e: ClientError) -> Failure {
    match e.to_wire() {
        Some(error) => Failure::Refused(error),
        None => Failure::Data(e.into()),
    }
}

impl<'r> Backend for Remote<'r> {
    fn remote(&self) -> Option<&Remote<'_>> {
        Some(self)
    }

    /// The service stamps the instant: the command's is not sent. Nor is a split's new ticket id:
    /// the service mints it in the parent's partition (a cluster's, ADR 0015).
    fn command(&self, command: Command) -> Result<pb::CommandAccepted, Failure> {
        let mut wire = pb::Command::from(&command);
        wire.issued_at = None;
        if let Some(pb::command::Body::Split(split)) = wire.body.as_mut() {
            split.new_ticket_id.clear();
        }
        if self.stamped_actor {
            wire.actor = None;
        }
        self.ask(|c| async move { c.send_wire(wire).await }).map(|accepted| accepted.to_wire())
    }

    fn detail(&self, ticket: TicketId, at: At) -> Result<pb::TicketView, Failure> {
        Self::now_only(at)?;
        self.ask(|c| async move { c.ticket(ticket, 0).await })
    }

    fn state(&self, ticket: TicketId, at: At) -> Result<pb::TicketView, Failure> {
        self.detail(ticket, at)
    }

    fn customer(
        &self,
        customer: CustomerId,
        include_resolved: bool,
        limit: u32,
        at: At,
    ) -> Result<pb::TicketList, Failure> {
        Self::now_only(at)?;
        self.ask(|c| async move { c.customer_tickets(&customer, include_resolved, limit, 0).await })
    }

    fn board(&self, limit: u32, at: At) -> Result<pb::Board, Failure> {
        Self::now_only(at)?;
        self.ask(|c| async move { c.board(limit, 0).await })
    }

    fn timeline(&self, ticket: TicketId, at: At) -> Result<pb::Timeline, Failure> {
        Self::now_only(at)?;
        self.ask(|c| async move { c.timeline(ticket, 0).await })
    }

    fn compliance(&self, period: Period, at: At) -> Result<pb::ComplianceReport, Failure> {
        Self::now_only(at)?;
        self.ask(|c| async move { c.compliance(period.from, period.to, 0).await })
    }

    fn lags(&self, _update: bool, _checkpoint_events: u64, node: Option<&str>) -> Result<pb::ProjectionLags, Failure> {
        self.ask(|c| async move { c.projection_lag(node).await })
    }

    fn rebuild(
        &self,
        name: Option<&str>,
        _checkpoint_events: u64,
        node: Option<&str>,
    ) -> Result<pb::ProjectionRebuilt, Failure> {
        let Some(name) = name else {
            return Err(Failure::Usage("a running ticketd rebuilds one projection at a time: name it".into()));
        };
        self.ask(|c| async move { c.rebuild_projection(name, node).await })
    }
}
