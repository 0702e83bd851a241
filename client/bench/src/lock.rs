//! `lock`: C clients contend for one lock path. A cycle is acquire (queue and wait) →
//! read the counter (linearizable) → write counter+1 *without* CAS → release, so any failure of
//! mutual exclusion shows up as a lost update (as in the anchor's etcd-lock). Latency is the
//! acquire; `cycle_p*_ms` is the whole cycle.

use std::collections::HashSet;
use std::time::Instant;

use anyhow::{Context, Result};
use percy_client::{Client, Consistency, LockRequest};
use serde_json::{json, Map};

use super::report::Outcome;
use super::setup::{register_agent, BENCH_AGENT_TTL};
use super::Env;

pub async fn run(env: &Env) -> Result<Outcome> {
    let c = env.args.clients();
    let clients = env.clients(c).await?;
    let path = format!("bench/{}/lock/mutex", env.run_id);
    let counter = format!("bench/{}/lock/counter", env.run_id);
    clients[0]
        .put_config(&counter, b"0".to_vec(), None)
        .await
        .context("create the counter")?;
    let mut agents = Vec::with_capacity(c);
    for (i, client) in clients.iter().enumerate() {
        let name = format!("b{}-l{i}", env.run_id);
        agents.push(register_agent(client, name, 1, BENCH_AGENT_TTL).await?);
    }
    let w = env.window();
    let wait = env.args.lock_wait;
    let mut handles = Vec::with_capacity(c);
    for (client, agent) in clients.iter().cloned().zip(agents) {
        let mut stats = env.stats()?;
        let path = path.clone();
        let counter = counter.clone();
        handles.push(tokio::spawn(async move {
            let mut increments = 0u64;
            let mut tokens = Vec::new();
            let request = LockRequest {
                wait: Some(wait),
                ..LockRequest::exclusive(agent, vec![path.clone()])
            };
            while !w.done() {
                let t_cycle = Instant::now();
                let acquired = client.acquire_locks(&request).await;
                let t_acq = Instant::now();
                match acquired {
                    Ok(r) => tokens.extend(r.grants.iter().map(|g| g.fencing_token)),
                    Err(e) => {
                        stats.error(&w, t_acq, e);
                        continue;
                    }
                }
                let incremented = increment(&client, &counter).await;
                if incremented.is_ok() {
                    increments += 1;
                }
                let released = client
                    .release_locks(agent, std::slice::from_ref(&path))
                    .await;
                let t_end = Instant::now();
                match (incremented, released) {
                    (Ok(()), Ok(_)) => {
                        stats.ok(&w, t_cycle, t_acq);
                        stats.secondary(&w, t_cycle, t_end);
                    }
                    (Err(e), _) => stats.error(&w, t_end, format!("{e:#}")),
                    (_, Err(e)) => stats.error(&w, t_end, e),
                }
            }
            (stats, increments, tokens)
        }));
    }
    let cpu = env.cpu_over_window(w).await;
    let mut all = Vec::with_capacity(c);
    let mut increments = 0u64;
    let mut tokens = Vec::new();
    for handle in handles {
        let (stats, n, t) = handle.await?;
        all.push(stats);
        increments += n;
        tokens.extend(t);
    }
    let final_counter = read_counter(&clients[0], &counter).await?;
    let grants = tokens.len();
    let distinct_tokens = tokens.iter().collect::<HashSet<_>>().len();
    let ok = final_counter == increments && distinct_tokens == grants;
    let mut extra = Map::new();
    extra.insert(
        "verify".into(),
        json!({
            "counter": final_counter, "increments": increments, "grants": grants,
            "distinct_fencing_tokens": distinct_tokens, "ok": ok,
        }),
    );
    Ok(env.outcome(all, cpu, extra))
}

/// Read-modify-write without CAS: only the lock protects it.
async fn increment(client: &Client, counter: &str) -> Result<()> {
    let value = read_counter(client, counter).await?;
    client
        .put_config(counter, (value + 1).to_string().into_bytes(), None)
        .await
        .context("write the counter")?;
    Ok(())
}

async fn read_counter(client: &Client, counter: &str) -> Result<u64> {
    let entry = client
        .get_config(counter, Consistency::Linearizable)
        .await
        .context("read the counter")?
        .entry;
    Ok(entry
        .and_then(|e| String::from_utf8(e.value).ok()?.parse().ok())
        .unwrap_or(0))
}
