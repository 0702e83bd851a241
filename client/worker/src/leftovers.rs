//! A worker that restarts quickly (crash, SIGKILL, deploy) registers under its name while
//! its previous run's agent is still active, and the cluster hands it the same agent. The
//! tasks that agent holds were claimed by a process that is gone: nobody would ever report
//! them, and our heartbeats would keep them claimed forever. So on adopting a live agent the
//! worker fails those attempts (the cluster requeues them while attempts remain) and
//! releases the agent's locks, before it claims anything itself.

use percy_client::proto::Agent;
use percy_client::{Client, Consistency, TaskFilter, TaskStatus};

/// Fails every task `agent` holds and releases its locks; returns the task ids.
pub async fn abandon_leftovers(client: &Client, agent: &Agent) -> Vec<String> {
    let filter = TaskFilter {
        assignee: Some(agent.id),
        ..TaskFilter::default()
    };
    let held = match client.list_tasks(&filter, Consistency::Linearizable).await {
        Ok(listing) => listing.tasks,
        Err(err) => {
            // The tasks are then left to the operator (`percyctl task requeue`); the worker
            // itself can still run.
            tracing::warn!(agent_id = agent.id, error = %err, "could not list the previous run's tasks");
            return Vec::new();
        }
    };
    let reason = format!(
        "worker {} restarted; the previous run's attempt was abandoned",
        agent.name
    );
    let mut abandoned = Vec::new();
    for task in held
        .iter()
        .filter(|t| matches!(t.status(), TaskStatus::Claimed | TaskStatus::Working))
    {
        match client
            .fail_task(&task.id, agent.id, task.claim_token, &reason)
            .await
        {
            Ok(_) => abandoned.push(task.id.clone()),
            Err(err) => {
                tracing::warn!(task_id = %task.id, error = %err, "could not give up the previous run's task");
            }
        }
    }
    match client.release_all_locks(agent.id).await {
        Ok(released) if !released.released.is_empty() => {
            tracing::info!(locks = ?released.released, "released the previous run's locks");
        }
        Ok(_) => {}
        Err(err) => tracing::warn!(error = %err, "could not release the previous run's locks"),
    }
    if !abandoned.is_empty() {
        tracing::warn!(tasks = ?abandoned, "gave up the tasks of the previous run of this worker");
    }
    abandoned
}
