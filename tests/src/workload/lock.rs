//! The lock workload: each worker (its own agent) acquires an exclusive lock on one of a few
//! paths, writes to that path's [`FencedResource`] (kept by the harness) with the grant's fencing token, and
//! releases. An acquire whose outcome is unknown is resolved by releasing until the answer
//! is definite, as a real client would.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Result};
use percy_client::LockRequest;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;
use tokio::sync::{watch, OnceCell};

use super::{register_agents, think};
use crate::checker::{lock, Verdict};
use crate::fenced::FencedResource;
use crate::history::{History, Status};
use crate::run::{Env, Outcome, Workload};

/// The contended paths.
const PATHS: [&str; 2] = ["src/api.rs", "docs/guide.md"];
/// Fenced writes per holding (inclusive range).
const WRITES_PER_HOLD: (u32, u32) = (1, 3);
/// Pause between fenced writes while holding.
const HOLD_PAUSE: Duration = Duration::from_millis(20);
/// Releases tried before a worker gives up on resolving a lock (it then stops, so that it
/// never acquires with an unresolved grant outstanding).
const RELEASE_ATTEMPTS: u32 = 30;

/// See the module docs.
pub struct LockWorkload {
    workers: u64,
    agents: OnceCell<Vec<u64>>,
    /// One fenced resource per lock path.
    resources: BTreeMap<&'static str, FencedResource>,
}

impl LockWorkload {
    pub fn new(workers: u64) -> Self {
        LockWorkload {
            workers,
            agents: OnceCell::new(),
            resources: PATHS
                .iter()
                .map(|path| (*path, FencedResource::default()))
                .collect(),
        }
    }

    /// Releases `path` until the answer is definite; false if it never was.
    async fn release(
        &self,
        env: &Env,
        client: &percy_client::Client,
        process: u64,
        agent: u64,
        path: &str,
    ) -> bool {
        for _ in 0..RELEASE_ATTEMPTS {
            let outcome = env
                .call(
                    process,
                    path,
                    "release",
                    json!({"agent": agent}),
                    client.release_locks(agent, &[path.to_owned()]),
                    |response| json!({"released": response.released.iter().any(|p| p == path)}),
                )
                .await;
            match outcome {
                Outcome::Ok(_) => return true,
                Outcome::Fail(_) | Outcome::Info => {
                    tokio::time::sleep(HOLD_PAUSE).await;
                }
            }
        }
        false
    }
}

impl Workload for LockWorkload {
    fn name(&self) -> &'static str {
        "lock"
    }

    async fn setup(self: Arc<Self>, env: Arc<Env>) -> Result<()> {
        let agents = register_agents(&env, "lock", self.workers).await?;
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
        let mut written = 0u64;
        while !*stop.borrow() {
            let path = PATHS[rng.gen_range(0..PATHS.len())];
            let outcome = env
                .call(
                    process,
                    path,
                    "acquire",
                    json!({"agent": agent}),
                    client.acquire_locks(&LockRequest::exclusive(agent, vec![path.to_owned()])),
                    |response| {
                        json!({"token": response.grants.iter().find(|g| g.path == path).map(|g| g.fencing_token)})
                    },
                )
                .await;
            match outcome {
                Outcome::Ok(response) => {
                    let token = response
                        .grants
                        .iter()
                        .find(|grant| grant.path == path)
                        .map(|grant| grant.fencing_token)
                        .unwrap_or(0);
                    for _ in 0..rng.gen_range(WRITES_PER_HOLD.0..=WRITES_PER_HOLD.1) {
                        written += 1;
                        let value = format!("p{process}-{written}");
                        let pending = env.recorder.invoke(
                            process,
                            path,
                            "fenced_write",
                            json!({"token": token, "value": value}),
                        );
                        let accepted = self.resources[path].write(token, &value);
                        env.recorder
                            .complete(pending, Status::Ok, json!({"accepted": accepted}));
                        tokio::time::sleep(HOLD_PAUSE).await;
                    }
                    if !self.release(&env, &client, process, agent, path).await {
                        return Ok(());
                    }
                }
                Outcome::Info => {
                    if !self.release(&env, &client, process, agent, path).await {
                        return Ok(());
                    }
                }
                Outcome::Fail(_) => {}
            }
            think(&mut rng).await;
        }
        Ok(())
    }

    async fn finish(self: Arc<Self>, env: Arc<Env>) -> Result<()> {
        for (path, resource) in &self.resources {
            let pending = env.recorder.invoke(0, *path, "fenced_read", json!({}));
            let log: Vec<serde_json::Value> = resource
                .log()
                .into_iter()
                .map(|(token, value)| json!([token, value]))
                .collect();
            env.recorder
                .complete(pending, Status::Ok, json!({"log": log}));
        }
        Ok(())
    }

    fn check(&self, history: &History) -> Vec<Verdict> {
        vec![lock::check(history, lock::DEFAULT_STEP_BUDGET)]
    }
}
