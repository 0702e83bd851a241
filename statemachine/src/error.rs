//! Errors a command can end in. They are part of the replicated state (a session stores the
//! response it gave), so they are plain data: a kind that maps 1:1 to a gRPC status code, and a
//! message written for the user who sent the request.

use serde::{Deserialize, Serialize};

/// What went wrong, in gRPC's vocabulary (the server maps each kind to the status code of the
/// same name).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ErrorKind {
    /// Bad input: sizes, paths, names, cycles, unknown dependencies.
    InvalidArgument,
    /// The entity the command names does not exist.
    NotFound,
    /// An entity with that id or name exists already.
    AlreadyExists,
    /// The state does not allow it: CAS/revision mismatch, stale claim token, wrong status.
    FailedPrecondition,
    /// A limit was reached: a full wait queue, too many in-flight requests in one session.
    ResourceExhausted,
}

/// The error half of [`crate::Response`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct CommandError {
    pub kind: ErrorKind,
    pub message: String,
}

impl CommandError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidArgument, message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::NotFound, message)
    }
    pub fn already_exists(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::AlreadyExists, message)
    }
    pub fn precondition(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::FailedPrecondition, message)
    }
    pub fn exhausted(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::ResourceExhausted, message)
    }
}
