use thiserror::Error;

/// Why bytes or a wire message could not become a domain value.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ProtoError {
    #[error("malformed protobuf: {0}")]
    Decode(#[from] prost::DecodeError),
    #[error("missing field {0}")]
    Missing(&'static str),
    #[error("invalid field {field}: {problem}")]
    Invalid { field: &'static str, problem: String },
    #[error("unsupported schema version {0}")]
    UnsupportedSchema(u32),
}

impl ProtoError {
    pub(crate) fn invalid(field: &'static str, problem: impl std::fmt::Display) -> Self {
        ProtoError::Invalid { field, problem: problem.to_string() }
    }

    /// The field the error is about, if any.
    pub fn field(&self) -> Option<&'static str> {
        match self {
            ProtoError::Missing(field) | ProtoError::Invalid { field, .. } => Some(field),
            ProtoError::Decode(_) | ProtoError::UnsupportedSchema(_) => None,
        }
    }
}
