//! The register workload: concurrent read / write / compare-and-set on a few config keys.
//! Each key sees a bounded number of operations before the workers move on to fresh keys, so
//! every key's history stays small enough for an exhaustive linearizability search.
//!
//! Whenever the nemesis starts killed nodes again, restart readers read the most recently
//! written keys from each of those nodes, polling until the node answers: the first reads a
//! restarted node serves are the ones a leader restored with a stale commit index gets wrong,
//! and a worker, busy backing off from the crash, rarely issues them.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Result;
use percy_client::{Client, Consistency, RetryPolicy};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::think;
use crate::checker::{register, Verdict};
use crate::history::History;
use crate::run::{Env, Outcome, Workload, OP_TIMEOUT};

/// Keys in use at any time.
const KEYS: u64 = 3;
/// Operations per key before moving on to fresh keys.
const OPS_PER_KEY: u64 = 120;
/// Keys a restart reader reads: the most recently written ones, i.e. those in use.
const RESTART_READ_KEYS: usize = KEYS as usize;
/// Reads of each key by each restart reader: the first ones race the node's start, the later
/// ones its first moments as leader or follower.
const RESTART_READ_ROUNDS: u32 = 3;
/// A restart reader's retry pauses: it polls a starting node, so it must not back off to the
/// client's usual second and miss the node's first moments.
const RESTART_READ_BACKOFF: (Duration, Duration) =
    (Duration::from_millis(5), Duration::from_millis(25));
/// Process ids of restart readers start here, far above the workers'.
const RESTART_READER_PROCESSES: u64 = 1_000;

/// Set to `serializable` to read from the local replica without a barrier: a deliberately
/// broken client, to check that the suite catches stale reads.
pub const ENV_READS: &str = "PERCY_REGISTER_READS";

/// See the module docs.
pub struct RegisterWorkload {
    started: AtomicU64,
    consistency: Consistency,
    /// Keys with an acknowledged write, most recent last, each once.
    written: Mutex<VecDeque<String>>,
    /// The next restart reader's process id.
    next_restart_reader: AtomicU64,
}

impl Default for RegisterWorkload {
    fn default() -> Self {
        let consistency = match std::env::var(ENV_READS).as_deref() {
            Ok("serializable") => Consistency::Serializable,
            _ => Consistency::Linearizable,
        };
        RegisterWorkload {
            started: AtomicU64::new(0),
            consistency,
            written: Mutex::new(VecDeque::new()),
            next_restart_reader: AtomicU64::new(RESTART_READER_PROCESSES),
        }
    }
}

impl RegisterWorkload {
    /// Reads `key` as `process` and records it.
    async fn read(&self, env: &Env, client: &Client, process: u64, key: &str) -> Outcome<u64> {
        let outcome = env
            .call(
                process,
                key,
                "read",
                json!({}),
                client.get_config(key, self.consistency),
                |response| match &response.entry {
                    Some(entry) => json!({
                        "value": String::from_utf8_lossy(&entry.value),
                        "revision": entry.revision,
                    }),
                    None => json!({"value": null, "revision": 0}),
                },
            )
            .await;
        match outcome {
            Outcome::Ok(response) => Outcome::Ok(response.entry.map_or(0, |entry| entry.revision)),
            Outcome::Fail(error) => Outcome::Fail(error),
            Outcome::Info => Outcome::Info,
        }
    }

    /// Notes an acknowledged write of `key`.
    fn acknowledged(&self, key: &str) {
        let mut written = self.written.lock().unwrap_or_else(|e| e.into_inner());
        written.retain(|k| k != key);
        written.push_back(key.to_owned());
        while written.len() > RESTART_READ_KEYS {
            written.pop_front();
        }
    }

    /// One restart reader: reads `key` from the node at `addr` alone, first as soon as the
    /// node answers.
    async fn read_after_restart(
        self: Arc<Self>,
        env: Arc<Env>,
        addr: String,
        key: String,
    ) -> Result<()> {
        let process = self.next_restart_reader.fetch_add(1, Ordering::Relaxed);
        let retry = RetryPolicy {
            initial_backoff: RESTART_READ_BACKOFF.0,
            max_backoff: RESTART_READ_BACKOFF.1,
            ..RetryPolicy::default().with_deadline(OP_TIMEOUT)
        };
        let client = env.connect(&[addr], retry).await?;
        for _ in 0..RESTART_READ_ROUNDS {
            self.read(&env, &client, process, &key).await;
        }
        Ok(())
    }
}

impl Workload for RegisterWorkload {
    fn name(&self) -> &'static str {
        "register"
    }

    async fn setup(self: Arc<Self>, _env: Arc<Env>) -> Result<()> {
        Ok(())
    }

    async fn worker(
        self: Arc<Self>,
        env: Arc<Env>,
        process: u64,
        stop: watch::Receiver<bool>,
    ) -> Result<()> {
        let client = env.client_for(process).await?;
        let mut rng = StdRng::seed_from_u64(env.seed ^ process);
        // The last revision this worker saw per key, for its CAS.
        let mut known: HashMap<String, u64> = HashMap::new();
        let mut written = 0u64;
        while !*stop.borrow() {
            let n = self.started.fetch_add(1, Ordering::Relaxed);
            let generation = n / (KEYS * OPS_PER_KEY);
            let key = format!("reg/{generation}/{}", rng.gen_range(0..KEYS));
            let roll: f64 = rng.gen();
            if roll < 0.5 {
                if let Outcome::Ok(revision) = self.read(&env, &client, process, &key).await {
                    known.insert(key, revision);
                }
            } else {
                written += 1;
                let value = format!("p{process}-{written}");
                let expected = (roll >= 0.75).then(|| known.get(&key).copied().unwrap_or(0));
                let (name, input) = match expected {
                    Some(expected) => (
                        "cas",
                        json!({"value": value, "expected_revision": expected}),
                    ),
                    None => ("write", json!({"value": value})),
                };
                let outcome = env
                    .call(
                        process,
                        &key,
                        name,
                        input,
                        client.put_config(&key, value.clone().into_bytes(), expected),
                        |response| json!({"revision": response.entry.as_ref().map(|e| e.revision)}),
                    )
                    .await;
                if let Outcome::Ok(response) = outcome {
                    self.acknowledged(&key);
                    if let Some(entry) = response.entry {
                        known.insert(key, entry.revision);
                    }
                }
            }
            think(&mut rng).await;
        }
        Ok(())
    }

    /// Every key recently written, read from every restarted node by a reader of its own, all
    /// at once.
    async fn after_restart(self: Arc<Self>, env: Arc<Env>, nodes: Vec<u64>) -> Result<()> {
        let keys: Vec<String> = self
            .written
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .cloned()
            .collect();
        let mut readers = JoinSet::new();
        for (_, addr) in env.nodes.iter().filter(|(id, _)| nodes.contains(id)) {
            for key in &keys {
                let reader = Arc::clone(&self).read_after_restart(
                    Arc::clone(&env),
                    addr.clone(),
                    key.clone(),
                );
                readers.spawn(reader);
            }
        }
        while let Some(done) = readers.join_next().await {
            done??;
        }
        Ok(())
    }

    async fn finish(self: Arc<Self>, _env: Arc<Env>) -> Result<()> {
        Ok(())
    }

    fn check(&self, history: &History) -> Vec<Verdict> {
        vec![register::check(history, register::DEFAULT_STEP_BUDGET)]
    }
}
