//! `percyd restore`: seeds one node of a NEW cluster from a backup file
//! (`percyctl snapshot save`), like `etcdutl snapshot restore`.
//!
//! - The file is read and checked completely first (magic, version, lengths, SHA-256, and the
//!   image restored into a state machine whose invariants hold), and the data dir must be
//!   absent or empty: any refusal leaves the disk as it was.
//! - The new cluster's id is derived from the file's checksum and `--peers`
//!   ([`restored_cluster_id`]), so the three nodes restored from one file with one `--peers`
//!   agree on it without talking, and it differs from the old cluster's (random) id: the
//!   internal service of either cluster refuses the other's calls, and a restored node whose
//!   `--peers` name old nodes stops at start (`cluster_identity`).
//! - The image becomes a Raft snapshot at the start of a new log (`storage::seed_restored`):
//!   the state machine continues at the image's revision, so watchers of the new cluster see
//!   revisions go on from there, never back.
//!
//! Owns: the checks and the order of the steps. Must not: start a node.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use percy_proto::backup::{self, BackupError};
use percy_statemachine::StateMachine;

use crate::config::{parse_peers, ConfigError};
use crate::storage::{self, ClusterId, StorageError};
use crate::types::NodeId;

#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("node id must be at least 1")]
    ZeroNodeId,
    #[error("--node-id {0} is not in --peers ({1})")]
    NodeNotInPeers(NodeId, String),
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    BadFile { path: PathBuf, source: BackupError },
    #[error("{path}: the image does not restore: {detail}")]
    BadImage { path: PathBuf, detail: String },
    #[error("data dir {0} is not empty: restore seeds a new node and never writes over an existing data dir")]
    DataDirNotEmpty(PathBuf),
    #[error("data dir {path}: {source}")]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// What was restored, for the one line `percyd restore` prints.
#[derive(Debug, Clone)]
pub struct Restored {
    pub revision: u64,
    pub old_cluster_id: String,
    pub cluster_id: ClusterId,
    pub node_id: NodeId,
    pub data_dir: PathBuf,
}

/// The new cluster's id: the same for every node restored from the file with checksum
/// `checksum` (hex) under the same `peers`; see the module docs.
pub fn restored_cluster_id(checksum: &str, peers: &BTreeMap<NodeId, String>) -> ClusterId {
    let mut material = Vec::new();
    material.extend_from_slice(checksum.as_bytes());
    for (id, addr) in peers {
        // Length-prefixed, so no two membership lists give the same bytes.
        material.extend_from_slice(&id.to_le_bytes());
        material.extend_from_slice(&(addr.len() as u64).to_le_bytes());
        material.extend_from_slice(addr.as_bytes());
    }
    ClusterId::derived(&material)
}

/// Restores node `node_id` of the cluster `peers` (`ID=HOST:PORT,…`) into `data_dir` from the
/// backup file `from`.
pub fn restore(
    from: &Path,
    data_dir: &Path,
    node_id: NodeId,
    peers: &str,
) -> Result<Restored, RestoreError> {
    if node_id == 0 {
        return Err(RestoreError::ZeroNodeId);
    }
    let peers = parse_peers(peers)?;
    if !peers.contains_key(&node_id) {
        let ids: Vec<String> = peers.keys().map(|id| id.to_string()).collect();
        return Err(RestoreError::NodeNotInPeers(node_id, ids.join(",")));
    }
    let existed = check_empty(data_dir)?;
    let bytes = std::fs::read(from).map_err(|source| RestoreError::Read {
        path: from.to_path_buf(),
        source,
    })?;
    let file = backup::decode(&bytes).map_err(|source| RestoreError::BadFile {
        path: from.to_path_buf(),
        source,
    })?;
    let bad_image = |detail: String| RestoreError::BadImage {
        path: from.to_path_buf(),
        detail,
    };
    let state = StateMachine::restore(file.image).map_err(|e| bad_image(e.to_string()))?;
    state.check_invariants().map_err(bad_image)?;
    if state.revision() != file.header.revision {
        return Err(bad_image(format!(
            "the header says revision {}, the image is at {}",
            file.header.revision,
            state.revision()
        )));
    }
    let cluster_id = restored_cluster_id(&file.checksum, &peers);
    let seeded = storage::seed_restored(
        data_dir,
        node_id,
        cluster_id,
        &peers,
        file.image,
        state.revision(),
    );
    if let Err(e) = seeded {
        // Leave no half-seeded data dir behind for a later start to trip over: remove what
        // this call created (only that — an existing empty directory stays).
        if existed {
            clear_dir(data_dir);
        } else {
            let _best_effort = std::fs::remove_dir_all(data_dir);
        }
        return Err(e.into());
    }
    Ok(Restored {
        revision: state.revision(),
        old_cluster_id: file.header.cluster_id,
        cluster_id,
        node_id,
        data_dir: data_dir.to_path_buf(),
    })
}

/// Whether `data_dir` exists (it must then be an empty directory).
fn check_empty(data_dir: &Path) -> Result<bool, RestoreError> {
    let io = |source| RestoreError::DataDir {
        path: data_dir.to_path_buf(),
        source,
    };
    match std::fs::read_dir(data_dir) {
        Ok(mut entries) => match entries.next() {
            None => Ok(true),
            Some(_) => Err(RestoreError::DataDirNotEmpty(data_dir.to_path_buf())),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(io(e)),
    }
}

fn clear_dir(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let _best_effort = std::fs::remove_dir_all(entry.path());
        }
    }
}
