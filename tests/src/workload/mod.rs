//! Workloads: what the clients do while the nemesis breaks things, and which checkers judge
//! the result. Each one implements [`crate::run::Workload`].

pub mod claim;
pub mod expiry;
pub mod lock;
pub mod queue;
pub mod register;
pub mod watch;

use std::time::Duration;

use percy_client::proto::{RegisterAgentRequest, Task};
use percy_client::{Consistency, TaskFilter, TaskStatus};
use rand::Rng;
use serde_json::{json, Value};

use crate::run::Env;

/// Agents of the workloads live far longer than any run, so that no expiry (which would
/// legitimately requeue tasks and release locks behind a worker's back) happens mid-run.
pub const AGENT_TTL_MS: u64 = 3_600_000;
/// Chance that a worker sends a mutating call twice with one session header (see
/// [`crate::duplicate`]) instead of once through its client.
pub const DUPLICATE_PROBABILITY: f64 = 0.2;
/// Think time between a worker's operations (ms range).
pub const THINK_MS: (u64, u64) = (5, 50);

/// Sleeps a random think time.
pub async fn think(rng: &mut impl Rng) {
    let ms = rng.gen_range(THINK_MS.0..=THINK_MS.1);
    tokio::time::sleep(Duration::from_millis(ms)).await;
}

/// Registers one long-lived agent per worker (before any fault); returns their ids.
pub async fn register_agents(env: &Env, prefix: &str, workers: u64) -> anyhow::Result<Vec<u64>> {
    let client = env.admin_client().await?;
    let mut ids = Vec::new();
    for process in 1..=workers {
        let response = client
            .register_agent(RegisterAgentRequest {
                name: format!("{prefix}-{process}"),
                node: "jepsen".to_owned(),
                capabilities: Vec::new(),
                ttl_ms: AGENT_TTL_MS,
                ..Default::default()
            })
            .await?;
        let agent = response
            .agent
            .ok_or_else(|| anyhow::anyhow!("register returned no agent"))?;
        ids.push(agent.id);
    }
    Ok(ids)
}

/// A task status as the checkers spell it (`ready`, `claimed`, ...).
pub fn status_name(status: i32) -> String {
    TaskStatus::try_from(status)
        .map(|s| {
            s.as_str_name()
                .trim_start_matches("TASK_STATUS_")
                .to_lowercase()
        })
        .unwrap_or_else(|_| format!("unknown-{status}"))
}

/// The final-read view of tasks.
pub fn tasks_json(tasks: &[Task]) -> Value {
    let tasks: Vec<Value> = tasks
        .iter()
        .map(|task| {
            json!({
                "id": task.id,
                "status": status_name(task.status),
                "claim_token": task.claim_token,
                "assignee": task.assignee,
            })
        })
        .collect();
    json!({ "tasks": tasks })
}

/// After the final heal: one linearizable read of every task, recorded as `final-read`.
pub async fn final_task_read(env: &Env) -> anyhow::Result<()> {
    let client = env.admin_client().await?;
    let filter = TaskFilter::default();
    env.final_read(
        "",
        "final-read",
        || client.list_tasks(&filter, Consistency::Linearizable),
        |response| tasks_json(&response.tasks),
    )
    .await?;
    Ok(())
}
