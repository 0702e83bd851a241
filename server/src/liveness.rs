//! Agent liveness without a Raft write per heartbeat (DESIGN.md §3, like etcd's leases).
//!
//! The leader keeps each active agent's last heartbeat in memory, on the monotonic clock. A
//! monitor task (running on every node, acting only while it leads) proposes `ExpireAgents` for
//! agents silent longer than their TTL, occasional `CheckpointAgents` with wall-clock last-seen
//! times, and `Tick` when the state machine says a deadline is due. Grace after failover: the
//! table is emptied whenever this node starts a new term as leader, and an agent missing from
//! it counts as seen *now*, so every agent gets a full TTL under each new leader.
//! Followers forward heartbeats to the leader (internal `Heartbeat` RPC).
//!
//! This module must not expire anyone while the node is not the leader, and never reads the
//! wall clock for expiry decisions (only for the checkpoint values and `Tick` timing).

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use openraft::ServerState;
use percy_proto::internal::RaftBytes;
use percy_statemachine::{AgentId, AgentStatus, Command, Op};
use tonic::{Request, Status};

use crate::context::NodeContext;
use crate::propose::{now_ms, propose_local, PROPOSE_TIMEOUT};
use crate::wire::{self, HeartbeatForward, HeartbeatReply};

/// How often the monitor looks at the table.
pub const MONITOR_INTERVAL: Duration = Duration::from_millis(200);
/// How often heartbeats seen since the last checkpoint are written to the log as `last_seen`.
pub const CHECKPOINT_INTERVAL: Duration = Duration::from_secs(30);
/// How long a follower waits for the leader to record a forwarded heartbeat.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(5);

/// The leader-local heartbeat table.
#[derive(Default)]
pub struct Liveness {
    table: Mutex<Table>,
}

#[derive(Default)]
struct Table {
    /// Term in which this node leads and the table is valid; `None` while not leading.
    term: Option<u64>,
    last_heartbeat: HashMap<AgentId, Instant>,
    /// Wall-clock time of the newest heartbeat per agent since the last checkpoint.
    unsaved: HashMap<AgentId, u64>,
    /// Agents whose expiry has been proposed and not yet applied.
    expiring: HashSet<AgentId>,
}

impl Liveness {
    fn with_table<R>(&self, f: impl FnOnce(&mut Table) -> R) -> R {
        // A poisoned lock only means a panic elsewhere mid-update; the table stays usable
        // (worst case an agent gets a fresh grace period).
        let mut table = self.table.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut table)
    }

    fn record(&self, agent_id: AgentId) {
        self.with_table(|t| {
            t.last_heartbeat.insert(agent_id, Instant::now());
            t.unsaved.insert(agent_id, now_ms());
        });
    }

    /// Number of agents tracked (for metrics).
    pub fn tracked(&self) -> usize {
        self.with_table(|t| t.last_heartbeat.len())
    }
}

/// Leader side of a heartbeat: record it and tell the agent what the state machine says.
pub fn record_on_leader(ctx: &NodeContext, agent_id: AgentId) -> HeartbeatReply {
    if !ctx.is_leader() {
        return HeartbeatReply::NotLeader {
            leader: ctx.leader(),
        };
    }
    let (status, ttl_ms) = ctx.state.read(|sm| {
        sm.agent(agent_id)
            .map(|a| (Some(a.status), a.ttl_ms))
            .unwrap_or((None, 0))
    });
    if matches!(status, Some(AgentStatus::Active)) {
        ctx.liveness.record(agent_id);
    }
    HeartbeatReply::Recorded { status, ttl_ms }
}

/// The public heartbeat: recorded on the leader, directly or through one forward.
/// Returns the leader's reply and whether it was forwarded.
pub async fn heartbeat(
    ctx: &NodeContext,
    agent_id: AgentId,
) -> Result<(Option<AgentStatus>, u64, bool), Status> {
    let deadline = tokio::time::Instant::now() + FORWARD_TIMEOUT;
    loop {
        let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
        let Some(leader) = ctx.wait_for_leader(remaining).await else {
            return Err(Status::unavailable(
                "no leader to record the heartbeat; retry",
            ));
        };
        let forwarded = leader != ctx.node_id;
        let reply = if forwarded {
            forward_heartbeat(ctx, leader, agent_id, remaining).await?
        } else {
            record_on_leader(ctx, agent_id)
        };
        match reply {
            HeartbeatReply::Recorded { status, ttl_ms } => return Ok((status, ttl_ms, forwarded)),
            HeartbeatReply::NotLeader { .. } => {
                if tokio::time::Instant::now() >= deadline {
                    return Err(Status::unavailable("leadership is moving; retry"));
                }
                tokio::time::sleep(MONITOR_INTERVAL / 4).await;
            }
        }
    }
}

async fn forward_heartbeat(
    ctx: &NodeContext,
    leader: u64,
    agent_id: AgentId,
    timeout: Duration,
) -> Result<HeartbeatReply, Status> {
    let addr = ctx
        .addr_of(leader)
        .ok_or_else(|| Status::unavailable(format!("leader {leader} has no address")))?;
    let mut client = ctx
        .peers
        .client(leader, &addr)
        .map_err(Status::unavailable)?;
    let data = wire::encode(&HeartbeatForward { agent_id })
        .map_err(|e| Status::internal(e.to_string()))?;
    let mut request = Request::new(RaftBytes { data });
    request.set_timeout(timeout);
    let reply = client.heartbeat(request).await.map_err(|s| {
        Status::unavailable(format!(
            "forwarding heartbeat to leader {leader}: {}",
            s.message()
        ))
    })?;
    wire::decode(&reply.into_inner().data).map_err(|e| Status::internal(e.to_string()))
}

/// Proposes a monitor command on this node only. Never forwarded: a node that just lost the
/// lead must not push its stale view of liveness through the new leader, whose agents are
/// still in their grace period.
async fn propose_as_leader(ctx: &NodeContext, op: Op) -> Result<(), String> {
    let deadline = tokio::time::Instant::now() + PROPOSE_TIMEOUT;
    match propose_local(ctx, Command::new(op), deadline).await {
        Ok(applied) => applied.response.map(|_| ()).map_err(|e| e.message),
        Err(e) => Err(format!("{e:?}")),
    }
}

/// Runs the monitor until `shutdown` fires.
pub async fn run_monitor(
    ctx: std::sync::Arc<NodeContext>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let mut interval = tokio::time::interval(MONITOR_INTERVAL);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_checkpoint = Instant::now();
    loop {
        tokio::select! {
            _ = interval.tick() => {}
            _ = shutdown.changed() => return,
        }
        if !lead_term(&ctx) {
            continue;
        }
        expire_silent(&ctx).await;
        if last_checkpoint.elapsed() >= CHECKPOINT_INTERVAL {
            last_checkpoint = Instant::now();
            checkpoint(&ctx).await;
        }
        tick_if_due(&ctx).await;
    }
}

/// Whether this node leads; resets the table (starting everyone's grace) on a new term.
fn lead_term(ctx: &NodeContext) -> bool {
    let (state, term) = {
        let m = ctx.raft.metrics();
        let m = m.borrow();
        (m.state, m.current_term)
    };
    ctx.liveness.with_table(|t| {
        if state != ServerState::Leader {
            if t.term.take().is_some() {
                *t = Table::default();
            }
            return false;
        }
        if t.term != Some(term) {
            tracing::info!(term, "leading: every agent gets a full TTL of grace");
            *t = Table {
                term: Some(term),
                ..Table::default()
            };
        }
        true
    })
}

async fn expire_silent(ctx: &NodeContext) {
    let active: Vec<(AgentId, u64)> = ctx.state.read(|sm| {
        sm.agents()
            .into_iter()
            .filter(|a| a.status == AgentStatus::Active)
            .map(|a| (a.id, a.ttl_ms))
            .collect()
    });
    let now = Instant::now();
    let silent: Vec<AgentId> = ctx.liveness.with_table(|t| {
        let live: HashSet<AgentId> = active.iter().map(|(id, _)| *id).collect();
        t.last_heartbeat.retain(|id, _| live.contains(id));
        t.expiring.retain(|id| live.contains(id));
        let mut silent = Vec::new();
        for (id, ttl_ms) in &active {
            let last = *t.last_heartbeat.entry(*id).or_insert(now);
            if now.duration_since(last) > Duration::from_millis(*ttl_ms) && t.expiring.insert(*id) {
                silent.push(*id);
            }
        }
        silent
    });
    if silent.is_empty() {
        return;
    }
    tracing::info!(agents = ?silent, "expiring agents silent longer than their TTL");
    let op = Op::ExpireAgents {
        agent_ids: silent.clone(),
    };
    if let Err(error) = propose_as_leader(ctx, op).await {
        tracing::warn!(%error, "could not propose agent expiry; will retry");
        ctx.liveness.with_table(|t| {
            for id in &silent {
                t.expiring.remove(id);
            }
        });
    } else {
        ctx.metrics.agents_expired.inc_by(silent.len() as u64);
    }
}

async fn checkpoint(ctx: &NodeContext) {
    let mut last_seen: Vec<(AgentId, u64)> =
        ctx.liveness.with_table(|t| t.unsaved.drain().collect());
    if last_seen.is_empty() {
        return;
    }
    last_seen.sort_unstable();
    let op = Op::CheckpointAgents {
        last_seen_ms: last_seen,
    };
    if let Err(error) = propose_as_leader(ctx, op).await {
        tracing::warn!(%error, "liveness checkpoint failed");
    }
}

async fn tick_if_due(ctx: &NodeContext) {
    let due = ctx
        .state
        .read(|sm| sm.next_deadline_ms())
        .is_some_and(|deadline| deadline <= now_ms());
    if due {
        if let Err(error) = propose_as_leader(ctx, Op::Tick).await {
            tracing::warn!(%error, "tick failed");
        }
    }
}
