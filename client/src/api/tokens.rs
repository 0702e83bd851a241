//! TokenService: access tokens for `percyd --auth` (admin tokens only).

use percy_proto::v1::token_service_client::TokenServiceClient;
use percy_proto::v1::{
    Consistency, CreateTokenRequest, CreateTokenResponse, ListTokensRequest, ListTokensResponse,
    RevokeTokenRequest, RevokeTokenResponse, Role,
};

use crate::{Client, ClientError};

impl Client {
    /// Creates a token; the response holds its secret, which is never shown again.
    /// `agent`: the agent name of an agent token (empty for other roles).
    pub async fn create_token(
        &self,
        role: Role,
        agent: &str,
        name: &str,
    ) -> Result<CreateTokenResponse, ClientError> {
        self.mutate(Default::default(), |channel, header| {
            let request = CreateTokenRequest {
                header: Some(header),
                role: role.into(),
                agent: agent.to_owned(),
                name: name.to_owned(),
            };
            async move { TokenServiceClient::new(channel).create(request).await }
        })
        .await
    }

    /// Every live token, without secrets.
    pub async fn list_tokens(&self) -> Result<ListTokensResponse, ClientError> {
        self.read(Consistency::Linearizable, |channel, header| {
            let request = ListTokensRequest {
                header: Some(header),
            };
            async move { TokenServiceClient::new(channel).list(request).await }
        })
        .await
    }

    /// Revokes a token by id.
    pub async fn revoke_token(&self, id: u64) -> Result<RevokeTokenResponse, ClientError> {
        self.mutate(Default::default(), |channel, header| {
            let request = RevokeTokenRequest {
                header: Some(header),
                id,
            };
            async move { TokenServiceClient::new(channel).revoke(request).await }
        })
        .await
    }
}
