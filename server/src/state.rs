//! Read access to this node's replicated state, as the storage layer shares it. The one place
//! that knows how the storage exposes the state machine, so API code only sees
//! [`StateView::read`] and [`StateView::wait_for_revision`]. Reads only; nothing here mutates
//! the state.

use percy_statemachine::StateMachine;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::storage::SharedStateMachine;

#[derive(Clone)]
pub struct StateView {
    state: SharedStateMachine,
    applied_revision: watch::Receiver<u64>,
}

impl StateView {
    pub fn new(state: SharedStateMachine, applied_revision: watch::Receiver<u64>) -> Self {
        Self {
            state,
            applied_revision,
        }
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
