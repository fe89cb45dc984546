//! The read models' answers as the API's reply messages (`ticket.v1`): one function per query,
//! used by the NATS API (`tickets.query.*`, `tickets.admin.lag`) and by `ticketctl` in local mode
//! alike, so a view is the same message wherever it is computed.
//!
//! The answers read the live projector's models (each behind its own lock, taken one at a time)
//! or a set of models built for a past moment; [`Views`] is what both offer.

use ticket_domain::{CustomerId, Policy, Ticket, TicketId, Timestamp};
use ticket_log::EventLog;
use ticket_proto::{pb, wire};

use crate::{Board, Compliance, Period, Projected, Projector, ReadModels, Tickets, Timeline};

/// Read access to each read model, one at a time.
pub trait Views {
    fn tickets<R>(&self, read: impl FnOnce(&Projected<Tickets>) -> R) -> R;
    fn board<R>(&self, read: impl FnOnce(&Projected<Board>) -> R) -> R;
    fn timeline<R>(&self, read: impl FnOnce(&Projected<Timeline>) -> R) -> R;
    fn compliance<R>(&self, read: impl FnOnce(&Projected<Compliance>) -> R) -> R;
}

impl<L: EventLog> Views for Projector<L> {
    fn tickets<R>(&self, read: impl FnOnce(&Projected<Tickets>) -> R) -> R {
        read(&self.tickets.read())
    }
    fn board<R>(&self, read: impl FnOnce(&Projected<Board>) -> R) -> R {
        read(&self.board.read())
    }
    fn timeline<R>(&self, read: impl FnOnce(&Projected<Timeline>) -> R) -> R {
        read(&self.timeline.read())
    }
    fn compliance<R>(&self, read: impl FnOnce(&Projected<Compliance>) -> R) -> R {
        read(&self.compliance.read())
    }
}

impl Views for ReadModels {
    fn tickets<R>(&self, read: impl FnOnce(&Projected<Tickets>) -> R) -> R {
        read(&self.tickets)
    }
    fn board<R>(&self, read: impl FnOnce(&Projected<Board>) -> R) -> R {
        read(&self.board)
    }
    fn timeline<R>(&self, read: impl FnOnce(&Projected<Timeline>) -> R) -> R {
        read(&self.timeline)
    }
    fn compliance<R>(&self, read: impl FnOnce(&Projected<Compliance>) -> R) -> R {
        read(&self.compliance)
    }
}

fn error(code: pb::ErrorCode, message: String) -> pb::Error {
    pb::Error { code: code as i32, message, details: Default::default() }
}

fn not_found(ticket: TicketId) -> pb::Error {
    error(pb::ErrorCode::TicketNotFound, format!("ticket {ticket} not found"))
}

/// A ticket as the API shows it: with each clock's business time elapsed and remaining at `now`,
/// on the calendars of `policy`, as of the model's `position`.
pub fn ticket_view(ticket: &Ticket, position: u64, policy: &Policy, now: Timestamp) -> pb::TicketView {
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

/// `tickets.query.ticket`.
pub fn ticket(views: &impl Views, id: TicketId, policy: &Policy, now: Timestamp) -> Result<pb::TicketView, pb::Error> {
    views
        .tickets(|tickets| tickets.model().ticket(id).map(|t| ticket_view(t, tickets.position(), policy, now)))
        .ok_or_else(|| not_found(id))
}

/// `tickets.query.customer`: a customer's tickets, open ones first by default.
pub fn customer(
    views: &impl Views,
    customer: &CustomerId,
    include_resolved: bool,
    limit: usize,
    policy: &Policy,
    now: Timestamp,
) -> pb::TicketList {
    views.tickets(|read| {
        let position = read.position();
        let tickets = read
            .model()
            .customer(customer, include_resolved, limit)
            .into_iter()
            .map(|t| ticket_view(t, position, policy, now))
            .collect();
        pb::TicketList { tickets, position }
    })
}

/// `tickets.query.board`: open tickets by their nearest due instant.
pub fn board(views: &impl Views, limit: usize) -> pb::Board {
    // The board orders; the tickets model gives each line its title.
    let (lines, position) = views.board(|board| (board.model().entries(limit), board.position()));
    let entries = views.tickets(|tickets| {
        lines
            .into_iter()
            .filter_map(|entry| {
                let t = tickets.model().ticket(entry.ticket_id)?;
                Some(pb::BoardEntry {
                    ticket_id: entry.ticket_id.to_string(),
                    customer: entry.customer.to_string(),
                    severity: wire::severity(entry.severity),
                    metric: wire::metric(entry.metric),
                    cycle: entry.cycle,
                    due_at: Some(wire::timestamp(&entry.due_at)),
                    at_risk: entry.at_risk,
                    breached: entry.breached,
                    title: t.title.to_string(),
                })
            })
            .collect()
    });
    pb::Board { entries, position }
}

/// `tickets.query.timeline`: every event of a ticket, each described from the log. Reads the
/// log (blocking I/O: call it off the async runtime).
pub fn timeline<L: EventLog>(views: &impl Views, id: TicketId, log: &L) -> Result<pb::Timeline, pb::Error> {
    let (mut entries, position) = views.timeline(|timeline| (timeline.model().ticket(id), timeline.position()));
    if entries.is_empty() {
        return Err(not_found(id));
    }
    // Read from the log without holding the timeline's lock.
    crate::add_details(&mut entries, id, log).map_err(|e| error(pb::ErrorCode::Unavailable, e.to_string()))?;
    let entries = entries
        .into_iter()
        .map(|e| pb::TimelineEntry {
            position: e.position,
            version: e.version,
            occurred_at: Some(wire::timestamp(&e.occurred_at)),
            recorded_at: Some(wire::timestamp(&e.recorded_at)),
            event_type: e.event_type,
            actor: e.actor,
            command_id: e.command_id,
            policy: e.policy,
            summary: e.summary,
            imported: e.imported,
        })
        .collect();
    Ok(pb::Timeline { ticket_id: id.to_string(), entries, position })
}

/// `tickets.query.compliance`: met and breached per plan, severity, category and clock.
pub fn compliance(views: &impl Views, period: Period, policy: &Policy) -> pb::ComplianceReport {
    views.compliance(|compliance| {
        let rows = compliance
            .model()
            .report(period, policy)
            .into_iter()
            .map(|r| pb::ComplianceRow {
                plan: r.plan,
                severity: wire::severity(r.severity_level),
                category: r.category,
                metric: wire::metric(r.metric_kind),
                met: r.met,
                breached: r.breached,
                compliance_percent: r.compliance_percent,
                first_responses: r.first_responses,
                median_first_response_seconds: r.median_first_response_secs,
                p90_first_response_seconds: r.p90_first_response_secs,
            })
            .collect();
        pb::ComplianceReport { rows, position: compliance.position() }
    })
}

/// `tickets.admin.lag`: each projection's position against the log's head, and the quarantined
/// tickets.
pub fn projection_status<L: EventLog>(views: &Projector<L>) -> pb::ProjectionLags {
    let projections = views
        .lag()
        .into_iter()
        .map(|l| pb::ProjectionLag { name: l.name.to_owned(), position: l.position, head: l.head, behind: l.behind })
        .collect();
    let quarantined = views
        .quarantined()
        .into_iter()
        .map(|(id, q)| pb::QuarantinedTicket { ticket_id: id.to_string(), position: q.position, problem: q.problem })
        .collect();
    pb::ProjectionLags { projections, quarantined }
}
