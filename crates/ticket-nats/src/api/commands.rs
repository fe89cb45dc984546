//! The command endpoints (`tickets.cmd.<command>`): decode, fill in what a client may leave out,
//! execute on the command service, answer with the events and their positions.

use prost::Message;
use ticket_domain::{CommandId, Partition, Partitions, TicketId, TraceId};
use ticket_log::EventLog;
use ticket_proto::{CommandEndpoint, Endpoint, pb};
use ticket_service::{CommandRequest, CommandResult, CommandService, Stamp};
use tracing::{debug, warn};

use super::ApiConfig;
use super::identity::{Caller, Denied, Role};
use super::reply::{self, Reply};

/// Where a cluster's engine places tickets: the cluster's partitions, and the one it serves.
#[derive(Debug, Clone, Copy)]
pub(super) struct Placement {
    pub(super) all: Partitions,
    pub(super) served: Option<Partition>,
}

pub(super) async fn handle<L: EventLog>(
    endpoint: CommandEndpoint,
    caller: &Caller,
    payload: &[u8],
    service: &CommandService<L>,
    config: &ApiConfig,
    placement: Option<Placement>,
) -> Reply {
    let partitions = placement.map(|p| p.all);
    let mut wire = match prepared(endpoint, payload, config, partitions.unwrap_or(Partitions::SINGLE)) {
        Ok(wire) => wire,
        Err(refused) => return refused,
    };
    // A ticket belongs to one partition for life: a command about another partition's ticket
    // (sent to this partition's subject by hand, or by a node placing tickets otherwise) is
    // refused before anything is decided.
    if let Some(Placement { all, served: Some(served) }) = placement
        && let Ok(ticket) = TicketId::parse(&wire.ticket_id)
        && let home = all.of(ticket)
        && home != served
    {
        let error = pb::Error {
            code: pb::ErrorCode::MalformedRequest as i32,
            message: format!(
                "ticket {ticket} is in partition {home} of {}, and this is partition {served}'s owner",
                all.count()
            ),
            details: [("partition".to_owned(), home.to_string())].into(),
        };
        return reply::command_error_of(error);
    }
    let stamp = match stamped(caller, endpoint, &mut wire, service).await {
        Ok(stamp) => stamp,
        Err(refusal) => return refusal,
    };
    if wire.issued_at.is_none() {
        // A placeholder: the service stamps its clock once it holds the ticket's lock.
        wire.issued_at = Some(Default::default());
    }
    let correlation_id = match wire.correlation_id.as_str() {
        "" => None,
        id => match TraceId::new(id) {
            Ok(id) => Some(id),
            Err(e) => return reply::command_error(pb::ErrorCode::MalformedRequest, e.to_string()),
        },
    };
    let command = match ticket_domain::Command::try_from(wire) {
        Ok(c) => c,
        Err(e) => {
            let mut error = pb::Error::from(&e);
            error.message = format!("invalid command: {e}");
            return reply::command_error_of(error);
        }
    };
    let command_id: CommandId = command.id.clone();
    let ticket_id = command.ticket_id;
    let causation_id = TraceId::new(command_id.to_string()).ok();
    match service.execute(CommandRequest { command, correlation_id, causation_id, stamp }).await {
        Ok(result) => {
            // A repeated command's ticket is the original one: an `open` retried without a
            // ticket id was given a fresh id above, which names no ticket.
            let ticket_id = if result.duplicate {
                original_ticket(service, &command_id, &result, ticket_id).await
            } else {
                ticket_id
            };
            reply::accepted(pb::CommandAccepted {
                ticket_id: ticket_id.to_string(),
                events: result.events.iter().map(pb::EventEnvelope::from).collect(),
                duplicate: result.duplicate,
                partition: partitions.map(|p| u32::from(p.of(ticket_id).index())),
            })
        }
        Err(e) => {
            debug!(endpoint = endpoint.name(), command_id = %command_id, ticket_id = %ticket_id, error = %e, "command refused");
            reply::command_error_of(reply::service_error(&e))
        }
    }
}

/// A request's command as the service takes it: within the size limit, decoded, its body the
/// endpoint's, with what a client may leave out filled in (a command id; an `open`'s ticket id,
/// placed among `partitions` by its command id, so that a retry of it lands where the first
/// one did; a split's new ticket id, placed in its parent's partition, so that the split stays
/// one append to one log). A split's new ticket named in another partition than its parent's
/// is refused (`INVALID_COMMAND`).
pub(super) fn prepared(
    endpoint: CommandEndpoint,
    payload: &[u8],
    config: &ApiConfig,
    partitions: Partitions,
) -> Result<pb::Command, Reply> {
    if payload.len() > config.max_payload {
        return Err(reply::command_error(
            pb::ErrorCode::PayloadTooLarge,
            format!("payload of {} bytes is over the limit of {}", payload.len(), config.max_payload),
        ));
    }
    let mut wire = pb::Command::decode(payload)
        .map_err(|e| reply::command_error(pb::ErrorCode::MalformedRequest, format!("not a ticket.v1.Command: {e}")))?;
    let sent = wire.body.as_ref().map(CommandEndpoint::of_wire);
    if sent != Some(endpoint) {
        let name = endpoint.name();
        return Err(reply::command_error(
            pb::ErrorCode::MalformedRequest,
            format!("endpoint {name} takes a {name} body, got {}", sent.map_or("none", CommandEndpoint::name)),
        ));
    }
    if wire.command_id.is_empty() {
        wire.command_id = uuid::Uuid::now_v7().to_string();
    }
    if wire.ticket_id.is_empty() && endpoint == CommandEndpoint::Open {
        let fresh = uuid::Uuid::now_v7();
        let partition = partitions.of_key(wire.command_id.as_bytes());
        let id = partitions.place(fresh, partition).unwrap_or_else(|| TicketId::from_uuid(fresh));
        wire.ticket_id = id.to_string();
    }
    if let Some(pb::command::Body::Split(split)) = wire.body.as_mut()
        && let Ok(parent) = TicketId::parse(&wire.ticket_id)
    {
        let partition = partitions.of(parent);
        if split.new_ticket_id.is_empty() {
            let fresh = uuid::Uuid::now_v7();
            split.new_ticket_id =
                partitions.place(fresh, partition).unwrap_or_else(|| TicketId::from_uuid(fresh)).to_string();
        } else if let Ok(child) = TicketId::parse(&split.new_ticket_id)
            && partitions.of(child) != partition
        {
            let mut error = pb::Error {
                code: pb::ErrorCode::InvalidCommand as i32,
                message: format!(
                    "split.new_ticket_id {child} is in partition {}, not in its parent's ({partition}): leave it \
                     empty and the service mints one there",
                    partitions.of(child)
                ),
                details: Default::default(),
            };
            error.details.insert("partition".to_owned(), partition.to_string());
            return Err(reply::command_error_of(error));
        }
    }
    Ok(wire)
}

/// The caller's part of a command: the actor it is recorded as (the mapped identity's; a payload
/// actor that differs is refused), the instant (the service's clock, except an importer's past
/// instant), and a customer's bounds (its own customer, its own tickets). Refuses before any
/// decision; a trusted caller's command is taken as sent.
async fn stamped<L: EventLog>(
    caller: &Caller,
    endpoint: CommandEndpoint,
    wire: &mut pb::Command,
    service: &CommandService<L>,
) -> Result<Stamp, Reply> {
    let Caller::Identified { actor, role, .. } = caller else {
        return Ok(if wire.issued_at.is_some() { Stamp::AsIssued } else { Stamp::ServiceClock });
    };
    let deny =
        |reason: String| reply::command_error_of(Denied::new(caller, Endpoint::Command(endpoint), reason).error());
    let sent = wire.actor.get_or_insert_with(Default::default);
    match role.actor_kind() {
        Some(kind) => {
            let sent_kind = pb::ActorKind::try_from(sent.kind).unwrap_or(pb::ActorKind::Unspecified);
            if sent_kind != pb::ActorKind::Unspecified && sent_kind != kind {
                return Err(deny(format!(
                    "the actor kind {} is not the identity's {}",
                    sent_kind.as_str_name(),
                    kind.as_str_name()
                )));
            }
            if !sent.id.is_empty() && sent.id != actor.as_str() {
                return Err(deny(format!("the actor {} is not the identity's {actor}", sent.id)));
            }
            sent.kind = kind as i32;
            sent.id = actor.to_string();
        }
        None => {
            // An importer records the original helpdesk's agents and customers, never the engine.
            let sent_kind = pb::ActorKind::try_from(sent.kind).unwrap_or(pb::ActorKind::Unspecified);
            if sent_kind == pb::ActorKind::System {
                return Err(deny("an importer may not send a system actor".into()));
            }
        }
    }
    let stamp = match (role, wire.issued_at.is_some()) {
        (Role::Importer, true) => Stamp::Imported,
        (Role::Importer, false) => Stamp::ServiceClock,
        (Role::Agent | Role::Customer { .. } | Role::Operator | Role::Subscriber, true) => {
            return Err(reply::command_error(
                pb::ErrorCode::InvalidCommand,
                "issued_at is the service's clock; send client_time".into(),
            ));
        }
        (Role::Agent | Role::Customer { .. } | Role::Operator | Role::Subscriber, false) => Stamp::ServiceClock,
    };
    if let Role::Customer { customer } = role {
        match (&wire.body, endpoint) {
            (Some(pb::command::Body::Open(open)), _) => {
                if open.customer != customer.as_str() {
                    return Err(deny(format!("may open tickets only for customer {customer}")));
                }
            }
            (_, CommandEndpoint::RecordCustomerReply) => {
                let owner = ticket_customer(service, &wire.ticket_id).await;
                if owner.as_deref() != Some(customer.as_str()) {
                    return Err(deny(format!("the ticket is not one of customer {customer}'s")));
                }
            }
            _ => return Err(deny("not a customer's command".into())),
        }
    }
    Ok(stamp)
}

/// The customer of the ticket named `ticket_id`, if it names an opened one (a storage read: off
/// the async runtime).
async fn ticket_customer<L: EventLog>(service: &CommandService<L>, ticket_id: &str) -> Option<String> {
    let ticket = TicketId::parse(ticket_id).ok()?;
    let service = service.clone();
    let state = tokio::task::spawn_blocking(move || service.state(ticket)).await.ok()?.ok()?;
    state.ticket().map(|t| t.customer.to_string())
}

/// The ticket a repeated command addressed when it was first executed: from its stored record
/// (read off the async runtime: it is a storage read), else from its original events (which
/// begin on the command's own ticket), else `sent`.
async fn original_ticket<L: EventLog>(
    service: &CommandService<L>,
    id: &CommandId,
    result: &CommandResult,
    sent: TicketId,
) -> TicketId {
    let (log, key) = (service.log().clone(), id.clone());
    let stored = match tokio::task::spawn_blocking(move || log.command(&key)).await {
        Ok(Ok(record)) => record.map(|r| r.command.ticket_id),
        Ok(Err(e)) => {
            warn!(command_id = %id, error = %e, "cannot read a repeated command's record");
            None
        }
        Err(e) => {
            warn!(command_id = %id, error = %e, "the read of a repeated command's record failed");
            None
        }
    };
    stored.or_else(|| result.events.first().map(|e| e.event.ticket_id)).unwrap_or(sent)
}
