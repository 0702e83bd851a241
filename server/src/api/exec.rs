//! `percy.v1.ExecService`: the live output of execs (relayed from memory by
//! `exec_relay`, never through Raft) and an operator's cancel of an exec. Submitting an exec
//! is `TaskService/Submit` of a task that requires [`EXEC_CAPABILITY`], which only operators
//! and admins may call. Only the exec's executor — the agent that holds its claim — may
//! publish its output: anyone else could write into another caller's terminal.

use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use percy_proto::exec::EXEC_CAPABILITY;
use percy_proto::v1::exec_service_server::ExecService;
use percy_proto::v1::*;
use percy_statemachine::{Op, Outcome, TaskStatus};
use tonic::{Request, Response, Status, Streaming};

use super::{observe, read, unexpected, write_authorized};
use crate::auth::{self, Caller};
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
            // Read before the first message: the caller is known only inside this handler.
            let caller = auth::current(ctx)?;
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
                    None => {
                        let id = exec_id(chunk.exec_id.clone())?;
                        may_publish(ctx, caller.as_ref(), &id).await?;
                        exec = Some(id);
                    }
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
                    .map(|task| task.requires().contains(EXEC_CAPABILITY))
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
                    next: None,
                }),
                (other, _) => Err(unexpected(other)),
            }
        })
        .await
    }
}

/// Whether `caller` may publish the output of exec `id`: the exec exists, is held (claimed or
/// running), and the caller acts as its holder (an admin may act as any agent; without
/// `--auth`, `caller` is `None` and only the hold is checked). Checked on this replica first;
/// a refusal is checked again after a linearizable barrier, because the executor's claim (or
/// a new holder's, after a retry) may not have reached this replica yet — it publishes
/// right after claiming, possibly to a follower.
async fn may_publish(ctx: &NodeContext, caller: Option<&Caller>, id: &str) -> Result<(), Status> {
    if ctx.state.read(|sm| publisher_check(sm, caller, id)).is_ok() {
        return Ok(());
    }
    let (checked, _) = read(ctx, None, |sm| publisher_check(sm, caller, id)).await?;
    checked
}

fn publisher_check(
    sm: &percy_statemachine::StateMachine,
    caller: Option<&Caller>,
    id: &str,
) -> Result<(), Status> {
    let task = sm
        .task(id)
        .ok_or_else(|| Status::not_found(format!("no exec {id:?}")))?;
    if !task.requires().contains(EXEC_CAPABILITY) {
        return Err(Status::failed_precondition(format!(
            "task {id:?} is not an exec"
        )));
    }
    let held = matches!(task.status, TaskStatus::Claimed | TaskStatus::Working);
    let Some(holder) = task.assignee.filter(|_| held) else {
        return Err(Status::failed_precondition(format!(
            "exec {id:?} is not held by an executor (it is {:?})",
            task.status
        )));
    };
    match caller {
        None => Ok(()),
        Some(caller) => auth::ops::acts_as(caller, holder, sm).map_err(|refused| {
            Status::permission_denied(format!(
                "only the executor holding exec {id:?} may publish its output: {}",
                refused.message()
            ))
        }),
    }
}
