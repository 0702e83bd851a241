//! DefinitionRunService: the loops of definitions that run (workers) and steering (operators).

use percy_proto::v1::definition_run_service_client::DefinitionRunServiceClient;
use percy_proto::v1::{
    ClaimRunRequest, Consistency, DefinitionRunResponse, FinishIterationRequest, GetRunRequest,
    IterationReport, IterationResponse, ListRunsRequest, ListRunsResponse, RequestHeader,
    RunTokenRequest, SteerRequest, SteerResponse,
};

use crate::{Client, ClientError};

/// Who runs a definition's loop and under which run token (from [`Client::claim_run`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunClaim {
    pub name: String,
    pub agent_id: u64,
    pub run_token: u64,
}

impl RunClaim {
    /// The request that presents this claim (its run token fences the call).
    fn request(&self, header: RequestHeader) -> RunTokenRequest {
        RunTokenRequest {
            header: Some(header),
            name: self.name.clone(),
            agent_id: self.agent_id,
            run_token: self.run_token,
        }
    }
}

impl Client {
    /// Takes over the loop of a running definition as `agent_id` (one runner cluster-wide).
    pub async fn claim_run(
        &self,
        name: &str,
        agent_id: u64,
    ) -> Result<DefinitionRunResponse, ClientError> {
        self.mutate(Default::default(), |channel, header| {
            let request = ClaimRunRequest {
                header: Some(header),
                name: name.to_owned(),
                agent_id,
            };
            async move {
                DefinitionRunServiceClient::new(channel)
                    .claim(request)
                    .await
            }
        })
        .await
    }

    /// Starts the next iteration; the answer carries its number and prompt.
    pub async fn start_iteration(
        &self,
        claim: &RunClaim,
    ) -> Result<IterationResponse, ClientError> {
        self.mutate(Default::default(), |channel, header| {
            let request = claim.request(header);
            async move {
                DefinitionRunServiceClient::new(channel)
                    .start_iteration(request)
                    .await
            }
        })
        .await
    }

    pub async fn finish_iteration(
        &self,
        claim: &RunClaim,
        number: u64,
        report: IterationReport,
    ) -> Result<IterationResponse, ClientError> {
        self.mutate(Default::default(), |channel, header| {
            let request = FinishIterationRequest {
                header: Some(header),
                name: claim.name.clone(),
                agent_id: claim.agent_id,
                run_token: claim.run_token,
                number,
                report: Some(report.clone()),
            };
            async move {
                DefinitionRunServiceClient::new(channel)
                    .finish_iteration(request)
                    .await
            }
        })
        .await
    }

    /// Gives the loop up, so another worker may take it over at once.
    pub async fn release_run(
        &self,
        claim: &RunClaim,
    ) -> Result<DefinitionRunResponse, ClientError> {
        self.mutate(Default::default(), |channel, header| {
            let request = claim.request(header);
            async move {
                DefinitionRunServiceClient::new(channel)
                    .release(request)
                    .await
            }
        })
        .await
    }

    /// Queues a steering message for the definition's next iteration. An empty `from` is
    /// the caller's identity (its token's name, with `--auth`).
    pub async fn steer(
        &self,
        name: &str,
        from: &str,
        body: &str,
    ) -> Result<SteerResponse, ClientError> {
        self.mutate(Default::default(), |channel, header| {
            let request = SteerRequest {
                header: Some(header),
                name: name.to_owned(),
                from: from.to_owned(),
                body: body.to_owned(),
            };
            async move {
                DefinitionRunServiceClient::new(channel)
                    .steer(request)
                    .await
            }
        })
        .await
    }

    pub async fn get_run(
        &self,
        name: &str,
        consistency: Consistency,
    ) -> Result<DefinitionRunResponse, ClientError> {
        self.read(consistency, |channel, header| {
            let request = GetRunRequest {
                header: Some(header),
                name: name.to_owned(),
            };
            async move { DefinitionRunServiceClient::new(channel).get(request).await }
        })
        .await
    }

    pub async fn list_runs(
        &self,
        consistency: Consistency,
    ) -> Result<ListRunsResponse, ClientError> {
        self.read(consistency, |channel, header| {
            let request = ListRunsRequest {
                header: Some(header),
            };
            async move { DefinitionRunServiceClient::new(channel).list(request).await }
        })
        .await
    }
}
