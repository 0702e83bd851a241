//! `/v1/tasks`: submit, get, list (filters, pages), claim, start, complete, fail — each the
//! `percy.v1.TaskService` method of the same name, called in-process.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use percy_proto::v1 as pb;
use percy_proto::v1::task_service_server::TaskService;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::call::{grpc, Credential};
use super::error::{ApiError, ErrorBody};
use super::json::{JsonBody, TaskJson};
use crate::api::task::TaskApi;
use crate::context::NodeContext;

/// A task to submit.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubmitTask {
    /// Empty or absent: the server makes one.
    #[serde(default)]
    pub id: String,
    pub title: String,
    #[serde(default)]
    pub description: String,
    /// Capabilities an agent needs to claim it.
    #[serde(default)]
    pub requires: Vec<String>,
    /// Labels an agent must carry.
    #[serde(default)]
    pub selector: HashMap<String, String>,
    #[serde(default)]
    pub priority: i32,
    #[serde(default)]
    pub depends_on: Vec<String>,
    /// 0 or absent: 3.
    #[serde(default)]
    pub max_attempts: u32,
    /// 0 or absent: none.
    #[serde(default)]
    pub timeout_ms: u64,
}

impl SubmitTask {
    pub fn into_proto(self) -> pb::TaskSpec {
        pb::TaskSpec {
            id: self.id,
            title: self.title,
            description: self.description,
            payload: Vec::new(),
            requires: self.requires,
            selector: self.selector,
            priority: self.priority,
            depends_on: self.depends_on,
            max_attempts: self.max_attempts,
            timeout_ms: self.timeout_ms,
        }
    }
}

/// One task.
#[derive(Debug, Serialize, ToSchema)]
pub struct TaskAnswer {
    pub task: TaskJson,
}

/// A claim: the next task the agent can run, or (on `/v1/tasks/{id}/claim`) that task.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClaimTask {
    pub agent_id: u64,
    /// Claim only if the named task is still at this revision.
    #[serde(default)]
    pub expected_revision: Option<u64>,
}

/// What a claim got: no task when claim-next found nothing claimable.
#[derive(Debug, Serialize, ToSchema)]
pub struct ClaimAnswer {
    pub task: Option<TaskJson>,
}

/// Start a claimed task.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StartTask {
    pub agent_id: u64,
    pub claim_token: u64,
}

/// Complete a task.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CompleteTask {
    pub agent_id: u64,
    pub claim_token: u64,
    #[serde(default)]
    pub summary: String,
    #[serde(default)]
    pub branch: String,
    #[serde(default)]
    pub exit_code: Option<i32>,
    #[serde(default)]
    pub output_tail: String,
}

/// Fail a task.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FailTask {
    pub agent_id: u64,
    pub claim_token: u64,
    pub error: String,
}

/// Filters and page of a listing.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// blocked, ready, claimed, working, completed, failed or cancelled; absent: all.
    pub status: Option<String>,
    pub plan_id: Option<String>,
    /// Tasks assigned to this agent id.
    pub assignee: Option<u64>,
    /// Page size: absent = 1000; at most 10000.
    pub limit: Option<u32>,
    /// The previous page's `next_page_token`.
    pub page_token: Option<String>,
}

/// A page of tasks.
#[derive(Debug, Serialize, ToSchema)]
pub struct TaskPage {
    pub tasks: Vec<TaskJson>,
    /// Set when the page was full: pass it as `page_token` for the next one.
    pub next_page_token: String,
}

fn task_of(task: Option<pb::Task>) -> Result<TaskJson, ApiError> {
    task.map(TaskJson::from)
        .ok_or_else(|| ApiError(tonic::Status::internal("the answer carries no task")))
}

/// `blocked` → `TASK_STATUS_BLOCKED`.
fn parse_status(name: &str) -> Result<pb::TaskStatus, ApiError> {
    let upper = format!("TASK_STATUS_{}", name.to_ascii_uppercase());
    match pb::TaskStatus::from_str_name(&upper) {
        Some(pb::TaskStatus::Unspecified) | None => Err(ApiError::invalid(format!(
            "unknown status {name:?}: expected blocked, ready, claimed, working, completed, \
             failed or cancelled"
        ))),
        Some(status) => Ok(status),
    }
}

#[utoipa::path(post, path = "/v1/tasks", tag = "tasks", request_body = SubmitTask,
    responses((status = 201, body = TaskAnswer), (status = "4XX", body = ErrorBody)))]
pub async fn submit(
    State(ctx): State<Arc<NodeContext>>,
    credential: Credential,
    body: JsonBody<SubmitTask>,
) -> Result<(StatusCode, Json<TaskAnswer>), ApiError> {
    let api = TaskApi { ctx: ctx.clone() };
    let request = pb::SubmitTaskRequest {
        header: None,
        task: Some(body.0.into_proto()),
    };
    let answer = grpc(
        &ctx,
        credential,
        "/percy.v1.TaskService/Submit",
        request,
        |r| api.submit(r),
    )
    .await?;
    Ok((
        StatusCode::CREATED,
        Json(TaskAnswer {
            task: task_of(answer.task)?,
        }),
    ))
}

#[utoipa::path(get, path = "/v1/tasks/{id}", tag = "tasks",
    params(("id" = String, Path, description = "task id")),
    responses((status = 200, body = TaskAnswer), (status = "4XX", body = ErrorBody)))]
pub async fn get(
    State(ctx): State<Arc<NodeContext>>,
    credential: Credential,
    Path(id): Path<String>,
) -> Result<Json<TaskAnswer>, ApiError> {
    let api = TaskApi { ctx: ctx.clone() };
    let request = pb::GetTaskRequest {
        header: None,
        task_id: id,
    };
    let answer = grpc(
        &ctx,
        credential,
        "/percy.v1.TaskService/Get",
        request,
        |r| api.get(r),
    )
    .await?;
    Ok(Json(TaskAnswer {
        task: task_of(answer.task)?,
    }))
}

#[utoipa::path(get, path = "/v1/tasks", tag = "tasks", params(ListQuery),
    responses((status = 200, body = TaskPage), (status = "4XX", body = ErrorBody)))]
pub async fn list(
    State(ctx): State<Arc<NodeContext>>,
    credential: Credential,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<TaskPage>, ApiError> {
    let Query(query) = query?;
    let status = match &query.status {
        Some(name) => parse_status(name)?,
        None => pb::TaskStatus::Unspecified,
    };
    let api = TaskApi { ctx: ctx.clone() };
    let request = pb::ListTasksRequest {
        status: status.into(),
        plan_id: query.plan_id.unwrap_or_default(),
        assignee: query.assignee.unwrap_or(0),
        limit: query.limit.unwrap_or(0),
        page_token: query.page_token.unwrap_or_default(),
        ..Default::default()
    };
    let answer = grpc(
        &ctx,
        credential,
        "/percy.v1.TaskService/List",
        request,
        |r| api.list(r),
    )
    .await?;
    Ok(Json(TaskPage {
        tasks: answer.tasks.into_iter().map(TaskJson::from).collect(),
        next_page_token: answer.next_page_token,
    }))
}

async fn claim_as(
    ctx: Arc<NodeContext>,
    credential: Credential,
    task_id: String,
    body: ClaimTask,
) -> Result<Json<ClaimAnswer>, ApiError> {
    let api = TaskApi { ctx: ctx.clone() };
    let request = pb::ClaimTaskRequest {
        header: None,
        agent_id: body.agent_id,
        task_id,
        expected_revision: body.expected_revision,
        start: false,
    };
    let answer = grpc(
        &ctx,
        credential,
        "/percy.v1.TaskService/Claim",
        request,
        |r| api.claim(r),
    )
    .await?;
    Ok(Json(ClaimAnswer {
        task: answer.task.map(TaskJson::from),
    }))
}

#[utoipa::path(post, path = "/v1/tasks/claim", tag = "tasks", request_body = ClaimTask,
    description = "Claims the next task the agent can run (priority, then age); `task` is null when there is none.",
    responses((status = 200, body = ClaimAnswer), (status = "4XX", body = ErrorBody)))]
pub async fn claim_next(
    State(ctx): State<Arc<NodeContext>>,
    credential: Credential,
    body: JsonBody<ClaimTask>,
) -> Result<Json<ClaimAnswer>, ApiError> {
    if body.0.expected_revision.is_some() {
        return Err(ApiError::invalid(
            "expected_revision needs a task: POST /v1/tasks/{id}/claim",
        ));
    }
    claim_as(ctx, credential, String::new(), body.0).await
}

#[utoipa::path(post, path = "/v1/tasks/{id}/claim", tag = "tasks", request_body = ClaimTask,
    params(("id" = String, Path, description = "task id")),
    responses((status = 200, body = ClaimAnswer), (status = "4XX", body = ErrorBody)))]
pub async fn claim(
    State(ctx): State<Arc<NodeContext>>,
    credential: Credential,
    Path(id): Path<String>,
    body: JsonBody<ClaimTask>,
) -> Result<Json<ClaimAnswer>, ApiError> {
    claim_as(ctx, credential, id, body.0).await
}

#[utoipa::path(post, path = "/v1/tasks/{id}/start", tag = "tasks", request_body = StartTask,
    params(("id" = String, Path, description = "task id")),
    responses((status = 200, body = TaskAnswer), (status = "4XX", body = ErrorBody)))]
pub async fn start(
    State(ctx): State<Arc<NodeContext>>,
    credential: Credential,
    Path(id): Path<String>,
    body: JsonBody<StartTask>,
) -> Result<Json<TaskAnswer>, ApiError> {
    let api = TaskApi { ctx: ctx.clone() };
    let request = pb::StartTaskRequest {
        header: None,
        task_id: id,
        agent_id: body.0.agent_id,
        claim_token: body.0.claim_token,
    };
    let answer = grpc(
        &ctx,
        credential,
        "/percy.v1.TaskService/Start",
        request,
        |r| api.start(r),
    )
    .await?;
    Ok(Json(TaskAnswer {
        task: task_of(answer.task)?,
    }))
}

#[utoipa::path(post, path = "/v1/tasks/{id}/complete", tag = "tasks", request_body = CompleteTask,
    params(("id" = String, Path, description = "task id")),
    responses((status = 200, body = TaskAnswer), (status = "4XX", body = ErrorBody)))]
pub async fn complete(
    State(ctx): State<Arc<NodeContext>>,
    credential: Credential,
    Path(id): Path<String>,
    body: JsonBody<CompleteTask>,
) -> Result<Json<TaskAnswer>, ApiError> {
    let api = TaskApi { ctx: ctx.clone() };
    let b = body.0;
    let request = pb::CompleteTaskRequest {
        header: None,
        task_id: id,
        agent_id: b.agent_id,
        claim_token: b.claim_token,
        result: Some(pb::TaskResult {
            summary: b.summary,
            branch: b.branch,
            exit_code: b.exit_code,
            output_tail: b.output_tail,
        }),
        claim_next: false,
    };
    let answer = grpc(
        &ctx,
        credential,
        "/percy.v1.TaskService/Complete",
        request,
        |r| api.complete(r),
    )
    .await?;
    Ok(Json(TaskAnswer {
        task: task_of(answer.task)?,
    }))
}

#[utoipa::path(post, path = "/v1/tasks/{id}/fail", tag = "tasks", request_body = FailTask,
    params(("id" = String, Path, description = "task id")),
    responses((status = 200, body = TaskAnswer), (status = "4XX", body = ErrorBody)))]
pub async fn fail(
    State(ctx): State<Arc<NodeContext>>,
    credential: Credential,
    Path(id): Path<String>,
    body: JsonBody<FailTask>,
) -> Result<Json<TaskAnswer>, ApiError> {
    let api = TaskApi { ctx: ctx.clone() };
    let request = pb::FailTaskRequest {
        header: None,
        task_id: id,
        agent_id: body.0.agent_id,
        claim_token: body.0.claim_token,
        error: body.0.error,
    };
    let answer = grpc(
        &ctx,
        credential,
        "/percy.v1.TaskService/Fail",
        request,
        |r| api.fail(r),
    )
    .await?;
    Ok(Json(TaskAnswer {
        task: task_of(answer.task)?,
    }))
}
