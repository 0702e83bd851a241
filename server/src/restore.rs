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

#[cfg(test)]
mod tests {
    use percy_proto::v1::SnapshotFileHeader;

    use super::*;

    const PEERS: &str = "1=127.0.0.1:7001,2=127.0.0.1:7002,3=127.0.0.1:7003";

    fn backup_file(dir: &Path) -> PathBuf {
        let state = StateMachine::new();
        let header = SnapshotFileHeader {
            cluster_id: "00112233445566778899aabbccddeeff".into(),
            revision: state.revision(),
            ..Default::default()
        };
        let path = dir.join("backup.snap");
        std::fs::write(&path, backup::encode(&header, &state.snapshot())).expect("write");
        path
    }

    #[test]
    fn every_node_restored_from_one_file_and_peers_gets_the_same_new_cluster_id() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = backup_file(dir.path());
        let ids: Vec<ClusterId> = (1..=3)
            .map(|n| {
                let data = dir.path().join(format!("n{n}"));
                restore(&file, &data, n, PEERS).expect("restore").cluster_id
            })
            .collect();
        assert!(ids.iter().all(|id| *id == ids[0]), "{ids:?}");
        // Other peers: another cluster.
        let other = restore(
            &file,
            &dir.path().join("other"),
            1,
            "1=127.0.0.1:7001,2=127.0.0.1:7002,3=127.0.0.1:7004",
        )
        .expect("restore");
        assert_ne!(other.cluster_id, ids[0]);
    }

    #[test]
    fn a_restored_data_dir_opens_at_the_backups_revision_with_its_cluster_id() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = backup_file(dir.path());
        let data = dir.path().join("n2");
        let restored = restore(&file, &data, 2, PEERS).expect("restore");
        let (_log, sm, identity) = storage::open_node(&data, 2).expect("opens");
        assert_eq!(identity.cluster_id(), Some(restored.cluster_id));
        assert_eq!(sm.state().read().revision(), restored.revision);
        // The data dir stays node 2's.
        drop((_log, sm, identity));
        assert!(matches!(
            storage::open_node(&data, 1),
            Err(StorageError::WrongNode { .. })
        ));
    }

    #[test]
    fn refusals_write_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = backup_file(dir.path());
        let data = dir.path().join("data");
        assert!(matches!(
            restore(&file, &data, 4, PEERS),
            Err(RestoreError::NodeNotInPeers(4, _))
        ));
        assert!(matches!(
            restore(&file, &data, 0, PEERS),
            Err(RestoreError::ZeroNodeId)
        ));
        assert!(matches!(
            restore(&dir.path().join("missing"), &data, 1, PEERS),
            Err(RestoreError::Read { .. })
        ));
        let mut bytes = std::fs::read(&file).expect("read");
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        let flipped = dir.path().join("flipped.snap");
        std::fs::write(&flipped, &bytes).expect("write");
        assert!(matches!(
            restore(&flipped, &data, 1, PEERS),
            Err(RestoreError::BadFile {
                source: BackupError::ChecksumMismatch { .. },
                ..
            })
        ));
        assert!(!data.exists());
        // An empty directory is fine, and is all that is needed.
        std::fs::create_dir(&data).expect("mkdir");
        restore(&file, &data, 1, PEERS).expect("an empty data dir is used");
        assert!(matches!(
            restore(&file, &data, 1, PEERS),
            Err(RestoreError::DataDirNotEmpty(_))
        ));
    }
}
