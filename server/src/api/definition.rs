//! `percy.v1.DefinitionService`: declarative agent definitions (`percyctl apply -f`).

use std::sync::Arc;

use percy_proto::v1::definition_service_server::DefinitionService;
use percy_proto::v1::*;
use percy_statemachine::{Op, Outcome};
use tonic::{Request, Response, Status};

use super::{observe, read, unexpected, write};
use crate::context::NodeContext;
use crate::convert::{definition_spec_from_proto, definition_to_proto, desired_state_from_proto};

pub struct DefinitionApi {
    pub ctx: Arc<NodeContext>,
}

fn name(name: String) -> Result<String, Status> {
    if name.is_empty() {
        Err(Status::invalid_argument("name is required"))
    } else {
        Ok(name)
    }
}

#[tonic::async_trait]
impl DefinitionService for DefinitionApi {
    async fn apply(
        &self,
        request: Request<ApplyDefinitionsRequest>,
    ) -> Result<Response<ApplyDefinitionsResponse>, Status> {
        let ctx = &self.ctx;
        observe(ctx, "DefinitionService/Apply", async {
            let r = request.into_inner();
            let definitions = r
                .definitions
                .into_iter()
                .map(definition_spec_from_proto)
                .collect::<Result<Vec<_>, _>>()?;
            match write(ctx, r.header.as_ref(), Op::ApplyDefinitions { definitions }).await? {
                (Outcome::DefinitionsApplied(summary), header) => Ok(ApplyDefinitionsResponse {
                    header,
                    created: summary.created,
                    updated: summary.updated,
                    unchanged: summary.unchanged,
                }),
                (other, _) => Err(unexpected(other)),
            }
        })
        .await
    }

    async fn set_state(
        &self,
        request: Request<SetDefinitionStateRequest>,
    ) -> Result<Response<DefinitionResponse>, Status> {
        let ctx = &self.ctx;
        observe(ctx, "DefinitionService/SetState", async {
            let r = request.into_inner();
            let desired = desired_state_from_proto(r.desired)?
                .ok_or_else(|| Status::invalid_argument("desired must be RUNNING or STOPPED"))?;
            let op = Op::SetDefinitionState {
                name: name(r.name)?,
                desired,
            };
            match write(ctx, r.header.as_ref(), op).await? {
                (Outcome::DefinitionUpdated(definition), header) => Ok(DefinitionResponse {
                    header,
                    definition: Some(definition_to_proto(&definition)),
                }),
                (other, _) => Err(unexpected(other)),
            }
        })
        .await
    }

    async fn get(
        &self,
        request: Request<GetDefinitionRequest>,
    ) -> Result<Response<DefinitionResponse>, Status> {
        let ctx = &self.ctx;
        observe(ctx, "DefinitionService/Get", async {
            let r = request.into_inner();
            let name = name(r.name)?;
            let (definition, header) = read(ctx, r.header.as_ref(), |sm| {
                sm.definition(&name).map(definition_to_proto)
            })
            .await?;
            let definition =
                definition.ok_or_else(|| Status::not_found(format!("no definition {name:?}")))?;
            Ok(DefinitionResponse {
                header,
                definition: Some(definition),
            })
        })
        .await
    }

    async fn list(
        &self,
        request: Request<ListDefinitionsRequest>,
    ) -> Result<Response<ListDefinitionsResponse>, Status> {
        let ctx = &self.ctx;
        observe(ctx, "DefinitionService/List", async {
            let r = request.into_inner();
            let (definitions, header) = read(ctx, r.header.as_ref(), |sm| {
                sm.definitions()
                    .into_iter()
                    .map(definition_to_proto)
                    .collect()
            })
            .await?;
            Ok(ListDefinitionsResponse {
                header,
                definitions,
            })
        })
        .await
    }
}
