//! The audit: what `ticketctl audit verify` checks beyond an engine's own integrity check (the
//! sled hash chain). Positions are gapless, each ticket's versions are contiguous, its decision
//! instants never run backwards and never lie ahead of the instant the log appended them, the
//! stored commands account for every event, and re-running each stored decision with the policy
//! it was made with reproduces exactly the stored events.

use std::collections::{BTreeMap, HashMap, HashSet};

use ticket_domain::{
    Event, Policy, PolicyVersion, RecordedEvent, TicketId, TicketState, Timestamp, decide_under, evolve_recorded,
};
use ticket_log::{ClockKind, CommandRecord, EventLog, LogError};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditProblem {
    pub position: u64,
    pub ticket_id: Option<TicketId>,
    pub problem: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditReport {
    pub events: u64,
    pub tickets: u64,
    pub commands: u64,
    /// Commands whose decision was re-run and matched.
    pub replayed: u64,
    /// Commands not re-run because their policy was not given, by policy.
    pub skipped: BTreeMap<String, u64>,
    /// Tickets with a stored event that does not fit their history (each is also a problem, at
    /// that event's position); their later commands are not re-run.
    pub quarantined: u64,
    pub problems: Vec<AuditProblem>,
}

impl AuditReport {
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty()
    }
}

/// The phases the progress callback reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuditPhase {
    Events,
    Commands,
}

const BATCH: usize = 4096;
const MAX_PROBLEMS: usize = 1000;

/// Audits the whole log. `policies` are the policy versions commands may have been decided
/// with; `progress(phase, done, total)` is called as the audit goes.
pub fn audit<L: EventLog>(
    log: &L,
    policies: &[Policy],
    progress: impl FnMut(AuditPhase, u64, u64),
) -> Result<AuditReport, LogError> {
    audit_on(log, policies, ClockKind::Wall, progress)
}

/// [`audit`] of a log whose decision instants came from a `clock` of that kind. A simulated
/// clock's instants (a test clock's, the demo's) run ahead of the wall clock that stamps the
/// appends, so they are not compared with them; every other check applies.
pub fn audit_on<L: EventLog>(
    log: &L,
    policies: &[Policy],
    clock: ClockKind,
    mut progress: impl FnMut(AuditPhase, u64, u64),
) -> Result<AuditReport, LogError> {
    let wall = match clock {
        ClockKind::Wall => true,
        ClockKind::Simulated => false,
    };
    let head = log.head();
    let mut report = AuditReport::default();
    let problem = |report: &mut AuditReport, position, ticket_id, problem: String| {
        if report.problems.len() < MAX_PROBLEMS {
            report.problems.push(AuditProblem { position, ticket_id, problem });
        }
    };

    // Events: gapless positions, contiguous versions and instants in order per ticket, none
    // decided after it was appended.
    let mut versions: HashMap<TicketId, u64> = HashMap::new();
    let mut instants: HashMap<TicketId, Timestamp> = HashMap::new();
    let mut next = 1;
    while next <= head {
        let batch = log.read_from(next, BATCH)?;
        if batch.is_empty() {
            problem(&mut report, next, None, format!("position {next} is missing"));
            break;
        }
        for e in &batch {
            if e.position != next {
                problem(&mut report, next, None, format!("position {next} is missing"));
            }
            let last = versions.entry(e.event.ticket_id).or_insert(0);
            if e.version != *last + 1 {
                let expected = *last + 1;
                problem(
                    &mut report,
                    e.position,
                    Some(e.event.ticket_id),
                    format!("version {} where {expected} was due", e.version),
                );
            }
            *last = e.version;
            let (id, at) = (e.event.ticket_id, e.event.occurred_at);
            if wall && at > e.recorded_at {
                let why = format!("decided at {at}, ahead of its append at {}", e.recorded_at);
                problem(&mut report, e.position, Some(id), why);
            }
            let latest = instants.entry(id).or_insert(at);
            if at < *latest {
                let why = format!("decided at {at}, before the ticket's previous decision at {latest}");
                problem(&mut report, e.position, Some(id), why);
            }
            *latest = at.max(*latest);
            next = e.position + 1;
            report.events += 1;
        }
        progress(AuditPhase::Events, report.events, head);
    }
    report.tickets = versions.len() as u64;

    // Commands: they cover every event, once, and re-running them gives the same events. Each
    // ticket's state is folded along, in log order, so every decision is re-run on the state
    // just before it and every stored event is checked to fit its ticket's history.
    let by_version: HashMap<&PolicyVersion, &Policy> = policies.iter().map(|p| (p.version(), p)).collect();
    let mut states: HashMap<TicketId, TicketState> = HashMap::new();
    let mut quarantined: HashSet<TicketId> = HashSet::new();
    let mut covered = 0;
    let mut from = 1;
    loop {
        let commands = log.commands_from(from, BATCH)?;
        let Some(last) = commands.last() else { break };
        from = last.first_position + 1;
        for record in &commands {
            report.commands += 1;
            if record.first_position != covered + 1 || record.last_position < record.first_position {
                problem(
                    &mut report,
                    record.first_position,
                    Some(record.command.ticket_id),
                    format!(
                        "command {} covers {}..={} after {covered}",
                        record.command.id, record.first_position, record.last_position
                    ),
                );
            }
            covered = covered.max(record.last_position);
            let count = usize::try_from(record.last_position.saturating_sub(record.first_position) + 1).unwrap_or(0);
            let stored = log.read_from(record.first_position, count)?;
            let ticket = record.command.ticket_id;
            if !quarantined.contains(&ticket) {
                match record.policy.as_ref().and_then(|v| by_version.get(v)) {
                    Some(policy) => {
                        let before = states.get(&ticket).unwrap_or(&TicketState::Unopened);
                        match replay(record, before, &stored, policy) {
                            None => report.replayed += 1,
                            Some(why) => problem(&mut report, record.first_position, Some(ticket), why),
                        }
                    }
                    None => {
                        let name = record.policy.as_ref().map_or_else(|| "unknown".to_owned(), ToString::to_string);
                        *report.skipped.entry(name).or_default() += 1;
                    }
                }
            }
            for e in &stored {
                let id = e.event.ticket_id;
                if quarantined.contains(&id) {
                    continue;
                }
                if let Err(misfit) = evolve_recorded(states.entry(id).or_default(), e) {
                    let why =
                        format!("the stored event does not fit the ticket's history ({misfit}); ticket quarantined");
                    problem(&mut report, e.position, Some(id), why);
                    quarantined.insert(id);
                    states.remove(&id);
                }
            }
        }
        progress(AuditPhase::Commands, covered, head);
    }
    report.quarantined = quarantined.len() as u64;
    if covered != head {
        problem(&mut report, covered + 1, None, format!("events {}..={head} belong to no stored command", covered + 1));
    }
    Ok(report)
}

/// Re-runs a stored decision on the state just before it; `Some(why)` when it differs.
fn replay(record: &CommandRecord, before: &TicketState, stored: &[RecordedEvent], policy: &Policy) -> Option<String> {
    let stored: Vec<&Event> = stored.iter().map(|e| &e.event).collect();
    match decide_under(record.rules, &record.command, before, policy) {
        Err(e) => Some(format!("re-running command {} refuses it: {e}", record.command.id)),
        Ok(events) if events.iter().eq(stored.iter().copied()) => None,
        Ok(events) => {
            let index = events.iter().zip(&stored).position(|(a, b)| a != *b).unwrap_or(events.len().min(stored.len()));
            Some(format!(
                "re-running command {} gives {} events where {} are stored; the first difference is event {}",
                record.command.id,
                events.len(),
                stored.len(),
                index + 1
            ))
        }
    }
}
