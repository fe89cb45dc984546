//! The query endpoints (`tickets.query.<query>`), answered from the projector's read models once
//! they have applied the position a query names (read-your-writes).

use std::sync::Arc;

use ticket_domain::{Partition, Policy, TicketId};
use ticket_log::EventLog;
use ticket_projections::answer::Views as _;
use ticket_projections::{Projector, Tally, answer};
use ticket_proto::{Endpoint, Query, QueryEndpoint, pb};

use super::ApiConfig;
use super::identity::{Caller, Denied, Role};
use super::reply::{Reply, query_error, query_error_of, query_reply};

fn malformed(what: &str, e: &dyn std::fmt::Display) -> Reply {
    query_error(pb::ErrorCode::MalformedRequest, format!("not a {what}: {e}"))
}

/// A request's query: within the size limit, and decoded.
pub(super) fn decoded(endpoint: QueryEndpoint, payload: &[u8], config: &ApiConfig) -> Result<Query, Reply> {
    if payload.len() > config.max_payload {
        return Err(query_error(
            pb::ErrorCode::PayloadTooLarge,
            format!("payload of {} bytes is over the limit", payload.len()),
        ));
    }
    Query::decode(endpoint, payload).map_err(|e| malformed(&format!("ticket.v1 {} query", endpoint.name()), &e))
}

/// Decodes a query, waits for the position it names (read-your-writes), and answers it.
pub(super) async fn handle<L: EventLog>(
    endpoint: QueryEndpoint,
    caller: &Caller,
    payload: &[u8],
    views: &Projector<L>,
    policy: &ticket_domain::Policy,
    clock: &dyn ticket_service::Clock,
    config: &ApiConfig,
) -> Reply {
    let query = match decoded(endpoint, payload, config) {
        Ok(query) => query,
        Err(refused) => return refused,
    };
    let min_position = query.min_position();
    if min_position > 0 && !views.wait_for(min_position, config.read_your_writes_deadline).await {
        return query_error(pb::ErrorCode::Timeout, format!("position {min_position} not reached in time"));
    }
    let limit = |asked: u32| if asked == 0 { config.max_list } else { (asked as usize).min(config.max_list) };
    let now = clock.now();
    // A customer reads its own tickets only: its list, and a ticket (or timeline) that is its own.
    let customer = match caller {
        Caller::Identified { role: Role::Customer { customer }, .. } => Some(customer),
        Caller::Identified { .. } | Caller::Trusted => None,
    };
    if let Some(customer) = customer {
        let deny = |reason: String| query_error_of(Denied::new(caller, Endpoint::Query(endpoint), reason).error());
        let ticket = match &query {
            Query::Customer(query) if query.customer == customer.as_str() => None,
            Query::Ticket(pb::GetTicket { ticket_id, .. }) | Query::Timeline(pb::GetTimeline { ticket_id, .. }) => {
                Some(ticket_id.clone())
            }
            Query::Customer(_) | Query::Board(_) | Query::Compliance(_) => {
                return deny(format!("reads only customer {customer}'s tickets"));
            }
        };
        if let Some(ticket) = ticket {
            // A ticket that cannot be read is answered as such (UNAVAILABLE), not as another
            // customer's; an unknown one is denied like another customer's (it is not its own).
            let owner = match TicketId::parse(&ticket).map(|t| answer::ticket(views, t, policy, now)) {
                Ok(Ok(view)) => Some(view),
                Ok(Err(error)) if error.code == pb::ErrorCode::Unavailable as i32 => return query_error_of(error),
                Ok(Err(_)) | Err(_) => None,
            };
            if owner.is_none_or(|t| t.customer != customer.as_str()) {
                return deny(format!("the ticket is not one of customer {customer}'s"));
            }
        }
    }
    let answered = match query {
        Query::Ticket(query) => {
            let ticket = match TicketId::parse(&query.ticket_id) {
                Ok(t) => t,
                Err(e) => return malformed("ticket id", &e),
            };
            answer::ticket(views, ticket, policy, now).map(pb::query_reply::Result::Ticket)
        }
        Query::Customer(query) => {
            let customer = match ticket_domain::CustomerId::new(query.customer) {
                Ok(c) => c,
                Err(e) => return malformed("customer id", &e),
            };
            answer::customer(views, &customer, query.include_resolved, limit(query.limit), policy, now)
                .map(pb::query_reply::Result::Tickets)
        }
        Query::Board(query) => answer::board(views, limit(query.limit)).map(pb::query_reply::Result::Board),
        Query::Timeline(query) => {
            let ticket = match TicketId::parse(&query.ticket_id) {
                Ok(t) => t,
                Err(e) => return malformed("ticket id", &e),
            };
            timeline(views, ticket).await
        }
        Query::Compliance(query) => match period_of(&query) {
            Ok(period) => answer::compliance(views, period, policy).map(pb::query_reply::Result::Compliance),
            Err(refused) => return refused,
        },
    };
    match answered {
        Ok(result) => query_reply(result),
        Err(error) => query_error_of(error),
    }
}

/// A compliance query's period.
fn period_of(query: &pb::GetCompliance) -> Result<ticket_projections::Period, Reply> {
    match (ticket_proto::wire::opt_instant("from", query.from), ticket_proto::wire::opt_instant("to", query.to)) {
        (Ok(from), Ok(to)) => Ok(ticket_projections::Period { from, to }),
        (Err(e), _) | (_, Err(e)) => Err(malformed("period", &e)),
    }
}

/// A cluster's compliance report: every partition's outcomes and first-response times (read
/// off the async runtime) added up, then the report of the sum (exact, not a merge of
/// percentiles), with the position of each partition it read. Customers are refused, as on a
/// single node.
pub(super) async fn compliance_across<L: EventLog>(
    caller: &Caller,
    query: &pb::GetCompliance,
    views: Vec<(Partition, Projector<L>)>,
    policy: Arc<Policy>,
) -> Reply {
    if let Caller::Identified { role: Role::Customer { customer }, .. } = caller {
        let reason = format!("reads only customer {customer}'s tickets");
        return query_error_of(Denied::new(caller, Endpoint::Query(QueryEndpoint::Compliance), reason).error());
    }
    let period = match period_of(query) {
        Ok(period) => period,
        Err(refused) => return refused,
    };
    let added = tokio::task::spawn_blocking(move || {
        let mut tally = Tally::default();
        let mut positions = std::collections::BTreeMap::new();
        for (partition, views) in views {
            let (part, position) = views.tally(period, &policy)?;
            tally.add(part);
            positions.insert(u32::from(partition.index()), position);
        }
        Ok::<_, ticket_log::LogError>((tally, positions))
    })
    .await;
    match added {
        Ok(Ok((tally, positions))) => {
            let report = pb::ComplianceReport { partition_positions: positions, ..answer::report(tally, 0) };
            query_reply(pb::query_reply::Result::Compliance(report))
        }
        Ok(Err(e)) => query_error(pb::ErrorCode::Unavailable, e.to_string()),
        Err(e) => query_error(pb::ErrorCode::Internal, format!("the compliance report's read failed: {e}")),
    }
}

/// The timeline reads each event's details from the log: off the async runtime.
async fn timeline<L: EventLog>(views: &Projector<L>, ticket: TicketId) -> Result<pb::query_reply::Result, pb::Error> {
    let views = views.clone();
    match tokio::task::spawn_blocking(move || answer::timeline(&views, ticket, views.log())).await {
        Ok(timeline) => timeline.map(pb::query_reply::Result::Timeline),
        Err(e) => Err(pb::Error {
            code: pb::ErrorCode::Internal as i32,
            message: format!("the timeline's read failed: {e}"),
            details: Default::default(),
        }),
    }
}
