//! ticketd on NATS. The command API is a NATS micro service named `tickets` (so it answers
//! `$SRV.PING`, `$SRV.INFO` and `$SRV.STATS`): one endpoint per command under
//! `tickets.cmd.<command>` and queries under `tickets.query.<query>`, protobuf requests and
//! replies (`ticket.v1.Command` / `ticket.v1.CommandReply`). Errors are typed protobuf replies
//! with stable codes, and carry the service error headers (`Nats-Service-Error`,
//! `Nats-Service-Error-Code`). A malformed request, an unknown endpoint or an oversized payload
//! gets an error reply and appends nothing.

mod api;
pub mod publisher;

pub use api::{
    ADMIN, ApiConfig, ApiError, ApiHandle, COMMANDS, QUERIES, SERVICE_NAME, admin_subject, command_subject,
    query_subject, start,
};
