//! 03 — The task state machine: submit → claim → working → complete, and compare-and-swap
//! claiming: of two agents claiming the same task at the same revision, exactly one wins.
//!
//! `cargo run -p percy-tests --example 03_task_lifecycle`

mod common;

use anyhow::{bail, Context, Result};
use common::{check, refusal_text, say, step, task_status, LocalCluster, LONG_TTL_MS};
use percy_client::proto::{RegisterAgentRequest, TaskResult, TaskSpec};
use percy_client::{code_name, Client, TaskStatus};

async fn register(client: &Client, name: &str) -> Result<u64> {
    let response = client
        .register_agent(RegisterAgentRequest {
            ttl_ms: LONG_TTL_MS,
            name: name.into(),
            capabilities: vec!["rust".into()],
            ..Default::default()
        })
        .await?;
    Ok(response.agent.context("registration without agent")?.id)
}

#[tokio::main]
async fn main() -> Result<()> {
    step("Start a node and register two agents");
    let cluster = LocalCluster::start(1).await?;
    let client = cluster.client().await?;
    let alice = register(&client, "alice").await?;
    let bob = register(&client, "bob").await?;
    say(format!("alice = agent {alice}, bob = agent {bob}"));

    step("Submit a task");
    let task = client
        .submit_task(TaskSpec {
            id: "fix-login".into(),
            title: "Fix the login bug".into(),
            requires: vec!["rust".into()],
            ..Default::default()
        })
        .await?
        .task
        .context("submit without task")?;
    say(format!(
        "task {} is {:?} at revision {}",
        task.id,
        task.status(),
        task.revision
    ));
    check(
        task.status() == TaskStatus::Ready,
        "a task without dependencies is ready",
    )?;

    step("Both agents claim it at the same revision, concurrently (compare-and-swap)");
    let (a, b) = tokio::join!(
        client.claim_task(alice, &task.id, Some(task.revision)),
        client.claim_task(bob, &task.id, Some(task.revision)),
    );
    let (winner, claimed, refusal) = match (a, b) {
        (Ok(won), Err(lost)) => (alice, won, lost),
        (Err(lost), Ok(won)) => (bob, won, lost),
        (a, b) => bail!("expected exactly one winner, got {a:?} and {b:?}"),
    };
    let claimed = claimed.task.context("claim without task")?;
    say(format!(
        "agent {winner} won with claim token {}; the other was refused: {}",
        claimed.claim_token, refusal
    ));
    check(
        code_name(refusal.code()) == "FAILED_PRECONDITION",
        "the loser is refused with FAILED_PRECONDITION",
    )?;
    let loser = if winner == alice { bob } else { alice };

    step("The winner marks it working, then completes it");
    client
        .start_task(&task.id, winner, claimed.claim_token)
        .await?;
    say(format!(
        "status: {:?}",
        task_status(&client, &task.id).await?
    ));
    let stale = client
        .complete_task(&task.id, loser, claimed.claim_token, TaskResult::default())
        .await;
    say(format!(
        "the loser trying to complete it is refused: {}",
        refusal_text(&stale)
    ));
    check(
        stale.is_err(),
        "only the claim holder can complete the task",
    )?;
    client
        .complete_task(
            &task.id,
            winner,
            claimed.claim_token,
            TaskResult {
                summary: "login works again".into(),
                exit_code: Some(0),
                ..Default::default()
            },
        )
        .await?;
    let status = task_status(&client, &task.id).await?;
    say(format!("status: {status:?}"));
    check(status == TaskStatus::Completed, "the task is completed")?;

    cluster.shutdown().await;
    println!("\ndone");
    Ok(())
}
