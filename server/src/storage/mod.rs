//! Durable storage of a `percyd` node: the Raft log's entries in append-only segment files
//! under `<data_dir>/wal`; the vote and log pointers in a sled database under
//! `<data_dir>/db`; the latest state machine snapshot in `<data_dir>/snapshot`; plus the
//! in-memory state machine that openraft applies committed entries to.
//!
//! Owns: everything under `<data_dir>/db`, `<data_dir>/wal` and `<data_dir>/snapshot*`, their on-disk formats,
//! and which node and cluster a data dir belongs to (`identity`). Nothing else in the server
//! touches sled or the log files.
//!
//! Durability contract: log entries are made durable by `fdatasync` on a thread of their own
//! (`durable_log`), and nothing lets an entry count outside this node before then: it is not
//! applied, not acknowledged to a leader, and no commit index past it is sent or stored. A
//! vote is flushed before `save_vote` returns; a snapshot is fsynced before it is reported
//! built or installed. A damaged or foreign data dir is an error, never a reset; only a torn
//! write at the very end of the log (never acknowledged) is cut off.
//!
//! Wiring:
//! ```ignore
//! let (log_store, sm_store, identity) = percy_server::storage::open_node(&data_dir, node_id)?;
//! let state = sm_store.state();          // keep for reads
//! let changes = sm_store.subscribe();    // keep for watches
//! let raft = Raft::new(node_id, config, network, log_store, sm_store).await?;
//! if !raft.is_initialized().await? { /* bootstrap */ }
//! ```

mod applied_entries;
mod codec;
mod db;
mod dir_sync;
mod durable_log;
mod error;
mod events;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
mod identity;
mod lock_wakeups;
mod log_store;
mod restore;
mod snapshot;
mod state_machine_store;
mod wal;

use std::path::Path;

use crate::types::NodeId;

pub use applied_entries::{AppliedEntries, EntryKind};
pub use db::{DB_DIR_NAME, STORAGE_FORMAT_VERSION};
pub use durable_log::{DurableLog, NotDurable, Watermark};
pub use error::StorageError;
pub use events::{StateChange, EVENT_CHANNEL_CAPACITY};
pub use identity::{BadClusterId, ClusterId, DataDirIdentity, LearnError};
pub use lock_wakeups::{LockWakeup, LockWakeups};
pub use log_store::LogStore;
pub use restore::{restored_log_id, seed as seed_restored};
pub use state_machine_store::{SharedStateMachine, StateMachineStore};
pub use wal::WAL_DIR_NAME;

/// Opens (or creates) the storage of the node whose data dir is `data_dir`, restoring the
/// state machine from the latest snapshot. openraft replays the log after the snapshot when
/// the stores are handed to `Raft::new`.
///
/// Fails with a [`StorageError`] naming the path when the directory cannot be created, the
/// database cannot be opened (damaged files, or another process holds it), it was written by
/// an incompatible build, or a record needed at startup cannot be decoded.
pub fn open(data_dir: &Path) -> Result<(LogStore, StateMachineStore), StorageError> {
    open_stores(db::Database::open(data_dir)?, data_dir)
}

/// [`open`] for node `node_id`, after checking that the data dir is this node's (and making
/// it so if it is new), before anything in it is read or changed. Also fails with
/// [`StorageError::WrongNode`] when the data dir was first opened by another node.
pub fn open_node(
    data_dir: &Path,
    node_id: NodeId,
) -> Result<(LogStore, StateMachineStore, DataDirIdentity), StorageError> {
    let db = db::Database::open(data_dir)?;
    let identity = DataDirIdentity::claim(db.clone(), node_id)?;
    let (log_store, sm_store) = open_stores(db, data_dir)?;
    Ok((log_store, sm_store, identity))
}

fn open_stores(
    db: db::Database,
    data_dir: &Path,
) -> Result<(LogStore, StateMachineStore), StorageError> {
    let snapshot_file = snapshot::SnapshotFile::open(data_dir)?;
    snapshot::migrate_from_sled(&db, &snapshot_file)?;
    let log_store = LogStore::new(db, data_dir)?;
    let sm_store = StateMachineStore::new(snapshot_file, log_store.durable_log())?;
    Ok((log_store, sm_store))
}
