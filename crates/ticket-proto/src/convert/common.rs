//! Scalars shared by every message: instants, durations, enums, ids and texts.

use chrono::{DateTime, TimeDelta};
use ticket_domain::{
    Actor, ActorId, ActorKind, CalendarId, CategoryId, CommandId, CustomerId, EventId, Metric, PlanId, PolicyVersion,
    Severity, Target, TargetAmount, Team, Text, TicketId, Tier, Timestamp, TraceId,
};

use crate::{ProtoError, pb};

pub fn timestamp(t: &Timestamp) -> pbjson_types::Timestamp {
    // Nanoseconds below one second always fit an i32.
    pbjson_types::Timestamp { seconds: t.timestamp(), nanos: i32::try_from(t.timestamp_subsec_nanos()).unwrap_or(0) }
}

pub(crate) fn opt_timestamp(t: Option<&Timestamp>) -> Option<pbjson_types::Timestamp> {
    t.map(timestamp)
}

pub(crate) fn to_timestamp(field: &'static str, t: Option<pbjson_types::Timestamp>) -> Result<Timestamp, ProtoError> {
    let t = t.ok_or(ProtoError::Missing(field))?;
    let nanos = u32::try_from(t.nanos)
        .ok()
        .filter(|n| *n < 1_000_000_000)
        .ok_or_else(|| ProtoError::invalid(field, "nanos out of range"))?;
    DateTime::from_timestamp(t.seconds, nanos).ok_or_else(|| ProtoError::invalid(field, "instant out of range"))
}

/// An optional wire instant, checked (nanoseconds in range, an instant chrono can hold).
pub fn to_opt_timestamp(
    field: &'static str,
    t: Option<pbjson_types::Timestamp>,
) -> Result<Option<Timestamp>, ProtoError> {
    t.map(|t| to_timestamp(field, Some(t))).transpose()
}

pub fn duration(d: TimeDelta) -> pbjson_types::Duration {
    pbjson_types::Duration { seconds: d.num_seconds(), nanos: d.subsec_nanos() }
}

pub fn to_duration(field: &'static str, d: Option<pbjson_types::Duration>) -> Result<TimeDelta, ProtoError> {
    let d = d.ok_or(ProtoError::Missing(field))?;
    if d.nanos.unsigned_abs() >= 1_000_000_000 || (d.seconds > 0 && d.nanos < 0) || (d.seconds < 0 && d.nanos > 0) {
        return Err(ProtoError::invalid(field, "nanos out of range or of the wrong sign"));
    }
    TimeDelta::try_seconds(d.seconds)
        .and_then(|s| s.checked_add(&TimeDelta::nanoseconds(i64::from(d.nanos))))
        .ok_or_else(|| ProtoError::invalid(field, "duration out of range"))
}

pub fn severity(s: Severity) -> i32 {
    (match s {
        Severity::A => pb::Severity::A,
        Severity::B => pb::Severity::B,
        Severity::C => pb::Severity::C,
    }) as i32
}

pub(crate) fn to_severity(field: &'static str, v: i32) -> Result<Severity, ProtoError> {
    match pb::Severity::try_from(v) {
        Ok(pb::Severity::A) => Ok(Severity::A),
        Ok(pb::Severity::B) => Ok(Severity::B),
        Ok(pb::Severity::C) => Ok(Severity::C),
        Ok(pb::Severity::Unspecified) => Err(ProtoError::Missing(field)),
        Err(_) => Err(ProtoError::invalid(field, format!("unknown severity {v}"))),
    }
}

pub fn metric(m: Metric) -> i32 {
    (match m {
        Metric::FirstResponse => pb::Metric::FirstResponse,
        Metric::FollowUp => pb::Metric::FollowUp,
        Metric::Resolution => pb::Metric::Resolution,
        Metric::NoResponse => pb::Metric::NoResponse,
    }) as i32
}

pub(crate) fn to_metric(field: &'static str, v: i32) -> Result<Metric, ProtoError> {
    match pb::Metric::try_from(v) {
        Ok(pb::Metric::FirstResponse) => Ok(Metric::FirstResponse),
        Ok(pb::Metric::FollowUp) => Ok(Metric::FollowUp),
        Ok(pb::Metric::Resolution) => Ok(Metric::Resolution),
        Ok(pb::Metric::NoResponse) => Ok(Metric::NoResponse),
        Ok(pb::Metric::Unspecified) => Err(ProtoError::Missing(field)),
        Err(_) => Err(ProtoError::invalid(field, format!("unknown metric {v}"))),
    }
}

pub(crate) fn percent(field: &'static str, v: u32) -> Result<u8, ProtoError> {
    u8::try_from(v).ok().filter(|p| *p <= 100).ok_or_else(|| ProtoError::invalid(field, "not a percentage"))
}

impl From<&Actor> for pb::Actor {
    fn from(a: &Actor) -> Self {
        let kind = match a.kind {
            ActorKind::Agent => pb::ActorKind::Agent,
            ActorKind::Customer => pb::ActorKind::Customer,
            ActorKind::System => pb::ActorKind::System,
        };
        pb::Actor { kind: kind as i32, id: a.id.to_string() }
    }
}

pub(crate) fn to_actor(field: &'static str, a: Option<pb::Actor>) -> Result<Actor, ProtoError> {
    let a = a.ok_or(ProtoError::Missing(field))?;
    let kind = match pb::ActorKind::try_from(a.kind) {
        Ok(pb::ActorKind::Agent) => ActorKind::Agent,
        Ok(pb::ActorKind::Customer) => ActorKind::Customer,
        Ok(pb::ActorKind::System) => ActorKind::System,
        Ok(pb::ActorKind::Unspecified) => return Err(ProtoError::Missing("actor.kind")),
        Err(_) => return Err(ProtoError::invalid("actor.kind", format!("unknown actor kind {}", a.kind))),
    };
    Ok(Actor { kind, id: ActorId::new(a.id).map_err(|e| ProtoError::invalid("actor.id", e))? })
}

impl From<&PolicyVersion> for pb::PolicyVersion {
    fn from(p: &PolicyVersion) -> Self {
        pb::PolicyVersion { name: p.name.clone(), version: p.version.clone() }
    }
}

pub(crate) fn to_policy(field: &'static str, p: Option<pb::PolicyVersion>) -> Result<PolicyVersion, ProtoError> {
    let p = p.ok_or(ProtoError::Missing(field))?;
    if p.name.is_empty() || p.version.is_empty() {
        return Err(ProtoError::invalid(field, "name and version must be set"));
    }
    Ok(PolicyVersion { name: p.name, version: p.version })
}

impl From<&Target> for pb::Target {
    fn from(t: &Target) -> Self {
        let amount = match t.amount {
            TargetAmount::OpenTime(d) => pb::target::Amount::OpenTime(duration(d)),
            TargetAmount::BusinessDays(n) => pb::target::Amount::BusinessDays(n),
        };
        pb::Target { amount: Some(amount), calendar: t.calendar.to_string() }
    }
}

pub(crate) fn to_target(field: &'static str, t: Option<pb::Target>) -> Result<Target, ProtoError> {
    let t = t.ok_or(ProtoError::Missing(field))?;
    let amount = match t.amount {
        Some(pb::target::Amount::OpenTime(d)) => TargetAmount::OpenTime(to_duration("target.open_time", Some(d))?),
        Some(pb::target::Amount::BusinessDays(n)) => TargetAmount::BusinessDays(n),
        None => return Err(ProtoError::Missing("target.amount")),
    };
    Ok(Target { amount, calendar: CalendarId::new(t.calendar).map_err(|e| ProtoError::invalid("target.calendar", e))? })
}

macro_rules! id_parsers {
    ($($fn_name:ident => $ty:ty),* $(,)?) => {
        $(
            pub(crate) fn $fn_name(field: &'static str, value: String) -> Result<$ty, ProtoError> {
                <$ty>::new(value).map_err(|e| ProtoError::invalid(field, e))
            }
        )*
    };
}

id_parsers!(
    to_command_id => CommandId,
    to_customer => CustomerId,
    to_plan => PlanId,
    to_category => CategoryId,
    to_tier => Tier,
    to_team => Team,
);

pub(crate) fn to_ticket_id(field: &'static str, value: &str) -> Result<TicketId, ProtoError> {
    if value.is_empty() {
        return Err(ProtoError::Missing(field));
    }
    TicketId::parse(value).map_err(|e| ProtoError::invalid(field, e))
}

pub(crate) fn to_event_id(field: &'static str, value: &str) -> Result<EventId, ProtoError> {
    if value.is_empty() {
        return Err(ProtoError::Missing(field));
    }
    EventId::parse(value).map_err(|e| ProtoError::invalid(field, e))
}

/// An optional trace id: the empty string means unset.
pub(crate) fn to_trace(field: &'static str, value: String) -> Result<Option<TraceId>, ProtoError> {
    if value.is_empty() { Ok(None) } else { TraceId::new(value).map(Some).map_err(|e| ProtoError::invalid(field, e)) }
}

pub(crate) fn trace(value: Option<&TraceId>) -> String {
    value.map(ToString::to_string).unwrap_or_default()
}

pub(crate) fn to_text(field: &'static str, value: String) -> Result<Text, ProtoError> {
    Text::new(field, value).map_err(|e| ProtoError::invalid(field, e))
}
