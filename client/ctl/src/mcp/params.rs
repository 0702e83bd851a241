//! The tools' arguments. Each type's JSON schema (from its doc comments) is what the client
//! shows the model; arguments that do not fit it come back as a tool error naming the field.

use std::collections::HashMap;

use schemars::JsonSchema;
use serde::Deserialize;

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterAgent {
    /// Capabilities of this session's agent (replace the current ones), e.g. ["rust", "backend"].
    pub capabilities: Option<Vec<String>>,
    /// Labels of the agent (replace the current ones), matched by tasks' selectors.
    pub labels: Option<HashMap<String, String>>,
    /// How many tasks the agent may hold at once.
    pub max_concurrent: Option<u32>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ClaimTask {
    /// The task to claim; without it, the best ready task this agent can run (priority, then age).
    pub task_id: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TaskId {
    /// A task this session claimed.
    pub task_id: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CompleteTask {
    /// A task this session claimed.
    pub task_id: String,
    /// What was done, in a sentence or two.
    pub summary: String,
    /// The git branch holding the work, if any.
    pub branch: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FailTask {
    /// A task this session claimed.
    pub task_id: String,
    /// Why it failed. The task is retried (by any agent) while attempts remain.
    pub error: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SubmitTask {
    /// Task id; generated when omitted.
    pub id: Option<String>,
    /// One-line title.
    pub title: String,
    /// What to do, in full.
    pub description: Option<String>,
    /// Capabilities an agent needs to claim it.
    pub requires: Option<Vec<String>>,
    /// Labels an agent must carry to claim it.
    pub selector: Option<HashMap<String, String>>,
    /// Higher runs first (default 0).
    pub priority: Option<i32>,
    /// Tasks that must complete before this one becomes ready.
    pub depends_on: Option<Vec<String>>,
    /// Attempts before it fails for good (default 3).
    pub max_attempts: Option<u32>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListTasks {
    /// Only tasks in this state: blocked, ready, claimed, working, completed, failed, cancelled.
    pub status: Option<String>,
    /// Only the tasks of this plan.
    pub plan_id: Option<String>,
    /// Only tasks assigned to this session's agent.
    pub mine: Option<bool>,
    /// At most this many tasks (default: all).
    pub limit: Option<u32>,
}

/// How a path is locked.
#[derive(Debug, Clone, Copy, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Nobody else may lock the path (or anything under or above it).
    #[default]
    Exclusive,
    /// Others may hold shared locks too (readers).
    Shared,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AcquireLocks {
    /// Repository-relative paths (files or directories); all are locked or none.
    pub paths: Vec<String>,
    /// exclusive (default) or shared.
    pub mode: Option<Mode>,
    /// On conflict, queue and wait up to this many seconds; without it, fail at once.
    pub wait_seconds: Option<f64>,
    /// Lease: the locks lapse after this many seconds unless released earlier.
    pub ttl_seconds: Option<f64>,
    /// The task the locks are for (shown in listings).
    pub task_id: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReleaseLocks {
    /// Paths to release; omitted or empty releases every lock this agent holds.
    pub paths: Option<Vec<String>>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SendMessage {
    /// Recipient: an agent's name or id, or "*" for every agent.
    pub to: String,
    /// The message.
    pub body: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReadInbox {
    /// Also show messages already read in this session.
    pub all: Option<bool>,
}
