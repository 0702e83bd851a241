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

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::state::StateView;
use crate::types::Raft;

/// How often the task compares revisions. Snapshots are for compaction, not for latency: a
/// tenth of a second late is nothing.
const CHECK_INTERVAL: Duration = Duration::from_millis(100);

/// Whether to ask for a snapshot now. `applied` is the state machine revision, `snapshotted`
/// the revision of the newest snapshot, `requested` the revision at which the last request was
/// made (if any), `entities` the size of the state. A request that produced no snapshot (Raft
/// was busy building one, or had nothing new) is repeated once another full interval has been
/// applied since.
pub fn snapshot_due(
    applied: u64,
    snapshotted: u64,
    requested: Option<u64>,
    every: u64,
    entities: u64,
) -> bool {
    debug_assert!(every > 0, "--snapshot-every is validated to be at least 1");
    let every = every.max(entities);
    let behind = applied.saturating_sub(snapshotted) >= every;
    let outstanding =
        requested.is_some_and(|at| at > snapshotted && applied.saturating_sub(at) < every);
    behind && !outstanding
}

/// Asks Raft for a snapshot whenever [`snapshot_due`] says so, until `shutdown` fires.
pub async fn run(
    raft: Raft,
    state: StateView,
    snapshotted: Arc<AtomicU64>,
    every: u64,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut ticks = tokio::time::interval(CHECK_INTERVAL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut requested = None;
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
        let (applied_now, entities) = state.read(|sm| (sm.revision(), sm.entity_count()));
        if !snapshot_due(
            applied_now,
            snapshotted.load(Ordering::Relaxed),
            requested,
            every,
            u64::try_from(entities).unwrap_or(u64::MAX),
        ) {
            continue;
        }
        match raft.trigger().snapshot().await {
            Ok(()) => requested = Some(applied_now),
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

    #[test]
    fn due_after_every_commands_counted_from_the_last_snapshot() {
        assert!(!snapshot_due(99, 0, None, 100, 0));
        assert!(snapshot_due(100, 0, None, 100, 0));
        assert!(!snapshot_due(1_099, 1_000, None, 100, 0));
        assert!(snapshot_due(1_100, 1_000, None, 100, 0));
        // A state restored from a snapshot newer than what was applied: nothing is due.
        assert!(!snapshot_due(5, 10, None, 1, 0));
    }

    #[test]
    fn one_request_at_a_time_repeated_when_it_came_to_nothing() {
        // Asked at 100; the snapshot is not there yet.
        assert!(!snapshot_due(150, 0, Some(100), 100, 0));
        // It came: counting starts again from it.
        assert!(!snapshot_due(150, 100, Some(100), 100, 0));
        assert!(snapshot_due(200, 100, Some(100), 100, 0));
        // It never came (Raft was busy): asked again a full interval after the request.
        assert!(snapshot_due(200, 0, Some(100), 100, 0));
    }

    #[test]
    fn one_entry_of_many_commands_is_enough() {
        // Group commit: a single entry carried 10,000 commands.
        assert!(snapshot_due(10_000, 0, None, 10_000, 0));
    }

    #[test]
    fn a_large_state_is_snapshotted_no_more_often_than_the_log_grows_as_large() {
        // A million tasks: 10,000 commands are not worth encoding a million entities.
        assert!(!snapshot_due(1_010_000, 1_000_000, None, 10_000, 1_000_000));
        assert!(snapshot_due(2_000_000, 1_000_000, None, 10_000, 1_000_000));
        // A small state keeps the configured interval.
        assert!(snapshot_due(10_000, 0, None, 10_000, 50));
    }
}
