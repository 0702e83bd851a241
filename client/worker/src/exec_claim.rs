//! How an exec-only worker (no task command) claims: the ready execs it can run, by id,
//! oldest first, so that claim-next never hands it a plain task.

use percy_client::proto::{Agent, ClaimTaskResponse, TaskStatus};
use percy_client::{Client, ClientError, Consistency, TaskFilter};

use crate::feed::can_run;
use crate::EXEC_CAPABILITY;

/// Claims one ready exec this agent can run; `task: None` when there is none.
pub async fn claim_exec(client: &Client, agent: &Agent) -> Result<ClaimTaskResponse, ClientError> {
    let filter = TaskFilter {
        status: Some(TaskStatus::Ready),
        ..Default::default()
    };
    let ready = client
        .list_tasks(&filter, Consistency::Linearizable)
        .await?;
    for task in ready.tasks {
        if !task.requires.iter().any(|c| c == EXEC_CAPABILITY) || !can_run(agent, &task) {
            continue;
        }
        match client
            .claim_task(agent.id, &task.id, Some(task.revision))
            .await
        {
            Ok(claimed) => return Ok(claimed),
            // Another executor was faster, or it was cancelled meanwhile.
            Err(err) if err.code() == tonic::Code::FailedPrecondition => continue,
            Err(err) => return Err(err),
        }
    }
    Ok(ClaimTaskResponse::default())
}
