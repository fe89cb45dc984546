use std::collections::BTreeMap;
use std::time::Duration;

use ticket_proto::pb;

use crate::connection::ConnectionError;

/// Why a request to ticketd got no usable answer.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// ticketd answered with a typed error: the wire code, its message and its particulars.
    #[error("refused ({}): {message}", code.as_str_name())]
    Refused { code: pb::ErrorCode, message: String, details: BTreeMap<String, String> },
    /// No reply within the client's timeout (after its retries, if any).
    #[error("ticketd did not answer on {subject} within {after:?}")]
    Timeout { subject: String, after: Duration },
    /// Nothing serves the subject: ticketd is not running (or not yet, or no longer).
    #[error("no ticketd answers on {subject}: is it running?")]
    NoResponders { subject: String },
    /// The request could not be sent or its reply not received.
    #[error("the request on {subject} failed: {message}")]
    Transport { subject: String, message: String },
    /// A reply came but is not what the endpoint answers.
    #[error("an undecodable reply on {subject}: {problem}")]
    Undecodable { subject: String, problem: String },
    /// The login settings are wrong (before any connection is tried).
    #[error(transparent)]
    Login(#[from] ConnectionError),
    /// The connection to NATS could not be made.
    #[error("cannot connect to {url} with {login}: {message}")]
    Connect { url: String, login: String, message: String },
}

/// What kind of failure a [`ClientError`] is, for callers that decide what to do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientErrorKind {
    /// Refused by ticketd with this wire code.
    Refused(pb::ErrorCode),
    Timeout,
    /// No responders: nothing serves the subject now.
    Unavailable,
    Transport,
    Undecodable,
    /// Login settings or the connection.
    Connect,
}

impl ClientError {
    pub fn kind(&self) -> ClientErrorKind {
        match self {
            ClientError::Refused { code, .. } => ClientErrorKind::Refused(*code),
            ClientError::Timeout { .. } => ClientErrorKind::Timeout,
            ClientError::NoResponders { .. } => ClientErrorKind::Unavailable,
            ClientError::Transport { .. } => ClientErrorKind::Transport,
            ClientError::Undecodable { .. } => ClientErrorKind::Undecodable,
            ClientError::Login(_) | ClientError::Connect { .. } => ClientErrorKind::Connect,
        }
    }

    /// The wire error code of a refusal.
    pub fn code(&self) -> Option<pb::ErrorCode> {
        if let ClientError::Refused { code, .. } = self { Some(*code) } else { None }
    }

    /// Whether sending the same request again may succeed: nothing answered it (a timeout, no
    /// responders while ticketd restarts, a broken connection). A command sent again with the
    /// same id is safe: ticketd answers a repeated id with the original events.
    pub fn is_retryable(&self) -> bool {
        match self.kind() {
            ClientErrorKind::Timeout | ClientErrorKind::Unavailable | ClientErrorKind::Transport => true,
            ClientErrorKind::Refused(_) | ClientErrorKind::Undecodable | ClientErrorKind::Connect => false,
        }
    }

    pub(crate) fn refused(error: pb::Error) -> Self {
        let code = pb::ErrorCode::try_from(error.code).unwrap_or(pb::ErrorCode::Unspecified);
        ClientError::Refused { code, message: error.message, details: error.details }
    }

    /// A refusal as the wire error ticketd sent (to show it as canonical proto3 JSON).
    pub fn to_wire(&self) -> Option<pb::Error> {
        let ClientError::Refused { code, message, details } = self else { return None };
        Some(pb::Error { code: *code as i32, message: message.clone(), details: details.clone() })
    }
}
