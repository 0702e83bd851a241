//! The JSON shapes shared by several endpoints (tasks, agents), made from the gRPC messages,
//! and [`JsonBody`], a JSON request body whose refusal is an [`ApiError`].

use std::collections::HashMap;

use axum::extract::{FromRequest, Request};
use axum::Json;
use percy_proto::v1 as pb;
use serde::de::DeserializeOwned;
use serde::Serialize;
use utoipa::ToSchema;

use super::error::ApiError;

/// A JSON request body; one that is not JSON, or not this shape, is INVALID_ARGUMENT (400)
/// in the API's error shape.
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        let Json(value) = Json::<T>::from_request(request, state).await?;
        Ok(Self(value))
    }
}

/// `TASK_STATUS_READY` → `ready`.
fn short_name(full: &str, prefix: &str) -> String {
    full.strip_prefix(prefix)
        .unwrap_or(full)
        .to_ascii_lowercase()
}

/// What a task carries after a run.
#[derive(Debug, Serialize, ToSchema)]
pub struct TaskResultJson {
    pub summary: String,
    pub branch: String,
    pub exit_code: Option<i32>,
    pub output_tail: String,
}

/// A task.
#[derive(Debug, Serialize, ToSchema)]
pub struct TaskJson {
    pub id: String,
    pub title: String,
    pub description: String,
    pub requires: Vec<String>,
    pub selector: HashMap<String, String>,
    pub priority: i32,
    pub depends_on: Vec<String>,
    pub plan_id: String,
    /// blocked, ready, claimed, working, completed, failed or cancelled.
    pub status: String,
    /// The agent id holding it; 0 for none.
    pub assignee: u64,
    /// What start/complete/fail must present; 0 before the first claim.
    pub claim_token: u64,
    pub attempts: u32,
    pub max_attempts: u32,
    pub timeout_ms: u64,
    pub result: Option<TaskResultJson>,
    pub error: String,
    pub created_at_ms: u64,
    pub updated_at_ms: u64,
    pub revision: u64,
}

impl From<pb::Task> for TaskJson {
    fn from(t: pb::Task) -> Self {
        Self {
            status: short_name(t.status().as_str_name(), "TASK_STATUS_"),
            id: t.id,
            title: t.title,
            description: t.description,
            requires: t.requires,
            selector: t.selector,
            priority: t.priority,
            depends_on: t.depends_on,
            plan_id: t.plan_id,
            assignee: t.assignee,
            claim_token: t.claim_token,
            attempts: t.attempts,
            max_attempts: t.max_attempts,
            timeout_ms: t.timeout_ms,
            result: t.result.map(|r| TaskResultJson {
                summary: r.summary,
                branch: r.branch,
                exit_code: r.exit_code,
                output_tail: r.output_tail,
            }),
            error: t.error,
            created_at_ms: t.created_at_ms,
            updated_at_ms: t.updated_at_ms,
            revision: t.revision,
        }
    }
}

/// An agent.
#[derive(Debug, Serialize, ToSchema)]
pub struct AgentJson {
    pub id: u64,
    pub name: String,
    pub node: String,
    pub capabilities: Vec<String>,
    pub labels: HashMap<String, String>,
    pub max_concurrent: u32,
    pub ttl_ms: u64,
    /// active, expired or deregistered.
    pub status: String,
    pub registered_at_ms: u64,
    pub last_seen_ms: u64,
    pub revision: u64,
    /// What the agent last reported with its heartbeats (absent: nothing known).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub load: Option<AgentLoadJson>,
}

/// An agent's load: the leader's live figures, or a follower's last checkpoint.
#[derive(Debug, Serialize, ToSchema)]
pub struct AgentLoadJson {
    /// The 1-minute load average (absent: unknown on the agent's platform).
    pub load_avg_1m: Option<f64>,
    pub cores: Option<u32>,
    pub mem_used_bytes: Option<u64>,
    pub mem_total_bytes: Option<u64>,
    pub running_tasks: u32,
    pub running_execs: u32,
    /// When it was reported (wall-clock ms).
    pub reported_at_ms: u64,
}

impl From<pb::AgentLoad> for AgentLoadJson {
    fn from(l: pb::AgentLoad) -> Self {
        Self {
            load_avg_1m: l.load_avg_1m,
            cores: l.cores,
            mem_used_bytes: l.mem_used_bytes,
            mem_total_bytes: l.mem_total_bytes,
            running_tasks: l.running_tasks,
            running_execs: l.running_execs,
            reported_at_ms: l.reported_at_ms,
        }
    }
}

impl From<pb::Agent> for AgentJson {
    fn from(a: pb::Agent) -> Self {
        Self {
            status: short_name(a.status().as_str_name(), "AGENT_STATUS_"),
            id: a.id,
            name: a.name,
            node: a.node,
            capabilities: a.capabilities,
            labels: a.labels,
            max_concurrent: a.max_concurrent,
            ttl_ms: a.ttl_ms,
            registered_at_ms: a.registered_at_ms,
            last_seen_ms: a.last_seen_ms,
            revision: a.revision,
            load: a.load.map(AgentLoadJson::from),
        }
    }
}
