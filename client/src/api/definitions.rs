//! DefinitionService: declarative agent definitions (`percyctl apply -f`).

use percy_proto::v1::definition_service_client::DefinitionServiceClient;
use percy_proto::v1::{
    ApplyDefinitionsRequest, ApplyDefinitionsResponse, Consistency, DefinitionResponse,
    DefinitionSpec, DesiredState, GetDefinitionRequest, ListDefinitionsRequest,
    ListDefinitionsResponse, SetDefinitionStateRequest,
};

use crate::{Client, ClientError};

impl Client {
    /// Applies definitions; the response says which were created, updated or unchanged.
    pub async fn apply_definitions(
        &self,
        definitions: Vec<DefinitionSpec>,
    ) -> Result<ApplyDefinitionsResponse, ClientError> {
        self.mutate(Default::default(), |channel, header| {
            let request = ApplyDefinitionsRequest {
                header: Some(header),
                definitions: definitions.clone(),
            };
            async move { DefinitionServiceClient::new(channel).apply(request).await }
        })
        .await
    }

    /// Sets a definition's desired state (running / stopped).
    pub async fn set_definition_state(
        &self,
        name: &str,
        desired: DesiredState,
    ) -> Result<DefinitionResponse, ClientError> {
        self.mutate(Default::default(), |channel, header| {
            let request = SetDefinitionStateRequest {
                header: Some(header),
                name: name.to_owned(),
                desired: desired as i32,
            };
            async move {
                DefinitionServiceClient::new(channel)
                    .set_state(request)
                    .await
            }
        })
        .await
    }

    pub async fn get_definition(
        &self,
        name: &str,
        consistency: Consistency,
    ) -> Result<DefinitionResponse, ClientError> {
        self.read(consistency, |channel, header| {
            let request = GetDefinitionRequest {
                header: Some(header),
                name: name.to_owned(),
            };
            async move { DefinitionServiceClient::new(channel).get(request).await }
        })
        .await
    }

    pub async fn list_definitions(
        &self,
        consistency: Consistency,
    ) -> Result<ListDefinitionsResponse, ClientError> {
        self.read(consistency, |channel, header| {
            let request = ListDefinitionsRequest {
                header: Some(header),
            };
            async move { DefinitionServiceClient::new(channel).list(request).await }
        })
        .await
    }
}
