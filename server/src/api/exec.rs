//! `percy.v1.ExecService`: the live output of execs (relayed from memory by
//! `exec_relay`, never through Raft) and an operator's cancel of an exec. Submitting an exec
//! is `TaskService/Submit` of a task that requires [`EXEC_CAPABILITY`], which only operators
//! and admins may call.

use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use percy_proto::exec::EXEC_CAPABILITY;
use percy_proto::v1::exec_service_server::ExecService;
use percy_proto::v1::*;
use percy_statemachine::{Op, Outcome};
use tonic::{Request, Response, Status, Streaming};

use super::{observe, read, unexpected, write_authorized};
use crate::context::NodeContext;
use crate::convert::task_to_proto;
use crate::exec_relay::{ExecRelay, Relayed};

pub struct ExecApi {
    pub ctx: Arc<NodeContext>,
    /// One per node: the callers attached here.
    pub relay: ExecRelay,
}

fn exec_id(id: String) -> Result<String, Status> {
    if id.is_empty() {
        Err(Status::invalid_argument("exec_id is required"))
    } else {
        Ok(id)
    }
}

type ChunkStream = Pin<Box<dyn Stream<Item = Result<ExecChunk, Status>> + Send>>;

#[tonic::async_trait]
impl ExecService for ExecApi {
    async fn publish(
        &self,
        request: Request<Streaming<ExecChunk>>,
    ) -> Result<Response<PublishExecResponse>, Status> {
        let ctx = &self.ctx;
        let relay = &self.relay;
        observe(ctx, "ExecService/Publish", async {
            let mut inbound = request.into_inner();
            let mut closed = ctx.watch.closed();
            let mut exec: Option<String> = None;
            let (mut relayed, mut dropped) = (0u64, 0u64);
            loop {
                let message = tokio::select! {
                    message = inbound.message() => message?,
                    _ = closed.changed() => {
                        return Err(Status::unavailable("this node is shutting down"));
                    }
                };
                let Some(chunk) = message else { break };
                match &exec {
                    None => exec = Some(exec_id(chunk.exec_id.clone())?),
                    Some(id) if *id != chunk.exec_id => {
                        return Err(Status::invalid_argument(format!(
                            "one publish stream carries one exec ({id:?}), not {:?}",
                            chunk.exec_id
                        )));
                    }
                    Some(_) => {}
                }
                let eof = chunk.eof;
                match relay.relay(chunk).await {
                    Relayed::Delivered => relayed += 1,
                    Relayed::Dropped => dropped += 1,
                }
                if eof {
                    break;
                }
            }
            Ok(PublishExecResponse {
                header: ctx.header(ctx.state.read(|sm| sm.revision()), false),
                relayed,
                dropped,
            })
        })
        .await
    }

    type AttachStream = ChunkStream;

    async fn attach(
        &self,
        request: Request<AttachExecRequest>,
    ) -> Result<Response<Self::AttachStream>, Status> {
        let ctx = &self.ctx;
        let relay = &self.relay;
        observe(ctx, "ExecService/Attach", async {
            let id = exec_id(request.into_inner().exec_id)?;
            let attachment = relay
                .attach(&id)
                .map_err(|e| Status::resource_exhausted(e.to_string()))?;
            let closed = ctx.watch.closed();
            // Ends after the publisher's eof, or with UNAVAILABLE when this node shuts down
            // (the caller then waits for the outcome on another node).
            let stream = futures::stream::unfold(Some((attachment, closed)), |state| async move {
                let (mut attachment, mut closed) = state?;
                tokio::select! {
                    chunk = attachment.chunks.recv() => {
                        let chunk = chunk?;
                        let next = (!chunk.eof).then_some((attachment, closed));
                        Some((Ok(chunk), next))
                    }
                    _ = closed.changed() => Some((
                        Err(Status::unavailable("this node is shutting down")),
                        None,
                    )),
                }
            });
            Ok(Box::pin(stream) as ChunkStream)
        })
        .await
    }

    async fn cancel(
        &self,
        request: Request<CancelExecRequest>,
    ) -> Result<Response<TaskUpdateResponse>, Status> {
        let ctx = &self.ctx;
        observe(ctx, "ExecService/Cancel", async {
            let r = request.into_inner();
            let id = exec_id(r.exec_id)?;
            let (is_exec, _) = read(ctx, r.header.as_ref(), |sm| {
                sm.task(&id)
                    .map(|task| task.requires.contains(EXEC_CAPABILITY))
            })
            .await?;
            match is_exec {
                None => return Err(Status::not_found(format!("no exec {id:?}"))),
                Some(false) => {
                    return Err(Status::failed_precondition(format!(
                        "task {id:?} is not an exec (cancel it with TaskService/Cancel)"
                    )))
                }
                Some(true) => {}
            }
            let reason = if r.reason.is_empty() {
                "cancelled by the caller".to_owned()
            } else {
                r.reason
            };
            let op = Op::CancelTask {
                task_id: id,
                reason,
            };
            match write_authorized(ctx, r.header.as_ref(), op).await? {
                (Outcome::TaskUpdated { task, cascade }, header) => Ok(TaskUpdateResponse {
                    header,
                    task: Some(task_to_proto(&task)),
                    cascade: Some(Cascade {
                        unblocked: cascade.unblocked,
                        cancelled: cascade.cancelled,
                    }),
                }),
                (other, _) => Err(unexpected(other)),
            }
        })
        .await
    }
}
