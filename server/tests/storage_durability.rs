//! The Raft log and vote survive restarts and crashes; purge and truncate leave no holes.

mod storage_common;

use std::future::Future;
use std::path::Path;
use std::process::Command;

use openraft::storage::{RaftLogReader, RaftLogStorage, RaftLogStorageExt, RaftStateMachine};
use openraft::RaftSnapshotBuilder;
use openraft::{CommittedLeaderId, Vote};
use percy_server::storage::{LogStore, StateMachineStore};
use percy_statemachine::Op;
use storage_common::{blank, log_id, membership, open, put_config, NODE};

/// Set in the child processes of the abort tests: the data dir the child writes to before
/// it aborts.
const CHILD_DIR_ENV: &str = "PERCY_STORAGE_ABORT_CHILD_DIR";
const ABORT_ENTRIES: u64 = 1000;
const ABORT_BATCH: u64 = 10;

fn abort_test_vote() -> Vote<u64> {
    Vote::new_committed(7, NODE)
}

#[tokio::test]
async fn acknowledged_writes_survive_drop_and_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let entries = vec![
        blank(1, 1),
        membership(1, 2, &[1, 2, 3]),
        put_config(1, 3, "a", "1"),
        storage_common::command(2, 4, Op::Tick),
    ];
    let vote = Vote::new(2, 3);
    {
        let (mut log, _sm) = open(dir.path());
        log.blocking_append(entries[..2].to_vec())
            .await
            .expect("append");
        log.blocking_append(entries[2..].to_vec())
            .await
            .expect("append");
        log.save_vote(&vote).await.expect("vote");
        // The commit index is stored only as far as the log is durable (the gate is tested
        // in `durability_tests`); appends return before the background sync, so wait for it.
        log.durable_log().wait_covered(4).await.expect("durable");
        log.save_committed(Some(log_id(1, 3)))
            .await
            .expect("committed");
    }
    let (mut log, _sm) = open(dir.path());
    assert_eq!(log.read_vote().await.expect("vote"), Some(vote));
    assert_eq!(
        log.read_committed().await.expect("committed"),
        Some(log_id(1, 3))
    );
    assert_eq!(log.try_get_log_entries(..).await.expect("entries"), entries);
    let state = log.get_log_state().await.expect("log state");
    assert_eq!(state.last_log_id, Some(log_id(2, 4)));
    assert_eq!(state.last_purged_log_id, None);
}

/// Runs this test binary again as a child that executes only `test_name` with
/// [`CHILD_DIR_ENV`] set; the child writes, prints `acked`, then aborts without any shutdown,
/// so only what the store flushed itself survives. sled flushes in the background every
/// 500 ms at best: without the store's own flushes most of the writes would be lost.
fn run_aborting_child(test_name: &str, dir: &Path) {
    let output = Command::new(std::env::current_exe().expect("test binary"))
        .args([test_name, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_DIR_ENV, dir)
        .output()
        .expect("run child");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        !output.status.success(),
        "the child must abort, not exit cleanly: {stdout}"
    );
    assert!(
        stdout.contains("acked"),
        "the child did not get to acknowledge its writes: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// In the child: does `write` against the stores in the data dir from [`CHILD_DIR_ENV`], then
/// aborts. Returns (to let the parent side of the test run) when this is not the child.
fn child_writes_then_aborts<F, Fut>(write: F)
where
    F: FnOnce(LogStore, StateMachineStore) -> Fut,
    Fut: Future<Output = ()>,
{
    let Some(dir) = std::env::var_os(CHILD_DIR_ENV) else {
        return;
    };
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        // Held until the abort: dropping the last handle would make sled flush.
        let stores = open(Path::new(&dir));
        write(stores.0.clone(), stores.1.clone()).await;
        println!("acked");
        // No destructors, no shutdown flush: a crash right after the acknowledgements.
        std::process::abort()
    })
}

#[test]
fn acknowledged_appends_survive_process_abort() {
    child_writes_then_aborts(|mut log, _sm| async move {
        for first in (1..=ABORT_ENTRIES).step_by(ABORT_BATCH as usize) {
            let batch: Vec<_> = (first..first + ABORT_BATCH)
                .map(|i| put_config(1, i, &format!("key-{i}"), &format!("value-{i}")))
                .collect();
            log.blocking_append(batch).await.expect("append");
        }
    });
    let dir = tempfile::tempdir().expect("tempdir");
    run_aborting_child("acknowledged_appends_survive_process_abort", dir.path());

    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let (mut log, _sm) = open(dir.path());
        let entries = log.try_get_log_entries(..).await.expect("entries");
        let indexes: Vec<u64> = entries.iter().map(|e| e.log_id.index).collect();
        assert_eq!(indexes, (1..=ABORT_ENTRIES).collect::<Vec<_>>());
        assert_eq!(entries[9], put_config(1, 10, "key-10", "value-10"));
    });
}

/// Appends are synced by the log itself, in rounds that cover several appends, and the
/// watermark reaches the end. (Whether the rounds really reach the disk is checked by
/// `every_acknowledged_append_was_synced`; what must wait for the watermark is tested in the
/// server's `durability_tests`.)
#[tokio::test]
async fn appends_become_durable_in_sync_rounds() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut log, _sm) = open(dir.path());
    let durable = log.durable_log();
    assert_eq!(durable.sync_rounds(), 0);
    for first in [1u64, 4, 7] {
        let batch: Vec<_> = (first..first + 3).map(|i| blank(1, i)).collect();
        log.blocking_append(batch).await.expect("append");
    }
    durable.wait_covered(9).await.expect("durable");
    assert_eq!(durable.watermark().durable, Some(log_id(1, 9)));
    let rounds = durable.sync_rounds();
    assert!(
        (1..=3).contains(&rounds),
        "{rounds} sync rounds for 3 appends"
    );
}

/// What the abort test and the sync-round count cannot see: whether the appends reached the
/// disk. A round counts even when it synced no file (a log that forgot to hand its files to
/// the sync thread), and a process abort keeps the page cache. So this asks the kernel: once
/// the durable watermark covers the appends, no page of any log file may still be dirty.
/// Guards the `fdatasync` of `durable_log`'s sync thread and the files `Wal::append` hands it.
#[cfg(target_os = "linux")]
#[tokio::test]
async fn every_acknowledged_append_was_synced() {
    // Under target/, not /tmp: on tmpfs a synced page stays dirty.
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("tempdir");
    page_cache::assert_syncs_are_visible(dir.path());
    let (mut log, _sm) = open(dir.path());
    for first in (1..=ABORT_ENTRIES).step_by(ABORT_BATCH as usize) {
        let batch: Vec<_> = (first..first + ABORT_BATCH)
            .map(|i| put_config(1, i, &format!("key-{i}"), &format!("value-{i}")))
            .collect();
        log.blocking_append(batch).await.expect("append");
    }
    log.durable_log()
        .wait_covered(ABORT_ENTRIES)
        .await
        .expect("durable");
    let wal_dir = dir.path().join(percy_server::storage::WAL_DIR_NAME);
    let mut files = 0;
    for item in std::fs::read_dir(&wal_dir).expect("wal dir") {
        let path = item.expect("wal dir entry").path();
        let file = std::fs::File::open(&path).expect("open a log file");
        let pages = page_cache::pages(&file);
        assert!(pages.cached > 0, "{} was never written", path.display());
        assert_eq!(
            pages.dirty,
            0,
            "{} has unsynced pages after the watermark covered every append",
            path.display()
        );
        files += 1;
    }
    assert!(files > 0, "no log file in {}", wal_dir.display());
}

/// The page cache's view of a file, from `cachestat(2)` (Linux 6.5).
#[cfg(target_os = "linux")]
mod page_cache {
    use std::io::Write;
    use std::os::fd::AsRawFd;
    use std::path::Path;

    /// `__NR_cachestat`, the same number on every architecture (libc does not name it on all).
    const SYS_CACHESTAT: libc::c_long = 451;

    /// `struct cachestat_range`: offset 0, length 0 means the whole file.
    #[repr(C)]
    struct Range {
        off: u64,
        len: u64,
    }

    /// `struct cachestat`, in pages.
    #[repr(C)]
    #[derive(Debug, Default)]
    pub struct Pages {
        pub cached: u64,
        pub dirty: u64,
        pub writeback: u64,
        pub evicted: u64,
        pub recently_evicted: u64,
    }

    pub fn pages(file: &std::fs::File) -> Pages {
        let range = Range { off: 0, len: 0 };
        let mut pages = Pages::default();
        // SAFETY: the descriptor is owned by `file`, which outlives the call; the kernel
        // reads `range` and writes `pages`, both `repr(C)` and alive for the call.
        let result = unsafe {
            libc::syscall(
                SYS_CACHESTAT,
                file.as_raw_fd(),
                &range as *const Range,
                &mut pages as *mut Pages,
                0u32,
            )
        };
        assert_eq!(
            result,
            0,
            "cachestat(2) failed (it needs Linux 6.5): {}",
            std::io::Error::last_os_error()
        );
        pages
    }

    /// The instrument itself, on a scratch file in `dir`: a write leaves dirty pages, and
    /// `fdatasync` cleans them. Without this the check above could pass for want of a way to
    /// fail.
    pub fn assert_syncs_are_visible(dir: &Path) {
        let path = dir.join("page-cache-probe");
        let mut file = std::fs::File::create(&path).expect("create the probe");
        file.write_all(&[1u8; 3 * 4096]).expect("write the probe");
        assert!(
            pages(&file).dirty > 0,
            "an unsynced write shows no dirty pages here"
        );
        file.sync_data().expect("sync the probe");
        assert_eq!(
            pages(&file).dirty,
            0,
            "a synced file still shows dirty pages"
        );
        std::fs::remove_file(&path).expect("remove the probe");
    }
}

#[test]
fn saved_vote_survives_process_abort() {
    child_writes_then_aborts(|mut log, _sm| async move {
        log.save_vote(&abort_test_vote()).await.expect("vote");
    });
    let dir = tempfile::tempdir().expect("tempdir");
    run_aborting_child("saved_vote_survives_process_abort", dir.path());

    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let (mut log, _sm) = open(dir.path());
        assert_eq!(
            log.read_vote().await.expect("vote"),
            Some(abort_test_vote())
        );
    });
}

#[test]
fn built_snapshot_survives_process_abort() {
    child_writes_then_aborts(|_log, mut sm| async move {
        sm.apply([
            membership(1, 1, &[1]),
            put_config(1, 2, "a", "1"),
            put_config(1, 3, "b", "2"),
        ])
        .await
        .expect("apply");
        sm.get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .expect("snapshot");
    });
    let dir = tempfile::tempdir().expect("tempdir");
    run_aborting_child("built_snapshot_survives_process_abort", dir.path());

    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let (_log, mut sm) = open(dir.path());
        let snapshot = sm
            .get_current_snapshot()
            .await
            .expect("read")
            .expect("a snapshot");
        assert_eq!(snapshot.meta.last_log_id, Some(log_id(1, 3)));
        assert_eq!(
            sm.applied_state().await.expect("applied").0,
            Some(log_id(1, 3))
        );
        assert!(sm.state().read().config("b").is_some());
    });
}

#[tokio::test]
async fn purge_keeps_the_rest_and_remembers_the_purge_point() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let (mut log, _sm) = open(dir.path());
        log.blocking_append((1..=10).map(|i| blank(1, i)))
            .await
            .expect("append");
        log.purge(log_id(1, 5)).await.expect("purge");
        let state = log.get_log_state().await.expect("state");
        assert_eq!(state.last_purged_log_id, Some(log_id(1, 5)));
        assert_eq!(state.last_log_id, Some(log_id(1, 10)));
        assert!(log
            .try_get_log_entries(1..6)
            .await
            .expect("purged range")
            .is_empty());
        log.save_vote(&Vote::new(1, NODE))
            .await
            .expect("flush via vote");
    }
    let (mut log, _sm) = open(dir.path());
    let kept: Vec<u64> = log
        .try_get_log_entries(..)
        .await
        .expect("entries")
        .iter()
        .map(|e| e.log_id.index)
        .collect();
    assert_eq!(kept, (6..=10).collect::<Vec<_>>());

    log.purge(log_id(1, 10)).await.expect("purge all");
    let state = log.get_log_state().await.expect("state");
    assert_eq!(state.last_purged_log_id, Some(log_id(1, 10)));
    // With every entry purged, the last log id is the purge point.
    assert_eq!(state.last_log_id, Some(log_id(1, 10)));
    log.blocking_append([blank(2, 11)])
        .await
        .expect("append after purge");
    assert_eq!(
        log.get_log_state().await.expect("state").last_log_id,
        Some(log_id(2, 11))
    );
}

/// A follower that installs a snapshot past the end of its log purges every entry it has
/// and goes on after the snapshot. It must be able to restart then: fault runs ended with
/// "corrupt log entry 3611: found where entry 3179 belongs" when the next entries went into
/// the old file behind the purged ones.
#[tokio::test]
async fn a_log_purged_past_its_end_goes_on_after_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let (mut log, _sm) = open(dir.path());
        log.blocking_append((1..=10).map(|i| blank(1, i)))
            .await
            .expect("append");
        log.purge(log_id(2, 20)).await.expect("purge past the end");
        log.blocking_append([blank(2, 21), blank(2, 22)])
            .await
            .expect("append after the snapshot");
        log.durable_log().wait_covered(22).await.expect("durable");
    }
    let (mut log, _sm) = open(dir.path());
    let state = log.get_log_state().await.expect("log state");
    assert_eq!(state.last_purged_log_id, Some(log_id(2, 20)));
    assert_eq!(state.last_log_id, Some(log_id(2, 22)));
    let kept: Vec<u64> = log
        .try_get_log_entries(..)
        .await
        .expect("entries")
        .iter()
        .map(|e| e.log_id.index)
        .collect();
    assert_eq!(kept, vec![21, 22]);
    log.blocking_append([blank(2, 23)])
        .await
        .expect("append after the restart");
}

#[tokio::test]
async fn truncate_removes_the_suffix_and_appends_replace_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut log, _sm) = open(dir.path());
    log.blocking_append((1..=10).map(|i| blank(1, i)))
        .await
        .expect("append");
    log.truncate(log_id(1, 6)).await.expect("truncate");
    assert_eq!(
        log.get_log_state().await.expect("state").last_log_id,
        Some(log_id(1, 5))
    );
    log.blocking_append([blank(2, 6), blank(2, 7)])
        .await
        .expect("append");
    drop(log);
    drop(_sm);

    let (mut log, _sm) = open(dir.path());
    let ids: Vec<_> = log
        .try_get_log_entries(..)
        .await
        .expect("entries")
        .iter()
        .map(|e| e.log_id)
        .collect();
    let expected: Vec<_> = (1..=5)
        .map(|i| log_id(1, i))
        .chain([log_id(2, 6), log_id(2, 7)])
        .collect();
    assert_eq!(ids, expected);
    assert_eq!(ids[5].leader_id, CommittedLeaderId::new(2, NODE));
}

#[tokio::test]
async fn reads_clamp_to_what_exists() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut log, _sm) = open(dir.path());
    log.blocking_append((3..=6).map(|i| blank(1, i)))
        .await
        .expect("append");
    let indexes = |entries: Vec<openraft::Entry<_>>| {
        entries.iter().map(|e| e.log_id.index).collect::<Vec<u64>>()
    };
    assert_eq!(
        indexes(log.try_get_log_entries(0..100).await.expect("wide")),
        vec![3, 4, 5, 6]
    );
    assert_eq!(
        indexes(log.try_get_log_entries(4..=5).await.expect("inclusive")),
        vec![4, 5]
    );
    assert!(log
        .try_get_log_entries(5..5)
        .await
        .expect("empty")
        .is_empty());
    assert!(log
        .try_get_log_entries(7..)
        .await
        .expect("past the end")
        .is_empty());
    let mut reader = log.get_log_reader().await;
    assert_eq!(
        indexes(reader.try_get_log_entries(..4).await.expect("reader")),
        vec![3]
    );
}
