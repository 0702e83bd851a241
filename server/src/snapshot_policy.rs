//! When to snapshot: every `--snapshot-every` applied *commands*, not only log entries, and
//! never more often than the log grows as large as the state.
//!
//! openraft's own policy counts log entries, but group commit packs many commands into one
//! entry (a million submitted tasks arrived in ~490 entries), so an entry count never came due
//! and the log behind a huge state was never compacted: a restart replayed all of it. The
//! state machine revision counts commands, so the decision below compares revisions; openraft's
//! entry policy stays as the second trigger (blank and membership entries carry no command).
//!
//! A snapshot costs in proportion to the state (every entity is encoded and written), so the
//! interval also grows with the state: at least one command per entity since the last one.
//! The work of snapshotting then stays proportional to the work of applying, like a log
//! compaction that runs when the log has grown as large as the table it compacts into.
//!
//! Owns: the decision (a pure function of revisions) and the task that applies it. Must not:
//! build snapshots itself — it asks Raft, which builds one at a time.

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::state::StateView;
use crate::types::Raft;

/// How often the task compares revisions. Snapshots are for compaction, not for latency: a
/// tenth of a second late is nothing.
const CHECK_INTERVAL: Duration = Duration::from_millis(100);

/// How long the state must go unchanged before the quiet rule of [`snapshot_due`] applies.
const QUIET_AFTER: Duration = Duration::from_secs(1);

/// The quiet rule's share of the full interval: a quiet state is snapshotted once this
/// fraction of a full interval's work is behind its last snapshot.
const QUIET_FRACTION: u64 = 16;

/// Where the state stands, for the policy: its revision (commands applied) and its size.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatePoint {
    pub revision: u64,
    pub entities: u64,
}

impl StatePoint {
    /// The work a restart would replay from `since` to here, in entities: one per command,
    /// plus the entities the log created (or removed) beyond that. A plan of 1,000 tasks is one
    /// command but weighs 1,000 entities: counting commands alone, a million tasks submitted
    /// as plans stayed behind the policy's interval forever, and a restart replayed them all.
    fn work_since(&self, since: &StatePoint) -> u64 {
        self.revision
            .saturating_sub(since.revision)
            .saturating_add(self.entities.abs_diff(since.entities))
    }
}

/// The state at the newest snapshot built or installed here, shared by the state machine
/// store (which sets it) and the policy (which reads it).
pub type SnapshotPoint = Arc<Mutex<StatePoint>>;

/// Whether to ask for a snapshot now. `now` is the state, `snapshotted` the state at the newest
/// snapshot, `requested` the revision at which the last request was made (if any), `quiet`
/// whether the state has not changed for [`QUIET_AFTER`]. Two rules:
///
/// - the full interval: `every` units of work (commands, plus entities created beyond one per
///   command) since the snapshot, and never less than one per entity of the state;
/// - the quiet rule: once writes stop, a sixteenth of that is enough. Without it the tail of a
///   burst — up to a full interval, which for a large state is as large as the state — stayed
///   in the log until the next burst, and a restart replayed it (replaying a command costs
///   several times what decoding its result from a snapshot does). A steady trickle of writes
///   is never quiet, and a quiet state is snapshotted once, so the rule costs one snapshot per
///   burst at most.
///
/// Under the full interval, a request that produced no snapshot (Raft was busy building one,
/// or had nothing new) is repeated once another full interval has been applied since.
pub fn snapshot_due(
    now: StatePoint,
    snapshotted: StatePoint,
    requested: Option<u64>,
    every: u64,
    quiet: bool,
) -> bool {
    debug_assert!(every > 0, "--snapshot-every is validated to be at least 1");
    let interval = every.max(now.entities);
    let work = now.work_since(&snapshotted);
    if quiet {
        // Asked again at every check until the snapshot lands: Raft ignores a request while
        // it builds one, and a quiet state has nothing else to do.
        return work >= (interval / QUIET_FRACTION).max(1);
    }
    let behind = work >= interval;
    let outstanding = requested
        .is_some_and(|at| at > snapshotted.revision && now.revision.saturating_sub(at) < interval);
    behind && !outstanding
}

/// Asks Raft for a snapshot whenever [`snapshot_due`] says so, until `shutdown` fires.
pub async fn run(
    raft: Raft,
    state: StateView,
    snapshotted: SnapshotPoint,
    every: u64,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut ticks = tokio::time::interval(CHECK_INTERVAL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut requested = None;
    let mut last_change: Option<(u64, Instant)> = None;
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
        let (revision, entities) = state.read(|sm| (sm.revision(), sm.entity_count()));
        let now = StatePoint {
            revision,
            entities: u64::try_from(entities).unwrap_or(u64::MAX),
        };
        let instant = Instant::now();
        let since = match last_change {
            Some((seen, since)) if seen == revision => since,
            _ => {
                last_change = Some((revision, instant));
                instant
            }
        };
        let quiet = instant.duration_since(since) >= QUIET_AFTER;
        let at_snapshot = *snapshotted.lock();
        if !snapshot_due(now, at_snapshot, requested, every, quiet) {
            continue;
        }
        match raft.trigger().snapshot().await {
            Ok(()) => requested = Some(revision),
            // Raft is shutting down.
            Err(e) => {
                tracing::debug!(error = %e, "snapshot request refused");
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A state at `revision` with as many entities as commands (one entity per command).
    fn at(revision: u64) -> StatePoint {
        sized(revision, 0)
    }

    fn sized(revision: u64, entities: u64) -> StatePoint {
        StatePoint { revision, entities }
    }

    #[test]
    fn due_after_every_commands_counted_from_the_last_snapshot() {
        assert!(!snapshot_due(at(99), at(0), None, 100, false));
        assert!(snapshot_due(at(100), at(0), None, 100, false));
        assert!(!snapshot_due(at(1_099), at(1_000), None, 100, false));
        assert!(snapshot_due(at(1_100), at(1_000), None, 100, false));
        // A state restored from a snapshot newer than what was applied: nothing is due.
        assert!(!snapshot_due(at(5), at(10), None, 1, false));
    }

    #[test]
    fn one_request_at_a_time_repeated_when_it_came_to_nothing() {
        // Asked at 100; the snapshot is not there yet.
        assert!(!snapshot_due(at(150), at(0), Some(100), 100, false));
        // It came: counting starts again from it.
        assert!(!snapshot_due(at(150), at(100), Some(100), 100, false));
        assert!(snapshot_due(at(200), at(100), Some(100), 100, false));
        // It never came (Raft was busy): asked again a full interval after the request.
        assert!(snapshot_due(at(200), at(0), Some(100), 100, false));
    }

    #[test]
    fn one_entry_of_many_commands_is_enough() {
        // Group commit: a single entry carried 10,000 commands.
        assert!(snapshot_due(at(10_000), at(0), None, 10_000, false));
    }

    #[test]
    fn a_large_state_is_snapshotted_no_more_often_than_the_log_grows_as_large() {
        // A million tasks: 10,000 commands are not worth encoding a million entities.
        let state = |revision| sized(revision, 1_000_000);
        assert!(!snapshot_due(
            state(1_010_000),
            state(1_000_000),
            None,
            10_000,
            false
        ));
        assert!(snapshot_due(
            state(2_000_000),
            state(1_000_000),
            None,
            10_000,
            false
        ));
        // A small state keeps the configured interval.
        assert!(snapshot_due(
            sized(10_000, 50),
            sized(0, 50),
            None,
            10_000,
            false
        ));
    }

    #[test]
    fn entities_created_by_one_command_count_as_work() {
        // 1,000 plans of 1,000 tasks: 1,000 commands, a million entities, none snapshotted.
        assert!(snapshot_due(
            sized(1_000, 1_000_000),
            sized(0, 0),
            None,
            10_000,
            false
        ));
        // Half of them behind the last snapshot: not yet a full interval (the state's size)...
        let half = sized(500, 500_000);
        assert!(!snapshot_due(
            sized(1_000, 1_000_000),
            half,
            None,
            10_000,
            false
        ));
        // ...but once writes stop, the tail is snapshotted rather than left for a restart
        // to replay.
        assert!(snapshot_due(
            sized(1_000, 1_000_000),
            half,
            None,
            10_000,
            true
        ));
    }

    #[test]
    fn a_quiet_state_is_snapshotted_once_a_sixteenth_of_an_interval_is_behind() {
        let snapshotted = sized(1_000, 1_000_000);
        // 1,000,000 / 16 = 62,500 units of work.
        assert!(!snapshot_due(
            sized(60_000, 1_000_000),
            snapshotted,
            None,
            10_000,
            true
        ));
        assert!(snapshot_due(
            sized(63_500, 1_000_000),
            snapshotted,
            None,
            10_000,
            true
        ));
        // Nothing since the snapshot: nothing to do, however quiet.
        assert!(!snapshot_due(
            snapshotted,
            snapshotted,
            Some(1_000),
            10_000,
            true
        ));
        // A small state with the smallest interval: one command is enough.
        assert!(snapshot_due(at(1), at(0), None, 1, true));
        assert!(!snapshot_due(at(0), at(0), None, 1, true));
    }
}
