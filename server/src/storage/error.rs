//! Errors of the storage layer, and their translation into openraft's `StorageError`.
//!
//! Owns: the one error type callers of [`crate::storage::open`] see, worded so an operator knows
//! which path is affected and what is wrong with it. Must not: decide policy (retry, reset) —
//! a damaged data dir is always reported, never repaired silently.

use std::path::PathBuf;

use openraft::{AnyError, ErrorSubject, ErrorVerb, StorageIOError};

use crate::storage::durable_log::NotDurable;
use crate::types::NodeId;

/// openraft's error type for storage operations, as the Raft core sees it.
pub type RaftStorageError = openraft::StorageError<NodeId>;

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("cannot create data directory {path}: {source}")]
    CreateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot open the database at {path}: {detail} (is the data dir damaged, or is another percyd using it?)")]
    Open { path: PathBuf, detail: String },
    #[error("{path}: {what} has format version {found}, this build reads version {expected}")]
    FormatVersion {
        path: PathBuf,
        what: &'static str,
        found: u8,
        expected: u8,
    },
    #[error("{path}: holds data but no Percy format marker; refusing to use it (not a percy data dir, or damaged)")]
    MissingMarker { path: PathBuf },
    #[error("{path} holds the data of node {recorded}; refusing to start it as node {requested} (check --node-id and --data-dir)")]
    WrongNode {
        path: PathBuf,
        recorded: NodeId,
        requested: NodeId,
    },
    #[error("{path}: corrupt {what}: {detail}")]
    Corrupt {
        path: PathBuf,
        what: String,
        detail: String,
    },
    #[error("{path}: I/O error while {action}: {source}")]
    File {
        path: PathBuf,
        action: &'static str,
        source: std::io::Error,
    },
    #[error("{path}: I/O error while {action}: {source}")]
    Io {
        path: PathBuf,
        action: &'static str,
        source: sled::Error,
    },
    #[error(transparent)]
    NotDurable(#[from] NotDurable),
}

/// Wraps one of our errors for the Raft core, tagged with what was being done to what.
pub(crate) fn to_raft(
    subject: ErrorSubject<NodeId>,
    verb: ErrorVerb,
    err: &StorageError,
) -> RaftStorageError {
    StorageIOError::new(subject, verb, AnyError::new(err)).into()
}
