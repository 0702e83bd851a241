//! The expiry workload: agents and locks that lapse while the nemesis breaks things.
//!
//! - **Live agents**, one per lock worker, beat over a keep-alive stream every
//!   [`LIVE_BEAT_INTERVAL`] for the whole run, with a TTL ([`LIVE_TTL_MS`]) longer than any
//!   fault lasts: the cluster must never expire them, whatever leader comes and goes (grace).
//! - **Mortal agents**, registered one after another by the last worker with a short TTL,
//!   beat a few times and fall silent: each must end up expired.
//! - **Leases**: each lock worker (as its live agent) acquires an exclusive lock with a TTL
//!   ([`LOCK_TTL`]) on one of a few paths, writes to that path's [`FencedResource`] with the
//!   grant's fencing token and releases; sometimes it stalls past the TTL first, so that
//!   another worker takes the lock over and the stalled holder, writing late, is fenced off.
//!
//! Checked by [`expiry::check`] (agents) and [`lease::check`] (locks and fenced resources).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Result};
use percy_client::proto::{AgentStatus, RegisterAgentRequest};
use percy_client::{Client, Consistency, LockRequest};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use tokio::sync::{watch, OnceCell};

use super::think;
use crate::checker::{expiry, lease, Verdict};
use crate::fenced::FencedResource;
use crate::history::{History, Status};
use crate::run::{Env, Outcome, Workload, FINAL_TIMEOUT};

/// TTL of the live agents: longer than the longest fault ([`crate::nemesis::FAULT_MS`]) plus a
/// failover and a client's retries, so that a deposed leader that still answers heartbeats
/// for a while (it cannot know better) never costs a beating agent its life.
pub const LIVE_TTL_MS: u64 = 15_000;
/// How often a live agent beats.
const LIVE_BEAT_INTERVAL: Duration = Duration::from_millis(500);
/// TTL of the mortal agents (the server's minimum is 1 s).
const MORTAL_TTL_MS: u64 = 2_000;
/// Beats of a mortal agent before it falls silent (inclusive range), and their interval.
const MORTAL_BEATS: (u32, u32) = (0, 4);
const MORTAL_BEAT_INTERVAL: Duration = Duration::from_millis(300);
/// Pause between two mortal agents (ms range).
const MORTAL_PAUSE_MS: (u64, u64) = (500, 1_500);
/// TTL of every lock grant.
const LOCK_TTL: Duration = Duration::from_millis(2_000);
/// Chance that a holder stalls past its lease before writing (and is fenced off if someone
/// took the lock over meanwhile), and by how much it overstays.
const STALL_PROBABILITY: f64 = 0.25;
const STALL_BEYOND_TTL: Duration = Duration::from_millis(700);
/// The contended paths.
const PATHS: [&str; 2] = ["src/lease.rs", "docs/lease.md"];
/// Fenced writes per holding (inclusive range), and the pause between them.
const WRITES_PER_HOLD: (u32, u32) = (1, 3);
const HOLD_PAUSE: Duration = Duration::from_millis(20);
/// Releases tried after an acquire with an unknown outcome; a lease lapses anyway, so a
/// worker that never gets a definite answer just moves on.
const RELEASE_ATTEMPTS: u32 = 5;
/// Process ids of the live agents' heartbeat loops: this plus the worker's.
const BEAT_PROCESSES: u64 = 100;
/// How often the final read looks whether every silent agent has expired.
const EXPIRY_POLL: Duration = Duration::from_millis(500);

/// See the module docs.
pub struct ExpiryWorkload {
    /// Workers 1..=lock_workers hold leases; the one after them registers mortal agents.
    lock_workers: u64,
    /// The live agents' (name, id), one per lock worker.
    live: OnceCell<Vec<(String, u64)>>,
    /// One fenced resource per lock path.
    resources: BTreeMap<&'static str, FencedResource>,
}

impl ExpiryWorkload {
    /// A workload for `workers` workers: all but the last hold leases.
    pub fn new(workers: u64) -> Self {
        assert!(
            workers >= 2,
            "needs a lock worker and the mortal agents' worker"
        );
        ExpiryWorkload {
            lock_workers: workers - 1,
            live: OnceCell::new(),
            resources: PATHS
                .iter()
                .map(|path| (*path, FencedResource::default()))
                .collect(),
        }
    }

    /// Beats for a live agent until `stop`, recording every beat.
    async fn beat_live(
        env: Arc<Env>,
        process: u64,
        name: String,
        agent: u64,
        mut stop: watch::Receiver<bool>,
    ) {
        let client = match env.client_for(process).await {
            Ok(client) => client,
            Err(_) => return,
        };
        let mut keep_alive = client.keep_alive(agent);
        while !*stop.borrow() {
            env.call(
                BEAT_PROCESSES + process,
                &name,
                "beat",
                json!({"agent": agent}),
                keep_alive.beat(),
                |reply| json!({"must_reregister": reply.must_reregister}),
            )
            .await;
            // The stop signal ends the pause early.
            let _ = tokio::time::timeout(LIVE_BEAT_INTERVAL, stop.changed()).await;
        }
    }

    /// Acquires leases and writes through them until `stop`.
    async fn hold_leases(
        &self,
        env: &Env,
        process: u64,
        agent: u64,
        stop: &watch::Receiver<bool>,
    ) -> Result<()> {
        let client = env.client_for(process).await?;
        let mut rng = StdRng::seed_from_u64(env.seed ^ process);
        let mut written = 0u64;
        while !*stop.borrow() {
            let path = PATHS[rng.gen_range(0..PATHS.len())];
            let request = LockRequest {
                ttl: Some(LOCK_TTL),
                ..LockRequest::exclusive(agent, vec![path.to_owned()])
            };
            let ttl_ms = u64::try_from(LOCK_TTL.as_millis())?;
            let outcome = env
                .call(
                    process,
                    path,
                    "acquire",
                    json!({"agent": agent, "ttl_ms": ttl_ms}),
                    client.acquire_locks(&request),
                    |response| json!({"token": token_of(response, path)}),
                )
                .await;
            match outcome {
                Outcome::Ok(response) => {
                    let token = token_of(&response, path).unwrap_or(0);
                    if rng.gen_bool(STALL_PROBABILITY) {
                        tokio::time::sleep(LOCK_TTL + STALL_BEYOND_TTL).await;
                        written += 1;
                        self.write(
                            env,
                            process,
                            path,
                            token,
                            format!("p{process}-{written}"),
                            true,
                        );
                    } else {
                        for _ in 0..rng.gen_range(WRITES_PER_HOLD.0..=WRITES_PER_HOLD.1) {
                            written += 1;
                            self.write(
                                env,
                                process,
                                path,
                                token,
                                format!("p{process}-{written}"),
                                false,
                            );
                            tokio::time::sleep(HOLD_PAUSE).await;
                        }
                    }
                    release(env, &client, process, agent, path).await;
                }
                Outcome::Info => release(env, &client, process, agent, path).await,
                Outcome::Fail(_) => {}
            }
            think(&mut rng).await;
        }
        Ok(())
    }

    /// Writes `value` to `path`'s fenced resource under `token` and records it.
    fn write(&self, env: &Env, process: u64, path: &str, token: u64, value: String, late: bool) {
        let mut input = json!({"token": token, "value": value});
        if late {
            input["late"] = json!(true);
        }
        let pending = env.recorder.invoke(process, path, "fenced_write", input);
        let accepted = self.resources[path].write(token, &value);
        env.recorder
            .complete(pending, Status::Ok, json!({"accepted": accepted}));
    }

    /// Registers mortal agents one after another until `stop`: each beats a few times, then
    /// falls silent.
    async fn raise_mortals(
        &self,
        env: &Env,
        process: u64,
        stop: &watch::Receiver<bool>,
    ) -> Result<()> {
        let client = env.client_for(process).await?;
        let mut rng = StdRng::seed_from_u64(env.seed ^ process);
        let mut born = 0u64;
        while !*stop.borrow() {
            born += 1;
            let name = format!("expiry-mortal-{born}");
            if let Outcome::Ok(agent) = register(env, &client, process, &name, MORTAL_TTL_MS).await
            {
                for _ in 0..rng.gen_range(MORTAL_BEATS.0..=MORTAL_BEATS.1) {
                    tokio::time::sleep(MORTAL_BEAT_INTERVAL).await;
                    env.call(
                        process,
                        &name,
                        "beat",
                        json!({"agent": agent}),
                        client.heartbeat(agent),
                        |reply| json!({"must_reregister": reply.must_reregister}),
                    )
                    .await;
                }
                let pending =
                    env.recorder
                        .invoke(process, &name, "fall-silent", json!({"agent": agent}));
                env.recorder.complete(pending, Status::Ok, json!({}));
            }
            let pause = rng.gen_range(MORTAL_PAUSE_MS.0..=MORTAL_PAUSE_MS.1);
            tokio::time::sleep(Duration::from_millis(pause)).await;
        }
        Ok(())
    }
}

impl Workload for ExpiryWorkload {
    fn name(&self) -> &'static str {
        "expiry"
    }

    async fn setup(self: Arc<Self>, env: Arc<Env>) -> Result<()> {
        let client = env.admin_client().await?;
        let mut live = Vec::new();
        for process in 1..=self.lock_workers {
            let name = format!("expiry-live-{process}");
            match register(&env, &client, 0, &name, LIVE_TTL_MS).await {
                Outcome::Ok(agent) => live.push((name, agent)),
                _ => return Err(anyhow!("could not register {name}")),
            }
        }
        self.live.set(live).map_err(|_| anyhow!("setup ran twice"))
    }

    async fn worker(
        self: Arc<Self>,
        env: Arc<Env>,
        process: u64,
        stop: watch::Receiver<bool>,
    ) -> Result<()> {
        if process > self.lock_workers {
            return self.raise_mortals(&env, process, &stop).await;
        }
        let live = self.live.get().ok_or_else(|| anyhow!("no setup"))?;
        let (name, agent) = live[(process - 1) as usize].clone();
        let beats = tokio::spawn(Self::beat_live(
            Arc::clone(&env),
            process,
            name,
            agent,
            stop.clone(),
        ));
        let held = self.hold_leases(&env, process, agent, &stop).await;
        beats.await?;
        held
    }

    /// Waits (bounded) until every agent that fell silent has expired, then reads every agent
    /// and every fenced resource.
    async fn finish(self: Arc<Self>, env: Arc<Env>) -> Result<()> {
        let client = env.admin_client().await?;
        let silent: Vec<u64> = env
            .recorder
            .history()
            .ops_named("fall-silent")
            .filter_map(|op| op.input_u64("agent"))
            .collect();
        let deadline = tokio::time::Instant::now() + FINAL_TIMEOUT;
        loop {
            let listed = client.list_agents(true, Consistency::Linearizable).await;
            let all_expired = listed.as_ref().is_ok_and(|response| {
                response
                    .agents
                    .iter()
                    .filter(|agent| silent.contains(&agent.id))
                    .all(|agent| agent.status != AgentStatus::Active as i32)
            });
            if all_expired || tokio::time::Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(EXPIRY_POLL).await;
        }
        env.final_read(
            "",
            "final-agents",
            || client.list_agents(true, Consistency::Linearizable),
            |response| {
                let agents: Vec<Value> = response
                    .agents
                    .iter()
                    .map(|agent| json!({"id": agent.id, "status": status_name(agent.status)}))
                    .collect();
                json!({"agents": agents})
            },
        )
        .await?;
        for (path, resource) in &self.resources {
            let pending = env.recorder.invoke(0, *path, "fenced_read", json!({}));
            let log: Vec<Value> = resource
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
        vec![expiry::check(history), lease::check(history)]
    }
}

/// Registers an agent named `name` with `ttl_ms`, recorded as `register`; its id.
async fn register(
    env: &Env,
    client: &Client,
    process: u64,
    name: &str,
    ttl_ms: u64,
) -> Outcome<u64> {
    let request = RegisterAgentRequest {
        name: name.to_owned(),
        node: "jepsen".to_owned(),
        ttl_ms,
        ..Default::default()
    };
    let outcome = env
        .call(
            process,
            name,
            "register",
            json!({"ttl_ms": ttl_ms}),
            client.register_agent(request),
            |response| json!({"agent": response.agent.as_ref().map(|a| a.id)}),
        )
        .await;
    match outcome {
        Outcome::Ok(response) => match response.agent {
            Some(agent) => Outcome::Ok(agent.id),
            None => Outcome::Info,
        },
        Outcome::Fail(error) => Outcome::Fail(error),
        Outcome::Info => Outcome::Info,
    }
}

/// Releases `path` until the answer is definite or [`RELEASE_ATTEMPTS`] run out.
async fn release(env: &Env, client: &Client, process: u64, agent: u64, path: &str) {
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
        if matches!(outcome, Outcome::Ok(_)) {
            return;
        }
        tokio::time::sleep(HOLD_PAUSE).await;
    }
}

/// The fencing token of the grant of `path`, if any.
fn token_of(response: &percy_client::proto::AcquireLocksResponse, path: &str) -> Option<u64> {
    response
        .grants
        .iter()
        .find(|grant| grant.path == path)
        .map(|grant| grant.fencing_token)
}

/// An agent status as the checker spells it (`active`, `expired`, ...).
fn status_name(status: i32) -> String {
    AgentStatus::try_from(status)
        .map(|s| {
            s.as_str_name()
                .trim_start_matches("AGENT_STATUS_")
                .to_lowercase()
        })
        .unwrap_or_else(|_| format!("unknown-{status}"))
}
