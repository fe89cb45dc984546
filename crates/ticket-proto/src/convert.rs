//! Conversions between `ticket-domain` values and the generated protobuf types.

mod command;
pub(crate) mod common;
mod event;
mod view;

use prost::Message;
use ticket_domain::{Command, DomainError, ErrorKind, ImportProblem, RecordedEvent};

use crate::{ProtoError, SCHEMA_VERSION, pb, upcast};

/// Decodes a stored or published event envelope, upcasting older schema versions.
pub fn decode_envelope(bytes: &[u8]) -> Result<RecordedEvent, ProtoError> {
    let envelope = pb::EventEnvelope::decode(bytes)?;
    RecordedEvent::try_from(upcast(envelope)?)
}

/// Encodes an event envelope at the current [`SCHEMA_VERSION`].
pub fn encode_envelope(event: &RecordedEvent) -> Vec<u8> {
    let envelope = pb::EventEnvelope::from(event);
    debug_assert_eq!(envelope.schema_version, SCHEMA_VERSION);
    envelope.encode_to_vec()
}

/// Decodes a complete command (every metadata field set, as the log stores it).
pub fn decode_command(bytes: &[u8]) -> Result<Command, ProtoError> {
    Command::try_from(pb::Command::decode(bytes)?)
}

pub fn encode_command(command: &Command) -> Vec<u8> {
    pb::Command::from(command).encode_to_vec()
}

/// The stable wire code of a domain error kind.
pub fn error_code(kind: ErrorKind) -> pb::ErrorCode {
    match kind {
        ErrorKind::InvalidCommand => pb::ErrorCode::InvalidCommand,
        ErrorKind::TicketNotFound => pb::ErrorCode::TicketNotFound,
        ErrorKind::TicketAlreadyExists => pb::ErrorCode::TicketAlreadyExists,
        ErrorKind::UnknownPlan => pb::ErrorCode::UnknownPlan,
        ErrorKind::UnknownCategory => pb::ErrorCode::UnknownCategory,
        ErrorKind::SeverityNotInContract => pb::ErrorCode::SeverityNotInContract,
        ErrorKind::SeverityNotAllowedForCategory => pb::ErrorCode::SeverityNotAllowedForCategory,
        ErrorKind::TicketResolved => pb::ErrorCode::TicketResolved,
        ErrorKind::InvalidTransition => pb::ErrorCode::InvalidTransition,
        ErrorKind::TimerMoot => pb::ErrorCode::TimerMoot,
        ErrorKind::TimerNotDue => pb::ErrorCode::TimerNotDue,
    }
}

impl From<&DomainError> for pb::Error {
    fn from(error: &DomainError) -> Self {
        let mut details = std::collections::BTreeMap::new();
        let mut put = |k: &str, v: String| {
            details.insert(k.to_owned(), v);
        };
        match error {
            DomainError::InvalidCommand(_) => {}
            DomainError::TicketNotFound(id)
            | DomainError::TicketAlreadyExists(id)
            | DomainError::TicketResolved(id) => {
                put("ticket_id", id.to_string());
            }
            DomainError::UnknownPlan(plan) => put("plan", plan.to_string()),
            DomainError::UnknownCategory(category) => put("category", category.to_string()),
            DomainError::SeverityNotInContract { plan, severity, max } => {
                put("plan", plan.to_string());
                put("severity", severity.to_string());
                put("max_severity", max.to_string());
            }
            DomainError::SeverityNotAllowedForCategory { category, severity, max } => {
                put("category", category.to_string());
                put("severity", severity.to_string());
                put("max_severity", max.to_string());
            }
            DomainError::InvalidTransition(t) => put("transition", format!("{t:?}")),
            DomainError::TimerMoot { metric, cycle, reason } => {
                put("metric", metric.to_string());
                put("cycle", cycle.to_string());
                put("reason", format!("{reason:?}"));
            }
            DomainError::TimerNotDue { metric, due_at, now } => {
                put("metric", metric.to_string());
                put("due_at", due_at.to_rfc3339());
                put("now", now.to_rfc3339());
            }
            DomainError::ImportedInstant { issued_at, problem } => {
                put("issued_at", issued_at.to_rfc3339());
                match problem {
                    ImportProblem::AheadOfClock { now } => put("now", now.to_rfc3339()),
                    ImportProblem::OutOfOrder { last_event_at } => put("last_event_at", last_event_at.to_rfc3339()),
                }
            }
        }
        pb::Error { code: error_code(error.kind()) as i32, message: error.to_string(), details }
    }
}

impl From<&ProtoError> for pb::Error {
    fn from(error: &ProtoError) -> Self {
        let mut details = std::collections::BTreeMap::new();
        if let Some(field) = error.field() {
            details.insert("field".to_owned(), field.to_owned());
        }
        pb::Error { code: pb::ErrorCode::MalformedRequest as i32, message: error.to_string(), details }
    }
}

#[cfg(test)]
mod tests;
