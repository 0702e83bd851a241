//! The read barrier (ARCHITECTURE.md, Design §4). Linearizable reads: on the leader, openraft's
//! `ensure_linearizable` (a heartbeat round to a quorum, then wait for the local state machine
//! to apply up to the read index); on a follower, ask the leader's internal `ReadIndex` RPC and
//! wait until the local state machine has applied up to that index. When the asking follower
//! and the leader form a quorum (three voters), the follower's request is itself the second
//! confirmation of the leadership and the leader answers at once ([`confirmed_by_follower`]).
//! Serializable reads skip the barrier. After the barrier the caller reads the local state
//! machine.

use std::time::Duration;

use openraft::error::{CheckIsLeaderError, RaftError};
use openraft::ServerState;
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
    // The term as the Raft core holds it now, after the read arrived: the metrics may lag a
    // vote the core has already cast for a newer candidate.
    let vote = ctx
        .raft
        .with_raft_state(|state| *state.vote_ref())
        .await
        .map_err(|e| e.to_string())?;
    let leader_id = vote.leader_id();
    let term = if vote.is_committed() && leader_id.voted_for() == Some(leader) {
        leader_id.term
    } else {
        0
    };
    let mut request = Request::new(ReadIndexRequest {
        term,
        follower_id: ctx.node_id,
    });
    request.set_timeout(deadline.saturating_duration_since(Instant::now()));
    let index = client
        .read_index(request)
        .await
        .map_err(|s| {
            ctx.removal.hear(&s);
            format!("leader {leader}: {}", s.message())
        })?
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
pub async fn read_index(ctx: &NodeContext, request: &ReadIndexRequest) -> Result<u64, Status> {
    let follower = request.follower_id;
    let (is_member, members, config_index) = {
        let metrics = ctx.raft.metrics();
        let m = metrics.borrow();
        let membership = m.membership_config.membership();
        (
            crate::removal::is_member(membership, follower),
            crate::removal::describe(membership),
            m.membership_config.log_id().map(|id| id.index),
        )
    };
    if !is_member {
        return Err(crate::removal::not_a_member(
            follower,
            &members,
            config_index,
        ));
    }
    if let Some(read_index) = confirmed_by_follower(ctx, request).await {
        ctx.metrics.read_index_by_follower.inc();
        return Ok(read_index);
    }
    match tokio::time::timeout(READ_TIMEOUT, ctx.raft.get_read_log_id()).await {
        Err(_) => Err(Status::unavailable("timed out confirming leadership")),
        Ok(Ok((read_log_id, _applied))) => {
            ctx.metrics.read_index_by_heartbeats.inc();
            Ok(read_log_id.map(|l| l.index).unwrap_or(0))
        }
        Ok(Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f)))) => {
            Err(Status::failed_precondition(format!(
                "node {} is not the leader (leader: {:?})",
                ctx.node_id, f.leader_id
            )))
        }
        Ok(Err(e)) => Err(Status::unavailable(e.to_string())),
    }
}

/// The read index, when the asking follower's request confirms this node's leadership without
/// a heartbeat round: this node leads in the term the follower named, has committed an entry
/// of that term, and the two of them are a quorum of every configuration in force.
///
/// Why that suffices: the read must see every write acknowledged before it arrived at the
/// follower (time t0). Such a write was committed in this term (then this leader acknowledged
/// it and its commit index covers it), or in an earlier one (then it is in this leader's log
/// and committed along with this term's first entry), or in a later term — impossible, because
/// committing in a later term takes a quorum of that term, which must include the follower or
/// this node; but the follower was still in this term after t0 (it read its term from its
/// core after the read arrived) and so is this node now, and terms never go back. This is the
/// check a heartbeat round makes, with the follower's request as its acknowledgement.
pub(crate) async fn confirmed_by_follower(
    ctx: &NodeContext,
    request: &ReadIndexRequest,
) -> Option<u64> {
    let (me, follower, term) = (ctx.node_id, request.follower_id, request.term);
    if term == 0 || follower == me {
        return None;
    }
    ctx.raft
        .with_raft_state(move |state| {
            let vote = state.vote_ref();
            let leading = state.server_state == ServerState::Leader
                && vote.is_committed()
                && vote.leader_id().voted_for() == Some(me)
                && vote.leader_id().term == term;
            let committed = state.committed?;
            let joint = state
                .membership_state
                .effective()
                .membership()
                .get_joint_config();
            let quorum = !joint.is_empty()
                && joint.iter().all(|voters| {
                    let acks = [me, follower]
                        .iter()
                        .filter(|id| voters.contains(id))
                        .count();
                    acks * 2 > voters.len()
                });
            (leading && committed.leader_id.term == term && quorum).then_some(committed.index)
        })
        .await
        .ok()
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_cluster::Cluster;

    #[tokio::test]
    async fn a_follower_read_is_confirmed_by_the_follower_alone() {
        let cluster = Cluster::start().await;
        let leader = cluster.leader_index().await;
        let follower = cluster.followers(leader)[0];
        cluster.put(leader, "k").await.expect("task").expect("put");
        assert_eq!(cluster.get(follower, "k").await, Some(b"v".to_vec()));
        let metrics = &cluster.nodes[leader].context().metrics;
        assert!(metrics.read_index_by_follower.get() >= 1);
        assert_eq!(metrics.read_index_by_heartbeats.get(), 0);
        cluster.stop().await;
    }

    /// Only the leader of the named term, with that term's entry committed, answers for a
    /// voter that completes a quorum; anything else takes the heartbeat round.
    #[tokio::test]
    async fn only_a_current_voter_of_the_leaders_term_confirms_it() {
        let cluster = Cluster::start().await;
        let leader = cluster.leader_index().await;
        let followers = cluster.followers(leader);
        cluster.put(leader, "k").await.expect("task").expect("put");
        let ctx = cluster.nodes[leader].context();
        let term = ctx.raft.metrics().borrow().current_term;
        let follower_id = cluster.nodes[followers[0]].node_id();
        let ask = |term, follower_id| ReadIndexRequest { term, follower_id };
        let committed = confirmed_by_follower(ctx, &ask(term, follower_id)).await;
        assert!(committed.is_some_and(|index| index >= 1));
        for (why, request) in [
            ("no term", ask(0, follower_id)),
            ("an older term", ask(term - 1, follower_id)),
            ("a newer term", ask(term + 1, follower_id)),
            ("not a voter", ask(term, 99)),
            ("the leader itself", ask(term, ctx.node_id)),
        ] {
            assert_eq!(confirmed_by_follower(ctx, &request).await, None, "{why}");
        }
        let other = cluster.nodes[followers[1]].node_id();
        let follower_ctx = cluster.nodes[followers[0]].context();
        assert_eq!(
            confirmed_by_follower(follower_ctx, &ask(term, other)).await,
            None,
            "a follower does not confirm anyone"
        );
        cluster.stop().await;
    }
}
