//! The read models. Each is a pure fold over stored events ([`crate::ReadModel`]).

pub mod board;
pub mod compliance;
pub mod tickets;
pub mod timeline;

use ticket_domain::Timestamp;

/// An instant as the read models print it: RFC 3339 in UTC, to the second.
pub fn instant(t: &Timestamp) -> String {
    crate::describe::instant(t)
}

/// A span of time as `1d 02:03:04` (or `02:03:04` under a day); negative spans get a sign.
pub fn span(d: chrono::TimeDelta) -> String {
    let sign = if d < chrono::TimeDelta::zero() { "-" } else { "" };
    let secs = d.num_seconds().unsigned_abs();
    let (days, rest) = (secs / 86_400, secs % 86_400);
    let hms = format!("{:02}:{:02}:{:02}", rest / 3600, rest % 3600 / 60, rest % 60);
    if days > 0 { format!("{sign}{days}d {hms}") } else { format!("{sign}{hms}") }
}
