//! `cas`: each client compare-and-sets its own config key, expecting the revision of its last
//! acknowledged write (uncontended CAS, like the anchor's etcd-cas / nats-cas).

use std::time::Instant;

use anyhow::{anyhow, Context, Result};
use percy_client::Consistency;
use serde_json::{json, Map};
use tonic::Code;

use super::report::Outcome;
use super::Env;

/// A value of `size` bytes that names the writer and the write.
pub fn value_of(size: usize, client: usize, n: u64) -> Vec<u8> {
    let mut v = format!("c{client}-n{n}-").into_bytes();
    v.resize(size.max(v.len()), b'x');
    v
}

pub async fn run(env: &Env) -> Result<Outcome> {
    let c = env.args.clients();
    let size = env.args.value_size;
    let clients = env.clients(c).await?;
    let mut setup = Vec::with_capacity(c);
    for (i, client) in clients.into_iter().enumerate() {
        let key = format!("bench/{}/cas/{i:05}", env.run_id);
        let put = client
            .put_config(&key, value_of(size, i, 0), None)
            .await
            .with_context(|| format!("create {key}"))?;
        let revision = put
            .entry
            .map(|e| e.revision)
            .ok_or_else(|| anyhow!("put {key}: no entry in the answer"))?;
        setup.push((client, key, revision));
    }
    let w = env.window();
    let mut handles = Vec::with_capacity(c);
    for (i, (client, key, revision)) in setup.into_iter().enumerate() {
        let mut stats = env.stats()?;
        handles.push(tokio::spawn(async move {
            let mut last = revision;
            let mut n = 0u64;
            while !w.done() {
                n += 1;
                let t0 = Instant::now();
                let result = client
                    .put_config(&key, value_of(size, i, n), Some(last))
                    .await;
                let t1 = Instant::now();
                match result {
                    Ok(put) => match put.entry {
                        Some(entry) => {
                            last = entry.revision;
                            stats.ok(&w, t0, t1);
                        }
                        None => stats.error(&w, t1, "put answered without an entry"),
                    },
                    Err(e) if e.code() == Code::FailedPrecondition => {
                        stats.failed(&w, t0, t1);
                        if let Ok(Some(entry)) = client
                            .get_config(&key, Consistency::Linearizable)
                            .await
                            .map(|g| g.entry)
                        {
                            last = entry.revision;
                        }
                    }
                    Err(e) => stats.error(&w, t1, e),
                }
            }
            (stats, client, key, last)
        }));
    }
    let cpu = env.cpu_over_window(w).await;
    let mut all = Vec::with_capacity(c);
    let mut bad = 0u64;
    for handle in handles {
        let (stats, client, key, last) = handle.await?;
        // The key's revision is the last one acknowledged, and its version counts the
        // creation plus every successful CAS.
        let entry = client
            .get_config(&key, Consistency::Linearizable)
            .await
            .with_context(|| format!("verify {key}"))?
            .entry;
        match entry {
            Some(e) if e.revision == last && e.version == 1 + stats.all_ok => {}
            _ => bad += 1,
        }
        all.push(stats);
    }
    let mut extra = Map::new();
    extra.insert(
        "verify".into(),
        json!({"keys_with_unexpected_version_or_revision": bad, "ok": bad == 0}),
    );
    Ok(env.outcome(all, cpu, extra))
}
