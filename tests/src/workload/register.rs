//! The register workload: concurrent read / write / compare-and-set on a few config keys.
//! Each key sees a bounded number of operations before the workers move on to fresh keys, so
//! every key's history stays small enough for an exhaustive linearizability search.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use anyhow::Result;
use percy_client::Consistency;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;
use tokio::sync::watch;

use super::think;
use crate::checker::{register, Verdict};
use crate::history::History;
use crate::run::{Env, Outcome, Workload};

/// Keys in use at any time.
const KEYS: u64 = 3;
/// Operations per key before moving on to fresh keys.
const OPS_PER_KEY: u64 = 120;

/// Set to `serializable` to read from the local replica without a barrier: a deliberately
/// broken client, to check that the suite catches stale reads.
pub const ENV_READS: &str = "PERCY_REGISTER_READS";

/// See the module docs.
pub struct RegisterWorkload {
    started: AtomicU64,
    consistency: Consistency,
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
        }
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
                let outcome = env
                    .call(
                        process,
                        &key,
                        "read",
                        json!({}),
                        client.get_config(&key, self.consistency),
                        |response| match &response.entry {
                            Some(entry) => json!({
                                "value": String::from_utf8_lossy(&entry.value),
                                "revision": entry.revision,
                            }),
                            None => json!({"value": null, "revision": 0}),
                        },
                    )
                    .await;
                if let Outcome::Ok(response) = outcome {
                    let revision = response.entry.map_or(0, |entry| entry.revision);
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
                    if let Some(entry) = response.entry {
                        known.insert(key, entry.revision);
                    }
                }
            }
            think(&mut rng).await;
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
