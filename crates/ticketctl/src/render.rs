//! One renderer per reply message of the API (`ticket.v1`): the human tables, and with `--json`
//! the message's canonical proto3 JSON. Local and remote mode hand the same messages here, so a
//! view prints the same either way.

use chrono::TimeDelta;
use ticket_domain::{TargetAmount, Timestamp};
use ticket_projections::describe::instant;
use ticket_projections::models::span;
use ticket_proto::{pb, wire};

use crate::Failure;
use crate::output::{emit, print_json, table};

/// Prints `message` as canonical proto3 JSON with `json`, else as the tables `human` makes.
fn show<M: serde::Serialize>(
    message: &M,
    json: bool,
    human: impl FnOnce(&M) -> Result<(), Failure>,
) -> Result<(), Failure> {
    if json { print_json(message) } else { human(message) }
}

/// A wire instant as the CLI shows instants (empty when unset, `?` when out of range).
fn when(t: Option<&pbjson_types::Timestamp>) -> String {
    match wire::opt_instant("instant", t.copied()) {
        Ok(Some(t)) => instant(&t),
        Ok(None) => String::new(),
        Err(_) => "?".into(),
    }
}

fn seconds(s: Option<i64>) -> String {
    s.map(|s| span(TimeDelta::seconds(s))).unwrap_or_default()
}

/// An enum value's proto name without its prefix, in lower case (`METRIC_FIRST_RESPONSE` →
/// `first_response`); `?` for a number this build does not know.
fn label(name: Option<&str>, prefix: &str) -> String {
    name.map_or_else(|| "?".into(), |n| n.trim_start_matches(prefix).to_lowercase())
}

fn severity(value: i32) -> String {
    label(pb::Severity::try_from(value).ok().map(|s| s.as_str_name()), "SEVERITY_").to_uppercase()
}

fn metric(value: i32) -> String {
    label(pb::Metric::try_from(value).ok().map(|m| m.as_str_name()), "METRIC_")
}

fn status(value: i32) -> String {
    label(pb::TicketStatus::try_from(value).ok().map(|s| s.as_str_name()), "TICKET_STATUS_").replace('_', " ")
}

fn policy(p: Option<&pb::PolicyVersion>) -> String {
    p.map(|p| format!("{}@{}", p.name, p.version)).unwrap_or_default()
}

fn target(t: Option<&pb::Target>) -> String {
    let Some(t) = t else { return "none".into() };
    let amount = match &t.amount {
        Some(pb::target::Amount::OpenTime(d)) => {
            TargetAmount::OpenTime(TimeDelta::seconds(d.seconds) + TimeDelta::nanoseconds(i64::from(d.nanos)))
                .to_string()
        }
        Some(pb::target::Amount::BusinessDays(n)) => TargetAmount::BusinessDays(*n).to_string(),
        None => "?".into(),
    };
    format!("{amount} on {}", t.calendar)
}

/// A refusal: `refused (CODE): message`, exit code 1; with `--json` the `ticket.v1.Error` too.
pub fn refusal(error: &pb::Error, json: bool) -> Failure {
    if json && let Err(e) = print_json(error) {
        return e;
    }
    let code = pb::ErrorCode::try_from(error.code).map_or("UNKNOWN", |c| c.as_str_name());
    Failure::Negative(format!("refused ({code}): {}", error.message))
}

/// A command's events (`ticket.v1.CommandAccepted`).
pub fn accepted(reply: &pb::CommandAccepted, json: bool) -> Result<(), Failure> {
    show(reply, json, |reply| {
        emit(&format!(
            "ticket {}{}",
            reply.ticket_id,
            if reply.duplicate { " (a repeated command: its original result)" } else { "" }
        ))?;
        let mut t = table(&["pos", "ticket", "occurred (UTC)", "event", "details"]);
        for e in &reply.events {
            let (name, details) = match ticket_domain::RecordedEvent::try_from(e.clone()) {
                Ok(r) => (r.event.kind.name().to_owned(), ticket_projections::describe::event(&r.event.kind)),
                Err(err) => ("?".to_owned(), format!("undecodable event: {err}")),
            };
            t.add_row(vec![e.position.to_string(), e.ticket_id.clone(), when(e.occurred_at.as_ref()), name, details]);
        }
        emit(&t)
    })
}

/// A ticket (`ticket.v1.TicketView`): its fields, each SLA clock, its severity history, its links.
pub fn ticket(view: &pb::TicketView, json: bool) -> Result<(), Failure> {
    show(view, json, |view| {
        let mut head = table(&["ticket", &view.ticket_id]);
        let escalated = [view.tier.clone(), view.team.clone()].into_iter().flatten().collect::<Vec<_>>().join(" / ");
        for (k, v) in [
            ("title", view.title.clone()),
            ("customer", view.customer.clone()),
            ("plan / category", format!("{} / {}", view.plan, view.category)),
            ("severity", severity(view.severity)),
            ("status", status(view.status)),
            ("opened (UTC)", when(view.opened_at.as_ref())),
            ("first response", when(view.first_response_at.as_ref())),
            ("resolved", when(view.resolved_at.as_ref())),
            ("escalated to", escalated),
            ("policy", policy(view.policy.as_ref())),
            ("version", view.version.to_string()),
            ("as of position", view.position.to_string()),
        ] {
            head.add_row(vec![k.to_owned(), v]);
        }
        emit(&head)?;
        let mut clocks =
            table(&["clock", "cycle", "status", "target", "due (UTC)", "elapsed", "remaining", "warned", "breached"]);
        for c in &view.clocks {
            let plan = c.plan.as_ref();
            let mut status = label(pb::ClockStatus::try_from(c.status).ok().map(|s| s.as_str_name()), "CLOCK_STATUS_");
            if let Ok(outcome) = pb::ClockOutcome::try_from(c.outcome)
                && outcome != pb::ClockOutcome::Unspecified
            {
                status = format!("{status} ({})", label(Some(outcome.as_str_name()), "CLOCK_OUTCOME_"));
            }
            clocks.add_row(vec![
                metric(c.metric),
                c.cycle.to_string(),
                status,
                target(plan.and_then(|p| p.target.as_ref())),
                when(plan.and_then(|p| p.due_at.as_ref())),
                seconds(c.elapsed_business_seconds),
                seconds(c.remaining_business_seconds),
                c.warned_percent.iter().map(|w| format!("{w}%")).collect::<Vec<_>>().join(" "),
                if c.breached { "BREACHED".into() } else { String::new() },
            ]);
        }
        emit(&clocks)?;
        let mut history = table(&["severity changed (UTC)", "from", "to", "why", "reason"]);
        for s in &view.severity_history {
            let from = if s.from == pb::Severity::Unspecified as i32 { String::new() } else { severity(s.from) };
            history.add_row(vec![when(s.at.as_ref()), from, severity(s.to), s.cause.clone(), s.reason.clone()]);
        }
        emit(&history)?;
        if !view.links.is_empty() {
            let mut links = table(&["link", "ticket"]);
            for l in &view.links {
                let relation =
                    label(pb::LinkRelation::try_from(l.relation).ok().map(|r| r.as_str_name()), "LINK_RELATION_");
                links.add_row(vec![relation, l.ticket_id.clone()]);
            }
            emit(&links)?;
        }
        Ok(())
    })
}

/// The nearest due instant of a ticket's running clocks.
fn next_due(view: &pb::TicketView) -> Option<Timestamp> {
    view.clocks
        .iter()
        .filter(|c| c.status == pb::ClockStatus::Running as i32)
        .filter_map(|c| wire::opt_instant("due_at", c.plan.as_ref()?.due_at).ok().flatten())
        .min()
}

/// A customer's tickets (`ticket.v1.TicketList`).
pub fn tickets(list: &pb::TicketList, json: bool) -> Result<(), Failure> {
    show(list, json, |list| {
        let mut t = table(&["ticket", "severity", "status", "opened (UTC)", "next due (UTC)", "title"]);
        for v in &list.tickets {
            t.add_row(vec![
                v.ticket_id.clone(),
                severity(v.severity),
                status(v.status),
                when(v.opened_at.as_ref()),
                next_due(v).as_ref().map(instant).unwrap_or_default(),
                v.title.clone(),
            ]);
        }
        emit(&t)?;
        emit(&format!("{} tickets, as of position {}", list.tickets.len(), list.position))
    })
}

/// The SLA board (`ticket.v1.Board`): open tickets by their nearest due instant.
pub fn board(board: &pb::Board, json: bool) -> Result<(), Failure> {
    show(board, json, |board| {
        let mut t = table(&["due (UTC)", "clock", "sev", "ticket", "customer", "state", "title"]);
        for e in &board.entries {
            let state = if e.breached {
                "BREACHED"
            } else if e.at_risk {
                "at risk"
            } else {
                ""
            };
            t.add_row(vec![
                when(e.due_at.as_ref()),
                format!("{}#{}", metric(e.metric), e.cycle),
                severity(e.severity),
                e.ticket_id.clone(),
                e.customer.clone(),
                state.to_owned(),
                e.title.clone(),
            ]);
        }
        emit(&t)?;
        emit(&format!("{} open tickets with a running clock, as of position {}", board.entries.len(), board.position))
    })
}

/// A ticket's audit timeline (`ticket.v1.Timeline`).
pub fn timeline(timeline: &pb::Timeline, json: bool) -> Result<(), Failure> {
    show(timeline, json, |timeline| {
        let mut t = table(&["pos", "occurred (UTC)", "event", "actor", "command", "policy", "details"]);
        for e in &timeline.entries {
            t.add_row(vec![
                e.position.to_string(),
                when(e.occurred_at.as_ref()),
                e.event_type.clone(),
                e.actor.clone(),
                e.command_id.clone(),
                e.policy.clone(),
                imported_mark(e.imported, e.recorded_at.as_ref(), &e.summary),
            ]);
        }
        emit(&t)?;
        emit(&format!("{} events, as of position {}", timeline.entries.len(), timeline.position))
    })
}

/// An event's details, prefixed with when it was imported for one that came in with an import.
fn imported_mark(imported: bool, recorded_at: Option<&pbjson_types::Timestamp>, details: &str) -> String {
    if imported { format!("[imported {}] {details}", when(recorded_at)) } else { details.to_owned() }
}

/// SLA compliance (`ticket.v1.ComplianceReport`).
pub fn compliance(report: &pb::ComplianceReport, json: bool) -> Result<(), Failure> {
    show(report, json, |report| {
        let mut t = table(&[
            "plan",
            "sev",
            "category",
            "clock",
            "met",
            "breached",
            "met %",
            "median 1st resp.",
            "p90 1st resp.",
        ]);
        for r in &report.rows {
            t.add_row(vec![
                r.plan.clone(),
                severity(r.severity),
                r.category.clone(),
                metric(r.metric),
                r.met.to_string(),
                r.breached.to_string(),
                format!("{:.1}", r.compliance_percent),
                seconds(r.median_first_response_seconds),
                seconds(r.p90_first_response_seconds),
            ]);
        }
        emit(&t)?;
        emit(&format!("as of position {}", report.position))
    })
}

/// The projections' status (`ticket.v1.ProjectionLags`): each projection's position against the
/// log's head, then the quarantined tickets if there are any.
pub fn lags(status: &pb::ProjectionLags, json: bool) -> Result<(), Failure> {
    show(status, json, |status| {
        if !status.node.is_empty() {
            emit(&format!("node {}:", status.node))?;
        }
        let mut t = table(&["projection", "position", "log head", "behind"]);
        for l in &status.projections {
            t.add_row(vec![l.name.clone(), l.position.to_string(), l.head.to_string(), l.behind.to_string()]);
        }
        emit(&t)?;
        if status.quarantined.is_empty() {
            return Ok(());
        }
        emit(&format!(
            "{} quarantined tickets (a stored event does not fit their history):",
            status.quarantined.len()
        ))?;
        let mut q = table(&["ticket", "position", "problem"]);
        for t in &status.quarantined {
            q.add_row(vec![t.ticket_id.clone(), t.position.to_string(), t.problem.clone()]);
        }
        emit(&q)
    })
}

/// A cluster's status (`ticket.v1.ClusterStatus`): a row per partition, then the live nodes.
pub fn cluster(status: &pb::ClusterStatus, json: bool) -> Result<(), Failure> {
    show(status, json, |status| {
        let mut t = table(&[
            "partition",
            "owner",
            "lease expires",
            "stream seq",
            "head",
            "published",
            "outbox lag",
            "placed on",
        ]);
        for p in &status.partitions {
            let owner = if p.owner.is_empty() { "(none)".to_owned() } else { p.owner.clone() };
            t.add_row(vec![
                p.partition.to_string(),
                owner,
                when(p.lease_expires_at.as_ref()),
                p.stream_sequence.to_string(),
                p.head.to_string(),
                p.published.to_string(),
                p.outbox_lag.to_string(),
                p.placed_on.clone(),
            ]);
        }
        emit(&t)?;
        emit(&format!("nodes: {} (leases of {} s)", status.nodes.join(", "), status.lease_ttl_seconds))
    })
}

/// A partition moved (`ticket.v1.PartitionMove`), once its node serves it `took` after it was
/// asked.
pub fn moved(moved: &pb::PartitionMove, took: std::time::Duration, json: bool) -> Result<(), Failure> {
    show(moved, json, |m| {
        let from = if m.from.is_empty() { "no owner".to_owned() } else { m.from.clone() };
        if m.from == m.to {
            emit(&format!("partition {} is served by {} (placed there)", m.partition, m.to))
        } else {
            emit(&format!("partition {} moved from {from} to {} in {} ms", m.partition, m.to, took.as_millis()))
        }
    })
}

/// A projection rebuilt (`ticket.v1.ProjectionRebuilt`).
pub fn rebuilt(rebuilt: &pb::ProjectionRebuilt, json: bool) -> Result<(), Failure> {
    show(rebuilt, json, |r| {
        if r.node.is_empty() {
            return emit(&format!(
                "{} rebuilt from the log ({} events) and swapped in at position {}",
                r.name, r.events, r.position
            ));
        }
        let positions: Vec<String> = r.partition_positions.iter().map(|(p, at)| format!("p{p} at {at}")).collect();
        emit(&format!(
            "{} rebuilt on node {} from its copies of {} partitions ({} events): {}",
            r.name,
            r.node,
            r.partition_positions.len(),
            r.events,
            positions.join(", ")
        ))
    })
}
