//! File locks: hierarchical paths, exclusive/shared modes, fencing tokens, FIFO wait queue.

use serde::{Deserialize, Serialize};

use crate::agent::AgentId;
use crate::task::TaskId;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum LockMode {
    Exclusive,
    Shared,
}

/// One holder of a lock. Shared locks have several.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockHolder {
    pub agent_id: AgentId,
    /// Revision of the grant; strictly increasing across all grants of all locks.
    pub fencing_token: u64,
    pub task_id: Option<TaskId>,
    pub acquired_at_ms: u64,
    /// Released automatically once `now_ms` passes this.
    pub expires_at_ms: Option<u64>,
}

/// A held lock on one normalised path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lock {
    pub path: String,
    pub mode: LockMode,
    pub holders: Vec<LockHolder>,
    pub revision: u64,
}

/// A queued acquire that could not be granted yet (all-or-nothing over its paths).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockWaiter {
    /// Revision at which it was queued (its place in the FIFO).
    pub queued_revision: u64,
    pub agent_id: AgentId,
    pub paths: Vec<String>,
    pub mode: LockMode,
    pub task_id: Option<TaskId>,
    pub ttl_ms: Option<u64>,
    /// Dropped from the queue once `now_ms` passes this.
    pub wait_deadline_ms: u64,
}

/// One path of a successful acquire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockGrant {
    pub path: String,
    pub mode: LockMode,
    pub agent_id: AgentId,
    pub fencing_token: u64,
    pub expires_at_ms: Option<u64>,
}
