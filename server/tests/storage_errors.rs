//! A damaged, foreign or incompatible data dir is a clear error naming the path, never a reset.

mod storage_common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use openraft::storage::{
    RaftLogReader, RaftLogStorage, RaftLogStorageExt, RaftSnapshotBuilder, RaftStateMachine,
};
use percy_server::storage::{
    self, StorageError, DB_DIR_NAME, STORAGE_FORMAT_VERSION, WAL_DIR_NAME,
};
use storage_common::{blank, membership, open, put_config};

fn db_path(dir: &Path) -> PathBuf {
    dir.join(DB_DIR_NAME)
}

fn open_err(dir: &Path) -> StorageError {
    match storage::open(dir) {
        Ok(_) => panic!("opening {} should fail", dir.display()),
        Err(e) => e,
    }
}

/// Writes through sled directly, the way damage or another program would.
fn with_raw_db(dir: &Path, change: impl FnOnce(&sled::Db)) {
    // sled's background writers may hold the file lock for a moment after the stores were
    // dropped; `storage::open` waits for that too.
    let deadline = Instant::now() + Duration::from_secs(10);
    let db = loop {
        match sled::open(db_path(dir)) {
            Ok(db) => break db,
            Err(e) if Instant::now() < deadline => {
                eprintln!("raw open of {} failed, retrying: {e}", dir.display());
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("raw open of {}: {e}", dir.display()),
        }
    };
    change(&db);
    db.flush().expect("raw flush");
}

async fn populated(dir: &Path) {
    let (mut log, mut sm) = open(dir);
    log.blocking_append([blank(1, 1), put_config(1, 2, "a", "1"), blank(1, 3)])
        .await
        .expect("append");
    sm.apply([membership(1, 1, &[1]), put_config(1, 2, "a", "1")])
        .await
        .expect("apply");
    sm.get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .expect("snapshot");
}

#[tokio::test]
async fn garbage_database_files_are_a_clear_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    populated(dir.path()).await;
    let db_dir = db_path(dir.path());
    let mut damaged = 0;
    for entry in std::fs::read_dir(&db_dir).expect("db dir") {
        let path = entry.expect("dir entry").path();
        if path.is_file() {
            let len = std::fs::metadata(&path).expect("metadata").len().max(64);
            std::fs::write(&path, vec![0x5a; len as usize]).expect("overwrite");
            damaged += 1;
        }
    }
    assert!(
        damaged > 0,
        "found no database files to damage in {}",
        db_dir.display()
    );
    let err = open_err(dir.path());
    assert!(matches!(err, StorageError::Open { .. }), "{err}");
    assert!(
        err.to_string().contains(&db_dir.display().to_string()),
        "{err}"
    );
}

#[tokio::test]
async fn wrong_format_version_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    populated(dir.path()).await;
    let newer = STORAGE_FORMAT_VERSION + 1;
    with_raw_db(dir.path(), |db| {
        db.open_tree("meta")
            .expect("meta")
            .insert("format_version", &[newer])
            .expect("insert");
    });
    let err = open_err(dir.path());
    assert!(
        matches!(err, StorageError::FormatVersion { found, .. } if found == newer),
        "{err}"
    );
    let message = err.to_string();
    assert!(
        message.contains(&db_path(dir.path()).display().to_string()),
        "{message}"
    );
    assert!(
        message.contains(&format!("format version {newer}")),
        "{message}"
    );
}

#[test]
fn a_database_with_data_but_no_marker_is_not_adopted() {
    let dir = tempfile::tempdir().expect("tempdir");
    with_raw_db(dir.path(), |db| {
        db.insert("someone else's", "data").expect("insert");
    });
    let err = open_err(dir.path());
    assert!(matches!(err, StorageError::MissingMarker { .. }), "{err}");
}

/// The one log file `populated` leaves behind (three entries, one segment).
fn log_file(dir: &Path) -> PathBuf {
    let files: Vec<PathBuf> = std::fs::read_dir(dir.join(WAL_DIR_NAME))
        .expect("wal dir")
        .map(|e| e.expect("dir entry").path())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    files.into_iter().next().expect("one file")
}

/// Byte offsets at which each record of a log file starts, and the end of the last one (the
/// file continues with preallocated zeros).
fn record_starts(bytes: &[u8]) -> Vec<usize> {
    let mut starts = vec![0];
    let mut at = 0;
    while at + 8 <= bytes.len() {
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes")) as usize;
        if len == 0 {
            break;
        }
        at += 8 + len;
        starts.push(at);
    }
    starts
}

#[tokio::test]
async fn a_damaged_log_record_is_corruption_but_a_torn_tail_is_cut_off() {
    let dir = tempfile::tempdir().expect("tempdir");
    populated(dir.path()).await;
    let file = log_file(dir.path());
    let intact = std::fs::read(&file).expect("read log");
    let starts = record_starts(&intact);
    assert_eq!(starts.len(), 4, "three records");

    // A flipped bit in the middle record (entry 2): not a torn write, refused at open.
    let mut damaged = intact.clone();
    damaged[starts[1] + 10] ^= 0x01;
    std::fs::write(&file, &damaged).expect("write");
    let err = open_err(dir.path());
    assert!(
        matches!(&err, StorageError::Corrupt { detail, .. } if detail.contains("checksum")),
        "{err}"
    );
    assert!(
        err.to_string().contains(&file.display().to_string()),
        "{err}"
    );

    // The last record's end never reached the disk (zeros, as in preallocated space), as a
    // crash during the write leaves it: the log ends at the entry before, and the file is
    // repaired so the next append follows entry 2.
    let mut torn = intact.clone();
    torn[starts[3] - 3..starts[3]].fill(0);
    std::fs::write(&file, &torn).expect("write");
    {
        let (mut log, _sm) = open(dir.path());
        let state = log.get_log_state().await.expect("log state");
        assert_eq!(state.last_log_id, Some(storage_common::log_id(1, 2)));
        assert_eq!(log.try_get_log_entries(..).await.expect("entries").len(), 2);
        log.blocking_append([blank(2, 3)])
            .await
            .expect("append after repair");
    }
    let (mut log, _sm) = open(dir.path());
    let entries = log.try_get_log_entries(..).await.expect("entries");
    assert_eq!(
        entries.last().map(|e| e.log_id),
        Some(storage_common::log_id(2, 3))
    );
}

#[tokio::test]
async fn entry_stored_under_the_wrong_index_is_corrupt() {
    let dir = tempfile::tempdir().expect("tempdir");
    populated(dir.path()).await;
    let file = log_file(dir.path());
    let mut bytes = std::fs::read(&file).expect("read log");
    let starts = record_starts(&bytes);
    // A valid copy of entry 1 where entry 4 would go.
    let first_record = bytes[..starts[1]].to_vec();
    let end = starts[3];
    bytes[end..end + first_record.len()].copy_from_slice(&first_record);
    std::fs::write(&file, &bytes).expect("write");
    let err = open_err(dir.path());
    assert!(err.to_string().contains("where entry 4 belongs"), "{err}");
}

#[tokio::test]
async fn undecodable_snapshot_is_reported_at_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    populated(dir.path()).await;
    let file = dir.path().join("snapshot");
    let mut data = std::fs::read(&file).expect("the snapshot file");
    data.truncate(data.len() - 1);
    std::fs::write(&file, data).expect("write");
    let err = open_err(dir.path());
    assert!(
        matches!(&err, StorageError::Corrupt { what, .. } if what.starts_with("snapshot")),
        "{err}"
    );
}

#[test]
fn data_dir_that_is_a_file_is_a_clear_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, b"x").expect("write");
    let err = open_err(&file);
    assert!(matches!(err, StorageError::CreateDir { .. }), "{err}");
    assert!(err.to_string().contains("not-a-dir"), "{err}");
}

#[test]
fn second_open_of_a_data_dir_in_use_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let _first = open(dir.path());
    let err = open_err(dir.path());
    assert!(matches!(err, StorageError::Open { .. }), "{err}");
}
