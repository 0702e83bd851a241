//! `percy.v1.TokenService`: create (the secret is made here and shown once; only its hash is
//! proposed), list (no secrets) and revoke access tokens. Admin only (`auth::access`).

use std::sync::Arc;

use percy_proto::v1::token_service_server::TokenService;
use percy_proto::v1::*;
use percy_statemachine::{Op, Outcome, Role as SmRole, Token, TokenSpec};
use tonic::{Request, Response, Status};

use super::{observe, read, required_id, unexpected, write};
use crate::auth::secret;
use crate::context::NodeContext;

pub struct TokenApi {
    pub ctx: Arc<NodeContext>,
}

#[tonic::async_trait]
impl TokenService for TokenApi {
    async fn create(
        &self,
        request: Request<CreateTokenRequest>,
    ) -> Result<Response<CreateTokenResponse>, Status> {
        let ctx = &self.ctx;
        observe(ctx, "TokenService/Create", async {
            let r = request.into_inner();
            let role = role_from_proto(r.role)?;
            let secret = secret::generate();
            let spec = TokenSpec {
                role,
                agent: (!r.agent.is_empty()).then_some(r.agent),
                name: r.name,
                secret_sha256: secret::hash(&secret),
            };
            let op = Op::CreateToken {
                spec,
                bootstrap: false,
            };
            match write(ctx, r.header.as_ref(), op).await? {
                (Outcome::TokenCreated(token), header) => Ok(CreateTokenResponse {
                    header,
                    token: Some(token_to_proto(&token)),
                    secret,
                }),
                (other, _) => Err(unexpected(other)),
            }
        })
        .await
    }

    async fn list(
        &self,
        request: Request<ListTokensRequest>,
    ) -> Result<Response<ListTokensResponse>, Status> {
        let ctx = &self.ctx;
        observe(ctx, "TokenService/List", async {
            let r = request.into_inner();
            let (tokens, header) = read(ctx, r.header.as_ref(), |sm| {
                sm.tokens().into_iter().map(token_to_proto).collect()
            })
            .await?;
            Ok(ListTokensResponse { header, tokens })
        })
        .await
    }

    async fn revoke(
        &self,
        request: Request<RevokeTokenRequest>,
    ) -> Result<Response<RevokeTokenResponse>, Status> {
        let ctx = &self.ctx;
        observe(ctx, "TokenService/Revoke", async {
            let r = request.into_inner();
            let token_id = required_id(r.id, "id")?;
            match write(ctx, r.header.as_ref(), Op::RevokeToken { token_id }).await? {
                (Outcome::TokenRevoked(token), header) => Ok(RevokeTokenResponse {
                    header,
                    token: Some(token_to_proto(&token)),
                }),
                (other, _) => Err(unexpected(other)),
            }
        })
        .await
    }
}

fn role_from_proto(role: i32) -> Result<SmRole, Status> {
    match Role::try_from(role) {
        Ok(Role::Admin) => Ok(SmRole::Admin),
        Ok(Role::Operator) => Ok(SmRole::Operator),
        Ok(Role::Agent) => Ok(SmRole::Agent),
        Ok(Role::Reader) => Ok(SmRole::Reader),
        Ok(Role::Unspecified) | Err(_) => Err(Status::invalid_argument(
            "role is required: admin, operator, agent or reader",
        )),
    }
}

fn role_to_proto(role: SmRole) -> Role {
    match role {
        SmRole::Admin => Role::Admin,
        SmRole::Operator => Role::Operator,
        SmRole::Agent => Role::Agent,
        SmRole::Reader => Role::Reader,
    }
}

/// Everything but the secret's hash.
fn token_to_proto(token: &Token) -> TokenInfo {
    TokenInfo {
        id: token.id,
        role: role_to_proto(token.role).into(),
        agent: token.agent.clone().unwrap_or_default(),
        name: token.name.clone(),
        created_revision: token.created_revision,
        created_ms: token.created_ms,
    }
}
