//! `/v1/plans`: submit a DAG of tasks, get a plan's tasks (`percy.v1.PlanService`).

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use percy_proto::v1 as pb;
use percy_proto::v1::plan_service_server::PlanService;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::call::{grpc, Credential};
use super::error::{ApiError, ErrorBody};
use super::json::{JsonBody, TaskJson};
use super::tasks::SubmitTask;
use crate::api::plan::PlanApi;
use crate::context::NodeContext;

/// A plan: its tasks, submitted all or none (a cycle or unknown dependency refuses it whole).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubmitPlan {
    /// Empty or absent: the server makes one.
    #[serde(default)]
    pub plan_id: String,
    pub tasks: Vec<SubmitTask>,
}

/// A plan and its tasks.
#[derive(Debug, Serialize, ToSchema)]
pub struct PlanAnswer {
    pub plan_id: String,
    pub tasks: Vec<TaskJson>,
}

#[utoipa::path(post, path = "/v1/plans", tag = "plans", request_body = SubmitPlan,
    responses((status = 201, body = PlanAnswer), (status = "4XX", body = ErrorBody)))]
pub async fn submit(
    State(ctx): State<Arc<NodeContext>>,
    credential: Credential,
    body: JsonBody<SubmitPlan>,
) -> Result<(StatusCode, Json<PlanAnswer>), ApiError> {
    let api = PlanApi { ctx: ctx.clone() };
    let request = pb::SubmitPlanRequest {
        header: None,
        plan_id: body.0.plan_id,
        tasks: body
            .0
            .tasks
            .into_iter()
            .map(SubmitTask::into_proto)
            .collect(),
    };
    let answer = grpc(
        &ctx,
        credential,
        "/percy.v1.PlanService/Submit",
        request,
        |r| api.submit(r),
    )
    .await?;
    Ok((
        StatusCode::CREATED,
        Json(PlanAnswer {
            plan_id: answer.plan_id,
            tasks: answer.tasks.into_iter().map(TaskJson::from).collect(),
        }),
    ))
}

#[utoipa::path(get, path = "/v1/plans/{id}", tag = "plans",
    params(("id" = String, Path, description = "plan id")),
    responses((status = 200, body = PlanAnswer), (status = "4XX", body = ErrorBody)))]
pub async fn get(
    State(ctx): State<Arc<NodeContext>>,
    credential: Credential,
    Path(id): Path<String>,
) -> Result<Json<PlanAnswer>, ApiError> {
    let api = PlanApi { ctx: ctx.clone() };
    let request = pb::GetPlanRequest {
        header: None,
        plan_id: id,
    };
    let answer = grpc(
        &ctx,
        credential,
        "/percy.v1.PlanService/Get",
        request,
        |r| api.get(r),
    )
    .await?;
    Ok(Json(PlanAnswer {
        plan_id: answer.plan_id,
        tasks: answer.tasks.into_iter().map(TaskJson::from).collect(),
    }))
}
