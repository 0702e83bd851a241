//! `GET /v1/cluster/status` (`percy.v1.ClusterService/Status`).

use std::sync::Arc;

use axum::extract::State;
use axum::Extension;
use axum::Json;
use percy_proto::v1 as pb;
use percy_proto::v1::cluster_service_server::ClusterService;
use serde::Serialize;
use utoipa::ToSchema;

use super::call::{grpc, Credential};
use super::error::{ApiError, ErrorBody};
use crate::api::cluster::ClusterApi;
use crate::context::NodeContext;
use crate::storage::DataDirIdentity;

#[derive(Debug, Serialize, ToSchema)]
pub struct MemberJson {
    pub id: u64,
    pub addr: String,
    pub voter: bool,
}

/// This node's view of the cluster.
#[derive(Debug, Serialize, ToSchema)]
pub struct ClusterStatus {
    pub node_id: u64,
    /// 0 when no leader is known.
    pub leader_id: u64,
    pub term: u64,
    pub last_log_index: u64,
    pub commit_index: u64,
    pub applied_index: u64,
    pub members: Vec<MemberJson>,
    /// Leader, Follower, Candidate or Learner.
    pub state: String,
}

#[utoipa::path(get, path = "/v1/cluster/status", tag = "cluster",
    responses((status = 200, body = ClusterStatus), (status = "4XX", body = ErrorBody)))]
pub async fn status(
    State(ctx): State<Arc<NodeContext>>,
    Extension(identity): Extension<DataDirIdentity>,
    credential: Credential,
) -> Result<Json<ClusterStatus>, ApiError> {
    let api = ClusterApi {
        ctx: ctx.clone(),
        identity,
    };
    let request = pb::ClusterStatusRequest { header: None };
    let s = grpc(
        &ctx,
        credential,
        "/percy.v1.ClusterService/Status",
        request,
        |r| api.status(r),
    )
    .await?;
    Ok(Json(ClusterStatus {
        node_id: s.node_id,
        leader_id: s.leader_id,
        term: s.term,
        last_log_index: s.last_log_index,
        commit_index: s.commit_index,
        applied_index: s.applied_index,
        members: s
            .members
            .into_iter()
            .map(|m| MemberJson {
                id: m.id,
                addr: m.addr,
                voter: m.voter,
            })
            .collect(),
        state: s.state,
    }))
}
