//! The fixed, rich history the golden-bytes tests of the stored formats encode (the log's
//! records, the service's snapshots, the read models' checkpoints).
//!
//! It must never change: its commands are fixed, they are decided under fixed rules
//! ([`Rules::V2`], which `audit verify` already requires to decide a stored history the same
//! way forever) and a frozen policy (`golden-policy.toml`, not the shipped file, which may
//! change), and its ids, instants and trace ids are literals.

use std::collections::BTreeMap;

use uuid::Uuid;

use super::{beijing, text, ticket_id};
use crate::command::{Actor, ActorKind, Command, CommandBody, OpenTicket, SplitTicket};
use crate::decide::{Rules, decide_under};
use crate::envelope::RecordedEvent;
use crate::ids::{ActorId, CategoryId, CommandId, CustomerId, EventId, PlanId, Team, TicketId, Tier, TraceId};
use crate::policy::Policy;
use crate::severity::Severity;
use crate::state::{TicketState, evolve};

/// The frozen policy the golden history is decided under.
pub fn golden_policy() -> Policy {
    Policy::from_toml("golden-policy.toml", include_str!("golden-policy.toml")).unwrap()
}

/// The ticket the golden history splits off the main one ([`ticket_id`]).
pub fn golden_split_ticket() -> TicketId {
    TicketId::from_uuid(Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_00aa))
}

/// The golden history as stored: every kind of event (with clock changes of every effect,
/// warnings, breaches, escalations of each cause, a no-response downgrade, a split with its
/// links), with trace ids on some, at consecutive positions from 1.
pub fn golden_history() -> Vec<RecordedEvent> {
    let policy = golden_policy();
    let mut states: BTreeMap<TicketId, TicketState> = BTreeMap::new();
    let mut history = Vec::new();
    for (n, command) in golden_commands().into_iter().enumerate() {
        let state = states.get(&command.ticket_id).cloned().unwrap_or_else(TicketState::initial);
        let events = decide_under(Rules::V2, &command, &state, &policy)
            .unwrap_or_else(|e| panic!("golden command {n} was refused: {e}"));
        for event in events {
            let state = states.entry(event.ticket_id).or_insert_with(TicketState::initial);
            evolve(state, &event).unwrap_or_else(|m| panic!("golden event does not fit: {m}"));
            let position = history.len() as u64 + 1;
            let mut recorded = RecordedEvent::of_command(
                EventId::from_uuid(Uuid::from_u128(0x0190_0000_0000_7000_9000_0000_0000_0000 + u128::from(position))),
                &command,
                state.version(),
                position,
                event,
            );
            if n % 2 == 1 {
                recorded.correlation_id = Some(TraceId::new(format!("corr-{n}")).unwrap());
                recorded.causation_id = Some(TraceId::new(format!("cause-{n}")).unwrap());
            }
            history.push(recorded);
        }
    }
    history
}

/// The commands the golden history is decided from, in order (command `n` has the id
/// `golden-<n>`; the events of the odd ones carry the trace ids `corr-<n>` and `cause-<n>`).
pub fn golden_commands() -> Vec<Command> {
    let t0 = beijing(2026, 3, 2, 9, 0);
    let minutes = |m: i64| t0 + chrono::TimeDelta::minutes(m);
    let agent = Actor { kind: ActorKind::Agent, id: ActorId::new("agent-li").unwrap() };
    let customer = Actor { kind: ActorKind::Customer, id: ActorId::new("acme-ops").unwrap() };
    let script: Vec<(Actor, i64, CommandBody)> = vec![
        (
            customer.clone(),
            0,
            CommandBody::Open(OpenTicket {
                customer: CustomerId::new("acme").unwrap(),
                plan: PlanId::new("advanced").unwrap(),
                category: CategoryId::new("technical").unwrap(),
                title: text("mail cannot be reached"),
                description: text("all users see a timeout since 02:40"),
                severity: Severity::A,
            }),
        ),
        // Settles the first response's warnings (one escalating) and its breach (escalating).
        (agent.clone(), 120, CommandBody::RequestCustomerInfo { request: text("which region?") }),
        // Settles the no-response downgrade (A to B) 24 hours after the request.
        (customer.clone(), 120 + 25 * 60, CommandBody::RecordCustomerReply { message: text("east") }),
        (agent.clone(), 120 + 26 * 60, CommandBody::SetSeverity { severity: Severity::C, reason: text("workaround") }),
        (agent.clone(), 120 + 26 * 60 + 10, CommandBody::RecordAgentResponse { message: text("looking") }),
        (
            agent.clone(),
            120 + 26 * 60 + 15,
            CommandBody::Escalate {
                tier: Tier::new("tier-2").unwrap(),
                team: Some(Team::new("network").unwrap()),
                reason: text("routing"),
            },
        ),
        (
            agent.clone(),
            120 + 26 * 60 + 20,
            CommandBody::Split(SplitTicket {
                new_ticket: golden_split_ticket(),
                category: CategoryId::new("billing").unwrap(),
                severity: Severity::C,
                title: text("refund the outage"),
                description: text("credit for the hours lost"),
            }),
        ),
        (agent.clone(), 120 + 26 * 60 + 30, CommandBody::Resolve { resolution: text("route fixed") }),
        (customer, 120 + 27 * 60, CommandBody::Reopen { reason: text("down again") }),
    ];
    script
        .into_iter()
        .enumerate()
        .map(|(n, (actor, at, body))| Command {
            id: CommandId::new(format!("golden-{n}")).unwrap(),
            ticket_id: ticket_id(),
            actor,
            issued_at: minutes(at),
            body,
        })
        .collect()
}

/// Each ticket's state after the golden history.
pub fn golden_states() -> BTreeMap<TicketId, TicketState> {
    let mut states: BTreeMap<TicketId, TicketState> = BTreeMap::new();
    for recorded in golden_history() {
        let state = states.entry(recorded.event.ticket_id).or_insert_with(TicketState::initial);
        evolve(state, &recorded.event).unwrap();
    }
    states
}

/// Compares the encodings of a stored format with its golden file `<dir>/<stem>-format-<format>.hex`
/// (one hex line per item), and fails with what to do when they differ. With `GOLDEN_BLESS=1`
/// a missing golden file is written; an existing one is never rewritten.
pub fn check_golden(dir: &std::path::Path, stem: &str, format: u32, items: &[Vec<u8>]) {
    let path = dir.join(format!("{stem}-format-{format}.hex"));
    let text: String = items.iter().map(|item| format!("{}\n", hex(item))).collect();
    let Ok(golden) = std::fs::read_to_string(&path) else {
        if std::env::var_os("GOLDEN_BLESS").is_some() {
            std::fs::create_dir_all(dir).unwrap();
            std::fs::write(&path, &text).unwrap();
            return;
        }
        panic!(
            "{} is missing: a new format number needs its golden file; run the test once with GOLDEN_BLESS=1 \
             to write it, and check it in",
            path.display()
        );
    };
    assert!(
        golden == text,
        "the {stem} encoding changed but its format number ({format}) did not: the bytes no longer match \
         {}. Bump the format number, run the test with GOLDEN_BLESS=1 to write the new golden file, check it in, \
         and keep the old one (never edit it); decode it in the old-formats test while it is still supported",
        path.display()
    );
}

/// The items of every golden file `<dir>/<stem>-format-<N>.hex`, by format number.
pub fn golden_files(dir: &std::path::Path, stem: &str) -> BTreeMap<u32, Vec<Vec<u8>>> {
    let mut files = BTreeMap::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        let Some(format) = name.strip_prefix(&format!("{stem}-format-")).and_then(|n| n.strip_suffix(".hex")) else {
            continue;
        };
        let text = std::fs::read_to_string(dir.join(&name)).unwrap();
        files.insert(format.parse().unwrap(), text.lines().map(unhex).collect());
    }
    files
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(line: &str) -> Vec<u8> {
    (0..line.len()).step_by(2).map(|i| u8::from_str_radix(&line[i..i + 2], 16).unwrap()).collect()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::event::{ClockEffect, EscalationCause, EventKind};

    #[test]
    fn the_golden_history_has_every_kind_of_event_and_clock_change() {
        let history = golden_history();
        let names: BTreeSet<&str> = history.iter().map(|e| e.event.kind.name()).collect();
        let all = [
            "opened",
            "severity_set",
            "agent_responded",
            "customer_info_requested",
            "customer_responded",
            "downgraded_for_no_response",
            "escalated",
            "sla_warning",
            "sla_breached",
            "resolved",
            "reopened",
            "linked",
        ];
        assert_eq!(names, all.into_iter().collect(), "{history:#?}");
        let effects: BTreeSet<&str> = history
            .iter()
            .flat_map(|e| e.event.kind.clocks())
            .map(|c| match c.effect {
                ClockEffect::Started => "started",
                ClockEffect::Paused => "paused",
                ClockEffect::Resumed => "resumed",
                ClockEffect::Retargeted => "retargeted",
                ClockEffect::Stopped(_) => "stopped",
            })
            .collect();
        assert!(effects.len() >= 4, "{effects:?}");
        let causes: BTreeSet<&str> = history
            .iter()
            .filter_map(|e| match &e.event.kind {
                EventKind::Escalated { cause: EscalationCause::Manual, .. } => Some("manual"),
                EventKind::Escalated { cause: EscalationCause::Warning { .. }, .. } => Some("warning"),
                EventKind::Escalated { cause: EscalationCause::Breach { .. }, .. } => Some("breach"),
                EventKind::Opened(_)
                | EventKind::SeveritySet { .. }
                | EventKind::AgentResponded { .. }
                | EventKind::CustomerInfoRequested { .. }
                | EventKind::CustomerResponded { .. }
                | EventKind::DowngradedForNoResponse { .. }
                | EventKind::SlaWarning { .. }
                | EventKind::SlaBreached { .. }
                | EventKind::Resolved { .. }
                | EventKind::Reopened { .. }
                | EventKind::Linked { .. } => None,
            })
            .collect();
        assert_eq!(causes.len(), 3, "{causes:?}");
        assert_eq!(golden_states().len(), 2);
    }
}
