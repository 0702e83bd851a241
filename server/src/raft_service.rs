//! The internal gRPC server (`percy.internal.v1.RaftService`): hands openraft's RPCs to the
//! local Raft, and serves what followers ask of the leader (forwarded writes, read index,
//! relayed agent heartbeats). Decoding and delegation, plus the follower's acknowledgement
//! gate (see `storage::durable_log`).

use std::pin::Pin;
use std::sync::Arc;

use futures::{Stream, StreamExt};
use std::time::Duration;

use openraft::error::RaftError;
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, VoteRequest, VoteResponse,
};
use openraft::ServerState;
use percy_proto::internal::raft_service_server::RaftService;
use percy_proto::internal::{RaftBytes, ReadIndexRequest, ReadIndexResponse};
use serde::Serialize;
use tokio::time::Instant;
use tonic::{Request, Response, Status, Streaming};

use percy_statemachine::Command;

use crate::context::NodeContext;
use crate::propose::{propose_local, PROPOSE_TIMEOUT};
use crate::removal;
use crate::types::{NodeId, TypeConfig};
use crate::vote_guard::{self, VoteVerdict, VoteView};
use crate::wire::{
    self, AppendEntriesResult, ForwardError, ForwardReply, ForwardRequest, HeartbeatRelay, Tagged,
};

/// Requests of one internal stream handled at once. On an AppendEntries stream a leader sends
/// one batch of entries at a time; the rest are heartbeats (read confirmations, commit
/// updates), which must not wait behind a batch that waits for the disk. On a forward stream
/// this is how many of a follower's clients' writes can be in flight together.
const STREAM_CONCURRENCY: usize = 256;

type TaggedAnswers = Pin<Box<dyn Stream<Item = Result<RaftBytes, Status>> + Send + 'static>>;

/// Serves one internal stream (`tagged_stream`): decodes each tagged request, runs `handle`
/// on it — up to [`STREAM_CONCURRENCY`] at once — and answers with the request's tag, in the
/// order the answers are ready. Ends when the peer closes its side, on a message that does not
/// decode, or when this node shuts down.
fn answer_tagged<Req, Reply, Handle, Handled>(
    ctx: &Arc<NodeContext>,
    requests: Streaming<RaftBytes>,
    handle: Handle,
) -> TaggedAnswers
where
    Req: serde::de::DeserializeOwned + Send + 'static,
    Reply: Serialize + Send + 'static,
    Handle: Fn(Arc<NodeContext>, Req) -> Handled + Send + 'static,
    Handled: std::future::Future<Output = Reply> + Send + 'static,
{
    let ctx = ctx.clone();
    let mut closed = ctx.watch.closed();
    let shutdown = async move {
        let _ = closed.wait_for(|closed| *closed).await;
    };
    let answers = requests
        .take_until(shutdown)
        .map(move |message| {
            let started = message.and_then(|message| {
                let Tagged { id, message } =
                    wire::decode::<Tagged<Req>>(&message.data).map_err(bad_payload)?;
                Ok((id, handle(ctx.clone(), message)))
            });
            async move {
                let (id, handled) = started?;
                let message = handled.await;
                let data = wire::encode(&Tagged { id, message })
                    .map_err(|e| Status::internal(e.to_string()))?;
                Ok(RaftBytes { data })
            }
        })
        .buffer_unordered(STREAM_CONCURRENCY);
    Box::pin(answers)
}

pub struct RaftRpc {
    pub ctx: Arc<NodeContext>,
}

fn bad_payload(e: wire::WireError) -> Status {
    Status::invalid_argument(e.to_string())
}

fn reply<T: Serialize>(value: &T) -> Result<Response<RaftBytes>, Status> {
    let data = wire::encode(value).map_err(|e| Status::internal(e.to_string()))?;
    Ok(Response::new(RaftBytes { data }))
}

/// Hands an AppendEntries to the local Raft and returns its answer once it may be sent: the
/// leader takes a success as "these entries are durable here", but openraft answers as soon as
/// they are written. So the answer waits until they are durable, and is withheld (the leader
/// retries) if the log is truncated meanwhile, because the entries now at those indexes may
/// not be the ones this request carried; ABORTED, so the leader retries without backing off.
/// (One of the gates in `storage::durable_log`.)
async fn acknowledge_append(
    ctx: &NodeContext,
    rpc: AppendEntriesRequest<TypeConfig>,
) -> Result<AppendEntriesResult, Status> {
    let claimed = rpc.entries.last().map(|e| e.log_id).or(rpc.prev_log_id);
    let epoch = ctx.durable.watermark().epoch;
    let result = ctx.raft.append_entries(rpc).await;
    if matches!(
        result,
        Ok(AppendEntriesResponse::Success | AppendEntriesResponse::PartialSuccess(_))
    ) {
        ctx.leader_contact.heard();
    }
    let acknowledged = match &result {
        Ok(AppendEntriesResponse::Success) => claimed,
        Ok(AppendEntriesResponse::PartialSuccess(matching)) => *matching,
        _ => None,
    };
    if let Some(acknowledged) = acknowledged {
        ctx.durable
            .wait_durable_in_epoch(acknowledged.index, epoch)
            .await
            .map_err(|e| Status::aborted(format!("entries not acknowledged: {e}")))?;
    }
    Ok(result)
}

/// A write a follower forwarded: proposed here if this node leads. Forwarding is one hop: a
/// node that is not the leader refuses instead of relaying.
async fn forwarded(ctx: &NodeContext, command: Command) -> ForwardReply {
    if ctx.is_leader() {
        propose_local(ctx, command, Instant::now() + PROPOSE_TIMEOUT).await
    } else {
        Err(ForwardError::NotLeader {
            leader: ctx.leader(),
        })
    }
}

#[tonic::async_trait]
impl RaftService for RaftRpc {
    async fn append_entries(
        &self,
        request: Request<RaftBytes>,
    ) -> Result<Response<RaftBytes>, Status> {
        let rpc: AppendEntriesRequest<TypeConfig> =
            wire::decode(&request.into_inner().data).map_err(bad_payload)?;
        reply(&acknowledge_append(&self.ctx, rpc).await?)
    }

    type AppendEntriesStreamStream = TaggedAnswers;

    /// Answers each message as the unary `append_entries` would.
    async fn append_entries_stream(
        &self,
        request: Request<Streaming<RaftBytes>>,
    ) -> Result<Response<TaggedAnswers>, Status> {
        let answers = answer_tagged(
            &self.ctx,
            request.into_inner(),
            |ctx, rpc: AppendEntriesRequest<TypeConfig>| async move {
                acknowledge_append(&ctx, rpc)
                    .await
                    .map_err(|status| status.message().to_string())
            },
        );
        Ok(Response::new(answers))
    }

    type ForwardStreamStream = TaggedAnswers;

    /// Answers each message as the unary `forward` would.
    async fn forward_stream(
        &self,
        request: Request<Streaming<RaftBytes>>,
    ) -> Result<Response<TaggedAnswers>, Status> {
        let answers = answer_tagged(
            &self.ctx,
            request.into_inner(),
            |ctx, command: Command| async move { forwarded(&ctx, command).await },
        );
        Ok(Response::new(answers))
    }

    async fn vote(&self, request: Request<RaftBytes>) -> Result<Response<RaftBytes>, Status> {
        let rpc: VoteRequest<NodeId> =
            wire::decode(&request.into_inner().data).map_err(bad_payload)?;
        let ctx = &self.ctx;
        let candidate = rpc.vote.leader_id().voted_for().unwrap_or_default();
        let (since_quorum_ack, since_leader_contact) = {
            let m = ctx.raft.metrics().borrow().clone();
            let leading = m.state == ServerState::Leader;
            let ack = m.millis_since_quorum_ack.filter(|_| leading);
            (ack.map(Duration::from_millis), ctx.leader_contact.since())
        };
        let (vote, last_log_id, is_member, members, config_index) = ctx
            .raft
            .with_raft_state(move |state| {
                let effective = state.membership_state.effective();
                let membership = effective.membership();
                (
                    *state.vote_ref(),
                    // openraft keeps the last log id private; the commit point is a lower
                    // bound of it (a candidate uses it only to delay its next election).
                    state.committed,
                    removal::is_member(membership, candidate),
                    removal::describe(membership),
                    effective.log_id().map(|id| id.index),
                )
            })
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        let view = VoteView {
            candidate_is_member: is_member,
            candidate_term_is_higher: rpc.vote.leader_id().term > vote.leader_id().term,
            since_quorum_ack,
            since_leader_contact,
            leader_alive_within: ctx.config.election_timeout_min,
        };
        match vote_guard::judge(&view) {
            VoteVerdict::Consider => reply(&ctx.raft.vote(rpc).await),
            VoteVerdict::NotAMember => {
                Err(removal::not_a_member(candidate, &members, config_index))
            }
            VoteVerdict::LeaderAlive => {
                ctx.metrics.votes_refused_leader_alive.inc();
                let refused: Result<VoteResponse<NodeId>, RaftError<NodeId>> =
                    Ok(VoteResponse::new(vote, last_log_id, false));
                reply(&refused)
            }
        }
    }

    async fn install_snapshot(
        &self,
        request: Request<RaftBytes>,
    ) -> Result<Response<RaftBytes>, Status> {
        let rpc: InstallSnapshotRequest<TypeConfig> =
            wire::decode(&request.into_inner().data).map_err(bad_payload)?;
        reply(&self.ctx.raft.install_snapshot(rpc).await)
    }

    async fn forward(&self, request: Request<RaftBytes>) -> Result<Response<RaftBytes>, Status> {
        let ForwardRequest { command } =
            wire::decode(&request.into_inner().data).map_err(bad_payload)?;
        reply(&forwarded(&self.ctx, command).await)
    }

    async fn read_index(
        &self,
        request: Request<ReadIndexRequest>,
    ) -> Result<Response<ReadIndexResponse>, Status> {
        let read_index = crate::read::read_index(&self.ctx, request.get_ref()).await?;
        Ok(Response::new(ReadIndexResponse { read_index }))
    }

    async fn relay_heartbeats(
        &self,
        request: Request<RaftBytes>,
    ) -> Result<Response<RaftBytes>, Status> {
        let HeartbeatRelay { agent_ids, loads } =
            wire::decode_heartbeat_relay(&request.into_inner().data).map_err(bad_payload)?;
        reply(&crate::liveness::record_relayed(
            &self.ctx, &agent_ids, &loads,
        ))
    }
}

#[cfg(test)]
mod tests {
    use openraft::{CommittedLeaderId, LogId, Vote};
    use percy_proto::internal::raft_service_client::RaftServiceClient;
    use tonic::Code;

    use super::*;
    use crate::test_cluster::Cluster;

    /// A crafted vote request: `candidate` in `term`, claiming a log far ahead of anyone's.
    async fn send_vote(
        addr: &str,
        candidate: NodeId,
        term: u64,
    ) -> Result<VoteResponse<NodeId>, Status> {
        let mut client = RaftServiceClient::connect(format!("http://{addr}"))
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        let claimed = LogId::new(CommittedLeaderId::new(term, candidate), 1 << 40);
        let rpc = VoteRequest::new(Vote::new(term, candidate), Some(claimed));
        let data = wire::encode(&rpc).map_err(|e| Status::internal(e.to_string()))?;
        let reply = client.vote(RaftBytes { data }).await?;
        let answer: Result<VoteResponse<NodeId>, RaftError<NodeId>> =
            wire::decode(&reply.into_inner().data).map_err(|e| Status::internal(e.to_string()))?;
        answer.map_err(|e| Status::internal(e.to_string()))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn higher_term_votes_do_not_depose_a_healthy_leader_nor_non_members_anyone() {
        let cluster = Cluster::start().await;
        let leader = cluster.leader_index().await;
        let followers = cluster.followers(leader);
        let ctx = cluster.nodes[leader].context();
        let term = ctx.raft.metrics().borrow().current_term;
        let (one, other) = (
            cluster.nodes[followers[0]].node_id(),
            cluster.nodes[followers[1]].addr().to_string(),
        );
        let leader_addr = cluster.nodes[leader].addr().to_string();
        // A member's votes of ever higher terms, to the leader and to a follower, while
        // writes go on: none is granted, and the leader keeps its term.
        for i in 0..20 {
            for addr in [&leader_addr, &other] {
                let answer = send_vote(addr, one, term + 1000 + i)
                    .await
                    .expect("answered");
                assert!(!answer.vote_granted, "vote {i} to {addr} granted");
            }
            cluster
                .put(leader, &format!("during-votes-{i}"))
                .await
                .expect("task")
                .expect("a write while votes arrive");
        }
        assert_eq!(ctx.raft.metrics().borrow().current_term, term);
        assert!(ctx.is_leader());
        assert!(ctx.metrics.votes_refused_leader_alive.get() >= 20);
        // A non-member is refused outright, named as such, with the members listed.
        let refused = send_vote(&leader_addr, 99, term + 5000)
            .await
            .expect_err("a non-member's vote is refused");
        assert_eq!(refused.code(), Code::FailedPrecondition);
        assert!(refused.metadata().get(removal::NOT_A_MEMBER).is_some());
        assert!(
            refused.message().contains("node 99 is not a member"),
            "{refused:?}"
        );
        assert_eq!(ctx.raft.metrics().borrow().current_term, term);
        cluster.stop().await;
    }
}
