//! How an HTTP request reaches a gRPC handler: with the credential it presented (bearer token
//! header, or the admin client certificate when TLS is on), checked against the access table
//! of the gRPC method it stands for, then the handler called in-process, so validation,
//! linearizable reads and write routing are the gRPC ones.

use std::future::Future;
use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use tonic::{Request, Response, Status};

use super::error::ApiError;
use crate::auth::layer::{run_as, Presented};
use crate::context::NodeContext;

/// The credential of an HTTP request, as the gRPC layer would read it.
pub struct Credential(Presented);

impl<S: Send + Sync> FromRequestParts<S> for Credential {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        // `Presented::of` reads a request; only its headers and the connection's TLS details
        // (an extension) matter.
        let mut request = axum::http::Request::new(());
        *request.headers_mut() = parts.headers.clone();
        *request.extensions_mut() = parts.extensions.clone();
        Ok(Self(Presented::of(&request)))
    }
}

/// Calls the gRPC handler `handler` makes of `request`, as the gRPC method `path`
/// (`/percy.v1.TaskService/Submit`) with `credential`.
pub async fn grpc<Req, Res, F, Fut>(
    ctx: &Arc<NodeContext>,
    credential: Credential,
    path: &str,
    request: Req,
    handler: F,
) -> Result<Res, ApiError>
where
    F: FnOnce(Request<Req>) -> Fut,
    Fut: Future<Output = Result<Response<Res>, Status>>,
{
    run_as(ctx, path, credential.0, handler(Request::new(request)))
        .await
        .map(Response::into_inner)
        .map_err(ApiError)
}
