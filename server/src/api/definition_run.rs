//! `percy.v1.DefinitionRunService`: the loops of definitions that run — a worker claims a run,
//! starts and finishes iterations under its run token and releases it; operators steer.

use std::sync::Arc;

use percy_proto::v1::definition_run_service_server::DefinitionRunService;
use percy_proto::v1::*;
use percy_statemachine::{Op, Outcome};
use tonic::{Request, Response, Status};

use super::{observe, read, required_id, unexpected, write};
use crate::context::NodeContext;
use crate::convert::{
    definition_run_to_proto, iteration_report_from_proto, iteration_to_proto,
    steering_message_to_proto,
};

pub struct DefinitionRunApi {
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
impl DefinitionRunService for DefinitionRunApi {
    async fn claim(
        &self,
        request: Request<ClaimRunRequest>,
    ) -> Result<Response<DefinitionRunResponse>, Status> {
        let ctx = &self.ctx;
        observe(ctx, "DefinitionRunService/Claim", async {
            let r = request.into_inner();
            let op = Op::ClaimDefinitionRun {
                name: name(r.name)?,
                agent_id: required_id(r.agent_id, "agent_id")?,
            };
            match write(ctx, r.header.as_ref(), op).await? {
                (Outcome::RunClaimed(run), header) => Ok(DefinitionRunResponse {
                    header,
                    run: Some(definition_run_to_proto(&run)),
                }),
                (other, _) => Err(unexpected(other)),
            }
        })
        .await
    }

    async fn start_iteration(
        &self,
        request: Request<RunTokenRequest>,
    ) -> Result<Response<IterationResponse>, Status> {
        let ctx = &self.ctx;
        observe(ctx, "DefinitionRunService/StartIteration", async {
            let r = request.into_inner();
            let op = Op::StartIteration {
                name: name(r.name)?,
                agent_id: required_id(r.agent_id, "agent_id")?,
                run_token: required_id(r.run_token, "run_token")?,
            };
            match write(ctx, r.header.as_ref(), op).await? {
                (Outcome::IterationStarted(iteration), header) => Ok(IterationResponse {
                    header,
                    iteration: Some(iteration_to_proto(&iteration)),
                }),
                (other, _) => Err(unexpected(other)),
            }
        })
        .await
    }

    async fn finish_iteration(
        &self,
        request: Request<FinishIterationRequest>,
    ) -> Result<Response<IterationResponse>, Status> {
        let ctx = &self.ctx;
        observe(ctx, "DefinitionRunService/FinishIteration", async {
            let r = request.into_inner();
            let op = Op::FinishIteration {
                name: name(r.name)?,
                agent_id: required_id(r.agent_id, "agent_id")?,
                run_token: required_id(r.run_token, "run_token")?,
                number: required_id(r.number, "number")?,
                report: iteration_report_from_proto(r.report.unwrap_or_default()),
            };
            match write(ctx, r.header.as_ref(), op).await? {
                (Outcome::IterationFinished(iteration), header) => Ok(IterationResponse {
                    header,
                    iteration: Some(iteration_to_proto(&iteration)),
                }),
                (other, _) => Err(unexpected(other)),
            }
        })
        .await
    }

    async fn release(
        &self,
        request: Request<RunTokenRequest>,
    ) -> Result<Response<DefinitionRunResponse>, Status> {
        let ctx = &self.ctx;
        observe(ctx, "DefinitionRunService/Release", async {
            let r = request.into_inner();
            let op = Op::ReleaseDefinitionRun {
                name: name(r.name)?,
                agent_id: required_id(r.agent_id, "agent_id")?,
                run_token: required_id(r.run_token, "run_token")?,
            };
            match write(ctx, r.header.as_ref(), op).await? {
                (Outcome::RunReleased(run), header) => Ok(DefinitionRunResponse {
                    header,
                    run: Some(definition_run_to_proto(&run)),
                }),
                (other, _) => Err(unexpected(other)),
            }
        })
        .await
    }

    async fn steer(
        &self,
        request: Request<SteerRequest>,
    ) -> Result<Response<SteerResponse>, Status> {
        let ctx = &self.ctx;
        observe(ctx, "DefinitionRunService/Steer", async {
            let r = request.into_inner();
            let op = Op::SteerDefinition {
                name: name(r.name)?,
                from: r.from,
                body: r.body,
            };
            match write(ctx, r.header.as_ref(), op).await? {
                (Outcome::SteeringQueued(message), header) => Ok(SteerResponse {
                    header,
                    message: Some(steering_message_to_proto(&message)),
                }),
                (other, _) => Err(unexpected(other)),
            }
        })
        .await
    }

    async fn get(
        &self,
        request: Request<GetRunRequest>,
    ) -> Result<Response<DefinitionRunResponse>, Status> {
        let ctx = &self.ctx;
        observe(ctx, "DefinitionRunService/Get", async {
            let r = request.into_inner();
            let name = name(r.name)?;
            let ((exists, run), header) = read(ctx, r.header.as_ref(), |sm| {
                (
                    sm.definition(&name).is_some(),
                    sm.definition_run(&name).map(definition_run_to_proto),
                )
            })
            .await?;
            if !exists {
                return Err(Status::not_found(format!("no definition {name:?}")));
            }
            // A definition that never ran has an empty run (numbering starts at 1).
            let run = run.unwrap_or_else(|| DefinitionRun {
                name: name.clone(),
                next_number: 1,
                first_number_of_start: 1,
                ..DefinitionRun::default()
            });
            Ok(DefinitionRunResponse {
                header,
                run: Some(run),
            })
        })
        .await
    }

    async fn list(
        &self,
        request: Request<ListRunsRequest>,
    ) -> Result<Response<ListRunsResponse>, Status> {
        let ctx = &self.ctx;
        observe(ctx, "DefinitionRunService/List", async {
            let r = request.into_inner();
            let (runs, header) = read(ctx, r.header.as_ref(), |sm| {
                sm.definition_runs()
                    .into_iter()
                    .map(definition_run_to_proto)
                    .collect()
            })
            .await?;
            Ok(ListRunsResponse { header, runs })
        })
        .await
    }
}
