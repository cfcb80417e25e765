//! The one error type of the core. Every variant names the field (and, for limits, the
//! limit) that failed, so a caller can report it without parsing a message.

/// Result alias used throughout the core.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// Bytes that could not be decoded as the expected message.
    #[error("cannot decode {field}: {reason}")]
    Decode { field: String, reason: String },

    /// An argument of the wrong shape (length, range) that is not a validation verdict.
    #[error("invalid {field}: {reason}")]
    InvalidArgument { field: String, reason: String },

    /// A named maximum was exceeded.
    #[error("{field} exceeds {limit_name}: {actual} > {limit}")]
    LimitExceeded {
        field: String,
        limit_name: &'static str,
        limit: u64,
        actual: u64,
    },

    /// A block that decodes but breaks a validation rule.
    #[error("invalid block: {field}: {reason}")]
    InvalidBlock { field: String, reason: String },
}

impl Error {
    pub(crate) fn decode(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Decode {
            field: field.into(),
            reason: reason.into(),
        }
    }

    pub(crate) fn invalid_argument(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::InvalidArgument {
            field: field.into(),
            reason: reason.into(),
        }
    }

    pub(crate) fn invalid_block(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::InvalidBlock {
            field: field.into(),
            reason: reason.into(),
        }
    }

    pub(crate) fn limit(
        field: impl Into<String>,
        limit_name: &'static str,
        limit: usize,
        actual: usize,
    ) -> Self {
        Self::LimitExceeded {
            field: field.into(),
            limit_name,
            limit: limit as u64,
            actual: actual as u64,
        }
    }
}
