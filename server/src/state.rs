//! Read access to this node's replicated state, as the storage layer shares it. The one place
//! that knows how the storage exposes the state machine, so API code only sees
//! [`StateView::read`], [`StateView::wait_for_revision`] and [`StateView::lock_wakeup`]. Reads only; nothing here mutates
//! the state.

use std::sync::Arc;

use percy_statemachine::StateMachine;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::storage::{LockWakeup, LockWakeups, SharedStateMachine};

#[derive(Clone)]
pub struct StateView {
    state: SharedStateMachine,
    applied_revision: watch::Receiver<u64>,
    lock_wakeups: Arc<LockWakeups>,
}

impl StateView {
    pub fn new(
        state: SharedStateMachine,
        applied_revision: watch::Receiver<u64>,
        lock_wakeups: Arc<LockWakeups>,
    ) -> Self {
        Self {
            state,
            applied_revision,
            lock_wakeups,
        }
    }

    /// Interest in the queued lock request `queued_revision`: woken when this replica applies
    /// the command that takes it out of the queue (granted or dropped).
    pub fn lock_wakeup(&self, queued_revision: u64) -> LockWakeup {
        self.lock_wakeups.register(queued_revision)
    }

    /// Runs `f` on the current state. Keep `f` short: apply waits while it runs.
    pub fn read<R>(&self, f: impl FnOnce(&StateMachine) -> R) -> R {
        f(&self.state.read())
    }

    /// Waits until this replica has applied state machine revision `revision`. False when the
    /// deadline passed first (or the node is shutting down).
    pub async fn wait_for_revision(&self, revision: u64, deadline: Instant) -> bool {
        let mut applied = self.applied_revision.clone();
        let reached =
            tokio::time::timeout_at(deadline, applied.wait_for(|at| *at >= revision)).await;
        matches!(reached, Ok(Ok(_)))
    }
}
