//! The HTTP/JSON API on the node's one port, next to gRPC: tonic hands every request that is
//! not a gRPC method to the axum router built here (`node::routes` merges it), so the port
//! speaks TLS for both when TLS is on.
//!
//! - [`health`]: `/livez`, `/readyz` (open to all, like `/metrics`).
//! - [`cluster`], [`agents`], [`tasks`], [`plans`], [`locks`], [`config`], [`messages`]:
//!   `/v1/...`, each endpoint the gRPC handler of the same
//!   method called in-process through [`call`] (same credential check, validation, reads).
//! - [`github`]: `POST /v1/webhooks/github`, issues → tasks, signed deliveries only
//!   ([`signature`]).
//! - [`error`]: every failure as `{"code", "message"}` with the matching HTTP status.
//! - [`openapi`]: `/v1/openapi.json`, generated.

mod agents;
mod call;
mod cluster;
mod config;
mod error;
#[cfg(feature = "fuzzing")]
pub(crate) mod fuzzing;
mod github;
mod health;
mod json;
mod locks;
mod messages;
mod openapi;
mod plans;
mod signature;
mod tasks;

use std::sync::Arc;

use axum::routing::{get, post};
use axum::Router;
use tonic::Status;

use crate::context::NodeContext;
use crate::storage::DataDirIdentity;
use error::ApiError;

/// Every HTTP route, bound to the node.
pub fn router(ctx: Arc<NodeContext>, identity: DataDirIdentity) -> Router {
    Router::new()
        .route("/livez", get(health::livez))
        .route("/readyz", get(health::readyz))
        .route("/v1/openapi.json", get(openapi::document))
        .route("/v1/cluster/status", get(cluster::status))
        .route("/v1/agents", get(agents::list).post(agents::register))
        .route("/v1/tasks", get(tasks::list).post(tasks::submit))
        .route("/v1/tasks/claim", post(tasks::claim_next))
        .route("/v1/tasks/{id}", get(tasks::get))
        .route("/v1/tasks/{id}/claim", post(tasks::claim))
        .route("/v1/tasks/{id}/start", post(tasks::start))
        .route("/v1/tasks/{id}/complete", post(tasks::complete))
        .route("/v1/tasks/{id}/fail", post(tasks::fail))
        .route("/v1/plans", post(plans::submit))
        .route("/v1/plans/{id}", get(plans::get))
        .route("/v1/locks", get(locks::list))
        .route("/v1/locks/acquire", post(locks::acquire))
        .route("/v1/locks/release", post(locks::release))
        .route("/v1/config", get(config::list))
        .route("/v1/config/{key}", get(config::get).put(config::put))
        .route("/v1/messages", get(messages::history).post(messages::send))
        .route("/v1/webhooks/github", post(github::webhook))
        // tonic's router owns the fallback (gRPC UNIMPLEMENTED); an unknown path under /v1/
        // gets a JSON answer.
        .route("/v1/{*rest}", axum::routing::any(not_found))
        .layer(axum::Extension(identity))
        .with_state(ctx)
}

async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError(Status::not_found(format!("no endpoint {}", uri.path())))
}
