//! Local mode over the read models: ticket detail, a customer's tickets, the SLA board, the audit
//! timeline and SLA compliance, now (from the projections' checkpoints, caught up from the log)
//! or as of a past instant or position (computed from the log; `--at`); projection status and
//! rebuilds; what-if under a candidate policy.

use std::path::Path;

use ticket_domain::{CustomerId, Policy, Timestamp};
use ticket_log::EventLog;
use ticket_log_sled::SledLog;
use ticket_projections::whatif::what_if;
use ticket_projections::{
    At, Checkpoints, ComplianceRow, CustomerTicket, Period, Projector, ProjectorConfig, ReadModels, TicketDetail,
};

use crate::Failure;
use crate::local::{Moment, moment, open, ticket_id};
use crate::output::{emit, print_json, progress, table};
use ticket_projections::describe::instant;

/// The projections' checkpoints of a data directory.
fn checkpoints(data_dir: &Path) -> Checkpoints {
    ticket_engine::DataDir::new(data_dir).checkpoints()
}

fn at(text: Option<&str>) -> Result<At, Failure> {
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

/// Every read model as of `at`: for now, the checkpointed projections caught up from the log
/// (and checkpointed again); for a past moment, computed from the log and touching nothing.
fn models(data_dir: &Path, at: At) -> Result<(ReadModels, SledLog), Failure> {
    let log = open(data_dir)?;
    if at != At::Now {
        let bar = progress(log.head(), "replaying");
        let models = ReadModels::build(&log, at, |done, _| bar.set_position(done))?;
        bar.finish_and_clear();
        return Ok((models, log));
    }
    let projector = Projector::open(log.clone(), Some(checkpoints(data_dir)), ProjectorConfig::default());
    let bar = progress(log.head(), "catching up");
    bar.set_position(projector.position());
    projector.catch_up(|done, _| bar.set_position(done)).map_err(|e| Failure::Data(e.into()))?;
    bar.finish_and_clear();
    projector.checkpoint().map_err(|e| Failure::Data(e.into()))?;
    Ok((projector.into_read_models(), log))
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
        (At::Now, Some(t)) => t.max(now()),
        (At::Position(_) | At::Instant(_) | At::Now, None) => now(),
    })
}

fn now() -> Timestamp {
    Timestamp::from(std::time::SystemTime::now())
}

pub fn detail(data_dir: &Path, policy: &Policy, ticket: &str, when: Option<&str>, json: bool) -> Result<(), Failure> {
    let id = ticket_id(ticket)?;
    let at = at(when)?;
    let (models, log) = models(data_dir, at)?;
    let Some(t) = models.tickets.model().ticket(id) else {
        return Err(Failure::Negative(format!("ticket {id} not found at that moment")));
    };
    let detail = TicketDetail::of(t, policy, as_of(at, &log)?);
    if json {
        return print_json(&detail);
    }
    let mut head = table(&["ticket", &detail.ticket_id]);
    for (k, v) in [
        ("title", detail.title.clone()),
        ("customer", detail.customer.clone()),
        ("plan / category", format!("{} / {}", detail.plan, detail.category)),
        ("severity", detail.severity.clone()),
        ("status", detail.status.clone()),
        ("opened", detail.opened_at.clone()),
        ("first response", detail.first_response_at.clone().unwrap_or_default()),
        ("resolved", detail.resolved_at.clone().unwrap_or_default()),
        (
            "escalated to",
            [detail.tier.clone(), detail.team.clone()].into_iter().flatten().collect::<Vec<_>>().join(" / "),
        ),
        ("policy", detail.policy.clone()),
        ("as of", format!("{} (position {})", detail.as_of, models.tickets.position())),
    ] {
        head.add_row(vec![k.to_owned(), v]);
    }
    emit(&head)?;
    let mut clocks =
        table(&["clock", "cycle", "status", "target", "due (UTC)", "elapsed", "remaining", "warned", "breached"]);
    for c in &detail.clocks {
        clocks.add_row(vec![
            c.metric.clone(),
            c.cycle.to_string(),
            c.status.clone(),
            c.target.clone().unwrap_or_else(|| "none".into()),
            c.due_at.clone().unwrap_or_default(),
            c.elapsed.clone().unwrap_or_default(),
            c.remaining.clone().unwrap_or_default(),
            c.warned_percent.iter().map(|w| format!("{w}%")).collect::<Vec<_>>().join(" "),
            if c.breached { "BREACHED".into() } else { String::new() },
        ]);
    }
    emit(&clocks)?;
    let mut severity = table(&["severity changed (UTC)", "from", "to", "why"]);
    for s in &detail.severity_history {
        severity.add_row(vec![s.at.clone(), s.from.clone().unwrap_or_default(), s.to.clone(), s.cause.clone()]);
    }
    emit(&severity)?;
    if !detail.links.is_empty() {
        let mut links = table(&["link", "ticket"]);
        for l in &detail.links {
            links.add_row(vec![l.relation.clone(), l.ticket_id.clone()]);
        }
        emit(&links)?;
    }
    Ok(())
}

pub fn customer(
    data_dir: &Path,
    customer: &str,
    all: bool,
    limit: u32,
    when: Option<&str>,
    json: bool,
) -> Result<(), Failure> {
    let customer = CustomerId::new(customer).map_err(|e| Failure::Usage(e.to_string()))?;
    let (models, _) = models(data_dir, at(when)?)?;
    let rows: Vec<CustomerTicket> =
        models.tickets.model().customer(&customer, all, limit as usize).into_iter().map(CustomerTicket::of).collect();
    if json {
        return print_json(&rows);
    }
    let mut t = table(&["ticket", "severity", "status", "opened (UTC)", "next due (UTC)", "title"]);
    for r in rows {
        t.add_row(vec![r.ticket_id, r.severity, r.status, r.opened_at, r.next_due_at.unwrap_or_default(), r.title]);
    }
    emit(&t)?;
    Ok(())
}

pub fn board(data_dir: &Path, limit: u32, when: Option<&str>, json: bool) -> Result<(), Failure> {
    let at = at(when)?;
    let (models, log) = models(data_dir, at)?;
    let now = as_of(at, &log)?;
    let entries = models.board.model().entries(limit as usize);
    if json {
        let lines: Vec<serde_json::Value> = entries
            .iter()
            .map(|e| {
                serde_json::json!({
                    "ticket_id": e.ticket_id.to_string(),
                    "customer": e.customer.to_string(),
                    "severity": e.severity.to_string(),
                    "metric": e.metric.to_string(),
                    "cycle": e.cycle,
                    "due_at": instant(&e.due_at),
                    "at_risk": e.at_risk,
                    "breached": e.breached,
                })
            })
            .collect();
        return print_json(
            &serde_json::json!({ "position": models.board.position(), "as_of": instant(&now), "entries": lines }),
        );
    }
    emit(&board_table(&entries, now, &|id| id.to_string(), &|t| instant(t)))?;
    Ok(())
}

/// The board as a table: one line per open ticket, the most urgent first; `name` labels a
/// ticket and `when` prints an instant.
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

pub fn timeline(data_dir: &Path, ticket: &str, when: Option<&str>, json: bool) -> Result<(), Failure> {
    let id = ticket_id(ticket)?;
    let (models, log) = models(data_dir, at(when)?)?;
    let mut entries = models.timeline.model().ticket(id);
    ticket_projections::add_details(&mut entries, id, &log)?;
    if entries.is_empty() {
        return Err(Failure::Negative(format!("ticket {id} not found at that moment")));
    }
    if json {
        return print_json(&entries);
    }
    emit(&timeline_table(&entries))?;
    Ok(())
}

pub fn timeline_table(entries: &[ticket_projections::TimelineEntry]) -> comfy_table::Table {
    let mut t = table(&["pos", "occurred (UTC)", "event", "actor", "command", "policy", "details"]);
    for e in entries {
        t.add_row(vec![
            e.position.to_string(),
            instant(&e.occurred_at),
            e.event_type.clone(),
            e.actor.clone(),
            e.command_id.clone(),
            e.policy.clone(),
            e.summary.clone(),
        ]);
    }
    t
}

pub fn compliance(
    data_dir: &Path,
    policy: &Policy,
    from: Option<&str>,
    to: Option<&str>,
    when: Option<&str>,
    json: bool,
) -> Result<(), Failure> {
    let period = Period { from: instant_arg(from, "--from")?, to: instant_arg(to, "--to")? };
    let (models, _) = models(data_dir, at(when)?)?;
    let rows = models.compliance.model().report(period, policy);
    if json {
        return print_json(&rows);
    }
    emit(&compliance_table(&rows))?;
    Ok(())
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

/// Each projection's checkpointed position against the log's head; with `update`, caught up
/// from the log (and checkpointed) first.
pub fn projections_status(data_dir: &Path, update: bool, checkpoint_events: u64, json: bool) -> Result<(), Failure> {
    let log = open(data_dir)?;
    let config = ProjectorConfig { checkpoint_events: checkpoint_events.max(1), ..ProjectorConfig::default() };
    let projector = Projector::open(log.clone(), Some(checkpoints(data_dir)), config);
    if update {
        let bar = progress(log.head(), "catching up");
        bar.set_position(projector.position());
        projector.catch_up(|done, _| bar.set_position(done)).map_err(|e| Failure::Data(e.into()))?;
        projector.checkpoint().map_err(|e| Failure::Data(e.into()))?;
        bar.finish_and_clear();
    }
    crate::output::projection_status(&ticket_nats::projection_status(&projector), "checkpointed position", json)
}

/// Rebuilds projections from the log (all, or the one named), checkpointing every
/// `checkpoint_events` events on the way.
pub fn projections_rebuild(
    data_dir: &Path,
    name: Option<&str>,
    checkpoint_events: u64,
    json: bool,
) -> Result<(), Failure> {
    let log = open(data_dir)?;
    let head = log.head();
    let config = ProjectorConfig { checkpoint_events: checkpoint_events.max(1), ..ProjectorConfig::default() };
    let started = std::time::Instant::now();
    let applied = match name {
        Some(name) => {
            let projector = Projector::open(log, Some(checkpoints(data_dir)), config);
            let bar = progress(head, "rebuilding");
            let applied = projector.rebuild(name, |done, _| bar.set_position(done)).map_err(|e| {
                if let ticket_projections::ProjectorError::UnknownProjection(_) = e {
                    Failure::Usage(e.to_string())
                } else {
                    Failure::Data(e.into())
                }
            })?;
            bar.finish_and_clear();
            applied
        }
        None => {
            // From scratch: the checkpoints go, then everything is applied again.
            let cps = checkpoints(data_dir);
            if cps.dir().exists() {
                std::fs::remove_dir_all(cps.dir())?;
            }
            let projector = Projector::open(log, Some(cps), config);
            let bar = progress(head, "rebuilding");
            let last = projector.catch_up(|done, _| bar.set_position(done)).map_err(|e| Failure::Data(e.into()))?;
            projector.checkpoint().map_err(|e| Failure::Data(e.into()))?;
            bar.finish_and_clear();
            last
        }
    };
    let seconds = started.elapsed().as_secs_f64();
    if json {
        return print_json(&serde_json::json!({ "head": head, "events": applied, "seconds": seconds }));
    }
    emit(&format!("rebuilt up to position {head} ({applied} events) in {seconds:.2} s"))?;
    Ok(())
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
    let horizon = period.to.unwrap_or_else(now).min(now());
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
