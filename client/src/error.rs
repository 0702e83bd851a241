//! The library's error type. It keeps the gRPC code, so callers can tell a refusal
//! (`FailedPrecondition`, `NotFound`, …) from an unreachable cluster (`Unavailable`).

use std::time::Duration;

use percy_proto::code_name;
use tonic::Code;

/// Everything a `Client` call can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server answered with this status (or tonic produced it locally).
    /// Not a `#[from]`/`#[source]`: the message already says everything, and a source would
    /// print the status twice in error chains.
    #[error("{}: {}", code_name(.0.code()), .0.message())]
    Status(tonic::Status),

    /// Retries were exhausted without a definite answer. For a mutating call the outcome is
    /// unknown: it may have been applied (once).
    #[error("cluster unavailable: gave up after {attempts} attempts in {elapsed:.1?}; last error: {last}")]
    Unavailable {
        attempts: u32,
        elapsed: Duration,
        last: Box<ClientError>,
    },

    /// One attempt took longer than its time budget.
    #[error("no answer from {endpoint} within {timeout:?}")]
    AttemptTimeout { endpoint: String, timeout: Duration },

    /// A watch asked for revisions the server no longer keeps.
    #[error("watch start revision {requested} has been compacted; the oldest available revision is {compact_revision}")]
    Compacted {
        requested: u64,
        compact_revision: u64,
    },

    #[error("no endpoints given")]
    NoEndpoints,

    #[error("invalid endpoint {endpoint:?}: {reason}")]
    InvalidEndpoint { endpoint: String, reason: String },

    /// The token cannot be sent as gRPC metadata (it is not printable ASCII).
    #[error("invalid token: it must be printable ASCII (as `percyctl token create` prints it)")]
    InvalidToken,

    /// TLS settings the transport refused.
    #[error("TLS for {endpoint}: {reason}")]
    Tls { endpoint: String, reason: String },

    /// The server's answer lacks a field the API promises.
    #[error("malformed listing from server: page token {0:?} came back for the next page (the listing would never end)")]
    PageTokenRepeated(String),
    #[error("malformed response from server: missing {0}")]
    MissingField(&'static str),
}

impl From<tonic::Status> for ClientError {
    fn from(status: tonic::Status) -> Self {
        Self::Status(status)
    }
}

impl ClientError {
    /// The gRPC code this error stands for. Exhausted retries and timed-out attempts are
    /// `Unavailable` (try again later); `Compacted` is `OutOfRange` (the revision is gone).
    pub fn code(&self) -> Code {
        match self {
            Self::Status(status) => status.code(),
            Self::Unavailable { .. } | Self::AttemptTimeout { .. } => Code::Unavailable,
            Self::Compacted { .. } => Code::OutOfRange,
            Self::NoEndpoints
            | Self::InvalidEndpoint { .. }
            | Self::InvalidToken
            | Self::Tls { .. } => Code::InvalidArgument,
            Self::MissingField(_) | Self::PageTokenRepeated(_) => Code::Internal,
        }
    }

    /// The server's status, when the error is one.
    pub fn status(&self) -> Option<&tonic::Status> {
        match self {
            Self::Status(status) => Some(status),
            _ => None,
        }
    }

    /// True when the server definitely refused the request (nothing was applied): bad input,
    /// a failed precondition, a missing entity, a limit. False when the cluster could not be
    /// reached or the outcome is unknown.
    pub fn is_refusal(&self) -> bool {
        match self {
            Self::Status(status) => {
                !crate::retry::is_retryable(status)
                    && !matches!(
                        status.code(),
                        Code::Unknown | Code::Internal | Code::Cancelled | Code::DataLoss
                    )
            }
            Self::Compacted { .. } => true,
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_errors_keep_code_and_message() {
        let err = ClientError::from(tonic::Status::failed_precondition("stale claim token 4"));
        assert_eq!(err.code(), Code::FailedPrecondition);
        assert_eq!(err.to_string(), "FAILED_PRECONDITION: stale claim token 4");
        assert!(err.is_refusal());
    }

    #[test]
    fn exhausted_retries_are_unavailable_not_refusals() {
        let err = ClientError::Unavailable {
            attempts: 3,
            elapsed: Duration::from_secs(10),
            last: Box::new(tonic::Status::unavailable("connection refused").into()),
        };
        assert_eq!(err.code(), Code::Unavailable);
        assert!(!err.is_refusal());
        assert!(err.to_string().contains("connection refused"), "{err}");
    }

    #[test]
    fn compacted_is_out_of_range() {
        let err = ClientError::Compacted {
            requested: 3,
            compact_revision: 50,
        };
        assert_eq!(err.code(), Code::OutOfRange);
        assert!(err.to_string().contains("compacted"));
    }
}
