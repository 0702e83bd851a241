//! The internal gRPC server (`percy.internal.v1.RaftService`): hands openraft's RPCs to the
//! local Raft, and serves what followers ask of the leader (forwarded writes, read index,
//! relayed agent heartbeats). Decoding and delegation, plus the follower's acknowledgement
//! gate (see `storage::durable_log`).

use std::pin::Pin;
use std::sync::Arc;

use futures::{Stream, StreamExt};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, VoteRequest,
};
use percy_proto::internal::raft_service_server::RaftService;
use percy_proto::internal::{RaftBytes, ReadIndexRequest, ReadIndexResponse};
use serde::Serialize;
use tokio::time::Instant;
use tonic::{Request, Response, Status, Streaming};

use percy_statemachine::Command;

use crate::context::NodeContext;
use crate::propose::{propose_local, PROPOSE_TIMEOUT};
use crate::types::{NodeId, TypeConfig};
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
        reply(&self.ctx.raft.vote(rpc).await)
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
        let HeartbeatRelay { agent_ids } =
            wire::decode(&request.into_inner().data).map_err(bad_payload)?;
        reply(&crate::liveness::record_relayed(&self.ctx, &agent_ids))
    }
}
