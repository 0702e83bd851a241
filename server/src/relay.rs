//! The follower side of heartbeats: what reaches a follower is relayed to the leader in
//! batches (internal `RelayHeartbeats`), so the leader pays one internal RPC per batch instead
//! of one per heartbeat — an RPC costs the leader far more than recording a heartbeat.
//!
//! A batch collects heartbeats for [`RELAY_LINGER`] (or until it holds [`MAX_RELAY_BATCH`]),
//! then a task of its own sends it and hands every waiting caller its agent's answer. The
//! task, not the first caller, sends it, so a caller that gives up strands nobody.
//! Batching only; the leader's reply is interpreted by `liveness`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use percy_proto::internal::RaftBytes;
use percy_statemachine::{AgentId, AgentLoad};
use tokio::sync::oneshot;
use tonic::{Request, Status};

use crate::network::PeerClients;
use crate::types::NodeId;
use crate::wire::{self, AgentLiveness, HeartbeatRelay, RelayReply};

/// How long a batch collects heartbeats before it is sent. Heartbeats come seconds apart per
/// agent, so a few milliseconds of delay cost nothing, while at thousands of heartbeats per
/// second they turn hundreds of RPCs into one.
pub const RELAY_LINGER: Duration = Duration::from_millis(5);
/// A batch this full is sent at once: bounds the message and the leader's time per batch.
pub const MAX_RELAY_BATCH: usize = 4_096;

/// What became of one relayed heartbeat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Relayed {
    Recorded(AgentLiveness),
    /// The node it went to is not the leader (any more); nothing was recorded.
    NotLeader,
}

type Answer = Result<Relayed, Status>;

/// Batches being collected, by the leader they go to (there is one, except around an
/// election).
#[derive(Clone, Default)]
pub struct Relay {
    pending: Arc<Mutex<HashMap<NodeId, Batch>>>,
}

struct Batch {
    addr: String,
    agent_ids: Vec<AgentId>,
    /// The loads some of the heartbeats reported.
    loads: Vec<(AgentId, AgentLoad)>,
    waiters: Vec<oneshot::Sender<Answer>>,
}

impl Relay {
    /// Relays `agent_id`'s heartbeat (with the load it reported, if any) to `leader` (dialled
    /// through `peers` at `addr`) with the next batch, and waits up to `timeout` for the
    /// leader's answer.
    pub async fn relay(
        &self,
        peers: &PeerClients,
        leader: NodeId,
        addr: &str,
        (agent_id, load): (AgentId, Option<AgentLoad>),
        timeout: Duration,
    ) -> Answer {
        let (tx, rx) = oneshot::channel();
        let (opened, full) = {
            let mut pending = self.lock();
            let batch = pending.entry(leader).or_insert_with(|| Batch {
                addr: addr.to_owned(),
                agent_ids: Vec::new(),
                loads: Vec::new(),
                waiters: Vec::new(),
            });
            let opened = batch.waiters.is_empty();
            batch.agent_ids.push(agent_id);
            batch.loads.extend(load.map(|load| (agent_id, load)));
            batch.waiters.push(tx);
            let full = (batch.agent_ids.len() >= MAX_RELAY_BATCH)
                .then(|| pending.remove(&leader))
                .flatten();
            (opened, full)
        };
        if let Some(batch) = full {
            tokio::spawn(send(peers.clone(), leader, batch, timeout));
        } else if opened {
            // Whatever batch is pending for this leader when the linger ends goes out; if a
            // full batch left early, that is a younger one, sent a little early.
            let relay = self.clone();
            let peers = peers.clone();
            tokio::spawn(async move {
                tokio::time::sleep(RELAY_LINGER).await;
                let batch = relay.lock().remove(&leader);
                if let Some(batch) = batch {
                    send(peers, leader, batch, timeout).await;
                }
            });
        }
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(_dropped)) => Err(Status::unavailable(
                "the heartbeat relay to the leader stopped; retry",
            )),
            Err(_elapsed) => Err(Status::unavailable(format!(
                "relaying the heartbeat to leader {leader} timed out; retry"
            ))),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<NodeId, Batch>> {
        // A poisoned lock only means a panic elsewhere mid-push; the worst left behind is a
        // batch whose callers time out and retry.
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Sends one batch and answers each of its callers.
async fn send(peers: PeerClients, leader: NodeId, batch: Batch, timeout: Duration) {
    let Batch {
        addr,
        agent_ids,
        loads,
        waiters,
    } = batch;
    let expected = agent_ids.len();
    let relayed = HeartbeatRelay { agent_ids, loads };
    let answers: Vec<Answer> = match call(&peers, leader, &addr, &relayed, timeout).await {
        Ok(RelayReply::Recorded(seen)) if seen.len() == expected => {
            seen.into_iter().map(|s| Ok(Relayed::Recorded(s))).collect()
        }
        Ok(RelayReply::Recorded(seen)) => {
            let status = Status::internal(format!(
                "leader {leader} answered {} of {expected} relayed heartbeats",
                seen.len()
            ));
            vec![Err(status); expected]
        }
        Ok(RelayReply::NotLeader { .. }) => vec![Ok(Relayed::NotLeader); expected],
        Err(status) => vec![Err(status); expected],
    };
    for (waiter, answer) in waiters.into_iter().zip(answers) {
        // A caller that gave up no longer listens; nothing to do for it.
        let _ = waiter.send(answer);
    }
}

async fn call(
    peers: &PeerClients,
    leader: NodeId,
    addr: &str,
    relayed: &HeartbeatRelay,
    timeout: Duration,
) -> Result<RelayReply, Status> {
    let mut client = peers.client(leader, addr).map_err(Status::unavailable)?;
    let data = wire::encode(relayed).map_err(|e| Status::internal(e.to_string()))?;
    let mut request = Request::new(RaftBytes { data });
    request.set_timeout(timeout);
    let reply = client.relay_heartbeats(request).await.map_err(|s| {
        Status::unavailable(format!(
            "relaying heartbeats to leader {leader}: {}",
            s.message()
        ))
    })?;
    wire::decode(&reply.into_inner().data).map_err(|e| Status::internal(e.to_string()))
}
