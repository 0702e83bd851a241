//! `percy.v1.PlanService`: a whole DAG of tasks submitted at once (validated as a whole by
//! the state machine), and a plan's tasks.

use std::sync::Arc;

use percy_proto::v1::plan_service_server::PlanService;
use percy_proto::v1::*;
use percy_statemachine::{Op, Outcome, TaskFilter};
use tonic::{Request, Response, Status};

use super::{observe, read, unexpected, write};
use crate::context::NodeContext;
use crate::convert::{non_empty, task_spec_from_proto, task_to_proto};

pub struct PlanApi {
    pub ctx: Arc<NodeContext>,
}

#[tonic::async_trait]
impl PlanService for PlanApi {
    async fn submit(
        &self,
        request: Request<SubmitPlanRequest>,
    ) -> Result<Response<SubmitPlanResponse>, Status> {
        let ctx = &self.ctx;
        observe(ctx, "PlanService/Submit", async {
            let r = request.into_inner();
            if r.tasks.is_empty() {
                return Err(Status::invalid_argument("a plan needs at least one task"));
            }
            let op = Op::SubmitPlan {
                plan_id: non_empty(r.plan_id),
                tasks: r.tasks.into_iter().map(task_spec_from_proto).collect(),
            };
            match write(ctx, r.header.as_ref(), op).await? {
                (Outcome::PlanSubmitted { plan_id, tasks }, header) => Ok(SubmitPlanResponse {
                    header,
                    plan_id,
                    tasks: tasks.iter().map(task_to_proto).collect(),
                }),
                (other, _) => Err(unexpected(other)),
            }
        })
        .await
    }

    async fn get(
        &self,
        request: Request<GetPlanRequest>,
    ) -> Result<Response<GetPlanResponse>, Status> {
        let ctx = &self.ctx;
        observe(ctx, "PlanService/Get", async {
            let r = request.into_inner();
            if r.plan_id.is_empty() {
                return Err(Status::invalid_argument("plan_id is required"));
            }
            let filter = TaskFilter {
                plan_id: Some(r.plan_id.clone()),
                ..TaskFilter::default()
            };
            let (tasks, header) = read(ctx, r.header.as_ref(), |sm| {
                sm.tasks(&filter)
                    .into_iter()
                    .map(task_to_proto)
                    .collect::<Vec<_>>()
            })
            .await?;
            if tasks.is_empty() {
                return Err(Status::not_found(format!("no plan {:?}", r.plan_id)));
            }
            Ok(GetPlanResponse {
                header,
                plan_id: r.plan_id,
                tasks,
            })
        })
        .await
    }
}
