//! `ticketctl clock`: the engine's clock on a running ticketd (remote only). `now` reads it on
//! any deployment; `advance` moves a test clock (`ticketd dev --test-clock`) through every
//! firing due on the way and shows what was recorded.

use std::time::Duration;

use chrono::TimeDelta;
use ticket_client::{Client, ClientConfig};
use ticket_domain::{RecordedEvent, Timestamp};
use ticket_projections::describe::{event as describe, instant};
use ticket_proto::{pb, wire};

use crate::Failure;
use crate::output::{emit, print_json, table};

/// An advance may fire many deadlines, each waited for: its reply takes longer than a query's.
const ADVANCE_TIMEOUT: Duration = Duration::from_secs(600);

/// Where the clock goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    To(Timestamp),
    By(TimeDelta),
}

/// `--to INSTANT` or `--by DURATION` (exactly one).
pub fn target(to: Option<&str>, by: Option<&str>) -> Result<Target, Failure> {
    match (to, by) {
        (Some(to), None) => {
            let to = crate::views::instant_arg(Some(to), "--to")?
                .ok_or_else(|| Failure::Usage("--to must be an RFC 3339 instant".into()))?;
            Ok(Target::To(to))
        }
        (None, Some(by)) => duration(by).map(Target::By).map_err(|e| Failure::Usage(format!("--by: {e}"))),
        (Some(_), Some(_)) | (None, None) => {
            Err(Failure::Usage("clock advance needs one of --to INSTANT or --by DURATION".into()))
        }
    }
}

/// A duration as `2d`, `90m`, `1h30m`, `45s` (days, hours, minutes, seconds; no sign).
pub fn duration(text: &str) -> Result<TimeDelta, String> {
    let mut total = TimeDelta::zero();
    let mut digits = String::new();
    for c in text.trim().chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let amount: i64 = digits.parse().map_err(|_| format!("{text:?}: a number must come before each unit"))?;
        let part = match c {
            'd' => TimeDelta::try_days(amount),
            'h' => TimeDelta::try_hours(amount),
            'm' => TimeDelta::try_minutes(amount),
            's' => TimeDelta::try_seconds(amount),
            other => return Err(format!("{text:?}: unknown unit {other:?} (use d, h, m, s)")),
        };
        total = part.and_then(|p| total.checked_add(&p)).ok_or_else(|| format!("{text:?} is out of range"))?;
        digits.clear();
    }
    if !digits.is_empty() || text.trim().is_empty() {
        return Err(format!("{text:?}: each number needs a unit (d, h, m, s), as in 2d or 1h30m"));
    }
    Ok(total)
}

/// Reads the clock.
pub async fn now(client: Client, json: bool) -> Result<(), Failure> {
    let now = client.clock_now().await.map_err(crate::backend::failure)?;
    if json {
        return print_json(&now);
    }
    let kind = match now.kind() {
        pb::ClockKind::Simulated => "test clock (moves only when advanced)",
        pb::ClockKind::Wall => "wall clock",
        pb::ClockKind::Unspecified => "unknown clock",
    };
    emit(&format!("{} ({kind})", when(now.now.as_ref())))
}

/// Moves the test clock and shows what was recorded on the way.
pub async fn advance(client: Client, target: Target, json: bool) -> Result<(), Failure> {
    let config = ClientConfig { timeout: ADVANCE_TIMEOUT, ..client.config().clone() };
    let client = Client::with_config(client.nats().clone(), config);
    let advanced = match target {
        Target::To(to) => client.advance_clock_to(to).await,
        Target::By(by) => client.advance_clock_by(by).await,
    }
    .map_err(crate::backend::failure)?;
    if json {
        return print_json(&advanced);
    }
    let mut t = table(&["pos", "occurred (UTC)", "ticket", "event", "by", "details"]);
    for envelope in &advanced.events {
        match RecordedEvent::try_from(envelope.clone()) {
            Ok(e) => t.add_row(vec![
                e.position.to_string(),
                instant(&e.event.occurred_at),
                e.event.ticket_id.to_string(),
                e.event.kind.name().to_owned(),
                e.actor.id.to_string(),
                describe(&e.event.kind),
            ]),
            Err(problem) => t.add_row(vec![
                envelope.position.to_string(),
                String::new(),
                String::new(),
                "?".into(),
                String::new(),
                problem.to_string(),
            ]),
        };
    }
    if !advanced.events.is_empty() {
        emit(&t)?;
    }
    let shown =
        if advanced.truncated { format!(" (the first {} shown)", advanced.events.len()) } else { String::new() };
    emit(&format!(
        "clock moved from {} to {}: {} events recorded{shown}, log head {}",
        when(advanced.from.as_ref()),
        when(advanced.now.as_ref()),
        advanced.recorded,
        advanced.last_position
    ))
}

fn when(t: Option<&pbjson_types::Timestamp>) -> String {
    match wire::opt_instant("instant", t.copied()) {
        Ok(Some(t)) => instant(&t),
        Ok(None) => String::new(),
        Err(_) => "?".into(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn durations_read_as_operators_write_them() {
        assert_eq!(duration("2d").unwrap(), TimeDelta::days(2));
        assert_eq!(duration("1h30m").unwrap(), TimeDelta::minutes(90));
        assert_eq!(duration("45s").unwrap(), TimeDelta::seconds(45));
        for bad in ["", "2", "h", "2x", "-2h", "2h30"] {
            assert!(duration(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn an_advance_takes_exactly_one_target() {
        assert!(matches!(target(None, Some("1h")), Ok(Target::By(_))));
        assert!(matches!(target(Some("2026-11-30T09:00:00Z"), None), Ok(Target::To(_))));
        assert!(matches!(target(Some("2026-11-30T09:00:00Z"), Some("1h")), Err(Failure::Usage(_))));
        assert!(matches!(target(None, None), Err(Failure::Usage(_))));
    }
}
