//! Making directory entries durable. A file's `fsync` makes its bytes durable, not its name:
//! a created, renamed or removed entry survives a power cut only once its directory is synced
//! (POSIX; ext4's journal usually persists names sooner, other filesystems do not). The fault
//! suite's power-loss faults (tests/lazyfs) drop every entry whose directory was not synced.

use std::fs::File;
use std::path::Path;

use crate::storage::error::StorageError;
use crate::storage::wal::file_error;

/// Syncs the directory `dir`: the entries in it are durable when this returns.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), StorageError> {
    File::open(dir)
        .and_then(|handle| handle.sync_all())
        .map_err(|e| file_error(dir, "syncing the directory", e))
}

/// Syncs `dir` and the directory that holds it, so that a directory just created (with the
/// entries in it) survives a crash.
pub(crate) fn sync_dir_and_parent(dir: &Path) -> Result<(), StorageError> {
    sync_dir(dir)?;
    match dir.parent() {
        // A relative path's parent may be "": the current directory.
        Some(parent) if parent.as_os_str().is_empty() => sync_dir(Path::new(".")),
        Some(parent) => sync_dir(parent),
        None => Ok(()),
    }
}
