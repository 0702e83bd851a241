//! Read access to this node's replicated state, as the storage layer shares it. The one place
//! that knows how the storage exposes the state machine, so API code only sees
//! [`StateView::read`]. Reads only; nothing here mutates the state.

use percy_statemachine::StateMachine;

use crate::storage::SharedStateMachine;

#[derive(Clone)]
pub struct StateView {
    state: SharedStateMachine,
}

impl StateView {
    pub fn new(state: SharedStateMachine) -> Self {
        Self { state }
    }

    /// Runs `f` on the current state. Keep `f` short: apply waits while it runs.
    pub fn read<R>(&self, f: impl FnOnce(&StateMachine) -> R) -> R {
        f(&self.state.read())
    }
}
