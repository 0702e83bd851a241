//! Kubernetes-style probes, open to everyone (like `/metrics`): `GET /livez` (the process
//! serves) and `GET /readyz` (this node knows a leader and has applied everything committed).

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

use crate::context::NodeContext;

/// How long readiness waits for the leader to confirm its commit index. Shorter than a
/// probe's usual one-second timeout would be too tight on a loaded machine; a probe with a
/// shorter timeout fails either way.
const READY_TIMEOUT: Duration = Duration::from_secs(3);

/// A probe's answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct Probe {
    /// `ok`, or `unavailable` with a reason.
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub node_id: u64,
    /// 0 when no leader is known.
    pub leader_id: u64,
    pub applied_index: u64,
}

fn probe(ctx: &NodeContext, reason: Option<String>) -> (StatusCode, Json<Probe>) {
    let m = ctx.raft.metrics().borrow().clone();
    let code = if reason.is_some() {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    let body = Probe {
        status: if reason.is_some() {
            "unavailable"
        } else {
            "ok"
        }
        .to_owned(),
        reason,
        node_id: ctx.node_id,
        leader_id: m.current_leader.unwrap_or(0),
        applied_index: m.last_applied.map(|l| l.index).unwrap_or(0),
    };
    (code, Json(body))
}

#[utoipa::path(get, path = "/livez", tag = "health",
    responses((status = 200, body = Probe)))]
pub async fn livez(State(ctx): State<Arc<NodeContext>>) -> (StatusCode, Json<Probe>) {
    probe(&ctx, None)
}

#[utoipa::path(get, path = "/readyz", tag = "health",
    responses((status = 200, body = Probe), (status = 503, body = Probe)))]
pub async fn readyz(State(ctx): State<Arc<NodeContext>>) -> (StatusCode, Json<Probe>) {
    probe(&ctx, not_ready(&ctx).await)
}

/// Why this node should not take traffic yet, if it should not.
async fn not_ready(ctx: &NodeContext) -> Option<String> {
    if let Some(refusal) = ctx.removal.refusal(ctx.node_id) {
        return Some(refusal.message().to_owned());
    }
    if ctx.leader().is_none() {
        return Some("no leader known".to_owned());
    }
    // The read barrier learns the leader's commit index (the leader confirms it with a
    // quorum) and waits until this node has applied up to it: exactly "caught up". Only a
    // follower's local metrics would not do: openraft 0.9 publishes no commit index there.
    match tokio::time::timeout(READY_TIMEOUT, crate::read::linearizable(ctx)).await {
        Ok(Ok(_)) => None,
        Ok(Err(status)) => Some(format!(
            "not caught up with the leader: {}",
            status.message()
        )),
        Err(_) => Some(format!(
            "not caught up with the leader's commit index within {} s",
            READY_TIMEOUT.as_secs()
        )),
    }
}
