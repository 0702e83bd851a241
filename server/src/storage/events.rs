//! What the state machine store tells watchers after it changes the state.
//!
//! Owns: the change notification type and the channel capacity. Must not: buffer history —
//! serving a watch "from revision N" is the watch service's job; this is only the live feed.

use percy_statemachine::Event;

/// Changes buffered per subscriber. A subscriber that falls further behind gets
/// `RecvError::Lagged` and must resynchronise from the state (the watch service handles it).
pub const EVENT_CHANNEL_CAPACITY: usize = 4096;

/// One notification on the channel of [`crate::storage::StateMachineStore::subscribe`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StateChange {
    /// The command at state machine revision `revision` was applied and changed these
    /// entities. Commands that change nothing are not announced.
    Applied { revision: u64, events: Vec<Event> },
    /// The whole state was replaced by a snapshot from the leader, up to state machine
    /// revision `revision`. The commands in between were never applied here, so no events
    /// exist for them: a subscriber must resynchronise from the state, as after `Lagged`.
    SnapshotInstalled { revision: u64 },
}
