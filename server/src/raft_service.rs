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

use crate::context::NodeContext;
use crate::propose::{propose_local, PROPOSE_TIMEOUT};
use crate::types::{NodeId, TypeConfig};
use crate::wire::{
    self, AppendEntriesResult, ForwardError, ForwardReply, ForwardRequest, HeartbeatRelay,
    StreamedAppend, StreamedAppendReply,
};

/// Requests of one `AppendEntriesStream` handled at once. A leader sends one batch of entries
/// at a time per follower; the rest are heartbeats (read confirmations, commit updates), which
/// must not wait behind a batch that waits for the disk.
const STREAM_CONCURRENCY: usize = 64;

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

/// One message of an `AppendEntriesStream`: decode, acknowledge, answer with the same tag.
async fn streamed_append(ctx: &NodeContext, message: RaftBytes) -> Result<RaftBytes, Status> {
    let StreamedAppend { id, rpc } = wire::decode(&message.data).map_err(bad_payload)?;
    let reply = acknowledge_append(ctx, rpc)
        .await
        .map_err(|status| status.message().to_string());
    let data = wire::encode(&StreamedAppendReply { id, reply })
        .map_err(|e| Status::internal(e.to_string()))?;
    Ok(RaftBytes { data })
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

    type AppendEntriesStreamStream =
        Pin<Box<dyn Stream<Item = Result<RaftBytes, Status>> + Send + 'static>>;

    /// Answers each message as the unary `append_entries` would, several at once and in whatever
    /// order they finish (answers carry their request's tag). Ends when the leader closes its
    /// side, on a message that does not decode, or when this node shuts down.
    async fn append_entries_stream(
        &self,
        request: Request<Streaming<RaftBytes>>,
    ) -> Result<Response<Self::AppendEntriesStreamStream>, Status> {
        let ctx = self.ctx.clone();
        let mut closed = ctx.watch.closed();
        let shutdown = async move {
            let _ = closed.wait_for(|closed| *closed).await;
        };
        let replies = request
            .into_inner()
            .take_until(shutdown)
            .map(move |message| {
                let ctx = ctx.clone();
                async move { streamed_append(&ctx, message?).await }
            })
            .buffer_unordered(STREAM_CONCURRENCY);
        Ok(Response::new(Box::pin(replies)))
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
        // Forwarding is one hop: a node that is not the leader refuses instead of relaying.
        let result: ForwardReply = if self.ctx.is_leader() {
            propose_local(&self.ctx, command, Instant::now() + PROPOSE_TIMEOUT).await
        } else {
            Err(ForwardError::NotLeader {
                leader: self.ctx.leader(),
            })
        };
        reply(&result)
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
