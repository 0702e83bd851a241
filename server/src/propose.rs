//! The write path (ARCHITECTURE.md, Design §1): a command is proposed on the leader, which stamps it with its
//! wall clock; a follower forwards it to the leader over its forward stream (`tagged_stream`),
//! or the unary `Forward` RPC for a leader without one. Returns
//! the state machine's answer as it was applied. Validation happens before this (api::edge);
//! this module only moves commands and maps transport/Raft failures to gRPC statuses.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use percy_proto::internal::RaftBytes;
use percy_statemachine::{Command, Op};
use tokio::time::Instant;
use tonic::{Request, Status};

use crate::context::NodeContext;
use crate::tagged_stream::StreamCallError;
use crate::types::{CommandResult, NodeId};
use crate::wire::{self, ForwardError, ForwardReply, ForwardRequest};

/// How long a write may take end to end (leader election included) before UNAVAILABLE.
pub const PROPOSE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a lock request that will queue may wait for another command's entry to ride in
/// (`propose_local`). Long enough for a lock holder's next write to come by (a read and a
/// client round trip), short against any lock wait.
pub const QUEUED_ACQUIRE_MAY_WAIT: Duration = Duration::from_millis(2);
/// Pause before trying again after "not the leader (any more)" while an election settles.
const RETRY_PAUSE: Duration = Duration::from_millis(50);

/// A command's applied result and how it got there.
#[derive(Debug)]
pub struct Proposed {
    pub result: CommandResult,
    pub leader_id: NodeId,
    /// Applied through another node (this one is a follower).
    pub forwarded: bool,
}

/// Proposes `command` through whichever node leads, retrying while leadership moves.
///
/// Retries happen only when the command was certainly not proposed (the target said it is not
/// the leader), or when it carries a session (a duplicate is then answered from the session
/// table instead of being applied twice).
pub async fn propose(ctx: &NodeContext, command: Command) -> Result<Proposed, Status> {
    let deadline = Instant::now() + PROPOSE_TIMEOUT;
    let retry_unknown = command.session.is_some();
    let mut last_error = None;
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        let Some(leader) = ctx.wait_for_leader(remaining).await else {
            return Err(unavailable(last_error));
        };
        let attempt = if leader == ctx.node_id {
            propose_local(ctx, command.clone(), deadline).await
        } else {
            forward(ctx, leader, &command, deadline).await
        };
        match attempt {
            Ok(result) => {
                return Ok(Proposed {
                    result,
                    leader_id: leader,
                    forwarded: leader != ctx.node_id,
                })
            }
            Err(ForwardError::NotLeader { leader: hint }) => {
                last_error = Some(format!(
                    "node {leader} is no longer the leader (it names {hint:?})"
                ));
            }
            Err(ForwardError::NotProposed(why)) => {
                tracing::debug!(%why, "retrying a write that was not proposed");
                last_error = Some(why);
            }
            Err(ForwardError::Unknown(why)) if !retry_unknown => {
                return Err(Status::unavailable(why))
            }
            Err(ForwardError::Unknown(why)) => {
                tracing::debug!(%why, "retrying a tracked write");
                last_error = Some(why);
            }
        }
        if Instant::now() + RETRY_PAUSE >= deadline {
            return Err(unavailable(last_error));
        }
        tokio::time::sleep(RETRY_PAUSE).await;
    }
}

fn unavailable(last_error: Option<String>) -> Status {
    match last_error {
        Some(why) => Status::unavailable(format!("write not confirmed: {why}; retry")),
        None => Status::unavailable("no leader: the cluster has no quorum right now; retry"),
    }
}

/// Wall-clock milliseconds, the only clock the state machine ever sees (via the log).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Proposes on this node, which believes it is the leader, in the next batched entry. A lock
/// request that will queue anyway rides with the next entry instead of opening its own
/// ([`QUEUED_ACQUIRE_MAY_WAIT`]).
pub async fn propose_local(
    ctx: &NodeContext,
    command: Command,
    deadline: Instant,
) -> Result<CommandResult, ForwardError> {
    if will_queue(ctx, &command) {
        return ctx
            .batcher
            .propose_riding(command, QUEUED_ACQUIRE_MAY_WAIT, deadline)
            .await;
    }
    ctx.batcher.propose(command, deadline).await
}

/// Whether `command` is a lock request that may wait and, as this node's state stands, would
/// queue behind another agent. Its caller is answered only when the lock is granted, so
/// proposing it a little later costs it nothing, unless the lock is freed meanwhile (then up
/// to [`QUEUED_ACQUIRE_MAY_WAIT`]).
fn will_queue(ctx: &NodeContext, command: &Command) -> bool {
    let Op::AcquireLocks {
        agent_id,
        paths,
        mode,
        wait_ms: Some(wait_ms),
        ..
    } = &command.op
    else {
        return false;
    };
    *wait_ms > 0
        && ctx
            .state
            .read(|sm| sm.acquire_would_queue(*agent_id, paths, *mode, now_ms()))
}

/// Sends the command to `leader` over the forward stream, or its unary `Forward` RPC.
async fn forward(
    ctx: &NodeContext,
    leader: NodeId,
    command: &Command,
    deadline: Instant,
) -> Result<CommandResult, ForwardError> {
    let addr = ctx
        .addr_of(leader)
        .ok_or_else(|| ForwardError::NotProposed(format!("leader {leader} has no address")))?;
    let mut client = ctx
        .peers
        .client(leader, &addr)
        .map_err(ForwardError::NotProposed)?;
    // Once bytes may have left, the leader may have proposed the command.
    let failed = |why: &dyn std::fmt::Display| {
        ForwardError::Unknown(format!(
            "forwarding to leader {leader} at {addr} failed: {why}"
        ))
    };
    let timeout = deadline.saturating_duration_since(Instant::now());
    let dialed = ctx.peers.dialed_addr(leader, &addr);
    match ctx
        .peers
        .forward_streams
        .call(dialed, &client, command, timeout)
        .await
    {
        Ok(reply) => return reply,
        Err(StreamCallError::Unsupported) => {}
        Err(broken) => return Err(failed(&broken)),
    }
    let data = wire::encode(&ForwardRequest {
        command: command.clone(),
    })
    .map_err(|e| ForwardError::NotProposed(e.to_string()))?;
    let mut request = Request::new(RaftBytes { data });
    request.set_timeout(timeout);
    let reply = client
        .forward(request)
        .await
        .map_err(|status| failed(&status.message()))?;
    let reply: ForwardReply = wire::decode(&reply.into_inner().data)
        .map_err(|e| ForwardError::Unknown(format!("leader {leader}: {e}")))?;
    reply
}

#[cfg(test)]
mod tests {
    use percy_statemachine::{AgentId, LockMode, Outcome};

    use super::*;
    use crate::test_cluster::Cluster;

    async fn register(ctx: &NodeContext, name: &str) -> AgentId {
        let op = Op::RegisterAgent {
            name: name.into(),
            node: "test".into(),
            capabilities: Default::default(),
            labels: Default::default(),
            max_concurrent: 1,
            ttl_ms: 0,
        };
        match propose(ctx, Command::new(op))
            .await
            .map(|p| p.result.response)
        {
            Ok(Ok(Outcome::AgentRegistered { agent, .. })) => agent.id,
            other => panic!("register {name}: {other:?}"),
        }
    }

    fn acquire(agent_id: AgentId, wait_ms: Option<u64>) -> Command {
        Command::new(Op::AcquireLocks {
            agent_id,
            paths: vec!["src/api".into()],
            mode: LockMode::Exclusive,
            task_id: None,
            ttl_ms: None,
            wait_ms,
        })
    }

    /// Only a lock request that will wait in the queue rides with the next entry.
    #[tokio::test]
    async fn a_lock_request_that_will_queue_rides_and_no_other_command_does() {
        let cluster = Cluster::start().await;
        let leader = cluster.leader_index().await;
        cluster.warm_up(leader).await;
        let ctx = cluster.nodes[leader].context();
        let holder = register(ctx, "holder").await;
        let waiter = register(ctx, "waiter").await;
        let rode = || ctx.metrics.riders_joined.get() + ctx.metrics.riders_alone.get();
        let granted = propose(ctx, acquire(holder, Some(60_000))).await;
        assert!(
            matches!(
                granted.map(|p| p.result.response),
                Ok(Ok(Outcome::LocksAcquired(_)))
            ),
            "a free lock is granted"
        );
        assert_eq!(
            rode(),
            0,
            "registrations and a granted acquire open their own entries"
        );
        assert!(
            !will_queue(ctx, &acquire(waiter, None)),
            "no wait: refused, not queued"
        );
        assert!(
            !will_queue(ctx, &acquire(holder, Some(60_000))),
            "its own lock"
        );
        let queued = propose(ctx, acquire(waiter, Some(60_000))).await;
        assert!(
            matches!(
                queued.map(|p| p.result.response),
                Ok(Ok(Outcome::LockQueued { .. }))
            ),
            "held by another agent: queued"
        );
        assert_eq!(rode(), 1, "the queued request rode");
        cluster.stop().await;
    }

    /// A real cluster replicates and forwards over the streams, not the unary fallbacks.
    #[tokio::test]
    async fn writes_travel_over_the_internal_streams() {
        let cluster = Cluster::start().await;
        let leader = cluster.leader_index().await;
        let follower = cluster.followers(leader)[0];
        cluster
            .put(follower, "k")
            .await
            .expect("task")
            .expect("put through a follower");
        let peers_of = |at: usize| &cluster.nodes[at].context().peers;
        let addr = |at: usize| cluster.nodes[at].addr().to_string();
        assert!(peers_of(follower).forward_streams.is_open(&addr(leader)));
        assert!(peers_of(leader).append_streams.is_open(&addr(follower)));
        cluster.stop().await;
    }
}
