//! ticketd on NATS. The command API is a NATS micro service named `tickets` (so it answers
//! `$SRV.PING`, `$SRV.INFO` and `$SRV.STATS`): one endpoint per command under
//! `tickets.cmd.<command>` and queries under `tickets.query.<query>`, protobuf requests and
//! replies (`ticket.v1.Command` / `ticket.v1.CommandReply`; queries and `tickets.admin.*`
//! answer with `ticket.v1.QueryReply`). Errors are typed protobuf replies with stable codes, in
//! the reply type of the subject's family (a query's error, even to an unknown query name, is a
//! `QueryReply`), and carry the service error headers (`Nats-Service-Error`,
//! `Nats-Service-Error-Code`). A malformed request, an unknown endpoint or an oversized payload
//! gets an error reply and appends nothing. A repeated command id answers with the original
//! events and the original ticket.
//!
//! The endpoints are listed once, as `ticket_proto::Endpoint` (shared with the typed client,
//! `ticket-client`); the server registers every one of them.

mod api;
/// Logging in to NATS: the client crate's, shared by ticketd and ticketctl.
pub use ticket_client::connection;
pub mod publisher;

pub use api::identity::{Caller, Identities, IdentityRule, REQUEST_INFO_HEADER, Role, Unstamped};
pub use api::{
    ApiConfig, ApiError, ApiHandle, ClockAdvance, ClockAdvanceError, ClusterApi, ClusterControl, CopyStatus,
    INSTANCE_METADATA, LeaseCheck, MAX_ADVANCE_EVENTS, PartitionApi, Replicas, TestClockControl, TestClockHandle,
    admin_subject, command_subject, partition_subject, query_subject, service_error, start, start_cluster,
};
pub use ticket_proto::SERVICE_NAME;
