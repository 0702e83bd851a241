//! The read barrier (DESIGN.md §4). Linearizable reads: on the leader, openraft's
//! `ensure_linearizable` (a heartbeat round to a quorum, then wait for the local state machine
//! to apply up to the read index); on a follower, ask the leader's internal `ReadIndex` RPC and
//! wait until the local state machine has applied up to that index. Serializable reads skip the
//! barrier. After the barrier the caller reads the local state machine.

use std::time::Duration;

use openraft::error::{CheckIsLeaderError, RaftError};
use percy_proto::internal::ReadIndexRequest;
use percy_proto::v1::{Consistency, RequestHeader};
use tokio::time::Instant;
use tonic::{Request, Status};

use crate::context::NodeContext;
use crate::types::NodeId;

/// How long a linearizable read may wait for a leader and its confirmation.
pub const READ_TIMEOUT: Duration = Duration::from_secs(10);
const RETRY_PAUSE: Duration = Duration::from_millis(50);

/// How the barrier was passed, for the response header.
#[derive(Debug, Clone, Copy)]
pub struct ReadFence {
    /// The leader consulted (true) or not (local leader, or a serializable read).
    pub forwarded: bool,
}

/// Passes the barrier the request asks for (linearizable unless it says serializable).
pub async fn barrier(
    ctx: &NodeContext,
    header: Option<&RequestHeader>,
) -> Result<ReadFence, Status> {
    let serializable = header
        .map(|h| h.consistency == Consistency::Serializable as i32)
        .unwrap_or(false);
    if serializable {
        return Ok(ReadFence { forwarded: false });
    }
    linearizable(ctx).await
}

/// Linearizable barrier, retrying while leadership moves, up to [`READ_TIMEOUT`].
pub async fn linearizable(ctx: &NodeContext) -> Result<ReadFence, Status> {
    let deadline = Instant::now() + READ_TIMEOUT;
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        let Some(leader) = ctx.wait_for_leader(remaining).await else {
            return Err(Status::unavailable(
                "no leader: linearizable reads need a quorum; retry or ask for a serializable read",
            ));
        };
        let attempt = if leader == ctx.node_id {
            on_leader(ctx, deadline).await.map(|()| false)
        } else {
            on_follower(ctx, leader, deadline).await.map(|()| true)
        };
        match attempt {
            Ok(forwarded) => return Ok(ReadFence { forwarded }),
            Err(why) => {
                if Instant::now() + RETRY_PAUSE >= deadline {
                    return Err(Status::unavailable(format!(
                        "linearizable read could not be confirmed: {why}"
                    )));
                }
                tracing::debug!(%why, "read barrier retry");
                tokio::time::sleep(RETRY_PAUSE).await;
            }
        }
    }
}

async fn on_leader(ctx: &NodeContext, deadline: Instant) -> Result<(), String> {
    match tokio::time::timeout_at(deadline, ctx.raft.ensure_linearizable()).await {
        Err(_) => Err("timed out confirming leadership".into()),
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
    }
}

async fn on_follower(ctx: &NodeContext, leader: NodeId, deadline: Instant) -> Result<(), String> {
    let addr = ctx
        .addr_of(leader)
        .ok_or_else(|| format!("leader {leader} has no address"))?;
    let mut client = ctx.peers.client(leader, &addr)?;
    let mut request = Request::new(ReadIndexRequest {});
    request.set_timeout(deadline.saturating_duration_since(Instant::now()));
    let index = client
        .read_index(request)
        .await
        .map_err(|s| format!("leader {leader}: {}", s.message()))?
        .into_inner()
        .read_index;
    wait_applied(ctx, index, deadline).await
}

/// Waits until the local state machine has applied `index`.
async fn wait_applied(ctx: &NodeContext, index: u64, deadline: Instant) -> Result<(), String> {
    let timeout = deadline.saturating_duration_since(Instant::now());
    ctx.raft
        .wait(Some(timeout))
        .applied_index_at_least(Some(index), "read index")
        .await
        .map(|_| ())
        .map_err(|e| format!("waiting to apply index {index}: {e}"))
}

/// The leader side of `ReadIndex`: confirms leadership with a quorum and returns the index a
/// follower must apply before it may answer.
pub async fn read_index(ctx: &NodeContext) -> Result<u64, Status> {
    match tokio::time::timeout(READ_TIMEOUT, ctx.raft.get_read_log_id()).await {
        Err(_) => Err(Status::unavailable("timed out confirming leadership")),
        Ok(Ok((read_log_id, _applied))) => Ok(read_log_id.map(|l| l.index).unwrap_or(0)),
        Ok(Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f)))) => {
            Err(Status::failed_precondition(format!(
                "node {} is not the leader (leader: {:?})",
                ctx.node_id, f.leader_id
            )))
        }
        Ok(Err(e)) => Err(Status::unavailable(e.to_string())),
    }
}
