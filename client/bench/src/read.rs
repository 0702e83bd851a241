//! `read`: reads of random config keys out of `--read-keys`; linearizable (a read-index
//! barrier on the leader) unless percyctl's `--serializable` is given.

use std::time::Instant;

use anyhow::{Context, Result};
use futures::{StreamExt, TryStreamExt};
use percy_client::Consistency;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Map};

use super::cas::value_of;
use super::report::Outcome;
use super::Env;

const SEED_STRIDE: u64 = 7_919;

pub async fn run(env: &Env) -> Result<Outcome> {
    let c = env.args.clients();
    let n = env.args.read_keys.max(1);
    let clients = env.clients(c).await?;
    let prefix = format!("bench/{}/read/", env.run_id);
    let size = env.args.value_size;
    env.progress.say(format!("read: writing {n} keys"));
    futures::stream::iter(0..n)
        .map(|i| {
            let client = clients[i % clients.len()].clone();
            let key = format!("{prefix}k{i:07}");
            async move {
                client
                    .put_config(&key, value_of(size, 0, i as u64), None)
                    .await
                    .with_context(|| format!("write {key}"))
            }
        })
        .buffer_unordered(env.args.setup_parallel.max(1) * 8)
        .try_collect::<Vec<_>>()
        .await?;
    let consistency = env.consistency;
    let w = env.window();
    let seed = env.seed();
    let mut handles = Vec::with_capacity(c);
    for (i, client) in clients.into_iter().enumerate() {
        let mut stats = env.stats()?;
        let prefix = prefix.clone();
        handles.push(tokio::spawn(async move {
            let mut rng = StdRng::seed_from_u64(seed.wrapping_add(i as u64 * SEED_STRIDE));
            while !w.done() {
                let key = format!("{prefix}k{:07}", rng.gen_range(0..n));
                let t0 = Instant::now();
                let result = client.get_config(&key, consistency).await;
                let t1 = Instant::now();
                match result {
                    Ok(r) if r.entry.is_some() => stats.ok(&w, t0, t1),
                    Ok(_) => stats.failed(&w, t0, t1),
                    Err(e) => stats.error(&w, t1, e),
                }
            }
            stats
        }));
    }
    let cpu = env.cpu_over_window(w).await;
    let mut all = Vec::with_capacity(c);
    for handle in handles {
        all.push(handle.await?);
    }
    let mut extra = Map::new();
    extra.insert(
        "consistency".into(),
        json!(match consistency {
            Consistency::Linearizable => "linearizable",
            Consistency::Serializable => "serializable",
        }),
    );
    extra.insert("read_keys".into(), json!(n));
    Ok(env.outcome(all, cpu, extra))
}
