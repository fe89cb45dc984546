//! The query endpoints (`tickets.query.<query>`), answered from the projector's read models once
//! they have applied the position a query names (read-your-writes).

use ticket_domain::TicketId;
use ticket_log::EventLog;
use ticket_projections::Projector;
use ticket_proto::{Query, QueryEndpoint, pb};

use super::ApiConfig;
use super::reply::{Reply, query_error, query_reply};

fn malformed(what: &str, e: &dyn std::fmt::Display) -> Reply {
    query_error(pb::ErrorCode::MalformedRequest, format!("not a {what}: {e}"))
}

/// Decodes a query, waits for the position it names (read-your-writes), and answers it.
pub(super) async fn handle<L: EventLog>(
    endpoint: QueryEndpoint,
    payload: &[u8],
    views: &Projector<L>,
    policy: &ticket_domain::Policy,
    clock: &dyn ticket_service::Clock,
    config: &ApiConfig,
) -> Reply {
    if payload.len() > config.max_payload {
        return query_error(
            pb::ErrorCode::PayloadTooLarge,
            format!("payload of {} bytes is over the limit", payload.len()),
        );
    }
    let query = match Query::decode(endpoint, payload) {
        Ok(q) => q,
        Err(e) => return malformed(&format!("ticket.v1 {} query", endpoint.name()), &e),
    };
    let min_position = query.min_position();
    if min_position > 0 && !views.wait_for(min_position, config.read_your_writes_deadline).await {
        return query_error(pb::ErrorCode::Timeout, format!("position {min_position} not reached in time"));
    }
    let limit = |asked: u32| if asked == 0 { config.max_list } else { (asked as usize).min(config.max_list) };
    match query {
        Query::Ticket(query) => {
            let ticket = match TicketId::parse(&query.ticket_id) {
                Ok(t) => t,
                Err(e) => return malformed("ticket id", &e),
            };
            let tickets = views.tickets.read();
            match tickets.model().ticket(ticket).map(|t| view_of(t, tickets.position(), policy, clock.now())) {
                Some(view) => query_reply(pb::query_reply::Result::Ticket(view)),
                None => query_error(pb::ErrorCode::TicketNotFound, format!("ticket {ticket} not found")),
            }
        }
        Query::Customer(query) => {
            let customer = match ticket_domain::CustomerId::new(query.customer) {
                Ok(c) => c,
                Err(e) => return malformed("customer id", &e),
            };
            let read = views.tickets.read();
            let position = read.position();
            let tickets = read
                .model()
                .customer(&customer, query.include_resolved, limit(query.limit))
                .into_iter()
                .map(|t| view_of(t, position, policy, clock.now()))
                .collect();
            query_reply(pb::query_reply::Result::Tickets(pb::TicketList { tickets, position }))
        }
        Query::Board(query) => board(views, limit(query.limit)),
        Query::Timeline(query) => {
            let ticket = match TicketId::parse(&query.ticket_id) {
                Ok(t) => t,
                Err(e) => return malformed("ticket id", &e),
            };
            timeline(views, ticket).await
        }
        Query::Compliance(query) => compliance(views, query, policy),
    }
}

/// A ticket as the API shows it: with each clock's business time elapsed and remaining at `now`,
/// on the calendars of `policy`.
fn view_of(
    ticket: &ticket_domain::Ticket,
    position: u64,
    policy: &ticket_domain::Policy,
    now: ticket_domain::Timestamp,
) -> pb::TicketView {
    let mut view = pb::TicketView::from(ticket);
    view.position = position;
    for (wire, clock) in view.clocks.iter_mut().zip(ticket.clocks.values()) {
        if let Some((elapsed, remaining)) = ticket_domain::business_times(clock, policy, now) {
            wire.elapsed_business_seconds = Some(elapsed.num_seconds());
            wire.remaining_business_seconds = remaining.map(|r| r.num_seconds());
        }
    }
    view
}

fn board<L: EventLog>(views: &Projector<L>, limit: usize) -> Reply {
    // The board orders; the tickets model gives each line its title.
    let board = views.board.read();
    let position = board.position();
    let lines = board.model().entries(limit);
    drop(board);
    let tickets = views.tickets.read();
    let entries = lines
        .into_iter()
        .filter_map(|entry| {
            let t = tickets.model().ticket(entry.ticket_id)?;
            Some(pb::BoardEntry {
                ticket_id: entry.ticket_id.to_string(),
                customer: entry.customer.to_string(),
                severity: ticket_proto::wire::severity(entry.severity),
                metric: ticket_proto::wire::metric(entry.metric),
                cycle: entry.cycle,
                due_at: Some(ticket_proto::wire::timestamp(&entry.due_at)),
                at_risk: entry.at_risk,
                breached: entry.breached,
                title: t.title.to_string(),
            })
        })
        .collect();
    query_reply(pb::query_reply::Result::Board(pb::Board { entries, position }))
}

async fn timeline<L: EventLog>(views: &Projector<L>, ticket: TicketId) -> Reply {
    let (entries, position) = {
        let timeline = views.timeline.read();
        (timeline.model().ticket(ticket), timeline.position())
    };
    if entries.is_empty() {
        return query_error(pb::ErrorCode::TicketNotFound, format!("ticket {ticket} not found"));
    }
    // The details are read from the log: off the async runtime, without holding the timeline's lock.
    let log = views.log().clone();
    let detailed = tokio::task::spawn_blocking(move || {
        let mut entries = entries;
        ticket_projections::add_details(&mut entries, ticket, &log).map(|()| entries)
    })
    .await;
    let entries = match detailed {
        Ok(Ok(entries)) => entries,
        Ok(Err(e)) => return query_error(pb::ErrorCode::Unavailable, e.to_string()),
        Err(e) => return query_error(pb::ErrorCode::Internal, format!("the timeline's read failed: {e}")),
    };
    let entries = entries
        .into_iter()
        .map(|e| pb::TimelineEntry {
            position: e.position,
            version: e.version,
            occurred_at: Some(ticket_proto::wire::timestamp(&e.occurred_at)),
            recorded_at: Some(ticket_proto::wire::timestamp(&e.recorded_at)),
            event_type: e.event_type,
            actor: e.actor,
            command_id: e.command_id,
            policy: e.policy,
            summary: e.summary,
        })
        .collect();
    query_reply(pb::query_reply::Result::Timeline(pb::Timeline { ticket_id: ticket.to_string(), entries, position }))
}

fn compliance<L: EventLog>(views: &Projector<L>, query: pb::GetCompliance, policy: &ticket_domain::Policy) -> Reply {
    let instant = |t: Option<pbjson_types::Timestamp>| -> Result<Option<ticket_domain::Timestamp>, String> {
        t.map(|t| {
            chrono::DateTime::from_timestamp(t.seconds, u32::try_from(t.nanos).unwrap_or(u32::MAX))
                .ok_or_else(|| format!("{}s is not an instant", t.seconds))
        })
        .transpose()
    };
    let period = match (instant(query.from), instant(query.to)) {
        (Ok(from), Ok(to)) => ticket_projections::Period { from, to },
        (Err(e), _) | (_, Err(e)) => return malformed("period", &e),
    };
    let compliance = views.compliance.read();
    let position = compliance.position();
    let rows = compliance
        .model()
        .report(period, policy)
        .into_iter()
        .map(|r| pb::ComplianceRow {
            plan: r.plan,
            severity: ticket_proto::wire::severity(r.severity_level),
            category: r.category,
            metric: ticket_proto::wire::metric(r.metric_kind),
            met: r.met,
            breached: r.breached,
            compliance_percent: r.compliance_percent,
            first_responses: r.first_responses,
            median_first_response_seconds: r.median_first_response_secs,
            p90_first_response_seconds: r.p90_first_response_secs,
        })
        .collect();
    query_reply(pb::query_reply::Result::Compliance(pb::ComplianceReport { rows, position }))
}
