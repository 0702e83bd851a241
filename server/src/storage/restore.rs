//! Seeding an empty data dir from a backup image (`percyd restore`): the node id, the new
//! cluster's id, and a Raft snapshot that holds the image at the very start of a new log.
//!
//! The snapshot sits at log id (term 0, node 0, index 0) — where `Raft::initialize` puts a
//! new cluster's first membership entry — with the new membership (every `--peers` entry a
//! voter). Every node restored from the same file with the same `--peers` therefore starts
//! with the same snapshot, the same membership and an empty log: openraft treats them as an
//! initialised cluster (no bootstrap), they elect a leader in term 1, and the state machine's
//! revision continues from the image's. Nothing of the old cluster's log position, term,
//! vote or membership comes along.
//!
//! Owns: writing those records. Must not: decide whether the data dir may be used (the
//! caller refuses a non-empty one) or check the image (the caller restores it first).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use openraft::{BasicNode, CommittedLeaderId, Membership};

use crate::storage::db::Database;
use crate::storage::error::StorageError;
use crate::storage::identity::{ClusterId, DataDirIdentity, LearnError};
use crate::storage::snapshot::{self, Envelope, SnapshotMeta};
use crate::types::{LogId, NodeId, StoredMembership};

/// Where a restored cluster's log starts: the snapshot covers index 0.
pub fn restored_log_id() -> LogId {
    LogId::new(CommittedLeaderId::new(0, 0), 0)
}

/// Writes node `node_id`'s data dir of the restored cluster `cluster_id` with voters
/// `members`, its state `image` at `revision`, and flushes it.
pub fn seed(
    data_dir: &Path,
    node_id: NodeId,
    cluster_id: ClusterId,
    members: &BTreeMap<NodeId, String>,
    image: &[u8],
    revision: u64,
) -> Result<(), StorageError> {
    let db = Database::open(data_dir)?;
    let identity = DataDirIdentity::claim(db.clone(), node_id)?;
    identity.seed_cluster_id(cluster_id).map_err(|e| match e {
        LearnError::Storage(e) => e,
        other => db.corrupt("cluster id", other),
    })?;
    let voters: BTreeSet<NodeId> = members.keys().copied().collect();
    let nodes: BTreeMap<NodeId, BasicNode> = members
        .iter()
        .map(|(id, addr)| (*id, BasicNode::new(addr)))
        .collect();
    let log_id = restored_log_id();
    let membership = StoredMembership::new(Some(log_id), Membership::new(vec![voters], nodes));
    let envelope = Envelope {
        last_applied: Some(log_id),
        last_membership: membership.clone(),
        state: image,
    };
    let data = envelope
        .encode()
        .map_err(|e| db.corrupt("restored snapshot", e))?;
    let meta = SnapshotMeta {
        last_log_id: Some(log_id),
        last_membership: membership,
        snapshot_id: format!("restored-at-revision-{revision}"),
    };
    db.flush_blocking("flushing the restored identity")?;
    snapshot::SnapshotFile::open(data_dir)?.store(&meta, &data)
}
