//! `restart` (needs `--local`): load `--tasks` tasks, let every node apply them and settle
//! (a snapshot covering everything it applied: what a node left alone after a burst does by
//! itself), sample each node's resident memory, kill -9 one node (a follower by default),
//! start it again on its data dir and time how long until it answers at all and until it
//! serves a linearizable read. A follower serves one only after its own state machine has
//! caught up to the leader's read index, so the second figure is "recovered and serving".

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use percy_client::Consistency;
use serde::Serialize;

use super::local_cluster::{probe_client, LocalCluster};
use super::report::{fields_table, r3};
use super::{leader_of, setup, Env, Victim};

/// How long the restarted node may take to serve again before we give up.
const RECOVERY_TIMEOUT: Duration = Duration::from_secs(300);
/// How long the followers may take to apply the loaded tasks.
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(600);
/// How long the nodes may take to snapshot what they applied once the load stopped.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(300);
/// How long after the snapshots the memory is sampled. The figure is meant to be what a node
/// keeps, not the snapshot's transient buffers, and the allocator (mimalloc 3) hands freed
/// pages back only on a later purge: in an idle node that came ~10 s after the snapshot,
/// when the blocking thread that wrote it exited (tokio retires idle blocking threads after
/// 10 s). The first sample after the snapshots is reported too (`rss_peak_bytes_per_task`).
const ALLOCATOR_SETTLE: Duration = Duration::from_secs(15);
/// Pause between probes.
const PROBE_INTERVAL: Duration = Duration::from_millis(20);
/// Clients used to submit the tasks.
const LOAD_CLIENTS: usize = 8;

#[derive(Debug, Serialize)]
pub struct RestartReport {
    pub workload: &'static str,
    pub tasks: usize,
    pub load_s: f64,
    pub load_tasks_per_s: f64,
    pub victim: u64,
    pub victim_was_leader: bool,
    pub victim_data_dir_bytes: u64,
    /// How long after the last node applied the load every node had a snapshot of it.
    pub settle_s: f64,
    /// Resident memory each node (by id) grew by from before the load to after it settled
    /// (see `settle_s`, then `allocator_settle_s`), per task: the state's cost per task plus
    /// what the process keeps besides (Linux `/proc/<pid>/status` VmRSS; absent elsewhere).
    pub rss_bytes_per_task: Vec<Option<f64>>,
    /// The same right after the snapshots, before the allocator returned their buffers.
    pub rss_peak_bytes_per_task: Vec<Option<f64>>,
    /// How long after the snapshots `rss_bytes_per_task` was sampled.
    pub allocator_settle_s: f64,
    pub applied_index_before_kill: u64,
    pub restart_to_first_answer_ms: f64,
    pub restart_to_linearizable_read_ms: f64,
    pub applied_index_when_serving: u64,
    pub target_ms: f64,
    pub target_met: bool,
    pub server_version: String,
    pub tag: String,
}

/// The target: a node holding 1,000,000 tasks serves again within 1 s.
const TARGET: Duration = Duration::from_secs(1);

impl RestartReport {
    /// The report as a two-column table: its JSON fields, one per row.
    pub fn table(&self) -> Result<String> {
        fields_table(self)
    }
}

pub async fn run(env: &Env, cluster: &mut LocalCluster) -> Result<RestartReport> {
    let clients = env.clients(LOAD_CLIENTS).await?;
    let node_ids: Vec<u64> = (1..=cluster.endpoints().len() as u64).collect();
    let rss_before: Vec<Option<u64>> = node_ids.iter().map(|id| node_rss(cluster, *id)).collect();
    let t_load = Instant::now();
    let submitted = setup::submit_tasks(env, &clients, env.args.tasks, &[]).await?;
    let load_s = t_load.elapsed().as_secs_f64();
    let probe = submitted
        .ids
        .first()
        .cloned()
        .ok_or_else(|| anyhow!("--tasks must be at least 1"))?;
    env.progress
        .say("restart: waiting for every node to apply the tasks".into());
    let (leader, _) = leader_of(&env.endpoints).await?;
    let applied = wait_all_applied(env, cluster).await?;
    env.progress
        .say("restart: waiting for every node to snapshot them".into());
    let t_settle = Instant::now();
    wait_all_snapshotted(cluster, applied).await?;
    let settle_s = t_settle.elapsed().as_secs_f64();
    let tasks = submitted.ids.len().max(1) as f64;
    let rss_per_task = |cluster: &LocalCluster| -> Vec<Option<f64>> {
        node_ids
            .iter()
            .zip(&rss_before)
            .map(|(id, before)| {
                let grown = node_rss(cluster, *id)?.saturating_sub((*before)?);
                Some(r3(grown as f64 / tasks))
            })
            .collect()
    };
    let rss_peak_bytes_per_task = rss_per_task(cluster);
    env.progress.say(format!(
        "restart: waiting {ALLOCATOR_SETTLE:?} for the allocators to return the snapshots' buffers"
    ));
    tokio::time::sleep(ALLOCATOR_SETTLE).await;
    cluster.check_alive()?;
    let rss_bytes_per_task = rss_per_task(cluster);
    let victim = match env.args.kill {
        Victim::Leader => leader,
        Victim::Follower => env
            .endpoints
            .iter()
            .enumerate()
            .map(|(i, _)| i as u64 + 1)
            .find(|id| *id != leader)
            .ok_or_else(|| anyhow!("no follower to kill (a single node?)"))?,
    };
    let endpoint = cluster.endpoint(victim)?;
    let before = probe_client(&endpoint)
        .await?
        .cluster_status(Consistency::Serializable)
        .await?
        .applied_index;
    let data_bytes = dir_size(&cluster.data_dir(victim)?);
    env.progress
        .say(format!("restart: kill -9 node {victim}, starting it again"));
    cluster.kill9(victim)?;
    let t0 = Instant::now();
    cluster.spawn(victim)?;
    let client = probe_client(&endpoint).await?;
    let deadline = t0 + RECOVERY_TIMEOUT;
    let first_answer = loop {
        if client
            .cluster_status(Consistency::Serializable)
            .await
            .is_ok()
        {
            break t0.elapsed();
        }
        cluster.check_alive()?;
        if Instant::now() >= deadline {
            bail!("node {victim} did not answer within {RECOVERY_TIMEOUT:?}");
        }
        tokio::time::sleep(PROBE_INTERVAL).await;
    };
    let serving = loop {
        if client
            .get_task(&probe, Consistency::Linearizable)
            .await
            .is_ok()
        {
            break t0.elapsed();
        }
        cluster.check_alive()?;
        if Instant::now() >= deadline {
            bail!("node {victim} did not serve a linearizable read within {RECOVERY_TIMEOUT:?}");
        }
        tokio::time::sleep(PROBE_INTERVAL).await;
    };
    let applied_now = client
        .cluster_status(Consistency::Serializable)
        .await
        .map(|s| s.applied_index)
        .unwrap_or(0);
    let ms = |d: Duration| r3(d.as_secs_f64() * 1000.0);
    Ok(RestartReport {
        workload: "restart",
        tasks: submitted.ids.len(),
        load_s: r3(load_s),
        load_tasks_per_s: r3(submitted.ids.len() as f64 / load_s.max(f64::MIN_POSITIVE)),
        victim,
        victim_was_leader: victim == leader,
        victim_data_dir_bytes: data_bytes,
        settle_s: r3(settle_s),
        rss_bytes_per_task,
        rss_peak_bytes_per_task,
        allocator_settle_s: ALLOCATOR_SETTLE.as_secs_f64(),
        applied_index_before_kill: before,
        restart_to_first_answer_ms: ms(first_answer),
        restart_to_linearizable_read_ms: ms(serving),
        applied_index_when_serving: applied_now,
        target_ms: ms(TARGET),
        target_met: serving <= TARGET,
        server_version: env.server_version.clone(),
        tag: env.args.tag.clone(),
    })
}

/// Waits until every node has applied what the leader has committed now, and returns that
/// log index.
async fn wait_all_applied(env: &Env, cluster: &LocalCluster) -> Result<u64> {
    let (_, leader_addr) = leader_of(&env.endpoints).await?;
    let target = probe_client(&leader_addr)
        .await?
        .cluster_status(Consistency::Serializable)
        .await
        .context("status of the leader")?
        .commit_index;
    let deadline = Instant::now() + CATCH_UP_TIMEOUT;
    for endpoint in cluster.endpoints() {
        let client = probe_client(&endpoint).await?;
        loop {
            if let Ok(status) = client.cluster_status(Consistency::Serializable).await {
                if status.applied_index >= target {
                    break;
                }
            }
            if Instant::now() >= deadline {
                bail!("{endpoint} did not apply index {target} within {CATCH_UP_TIMEOUT:?}");
            }
            tokio::time::sleep(PROBE_INTERVAL).await;
        }
    }
    Ok(target)
}

/// Waits until every node's latest snapshot covers log index `index` (its
/// `percy_raft_snapshot_index` on `/metrics`).
async fn wait_all_snapshotted(cluster: &mut LocalCluster, index: u64) -> Result<()> {
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    for endpoint in cluster.endpoints() {
        loop {
            let snapshot = metric(&endpoint, "percy_raft_snapshot_index").await?;
            if snapshot >= index as f64 {
                break;
            }
            cluster.check_alive()?;
            if Instant::now() >= deadline {
                bail!(
                    "{endpoint} did not snapshot index {index} within {SETTLE_TIMEOUT:?} \
                     (its snapshot is at {snapshot})"
                );
            }
            tokio::time::sleep(PROBE_INTERVAL * 5).await;
        }
    }
    Ok(())
}

/// One gauge of a node's Prometheus text at `/metrics` (plain HTTP/1.1 on the node's port).
async fn metric(endpoint: &str, name: &str) -> Result<f64> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(endpoint)
        .await
        .with_context(|| format!("connect to {endpoint} for /metrics"))?;
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: percy\r\nConnection: close\r\n\r\n")
        .await
        .context("send GET /metrics")?;
    let mut body = String::new();
    stream
        .read_to_string(&mut body)
        .await
        .context("read /metrics")?;
    body.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .ok_or_else(|| anyhow!("{endpoint}'s /metrics has no {name}"))
}

/// Node `id`'s resident set size in bytes, where the OS says (Linux).
fn node_rss(cluster: &LocalCluster, id: u64) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{}/status", cluster.pid(id)?)).ok()?;
    let kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))?
        .trim()
        .strip_suffix("kB")?
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}

fn dir_size(path: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(path) else {
        return 0;
    };
    entries
        .filter_map(|e| e.ok())
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_size(&e.path()),
            _ => e.metadata().map(|m| m.len()).unwrap_or(0),
        })
        .sum()
}
