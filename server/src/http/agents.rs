//! `/v1/agents`: register and list (`percy.v1.AgentService`). Heartbeats stay on gRPC
//! (`KeepAlive` streams): an agent that registers here must keep itself alive there, or with
//! a `percyctl`/worker process.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::Json;
use percy_proto::v1 as pb;
use percy_proto::v1::agent_service_server::AgentService;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::call::{grpc, Credential};
use super::error::{ApiError, ErrorBody};
use super::json::{AgentJson, JsonBody};
use crate::api::agent::AgentApi;
use crate::context::NodeContext;

/// An agent to register (or re-register: the same name returns the same agent).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterAgent {
    pub name: String,
    #[serde(default)]
    pub node: String,
    #[serde(default)]
    pub capabilities: Vec<String>,
    #[serde(default)]
    pub labels: HashMap<String, String>,
    /// 0 or absent: 1.
    #[serde(default)]
    pub max_concurrent: u32,
    /// 0 or absent: the server's default.
    #[serde(default)]
    pub ttl_ms: u64,
}

/// A registration.
#[derive(Debug, Serialize, ToSchema)]
pub struct Registered {
    pub agent: AgentJson,
    /// False when the name was already registered.
    pub created: bool,
    pub heartbeat_interval_ms: u64,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Also expired and deregistered agents.
    pub include_inactive: Option<bool>,
    /// Page size: absent = 1000; at most 10000.
    pub limit: Option<u32>,
    /// The previous page's `next_page_token`.
    pub page_token: Option<String>,
}

/// The agents.
#[derive(Debug, Serialize, ToSchema)]
pub struct AgentList {
    pub agents: Vec<AgentJson>,
    /// Set when the page was full: pass it as `page_token` for the next one.
    pub next_page_token: String,
}

#[utoipa::path(post, path = "/v1/agents", tag = "agents", request_body = RegisterAgent,
    responses((status = 200, body = Registered), (status = "4XX", body = ErrorBody)))]
pub async fn register(
    State(ctx): State<Arc<NodeContext>>,
    credential: Credential,
    body: JsonBody<RegisterAgent>,
) -> Result<Json<Registered>, ApiError> {
    let api = AgentApi { ctx: ctx.clone() };
    let b = body.0;
    let request = pb::RegisterAgentRequest {
        header: None,
        name: b.name,
        node: b.node,
        capabilities: b.capabilities,
        labels: b.labels,
        max_concurrent: b.max_concurrent,
        ttl_ms: b.ttl_ms,
    };
    let answer = grpc(
        &ctx,
        credential,
        "/percy.v1.AgentService/Register",
        request,
        |r| api.register(r),
    )
    .await?;
    let agent = answer
        .agent
        .ok_or_else(|| ApiError(tonic::Status::internal("the answer carries no agent")))?;
    Ok(Json(Registered {
        agent: agent.into(),
        created: answer.created,
        heartbeat_interval_ms: answer.heartbeat_interval_ms,
    }))
}

#[utoipa::path(get, path = "/v1/agents", tag = "agents", params(ListQuery),
    responses((status = 200, body = AgentList), (status = "4XX", body = ErrorBody)))]
pub async fn list(
    State(ctx): State<Arc<NodeContext>>,
    credential: Credential,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<AgentList>, ApiError> {
    let Query(query) = query?;
    let api = AgentApi { ctx: ctx.clone() };
    let request = pb::ListAgentsRequest {
        header: None,
        include_inactive: query.include_inactive.unwrap_or(false),
        limit: query.limit.unwrap_or(0),
        page_token: query.page_token.unwrap_or_default(),
    };
    let answer = grpc(
        &ctx,
        credential,
        "/percy.v1.AgentService/List",
        request,
        |r| api.list(r),
    )
    .await?;
    Ok(Json(AgentList {
        agents: answer.agents.into_iter().map(AgentJson::from).collect(),
        next_page_token: answer.next_page_token,
    }))
}
