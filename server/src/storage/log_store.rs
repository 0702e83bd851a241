//! The Raft log, vote and log pointers on sled: openraft's `RaftLogStorage`.
//!
//! Owns: the `logs` and `raft_state` trees and when they are made durable. Appends are
//! acknowledged (the `LogFlushed` callback) only after one flush covering the whole batch,
//! and a vote is flushed before `save_vote` returns. Must not: touch the state machine or the
//! snapshot tree.

use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};

use openraft::storage::{LogFlushed, LogState, RaftLogReader, RaftLogStorage};
use openraft::{ErrorSubject, ErrorVerb, Vote};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::storage::codec;
use crate::storage::db::Database;
use crate::storage::error::{to_raft, RaftStorageError, StorageError};
use crate::types::{LogId, NodeId, TypeConfig};

type Entry = openraft::Entry<TypeConfig>;

const KEY_VOTE: &[u8] = b"vote";
const KEY_COMMITTED: &[u8] = b"committed";
const KEY_LAST_PURGED: &[u8] = b"last_purged";

/// Pre-allocation for a range read is capped: openraft may ask for a wide range of which only
/// a few entries exist.
const MAX_PREALLOCATED_ENTRIES: usize = 1024;

/// Log storage of one node. Clones share the database; the clone openraft gets from
/// `get_log_reader` reads while the core appends.
#[derive(Clone)]
pub struct LogStore {
    db: Database,
}

impl LogStore {
    /// Reads every record that startup depends on, so a damaged one is reported by `open`.
    pub(crate) fn new(db: Database) -> Result<Self, StorageError> {
        let store = Self { db };
        store.read_record::<Vote<NodeId>>(KEY_VOTE, "vote")?;
        store.read_record::<LogId>(KEY_COMMITTED, "committed log id")?;
        store.read_record::<LogId>(KEY_LAST_PURGED, "last purged log id")?;
        // The ends of the log decide what openraft does at startup; entries in between are
        // checked as openraft reads them (it replays those after the snapshot right away).
        let ends = [store.db.logs.first(), store.db.logs.last()];
        for end in ends {
            let end = end.map_err(|e| store.db.io_error("reading the ends of the log", e))?;
            if let Some((key, value)) = end {
                store.decode_entry(&key, &value)?;
            }
        }
        Ok(store)
    }

    fn read_record<T: DeserializeOwned>(
        &self,
        key: &[u8],
        what: &'static str,
    ) -> Result<Option<T>, StorageError> {
        let Some(bytes) = self
            .db
            .raft_state
            .get(key)
            .map_err(|e| self.db.io_error(what, e))?
        else {
            return Ok(None);
        };
        codec::decode(&bytes)
            .map(Some)
            .map_err(|e| self.db.corrupt(what, e))
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

    fn decode_entry(&self, key: &[u8], value: &[u8]) -> Result<Entry, StorageError> {
        let entry = codec::decode_entry(value).map_err(|e| self.entry_corrupt(key, e))?;
        self.check_key(key, entry.log_id.index)?;
        Ok(entry)
    }

    fn entry_corrupt(&self, key: &[u8], detail: impl ToString) -> StorageError {
        let what = match codec::key_index(key) {
            Ok(index) => format!("log entry {index}"),
            Err(_) => format!("log key {key:?}"),
        };
        self.db.corrupt(what, detail)
    }

    /// The id of the newest entry in the log, ignoring purged ones.
    fn last_log_id(&self) -> Result<Option<LogId>, StorageError> {
        let last = self
            .db
            .logs
            .last()
            .map_err(|e| self.db.io_error("reading the last log entry", e))?;
        let Some((key, value)) = last else {
            return Ok(None);
        };
        let log_id = codec::decode_entry_log_id(&value).map_err(|e| self.entry_corrupt(&key, e))?;
        self.check_key(&key, log_id.index)?;
        Ok(Some(log_id))
    }

    /// An entry must sit under its own index, or reads would silently return the wrong one.
    fn check_key(&self, key: &[u8], index: u64) -> Result<(), StorageError> {
        let key_index = codec::key_index(key).map_err(|e| self.entry_corrupt(key, e))?;
        if key_index != index {
            return Err(self.entry_corrupt(
                key,
                format!("entry for index {index} stored under index {key_index}"),
            ));
        }
        Ok(())
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
        let iter = match past_last {
            Some(past_last) if past_last <= first => return Ok(Vec::new()),
            Some(past_last) => self
                .db
                .logs
                .range(codec::index_key(first)..codec::index_key(past_last)),
            None => self.db.logs.range(codec::index_key(first)..),
        };
        let capacity = past_last
            .map_or(0, |p| usize::try_from(p - first).unwrap_or(usize::MAX))
            .min(MAX_PREALLOCATED_ENTRIES);
        let mut entries = Vec::with_capacity(capacity);
        for item in iter {
            let (key, value) = item.map_err(|e| self.db.io_error("reading log entries", e))?;
            entries.push(self.decode_entry(&key, &value)?);
        }
        Ok(entries)
    }

    /// Deletes every entry in `range` in one atomic batch, so a crash never leaves a hole.
    fn remove_range(
        &self,
        range: impl RangeBounds<[u8; 8]>,
        action: &'static str,
    ) -> Result<(), StorageError> {
        let mut batch = sled::Batch::default();
        for key in self.db.logs.range(range).keys() {
            batch.remove(key.map_err(|e| self.db.io_error(action, e))?);
        }
        self.db
            .logs
            .apply_batch(batch)
            .map_err(|e| self.db.io_error(action, e))
    }
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
                self.read_record::<LogId>(KEY_LAST_PURGED, "last purged log id")?;
            // After a purge of everything, the last log id is the purged one.
            let last_log_id = self.last_log_id()?.or(last_purged_log_id);
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
        self.read_record(KEY_VOTE, "vote")
            .map_err(|e| to_raft(ErrorSubject::Vote, ErrorVerb::Read, &e))
    }

    /// Not flushed: the next append or vote flush carries it, and losing it in a crash only
    /// means the restarted node re-applies fewer entries until the leader tells it the commit
    /// index again.
    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), RaftStorageError> {
        let result = match committed {
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
        self.read_record(KEY_COMMITTED, "committed log id")
            .map_err(|e| to_raft(ErrorSubject::Store, ErrorVerb::Read, &e))
    }

    /// Writes the batch in one sled batch and acknowledges it after one flush: a group commit
    /// of everything openraft handed over in this call.
    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), RaftStorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let mut batch = sled::Batch::default();
        for entry in entries {
            let bytes = codec::encode_entry(&entry).map_err(|e| {
                to_raft(
                    ErrorSubject::Log(entry.log_id),
                    ErrorVerb::Write,
                    &self
                        .db
                        .corrupt(format!("log entry {}", entry.log_id.index), e),
                )
            })?;
            batch.insert(&codec::index_key(entry.log_id.index), bytes);
        }
        self.db.logs.apply_batch(batch).map_err(|e| {
            to_raft(
                ErrorSubject::Logs,
                ErrorVerb::Write,
                &self.db.io_error("appending log entries", e),
            )
        })?;
        // The entries are readable now (openraft's requirement for returning); whether they
        // are durable is reported through the callback, which is its channel for that.
        let flushed = self.db.flush("flushing appended log entries").await;
        callback.log_io_completed(flushed.map_err(|e| io::Error::other(e.to_string())));
        Ok(())
    }

    /// Not flushed: the removed entries were never committed, so if a crash brings them
    /// back the node is merely in the state it had before the truncation. The next append's
    /// flush makes the truncation durable together with the entries that replace them.
    async fn truncate(&mut self, log_id: LogId) -> Result<(), RaftStorageError> {
        self.remove_range(codec::index_key(log_id.index).., "truncating the log")
            .map_err(|e| to_raft(ErrorSubject::Logs, ErrorVerb::Delete, &e))
    }

    /// Records the purge point before deleting: sled recovers writes in order, so after a
    /// crash either nothing happened, or the pointer moved and some purged entries linger
    /// (deleted by the next purge). Not flushed: openraft purges only entries covered by a
    /// snapshot that was flushed when it was built or installed.
    async fn purge(&mut self, log_id: LogId) -> Result<(), RaftStorageError> {
        self.write_record(KEY_LAST_PURGED, &log_id, "last purged log id")
            .and_then(|()| self.remove_range(..=codec::index_key(log_id.index), "purging the log"))
            .map_err(|e| to_raft(ErrorSubject::Logs, ErrorVerb::Delete, &e))
    }
}
