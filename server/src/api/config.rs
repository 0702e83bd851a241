//! `percy.v1.ConfigService`: the `cluster` key/value bucket with compare-and-set.

use std::sync::Arc;

use percy_proto::v1::config_service_server::ConfigService;
use percy_proto::v1::*;
use percy_statemachine::{Op, Outcome};
use tonic::{Request, Response, Status};

use super::{observe, paging, read, unexpected, write};
use crate::context::NodeContext;
use crate::convert::config_to_proto;
use percy_proto::paging::MAX_CONFIG_PAGE_BYTES;

pub struct ConfigApi {
    pub ctx: Arc<NodeContext>,
}

fn key(key: String) -> Result<String, Status> {
    if key.is_empty() {
        Err(Status::invalid_argument("key is required"))
    } else {
        Ok(key)
    }
}

#[tonic::async_trait]
impl ConfigService for ConfigApi {
    async fn get(
        &self,
        request: Request<GetConfigRequest>,
    ) -> Result<Response<GetConfigResponse>, Status> {
        let ctx = &self.ctx;
        observe(ctx, "ConfigService/Get", async {
            let r = request.into_inner();
            let key = key(r.key)?;
            let (entry, header) = read(ctx, r.header.as_ref(), |sm| {
                sm.config(&key).map(config_to_proto)
            })
            .await?;
            Ok(GetConfigResponse { header, entry })
        })
        .await
    }

    async fn put(
        &self,
        request: Request<PutConfigRequest>,
    ) -> Result<Response<PutConfigResponse>, Status> {
        let ctx = &self.ctx;
        observe(ctx, "ConfigService/Put", async {
            let r = request.into_inner();
            let op = Op::PutConfig {
                key: key(r.key)?,
                value: r.value,
                expected_revision: r.expected_revision,
            };
            match write(ctx, r.header.as_ref(), op).await? {
                (Outcome::ConfigPut(entry), header) => Ok(PutConfigResponse {
                    header,
                    entry: Some(config_to_proto(&entry)),
                }),
                (other, _) => Err(unexpected(other)),
            }
        })
        .await
    }

    async fn delete(
        &self,
        request: Request<DeleteConfigRequest>,
    ) -> Result<Response<DeleteConfigResponse>, Status> {
        let ctx = &self.ctx;
        observe(ctx, "ConfigService/Delete", async {
            let r = request.into_inner();
            let op = Op::DeleteConfig {
                key: key(r.key)?,
                expected_revision: r.expected_revision,
            };
            match write(ctx, r.header.as_ref(), op).await? {
                (Outcome::ConfigDeleted { .. }, header) => Ok(DeleteConfigResponse { header }),
                (other, _) => Err(unexpected(other)),
            }
        })
        .await
    }

    async fn list(
        &self,
        request: Request<ListConfigRequest>,
    ) -> Result<Response<ListConfigResponse>, Status> {
        let ctx = &self.ctx;
        observe(ctx, "ConfigService/List", async {
            let r = request.into_inner();
            let page_size = paging::page_size(r.limit)?;
            let after = paging::key_token(&r.page_token);
            let ((entries, next_page_token), header) = read(ctx, r.header.as_ref(), |sm| {
                paging::take_page(
                    sm.config_after(&r.prefix, after),
                    page_size,
                    MAX_CONFIG_PAGE_BYTES,
                    |e| e.value.len(),
                    |e| e.key.clone(),
                )
            })
            .await?;
            Ok(ListConfigResponse {
                header,
                entries: entries.iter().map(config_to_proto).collect(),
                next_page_token,
            })
        })
        .await
    }
}
