//! openraft's own storage conformance suite, run against the sled stores.

use openraft::testing::{StoreBuilder, Suite};
use openraft::{AnyError, StorageIOError};
use percy_server::storage::{self, LogStore, StateMachineStore};
use percy_server::types::{NodeId, TypeConfig};
use tempfile::TempDir;

/// Each conformance test gets fresh stores in a fresh temporary data dir, removed when the
/// test drops the guard.
struct TempDirStores;

impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, TempDir> for TempDirStores {
    async fn build(
        &self,
    ) -> Result<(TempDir, LogStore, StateMachineStore), openraft::StorageError<NodeId>> {
        let dir = tempfile::tempdir().map_err(|e| StorageIOError::write(AnyError::new(&e)))?;
        let (log_store, sm_store) =
            storage::open(dir.path()).map_err(|e| StorageIOError::write(AnyError::new(&e)))?;
        Ok((dir, log_store, sm_store))
    }
}

#[test]
fn openraft_storage_conformance_suite() {
    // The suite makes its own runtime per test, so this is a plain (non-async) test.
    Suite::test_all(TempDirStores).expect("openraft storage suite");
}
