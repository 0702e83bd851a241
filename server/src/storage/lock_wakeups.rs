//! Wake-ups for API calls waiting on a queued lock request, one request at a time.
//!
//! Owns: the table of queued requests (by queued revision) that some call on this node waits
//! for. Apply wakes exactly the requests that left the queue in the applied entry
//! (`Applied::resolved_lock_waiters`); an installed snapshot wakes them all, since the
//! commands in between were never applied here. Must not: decide anything about locks — a
//! woken caller reads the state and sees for itself whether it was granted or dropped.
//!
//! Why not wake on every applied revision: with N callers queued on one lock, each handoff
//! then woke all N to re-read the state, so a handoff cost grew with the queue (at 64
//! contenders, slower per handoff than at 16). Now a handoff wakes the one caller it granted.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::watch;
use tokio::time::Instant;

/// The requests waited for on this node. Shared by the state machine store (which wakes) and
/// the lock API (which registers).
#[derive(Default)]
pub struct LockWakeups {
    /// Queued revision → a counter of wake-ups. Several calls may wait for one request (a
    /// retried acquire under a session gets the same queued revision); each holds a receiver.
    waiting: Mutex<HashMap<u64, watch::Sender<u64>>>,
}

impl LockWakeups {
    /// Registers interest in the queued request `queued_revision`. Register *before* reading
    /// the state (see [`LockWakeup::mark_seen`]), so a wake-up between the read and the wait
    /// is not lost.
    pub fn register(self: &Arc<Self>, queued_revision: u64) -> LockWakeup {
        let receiver = self
            .waiting
            .lock()
            .entry(queued_revision)
            .or_insert_with(|| watch::channel(0).0)
            .subscribe();
        LockWakeup {
            wakeups: Arc::clone(self),
            queued_revision,
            receiver,
        }
    }

    /// Wakes the callers of these requests (those that left the queue in an applied entry).
    pub fn wake(&self, queued_revisions: &[u64]) {
        if queued_revisions.is_empty() {
            return;
        }
        let waiting = self.waiting.lock();
        for queued_revision in queued_revisions {
            if let Some(sender) = waiting.get(queued_revision) {
                sender.send_modify(|count| *count += 1);
            }
        }
    }

    /// Wakes every caller: the state was replaced wholesale (a snapshot was installed).
    pub fn wake_all(&self) {
        for sender in self.waiting.lock().values() {
            sender.send_modify(|count| *count += 1);
        }
    }

    /// How many requests are waited for (for tests: registrations must not leak).
    pub fn waiting(&self) -> usize {
        self.waiting.lock().len()
    }
}

/// One call's interest in one queued request; unregisters when dropped.
pub struct LockWakeup {
    wakeups: Arc<LockWakeups>,
    queued_revision: u64,
    receiver: watch::Receiver<u64>,
}

impl LockWakeup {
    /// Counts every wake-up so far as seen. Call right before reading the state: a later
    /// wake-up then ends the next [`Self::woken`] at once.
    pub fn mark_seen(&mut self) {
        self.receiver.borrow_and_update();
    }

    /// Waits for a wake-up not yet seen. False when the deadline passed first.
    pub async fn woken(&mut self, deadline: Instant) -> bool {
        matches!(
            tokio::time::timeout_at(deadline, self.receiver.changed()).await,
            Ok(Ok(()))
        )
    }
}

impl Drop for LockWakeup {
    fn drop(&mut self) {
        let mut waiting = self.wakeups.waiting.lock();
        // Under the table's lock, so no call can subscribe in between: ours is the last
        // receiver when the count is one.
        if waiting
            .get(&self.queued_revision)
            .is_some_and(|sender| sender.receiver_count() <= 1)
        {
            waiting.remove(&self.queued_revision);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn soon() -> Instant {
        Instant::now() + Duration::from_secs(5)
    }

    fn already_passed() -> Instant {
        Instant::now()
    }

    #[tokio::test]
    async fn only_the_resolved_request_is_woken() {
        let wakeups = Arc::new(LockWakeups::default());
        let mut granted = wakeups.register(7);
        let mut still_queued = wakeups.register(8);
        granted.mark_seen();
        still_queued.mark_seen();
        wakeups.wake(&[7, 99]);
        assert!(granted.woken(soon()).await);
        assert!(!still_queued.woken(already_passed()).await);
    }

    #[tokio::test]
    async fn a_wake_up_after_mark_seen_is_not_lost() {
        let wakeups = Arc::new(LockWakeups::default());
        let mut wakeup = wakeups.register(7);
        wakeup.mark_seen();
        // Apply resolves the request while the caller reads the state (it saw "waiting").
        wakeups.wake(&[7]);
        assert!(
            wakeup
                .woken(already_passed() + Duration::from_millis(1))
                .await
        );
        // Seen now: the next wait needs a new wake-up.
        wakeup.mark_seen();
        assert!(!wakeup.woken(already_passed()).await);
    }

    #[tokio::test]
    async fn a_snapshot_wakes_everyone() {
        let wakeups = Arc::new(LockWakeups::default());
        let mut first = wakeups.register(1);
        let mut second = wakeups.register(2);
        first.mark_seen();
        second.mark_seen();
        wakeups.wake_all();
        assert!(first.woken(soon()).await);
        assert!(second.woken(soon()).await);
    }

    #[test]
    fn registrations_are_removed_with_their_last_caller() {
        let wakeups = Arc::new(LockWakeups::default());
        let first = wakeups.register(7);
        let retry = wakeups.register(7);
        let other = wakeups.register(8);
        assert_eq!(wakeups.waiting(), 2);
        drop(first);
        assert_eq!(wakeups.waiting(), 2, "the retry still waits for 7");
        drop(retry);
        drop(other);
        assert_eq!(wakeups.waiting(), 0);
    }
}
