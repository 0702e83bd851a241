//! 04 — Workers run tasks by themselves, and only tasks they are able to: a worker without a
//! task's required capability never runs it, and a task nobody can run stays ready.
//!
//! `cargo run -p percy-tests --example 04_worker`

mod common;

use std::collections::HashMap;

use anyhow::{Context, Result};
use common::{check, say, step, task_status, wait_for, LocalCluster};
use percy_client::proto::TaskSpec;
use percy_client::{Client, Consistency, TaskStatus};
use percy_worker::{Worker, WorkerConfig, WorkerSummary};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// What each worker runs: print who ran what (the summary of the task's result).
const EXEC: &str = r#"echo "$PERCY_AGENT_NAME ran $PERCY_TASK_ID (attempt $PERCY_TASK_ATTEMPT)""#;

struct Running {
    stop: oneshot::Sender<()>,
    done: JoinHandle<Result<WorkerSummary, percy_worker::WorkerError>>,
}

fn start_worker(client: &Client, name: &str, capability: &str, inbox: &std::path::Path) -> Running {
    let mut config = WorkerConfig::new(name, EXEC);
    config.capabilities = vec![capability.to_owned()];
    config.inbox_dir = inbox.to_owned();
    let (stop, stopped) = oneshot::channel::<()>();
    let done = tokio::spawn(Worker::new(client.clone(), config).run(async move {
        let _ = stopped.await;
    }));
    Running { stop, done }
}

#[tokio::main]
async fn main() -> Result<()> {
    step("Start a node and two workers: one can do `rust`, the other `python`");
    let cluster = LocalCluster::start(1).await?;
    let client = cluster.client().await?;
    let scratch = tempfile::tempdir()?;
    let workers = [
        (
            "rusty",
            start_worker(&client, "rusty", "rust", scratch.path()),
        ),
        (
            "snake",
            start_worker(&client, "snake", "python", scratch.path()),
        ),
    ];
    wait_for("both workers to register", || async {
        let agents = client.list_agents(false, Consistency::Linearizable).await?;
        Ok((agents.agents.len() == 2).then_some(()))
    })
    .await?;
    say("rusty and snake are registered and waiting (on a watch, not polling)");

    step("Submit tasks needing rust, python, and gpu (which no worker has)");
    let needs = [
        ("build-core", "rust"),
        ("build-cli", "rust"),
        ("lint-scripts", "python"),
        ("test-scripts", "python"),
        ("train-model", "gpu"),
    ];
    for (id, capability) in needs {
        client
            .submit_task(TaskSpec {
                id: id.into(),
                title: format!("{id} (needs {capability})"),
                requires: vec![capability.into()],
                ..Default::default()
            })
            .await?;
        say(format!("submitted {id} requiring {capability}"));
    }

    step("The workers pick up and run what they can");
    let runnable: Vec<&str> = needs
        .iter()
        .filter(|(_, c)| *c != "gpu")
        .map(|(id, _)| *id)
        .collect();
    wait_for("the runnable tasks to complete", || async {
        for id in &runnable {
            if task_status(&client, id).await? != TaskStatus::Completed {
                return Ok(None);
            }
        }
        Ok(Some(()))
    })
    .await?;
    let agents = client.list_agents(true, Consistency::Linearizable).await?;
    let names: HashMap<u64, String> = agents.agents.into_iter().map(|a| (a.id, a.name)).collect();
    for (id, capability) in &needs[..4] {
        let task = client
            .get_task(id, Consistency::Linearizable)
            .await?
            .task
            .context("task missing")?;
        let runner = names.get(&task.assignee).cloned().unwrap_or_default();
        let summary = task.result.map(|r| r.summary).unwrap_or_default();
        say(format!("{id}: {summary}"));
        let expected = if *capability == "rust" {
            "rusty"
        } else {
            "snake"
        };
        check(runner == expected, &format!("{id} ran on {expected}"))?;
    }

    step("Nobody can run train-model: it stays ready");
    let status = task_status(&client, "train-model").await?;
    say(format!("train-model is {status:?}"));
    check(
        status == TaskStatus::Ready,
        "a task with no matching worker stays ready",
    )?;

    step("Stop the workers (they deregister)");
    for (name, worker) in workers {
        let _ = worker.stop.send(());
        let summary = worker.done.await??;
        say(format!(
            "{name}: {} completed, {} failed, deregistered: {}",
            summary.completed, summary.failed, summary.deregistered
        ));
        check(summary.completed == 2, &format!("{name} ran its two tasks"))?;
    }
    cluster.shutdown().await;
    println!("\ndone");
    Ok(())
}
