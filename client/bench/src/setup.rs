//! Untimed setup shared by the workloads: submitting many tasks in parallel plans, registering
//! agents, reading every task of a run back for verification.

use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use futures::{StreamExt, TryStreamExt};
use percy_client::proto::{RegisterAgentRequest, Task, TaskSpec};
use percy_client::{Client, Consistency};

use super::Env;

/// Agents of the claim and lock workloads live for the whole run without heartbeats.
pub const BENCH_AGENT_TTL: Duration = Duration::from_secs(3_600);
/// The most tasks one agent may hold (the server's limit), for claim-random's agents.
pub const MAX_HELD_TASKS: u32 = 1_024;

/// The tasks of one run, by index: id and the revision the submission returned.
pub struct Submitted {
    pub ids: Vec<String>,
    pub revisions: Vec<u64>,
    pub plans: Vec<String>,
}

pub fn task_id(run: &str, index: usize) -> String {
    format!("{}{index:07}", task_id_prefix(run))
}

/// What every task id of run `run` starts with.
pub fn task_id_prefix(run: &str) -> String {
    format!("b{run}-t")
}

fn task_index(run: &str, id: &str) -> Option<usize> {
    id.strip_prefix(&task_id_prefix(run))?.parse().ok()
}

/// Submits `count` ready tasks that require `requires`, in plans of `--plan-size`,
/// `--setup-parallel` at a time.
pub async fn submit_tasks(
    env: &Env,
    clients: &[Client],
    count: usize,
    requires: &[String],
) -> Result<Submitted> {
    let plan_size = env.args.plan_size.max(1);
    let run = env.run_id.clone();
    let plans: Vec<(String, std::ops::Range<usize>)> = (0..count)
        .step_by(plan_size)
        .enumerate()
        .map(|(n, start)| {
            (
                format!("b{run}-p{n:05}"),
                start..(start + plan_size).min(count),
            )
        })
        .collect();
    let plan_ids: Vec<String> = plans.iter().map(|(id, _)| id.clone()).collect();
    let mut revisions = vec![0u64; count];
    let mut done = 0usize;
    let mut stream = futures::stream::iter(plans.into_iter().enumerate())
        .map(|(n, (plan_id, range))| {
            let client = clients[n % clients.len()].clone();
            let run = run.clone();
            async move {
                let specs: Vec<TaskSpec> = range
                    .clone()
                    .map(|t| TaskSpec {
                        id: task_id(&run, t),
                        title: format!("bench task {t}"),
                        requires: requires.to_vec(),
                        ..Default::default()
                    })
                    .collect();
                let response = client
                    .submit_plan(&plan_id, specs)
                    .await
                    .with_context(|| format!("submit plan {plan_id}"))?;
                Ok::<_, anyhow::Error>((range, response.tasks))
            }
        })
        .buffer_unordered(env.args.setup_parallel.max(1));
    while let Some(result) = stream.next().await {
        let (range, tasks) = result?;
        for task in tasks {
            let index = task_index(&run, &task.id)
                .filter(|i| range.contains(i))
                .ok_or_else(|| anyhow!("plan answered with an unexpected task {}", task.id))?;
            revisions[index] = task.revision;
        }
        done += range.len();
        env.progress
            .say(format!("setup: submitted {done} / {count} tasks"));
    }
    if let Some(missing) = revisions.iter().position(|r| *r == 0) {
        anyhow::bail!(
            "task {} got no revision from its plan",
            task_id(&run, missing)
        );
    }
    Ok(Submitted {
        ids: (0..count).map(|t| task_id(&run, t)).collect(),
        revisions,
        plans: plan_ids,
    })
}

/// Registers one agent that can hold `max_concurrent` tasks; returns its id.
pub async fn register_agent(
    client: &Client,
    name: String,
    max_concurrent: u32,
    ttl: Duration,
) -> Result<u64> {
    let response = client
        .register_agent(RegisterAgentRequest {
            name: name.clone(),
            node: "bench".into(),
            max_concurrent,
            ttl_ms: u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX),
            ..Default::default()
        })
        .await
        .with_context(|| format!("register agent {name}"))?;
    response
        .agent
        .map(|a| a.id)
        .ok_or_else(|| anyhow!("register {name}: no agent in the answer"))
}

/// Reads every task of the run back (plan by plan, linearizable), as (index, task).
pub async fn read_back(
    env: &Env,
    client: &Client,
    submitted: &Submitted,
) -> Result<Vec<(usize, Task)>> {
    let run = env.run_id.clone();
    let plans: Vec<Vec<Task>> = futures::stream::iter(submitted.plans.iter().cloned())
        .map(|plan_id| {
            let client = client.clone();
            async move {
                client
                    .get_plan(&plan_id, Consistency::Linearizable)
                    .await
                    .map(|p| p.tasks)
                    .with_context(|| format!("read plan {plan_id} back"))
            }
        })
        .buffer_unordered(env.args.setup_parallel.max(1))
        .try_collect()
        .await?;
    Ok(plans
        .into_iter()
        .flatten()
        .filter_map(|task| Some((task_index(&run, &task.id)?, task)))
        .collect())
}
