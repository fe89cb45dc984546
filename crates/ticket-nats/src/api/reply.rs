//! Replies as they go on the wire: the protobuf body and the service error headers. A command's
//! error is a `CommandReply`, a query's or an operator's request's a `QueryReply`, as each
//! family's client decodes.

use async_nats::HeaderMap;
use bytes::Bytes;
use prost::Message;
use ticket_proto::pb;
use ticket_service::{ServiceError, ServiceErrorKind};

/// A reply's body and headers.
pub(super) type Reply = (Bytes, HeaderMap);

/// A typed error reply to a command.
pub(super) fn command_error(code: pb::ErrorCode, message: String) -> Reply {
    command_error_of(error(code, message))
}

pub(super) fn command_error_of(error: pb::Error) -> Reply {
    let headers = error_headers(&error);
    let reply = pb::CommandReply { result: Some(pb::command_reply::Result::Error(error)) };
    (reply.encode_to_vec().into(), headers)
}

pub(super) fn accepted(accepted: pb::CommandAccepted) -> Reply {
    let reply = pb::CommandReply { result: Some(pb::command_reply::Result::Accepted(accepted)) };
    (reply.encode_to_vec().into(), HeaderMap::new())
}

pub(super) fn query_reply(result: pb::query_reply::Result) -> Reply {
    (pb::QueryReply { result: Some(result) }.encode_to_vec().into(), HeaderMap::new())
}

/// An error reply in the reply type of `family`: a `CommandReply` for commands, a `QueryReply`
/// for queries and operators' requests, as each family's client decodes.
pub(super) fn error_of(family: ticket_proto::Family, error: pb::Error) -> Reply {
    match family {
        ticket_proto::Family::Command => command_error_of(error),
        ticket_proto::Family::Query | ticket_proto::Family::Admin => query_error_of(error),
    }
}

/// A typed error reply to a query or an operator's request: a `QueryReply`, as its client decodes.
pub(super) fn query_error(code: pb::ErrorCode, message: String) -> Reply {
    query_error_of(error(code, message))
}

pub(super) fn query_error_of(error: pb::Error) -> Reply {
    let headers = error_headers(&error);
    (pb::QueryReply { result: Some(pb::query_reply::Result::Error(error)) }.encode_to_vec().into(), headers)
}

pub(super) fn error(code: pb::ErrorCode, message: String) -> pb::Error {
    pb::Error { code: code as i32, message, details: Default::default() }
}

/// The service error headers of an error reply (command or query).
fn error_headers(error: &pb::Error) -> HeaderMap {
    let mut headers = HeaderMap::new();
    let code = pb::ErrorCode::try_from(error.code).unwrap_or(pb::ErrorCode::Unspecified);
    headers.insert(async_nats::service::NATS_SERVICE_ERROR, error.message.as_str());
    headers.insert(async_nats::service::NATS_SERVICE_ERROR_CODE, (code as i32).to_string().as_str());
    headers
}

/// A command service's refusal or failure as its wire error.
pub fn service_error(e: &ServiceError) -> pb::Error {
    match e {
        ServiceError::Rejected(domain) => pb::Error::from(domain),
        ServiceError::Conflict { .. } | ServiceError::Log(_) | ServiceError::Quarantined { .. } => {
            let code = match e.kind() {
                ServiceErrorKind::Conflict => pb::ErrorCode::VersionConflict,
                ServiceErrorKind::Unavailable => pb::ErrorCode::Unavailable,
                ServiceErrorKind::Quarantined => pb::ErrorCode::TicketQuarantined,
                ServiceErrorKind::Storage | ServiceErrorKind::Rejected(_) => pb::ErrorCode::Internal,
            };
            error(code, e.to_string())
        }
    }
}
