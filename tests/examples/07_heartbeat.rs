//! 07 — Failure detection and recovery: an agent that stops heartbeating is expired after
//! its TTL; its task goes back to ready (the attempt counted) and its locks are released;
//! when it comes back, its old claim token is refused and it must register again.
//!
//! `cargo run -p percy-tests --example 07_heartbeat`

mod common;

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use common::{check, refusal_text, say, step, wait_for, LocalCluster};
use percy_client::proto::{AgentStatus, RegisterAgentRequest, TaskResult, TaskSpec};
use percy_client::{Client, Consistency, LockRequest, TaskStatus};

/// The agents' TTL: short, so the example is quick.
const TTL: Duration = Duration::from_secs(2);
/// How often the healthy agent heartbeats.
const BEAT: Duration = Duration::from_millis(500);

async fn register(client: &Client, name: &str) -> Result<u64> {
    let response = client
        .register_agent(RegisterAgentRequest {
            name: name.into(),
            ttl_ms: TTL.as_millis() as u64,
            ..Default::default()
        })
        .await?;
    Ok(response.agent.context("registration without agent")?.id)
}

#[tokio::main]
async fn main() -> Result<()> {
    step(format!(
        "Start a node; register flaky and steady with a {TTL:?} TTL"
    ));
    let cluster = LocalCluster::start(1).await?;
    let client = cluster.client().await?;
    let flaky = register(&client, "flaky").await?;
    let steady = register(&client, "steady").await?;
    let beating = {
        let client = client.clone();
        tokio::spawn(async move {
            loop {
                let _ = client.heartbeat(steady).await;
                tokio::time::sleep(BEAT).await;
            }
        })
    };

    step("flaky claims a task, starts it and locks the file it edits");
    client
        .submit_task(TaskSpec {
            id: "refactor".into(),
            title: "Refactor the parser".into(),
            ..Default::default()
        })
        .await?;
    let claimed = client
        .claim_task(flaky, "refactor", None)
        .await?
        .task
        .context("claim without task")?;
    client
        .start_task("refactor", flaky, claimed.claim_token)
        .await?;
    client
        .acquire_locks(&LockRequest::exclusive(flaky, vec!["src/parser.rs".into()]))
        .await?;
    say(format!(
        "refactor is working under token {}; src/parser.rs is locked by flaky",
        claimed.claim_token
    ));

    step("flaky goes silent (no more heartbeats)");
    let silent_since = Instant::now();
    wait_for("flaky to expire", || async {
        let agent = client
            .get_agent(flaky, Consistency::Linearizable)
            .await?
            .agent
            .context("agent missing")?;
        Ok((agent.status() == AgentStatus::Expired).then_some(()))
    })
    .await?;
    say(format!(
        "flaky expired {:.1?} after its last sign of life",
        silent_since.elapsed()
    ));
    let steady_agent = client
        .get_agent(steady, Consistency::Linearizable)
        .await?
        .agent
        .context("agent missing")?;
    check(
        steady_agent.status() == AgentStatus::Active,
        "steady, which kept beating, is still active",
    )?;

    step("Its task is back in the queue and its lock is gone");
    let task = client
        .get_task("refactor", Consistency::Linearizable)
        .await?
        .task
        .context("task missing")?;
    say(format!(
        "refactor is {:?} after {} attempt(s)",
        task.status(),
        task.attempts
    ));
    check(task.status() == TaskStatus::Ready, "the task was requeued")?;
    let locks = client.list_locks("src/", Consistency::Linearizable).await?;
    check(locks.locks.is_empty(), "flaky's lock was released")?;

    step("steady takes the task over and finishes it");
    let taken = client
        .claim_next(steady)
        .await?
        .task
        .context("nothing to claim")?;
    say(format!(
        "steady claimed {} with the new token {}",
        taken.id, taken.claim_token
    ));

    step("flaky wakes up and tries to complete with its old token");
    let stale = client
        .complete_task(
            "refactor",
            flaky,
            claimed.claim_token,
            TaskResult::default(),
        )
        .await;
    say(format!("refused: {}", refusal_text(&stale)));
    check(
        stale.is_err(),
        "a stale claim token cannot complete the task",
    )?;
    let beat = client.heartbeat(flaky).await?;
    check(beat.must_reregister, "its heartbeat says: register again")?;
    let again = register(&client, "flaky").await?;
    say(format!(
        "flaky registered again as agent {again} (was {flaky})"
    ));
    check(again != flaky, "a new registration is a new agent")?;

    client
        .complete_task("refactor", steady, taken.claim_token, TaskResult::default())
        .await?;
    say("steady completed refactor");
    beating.abort();
    cluster.shutdown().await;
    println!("\ndone");
    Ok(())
}
