//! `heartbeat`: `--agents` agents heartbeat at `--rate` Hz each, spread evenly over
//! `--connections` connections. Each agent beats the way a worker does: over its own
//! keep-alive stream (`--unary-heartbeats`: one unary `Heartbeat` call per beat), one beat at
//! a time. Reports heartbeats/s accepted, the Raft log entries written meanwhile, by kind, as
//! a node that stays up counts them (heartbeats should cost none: only the liveness
//! checkpoints every 30 s and a new leader's blank entry are expected) and the leader
//! process's CPU.
//!
//! `--leader-change-at T` (with `--local`): T into the window, the leader is killed with
//! SIGKILL; once the others have elected a new one it is started again. The leader's CPU is
//! then measured over the two parts of the window (old leader before, new leader after the
//! election; the election itself is left out). Afterwards every agent must still be active:
//! they all beat on time, so an expired one is a false expiry and fails the verification.

use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use futures::stream::FuturesUnordered;
use futures::{StreamExt, TryStreamExt};
use percy_client::proto::AgentStatus;
use percy_client::{Client, Consistency, KeepAlive};
use serde_json::{json, Map};

use super::local_cluster::{probe_client_with, LocalCluster};
use super::report::{r3, Outcome};
use super::setup::register_agent;
use super::stats::{CpuSample, CpuUsage, Window};
use super::{leader_of_with, node_metrics, Env};

/// How often each connection releases the heartbeats that fell due.
const TICK: Duration = Duration::from_millis(10);
/// Heartbeats in flight per connection at most; beyond that (or when an agent's previous
/// beat is still unanswered) the generator falls behind and counts the heartbeats it could
/// not send. (4,096 was tried for 100,000 agents on the 2-core box: answers queued for
/// seconds and fewer got through, 9,400/s against 38,000/s with 512.)
const MAX_IN_FLIGHT: usize = 512;
/// Registrations in flight during setup.
const REGISTER_PARALLEL: usize = 64;
/// Progress line update interval during registration, in agents.
const REGISTER_PROGRESS_EVERY: usize = 1_000;
/// How long the surviving nodes may take to elect a new leader after the kill.
const ELECTION_TIMEOUT: Duration = Duration::from_secs(60);
/// Pause between polls for the new leader.
const ELECTION_POLL: Duration = Duration::from_millis(50);
/// The metric with the entries a node applied, by kind (`percyd`'s `/metrics`).
const APPLIED_ENTRIES_METRIC: &str = "percy_raft_applied_entries_total";
/// Entry kinds of [`APPLIED_ENTRIES_METRIC`], as percyd labels them.
const ENTRY_KINDS: [&str; 5] = ["blank", "membership", "checkpoint", "expiry", "other"];

pub async fn run(env: &Env, mut cluster: Option<&mut LocalCluster>) -> Result<Outcome> {
    let conns = env.args.connections.max(1);
    let n = env.args.agents.max(1);
    let rate = env.args.rate;
    anyhow::ensure!(rate > 0.0, "--rate must be positive");
    let change_at = env.args.leader_change_at;
    if let Some(at) = change_at {
        anyhow::ensure!(
            cluster.is_some(),
            "--leader-change-at needs --local N (the benchmark kills and restarts the leader)"
        );
        anyhow::ensure!(
            at < env.args.duration,
            "--leader-change-at {at:?} is not inside the window (-d {:?})",
            env.args.duration
        );
    }
    let clients = env.clients(conns).await?;
    let ttl = env.args.agent_ttl;
    let run = env.run_id.clone();
    let mut registered = 0usize;
    let mut agents: Vec<u64> = Vec::with_capacity(n);
    // When each agent was registered: it counts as seen then, until its first beat.
    let mut registered_at: Vec<Instant> = Vec::with_capacity(n);
    let mut stream = futures::stream::iter(0..n)
        .map(|i| {
            let client = clients[i % conns].clone();
            let name = format!("b{run}-hb{i}");
            async move { register_agent(&client, name, 1, ttl).await }
        })
        .buffered(REGISTER_PARALLEL);
    while let Some(id) = stream.try_next().await? {
        agents.push(id);
        registered_at.push(Instant::now());
        registered += 1;
        if registered.is_multiple_of(REGISTER_PROGRESS_EVERY) {
            env.progress
                .say(format!("heartbeat: registered {registered} / {n} agents"));
        }
    }
    drop(stream);

    let (leader_id, leader_addr) = leader_of_with(&env.endpoints, &env.security).await?;
    let w = env.window();
    let per_conn_rate = rate * n as f64 / conns as f64;
    let mut handles = Vec::with_capacity(conns);
    let unary = env.args.unary_heartbeats;
    for (j, client) in clients.iter().enumerate() {
        // An agent is taken out of its slot while its beat is in flight.
        let mut mine: Vec<Option<Agent>> = agents
            .iter()
            .skip(j)
            .step_by(conns)
            .map(|&id| {
                Some(if unary {
                    Agent::Unary(client.clone(), id)
                } else {
                    Agent::Stream(Box::new(client.keep_alive(id)))
                })
            })
            .collect();
        // Per agent: the last answered beat (or the registration) and the longest silence
        // between two, as this client saw it.
        let mut last_ok: Vec<Instant> = registered_at
            .iter()
            .skip(j)
            .step_by(conns)
            .copied()
            .collect();
        let mut longest_gap = vec![Duration::ZERO; mine.len()];
        let mut stats = env.stats()?;
        handles.push(tokio::spawn(async move {
            let started = Instant::now();
            let mut sent = 0u64;
            let mut behind = 0u64;
            let mut next = 0usize;
            let mut in_flight = FuturesUnordered::new();
            let mut tick = tokio::time::interval(TICK);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            while !w.done() {
                tokio::select! {
                    _ = tick.tick() => {
                        let due = (started.elapsed().as_secs_f64() * per_conn_rate) as u64;
                        while sent < due {
                            sent += 1;
                            let slot = next % mine.len();
                            next += 1;
                            if in_flight.len() >= MAX_IN_FLIGHT {
                                behind += 1;
                                continue;
                            }
                            let Some(agent) = mine[slot].take() else {
                                behind += 1;
                                continue;
                            };
                            in_flight.push(beat(slot, agent));
                        }
                    }
                    Some((slot, agent, (t0, t1, result))) = in_flight.next(), if !in_flight.is_empty() => {
                        mine[slot] = Some(agent);
                        if matches!(result, Ok(true)) {
                            longest_gap[slot] = longest_gap[slot].max(t1 - last_ok[slot]);
                            last_ok[slot] = t1;
                        }
                        record(&mut stats, &w, t0, t1, result);
                    }
                }
            }
            while let Some((slot, _, (t0, t1, result))) = in_flight.next().await {
                if matches!(result, Ok(true)) {
                    longest_gap[slot] = longest_gap[slot].max(t1 - last_ok[slot]);
                    last_ok[slot] = t1;
                }
                record(&mut stats, &w, t0, t1, result);
            }
            let end = Instant::now();
            for (gap, last) in longest_gap.iter_mut().zip(&last_ok) {
                *gap = (*gap).max(end - *last);
            }
            (stats, behind, longest_gap)
        }));
    }
    // A node that is not killed counts the entries over the whole window, whoever leads.
    let witness = env
        .endpoints
        .iter()
        .find(|e| !super::same_addr(e, &leader_addr))
        .unwrap_or(&leader_addr)
        .clone();
    let witness_client = probe_client_with(&witness, &env.security).await?;
    let measured = async {
        tokio::time::sleep_until(w.measure_start.into()).await;
        let before = Counted::read(&witness_client, &witness).await?;
        let (cpu, change) = match (change_at, cluster.as_deref_mut()) {
            (Some(at), Some(cluster)) => {
                let (cpu, change) = window_with_leader_change(env, cluster, w, at).await?;
                (cpu, Some(change))
            }
            _ => (env.cpu_over_window(w).await, None),
        };
        let after = Counted::read(&witness_client, &witness).await?;
        Ok::<_, anyhow::Error>((before, cpu, change, after))
    };
    let (before, cpu, change, after) = measured.await?;
    let mut all = Vec::with_capacity(conns);
    let mut behind = 0u64;
    // Agent index → its longest silence (connection j has agents j, j + conns, …).
    let mut longest_gap = vec![Duration::ZERO; n];
    for (j, handle) in handles.into_iter().enumerate() {
        let (stats, b, gaps) = handle.await?;
        all.push(stats);
        behind += b;
        for (k, gap) in gaps.into_iter().enumerate() {
            if let Some(slot) = longest_gap.get_mut(j + k * conns) {
                *slot = gap;
            }
        }
    }
    let accepted: u64 = all.iter().map(|s| s.ok).sum();
    let must_reregister: u64 = all.iter().map(|s| s.all_failed).sum();
    let entries = after.last_log_index.saturating_sub(before.last_log_index);
    let mut extra = Map::new();
    extra.insert("agents".into(), json!(n));
    extra.insert("rate_hz".into(), json!(rate));
    extra.insert("connections".into(), json!(conns));
    extra.insert(
        "heartbeat_rpc".into(),
        json!(if unary { "unary" } else { "keep_alive" }),
    );
    extra.insert(
        "offered_heartbeats_per_s".into(),
        json!(r3(rate * n as f64)),
    );
    extra.insert("heartbeats_not_sent_generator_behind".into(), json!(behind));
    extra.insert("raft_entries".into(), json!(entries));
    extra.insert(
        "raft_entries_per_s".into(),
        json!(r3(entries as f64 / w.length().as_secs_f64())),
    );
    let per_heartbeat = |count: u64| {
        if accepted > 0 {
            count as f64 / accepted as f64
        } else {
            0.0
        }
    };
    extra.insert(
        "raft_entries_per_heartbeat_all_kinds".into(),
        json!(per_heartbeat(entries)),
    );
    match (&before.by_kind, &after.by_kind) {
        (Some(a), Some(b)) => {
            let by_kind: Map<String, serde_json::Value> = ENTRY_KINDS
                .iter()
                .map(|kind| {
                    let delta = b
                        .get(*kind)
                        .copied()
                        .unwrap_or(0)
                        .saturating_sub(a.get(*kind).copied().unwrap_or(0));
                    ((*kind).to_owned(), json!(delta))
                })
                .collect();
            let other = by_kind.get("other").and_then(|v| v.as_u64()).unwrap_or(0);
            // What the heartbeats cost: entries that are neither the periodic checkpoints nor
            // the leader change's (blank, membership) — client writes, and expiries.
            let expiry = by_kind.get("expiry").and_then(|v| v.as_u64()).unwrap_or(0);
            extra.insert(
                "raft_entries_per_heartbeat".into(),
                json!(per_heartbeat(other + expiry)),
            );
            extra.insert("raft_entries_by_kind".into(), json!(by_kind));
        }
        _ => {
            // An older percyd without the metric (or one not reachable over plain HTTP).
            extra.insert(
                "raft_entries_per_heartbeat".into(),
                json!(per_heartbeat(entries)),
            );
        }
    }
    extra.insert("entries_counted_by_node".into(), json!(witness));
    extra.insert("leader_id".into(), json!(leader_id));
    if env.leader_pid.is_some() {
        extra.insert(
            "leader_cpu_pct_of_one_core".into(),
            json!(r3(100.0 * cpu.leader_s / cpu.wall_s.max(f64::MIN_POSITIVE))),
        );
    }
    if let Some(change) = &change {
        extra.insert("leader_change".into(), change.json());
    }
    // An agent never silent longer than its TTL (between registration, answered beats and
    // the end) beat on time: if it is not active now, it was expired falsely. One that was
    // silent longer (the generator could not send its beats, or they failed) may rightly be.
    let on_time: Vec<bool> = longest_gap.iter().map(|gap| *gap <= ttl).collect();
    let not_active = agents_not_active(env, &leader_addr_after(env).await?, &agents).await?;
    let false_expiries = not_active.iter().filter(|i| on_time[**i]).count();
    let late = on_time.iter().filter(|ok| !**ok).count();
    extra.insert(
        "longest_agent_silence_s".into(),
        json!(r3(longest_gap
            .iter()
            .max()
            .copied()
            .unwrap_or_default()
            .as_secs_f64())),
    );
    extra.insert(
        "verify".into(),
        json!({
            "agents_not_active_at_end": not_active.len(),
            "agents_silent_longer_than_ttl": late,
            "false_expiries": false_expiries,
            "heartbeats_answered_must_reregister": must_reregister,
            "ok": false_expiries == 0,
        }),
    );
    Ok(env.outcome(all, cpu, extra))
}

type Beat = (Instant, Instant, Result<bool, String>);

/// One simulated agent and how it heartbeats.
enum Agent {
    Unary(Client, u64),
    Stream(Box<KeepAlive>),
}

/// One heartbeat of the agent in `slot`: Ok(true) when the agent is still active. Hands the
/// agent back for its next beat.
async fn beat(slot: usize, mut agent: Agent) -> (usize, Agent, Beat) {
    let t0 = Instant::now();
    let result = match &mut agent {
        Agent::Unary(client, id) => client.heartbeat(*id).await.map(|r| !r.must_reregister),
        Agent::Stream(keep_alive) => keep_alive.beat().await.map(|r| !r.must_reregister),
    }
    .map_err(|e| e.to_string());
    (slot, agent, (t0, Instant::now(), result))
}

fn record(
    stats: &mut super::stats::Stats,
    w: &super::stats::Window,
    t0: Instant,
    t1: Instant,
    result: Result<bool, String>,
) {
    match result {
        Ok(true) => stats.ok(w, t0, t1),
        Ok(false) => stats.failed(w, t0, t1),
        Err(e) => stats.error(w, t1, e),
    }
}

/// What a node has applied: its last log index and, when its `/metrics` has them, the entries
/// by kind.
struct Counted {
    last_log_index: u64,
    by_kind: Option<std::collections::HashMap<String, u64>>,
}

impl Counted {
    async fn read(client: &Client, endpoint: &str) -> Result<Counted> {
        let status = client
            .cluster_status(Consistency::Serializable)
            .await
            .with_context(|| format!("status of {endpoint}"))?;
        let by_kind = node_metrics(endpoint)
            .await
            .ok()
            .map(|text| labelled_counter(&text, APPLIED_ENTRIES_METRIC, "kind"))
            .filter(|counts| !counts.is_empty());
        Ok(Counted {
            last_log_index: status.last_log_index,
            by_kind,
        })
    }
}

/// Values of a counter with one label, `name{label="value"} 12`, by label value.
fn labelled_counter(text: &str, name: &str, label: &str) -> std::collections::HashMap<String, u64> {
    let prefix = format!("{name}{{{label}=\"");
    text.lines()
        .filter_map(|line| {
            let rest = line.strip_prefix(&prefix)?;
            let (value_of_label, rest) = rest.split_once('"')?;
            let count = rest.trim_start_matches('}').trim().parse::<f64>().ok()?;
            Some((value_of_label.to_owned(), count as u64))
        })
        .collect()
}

/// The leader change of a run.
struct LeaderChange {
    old_leader: u64,
    new_leader: u64,
    /// From the kill to a new leader every surviving node agrees on.
    election: Duration,
    old_leader_cpu_pct: f64,
    new_leader_cpu_pct: f64,
}

impl LeaderChange {
    fn json(&self) -> serde_json::Value {
        json!({
            "killed_leader": self.old_leader,
            "new_leader": self.new_leader,
            "election_s": r3(self.election.as_secs_f64()),
            "old_leader_cpu_pct_of_one_core": r3(self.old_leader_cpu_pct),
            "new_leader_cpu_pct_of_one_core": r3(self.new_leader_cpu_pct),
        })
    }
}

/// The window with the leader killed `at` into it and restarted once a new leader is elected.
/// CPU is counted before the kill (old leader) and after the election (new leader, restarted
/// node included), not during it.
async fn window_with_leader_change(
    env: &Env,
    cluster: &mut LocalCluster,
    w: Window,
    at: Duration,
) -> Result<(CpuUsage, LeaderChange)> {
    let ticker = env.progress.follow(env.args.workload.name(), w);
    let result = async {
        let (old_leader, _) = leader_of_with(&cluster.endpoints(), &env.security).await?;
        let pids = cluster.pids();
        let first_start = CpuSample::take(&pids, cluster.pid(old_leader));
        tokio::time::sleep_until((w.measure_start + at).into()).await;
        let first_end = CpuSample::take(&pids, cluster.pid(old_leader));
        let killed_at = Instant::now();
        cluster.kill9(old_leader)?;
        env.progress
            .say(format!("heartbeat: killed leader {old_leader}; electing"));
        let new_leader = new_leader(env, cluster, old_leader).await?;
        let election = killed_at.elapsed();
        cluster.spawn(old_leader)?;
        let pids = cluster.pids();
        let second_start = CpuSample::take(&pids, cluster.pid(new_leader));
        tokio::time::sleep_until(w.end.into()).await;
        let second_end = CpuSample::take(&pids, cluster.pid(new_leader));
        let first = CpuUsage::between(&first_start, &first_end);
        let second = CpuUsage::between(&second_start, &second_end);
        let pct = |u: &CpuUsage| 100.0 * u.leader_s / u.wall_s.max(f64::MIN_POSITIVE);
        let change = LeaderChange {
            old_leader,
            new_leader,
            election,
            old_leader_cpu_pct: pct(&first),
            new_leader_cpu_pct: pct(&second),
        };
        Ok((first.plus(&second), change))
    }
    .await;
    ticker.abort();
    result
}

/// Waits until the nodes other than `old` agree on a leader other than `old`.
async fn new_leader(env: &Env, cluster: &LocalCluster, old: u64) -> Result<u64> {
    let deadline = Instant::now() + ELECTION_TIMEOUT;
    let survivors: Vec<String> = cluster
        .endpoints()
        .into_iter()
        .filter(|e| {
            cluster
                .endpoint(old)
                .map_or(true, |o| !super::same_addr(e, &o))
        })
        .collect();
    loop {
        let mut agreed: Option<u64> = None;
        let mut all = true;
        for endpoint in &survivors {
            let status = match probe_client_with(endpoint, &env.security).await {
                Ok(client) => client.cluster_status(Consistency::Serializable).await.ok(),
                Err(_) => None,
            };
            match status {
                Some(s)
                    if s.leader_id != 0
                        && s.leader_id != old
                        && agreed.is_none_or(|l| l == s.leader_id) =>
                {
                    agreed = Some(s.leader_id);
                }
                _ => all = false,
            }
        }
        if let (true, Some(leader)) = (all, agreed) {
            return Ok(leader);
        }
        if Instant::now() >= deadline {
            return Err(anyhow!(
                "no new leader within {ELECTION_TIMEOUT:?} of killing leader {old}"
            ));
        }
        tokio::time::sleep(ELECTION_POLL).await;
    }
}

/// The leader's address now (after a leader change, the new one's).
async fn leader_addr_after(env: &Env) -> Result<String> {
    let deadline = Instant::now() + ELECTION_TIMEOUT;
    loop {
        match leader_of_with(&env.endpoints, &env.security).await {
            Ok((_, addr)) => return Ok(addr),
            Err(e) if Instant::now() >= deadline => return Err(e),
            Err(_) => tokio::time::sleep(ELECTION_POLL).await,
        }
    }
}

/// The indexes of the `agents` the registry does not hold as active (a linearizable listing).
async fn agents_not_active(env: &Env, leader: &str, agents: &[u64]) -> Result<Vec<usize>> {
    let client = env.client_for(leader).await?;
    let listed = client
        .list_agents(true, Consistency::Linearizable)
        .await
        .context("list the agents to verify them")?;
    let active: std::collections::HashSet<u64> = listed
        .agents
        .iter()
        .filter(|a| a.status == AgentStatus::Active as i32)
        .map(|a| a.id)
        .collect();
    Ok(agents
        .iter()
        .enumerate()
        .filter(|(_, id)| !active.contains(id))
        .map(|(i, _)| i)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_labelled_counter_is_read_by_label() {
        let text = "# HELP percy_x help\n# TYPE percy_x counter\n\
                    percy_x{kind=\"blank\"} 2\npercy_x{kind=\"other\"} 17\n\
                    percy_xy{kind=\"other\"} 5\n";
        let counts = labelled_counter(text, "percy_x", "kind");
        assert_eq!(counts.get("blank"), Some(&2));
        assert_eq!(counts.get("other"), Some(&17));
        assert_eq!(counts.len(), 2);
    }
}
