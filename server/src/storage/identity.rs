//! Which node and which cluster a data dir belongs to.
//!
//! Why: Raft's guarantees rest on every node keeping its own vote and log. A data dir started
//! under another `--node-id` served the other node's state as its own, and a data dir of
//! another cluster brings a log and a vote that have nothing to do with the cluster it is
//! started in. Both are caught at start from what is recorded here.
//!
//! - The node id is recorded when a node first opens the data dir; opening it under another
//!   id is refused ([`StorageError::WrongNode`]). A data dir written by a build before this
//!   one has none recorded, and takes the id it is next opened with.
//! - The cluster id is 128 random bits, made once by the node that bootstraps the cluster
//!   ([`DataDirIdentity::establish_cluster_id`]), and learned by every other node from the
//!   first internal call it accepts that carries one ([`DataDirIdentity::learn_cluster_id`]).
//!   Random rather than derived from the initial membership: two clusters started with the
//!   same `--peers` (the README's example, run twice) must not share an id. Once recorded it
//!   never changes: calls from another cluster are refused, and a node whose peers report
//!   another cluster stops at start (`cluster_identity`).
//!
//! Owns: the node id and cluster id records of the meta tree. Must not: talk to peers.

use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, OnceLock};

use parking_lot::Mutex;

use crate::storage::db::Database;
use crate::storage::error::StorageError;
use crate::types::NodeId;

const KEY_NODE_ID: &[u8] = b"node_id";
const KEY_CLUSTER_ID: &[u8] = b"cluster_id";
const CLUSTER_ID_BYTES: usize = 16;

/// A cluster's identity: 128 random bits, written as 32 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClusterId([u8; CLUSTER_ID_BYTES]);

impl ClusterId {
    /// A new id; 128 random bits make two clusters sharing one as likely as a UUID collision.
    pub fn random() -> Self {
        Self(rand::random())
    }

    /// The id of a cluster restored from a backup (`percyd restore`): the first 128 bits of
    /// SHA-256 over a domain tag and `material` (the backup's checksum and the new
    /// membership). Derived, not random, because every node of the new cluster is restored
    /// on its own and they must agree without talking; it cannot equal the old cluster's id,
    /// which was random (a collision is as likely as guessing 128 random bits).
    pub fn derived(material: &[u8]) -> Self {
        use sha2::{Digest, Sha256};
        let digest = Sha256::new()
            .chain_update(b"percy restored cluster id v1\0")
            .chain_update(material)
            .finalize();
        let mut bytes = [0u8; CLUSTER_ID_BYTES];
        bytes.copy_from_slice(&digest[..CLUSTER_ID_BYTES]);
        Self(bytes)
    }
}

impl fmt::Display for ClusterId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|byte| write!(f, "{byte:02x}"))
    }
}

impl fmt::Debug for ClusterId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ClusterId({self})")
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a cluster id is {digits} hex digits, not {found:?}")]
pub struct BadClusterId {
    digits: usize,
    found: String,
}

impl FromStr for ClusterId {
    type Err = BadClusterId;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        // The text comes from a peer: echo a bounded part of it.
        let bad = || BadClusterId {
            digits: 2 * CLUSTER_ID_BYTES,
            found: s.chars().take(4 * CLUSTER_ID_BYTES).collect(),
        };
        if s.len() != 2 * CLUSTER_ID_BYTES || !s.is_ascii() {
            return Err(bad());
        }
        let mut bytes = [0u8; CLUSTER_ID_BYTES];
        for (byte, pair) in bytes.iter_mut().zip(s.as_bytes().chunks(2)) {
            let pair = std::str::from_utf8(pair).map_err(|_| bad())?;
            *byte = u8::from_str_radix(pair, 16).map_err(|_| bad())?;
        }
        Ok(Self(bytes))
    }
}

/// Why a cluster id from a peer was not taken.
#[derive(Debug, thiserror::Error)]
pub enum LearnError {
    #[error("this node belongs to cluster {ours}, not to cluster {theirs}")]
    OtherCluster { ours: ClusterId, theirs: ClusterId },
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// The identity of one node's data dir. Cheap to clone; clones share the cluster id.
#[derive(Clone)]
pub struct DataDirIdentity {
    db: Database,
    node_id: NodeId,
    cluster: Arc<OnceLock<ClusterId>>,
    /// Serialises the recording of the cluster id: two first calls must not both record one.
    recording: Arc<Mutex<()>>,
}

impl DataDirIdentity {
    /// Opens the data dir as node `node_id`: records the id if none is recorded, refuses the
    /// data dir if another is.
    pub(crate) fn claim(db: Database, node_id: NodeId) -> Result<Self, StorageError> {
        match db
            .meta
            .get(KEY_NODE_ID)
            .map_err(|e| db.io_error("reading the node id", e))?
        {
            Some(bytes) => {
                let recorded = <[u8; 8]>::try_from(bytes.as_ref())
                    .map(u64::from_le_bytes)
                    .map_err(|_| db.corrupt("node id", format!("{} bytes", bytes.len())))?;
                if recorded != node_id {
                    return Err(StorageError::WrongNode {
                        path: db.path().to_path_buf(),
                        recorded,
                        requested: node_id,
                    });
                }
            }
            None => {
                db.meta
                    .insert(KEY_NODE_ID, &node_id.to_le_bytes())
                    .map_err(|e| db.io_error("recording the node id", e))?;
                db.flush_blocking("flushing the node id")?;
            }
        }
        let cluster = match db
            .meta
            .get(KEY_CLUSTER_ID)
            .map_err(|e| db.io_error("reading the cluster id", e))?
        {
            Some(bytes) => OnceLock::from(ClusterId(
                <[u8; CLUSTER_ID_BYTES]>::try_from(bytes.as_ref())
                    .map_err(|_| db.corrupt("cluster id", format!("{} bytes", bytes.len())))?,
            )),
            None => OnceLock::new(),
        };
        Ok(Self {
            db,
            node_id,
            cluster: Arc::new(cluster),
            recording: Arc::default(),
        })
    }

    pub fn node_id(&self) -> NodeId {
        self.node_id
    }

    /// The cluster this data dir belongs to, once it knows.
    pub fn cluster_id(&self) -> Option<ClusterId> {
        self.cluster.get().copied()
    }

    /// The bootstrapping node's: the recorded cluster id, or a new one, recorded and flushed
    /// before it is returned (before any peer can hear it).
    pub fn establish_cluster_id(&self) -> Result<ClusterId, StorageError> {
        let _recording = self.recording.lock();
        if let Some(known) = self.cluster_id() {
            return Ok(known);
        }
        let id = ClusterId::random();
        self.record(id)?;
        tracing::info!(cluster_id = %id, "new cluster id");
        Ok(id)
    }

    /// Takes `theirs`, the cluster id a peer's call carries: recorded (and flushed) if this
    /// data dir has none yet, accepted if it is the same, refused if it differs.
    pub fn learn_cluster_id(&self, theirs: ClusterId) -> Result<(), LearnError> {
        if let Some(ours) = self.cluster_id() {
            return check_same(ours, theirs);
        }
        let _recording = self.recording.lock();
        if let Some(ours) = self.cluster_id() {
            return check_same(ours, theirs);
        }
        self.record(theirs)?;
        tracing::info!(cluster_id = %theirs, "joined a cluster: recorded its id");
        Ok(())
    }

    /// `percyd restore`'s: records the new cluster's id in a data dir that has none (the
    /// caller made the data dir), without claiming to have joined anyone.
    pub(crate) fn seed_cluster_id(&self, id: ClusterId) -> Result<(), LearnError> {
        let _recording = self.recording.lock();
        if let Some(ours) = self.cluster_id() {
            return check_same(ours, id);
        }
        Ok(self.record(id)?)
    }

    /// Called with `recording` held and no id known.
    fn record(&self, id: ClusterId) -> Result<(), StorageError> {
        self.db
            .meta
            .insert(KEY_CLUSTER_ID, &id.0)
            .map_err(|e| self.db.io_error("recording the cluster id", e))?;
        self.db.flush_blocking("flushing the cluster id")?;
        let stored = self.cluster.set(id);
        debug_assert!(stored.is_ok(), "the cluster id is recorded once");
        Ok(())
    }
}

fn check_same(ours: ClusterId, theirs: ClusterId) -> Result<(), LearnError> {
    if ours == theirs {
        Ok(())
    } else {
        Err(LearnError::OtherCluster { ours, theirs })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim(dir: &std::path::Path, node_id: NodeId) -> Result<DataDirIdentity, StorageError> {
        DataDirIdentity::claim(Database::open(dir).expect("database"), node_id)
    }

    #[test]
    fn cluster_ids_print_and_parse_as_32_hex_digits() {
        let id = ClusterId::random();
        let text = id.to_string();
        assert_eq!(text.len(), 32);
        assert_eq!(text.parse::<ClusterId>(), Ok(id));
        assert_ne!(ClusterId::random(), id);
        for bad in [
            "",
            "abc",
            &text[1..],
            &format!("{text}0"),
            &text.replace(|_| true, "g"),
        ] {
            assert!(bad.parse::<ClusterId>().is_err(), "{bad:?}");
        }
        assert!("é".repeat(16).parse::<ClusterId>().is_err());
    }

    #[test]
    fn a_data_dir_stays_with_the_node_that_first_opened_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        drop(claim(dir.path(), 2).expect("first open"));
        drop(claim(dir.path(), 2).expect("same node"));
        match claim(dir.path(), 3) {
            Err(StorageError::WrongNode {
                recorded,
                requested,
                ..
            }) => assert_eq!((recorded, requested), (2, 3)),
            other => panic!("expected WrongNode, got {:?}", other.err()),
        }
    }

    #[test]
    fn the_first_cluster_id_learned_is_kept_across_reopens() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (ours, other) = (ClusterId::random(), ClusterId::random());
        {
            let identity = claim(dir.path(), 1).expect("open");
            assert_eq!(identity.cluster_id(), None);
            identity.learn_cluster_id(ours).expect("first id");
            identity.learn_cluster_id(ours).expect("same id again");
            assert!(matches!(
                identity.learn_cluster_id(other),
                Err(LearnError::OtherCluster { .. })
            ));
            assert_eq!(identity.establish_cluster_id().expect("establish"), ours);
        }
        let identity = claim(dir.path(), 1).expect("reopen");
        assert_eq!(identity.cluster_id(), Some(ours));
        assert!(identity.learn_cluster_id(other).is_err());
    }

    #[test]
    fn a_bootstrapping_node_makes_one_id_and_keeps_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let made = {
            let identity = claim(dir.path(), 1).expect("open");
            let made = identity.establish_cluster_id().expect("establish");
            assert_eq!(identity.establish_cluster_id().expect("again"), made);
            made
        };
        let identity = claim(dir.path(), 1).expect("reopen");
        assert_eq!(identity.establish_cluster_id().expect("after reopen"), made);
    }
}
