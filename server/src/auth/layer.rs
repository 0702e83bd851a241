//! [`Authenticated`]: the wrapper around each public gRPC service that checks the caller's
//! token before the handler runs (see the module docs of `auth`).

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use percy_proto::auth::{AUTHORIZATION, BEARER_PREFIX};
use percy_statemachine::Token;
use tonic::body::Body;
use tonic::codegen::{http, Service};
use tonic::server::NamedService;
use tonic::Status;

use super::access::access_of;
use super::caller::{Caller, CALLER};
use super::secret;
use crate::context::NodeContext;

/// A public service that, on a node with `--auth`, answers only callers with a valid token
/// whose role may call the method.
#[derive(Clone)]
pub struct Authenticated<S> {
    inner: S,
    ctx: Arc<NodeContext>,
}

impl<S> Authenticated<S> {
    pub fn new(inner: S, ctx: Arc<NodeContext>) -> Self {
        Self { inner, ctx }
    }
}

impl<S: NamedService> NamedService for Authenticated<S> {
    const NAME: &'static str = S::NAME;
}

impl<S> Service<http::Request<Body>> for Authenticated<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        // The clone is the one made ready by `poll_ready` (tower's rule for moving a service
        // into a future).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let ctx = self.ctx.clone();
        Box::pin(async move {
            if !ctx.config.auth {
                return inner.call(request).await;
            }
            // Owned copies: the request body is not `Sync`, so no reference to the request
            // may be held across the lookup's await.
            let path = request.uri().path().to_owned();
            let presented = Presented::of(&request);
            match check(&ctx, &path, presented).await {
                Ok(caller) => CALLER.scope(caller, inner.call(request)).await,
                Err(mut status) => {
                    // Refusals name the node like every answer does (add-node's identity
                    // probe reads it from a refusal).
                    crate::api::stamp_routing(&ctx, status.metadata_mut());
                    Ok(status.into_http())
                }
            }
        })
    }
}

/// The credential a call came with.
pub enum Presented {
    Token(String),
    /// A client certificate of the cluster CA naming the admin (`percyctl certs init`'s
    /// `admin.crt`).
    AdminCert,
    /// Why there is none.
    Nothing(Status),
}

impl Presented {
    /// What `request` presents: its bearer token, else an admin client certificate.
    pub fn of<B>(request: &http::Request<B>) -> Self {
        match bearer(request.headers()) {
            Ok(token) => Presented::Token(token.to_owned()),
            // A token wins over a certificate when a caller presents both.
            Err(_) if crate::tls::presents_admin_cert(request) => Presented::AdminCert,
            Err(missing) => Presented::Nothing(missing),
        }
    }
}

/// Runs `handler` as the gRPC method `path` would run behind [`Authenticated`]: on a node
/// with `--auth`, only for a caller whose credential `presented` may call `path`, and with that
/// caller known to the handler. The HTTP/JSON API (`crate::http`) calls the gRPC handlers
/// in-process through this, so both surfaces share one access table.
pub async fn run_as<T>(
    ctx: &NodeContext,
    path: &str,
    presented: Presented,
    handler: impl Future<Output = Result<T, Status>>,
) -> Result<T, Status> {
    if !ctx.config.auth {
        return handler.await;
    }
    let caller = check(ctx, path, presented).await?;
    CALLER.scope(caller, handler).await
}

/// Runs `handler` as `caller`, who was authenticated some other way than a token (the GitHub
/// webhook's signature); without `--auth`, as anyone.
pub async fn run_as_caller<T>(
    ctx: &NodeContext,
    caller: Caller,
    handler: impl Future<Output = Result<T, Status>>,
) -> Result<T, Status> {
    if !ctx.config.auth {
        return handler.await;
    }
    CALLER.scope(caller, handler).await
}

/// The caller behind a credential, or why it may not call this method.
async fn check(ctx: &NodeContext, path: &str, presented: Presented) -> Result<Caller, Status> {
    let caller = match presented {
        Presented::Token(token) => Caller::of(&find(ctx, &secret::hash(&token)).await?),
        Presented::AdminCert => Caller::admin_certificate(),
        Presented::Nothing(why) => return Err(why),
    };
    match access_of(path) {
        Some(access) if access.allows(caller.role) => Ok(caller),
        Some(_) => Err(Status::permission_denied(format!(
            "a {} token may not call {path}",
            caller.role
        ))),
        None => Err(Status::permission_denied(format!(
            "{path} is not open to any token"
        ))),
    }
}

/// The token in `authorization: Bearer <token>`.
fn bearer(headers: &http::HeaderMap) -> Result<&str, Status> {
    let missing = || {
        Status::unauthenticated(
            "this cluster requires a token: pass `percyctl --token` (or PERCY_TOKEN, \
             --token-file), or `authorization: Bearer <token>` metadata",
        )
    };
    let value = headers.get(AUTHORIZATION).ok_or_else(missing)?;
    let value = value
        .to_str()
        .map_err(|_| Status::unauthenticated("the authorization metadata is not text"))?;
    let token = value
        .strip_prefix(BEARER_PREFIX)
        .ok_or_else(|| {
            Status::unauthenticated("the authorization metadata is not `Bearer <token>`")
        })?
        .trim();
    if token.is_empty() {
        return Err(missing());
    }
    Ok(token)
}

/// The live token with this hash. A token this node does not know yet may have been created
/// moments ago through another node: before refusing it, catch up with the leader's commit
/// (one read barrier, paid only by unknown tokens).
async fn find(ctx: &NodeContext, hash: &[u8; 32]) -> Result<Token, Status> {
    let lookup = || ctx.state.read(|sm| sm.token_by_hash(hash).cloned());
    if let Some(token) = lookup() {
        return Ok(token);
    }
    if crate::read::linearizable(ctx).await.is_ok() {
        if let Some(token) = lookup() {
            return Ok(token);
        }
    }
    Err(Status::unauthenticated("unknown or revoked token"))
}
