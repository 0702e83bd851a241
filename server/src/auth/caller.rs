//! Who is calling: the token a request was authenticated with, as the handler sees it.
//!
//! [`super::layer`] runs each public handler inside a task-local scope holding the caller, so
//! the checks deep in the write path ([`super::ops`], through `api::edge::write`) need no extra
//! parameter in every handler. A handler that returns a stream must read [`current`] before it
//! returns: the stream is polled outside the scope.

use percy_statemachine::{Role, Token, TokenId};
use tonic::Status;

use crate::context::NodeContext;

/// The identity a token gives its bearer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub token_id: TokenId,
    pub role: Role,
    /// The agent an agent token acts as.
    pub agent: Option<String>,
    /// The token's name: what a message's `from` says.
    pub name: String,
}

impl Caller {
    pub fn of(token: &Token) -> Self {
        Self {
            token_id: token.id,
            role: token.role,
            agent: token.agent.clone(),
            name: token.name.clone(),
        }
    }

    /// A caller with an admin client certificate instead of a token (token id 0: none).
    pub fn admin_certificate() -> Self {
        Self {
            token_id: 0,
            role: Role::Admin,
            agent: None,
            name: crate::tls::ADMIN_CERT_NAME.to_owned(),
        }
    }

    /// The name messages from this caller carry: the agent's name for an agent token.
    pub fn sender(&self) -> &str {
        self.agent.as_deref().unwrap_or(&self.name)
    }
}

tokio::task_local! {
    pub(super) static CALLER: Caller;
}

/// The caller of the request being handled: `None` when this node runs without `--auth`.
/// With `--auth`, a handler that runs outside the authenticating layer is refused rather than
/// let through (fail closed).
pub fn current(ctx: &NodeContext) -> Result<Option<Caller>, Status> {
    if !ctx.config.auth {
        return Ok(None);
    }
    CALLER
        .try_with(|caller| Some(caller.clone()))
        .map_err(|_| Status::permission_denied("this request carries no checked credential"))
}
