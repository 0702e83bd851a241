//! `/v1/locks`: acquire, release, list path locks (`percy.v1.LockService`).

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::Json;
use percy_proto::v1 as pb;
use percy_proto::v1::lock_service_server::LockService;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::call::{grpc, Credential};
use super::error::{ApiError, ErrorBody};
use super::json::JsonBody;
use crate::api::lock::LockApi;
use crate::context::NodeContext;

/// exclusive or shared.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    #[default]
    Exclusive,
    Shared,
}

impl Mode {
    pub(super) fn to_proto(self) -> pb::LockMode {
        match self {
            Mode::Exclusive => pb::LockMode::Exclusive,
            Mode::Shared => pb::LockMode::Shared,
        }
    }

    fn of(mode: pb::LockMode) -> Self {
        match mode {
            pb::LockMode::Exclusive => Mode::Exclusive,
            pb::LockMode::Shared => Mode::Shared,
        }
    }
}

/// Locks to take, all or none.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Acquire {
    pub agent_id: u64,
    pub paths: Vec<String>,
    #[serde(default)]
    pub mode: Mode,
    #[serde(default)]
    pub task_id: String,
    /// 0 or absent: until released (or the agent expires).
    #[serde(default)]
    pub ttl_ms: u64,
    /// How long to wait in line for a held lock; 0 or absent: refuse at once.
    #[serde(default)]
    pub wait_ms: u64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct GrantJson {
    pub path: String,
    pub mode: Mode,
    pub agent_id: u64,
    /// Present it with every write the lock guards.
    pub fencing_token: u64,
    /// 0: no TTL.
    pub expires_at_ms: u64,
}

fn grant(g: pb::LockGrant) -> GrantJson {
    GrantJson {
        mode: Mode::of(g.mode()),
        path: g.path,
        agent_id: g.agent_id,
        fencing_token: g.fencing_token,
        expires_at_ms: g.expires_at_ms,
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Granted {
    pub grants: Vec<GrantJson>,
}

/// Locks to release.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Release {
    pub agent_id: u64,
    /// Empty or absent: every lock of the agent.
    #[serde(default)]
    pub paths: Vec<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Released {
    pub released: Vec<String>,
    pub granted_to_waiters: Vec<GrantJson>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only paths starting with this.
    pub prefix: Option<String>,
    /// Page size: absent = 1000; at most 10000.
    pub limit: Option<u32>,
    /// The previous page's `next_page_token`.
    pub page_token: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct HolderJson {
    pub agent_id: u64,
    pub fencing_token: u64,
    pub task_id: String,
    pub acquired_at_ms: u64,
    pub expires_at_ms: u64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LockJson {
    pub path: String,
    pub mode: Mode,
    pub holders: Vec<HolderJson>,
    pub revision: u64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct WaiterJson {
    pub agent_id: u64,
    pub paths: Vec<String>,
    pub mode: Mode,
    pub wait_deadline_ms: u64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LockList {
    pub locks: Vec<LockJson>,
    pub waiters: Vec<WaiterJson>,
    /// Set when the page was full: pass it as `page_token` for the next one.
    pub next_page_token: String,
}

#[utoipa::path(post, path = "/v1/locks/acquire", tag = "locks", request_body = Acquire,
    responses((status = 200, body = Granted), (status = "4XX", body = ErrorBody)))]
pub async fn acquire(
    State(ctx): State<Arc<NodeContext>>,
    credential: Credential,
    body: JsonBody<Acquire>,
) -> Result<Json<Granted>, ApiError> {
    let api = LockApi { ctx: ctx.clone() };
    let b = body.0;
    let request = pb::AcquireLocksRequest {
        header: None,
        agent_id: b.agent_id,
        paths: b.paths,
        mode: b.mode.to_proto().into(),
        task_id: b.task_id,
        ttl_ms: b.ttl_ms,
        wait_ms: b.wait_ms,
    };
    let answer = grpc(
        &ctx,
        credential,
        "/percy.v1.LockService/Acquire",
        request,
        |r| api.acquire(r),
    )
    .await?;
    Ok(Json(Granted {
        grants: answer.grants.into_iter().map(grant).collect(),
    }))
}

#[utoipa::path(post, path = "/v1/locks/release", tag = "locks", request_body = Release,
    responses((status = 200, body = Released), (status = "4XX", body = ErrorBody)))]
pub async fn release(
    State(ctx): State<Arc<NodeContext>>,
    credential: Credential,
    body: JsonBody<Release>,
) -> Result<Json<Released>, ApiError> {
    let api = LockApi { ctx: ctx.clone() };
    let request = pb::ReleaseLocksRequest {
        header: None,
        agent_id: body.0.agent_id,
        paths: body.0.paths,
    };
    let answer = grpc(
        &ctx,
        credential,
        "/percy.v1.LockService/Release",
        request,
        |r| api.release(r),
    )
    .await?;
    Ok(Json(Released {
        released: answer.released,
        granted_to_waiters: answer.granted_to_waiters.into_iter().map(grant).collect(),
    }))
}

#[utoipa::path(get, path = "/v1/locks", tag = "locks", params(ListQuery),
    responses((status = 200, body = LockList), (status = "4XX", body = ErrorBody)))]
pub async fn list(
    State(ctx): State<Arc<NodeContext>>,
    credential: Credential,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<LockList>, ApiError> {
    let Query(query) = query?;
    let api = LockApi { ctx: ctx.clone() };
    let request = pb::ListLocksRequest {
        header: None,
        prefix: query.prefix.unwrap_or_default(),
        limit: query.limit.unwrap_or(0),
        page_token: query.page_token.unwrap_or_default(),
    };
    let answer = grpc(
        &ctx,
        credential,
        "/percy.v1.LockService/List",
        request,
        |r| api.list(r),
    )
    .await?;
    Ok(Json(LockList {
        locks: answer
            .locks
            .into_iter()
            .map(|l| LockJson {
                mode: Mode::of(l.mode()),
                path: l.path,
                holders: l
                    .holders
                    .into_iter()
                    .map(|h| HolderJson {
                        agent_id: h.agent_id,
                        fencing_token: h.fencing_token,
                        task_id: h.task_id,
                        acquired_at_ms: h.acquired_at_ms,
                        expires_at_ms: h.expires_at_ms,
                    })
                    .collect(),
                revision: l.revision,
            })
            .collect(),
        waiters: answer
            .waiters
            .into_iter()
            .map(|w| WaiterJson {
                mode: Mode::of(w.mode()),
                agent_id: w.agent_id,
                paths: w.paths,
                wait_deadline_ms: w.wait_deadline_ms,
            })
            .collect(),
        next_page_token: answer.next_page_token,
    }))
}
