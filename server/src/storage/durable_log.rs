//! How much of the Raft log is durable (the *durable watermark*), and the thread that
//! advances it.
//!
//! Why this exists: openraft 0.9's core waits for an append's flush callback before it sends
//! the entry to followers, so a flush inside `append` put the leader's `fdatasync` and the
//! follower's one after the other on every write — two disk syncs in series, the largest part
//! of a write's latency on a slow disk. So `LogStore::append` writes the entries (to the page
//! cache) and reports them flushed at once; replication starts while this module's thread
//! makes them durable, one `fdatasync` per file covering everything written so far, and
//! publishes how far it got.
//!
//! openraft now counts this node's copy of an entry before it is on disk, so nothing that
//! lets an entry count *outside* this node may run ahead of the watermark. These gates hold
//! it back (together they give what the flush callback gave: an entry is reported committed,
//! applied or acknowledged only once a majority holds it durably):
//! - apply: the state machine applies an entry only when everything up to it is durable here
//!   (`StateMachineStore::apply`), so no client is answered, and no read sees a write, before
//!   the leader's own copy is on disk;
//! - a follower's acknowledgement: the answer to an AppendEntries leaves only once the
//!   entries it acknowledges are durable (`raft_service`), so the leader counts only durable
//!   copies of other nodes;
//! - the commit index a leader tells followers is clamped to its own watermark (`network`),
//!   so a follower never applies an entry that is durable on a minority only;
//! - the commit index stored on disk is clamped likewise (`LogStore::save_committed`), so a
//!   restart never finds a commit index past the end of its log;
//! - membership entries are waited for inside `append`, because openraft acts on their
//!   commit inside the core (joint consensus), where no gate can reach.
//!
//! A failed `fdatasync` is final: what the kernel kept of the unsynced pages is unknown, so
//! the watermark never moves again, every wait fails and appends are refused, which stops
//! the Raft core (openraft treats storage errors as fatal).
//!
//! Owns: the watermark and the sync thread. Must not: write or read log records (that is
//! `wal`), or decide what is committed (that is openraft plus the gates above).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::{Condvar, Mutex};
use tokio::sync::watch;

use crate::types::LogId;

/// Name of the sync thread, as `top -H` and profilers show it.
const SYNC_THREAD_NAME: &str = "percy-wal-sync";

/// How far the log is written and how far it is durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Watermark {
    /// The last entry written to the log files (perhaps only to the page cache).
    pub written: Option<LogId>,
    /// The last entry a completed `fdatasync` covers: it and every entry before it survive a
    /// crash of the machine. Never past `written`.
    pub durable: Option<LogId>,
    /// Counts truncations: a waiter that saw an older epoch cannot assume that the entry it
    /// waits for is still the one at its index.
    pub epoch: u64,
    /// An `fdatasync` failed; the watermark is final (see the module docs).
    pub failed: bool,
}

impl Watermark {
    fn index(id: Option<LogId>) -> u64 {
        id.map_or(0, |id| id.index)
    }

    /// Whether everything this log holds up to `index` is durable.
    pub fn covers(&self, index: u64) -> bool {
        Self::index(self.durable) >= index.min(Self::index(self.written))
    }
}

/// Why a wait for durability ended without it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotDurable {
    #[error("syncing the log at {0} failed; this node stops writing")]
    SyncFailed(PathBuf),
    #[error("the log was truncated while waiting for its entries to become durable")]
    Truncated,
    #[error("the log is closed")]
    Closed,
}

/// A handle on the watermark; cheap to clone. The sync thread ends (after syncing what is
/// still pending) when the last handle is dropped.
#[derive(Clone)]
pub struct DurableLog {
    owner: Arc<Owner>,
}

/// Stops the thread when the last [`DurableLog`] goes.
struct Owner {
    shared: Arc<Shared>,
}

struct Shared {
    dir: PathBuf,
    state: Mutex<State>,
    /// Wakes the sync thread: something was written, or it should stop.
    work: Condvar,
    /// Every change of the watermark, for async waiters.
    published: watch::Sender<Watermark>,
    /// Completed sync rounds (each syncs every file written since the round before).
    sync_rounds: AtomicU64,
}

struct State {
    mark: Watermark,
    /// Files written since the last sync round took its list.
    unsynced: Vec<Arc<File>>,
    stopping: bool,
    /// Tests hold sync rounds back to see what waits for them (`hold_syncs`).
    held: bool,
}

impl State {
    fn needs_sync(&self) -> bool {
        !self.mark.failed && (!self.unsynced.is_empty() || self.mark.durable != self.mark.written)
    }
}

impl DurableLog {
    /// Starts the sync thread for a log whose files `dir` holds and whose entries up to
    /// `last` are already durable (the log syncs itself when it opens).
    pub(crate) fn start(dir: &Path, last: Option<LogId>) -> std::io::Result<Self> {
        let mark = Watermark {
            written: last,
            durable: last,
            ..Watermark::default()
        };
        let shared = Arc::new(Shared {
            dir: dir.to_path_buf(),
            state: Mutex::new(State {
                mark,
                unsynced: Vec::new(),
                stopping: false,
                held: false,
            }),
            work: Condvar::new(),
            published: watch::channel(mark).0,
            sync_rounds: AtomicU64::new(0),
        });
        let thread_shared = shared.clone();
        std::thread::Builder::new()
            .name(SYNC_THREAD_NAME.into())
            .spawn(move || sync_until_stopped(&thread_shared))?;
        Ok(Self {
            owner: Arc::new(Owner { shared }),
        })
    }

    fn shared(&self) -> &Shared {
        &self.owner.shared
    }

    /// The watermark now.
    pub fn watermark(&self) -> Watermark {
        *self.shared().published.borrow()
    }

    /// Every change of the watermark from now on.
    pub fn subscribe(&self) -> watch::Receiver<Watermark> {
        self.shared().published.subscribe()
    }

    /// Sync rounds completed since the log was opened.
    pub fn sync_rounds(&self) -> u64 {
        self.shared().sync_rounds.load(Ordering::Relaxed)
    }

    /// Records that entries up to `last` were written to `files`; they become durable with the
    /// next sync round. Refused once a sync has failed.
    pub(crate) fn written(&self, last: LogId, files: Vec<Arc<File>>) -> Result<(), NotDurable> {
        let shared = self.shared();
        let mut state = shared.state.lock();
        if state.mark.failed {
            return Err(NotDurable::SyncFailed(shared.dir.clone()));
        }
        debug_assert!(
            state.mark.written.is_none_or(|w| w.index < last.index),
            "appends move the log forward"
        );
        state.mark.written = Some(last);
        for file in files {
            if !state.unsynced.iter().any(|f| Arc::ptr_eq(f, &file)) {
                state.unsynced.push(file);
            }
        }
        shared.published.send_replace(state.mark);
        shared.work.notify_one();
        Ok(())
    }

    /// Holds sync rounds back (`true`) or lets them run again (`false`), so tests can see what
    /// waits for durability.
    #[cfg(test)]
    pub(crate) fn hold_syncs(&self, held: bool) {
        let shared = self.shared();
        shared.state.lock().held = held;
        shared.work.notify_one();
    }

    /// Records that the log now ends at `last_kept` (a truncation, already durable itself).
    pub(crate) fn truncated(&self, last_kept: Option<LogId>) {
        let shared = self.shared();
        let mut state = shared.state.lock();
        let kept = Watermark::index(last_kept);
        state.mark.epoch += 1;
        state.mark.written = last_kept;
        if Watermark::index(state.mark.durable) > kept {
            state.mark.durable = last_kept;
        }
        shared.published.send_replace(state.mark);
        shared.work.notify_one();
    }

    /// Waits until everything this log holds up to `index` is durable (immediately for
    /// indexes the log never held, such as entries applied straight from a snapshot).
    pub async fn wait_covered(&self, index: u64) -> Result<(), NotDurable> {
        self.wait(|mark| Ok(mark.covers(index))).await
    }

    /// Waits until the entries up to `index` are durable, failing if the log is truncated
    /// after `epoch`: the caller saw those entries in the log at `epoch` and needs exactly
    /// them, not whatever a new leader put at the same indexes.
    pub async fn wait_durable_in_epoch(&self, index: u64, epoch: u64) -> Result<(), NotDurable> {
        self.wait(|mark| {
            if mark.epoch != epoch {
                return Err(NotDurable::Truncated);
            }
            Ok(Watermark::index(mark.durable) >= index)
        })
        .await
    }

    /// Waits until `done` says yes (`Ok(true)`) or never (`Err`); a failed sync is "never".
    async fn wait(
        &self,
        done: impl Fn(&Watermark) -> Result<bool, NotDurable>,
    ) -> Result<(), NotDurable> {
        let mut published = self.shared().published.subscribe();
        let mut verdict = Ok(false);
        let waited = published
            .wait_for(|mark| {
                verdict = if mark.failed {
                    Err(NotDurable::SyncFailed(self.shared().dir.clone()))
                } else {
                    done(mark)
                };
                !matches!(verdict, Ok(false))
            })
            .await;
        match waited {
            Ok(_) => verdict.map(drop),
            Err(_) => Err(NotDurable::Closed),
        }
    }
}

impl Drop for Owner {
    fn drop(&mut self) {
        self.shared.state.lock().stopping = true;
        self.shared.work.notify_one();
    }
}

/// The sync thread: one round at a time, each syncing every file written since the round
/// before and then moving the watermark to what was written when the round began. Ends when
/// asked to and nothing is left to sync, or after a failed sync.
fn sync_until_stopped(shared: &Shared) {
    let mut state = shared.state.lock();
    loop {
        while (!state.needs_sync() || state.held) && !state.stopping {
            shared.work.wait(&mut state);
        }
        if !state.needs_sync() {
            return;
        }
        let files = std::mem::take(&mut state.unsynced);
        let target = state.mark.written;
        let epoch = state.mark.epoch;
        // Appends go on while the disk works; they join the next round.
        let synced = parking_lot::MutexGuard::unlocked(&mut state, || {
            files.iter().try_for_each(|file| file.sync_data())
        });
        match synced {
            Ok(()) => {
                shared.sync_rounds.fetch_add(1, Ordering::Relaxed);
                // A truncation during the round may have removed what `target` names; the
                // next round (which the truncation asked for) settles the watermark then.
                if state.mark.epoch == epoch {
                    state.mark.durable = target;
                }
            }
            Err(e) => {
                tracing::error!(
                    dir = %shared.dir.display(),
                    error = %e,
                    "fdatasync of the Raft log failed; this node will not write again"
                );
                state.mark.failed = true;
            }
        }
        shared.published.send_replace(state.mark);
        if state.mark.failed {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::CommittedLeaderId;

    fn id(term: u64, index: u64) -> LogId {
        LogId::new(CommittedLeaderId::new(term, 1), index)
    }

    fn file(dir: &Path, name: &str) -> Arc<File> {
        let path = dir.join(name);
        std::fs::write(&path, b"x").expect("write");
        Arc::new(File::options().write(true).open(path).expect("open"))
    }

    #[tokio::test]
    async fn writes_become_durable_in_the_background() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = DurableLog::start(dir.path(), Some(id(1, 3))).expect("start");
        assert!(log.watermark().covers(3));
        log.written(id(1, 5), vec![file(dir.path(), "a")])
            .expect("written");
        log.wait_covered(5).await.expect("durable");
        assert_eq!(log.watermark().durable, Some(id(1, 5)));
        assert!(log.sync_rounds() >= 1);
        // Indexes the log never held are covered by what it holds.
        log.wait_covered(100).await.expect("covered");
    }

    #[tokio::test]
    async fn a_truncation_fails_waits_of_the_epoch_before() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = DurableLog::start(dir.path(), Some(id(1, 3))).expect("start");
        let epoch = log.watermark().epoch;
        log.truncated(Some(id(1, 2)));
        assert_eq!(log.watermark().durable, Some(id(1, 2)));
        assert_eq!(
            log.wait_durable_in_epoch(3, epoch).await,
            Err(NotDurable::Truncated)
        );
        // The new entry at index 3 becomes durable in the new epoch.
        log.written(id(2, 3), vec![file(dir.path(), "b")])
            .expect("written");
        log.wait_durable_in_epoch(3, epoch + 1)
            .await
            .expect("durable");
        assert_eq!(log.watermark().durable, Some(id(2, 3)));
    }

    /// A failed `fdatasync` (a pipe cannot be synced) is final: waits fail, the watermark
    /// stays where it was, and further writes are refused.
    #[tokio::test]
    async fn a_failed_sync_stops_the_log() {
        use std::os::fd::FromRawFd;
        let dir = tempfile::tempdir().expect("tempdir");
        let log = DurableLog::start(dir.path(), Some(id(1, 3))).expect("start");
        let mut fds = [0; 2];
        // SAFETY: `pipe` fills the two descriptors; each is owned by exactly one `File` below.
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        // SAFETY: both descriptors were just created and are owned by nothing else.
        let (read_end, write_end) =
            unsafe { (File::from_raw_fd(fds[0]), File::from_raw_fd(fds[1])) };
        log.written(id(1, 4), vec![Arc::new(write_end)])
            .expect("written");
        assert!(matches!(
            log.wait_covered(4).await,
            Err(NotDurable::SyncFailed(_))
        ));
        let mark = log.watermark();
        assert!(mark.failed);
        assert_eq!(mark.durable, Some(id(1, 3)));
        assert!(log.written(id(1, 5), Vec::new()).is_err());
        drop(read_end);
    }
}
