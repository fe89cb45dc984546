//! Local mode over the read models: ticket detail, a customer's tickets, the SLA board, the audit
//! timeline and SLA compliance, now (from the projections' checkpoints, caught up from the log)
//! or as of a past instant or position (computed from the log; `--at`); projection status and
//! rebuilds; what-if under a candidate policy.

use std::path::Path;

use ticket_domain::{Policy, Timestamp};
use ticket_projections::whatif::what_if;
use ticket_projections::{At, ComplianceRow, Period};

use crate::Failure;
use crate::local::{Moment, moment, open};
use crate::output::{emit, print_json, progress, table};

pub fn at(text: Option<&str>) -> Result<At, Failure> {
    Ok(match text.map(moment).transpose()? {
        None => At::Now,
        Some(Moment::Position(p)) => At::Position(p),
        Some(Moment::Instant(t)) => At::Instant(t),
    })
}

pub fn instant_arg(text: Option<&str>, what: &str) -> Result<Option<Timestamp>, Failure> {
    match text.map(moment).transpose()? {
        None => Ok(None),
        Some(Moment::Instant(t)) => Ok(Some(t)),
        Some(Moment::Position(_)) => Err(Failure::Usage(format!("{what} must be an RFC 3339 instant"))),
    }
}

/// The board as a table (the demo's: tickets by name, instants in local time).
pub fn board_table(
    entries: &[ticket_projections::BoardEntry],
    now: Timestamp,
    name: &dyn Fn(ticket_domain::TicketId) -> String,
    when: &dyn Fn(&Timestamp) -> String,
) -> comfy_table::Table {
    let mut t = table(&["ticket", "customer", "sev", "clock", "due", "due in", "state"]);
    for e in entries {
        let state = if e.breached {
            "BREACHED"
        } else if e.at_risk {
            "at risk"
        } else {
            ""
        };
        t.add_row(vec![
            name(e.ticket_id),
            e.customer.to_string(),
            e.severity.to_string(),
            format!("{}#{}", e.metric, e.cycle),
            when(&e.due_at),
            ticket_projections::models::span(e.due_at - now),
            state.to_owned(),
        ]);
    }
    t
}

pub fn compliance_table(rows: &[ComplianceRow]) -> comfy_table::Table {
    let mut t =
        table(&["plan", "sev", "category", "clock", "met", "breached", "met %", "median 1st resp.", "p90 1st resp."]);
    for r in rows {
        t.add_row(vec![
            r.plan.clone(),
            r.severity.clone(),
            r.category.clone(),
            r.metric.clone(),
            r.met.to_string(),
            r.breached.to_string(),
            format!("{:.1}", r.compliance_percent),
            r.median_first_response.clone().unwrap_or_default(),
            r.p90_first_response.clone().unwrap_or_default(),
        ]);
    }
    t
}

pub fn whatif(
    data_dir: &Path,
    candidate: &Path,
    from: Option<&str>,
    to: Option<&str>,
    json: bool,
) -> Result<(), Failure> {
    let policy = Policy::load(candidate).map_err(|e| Failure::Usage(e.to_string()))?;
    let period = Period { from: instant_arg(from, "--from")?, to: instant_arg(to, "--to")? };
    let now = ticket_log::now();
    let horizon = period.to.unwrap_or(now).min(now);
    let log = open(data_dir)?;
    let bar = progress(0, "tickets");
    let report = what_if(&log, &policy, period, horizon, |done, total| {
        bar.set_length(total);
        bar.set_position(done);
    })?;
    bar.finish_and_clear();
    if json {
        return print_json(&report);
    }
    emit(&format!(
        "candidate {}: {} tickets, {} commands replayed; breaches {} live, {} under the candidate; {} tickets would change",
        report.candidate_policy,
        report.tickets,
        report.commands,
        report.breaches_live,
        report.breaches_candidate,
        report.changed.len()
    ))?;
    let mut t = table(&["ticket", "what", "clock / change", "live", "candidate"]);
    for ticket in &report.changed {
        for c in &ticket.changes {
            t.add_row(vec![
                ticket.ticket_id.to_string(),
                c.kind.clone(),
                c.what.clone(),
                c.live.clone().unwrap_or_else(|| "-".into()),
                c.candidate.clone().unwrap_or_else(|| "-".into()),
            ]);
        }
    }
    if !report.changed.is_empty() {
        emit(&t)?;
    }
    Ok(())
}
