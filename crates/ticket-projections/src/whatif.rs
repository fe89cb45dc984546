//! What-if: history replayed under a candidate policy, compared with what the log recorded.
//!
//! The inputs of history are the commands support tools and customers issued (stored in the
//! log). The timer's commands are consequences of the policy, so under the candidate they are
//! derived again: each ticket's commands are decided in order with the candidate policy, and
//! before each one (and up to the horizon) every firing its clocks state is fired at its exact
//! instant, as a timer that is never late would. Nothing is written anywhere.
//!
//! Compared per ticket: the due instant of every clock cycle (the last one stated), the breaches
//! (metric, cycle, due instant), the no-response downgrades, and commands the candidate refuses.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::Serialize;
use ticket_domain::DeadlineIndex;
use ticket_domain::{
    ActorId, ActorKind, Command, Event, EventKind, Metric, Policy, RecordedEvent, Severity, TicketId, TicketState,
    Timestamp, decide, evolve,
};
use ticket_log::{EventLog, LogError};

use crate::describe::instant;
use crate::models::compliance::Period;

/// What a ticket's history amounts to, for comparison.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Outcome {
    opened_at: Option<Timestamp>,
    dues: BTreeMap<(Metric, u32), Timestamp>,
    breaches: BTreeSet<(Metric, u32, Timestamp)>,
    downgrades: BTreeSet<(Severity, Severity, Timestamp)>,
    refused: Vec<(Timestamp, String, String)>,
}

impl Outcome {
    fn record(&mut self, event: &Event) {
        for change in event.kind.clocks() {
            if let Some(due) = change.plan.as_ref().and_then(|p| p.due_at) {
                self.dues.insert((change.metric, change.cycle), due);
            }
        }
        match &event.kind {
            EventKind::Opened(_) => self.opened_at = Some(event.occurred_at),
            EventKind::SlaBreached { metric, cycle, due_at, .. } => {
                self.breaches.insert((*metric, *cycle, *due_at));
            }
            EventKind::DowngradedForNoResponse { from, to, due_at, .. } => {
                self.downgrades.insert((*from, *to, *due_at));
            }
            EventKind::SeveritySet { .. }
            | EventKind::AgentResponded { .. }
            | EventKind::CustomerInfoRequested { .. }
            | EventKind::CustomerResponded { .. }
            | EventKind::Escalated { .. }
            | EventKind::SlaWarning { .. }
            | EventKind::Resolved { .. }
            | EventKind::Reopened { .. }
            | EventKind::Linked { .. } => {}
        }
    }
}

/// One difference between the recorded history and the candidate's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Change {
    /// `due`, `breach`, `downgrade` or `refused`.
    pub kind: String,
    /// The clock (`first_response#1`), the downgrade, or the refused command.
    pub what: String,
    pub live: Option<String>,
    pub candidate: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TicketChanges {
    pub ticket_id: TicketId,
    pub changes: Vec<Change>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct WhatIfReport {
    pub candidate_policy: String,
    /// Tickets opened in the period and replayed.
    pub tickets: u64,
    /// Commands replayed (the timer's are derived, not replayed).
    pub commands: u64,
    pub breaches_live: u64,
    pub breaches_candidate: u64,
    /// Tickets with at least one difference, ticket by ticket.
    pub changed: Vec<TicketChanges>,
}

/// A replayed ticket: its state under the candidate and the firings its clocks state.
struct Replay<'p> {
    policy: &'p Policy,
    state: TicketState,
    index: DeadlineIndex,
    position: u64,
    outcome: Outcome,
    timer: ActorId,
}

impl Replay<'_> {
    fn decide(&mut self, command: &Command) -> Result<(), String> {
        let events = decide(command, &self.state, self.policy).map_err(|e| e.to_string())?;
        // A split's new ticket is not replayed here: only the command's own ticket's events.
        for event in events.into_iter().filter(|e| e.ticket_id == command.ticket_id) {
            self.outcome.record(&event);
            evolve(&mut self.state, &event).map_err(|misfit| format!("a decided event does not fit: {misfit}"))?;
            self.position += 1;
            let version = self.state.version();
            let id = ticket_log::new_event_id();
            self.index.apply(&RecordedEvent::of_command(id, command, version, self.position, event));
        }
        Ok(())
    }

    /// Fires every firing due at or before `until`, each at its instant.
    fn advance(&mut self, until: Timestamp) {
        while let Some(firing) = self.index.next().copied().filter(|f| f.at <= until) {
            self.index.settle(&firing);
            if let Ok(command) = firing.command(firing.at, &self.timer) {
                // A moot firing is refused by the Decider, as it is live.
                let _ = self.decide(&command);
            }
        }
    }
}

/// Replays the history of the tickets opened in `period` under `candidate` up to `horizon` and
/// reports the differences. `progress(done, total)` as tickets are replayed.
pub fn what_if<L: EventLog>(
    log: &L,
    candidate: &Policy,
    period: Period,
    horizon: Timestamp,
    mut progress: impl FnMut(u64, u64),
) -> Result<WhatIfReport, LogError> {
    // The recorded outcome and the support commands of every ticket, in log order.
    let mut live: HashMap<TicketId, Outcome> = HashMap::new();
    let mut next = 1;
    loop {
        let batch = log.read_from(next, 8192)?;
        let Some(last) = batch.last().map(|e| e.position) else { break };
        for e in &batch {
            live.entry(e.event.ticket_id).or_default().record(&e.event);
        }
        next = last + 1;
    }
    let mut commands: BTreeMap<TicketId, Vec<Command>> = BTreeMap::new();
    let mut from = 1;
    loop {
        let batch = log.commands_from(from, 4096)?;
        let Some(last) = batch.last().map(|c| c.last_position) else { break };
        for record in batch {
            if record.command.actor.kind != ActorKind::System {
                commands.entry(record.command.ticket_id).or_default().push(record.command);
            }
        }
        from = last + 1;
    }
    commands.retain(|ticket, _| live.get(ticket).and_then(|o| o.opened_at).is_some_and(|t| period.contains(t)));

    let timer = ActorId::new("ticket-timer").map_err(|e| LogError::InvalidAppend(e.to_string()))?;
    let mut report = WhatIfReport { candidate_policy: candidate.version().to_string(), ..WhatIfReport::default() };
    let total = commands.len() as u64;
    for (done, (ticket, commands)) in commands.into_iter().enumerate() {
        let mut replay = Replay {
            policy: candidate,
            state: TicketState::initial(),
            index: DeadlineIndex::new(),
            position: 0,
            outcome: Outcome::default(),
            timer: timer.clone(),
        };
        for command in &commands {
            replay.advance(command.issued_at);
            if let Err(refusal) = replay.decide(command) {
                replay.outcome.refused.push((command.issued_at, command.body.name().to_owned(), refusal));
            }
            report.commands += 1;
        }
        replay.advance(horizon);
        let recorded = live.remove(&ticket).unwrap_or_default();
        report.tickets += 1;
        report.breaches_live += recorded.breaches.len() as u64;
        report.breaches_candidate += replay.outcome.breaches.len() as u64;
        let changes = compare(&recorded, &replay.outcome);
        if !changes.is_empty() {
            report.changed.push(TicketChanges { ticket_id: ticket, changes });
        }
        progress(done as u64 + 1, total);
    }
    Ok(report)
}

fn compare(live: &Outcome, candidate: &Outcome) -> Vec<Change> {
    let mut changes = Vec::new();
    let clocks: BTreeSet<&(Metric, u32)> = live.dues.keys().chain(candidate.dues.keys()).collect();
    for key in clocks {
        let (a, b) = (live.dues.get(key), candidate.dues.get(key));
        if a != b {
            changes.push(Change {
                kind: "due".into(),
                what: format!("{}#{}", key.0, key.1),
                live: a.map(instant),
                candidate: b.map(instant),
            });
        }
    }
    for (metric, cycle, due) in live.breaches.symmetric_difference(&candidate.breaches) {
        let in_live = live.breaches.contains(&(*metric, *cycle, *due));
        let at = Some(format!("breached, was due {}", instant(due)));
        changes.push(Change {
            kind: "breach".into(),
            what: format!("{metric}#{cycle}"),
            live: if in_live { at.clone() } else { None },
            candidate: if in_live { None } else { at },
        });
    }
    for (from, to, due) in live.downgrades.symmetric_difference(&candidate.downgrades) {
        let in_live = live.downgrades.contains(&(*from, *to, *due));
        let at = Some(format!("at {}", instant(due)));
        changes.push(Change {
            kind: "downgrade".into(),
            what: format!("{from} -> {to}"),
            live: if in_live { at.clone() } else { None },
            candidate: if in_live { None } else { at },
        });
    }
    for (at, command, refusal) in &candidate.refused {
        changes.push(Change {
            kind: "refused".into(),
            what: format!("{command} at {}", instant(at)),
            live: Some("accepted".into()),
            candidate: Some(refusal.clone()),
        });
    }
    changes
}
