//! Identifiers and validated text: invariants live in the types, so a value that exists is valid.

use std::fmt;

use uuid::Uuid;

/// The identity of a ticket. The command service mints it (uuid v7); the domain only carries it.
#[cfg_attr(feature = "serde-state", derive(serde::Serialize, serde::Deserialize))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TicketId(Uuid);

impl TicketId {
    pub const fn from_uuid(uuid: Uuid) -> Self {
        Self(uuid)
    }

    pub const fn as_uuid(&self) -> &Uuid {
        &self.0
    }

    /// Parses the canonical hyphenated form (or any form `uuid` accepts).
    pub fn parse(text: &str) -> Result<Self, IdError> {
        Uuid::parse_str(text).map(Self).map_err(|_| IdError::new("ticket id", text, "not a uuid"))
    }
}

impl fmt::Display for TicketId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

/// The identity of a stored event: a uuid v7 minted by the log when it appends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EventId(Uuid);

impl EventId {
    pub const fn from_uuid(uuid: Uuid) -> Self {
        Self(uuid)
    }

    pub const fn as_uuid(&self) -> &Uuid {
        &self.0
    }

    pub fn parse(text: &str) -> Result<Self, IdError> {
        Uuid::parse_str(text).map(Self).map_err(|_| IdError::new("event id", text, "not a uuid"))
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

/// A rejected identifier or text value: which field, what was given (shortened), what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {field} {given:?}: {problem}")]
pub struct IdError {
    pub field: &'static str,
    pub given: String,
    pub problem: &'static str,
}

impl IdError {
    fn new(field: &'static str, given: &str, problem: &'static str) -> Self {
        let given: String = given.chars().take(64).collect();
        Self { field, given, problem }
    }
}

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident, $field:literal, $max:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
        #[cfg_attr(feature = "serde-state", derive(serde::Serialize, serde::Deserialize))]
        #[cfg_attr(feature = "serde-state", serde(try_from = "String", into = "String"))]
        pub struct $name(String);

        impl TryFrom<String> for $name {
            type Error = IdError;

            fn try_from(value: String) -> Result<Self, IdError> {
                Self::new(value)
            }
        }

        impl From<$name> for String {
            fn from(value: $name) -> String {
                value.0
            }
        }

        impl $name {
            /// The longest accepted value, in bytes.
            pub const MAX_LEN: usize = $max;

            /// Accepts 1 to `MAX_LEN` bytes of printable characters without surrounding spaces.
            pub fn new(value: impl Into<String>) -> Result<Self, IdError> {
                let value = value.into();
                validate_token($field, &value, Self::MAX_LEN)?;
                Ok(Self(value))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

fn validate_token(field: &'static str, value: &str, max: usize) -> Result<(), IdError> {
    if value.is_empty() {
        return Err(IdError::new(field, value, "must not be empty"));
    }
    if value.len() > max {
        return Err(IdError::new(field, value, "too long"));
    }
    if value.trim() != value {
        return Err(IdError::new(field, value, "must not start or end with white space"));
    }
    if value.chars().any(char::is_control) {
        return Err(IdError::new(field, value, "must not contain control characters"));
    }
    Ok(())
}

string_id!(
    /// The idempotency key of a command: the same id always yields the same result.
    CommandId, "command id", 128
);
string_id!(
    /// A correlation or causation id: ties a command and its events to the request or event
    /// that caused them.
    TraceId, "trace id", 128
);
string_id!(
    /// The customer (an organisation) a ticket belongs to.
    CustomerId, "customer id", 128
);
string_id!(
    /// A plan or contract of the policy (`standard`, `advanced`, `premier-acme`).
    PlanId, "plan id", 64
);
string_id!(
    /// A ticket category of the policy (`technical`, `billing`, ...).
    CategoryId, "category id", 64
);
string_id!(
    /// A named business calendar of the policy.
    CalendarId, "calendar id", 64
);
string_id!(
    /// Who issued a command: an agent's or customer's handle, or a service name.
    ActorId, "actor id", 128
);
string_id!(
    /// A support tier (`tier-1`, `tier-2`) that a ticket can be escalated to.
    Tier, "tier", 64
);
string_id!(
    /// A specialist team that a ticket can be escalated to.
    Team, "team", 64
);

/// Free text written by people (titles, messages, reasons), bounded so one command stays small.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde-state", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde-state", serde(try_from = "String", into = "String"))]
pub struct Text(String);

impl TryFrom<String> for Text {
    type Error = IdError;

    fn try_from(value: String) -> Result<Self, IdError> {
        Self::new("text", value)
    }
}

impl From<Text> for String {
    fn from(value: Text) -> String {
        value.0
    }
}

impl Text {
    /// The longest accepted text, in bytes.
    pub const MAX_LEN: usize = 16 * 1024;

    /// Accepts up to `MAX_LEN` bytes; control characters other than new lines and tabs are refused.
    pub fn new(field: &'static str, value: impl Into<String>) -> Result<Self, IdError> {
        let value = value.into();
        if value.len() > Self::MAX_LEN {
            return Err(IdError::new(field, &value, "too long"));
        }
        if value.chars().any(|c| c.is_control() && c != '\n' && c != '\t' && c != '\r') {
            return Err(IdError::new(field, &value, "must not contain control characters"));
        }
        Ok(Self(value))
    }

    /// Like [`Text::new`], and also refuses an empty or blank text.
    pub fn non_empty(field: &'static str, value: impl Into<String>) -> Result<Self, IdError> {
        let text = Self::new(field, value)?;
        if text.0.trim().is_empty() {
            return Err(IdError::new(field, &text.0, "must not be blank"));
        }
        Ok(text)
    }

    pub fn empty() -> Self {
        Self(String::new())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_validated() {
        assert!(PlanId::new("advanced").is_ok());
        assert_eq!(PlanId::new("").unwrap_err().problem, "must not be empty");
        assert_eq!(PlanId::new(" x").unwrap_err().problem, "must not start or end with white space");
        assert_eq!(PlanId::new("a\u{0}b").unwrap_err().problem, "must not contain control characters");
        assert_eq!(PlanId::new("x".repeat(65)).unwrap_err().problem, "too long");
        assert!(CommandId::new("x".repeat(128)).is_ok());
    }

    #[test]
    fn text_is_bounded_and_may_hold_new_lines() {
        assert!(Text::new("description", "line one\nline two").is_ok());
        assert!(Text::new("description", "x".repeat(Text::MAX_LEN + 1)).is_err());
        assert!(Text::non_empty("title", "   ").is_err());
        assert!(Text::new("title", "bell\u{7}").is_err());
    }

    #[test]
    fn ticket_ids_parse() {
        let id = TicketId::parse("0190b3f2-7c1e-7a2b-9c3d-4e5f60718293").unwrap();
        assert_eq!(id.to_string(), "0190b3f2-7c1e-7a2b-9c3d-4e5f60718293");
        assert!(TicketId::parse("nope").is_err());
    }
}
