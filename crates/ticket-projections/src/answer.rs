//! The read models' answers as the API's reply messages (`ticket.v1`): one function per query,
//! used by the NATS API (`tickets.query.*`, `tickets.admin.lag`) and by `ticketctl` in local mode
//! alike, so a view is the same message wherever it is computed.
//!
//! The answers read the live projector's models (each behind its own lock, taken one at a time)
//! or a set of models built for a past moment; [`Views`] is what both offer.

use ticket_domain::{CustomerId, Policy, Ticket, TicketId, Timestamp};
use ticket_log::{EventLog, LogError};
use ticket_proto::{pb, wire};

use crate::{BoardEntry, Period, Projector, ReadModels, Tally, TimelineEntry, models::timeline};

/// The read models' answers, each with the position it is as of: the live projector (its rows
/// in memory and in the state store) and [`ReadModels`] (in memory, as of a moment: time travel
/// and what-if) both give them.
pub trait Views {
    /// A ticket (`None`: unknown). An error: the stored state or the log could not be read.
    fn ticket(&self, id: TicketId) -> Result<(Option<Ticket>, u64), LogError>;
    /// A customer's tickets, open ones first by opening instant; resolved ones only if asked.
    fn customer(
        &self,
        customer: &CustomerId,
        include_resolved: bool,
        limit: usize,
    ) -> Result<(Vec<Ticket>, u64), LogError>;
    /// The first `limit` lines of the board.
    fn board(&self, limit: usize) -> Result<(Vec<BoardEntry>, u64), LogError>;
    /// A ticket's timeline, read from `log` (blocking I/O), as of the views' position.
    fn timeline<L: EventLog>(&self, id: TicketId, log: &L) -> Result<(Vec<TimelineEntry>, u64), LogError>;
    /// The compliance report's counts over `period`, on the calendars of `policy`.
    fn tally(&self, period: Period, policy: &Policy) -> Result<(Tally, u64), LogError>;
}

impl Views for ReadModels {
    fn ticket(&self, id: TicketId) -> Result<(Option<Ticket>, u64), LogError> {
        Ok((self.tickets.model().ticket(id, self.tickets.position())?, self.tickets.position()))
    }

    fn customer(
        &self,
        customer: &CustomerId,
        include_resolved: bool,
        limit: usize,
    ) -> Result<(Vec<Ticket>, u64), LogError> {
        let position = self.tickets.position();
        Ok((self.tickets.model().customer(customer, include_resolved, limit, position)?, position))
    }

    fn board(&self, limit: usize) -> Result<(Vec<BoardEntry>, u64), LogError> {
        Ok((self.board.model().entries(limit), self.board.position()))
    }

    fn timeline<L: EventLog>(&self, id: TicketId, log: &L) -> Result<(Vec<TimelineEntry>, u64), LogError> {
        let (position, at) = (self.position(), self.at);
        Ok((timeline::read_timeline(log, id, |e| e.position <= position && at.includes(e))?, position))
    }

    fn tally(&self, period: Period, policy: &Policy) -> Result<(Tally, u64), LogError> {
        Ok((self.compliance.model().tally(period, policy)?, self.compliance.position()))
    }
}

fn error(code: pb::ErrorCode, message: String) -> pb::Error {
    pb::Error { code: code as i32, message, details: Default::default() }
}

/// The stored state or the log could not be read: `UNAVAILABLE`, never an answer that leaves
/// out what could not be read.
fn unavailable(e: &LogError) -> pb::Error {
    error(pb::ErrorCode::Unavailable, e.to_string())
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
    let (ticket, position) = views.ticket(id).map_err(|e| unavailable(&e))?;
    ticket.map(|t| ticket_view(&t, position, policy, now)).ok_or_else(|| not_found(id))
}

/// `tickets.query.customer`: a customer's tickets, open ones first by default.
pub fn customer(
    views: &impl Views,
    customer: &CustomerId,
    include_resolved: bool,
    limit: usize,
    policy: &Policy,
    now: Timestamp,
) -> Result<pb::TicketList, pb::Error> {
    let (tickets, position) = views.customer(customer, include_resolved, limit).map_err(|e| unavailable(&e))?;
    let tickets = tickets.iter().map(|t| ticket_view(t, position, policy, now)).collect();
    Ok(pb::TicketList { tickets, position, ..Default::default() })
}

/// `tickets.query.board`: open tickets by their nearest due instant.
pub fn board(views: &impl Views, limit: usize) -> Result<pb::Board, pb::Error> {
    // The board orders; the tickets model gives each line its title.
    let (lines, position) = views.board(limit).map_err(|e| unavailable(&e))?;
    let mut entries = Vec::with_capacity(lines.len());
    for entry in lines {
        let Some(t) = views.ticket(entry.ticket_id).map_err(|e| unavailable(&e))?.0 else { continue };
        entries.push(pb::BoardEntry {
            ticket_id: entry.ticket_id.to_string(),
            customer: entry.customer.to_string(),
            severity: wire::severity(entry.severity),
            metric: wire::metric(entry.metric),
            cycle: entry.cycle,
            due_at: Some(wire::timestamp(&entry.due_at)),
            at_risk: entry.at_risk,
            breached: entry.breached,
            title: t.title.to_string(),
        });
    }
    Ok(pb::Board { entries, position, ..Default::default() })
}

/// `tickets.query.timeline`: every event of a ticket, each described from the log. Reads the
/// log (blocking I/O: call it off the async runtime).
pub fn timeline<L: EventLog>(views: &impl Views, id: TicketId, log: &L) -> Result<pb::Timeline, pb::Error> {
    let (entries, position) = views.timeline(id, log).map_err(|e| unavailable(&e))?;
    if entries.is_empty() {
        return Err(not_found(id));
    }
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
pub fn compliance(views: &impl Views, period: Period, policy: &Policy) -> Result<pb::ComplianceReport, pb::Error> {
    let (tally, position) = views.tally(period, policy).map_err(|e| unavailable(&e))?;
    Ok(report(tally, position))
}

/// The compliance report of `tally` (one read model's, or the sum of a cluster's partitions'),
/// as of `position`.
pub fn report(tally: Tally, position: u64) -> pb::ComplianceReport {
    let rows = tally
        .rows()
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
    pb::ComplianceReport { rows, position, ..Default::default() }
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
    pb::ProjectionLags { projections, quarantined, ..Default::default() }
}
