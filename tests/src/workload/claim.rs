//! The claim workload: agents submit tasks, claim the next one, start it, and complete it or
//! give it back (fail, which requeues it while it has attempts left), all with the claim
//! token. After an unknown claim the agent lists what it holds and carries on with that, as a
//! restarted worker would.
//!
//! Two behaviours exist only to give the server a chance to get it wrong:
//! - **A revived agent.** An agent that gave a task back sometimes takes it again at once, by
//!   name, and is then haunted by its earlier self: a start, complete or fail with the token it
//!   gave back (`"stale": true` in the input). The server must refuse it even though the same
//!   agent holds the task, under a newer token.
//! - **Duplicates.** Some claims, starts, completions and give-backs are sent twice with one
//!   session header ([`Duplicator`]); both attempts must get the same answer.

use std::sync::Arc;

use anyhow::{anyhow, Result};
use percy_client::proto::{ClaimTaskResponse, TaskResult, TaskSpec, TaskUpdateResponse};
use percy_client::{Client, Consistency, TaskFilter};
use percy_proto::v1::task_service_client::TaskServiceClient;
use percy_proto::v1::{ClaimTaskRequest, CompleteTaskRequest, FailTaskRequest, StartTaskRequest};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use tokio::sync::{watch, OnceCell};

use super::{final_task_read, register_agents, tasks_json, think, DUPLICATE_PROBABILITY};
use crate::checker::{claim, exactly_once, queue, Verdict};
use crate::duplicate::{self, Duplicator};
use crate::history::History;
use crate::run::{Env, Outcome, Workload};

/// Chance that a worker submits a task instead of claiming one.
const SUBMIT_PROBABILITY: f64 = 0.35;
/// Chance that a claimed task is given back rather than completed.
const GIVE_BACK_PROBABILITY: f64 = 0.2;
/// Chance that a claimed task is started before it is completed.
const START_PROBABILITY: f64 = 0.7;
/// Chance that an agent that gave a task back takes it again and replays the old token.
const REVIVE_PROBABILITY: f64 = 0.5;
/// The error a give-back reports.
const GIVE_BACK_ERROR: &str = "jepsen gives it back";

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

/// What a holder does with a task, presenting its claim token.
#[derive(Debug, Clone, Copy)]
enum Step {
    Start,
    Complete,
    GiveBack,
}

impl Step {
    const ALL: [Step; 3] = [Step::Start, Step::Complete, Step::GiveBack];

    /// The operation's name in the history.
    fn name(self) -> &'static str {
        match self {
            Step::Start => "start",
            Step::Complete => "complete",
            Step::GiveBack => "fail-task",
        }
    }
}

/// One worker: its agent, its clients, its generator and what it holds.
struct Worker {
    env: Arc<Env>,
    process: u64,
    agent: u64,
    client: Client,
    duplicator: Duplicator,
    rng: StdRng,
    held: Vec<Held>,
    submitted: u64,
}

impl Worker {
    /// Does one thing: works on a held task, submits one, or claims one.
    async fn act(&mut self) {
        if let Some((task, token)) = self.held.pop() {
            if self.rng.gen_bool(START_PROBABILITY) {
                self.step(&task, token, Step::Start, false).await;
            }
            if !self.rng.gen_bool(GIVE_BACK_PROBABILITY) {
                self.step(&task, token, Step::Complete, false).await;
                return;
            }
            let given_back = self.step(&task, token, Step::GiveBack, false).await;
            if matches!(given_back, Outcome::Ok(_)) && self.rng.gen_bool(REVIVE_PROBABILITY) {
                self.revive(&task, token).await;
            }
        } else if self.rng.gen_bool(SUBMIT_PROBABILITY) {
            self.submit().await;
        } else {
            match self.claim(None).await {
                Outcome::Ok(response) => self.hold(response),
                Outcome::Info => self.adopt_assigned().await,
                Outcome::Fail(_) => {}
            }
        }
    }

    /// Takes back the task just given back under `old_token`, then replays a step with the
    /// old token, as the agent's earlier incarnation would: it must be refused.
    async fn revive(&mut self, task: &str, old_token: u64) {
        match self.claim(Some(task)).await {
            Outcome::Ok(response) => {
                let step = *Step::ALL.choose(&mut self.rng).expect("steps");
                self.step(task, old_token, step, true).await;
                self.hold(response);
            }
            Outcome::Info => self.adopt_assigned().await,
            Outcome::Fail(_) => {}
        }
    }

    fn hold(&mut self, response: ClaimTaskResponse) {
        if let Some(task) = response.task {
            self.held.push((task.id, task.claim_token));
        }
    }

    /// Presents `token` for `step` on `task`, once or (sometimes) twice with one header.
    async fn step(
        &mut self,
        task: &str,
        token: u64,
        step: Step,
        stale: bool,
    ) -> Outcome<TaskUpdateResponse> {
        let agent = self.agent;
        let mut input = json!({"agent": agent, "token": token});
        if stale {
            input["stale"] = json!(true);
        }
        if self.rng.gen_bool(DUPLICATE_PROBABILITY) {
            let pending = self
                .env
                .recorder
                .invoke(self.process, task, step.name(), input);
            let task_id = task.to_owned();
            let answers = self
                .duplicator
                .send_twice(self.process as usize, |channel, header| {
                    let mut service = TaskServiceClient::new(channel);
                    let header = Some(header);
                    let task_id = task_id.clone();
                    async move {
                        match step {
                            Step::Start => {
                                let request = StartTaskRequest {
                                    header,
                                    task_id,
                                    agent_id: agent,
                                    claim_token: token,
                                };
                                service.start(request).await
                            }
                            Step::Complete => {
                                let request = CompleteTaskRequest {
                                    header,
                                    task_id,
                                    agent_id: agent,
                                    claim_token: token,
                                    result: Some(result_of(agent)),
                                    claim_next: false,
                                };
                                service.complete(request).await
                            }
                            Step::GiveBack => {
                                let request = FailTaskRequest {
                                    header,
                                    task_id,
                                    agent_id: agent,
                                    claim_token: token,
                                    error: GIVE_BACK_ERROR.to_owned(),
                                };
                                service.fail(request).await
                            }
                        }
                    }
                })
                .await;
            return duplicate::record(&self.env, pending, answers, updated);
        }
        let client = &self.client;
        let call = async {
            match step {
                Step::Start => client.start_task(task, agent, token).await,
                Step::Complete => {
                    client
                        .complete_task(task, agent, token, result_of(agent))
                        .await
                }
                Step::GiveBack => client.fail_task(task, agent, token, GIVE_BACK_ERROR).await,
            }
        };
        self.env
            .call(self.process, task, step.name(), input, call, updated)
            .await
    }

    /// Claims `task` by name, or the next claimable one (`None`).
    async fn claim(&mut self, task: Option<&str>) -> Outcome<ClaimTaskResponse> {
        let agent = self.agent;
        let key = task.unwrap_or_default();
        let mut input = json!({"agent": agent});
        if let Some(task) = task {
            input["task"] = json!(task);
        }
        if self.rng.gen_bool(DUPLICATE_PROBABILITY) {
            let pending = self.env.recorder.invoke(self.process, key, "claim", input);
            let answers = self
                .duplicator
                .send_twice(self.process as usize, |channel, header| {
                    let request = ClaimTaskRequest {
                        header: Some(header),
                        agent_id: agent,
                        task_id: key.to_owned(),
                        expected_revision: None,
                        start: false,
                    };
                    async move { TaskServiceClient::new(channel).claim(request).await }
                })
                .await;
            return duplicate::record(&self.env, pending, answers, claimed);
        }
        let client = &self.client;
        let call = async move {
            match task {
                Some(task) => client.claim_task(agent, task, None).await,
                None => client.claim_next(agent).await,
            }
        };
        self.env
            .call(self.process, key, "claim", input, call, claimed)
            .await
    }

    /// After a claim with an unknown outcome: adopt whatever this agent holds now (it may
    /// include the lost claim).
    async fn adopt_assigned(&mut self) {
        let filter = TaskFilter {
            assignee: Some(self.agent),
            ..Default::default()
        };
        let outcome = self
            .env
            .call(
                self.process,
                "",
                "read-assigned",
                json!({"agent": self.agent}),
                self.client.list_tasks(&filter, Consistency::Linearizable),
                |response| tasks_json(&response.tasks),
            )
            .await;
        if let Outcome::Ok(response) = outcome {
            self.held.extend(
                response
                    .tasks
                    .into_iter()
                    .filter(|t| {
                        matches!(super::status_name(t.status).as_str(), "claimed" | "working")
                    })
                    .map(|t| (t.id, t.claim_token)),
            );
        }
    }

    async fn submit(&mut self) {
        self.submitted += 1;
        let id = format!("c-{}-{}", self.process, self.submitted);
        let spec = TaskSpec {
            id: id.clone(),
            title: format!("claim task {id}"),
            ..Default::default()
        };
        self.env
            .call(
                self.process,
                &id,
                "submit",
                json!({"id": id}),
                self.client.submit_task(spec),
                |_| json!({}),
            )
            .await;
    }
}

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
        let mut worker = Worker {
            agent: agents[(process - 1) as usize],
            client: env.client_for(process).await?,
            duplicator: Duplicator::new(&env)?,
            rng: StdRng::seed_from_u64(env.seed ^ process),
            env,
            process,
            held: Vec::new(),
            submitted: 0,
        };
        while !*stop.borrow() {
            worker.act().await;
            think(&mut worker.rng).await;
        }
        Ok(())
    }

    async fn finish(self: Arc<Self>, env: Arc<Env>) -> Result<()> {
        final_task_read(&env).await
    }

    fn check(&self, history: &History) -> Vec<Verdict> {
        vec![
            claim::check(history),
            queue::check(history),
            exactly_once::check(history),
        ]
    }
}

/// What an agent reports when it completes a task.
fn result_of(agent: u64) -> TaskResult {
    TaskResult {
        summary: format!("done by {agent}"),
        ..Default::default()
    }
}

/// The output of a claim: the task and its token, or `null` when nothing was claimable.
fn claimed(response: &ClaimTaskResponse) -> Value {
    match &response.task {
        Some(task) => json!({"task": task.id, "token": task.claim_token}),
        None => json!({"task": null}),
    }
}

/// The output of a start, completion or give-back: the task's revision after it.
fn updated(response: &TaskUpdateResponse) -> Value {
    json!({"revision": response.task.as_ref().map(|t| t.revision)})
}
