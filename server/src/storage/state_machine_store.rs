//! The replicated state machine as openraft sees it: `RaftStateMachine` + `RaftSnapshotBuilder`.
//!
//! Owns: the in-memory [`StateMachine`] behind a lock that readers share with the Raft core,
//! the last applied log id and membership, the change feed and the applied-revision watch, and
//! building/installing/persisting snapshots. The state itself is not persisted between
//! snapshots: on start it is restored from the latest snapshot and openraft replays the log
//! after it. Nothing is applied before this node's log holds it durably (one of the gates in
//! `durable_log`), so neither an answer to a client nor a read nor a snapshot runs ahead of
//! the disk. Must not: hold the state lock across an `.await`, or touch the log trees.

use std::io::Cursor;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{EntryPayload, ErrorSubject, ErrorVerb, RaftSnapshotBuilder};
use parking_lot::{Mutex, RwLock};
use percy_statemachine::StateMachine;
use tokio::sync::{broadcast, watch};

use crate::snapshot_policy::{SnapshotPoint, StatePoint};
use crate::storage::applied_entries::{AppliedEntries, EntryKind};
use crate::storage::durable_log::DurableLog;
use crate::storage::error::{to_raft, RaftStorageError, StorageError};
use crate::storage::events::{StateChange, EVENT_CHANNEL_CAPACITY};
use crate::storage::lock_wakeups::LockWakeups;
use crate::storage::snapshot::{Envelope, SnapshotFile, SnapshotMeta};
use crate::types::{ApplyResult, CommandResult, LogId, StoredMembership, TypeConfig};

type Entry = openraft::Entry<TypeConfig>;

/// The live state, shared with readers. Take the read lock only for the duration of a read
/// (never across an `.await`); apply takes the write lock once per entry.
pub type SharedStateMachine = Arc<RwLock<StateMachine>>;

/// State machine storage of one node. Clones share everything; openraft's snapshot builder
/// is such a clone.
#[derive(Clone)]
pub struct StateMachineStore {
    shared: Arc<Shared>,
}

struct Shared {
    /// Where the latest snapshot is kept.
    snapshot_file: SnapshotFile,
    /// The log's durable watermark, which apply waits for.
    durable: DurableLog,
    state: SharedStateMachine,
    /// Changed only while `state` is write-locked, so whoever holds the read lock sees the
    /// position that matches the state (the snapshot builder relies on it).
    position: Mutex<Position>,
    changes: broadcast::Sender<Arc<StateChange>>,
    /// The state machine revision after the last applied entry.
    applied_revision: watch::Sender<u64>,
    /// Callers waiting on queued lock requests, woken when theirs leaves the queue.
    lock_wakeups: Arc<LockWakeups>,
    /// Serialises writes of the snapshot file, so a snapshot built from an older state never
    /// replaces a newer one that was installed meanwhile.
    snapshot_write: tokio::sync::Mutex<()>,
    /// Makes snapshot ids unique within this process even for the same last log id.
    snapshot_seq: AtomicU64,
    /// The state at the newest snapshot built or installed here (of the restored one at
    /// start): the snapshot policy counts work from it.
    snapshot_point: SnapshotPoint,
    /// Entries applied, by kind (for `/metrics`).
    applied_entries: Arc<AppliedEntries>,
}

/// Where in the log the state is.
#[derive(Clone, Default)]
struct Position {
    last_applied: Option<LogId>,
    last_membership: StoredMembership,
}

impl StateMachineStore {
    /// Restores the state from the stored snapshot, or starts empty.
    pub(crate) fn new(
        snapshot_file: SnapshotFile,
        durable: DurableLog,
    ) -> Result<Self, StorageError> {
        let (state, position) = match snapshot_file.load()? {
            Some((meta, data)) => {
                let envelope =
                    Envelope::decode(&data).map_err(|e| snapshot_file.corrupt("snapshot", e))?;
                let state = StateMachine::restore(envelope.state)
                    .map_err(|e| snapshot_file.corrupt("snapshot state", e))?;
                let position = Position {
                    last_applied: meta.last_log_id,
                    last_membership: meta.last_membership,
                };
                (state, position)
            }
            None => (StateMachine::new(), Position::default()),
        };
        let (changes, _) = broadcast::channel(EVENT_CHANNEL_CAPACITY);
        let (applied_revision, _) = watch::channel(state.revision());
        let snapshot_point = SnapshotPoint::new(Mutex::new(point_of(&state)));
        Ok(Self {
            shared: Arc::new(Shared {
                snapshot_file,
                durable,
                state: Arc::new(RwLock::new(state)),
                position: Mutex::new(position),
                changes,
                applied_revision,
                lock_wakeups: Arc::default(),
                snapshot_write: tokio::sync::Mutex::new(()),
                snapshot_seq: AtomicU64::new(0),
                snapshot_point,
                applied_entries: Arc::default(),
            }),
        })
    }

    /// The live state machine, for reads.
    pub fn state(&self) -> SharedStateMachine {
        self.shared.state.clone()
    }

    /// A feed of changes from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<StateChange>> {
        self.shared.changes.subscribe()
    }

    /// The state machine revision (0 before any command), for waiting until the state has
    /// caught up with a given revision. Updated after the state, once per applied batch.
    pub fn applied_revision(&self) -> watch::Receiver<u64> {
        self.shared.applied_revision.subscribe()
    }

    /// The state at the newest snapshot this node built or installed.
    pub(crate) fn snapshot_point(&self) -> SnapshotPoint {
        Arc::clone(&self.shared.snapshot_point)
    }

    /// Entries this node applied since it started, by kind.
    pub fn applied_entries(&self) -> Arc<AppliedEntries> {
        Arc::clone(&self.shared.applied_entries)
    }

    /// Wake-ups for callers waiting on a queued lock request.
    pub fn lock_wakeups(&self) -> Arc<LockWakeups> {
        Arc::clone(&self.shared.lock_wakeups)
    }

    fn write_error(&self, e: &StorageError) -> RaftStorageError {
        to_raft(ErrorSubject::StateMachine, ErrorVerb::Write, e)
    }

    fn snapshot_error(
        &self,
        meta: &SnapshotMeta,
        verb: ErrorVerb,
        e: &StorageError,
    ) -> RaftStorageError {
        to_raft(ErrorSubject::Snapshot(Some(meta.signature())), verb, e)
    }
}

/// What the snapshot policy needs to know of a state.
fn point_of(state: &StateMachine) -> StatePoint {
    StatePoint {
        revision: state.revision(),
        entities: u64::try_from(state.entity_count()).unwrap_or(u64::MAX),
    }
}

impl Shared {
    /// Applies every command of `entry`, each at the next state machine revision.
    fn apply_one(&self, entry: Entry) -> ApplyResult {
        let mut changes = Vec::new();
        let mut resolved_lock_waiters = Vec::new();
        self.applied_entries.count(EntryKind::of(&entry.payload));
        let (result, watched) = {
            let mut state = self.state.write();
            let mut position = self.position.lock();
            // Nobody listens while openraft replays the log at startup (percyd subscribes
            // afterwards): skip building events then. Decided under the write lock, so a
            // subscriber that reads the revision after subscribing has missed nothing.
            let watched = self.changes.receiver_count() > 0;
            let result = match entry.payload {
                EntryPayload::Blank => ApplyResult::default(),
                EntryPayload::Normal(proposal) => {
                    let mut commands = Vec::with_capacity(proposal.commands.len());
                    for command in proposal.commands {
                        let revision = state.revision() + 1;
                        let applied = if watched {
                            state.apply(revision, proposal.now_ms, command)
                        } else {
                            state.apply_without_events(revision, proposal.now_ms, command)
                        };
                        resolved_lock_waiters.extend(applied.resolved_lock_waiters);
                        if !applied.events.is_empty() {
                            changes.push(StateChange::Applied {
                                revision,
                                events: applied.events,
                            });
                        }
                        commands.push(CommandResult {
                            revision,
                            response: applied.response,
                        });
                    }
                    ApplyResult { commands }
                }
                EntryPayload::Membership(membership) => {
                    position.last_membership =
                        StoredMembership::new(Some(entry.log_id), membership);
                    ApplyResult::default()
                }
            };
            position.last_applied = Some(entry.log_id);
            (result, watched)
        };
        // Published after the lock is released, so a subscriber that reads the state on
        // receipt sees this revision. Sending fails only when nobody listens.
        self.lock_wakeups.wake(&resolved_lock_waiters);
        if watched {
            for change in changes {
                let _no_subscribers = self.changes.send(Arc::new(change));
            }
        }
        result
    }

    /// Stores a snapshot durably unless the stored one is newer (see `snapshot_write`), on a
    /// blocking thread (tens of megabytes written and fsynced). Hands the bytes back.
    async fn persist_snapshot(
        &self,
        meta: &SnapshotMeta,
        data: Vec<u8>,
        only_if_newer: bool,
    ) -> Result<Vec<u8>, StorageError> {
        let _exclusive = self.snapshot_write.lock().await;
        let file = self.snapshot_file.clone();
        let meta = meta.clone();
        tokio::task::spawn_blocking(move || {
            if only_if_newer {
                if let Some(stored) = file.load_meta()? {
                    if stored.last_log_id > meta.last_log_id {
                        return Ok(data);
                    }
                }
            }
            file.store(&meta, &data)?;
            Ok(data)
        })
        .await
        .map_err(|e| self.snapshot_file.thread_error(e))?
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = StateMachineStore;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId>, StoredMembership), RaftStorageError> {
        let position = self.shared.position.lock();
        Ok((position.last_applied, position.last_membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<ApplyResult>, RaftStorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        if let Some(last) = entries.last() {
            self.shared
                .durable
                .wait_covered(last.log_id.index)
                .await
                .map_err(|e| self.write_error(&e.into()))?;
        }
        let mut results = Vec::with_capacity(entries.len());
        for entry in entries {
            results.push(self.shared.apply_one(entry));
        }
        let revision = self.shared.state.read().revision();
        self.shared.applied_revision.send_replace(revision);
        Ok(results)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, RaftStorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    /// Checks the bytes against the metadata, makes them durable, then swaps the state.
    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), RaftStorageError> {
        let file = &self.shared.snapshot_file;
        let data = snapshot.into_inner();
        let restored = Envelope::decode_matching(&data, meta)
            .and_then(|envelope| StateMachine::restore(envelope.state).map_err(|e| e.to_string()))
            .map_err(|e| {
                self.snapshot_error(meta, ErrorVerb::Read, &file.corrupt("received snapshot", e))
            })?;
        self.shared
            .persist_snapshot(meta, data, false)
            .await
            .map_err(|e| self.snapshot_error(meta, ErrorVerb::Write, &e))?;
        let revision = restored.revision();
        let point = point_of(&restored);
        {
            let mut state = self.shared.state.write();
            let mut position = self.shared.position.lock();
            *state = restored;
            position.last_applied = meta.last_log_id;
            position.last_membership = meta.last_membership.clone();
        }
        self.shared.applied_revision.send_replace(revision);
        *self.shared.snapshot_point.lock() = point;
        self.shared.lock_wakeups.wake_all();
        let _no_subscribers = self
            .shared
            .changes
            .send(Arc::new(StateChange::SnapshotInstalled { revision }));
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<TypeConfig>>, RaftStorageError> {
        let file = self.shared.snapshot_file.clone();
        let stored = tokio::task::spawn_blocking(move || file.load())
            .await
            .map_err(|e| self.shared.snapshot_file.thread_error(e))
            .and_then(|loaded| loaded)
            .map_err(|e| to_raft(ErrorSubject::Snapshot(None), ErrorVerb::Read, &e))?;
        Ok(stored.map(|(meta, data)| Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data.to_vec())),
        }))
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachineStore {
    /// Serialises the state under the read lock (readers go on; apply waits), then persists
    /// and flushes the snapshot before returning it, because openraft purges the log it
    /// covers once this returns.
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, RaftStorageError> {
        let file = &self.shared.snapshot_file;
        let (position, data, point) = {
            let state = self.shared.state.read();
            let position = self.shared.position.lock().clone();
            let header = Envelope::header(position.last_applied, &position.last_membership)
                .map_err(|e| self.write_error(&file.corrupt("snapshot", e)))?;
            (
                position,
                state.snapshot_appended_to(header),
                point_of(&state),
            )
        };
        let seq = self.shared.snapshot_seq.fetch_add(1, Ordering::Relaxed);
        let snapshot_id = match position.last_applied {
            Some(id) => format!(
                "{}-{}-{}-{seq}",
                id.leader_id.term, id.leader_id.node_id, id.index
            ),
            None => format!("0-0-0-{seq}"),
        };
        let meta = SnapshotMeta {
            last_log_id: position.last_applied,
            last_membership: position.last_membership,
            snapshot_id,
        };
        let data = self
            .shared
            .persist_snapshot(&meta, data, true)
            .await
            .map_err(|e| self.snapshot_error(&meta, ErrorVerb::Write, &e))?;
        {
            // Only forward: an installed snapshot may have overtaken this one meanwhile.
            let mut newest = self.shared.snapshot_point.lock();
            if point.revision > newest.revision {
                *newest = point;
            }
        }
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}
