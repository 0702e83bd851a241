//! Agent liveness without a Raft write per heartbeat (ARCHITECTURE.md, Design §3, like etcd's leases).
//!
//! The leader keeps each active agent's last heartbeat in memory, on the monotonic clock. A
//! monitor task (running on every node, acting only while it leads) proposes `ExpireAgents` for
//! agents silent longer than their TTL, occasional `CheckpointAgents` with wall-clock last-seen
//! times, and `Tick` when the state machine says a deadline is due. Grace after failover: the
//! table is emptied whenever this node starts a new term as leader, and an agent missing from
//! it counts as seen *now*, so every agent gets a full TTL under each new leader.
//! Followers relay heartbeats to the leader in batches (`relay`, internal `RelayHeartbeats`).
//!
//! This module must not expire anyone while the node is not the leader, and never reads the
//! wall clock for expiry decisions (only for the checkpoint values and `Tick` timing). The
//! decisions themselves are pure functions in `table.rs`, tested with logical time.

mod id_hasher;
mod table;

use std::sync::Mutex;
use std::time::{Duration, Instant};

use openraft::ServerState;
use percy_statemachine::{AgentId, AgentLoad, AgentStatus, Command, Op, StateMachine};
use std::collections::HashMap;
use table::Table;
use tonic::Status;

use crate::context::NodeContext;
use crate::propose::{now_ms, propose_local, PROPOSE_TIMEOUT};
use crate::relay::{Relay, Relayed};
use crate::wire::{AgentLiveness, RelayReply};

/// How often the monitor looks at the table.
pub const MONITOR_INTERVAL: Duration = Duration::from_millis(200);
/// How often heartbeats seen since the last checkpoint are written to the log as `last_seen`.
pub const CHECKPOINT_INTERVAL: Duration = Duration::from_secs(30);
/// How long a heartbeat may wait for a leader to record it (an election, a relay).
const HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(5);

/// The leader-local heartbeat table, and the relay a follower sends heartbeats through.
#[derive(Default)]
pub struct Liveness {
    table: Mutex<Table>,
    relay: Relay,
}

impl Liveness {
    fn with_table<R>(&self, f: impl FnOnce(&mut Table) -> R) -> R {
        // A poisoned lock only means a panic elsewhere mid-update; the table stays usable
        // (worst case an agent gets a fresh grace period).
        let mut table = self.table.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut table)
    }

    /// Records a heartbeat, now, for each of `agents`, with the load it reported if any (one
    /// lock and one clock read for all).
    fn record(&self, agents: impl IntoIterator<Item = (AgentId, Option<AgentLoad>)>) {
        let now = Instant::now();
        self.with_table(|t| t.record(agents, now));
    }

    /// The loads agents reported to this node while it leads, with when (wall-clock ms):
    /// fresher than the checkpointed ones. Empty on a follower.
    pub fn live_loads(&self) -> HashMap<AgentId, (AgentLoad, u64)> {
        let now = Instant::now();
        let now_wall_ms = now_ms();
        self.with_table(|t| t.loads(now, now_wall_ms))
            .into_iter()
            .map(|(id, load, at_ms)| (id, (load, at_ms)))
            .collect()
    }

    /// Number of agents tracked (for metrics).
    pub fn tracked(&self) -> usize {
        self.with_table(|t| t.len())
    }
}

/// What the state machine says about `agent_id`.
fn look_up(sm: &StateMachine, agent_id: AgentId) -> AgentLiveness {
    sm.agent(agent_id).map_or(
        AgentLiveness {
            status: None,
            ttl_ms: 0,
        },
        |a| AgentLiveness {
            status: Some(a.status),
            ttl_ms: a.ttl_ms,
        },
    )
}

fn is_active(seen: &AgentLiveness) -> bool {
    seen.status == Some(AgentStatus::Active)
}

/// Leader side of a relayed batch: record the heartbeats of active agents and answer what the
/// state machine says about each agent, in order.
pub fn record_relayed(
    ctx: &NodeContext,
    agent_ids: &[AgentId],
    loads: &[(AgentId, AgentLoad)],
) -> RelayReply {
    if !ctx.is_leader() {
        return RelayReply::NotLeader {
            leader: ctx.leader(),
        };
    }
    let seen: Vec<AgentLiveness> = ctx
        .state
        .read(|sm| agent_ids.iter().map(|id| look_up(sm, *id)).collect());
    let loads: HashMap<AgentId, AgentLoad> = loads.iter().copied().collect();
    ctx.liveness.record(
        agent_ids
            .iter()
            .zip(&seen)
            .filter(|(_, s)| is_active(s))
            .map(|(id, _)| (*id, loads.get(id).copied())),
    );
    ctx.metrics.relay_batches.inc();
    ctx.metrics
        .relayed_heartbeats
        .inc_by(agent_ids.len() as u64);
    RelayReply::Recorded(seen)
}

/// A heartbeat recorded by the leader, as the API reports it.
#[derive(Debug, Clone, Copy)]
pub struct Beat {
    pub seen: AgentLiveness,
    /// This node's state machine revision when it answered.
    pub revision: u64,
    /// Whether this node relayed the heartbeat to the leader.
    pub forwarded: bool,
}

/// The public heartbeat, with the load the agent reported if any: recorded on the leader,
/// directly or relayed by this follower.
pub async fn heartbeat(
    ctx: &NodeContext,
    agent_id: AgentId,
    load: Option<AgentLoad>,
) -> Result<Beat, Status> {
    let deadline = tokio::time::Instant::now() + HEARTBEAT_TIMEOUT;
    loop {
        let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
        let Some(leader) = ctx.wait_for_leader(remaining).await else {
            return Err(Status::unavailable(
                "no leader to record the heartbeat; retry",
            ));
        };
        if leader == ctx.node_id {
            // Leadership was just read from the same metrics `is_leader` would read again.
            let (seen, revision) = ctx.state.read(|sm| (look_up(sm, agent_id), sm.revision()));
            if is_active(&seen) {
                ctx.liveness.record([(agent_id, load)]);
            }
            return Ok(Beat {
                seen,
                revision,
                forwarded: false,
            });
        }
        let addr = ctx
            .addr_of(leader)
            .ok_or_else(|| Status::unavailable(format!("leader {leader} has no address")))?;
        let relayed = ctx
            .liveness
            .relay
            .relay(&ctx.peers, leader, &addr, (agent_id, load), remaining)
            .await?;
        if let Relayed::Recorded(seen) = relayed {
            return Ok(Beat {
                seen,
                revision: ctx.state.read(|sm| sm.revision()),
                forwarded: true,
            });
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(Status::unavailable("leadership is moving; retry"));
        }
        tokio::time::sleep(MONITOR_INTERVAL / 4).await;
    }
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
    ctx.liveness
        .with_table(|t| t.observe_role(state == ServerState::Leader, term))
}

async fn expire_silent(ctx: &NodeContext) {
    // Straight from the registry's iterator: with 100,000 agents, five passes a second, an
    // intermediate list of every agent showed in the leader's profile.
    let active: Vec<(AgentId, u64)> = ctx.state.read(|sm| {
        sm.agents_after(None)
            .filter(|a| a.status == AgentStatus::Active)
            .map(|a| (a.id, a.ttl_ms))
            .collect()
    });
    let now = Instant::now();
    let silent = ctx.liveness.with_table(|t| t.silent(&active, now));
    if silent.is_empty() {
        return;
    }
    tracing::info!(agents = ?silent, "expiring agents silent longer than their TTL");
    let op = Op::ExpireAgents {
        agent_ids: silent.clone(),
    };
    if let Err(error) = propose_as_leader(ctx, op).await {
        tracing::warn!(%error, "could not propose agent expiry; will retry");
        ctx.liveness.with_table(|t| t.expiry_failed(&silent));
    } else {
        ctx.metrics.agents_expired.inc_by(silent.len() as u64);
    }
}

/// Writes the wall-clock time of every heartbeat since the last checkpoint
/// ([`Table::take_unsaved`]), and the loads reported since ([`Table::take_unsaved_loads`]),
/// which followers show on reads.
async fn checkpoint(ctx: &NodeContext) {
    let now = Instant::now();
    let now_wall_ms = now_ms();
    let (last_seen, loads) = ctx
        .liveness
        .with_table(|t| (t.take_unsaved(now, now_wall_ms), t.take_unsaved_loads()));
    if !last_seen.is_empty() {
        let op = Op::CheckpointAgents {
            last_seen_ms: last_seen,
        };
        if let Err(error) = propose_as_leader(ctx, op).await {
            tracing::warn!(%error, "liveness checkpoint failed");
        }
    }
    // A table larger than one command allows goes in several (the last one also forgets the
    // loads of agents no longer active, as every one does).
    for chunk in loads.chunks(percy_statemachine::limits::MAX_LOADS_PER_CHECKPOINT) {
        let op = Op::CheckpointAgentLoads {
            loads: chunk.to_vec(),
        };
        if let Err(error) = propose_as_leader(ctx, op).await {
            tracing::warn!(%error, "load checkpoint failed");
            return;
        }
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
