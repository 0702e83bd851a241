//! The sled database behind a node's data dir: opening it, its layout, its format marker.
//!
//! Owns: where things live (`<data_dir>/db`, one tree per kind of record), the check that the
//! data dir was written by a compatible build (which node and cluster it belongs to is
//! `identity`'s, in the same meta tree), and turning sled's failures (errors *and*
//! panics on damaged files) into [`StorageError`]s that name the path. Must not: encode or
//! interpret records — that is `codec`, `log_store` and `snapshot`.

use std::any::Any;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::storage::dir_sync::{sync_dir, sync_dir_and_parent};
use crate::storage::error::StorageError;
use crate::storage::wal::file_error;

/// The sled database lives in this subdirectory of the data dir, so the data dir can hold
/// other files (logs, pid files) without confusing sled.
pub const DB_DIR_NAME: &str = "db";

/// Version of the data dir layout (trees, keys). Bump it when either changes incompatibly.
pub const STORAGE_FORMAT_VERSION: u8 = 2;

/// Vote, committed log id, last purged log id.
const TREE_RAFT_STATE: &str = "raft_state";
/// Where data dirs written before the snapshot file kept the latest snapshot (moved to the
/// file when such a data dir is opened: `snapshot::migrate_from_sled`).
const TREE_SNAPSHOT: &str = "snapshot";
/// Format markers, and the data dir's identity (`identity`).
const TREE_META: &str = "meta";
/// Where sled keeps values too large for its log, one file each.
const SLED_BLOB_DIR: &str = "blobs";

const KEY_FORMAT_VERSION: &[u8] = b"format_version";
/// The log holds encoded commands and the snapshot an encoded state, so a build whose
/// state machine encoding differs must not read them.
const KEY_STATEMACHINE_FORMAT: &[u8] = b"statemachine_format";

/// Cheap to clone: sled handles are reference counted.
#[derive(Clone)]
pub(crate) struct Database {
    db: sled::Db,
    pub raft_state: sled::Tree,
    pub snapshot: sled::Tree,
    pub meta: sled::Tree,
    path: Arc<Path>,
}

impl Database {
    /// Opens (or creates) the database under `data_dir` and checks its format marker.
    pub fn open(data_dir: &Path) -> Result<Self, StorageError> {
        std::fs::create_dir_all(data_dir).map_err(|source| StorageError::CreateDir {
            path: data_dir.to_path_buf(),
            source,
        })?;
        let path: Arc<Path> = data_dir.join(DB_DIR_NAME).into();
        let db = open_sled(&path)?;
        // sled creates its directory, its files and `blobs/` without syncing any directory:
        // make the names durable (and the data dir's own, which may have just been made).
        sync_dir(&path.join(SLED_BLOB_DIR))?;
        sync_dir_and_parent(&path)?;
        sync_dir_and_parent(data_dir)?;
        let open_tree = |name: &str| {
            db.open_tree(name).map_err(|source| StorageError::Io {
                path: path.to_path_buf(),
                action: "opening a tree",
                source,
            })
        };
        let database = Self {
            raft_state: open_tree(TREE_RAFT_STATE)?,
            snapshot: open_tree(TREE_SNAPSHOT)?,
            meta: open_tree(TREE_META)?,
            db: db.clone(),
            path: path.clone(),
        };
        database.check_format()?;
        Ok(database)
    }

    /// Makes every write so far durable (fsync). sled keeps writes in memory until then.
    /// sled syncs its files but not its directories, so their entries (new blob files, a
    /// snapshot file renamed into place) are synced here too.
    pub async fn flush(&self, action: &'static str) -> Result<(), StorageError> {
        self.db
            .flush_async()
            .await
            .map(drop)
            .map_err(|source| self.io_error(action, source))?;
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || sync_sled_dirs(&path))
            .await
            .map_err(|e| {
                file_error(
                    &self.path,
                    "syncing the database's directories",
                    std::io::Error::other(e),
                )
            })?
    }

    /// [`Database::flush`] for the rare records written outside the async runtime's reach
    /// (the data dir's identity): blocks the calling thread for one sled flush.
    pub fn flush_blocking(&self, action: &'static str) -> Result<(), StorageError> {
        self.db
            .flush()
            .map(drop)
            .map_err(|source| self.io_error(action, source))?;
        sync_sled_dirs(&self.path)
    }

    /// The database's directory, for messages.
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn io_error(&self, action: &'static str, source: sled::Error) -> StorageError {
        StorageError::Io {
            path: self.path.to_path_buf(),
            action,
            source,
        }
    }

    pub fn corrupt(&self, what: impl Into<String>, detail: impl ToString) -> StorageError {
        StorageError::Corrupt {
            path: self.path.to_path_buf(),
            what: what.into(),
            detail: detail.to_string(),
        }
    }

    /// A new database gets the markers; an existing one must carry ours. A database that has
    /// data but no marker is refused rather than adopted.
    fn check_format(&self) -> Result<(), StorageError> {
        let meta = &self.meta;
        let expected = [
            ("data dir", KEY_FORMAT_VERSION, STORAGE_FORMAT_VERSION),
            (
                "state machine encoding",
                KEY_STATEMACHINE_FORMAT,
                percy_statemachine::codec::FORMAT_VERSION,
            ),
        ];
        let read = |key: &[u8]| {
            meta.get(key)
                .map_err(|e| self.io_error("reading the format marker", e))
        };
        if read(KEY_FORMAT_VERSION)?.is_none() {
            if !self.is_empty()? {
                return Err(StorageError::MissingMarker {
                    path: self.path.to_path_buf(),
                });
            }
            for (_, key, version) in expected {
                meta.insert(key, &[version])
                    .map_err(|e| self.io_error("writing the format marker", e))?;
            }
            // A crash before this flush leaves an empty database, which the next open
            // initialises again.
            self.db
                .flush()
                .map_err(|e| self.io_error("flushing the format marker", e))?;
            return Ok(());
        }
        for (what, key, version) in expected {
            match read(key)?.as_deref() {
                Some([found]) if *found == version => {}
                Some([found]) => {
                    return Err(StorageError::FormatVersion {
                        path: self.path.to_path_buf(),
                        what,
                        found: *found,
                        expected: version,
                    })
                }
                Some(other) => {
                    return Err(self.corrupt(
                        format!("{what} format marker"),
                        format!("{} bytes", other.len()),
                    ))
                }
                None => return Err(self.corrupt(format!("{what} format marker"), "missing")),
            }
        }
        Ok(())
    }

    fn is_empty(&self) -> Result<bool, StorageError> {
        for name in self.db.tree_names() {
            let tree = self
                .db
                .open_tree(&name)
                .map_err(|e| self.io_error("listing trees", e))?;
            if !tree.is_empty() {
                return Ok(false);
            }
        }
        Ok(true)
    }
}

/// Makes what sled wrote durable: every file in sled's directory and its blob directory, then
/// the directories themselves. sled's own flush is not enough on Linux: it writes its log
/// with `sync_file_range`, which persists neither the file's size nor the device's cache,
/// and it never syncs blob files (large values: snapshots). The fault suite's power-loss
/// soak lost a flushed snapshot that way while the purge point written after it survived,
/// and the node could not start (its log was purged past its snapshot).
fn sync_sled_dirs(path: &Path) -> Result<(), StorageError> {
    let blobs = path.join(SLED_BLOB_DIR);
    sync_files_in(&blobs)?;
    sync_files_in(path)?;
    sync_dir(&blobs)?;
    sync_dir(path)
}

/// `fsync`s every regular file directly in `dir`. A file sled removes meanwhile (an old
/// blob, a replaced snapshot) is skipped: it is gone whether or not its bytes were synced.
fn sync_files_in(dir: &Path) -> Result<(), StorageError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(file_error(dir, "listing the database's files", e)),
    };
    for entry in entries {
        let entry = entry.map_err(|e| file_error(dir, "listing the database's files", e))?;
        let file_path = entry.path();
        let is_file = entry
            .file_type()
            .map_err(|e| file_error(&file_path, "reading the file type", e))?
            .is_file();
        if !is_file {
            continue;
        }
        match std::fs::File::open(&file_path).and_then(|f| f.sync_all()) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(file_error(&file_path, "syncing the database file", e)),
        }
    }
    Ok(())
}

/// How long `open` waits for the database's file lock. sled's background writers can hold
/// it for a moment after the previous owner (a `percyd` that is exiting, or stores dropped in
/// this process) let go of the database; a lock still held after this is another owner.
const LOCK_WAIT: Duration = Duration::from_secs(2);
const LOCK_RETRY_INTERVAL: Duration = Duration::from_millis(20);

/// sled panics on some kinds of damaged files instead of returning an error; either way the
/// caller gets an error naming the path.
fn open_sled(path: &Path) -> Result<sled::Db, StorageError> {
    let deadline = Instant::now() + LOCK_WAIT;
    loop {
        let opened = catch_unwind(AssertUnwindSafe(|| sled::Config::new().path(path).open()));
        let detail = match opened {
            Ok(Ok(db)) => return Ok(db),
            Ok(Err(e)) if is_lock_conflict(&e) && Instant::now() < deadline => {
                std::thread::sleep(LOCK_RETRY_INTERVAL);
                continue;
            }
            Ok(Err(e)) => e.to_string(),
            Err(panic) => format!("sled panicked: {}", panic_message(panic.as_ref())),
        };
        return Err(StorageError::Open {
            path: PathBuf::from(path),
            detail,
        });
    }
}

/// sled reports a held file lock only as an I/O error of kind `Other` with this wording.
fn is_lock_conflict(e: &sled::Error) -> bool {
    matches!(e, sled::Error::Io(io) if io.to_string().starts_with("could not acquire lock"))
}

fn panic_message(panic: &(dyn Any + Send)) -> &str {
    if let Some(s) = panic.downcast_ref::<&str>() {
        s
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s
    } else {
        "unknown panic payload"
    }
}
