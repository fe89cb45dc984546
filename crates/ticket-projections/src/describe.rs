//! One-line human descriptions of events, for tables.

use ticket_domain::{ClockChange, ClockEffect, ClockOutcome, EscalationCause, EventKind, LinkRelation, Timestamp};

pub fn instant(t: &Timestamp) -> String {
    t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn clock(change: &ClockChange) -> String {
    let effect = match change.effect {
        ClockEffect::Started => "started",
        ClockEffect::Paused => "paused",
        ClockEffect::Resumed => "resumed",
        ClockEffect::Retargeted => "retargeted",
        ClockEffect::Stopped(ClockOutcome::Met) => "met",
        ClockEffect::Stopped(ClockOutcome::Breached) => "stopped, breached",
        ClockEffect::Stopped(ClockOutcome::Cancelled) => "cancelled",
        ClockEffect::Stopped(ClockOutcome::Untargeted) => "stopped",
    };
    let due = change.plan.as_ref().and_then(|p| p.due_at).map(|d| format!(" due {}", instant(&d))).unwrap_or_default();
    format!("{}#{} {effect}{due}", change.metric, change.cycle)
}

fn clocks(changes: &[ClockChange]) -> String {
    let targeted: Vec<String> =
        changes.iter().filter(|c| c.plan.is_some() || matches!(c.effect, ClockEffect::Stopped(_))).map(clock).collect();
    if targeted.is_empty() { String::new() } else { format!("; {}", targeted.join(", ")) }
}

pub fn event(kind: &EventKind) -> String {
    match kind {
        EventKind::Opened(o) => {
            format!("{} / {} severity {} \"{}\"{}", o.plan, o.category, o.severity, o.title, clocks(&o.clocks))
        }
        EventKind::SeveritySet { from, to, reason, clocks: c } => format!("{from} -> {to} ({reason}){}", clocks(c)),
        EventKind::AgentResponded { clocks: c, .. } => format!("agent responded{}", clocks(c)),
        EventKind::CustomerInfoRequested { request, clocks: c } => format!("asked \"{request}\"{}", clocks(c)),
        EventKind::CustomerResponded { clocks: c, .. } => format!("customer replied{}", clocks(c)),
        EventKind::DowngradedForNoResponse { from, to, due_at, clocks: c, .. } => {
            format!("{from} -> {to}, no reply by {}{}", instant(due_at), clocks(c))
        }
        EventKind::Escalated { tier, team, reason, cause } => {
            let to = team.as_ref().map_or_else(|| tier.to_string(), |t| format!("{tier}/{t}"));
            let why = match cause {
                EscalationCause::Manual => reason.to_string(),
                EscalationCause::Warning { metric, threshold_percent, .. } => {
                    format!("{threshold_percent}% of {metric}")
                }
                EscalationCause::Breach { metric, .. } => format!("{metric} breached"),
            };
            format!("to {to} ({why})")
        }
        EventKind::SlaWarning { metric, cycle, threshold_percent, due_at, .. } => {
            format!("{metric}#{cycle} at {threshold_percent}%, due {}", instant(due_at))
        }
        EventKind::SlaBreached { metric, cycle, severity, due_at } => {
            format!("{metric}#{cycle} severity {severity}, was due {}", instant(due_at))
        }
        EventKind::Resolved { resolution, clocks: c } => format!("\"{resolution}\"{}", clocks(c)),
        EventKind::Reopened { reason, clocks: c } => format!("\"{reason}\"{}", clocks(c)),
        EventKind::Linked { other, relation } => match relation {
            LinkRelation::SplitInto => format!("split into {other}"),
            LinkRelation::SplitFrom => format!("split from {other}"),
        },
    }
}
