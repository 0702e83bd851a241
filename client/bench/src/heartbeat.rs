//! `heartbeat`: `--agents` agents heartbeat at `--rate` Hz each, spread evenly over
//! `--connections` connections. Each agent beats the way a worker does: over its own
//! keep-alive stream (`--unary-heartbeats`: one unary `Heartbeat` call per beat), one beat at
//! a time. Reports heartbeats/s accepted, the Raft log entries written meanwhile (the leader's
//! last log index before and after the window: heartbeats should cost none) and the leader
//! process's CPU.

use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use futures::stream::FuturesUnordered;
use futures::{StreamExt, TryStreamExt};
use percy_client::{Client, Consistency, KeepAlive};
use serde_json::{json, Map};

use super::local_cluster::probe_client_with;
use super::report::{r3, Outcome};
use super::setup::register_agent;
use super::{leader_of_with, Env};

/// How often each connection releases the heartbeats that fell due.
const TICK: Duration = Duration::from_millis(10);
/// Heartbeats in flight per connection at most; beyond that (or when an agent's previous
/// beat is still unanswered) the generator falls behind and counts the heartbeats it could
/// not send.
const MAX_IN_FLIGHT: usize = 512;
/// Registrations in flight during setup.
const REGISTER_PARALLEL: usize = 64;
/// Progress line update interval during registration, in agents.
const REGISTER_PROGRESS_EVERY: usize = 1_000;

pub async fn run(env: &Env) -> Result<Outcome> {
    let conns = env.args.connections.max(1);
    let n = env.args.agents.max(1);
    let rate = env.args.rate;
    anyhow::ensure!(rate > 0.0, "--rate must be positive");
    let clients = env.clients(conns).await?;
    let ttl = env.args.agent_ttl;
    let run = env.run_id.clone();
    let mut registered = 0usize;
    let mut agents: Vec<u64> = Vec::with_capacity(n);
    let mut stream = futures::stream::iter(0..n)
        .map(|i| {
            let client = clients[i % conns].clone();
            let name = format!("b{run}-hb{i}");
            async move { register_agent(&client, name, 1, ttl).await }
        })
        .buffered(REGISTER_PARALLEL);
    while let Some(id) = stream.try_next().await? {
        agents.push(id);
        registered += 1;
        if registered.is_multiple_of(REGISTER_PROGRESS_EVERY) {
            env.progress
                .say(format!("heartbeat: registered {registered} / {n} agents"));
        }
    }
    drop(stream);

    let (leader_id, leader_addr) = leader_of_with(&env.endpoints, &env.security).await?;
    let leader = probe_client_with(&leader_addr, &env.security).await?;
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
                        record(&mut stats, &w, t0, t1, result);
                    }
                }
            }
            while let Some((_, _, (t0, t1, result))) = in_flight.next().await {
                record(&mut stats, &w, t0, t1, result);
            }
            (stats, behind)
        }));
    }
    let (index_before, cpu, index_after) = {
        tokio::time::sleep_until(w.measure_start.into()).await;
        let before = last_log_index(&leader).await?;
        let cpu = env.cpu_over_window(w).await;
        let after = last_log_index(&leader).await?;
        (before, cpu, after)
    };
    let mut all = Vec::with_capacity(conns);
    let mut behind = 0u64;
    for handle in handles {
        let (stats, b) = handle.await?;
        all.push(stats);
        behind += b;
    }
    let accepted: u64 = all.iter().map(|s| s.ok).sum();
    let entries = index_after.saturating_sub(index_before);
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
        json!(r3(entries as f64 / cpu.wall_s.max(f64::MIN_POSITIVE))),
    );
    extra.insert(
        "raft_entries_per_heartbeat".into(),
        json!(if accepted > 0 {
            entries as f64 / accepted as f64
        } else {
            0.0
        }),
    );
    extra.insert("leader_id".into(), json!(leader_id));
    if env.leader_pid.is_some() {
        extra.insert(
            "leader_cpu_pct_of_one_core".into(),
            json!(r3(100.0 * cpu.leader_s / cpu.wall_s.max(f64::MIN_POSITIVE))),
        );
    }
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

async fn last_log_index(leader: &Client) -> Result<u64> {
    let status = leader
        .cluster_status(Consistency::Serializable)
        .await
        .context("status of the leader")?;
    if status.leader_id != status.node_id {
        return Err(anyhow!(
            "node {} is no longer the leader (leader {})",
            status.node_id,
            status.leader_id
        ));
    }
    Ok(status.last_log_index)
}
