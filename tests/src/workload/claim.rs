//! The claim workload: agents submit tasks, claim the next one, start it, and complete it or
//! give it back (fail, which requeues it while it has attempts left), all with the claim
//! token. After an unknown claim the agent lists what it holds and carries on with that, as a
//! restarted worker would.

use std::sync::Arc;

use anyhow::{anyhow, Result};
use percy_client::proto::{TaskResult, TaskSpec};
use percy_client::{Consistency, TaskFilter};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;
use tokio::sync::{watch, OnceCell};

use super::{final_task_read, register_agents, tasks_json, think};
use crate::checker::{claim, Verdict};
use crate::history::History;
use crate::run::{Env, Outcome, Workload};

/// Chance that a worker submits a task instead of claiming one.
const SUBMIT_PROBABILITY: f64 = 0.35;
/// Chance that a claimed task is given back rather than completed.
const GIVE_BACK_PROBABILITY: f64 = 0.2;
/// Chance that a claimed task is started before it is completed.
const START_PROBABILITY: f64 = 0.7;

/// See the module docs.
pub struct ClaimWorkload {
    workers: u64,
    agents: OnceCell<Vec<u64>>,
}

impl ClaimWorkload {
    pub fn new(workers: u64) -> Self {
        ClaimWorkload {
            workers,
            agents: OnceCell::new(),
        }
    }
}

/// A task this worker holds: (id, claim token).
type Held = (String, u64);

impl Workload for ClaimWorkload {
    fn name(&self) -> &'static str {
        "claim"
    }

    async fn setup(self: Arc<Self>, env: Arc<Env>) -> Result<()> {
        let agents = register_agents(&env, "claim", self.workers).await?;
        self.agents
            .set(agents)
            .map_err(|_| anyhow!("setup ran twice"))
    }

    async fn worker(
        self: Arc<Self>,
        env: Arc<Env>,
        process: u64,
        stop: watch::Receiver<bool>,
    ) -> Result<()> {
        let agents = self.agents.get().ok_or_else(|| anyhow!("no setup"))?;
        let agent = agents[(process - 1) as usize];
        let client = env.client_for(process).await?;
        let mut rng = StdRng::seed_from_u64(env.seed ^ process);
        let mut submitted = 0u64;
        let mut held: Vec<Held> = Vec::new();
        while !*stop.borrow() {
            if let Some((task, token)) = held.pop() {
                if rng.gen_bool(START_PROBABILITY) {
                    env.call(
                        process,
                        &task,
                        "start",
                        json!({"agent": agent, "token": token}),
                        client.start_task(&task, agent, token),
                        |_| json!({}),
                    )
                    .await;
                }
                if rng.gen_bool(GIVE_BACK_PROBABILITY) {
                    env.call(
                        process,
                        &task,
                        "fail-task",
                        json!({"agent": agent, "token": token}),
                        client.fail_task(&task, agent, token, "jepsen gives it back"),
                        |_| json!({}),
                    )
                    .await;
                } else {
                    let result = TaskResult {
                        summary: format!("done by {agent}"),
                        ..Default::default()
                    };
                    env.call(
                        process,
                        &task,
                        "complete",
                        json!({"agent": agent, "token": token}),
                        client.complete_task(&task, agent, token, result),
                        |_| json!({}),
                    )
                    .await;
                }
            } else if rng.gen_bool(SUBMIT_PROBABILITY) {
                submitted += 1;
                let id = format!("c-{process}-{submitted}");
                let spec = TaskSpec {
                    id: id.clone(),
                    title: format!("claim task {id}"),
                    ..Default::default()
                };
                env.call(
                    process,
                    &id,
                    "submit",
                    json!({"id": id}),
                    client.submit_task(spec),
                    |_| json!({}),
                )
                .await;
            } else {
                let outcome = env
                    .call(
                        process,
                        "",
                        "claim",
                        json!({"agent": agent}),
                        client.claim_next(agent),
                        |response| match &response.task {
                            Some(task) => json!({"task": task.id, "token": task.claim_token}),
                            None => json!({"task": null}),
                        },
                    )
                    .await;
                match outcome {
                    Outcome::Ok(response) => {
                        if let Some(task) = response.task {
                            held.push((task.id, task.claim_token));
                        }
                    }
                    Outcome::Info => {
                        // Adopt whatever this agent holds now (it may include the lost claim).
                        let filter = TaskFilter {
                            assignee: Some(agent),
                            ..Default::default()
                        };
                        let outcome = env
                            .call(
                                process,
                                "",
                                "read-assigned",
                                json!({"agent": agent}),
                                client.list_tasks(&filter, Consistency::Linearizable),
                                |response| tasks_json(&response.tasks),
                            )
                            .await;
                        if let Outcome::Ok(response) = outcome {
                            held.extend(
                                response
                                    .tasks
                                    .into_iter()
                                    .filter(|t| {
                                        matches!(
                                            super::status_name(t.status).as_str(),
                                            "claimed" | "working"
                                        )
                                    })
                                    .map(|t| (t.id, t.claim_token)),
                            );
                        }
                    }
                    Outcome::Fail(_) => {}
                }
            }
            think(&mut rng).await;
        }
        Ok(())
    }

    async fn finish(self: Arc<Self>, env: Arc<Env>) -> Result<()> {
        final_task_read(&env).await
    }

    fn check(&self, history: &History) -> Vec<Verdict> {
        vec![claim::check(history), crate::checker::queue::check(history)]
    }
}
