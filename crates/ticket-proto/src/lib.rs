//! The ticketd protobuf schema (`proto/ticket/v1`) and the conversions between it and
//! `ticket-domain`. Domain types know nothing of prost: every conversion lives here.
//!
//! - `From<&domain>` for the wire type, infallible;
//! - `TryFrom<wire>` for the domain type, which validates every field and never panics;
//! - [`decode_envelope`], [`decode_command`]: bytes to domain values in one step.

#[allow(clippy::all, missing_debug_implementations, unused_qualifications)]
pub mod pb {
    include!(concat!(env!("OUT_DIR"), "/ticket.v1.rs"));
    include!(concat!(env!("OUT_DIR"), "/ticket.v1.serde.rs"));
}

mod convert;
pub mod endpoint;
mod error;

pub use convert::{decode_command, decode_envelope, encode_command, encode_envelope, error_code};
pub use endpoint::{
    AdminEndpoint, AdminRequest, CommandEndpoint, Endpoint, Family, Query, QueryEndpoint, SERVICE_NAME,
};

/// Wire forms of domain scalars, for messages assembled outside this crate (query replies).
pub mod wire {
    pub use crate::convert::common::{
        duration, metric, severity, timestamp, to_duration as duration_of, to_opt_timestamp as opt_instant,
    };
}
pub use error::ProtoError;

/// The envelope schema version this build writes. Readers accept it and every older version
/// through [`upcast`].
pub const SCHEMA_VERSION: u32 = 1;

/// Brings an envelope of an older schema version to [`SCHEMA_VERSION`]. There is one version so
/// far; a new one adds its step here, so stored events stay readable.
pub fn upcast(envelope: pb::EventEnvelope) -> Result<pb::EventEnvelope, ProtoError> {
    match envelope.schema_version {
        SCHEMA_VERSION => Ok(envelope),
        other => Err(ProtoError::UnsupportedSchema(other)),
    }
}
