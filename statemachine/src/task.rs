//! Tasks: the queue, claiming with fencing tokens, and the dependency DAG.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::agent::AgentId;

pub type TaskId = String;

/// The reserved capability of an exec (`percyctl exec`): a task whose payload is a command
/// request, run only by workers that accept execs. An exec is not idempotent, so its holder's
/// expiry fails it (see [`LOST_EXEC_PREFIX`]) instead of requeuing it, unless attempts remain.
pub const EXEC_CAPABILITY: &str = "percy.exec";
/// How the error of an exec whose executor expired or left mid-run begins.
pub const LOST_EXEC_PREFIX: &str = "lost";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum TaskStatus {
    /// Waits for a dependency that is not completed yet.
    Blocked,
    /// Claimable.
    Ready,
    /// Held by `assignee` under `claim_token`, not started yet.
    Claimed,
    /// Held and started.
    Working,
    Completed,
    /// Failed `max_attempts` times (terminal).
    Failed,
    Cancelled,
}

impl TaskStatus {
    /// Completed, failed and cancelled tasks never change again.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Completed | Self::Failed | Self::Cancelled)
    }
    /// Claimed or working: the task has an assignee and a claim token.
    pub fn is_held(self) -> bool {
        matches!(self, Self::Claimed | Self::Working)
    }
}

/// What a submitter says about a new task.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskSpec {
    /// Chosen by the submitter, or generated (`task-<revision>`) when `None`.
    pub id: Option<TaskId>,
    pub title: String,
    pub description: String,
    pub payload: Vec<u8>,
    /// Capabilities an agent must all have.
    pub requires: BTreeSet<String>,
    /// Labels an agent must carry with these exact values (`node=builder`, `os=linux`).
    pub selector: BTreeMap<String, String>,
    /// Higher runs first.
    pub priority: i32,
    pub depends_on: Vec<TaskId>,
    /// 0 means [`crate::limits::DEFAULT_MAX_ATTEMPTS`].
    pub max_attempts: u32,
    /// How long a worker lets the task's command run (enforced by the worker, not here).
    pub timeout_ms: Option<u64>,
}

/// What a worker reports when it completes a task.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskResult {
    pub summary: String,
    pub branch: Option<String>,
    pub exit_code: Option<i32>,
    pub output_tail: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Task {
    pub id: TaskId,
    pub title: String,
    pub description: String,
    pub payload: Vec<u8>,
    pub requires: BTreeSet<String>,
    pub selector: BTreeMap<String, String>,
    pub priority: i32,
    pub depends_on: Vec<TaskId>,
    pub plan_id: Option<String>,
    pub status: TaskStatus,
    pub assignee: Option<AgentId>,
    /// Revision of the claim that made `assignee` the holder: the fencing token every
    /// start/complete/fail must present. Kept after completion for the record.
    pub claim_token: Option<u64>,
    /// Claims so far (a requeue after expiry or failure counts).
    pub attempts: u32,
    pub max_attempts: u32,
    pub timeout_ms: Option<u64>,
    pub result: Option<TaskResult>,
    /// Last failure, or why it was cancelled (names the failed dependency).
    pub error: Option<String>,
    pub created_at_ms: u64,
    pub updated_at_ms: u64,
    pub create_revision: u64,
    pub revision: u64,
}
