//! openraft's `RaftLogStorage`: entries in the write-ahead log (`wal`), the vote and log
//! pointers in sled.
//!
//! Owns: when things are made durable. Appends are written and reported to openraft at once;
//! `durable_log` syncs them in the background and the gates listed there keep anything from
//! counting outside this node before it is durable (membership entries are waited for here).
//! A vote is flushed before `save_vote` returns, and the purge point is flushed before purged
//! files are deleted. Must not: touch the state machine or the snapshot tree.

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::Arc;

use openraft::storage::{LogFlushed, LogState, RaftLogReader, RaftLogStorage};
use openraft::{ErrorSubject, ErrorVerb, Vote};
use parking_lot::Mutex;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::storage::codec;
use crate::storage::db::Database;
use crate::storage::durable_log::DurableLog;
use crate::storage::error::{to_raft, RaftStorageError, StorageError};
use crate::storage::wal::{self, Wal};
use crate::types::{LogId, NodeId, TypeConfig};

type Entry = openraft::Entry<TypeConfig>;

const KEY_VOTE: &[u8] = b"vote";
const KEY_COMMITTED: &[u8] = b"committed";
const KEY_LAST_PURGED: &[u8] = b"last_purged";

/// Log storage of one node. Clones share the database and the log; the clone openraft gets
/// from `get_log_reader` reads while the core appends.
#[derive(Clone)]
pub struct LogStore {
    db: Database,
    wal: Arc<Mutex<Wal>>,
    wal_dir: Arc<Path>,
    durable: DurableLog,
}

impl LogStore {
    /// Reads every record that startup depends on, so a damaged one is reported by `open`.
    pub(crate) fn new(db: Database, data_dir: &Path) -> Result<Self, StorageError> {
        let last_purged = read_record::<LogId>(&db, KEY_LAST_PURGED, "last purged log id")?;
        let wal = Wal::open(data_dir, last_purged.map(|id| id.index))?;
        let wal_dir: Arc<Path> = data_dir.join(wal::WAL_DIR_NAME).into();
        read_record::<Vote<NodeId>>(&db, KEY_VOTE, "vote")?;
        read_record::<LogId>(&db, KEY_COMMITTED, "committed log id")?;
        // The ends of the log decide what openraft does at startup; every record's checksum
        // and index were checked by `Wal::open`, entries are decoded as openraft reads them.
        let (first, last) = (wal.first_index(), wal.last_index());
        let wal = Arc::new(Mutex::new(wal));
        let mut ends = Vec::new();
        for end in [first, last].into_iter().flatten() {
            ends.extend(read_entries(&wal, &wal_dir, end, Some(end + 1))?);
        }
        // `Wal::open` synced what it found, so the whole log is durable now.
        let last_log_id = ends.last().map(|entry| entry.log_id).or(last_purged);
        let durable = DurableLog::start(&wal_dir, last_log_id)
            .map_err(|e| wal::file_error(&wal_dir, "starting the log sync thread", e))?;
        Ok(Self {
            db,
            wal,
            wal_dir,
            durable,
        })
    }

    /// Turns a stored vote that says this node led into a plain vote for itself, so that a
    /// restarted node must win a new election before it leads again. Returns whether it did.
    ///
    /// Why: openraft 0.9 restores a node whose stored vote is its own committed one as leader
    /// of the same term at once, with a read index of max(its term's first entry, the stored
    /// commit index). The commit index is stored lazily (see `save_committed`), so it can lag
    /// writes this node acknowledged before the crash, and reads — its own, and followers'
    /// read indexes it confirms — missed them. A new election's first entry is committed
    /// only once a quorum holds everything before it, and that is the read index a new
    /// leader uses. The vote for itself in the old term stays, so no other candidate of that
    /// term gets it. Not flushed: a crash before the next flush repeats this at the next
    /// start.
    pub(crate) fn forget_restored_leadership(&self, me: NodeId) -> Result<bool, StorageError> {
        let Some(vote) = read_record::<Vote<NodeId>>(&self.db, KEY_VOTE, "vote")? else {
            return Ok(false);
        };
        if !vote.is_committed() || vote.leader_id().voted_for() != Some(me) {
            return Ok(false);
        }
        let candidate = Vote::new(vote.leader_id().term, me);
        debug_assert!(!candidate.is_committed());
        self.write_record(KEY_VOTE, &candidate, "vote")?;
        Ok(true)
    }

    /// The durable watermark of this log, for the gates that must wait for it (see
    /// `durable_log`).
    pub fn durable_log(&self) -> DurableLog {
        self.durable.clone()
    }

    fn write_record<T: Serialize>(
        &self,
        key: &[u8],
        value: &T,
        what: &'static str,
    ) -> Result<(), StorageError> {
        let bytes = codec::encode(value).map_err(|e| self.db.corrupt(what, e))?;
        self.db
            .raft_state
            .insert(key, bytes)
            .map(drop)
            .map_err(|e| self.db.io_error(what, e))
    }

    fn entries(&self, start: Bound<&u64>, end: Bound<&u64>) -> Result<Vec<Entry>, StorageError> {
        let first = match start {
            Bound::Included(&i) => i,
            Bound::Excluded(&i) => match i.checked_add(1) {
                Some(i) => i,
                None => return Ok(Vec::new()),
            },
            Bound::Unbounded => 0,
        };
        // Exclusive upper end; `None` means "to the end of the log".
        let past_last = match end {
            Bound::Included(&i) => i.checked_add(1),
            Bound::Excluded(&i) => Some(i),
            Bound::Unbounded => None,
        };
        read_entries(&self.wal, &self.wal_dir, first, past_last)
    }

    /// The log id of the entry at `index`, or the purge point when the log no longer holds it.
    fn log_id_at(&self, index: u64) -> Result<Option<LogId>, StorageError> {
        match self
            .entries(Bound::Included(&index), Bound::Included(&index))?
            .pop()
        {
            Some(entry) => Ok(Some(entry.log_id)),
            None => read_record::<LogId>(&self.db, KEY_LAST_PURGED, "last purged log id"),
        }
    }
}

/// Decodes the entries with indexes in `first..past_last` that the log holds.
fn read_entries(
    wal: &Mutex<Wal>,
    wal_dir: &Path,
    first: u64,
    past_last: Option<u64>,
) -> Result<Vec<Entry>, StorageError> {
    let encoded = wal.lock().read(first, past_last)?;
    encoded
        .iter()
        .map(|(index, bytes)| decode_entry(wal_dir, *index, bytes))
        .collect()
}

fn decode_entry(wal_dir: &Path, index: u64, bytes: &[u8]) -> Result<Entry, StorageError> {
    let corrupt = |detail: String| wal::corrupt(wal_dir, format!("log entry {index}"), detail);
    let entry = codec::decode_entry(bytes).map_err(|e| corrupt(e.to_string()))?;
    if entry.log_id.index != index {
        return Err(corrupt(format!(
            "entry for index {} stored as entry {index}",
            entry.log_id.index
        )));
    }
    Ok(entry)
}

fn read_record<T: DeserializeOwned>(
    db: &Database,
    key: &[u8],
    what: &'static str,
) -> Result<Option<T>, StorageError> {
    let Some(bytes) = db.raft_state.get(key).map_err(|e| db.io_error(what, e))? else {
        return Ok(None);
    };
    codec::decode(&bytes)
        .map(Some)
        .map_err(|e| db.corrupt(what, e))
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, RaftStorageError> {
        self.entries(range.start_bound(), range.end_bound())
            .map_err(|e| to_raft(ErrorSubject::Logs, ErrorVerb::Read, &e))
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, RaftStorageError> {
        let read = || -> Result<LogState<TypeConfig>, StorageError> {
            let last_purged_log_id =
                read_record::<LogId>(&self.db, KEY_LAST_PURGED, "last purged log id")?;
            let last_index = self.wal.lock().last_index();
            let last_log_id = match last_index {
                Some(index) => self
                    .entries(Bound::Included(&index), Bound::Included(&index))?
                    .pop()
                    .map(|entry| entry.log_id),
                None => None,
            };
            // After a purge of everything, the last log id is the purged one.
            let last_log_id = last_log_id.or(last_purged_log_id);
            Ok(LogState {
                last_purged_log_id,
                last_log_id,
            })
        };
        read().map_err(|e| to_raft(ErrorSubject::Logs, ErrorVerb::Read, &e))
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), RaftStorageError> {
        self.write_record(KEY_VOTE, vote, "vote")
            .map_err(|e| to_raft(ErrorSubject::Vote, ErrorVerb::Write, &e))?;
        // A vote must survive a crash before this node acts on it (Raft §5.2).
        self.db
            .flush("flushing the vote")
            .await
            .map_err(|e| to_raft(ErrorSubject::Vote, ErrorVerb::Write, &e))
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, RaftStorageError> {
        read_record(&self.db, KEY_VOTE, "vote")
            .map_err(|e| to_raft(ErrorSubject::Vote, ErrorVerb::Read, &e))
    }

    /// Not flushed: the next append or vote flush carries it, and losing it in a crash only
    /// means the restarted node re-applies fewer entries until the leader tells it the commit
    /// index again. Never stored past the durable watermark: openraft may call this before
    /// its own copy is durable (see `durable_log`), and a restart must not find a commit index
    /// beyond the end of the log that survived.
    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), RaftStorageError> {
        let durable = self.durable.watermark().durable;
        let stored = match (committed, durable) {
            (Some(c), Some(d)) if d.index < c.index => Some(d),
            (Some(_), None) => return Ok(()),
            (committed, _) => committed,
        };
        let result = match stored {
            Some(log_id) => self.write_record(KEY_COMMITTED, &log_id, "committed log id"),
            None => self
                .db
                .raft_state
                .remove(KEY_COMMITTED)
                .map(drop)
                .map_err(|e| self.db.io_error("committed log id", e)),
        };
        result.map_err(|e| to_raft(ErrorSubject::Store, ErrorVerb::Write, &e))
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, RaftStorageError> {
        read_record(&self.db, KEY_COMMITTED, "committed log id")
            .map_err(|e| to_raft(ErrorSubject::Store, ErrorVerb::Read, &e))
    }

    /// Writes the batch to the log and reports it flushed at once: `durable_log` makes it
    /// durable in the background, while openraft already replicates it. A batch holding a
    /// membership entry is waited for, because openraft acts on a membership entry's commit
    /// inside its core, beyond the reach of the other gates.
    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), RaftStorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let mut encoded = Vec::new();
        let mut last = None;
        let mut has_membership = false;
        for entry in entries {
            let bytes = codec::encode_entry(&entry).map_err(|e| {
                to_raft(
                    ErrorSubject::Log(entry.log_id),
                    ErrorVerb::Write,
                    &wal::corrupt(
                        &self.wal_dir,
                        format!("log entry {}", entry.log_id.index),
                        e,
                    ),
                )
            })?;
            has_membership |= matches!(entry.payload, openraft::EntryPayload::Membership(_));
            last = Some(entry.log_id);
            encoded.push((entry.log_id.index, bytes));
        }
        let write_error = |e: &StorageError| to_raft(ErrorSubject::Logs, ErrorVerb::Write, e);
        let Some(last) = last else {
            callback.log_io_completed(Ok(()));
            return Ok(());
        };
        let files = self
            .wal
            .lock()
            .append(&encoded)
            .map_err(|e| write_error(&e))?;
        let epoch = self.durable.watermark().epoch;
        self.durable
            .written(last, files)
            .map_err(|e| write_error(&e.into()))?;
        if has_membership {
            self.durable
                .wait_durable_in_epoch(last.index, epoch)
                .await
                .map_err(|e| write_error(&e.into()))?;
        }
        callback.log_io_completed(Ok(()));
        Ok(())
    }

    /// Durable before it returns (see `Wal::truncate_from`); rare (a new leader overwrote
    /// entries this node had not committed).
    async fn truncate(&mut self, log_id: LogId) -> Result<(), RaftStorageError> {
        let delete = |e: &StorageError| to_raft(ErrorSubject::Logs, ErrorVerb::Delete, e);
        self.wal
            .lock()
            .truncate_from(log_id.index)
            .map_err(|e| delete(&e))?;
        let last_kept = match log_id.index.checked_sub(1) {
            Some(index) => self.log_id_at(index).map_err(|e| delete(&e))?,
            None => None,
        };
        self.durable.truncated(last_kept);
        Ok(())
    }

    /// Records and flushes the purge point before deleting files, so after a crash either
    /// nothing happened, or the pointer moved and entries it covers linger in a file (skipped
    /// at open, deleted by a later purge). openraft purges only entries covered by a snapshot
    /// that was flushed when it was built or installed.
    async fn purge(&mut self, log_id: LogId) -> Result<(), RaftStorageError> {
        let delete = |e: &StorageError| to_raft(ErrorSubject::Logs, ErrorVerb::Delete, e);
        self.write_record(KEY_LAST_PURGED, &log_id, "last purged log id")
            .map_err(|e| delete(&e))?;
        self.db
            .flush("flushing the purge point")
            .await
            .map_err(|e| delete(&e))?;
        self.wal
            .lock()
            .purge_through(log_id.index)
            .map_err(|e| delete(&e))
    }
}
