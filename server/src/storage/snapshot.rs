//! The snapshot format and where the latest snapshot is kept.
//!
//! A snapshot's bytes (what openraft streams to a follower) are a self-describing envelope:
//! the version byte and a postcard header with the last applied log id and membership, then
//! the state machine's own image (`StateMachine::snapshot()`, which carries its own version).
//! The receiver can therefore check that the bytes match the metadata openraft sent along.
//!
//! Owns: the envelope layout and the `snapshot` tree (metadata + bytes, written in one atomic
//! batch). Must not: flush (the caller decides when), or touch the live state machine.

use serde::{Deserialize, Serialize};

use crate::storage::codec::{self, DecodeError};
use crate::storage::db::Database;
use crate::storage::error::StorageError;
use crate::types::{LogId, NodeId, StoredMembership};

pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, openraft::BasicNode>;

const KEY_META: &[u8] = b"meta";
const KEY_DATA: &[u8] = b"data";

#[derive(Serialize, Deserialize)]
struct EnvelopeHeader {
    last_applied: Option<LogId>,
    last_membership: StoredMembership,
}

/// A decoded envelope; `state` borrows the state machine image from the input bytes.
pub(crate) struct Envelope<'a> {
    pub last_applied: Option<LogId>,
    pub last_membership: StoredMembership,
    pub state: &'a [u8],
}

impl Envelope<'_> {
    pub fn encode(&self) -> Result<Vec<u8>, postcard::Error> {
        let header = EnvelopeHeader {
            last_applied: self.last_applied,
            last_membership: self.last_membership.clone(),
        };
        let mut bytes = codec::encode(&header)?;
        bytes.extend_from_slice(self.state);
        Ok(bytes)
    }

    pub fn decode(bytes: &[u8]) -> Result<Envelope<'_>, DecodeError> {
        let (header, state) = codec::decode_prefix::<EnvelopeHeader>(bytes)?;
        Ok(Envelope {
            last_applied: header.last_applied,
            last_membership: header.last_membership,
            state,
        })
    }

    /// The envelope must describe the same point in the log as the metadata it came with.
    pub fn check_matches(&self, meta: &SnapshotMeta) -> Result<(), String> {
        if self.last_applied != meta.last_log_id || self.last_membership != meta.last_membership {
            return Err(format!(
                "snapshot bytes are for last applied {:?} / membership {:?}, metadata says {:?} / {:?}",
                self.last_applied, self.last_membership, meta.last_log_id, meta.last_membership
            ));
        }
        Ok(())
    }
}

/// Replaces the stored snapshot, metadata and bytes together. Not flushed.
pub(crate) fn store(db: &Database, meta: &SnapshotMeta, data: &[u8]) -> Result<(), StorageError> {
    let meta_bytes = codec::encode(meta).map_err(|e| db.corrupt("snapshot metadata", e))?;
    let mut batch = sled::Batch::default();
    batch.insert(KEY_META, meta_bytes);
    batch.insert(KEY_DATA, data);
    db.snapshot
        .apply_batch(batch)
        .map_err(|e| db.io_error("writing the snapshot", e))
}

/// The stored snapshot's metadata, without reading its bytes.
pub(crate) fn load_meta(db: &Database) -> Result<Option<SnapshotMeta>, StorageError> {
    let meta = db
        .snapshot
        .get(KEY_META)
        .map_err(|e| db.io_error("reading the snapshot metadata", e))?;
    meta.map(|bytes| codec::decode(&bytes).map_err(|e| db.corrupt("snapshot metadata", e)))
        .transpose()
}

/// The stored snapshot, checked for consistency between its metadata and its bytes. The bytes
/// are sled's own buffer, not a copy: a million tasks are tens of megabytes, and a restart
/// reads them only to decode them.
pub(crate) fn load(db: &Database) -> Result<Option<(SnapshotMeta, sled::IVec)>, StorageError> {
    let Some(meta) = load_meta(db)? else {
        return Ok(None);
    };
    let data = db
        .snapshot
        .get(KEY_DATA)
        .map_err(|e| db.io_error("reading the snapshot", e))?
        .ok_or_else(|| db.corrupt("snapshot", "metadata present but bytes missing"))?;
    let envelope = Envelope::decode(&data).map_err(|e| db.corrupt("snapshot", e))?;
    envelope
        .check_matches(&meta)
        .map_err(|e| db.corrupt("snapshot", e))?;
    Ok(Some((meta, data)))
}
