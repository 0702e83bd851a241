//! `percy.v1.TaskService`: submit, claim (named CAS or claim-next), start/complete/fail with
//! the claim token, operator cancel/requeue, and lookups.

use std::sync::Arc;

use percy_proto::v1::task_service_server::TaskService;
use percy_proto::v1::*;
use percy_statemachine::{Op, Outcome, TaskFilter};
use tonic::{Request, Response, Status};

use super::{observe, paging, read, required, required_id, session, unexpected, write};
use crate::context::NodeContext;
use crate::convert::{
    command_error_to_status, task_result_from_proto, task_spec_from_proto, task_status_from_proto,
    task_to_proto,
};

pub struct TaskApi {
    pub ctx: Arc<NodeContext>,
}

/// Proposes an op that answers `TaskUpdated` (start, complete, fail, cancel, requeue).
async fn update(
    ctx: &NodeContext,
    header: Option<&RequestHeader>,
    op: Op,
) -> Result<TaskUpdateResponse, Status> {
    match write(ctx, header, op).await? {
        (Outcome::TaskUpdated { task, cascade }, header) => Ok(TaskUpdateResponse {
            header,
            task: Some(task_to_proto(&task)),
            cascade: Some(Cascade {
                unblocked: cascade.unblocked,
                cancelled: cascade.cancelled,
            }),
            next: None,
        }),
        (
            Outcome::TaskCompletedClaimedNext {
                task,
                cascade,
                next,
            },
            header,
        ) => Ok(TaskUpdateResponse {
            header,
            task: Some(task_to_proto(&task)),
            cascade: Some(Cascade {
                unblocked: cascade.unblocked,
                cancelled: cascade.cancelled,
            }),
            next: next.as_deref().map(task_to_proto),
        }),
        (other, _) => Err(unexpected(other)),
    }
}

fn task_id(id: String) -> Result<String, Status> {
    if id.is_empty() {
        Err(Status::invalid_argument("task_id is required"))
    } else {
        Ok(id)
    }
}

#[tonic::async_trait]
impl TaskService for TaskApi {
    async fn submit(
        &self,
        request: Request<SubmitTaskRequest>,
    ) -> Result<Response<SubmitTaskResponse>, Status> {
        let ctx = &self.ctx;
        observe(ctx, "TaskService/Submit", async {
            let r = request.into_inner();
            let spec = task_spec_from_proto(required(r.task, "task")?);
            match write(ctx, r.header.as_ref(), Op::SubmitTask(spec)).await? {
                (Outcome::TaskSubmitted(task), header) => Ok(SubmitTaskResponse {
                    header,
                    task: Some(task_to_proto(&task)),
                }),
                (other, _) => Err(unexpected(other)),
            }
        })
        .await
    }

    async fn claim(
        &self,
        request: Request<ClaimTaskRequest>,
    ) -> Result<Response<ClaimTaskResponse>, Status> {
        let ctx = &self.ctx;
        observe(ctx, "TaskService/Claim", async {
            let r = request.into_inner();
            let agent_id = required_id(r.agent_id, "agent_id")?;
            let op = if r.task_id.is_empty() {
                if r.expected_revision.is_some() {
                    return Err(Status::invalid_argument(
                        "expected_revision needs a task_id (claim-next has nothing to compare)",
                    ));
                }
                if r.start {
                    Op::ClaimNextStarted { agent_id }
                } else {
                    Op::ClaimNext { agent_id }
                }
            } else {
                if r.start {
                    return Err(Status::invalid_argument(
                        "start is for claim-next only (leave task_id empty), or start the claimed task with Start",
                    ));
                }
                if let Some(expected) = r.expected_revision {
                    refuse_stale_claim(ctx, r.header.as_ref(), &r.task_id, expected)?;
                }
                Op::ClaimTask {
                    task_id: r.task_id,
                    agent_id,
                    expected_revision: r.expected_revision,
                }
            };
            match write(ctx, r.header.as_ref(), op).await? {
                (Outcome::TaskClaimed(task), header) => Ok(ClaimTaskResponse {
                    header,
                    task: task.as_ref().map(task_to_proto),
                }),
                (other, _) => Err(unexpected(other)),
            }
        })
        .await
    }

    async fn start(
        &self,
        request: Request<StartTaskRequest>,
    ) -> Result<Response<TaskUpdateResponse>, Status> {
        let ctx = &self.ctx;
        observe(ctx, "TaskService/Start", async {
            let r = request.into_inner();
            let op = Op::StartTask {
                task_id: task_id(r.task_id)?,
                agent_id: required_id(r.agent_id, "agent_id")?,
                claim_token: required_id(r.claim_token, "claim_token")?,
            };
            update(ctx, r.header.as_ref(), op).await
        })
        .await
    }

    async fn complete(
        &self,
        request: Request<CompleteTaskRequest>,
    ) -> Result<Response<TaskUpdateResponse>, Status> {
        let ctx = &self.ctx;
        observe(ctx, "TaskService/Complete", async {
            let r = request.into_inner();
            let task_id = task_id(r.task_id)?;
            let agent_id = required_id(r.agent_id, "agent_id")?;
            let claim_token = required_id(r.claim_token, "claim_token")?;
            let result = r.result.map(task_result_from_proto).unwrap_or_default();
            let op = if r.claim_next {
                Op::CompleteAndClaimNext {
                    task_id,
                    agent_id,
                    claim_token,
                    result,
                }
            } else {
                Op::CompleteTask {
                    task_id,
                    agent_id,
                    claim_token,
                    result,
                }
            };
            update(ctx, r.header.as_ref(), op).await
        })
        .await
    }

    async fn fail(
        &self,
        request: Request<FailTaskRequest>,
    ) -> Result<Response<TaskUpdateResponse>, Status> {
        let ctx = &self.ctx;
        observe(ctx, "TaskService/Fail", async {
            let r = request.into_inner();
            let op = Op::FailTask {
                task_id: task_id(r.task_id)?,
                agent_id: required_id(r.agent_id, "agent_id")?,
                claim_token: required_id(r.claim_token, "claim_token")?,
                error: r.error,
            };
            update(ctx, r.header.as_ref(), op).await
        })
        .await
    }

    async fn cancel(
        &self,
        request: Request<CancelTaskRequest>,
    ) -> Result<Response<TaskUpdateResponse>, Status> {
        let ctx = &self.ctx;
        observe(ctx, "TaskService/Cancel", async {
            let r = request.into_inner();
            let op = Op::CancelTask {
                task_id: task_id(r.task_id)?,
                reason: r.reason,
            };
            update(ctx, r.header.as_ref(), op).await
        })
        .await
    }

    async fn requeue(
        &self,
        request: Request<RequeueTaskRequest>,
    ) -> Result<Response<TaskUpdateResponse>, Status> {
        let ctx = &self.ctx;
        observe(ctx, "TaskService/Requeue", async {
            let r = request.into_inner();
            let op = Op::RequeueTask {
                task_id: task_id(r.task_id)?,
                reason: r.reason,
            };
            update(ctx, r.header.as_ref(), op).await
        })
        .await
    }

    async fn get(
        &self,
        request: Request<GetTaskRequest>,
    ) -> Result<Response<GetTaskResponse>, Status> {
        let ctx = &self.ctx;
        observe(ctx, "TaskService/Get", async {
            let r = request.into_inner();
            let id = task_id(r.task_id)?;
            let (task, header) =
                read(ctx, r.header.as_ref(), |sm| sm.task(&id).map(task_to_proto)).await?;
            let task = task.ok_or_else(|| Status::not_found(format!("no task {id:?}")))?;
            Ok(GetTaskResponse {
                header,
                task: Some(task),
            })
        })
        .await
    }

    async fn list(
        &self,
        request: Request<ListTasksRequest>,
    ) -> Result<Response<ListTasksResponse>, Status> {
        let ctx = &self.ctx;
        observe(ctx, "TaskService/List", async {
            let r = request.into_inner();
            let page_size = paging::page_size(r.limit)?;
            let from = paging::position_token(&r.page_token)?;
            let filter = TaskFilter {
                status: task_status_from_proto(r.status)?,
                plan_id: crate::convert::non_empty(r.plan_id),
                assignee: crate::convert::non_zero(r.assignee),
                limit: 0,
            };
            let ((mut tasks, mut next), header) = read(ctx, r.header.as_ref(), |sm| {
                copy_tasks(sm, &filter, from, page_size.min(paging::LOCKED_CHUNK))
            })
            .await?;
            // The rest of the page in more chunks, each under the lock again: apply (which
            // takes it to write) gets in between, instead of waiting while a whole page of
            // 10,000 tasks is copied. Tasks are never removed, so positions stay valid; like
            // consecutive pages, the chunks are not one snapshot.
            while let Some(position) = next.filter(|_| tasks.len() < page_size) {
                let want = (page_size - tasks.len()).min(paging::LOCKED_CHUNK);
                let (more, after) = ctx.state.read(|sm| copy_tasks(sm, &filter, position, want));
                tasks.extend(more);
                next = after;
            }
            Ok(ListTasksResponse {
                header,
                tasks: tasks.iter().map(task_to_proto).collect(),
                next_page_token: next.map(|n| n.to_string()).unwrap_or_default(),
            })
        })
        .await
    }
}

/// Up to `count` tasks `filter` selects from position `from`, cloned (under the state lock:
/// nothing else), and where the listing continues when they filled the count.
fn copy_tasks(
    sm: &percy_statemachine::StateMachine,
    filter: &TaskFilter,
    from: usize,
    count: usize,
) -> (Vec<percy_statemachine::Task>, Option<usize>) {
    let page = sm.tasks_page(filter, from, count);
    (page.tasks.into_iter().cloned().collect(), page.next)
}

/// A compare-and-swap claim this replica already knows to be lost is refused without a Raft
/// round trip (as NATS does for a wrong last revision); see `StateMachine::lost_claim` for
/// when that is certain (never for a retry of a request that was already applied).
fn refuse_stale_claim(
    ctx: &NodeContext,
    header: Option<&RequestHeader>,
    task_id: &str,
    expected: u64,
) -> Result<(), Status> {
    let session = session(header);
    match ctx
        .state
        .read(|sm| sm.lost_claim(task_id, expected, session))
    {
        Some(refusal) => Err(command_error_to_status(refusal)),
        None => Ok(()),
    }
}
