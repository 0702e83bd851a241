//! ConfigService: the replicated key/value bucket with per-key revisions and CAS.

use percy_proto::v1::config_service_client::ConfigServiceClient;
use percy_proto::v1::{
    Consistency, DeleteConfigRequest, DeleteConfigResponse, GetConfigRequest, GetConfigResponse,
    ListConfigRequest, ListConfigResponse, PutConfigRequest, PutConfigResponse,
};

use super::paging::read_all_pages;
use crate::{Client, ClientError};

impl Client {
    /// Reads a key; `entry` is `None` when the key is absent.
    pub async fn get_config(
        &self,
        key: &str,
        consistency: Consistency,
    ) -> Result<GetConfigResponse, ClientError> {
        self.read(consistency, |channel, header| {
            let request = GetConfigRequest {
                header: Some(header),
                key: key.to_owned(),
            };
            async move { ConfigServiceClient::new(channel).get(request).await }
        })
        .await
    }

    /// Writes a key. `expected_revision`: `None` = unconditional, `Some(0)` = only if absent,
    /// `Some(r)` = only if the key is at revision `r` (else `FailedPrecondition`).
    pub async fn put_config(
        &self,
        key: &str,
        value: Vec<u8>,
        expected_revision: Option<u64>,
    ) -> Result<PutConfigResponse, ClientError> {
        self.mutate(Default::default(), |channel, header| {
            let request = PutConfigRequest {
                header: Some(header),
                key: key.to_owned(),
                value: value.clone(),
                expected_revision,
            };
            async move { ConfigServiceClient::new(channel).put(request).await }
        })
        .await
    }

    /// Deletes a key, optionally only if it is at `expected_revision`.
    pub async fn delete_config(
        &self,
        key: &str,
        expected_revision: Option<u64>,
    ) -> Result<DeleteConfigResponse, ClientError> {
        self.mutate(Default::default(), |channel, header| {
            let request = DeleteConfigRequest {
                header: Some(header),
                key: key.to_owned(),
                expected_revision,
            };
            async move { ConfigServiceClient::new(channel).delete(request).await }
        })
        .await
    }

    pub async fn list_config(
        &self,
        prefix: &str,
        consistency: Consistency,
    ) -> Result<ListConfigResponse, ClientError> {
        read_all_pages(|page_token| {
            self.read(consistency, move |channel, header| {
                let request = ListConfigRequest {
                    header: Some(header),
                    prefix: prefix.to_owned(),
                    limit: 0,
                    page_token: page_token.clone(),
                };
                async move { ConfigServiceClient::new(channel).list(request).await }
            })
        })
        .await
    }
}
