//! The claim workloads. `claim-random` is the etcd/NATS recipe's equivalent: clients race to
//! claim random tasks by compare-and-set on the revision the submission returned.
//! `claim-next` is the real worker loop: claim the best ready task, complete it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Result;
use percy_client::proto::TaskResult;
use percy_client::{Client, TaskStatus};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Map};
use tonic::Code;

use super::report::{r3, Outcome};
use super::setup::{self, register_agent, BENCH_AGENT_TTL, MAX_HELD_TASKS};
use super::stats::Stats;
use super::Env;

/// Spreads the per-client RNG seeds.
const SEED_STRIDE: u64 = 7_919;

/// One claim-random client's result: its stats, the agents it used, and (task index, agent)
/// for every acknowledged claim (all phases).
struct ClaimRandomClient {
    stats: Stats,
    agents: Vec<u64>,
    claimed: Vec<(usize, u64)>,
}

pub async fn claim_random(env: &Env) -> Result<Outcome> {
    let c = env.args.clients();
    let clients = env.clients(c).await?;
    let submitted = Arc::new(setup::submit_tasks(env, &clients, env.args.tasks, &[]).await?);
    let k = submitted.ids.len();
    anyhow::ensure!(k > 0, "--tasks must be at least 1");
    let mut first_agents = Vec::with_capacity(c);
    for (i, client) in clients.iter().enumerate() {
        let name = format!("b{}-c{i}-a0", env.run_id);
        first_agents.push(register_agent(client, name, MAX_HELD_TASKS, BENCH_AGENT_TTL).await?);
    }
    env.progress.say("claim-random: measuring".into());
    let w = env.window();
    let seed = env.seed();
    let mut handles = Vec::with_capacity(c);
    for (i, (client, agent)) in clients.iter().cloned().zip(first_agents).enumerate() {
        let submitted = Arc::clone(&submitted);
        let mut stats = env.stats()?;
        let run = env.run_id.clone();
        handles.push(tokio::spawn(async move {
            let mut rng = StdRng::seed_from_u64(seed.wrapping_add(i as u64 * SEED_STRIDE));
            let mut agents = vec![agent];
            let mut agent = agent;
            let mut claimed = Vec::new();
            while !w.done() {
                let t = rng.gen_range(0..k);
                let t0 = Instant::now();
                let result = client
                    .claim_task(agent, &submitted.ids[t], Some(submitted.revisions[t]))
                    .await;
                let t1 = Instant::now();
                match result {
                    Ok(r) if r.task.as_ref().is_some_and(|task| task.assignee == agent) => {
                        claimed.push((t, agent));
                        stats.ok(&w, t0, t1);
                    }
                    Ok(_) => stats.error(&w, t1, "claim acknowledged for another agent"),
                    Err(e) if e.code() == Code::FailedPrecondition => stats.failed(&w, t0, t1),
                    // This agent holds as many tasks as the server allows: go on with a new
                    // one (one extra write per 1024 claims; the refused attempt is not counted).
                    Err(e) if e.code() == Code::ResourceExhausted => {
                        let name = format!("b{run}-c{i}-a{}", agents.len());
                        match register_agent(&client, name, MAX_HELD_TASKS, BENCH_AGENT_TTL).await {
                            Ok(id) => {
                                agent = id;
                                agents.push(id);
                            }
                            Err(e) => stats.error(&w, Instant::now(), format!("{e:#}")),
                        }
                    }
                    Err(e) => stats.error(&w, t1, e),
                }
            }
            ClaimRandomClient {
                stats,
                agents,
                claimed,
            }
        }));
    }
    let cpu = env.cpu_over_window(w).await;
    let mut results = Vec::with_capacity(c);
    for handle in handles {
        results.push(handle.await?);
    }
    env.progress.say("claim-random: verifying".into());
    let tasks = setup::read_back(env, &clients[0], &submitted).await?;

    // Verification: every claimed task has exactly one assignee, the agent that got the ack.
    let agent_client: HashMap<u64, usize> = results
        .iter()
        .enumerate()
        .flat_map(|(i, r)| r.agents.iter().map(move |a| (*a, i)))
        .collect();
    let mut acked: HashMap<usize, u64> = HashMap::new();
    let mut double_claims = 0u64;
    for r in &results {
        for &(t, agent) in &r.claimed {
            if acked.insert(t, agent).is_some() {
                double_claims += 1;
            }
        }
    }
    let reported: usize = results.iter().map(|r| r.claimed.len()).sum();
    let (
        mut ready,
        mut claimed_tasks,
        mut owner_mismatch,
        mut foreign_assignee,
        mut attempts_anomalies,
    ) = (0u64, 0u64, 0u64, 0u64, 0u64);
    for (t, task) in &tasks {
        if task.status == TaskStatus::Ready as i32 {
            ready += 1;
            if task.attempts != 0 || acked.contains_key(t) {
                attempts_anomalies += 1;
            }
            continue;
        }
        claimed_tasks += 1;
        if task.attempts != 1 {
            attempts_anomalies += 1;
        }
        if !agent_client.contains_key(&task.assignee) {
            foreign_assignee += 1;
        }
        if acked.get(t) != Some(&task.assignee) {
            owner_mismatch += 1;
        }
    }
    let ok = tasks.len() == k
        && double_claims == 0
        && owner_mismatch == 0
        && foreign_assignee == 0
        && attempts_anomalies == 0
        && claimed_tasks as usize == reported;
    let agents_used: usize = results.iter().map(|r| r.agents.len()).sum();
    let mut extra = Map::new();
    extra.insert("tasks".into(), json!(k));
    extra.insert(
        "verify".into(),
        json!({
            "tasks_read": tasks.len(), "ready_tasks": ready, "claimed_tasks": claimed_tasks,
            "client_reported_claims": reported, "double_claims": double_claims,
            "owner_mismatch": owner_mismatch, "assignee_not_a_bench_agent": foreign_assignee,
            "attempts_anomalies": attempts_anomalies, "ok": ok,
        }),
    );
    extra.insert(
        "tasks_claimed_pct".into(),
        json!(r3(100.0 * claimed_tasks as f64 / k as f64)),
    );
    extra.insert("agents_used".into(), json!(agents_used));
    Ok(env.outcome(results.into_iter().map(|r| r.stats).collect(), cpu, extra))
}

/// One claim-next client: (stats, agent, completed tasks in all phases).
struct ClaimNextClient {
    stats: Stats,
    completed: u64,
}

pub async fn claim_next(env: &Env) -> Result<Outcome> {
    let c = env.args.clients();
    let clients = env.clients(c).await?;
    let submitted = setup::submit_tasks(env, &clients, env.args.tasks, &[]).await?;
    let k = submitted.ids.len();
    let mut agents = Vec::with_capacity(c);
    for (i, client) in clients.iter().enumerate() {
        let name = format!("b{}-w{i}", env.run_id);
        agents.push(register_agent(client, name, 1, BENCH_AGENT_TTL).await?);
    }
    env.progress.say("claim-next: measuring".into());
    let w = env.window();
    let mut handles = Vec::with_capacity(c);
    for (client, agent) in clients.iter().cloned().zip(agents) {
        let mut stats = env.stats()?;
        handles.push(tokio::spawn(async move {
            let mut completed = 0u64;
            while !w.done() {
                let t0 = Instant::now();
                let claim = client.claim_next(agent).await;
                let t1 = Instant::now();
                let task = match claim {
                    Ok(r) => match r.task {
                        Some(task) => task,
                        None => {
                            // Nothing left to claim: the pool is drained.
                            stats.failed(&w, t0, t1);
                            continue;
                        }
                    },
                    Err(e) => {
                        stats.error(&w, t1, e);
                        continue;
                    }
                };
                let done = complete(&client, agent, &task.id, task.claim_token).await;
                let t2 = Instant::now();
                match done {
                    Ok(()) => {
                        completed += 1;
                        stats.ok_at(&w, t2, t1 - t0);
                        stats.secondary(&w, t0, t2);
                    }
                    Err(e) => stats.error(&w, t2, e),
                }
            }
            ClaimNextClient { stats, completed }
        }));
    }
    let cpu = env.cpu_over_window(w).await;
    let mut results = Vec::with_capacity(c);
    for handle in handles {
        results.push(handle.await?);
    }
    env.progress.say("claim-next: verifying".into());
    let tasks = setup::read_back(env, &clients[0], &submitted).await?;
    let acked: u64 = results.iter().map(|r| r.completed).sum();
    let (mut completed, mut ready, mut other, mut attempts_anomalies) = (0u64, 0u64, 0u64, 0u64);
    for (_, task) in &tasks {
        match TaskStatus::try_from(task.status) {
            Ok(TaskStatus::Completed) => {
                completed += 1;
                if task.attempts != 1 {
                    attempts_anomalies += 1;
                }
            }
            Ok(TaskStatus::Ready) => ready += 1,
            _ => other += 1,
        }
    }
    let ok = tasks.len() == k && completed == acked && attempts_anomalies == 0 && other == 0;
    let mut extra = Map::new();
    extra.insert("tasks".into(), json!(k));
    extra.insert(
        "verify".into(),
        json!({
            "tasks_read": tasks.len(), "completed_tasks": completed,
            "client_acked_completions": acked, "ready_tasks": ready,
            "claimed_not_completed": other, "attempts_anomalies": attempts_anomalies, "ok": ok,
        }),
    );
    Ok(env.outcome(results.into_iter().map(|r| r.stats).collect(), cpu, extra))
}

async fn complete(client: &Client, agent: u64, task_id: &str, token: u64) -> Result<()> {
    client
        .complete_task(task_id, agent, token, TaskResult::default())
        .await?;
    Ok(())
}
