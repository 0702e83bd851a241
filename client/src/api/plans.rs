//! PlanService: submit a DAG of tasks at once (validated as a whole), read it back.

use percy_proto::v1::plan_service_client::PlanServiceClient;
use percy_proto::v1::{
    Consistency, GetPlanRequest, GetPlanResponse, SubmitPlanRequest, SubmitPlanResponse, TaskSpec,
};

use crate::{Client, ClientError};

impl Client {
    /// Submits a plan; an empty `plan_id` lets the server generate one. An unknown
    /// dependency or a cycle rejects the whole plan (`InvalidArgument`).
    pub async fn submit_plan(
        &self,
        plan_id: &str,
        tasks: Vec<TaskSpec>,
    ) -> Result<SubmitPlanResponse, ClientError> {
        self.mutate(Default::default(), |channel, header| {
            let request = SubmitPlanRequest {
                header: Some(header),
                plan_id: plan_id.to_owned(),
                tasks: tasks.clone(),
            };
            async move { PlanServiceClient::new(channel).submit(request).await }
        })
        .await
    }

    pub async fn get_plan(
        &self,
        plan_id: &str,
        consistency: Consistency,
    ) -> Result<GetPlanResponse, ClientError> {
        self.read(consistency, |channel, header| {
            let request = GetPlanRequest {
                header: Some(header),
                plan_id: plan_id.to_owned(),
            };
            async move { PlanServiceClient::new(channel).get(request).await }
        })
        .await
    }
}
