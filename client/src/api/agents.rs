//! AgentService: registration, heartbeats, lookup.

use percy_proto::v1::agent_service_client::AgentServiceClient;
use percy_proto::v1::{
    AgentLoad, Consistency, DeregisterAgentRequest, DeregisterAgentResponse, GetAgentRequest,
    GetAgentResponse, HeartbeatRequest, HeartbeatResponse, ListAgentsRequest, ListAgentsResponse,
    RegisterAgentRequest, RegisterAgentResponse,
};

use super::paging::read_all_pages;
use crate::{Client, ClientError};

impl Client {
    /// Registers an agent (or refreshes the live agent of that name). The request's `header`
    /// is filled in by the client.
    pub async fn register_agent(
        &self,
        request: RegisterAgentRequest,
    ) -> Result<RegisterAgentResponse, ClientError> {
        self.mutate(Default::default(), |channel, header| {
            let request = RegisterAgentRequest {
                header: Some(header),
                ..request.clone()
            };
            async move { AgentServiceClient::new(channel).register(request).await }
        })
        .await
    }

    /// Tells the leader the agent is alive. The reply says whether the agent must register
    /// again (it expired). Heartbeats are idempotent and not logged, so they carry no seq.
    pub async fn heartbeat(&self, agent_id: u64) -> Result<HeartbeatResponse, ClientError> {
        self.heartbeat_with_load(agent_id, None).await
    }

    /// A heartbeat that also reports the agent's load (kept by the leader in memory, shown in
    /// agent listings, used by `percyctl exec --auto`).
    pub async fn heartbeat_with_load(
        &self,
        agent_id: u64,
        load: Option<AgentLoad>,
    ) -> Result<HeartbeatResponse, ClientError> {
        self.idempotent(|channel, header| {
            let request = HeartbeatRequest {
                header: Some(header),
                agent_id,
                load,
            };
            async move { AgentServiceClient::new(channel).heartbeat(request).await }
        })
        .await
    }

    /// Deregisters an agent: its tasks are requeued and its locks released.
    pub async fn deregister_agent(
        &self,
        agent_id: u64,
    ) -> Result<DeregisterAgentResponse, ClientError> {
        self.mutate(Default::default(), |channel, header| {
            let request = DeregisterAgentRequest {
                header: Some(header),
                agent_id,
            };
            async move { AgentServiceClient::new(channel).deregister(request).await }
        })
        .await
    }

    pub async fn get_agent(
        &self,
        agent_id: u64,
        consistency: Consistency,
    ) -> Result<GetAgentResponse, ClientError> {
        self.get_agent_request(agent_id, String::new(), consistency)
            .await
    }

    /// Looks an agent up by name (the live one if there is one).
    pub async fn get_agent_by_name(
        &self,
        name: &str,
        consistency: Consistency,
    ) -> Result<GetAgentResponse, ClientError> {
        self.get_agent_request(0, name.to_owned(), consistency)
            .await
    }

    async fn get_agent_request(
        &self,
        agent_id: u64,
        name: String,
        consistency: Consistency,
    ) -> Result<GetAgentResponse, ClientError> {
        self.read(consistency, |channel, header| {
            let request = GetAgentRequest {
                header: Some(header),
                agent_id,
                name: name.clone(),
            };
            async move { AgentServiceClient::new(channel).get(request).await }
        })
        .await
    }

    /// Lists agents; `include_inactive` adds expired and deregistered ones.
    pub async fn list_agents(
        &self,
        include_inactive: bool,
        consistency: Consistency,
    ) -> Result<ListAgentsResponse, ClientError> {
        read_all_pages(|page_token| {
            self.read(consistency, move |channel, header| {
                let request = ListAgentsRequest {
                    header: Some(header),
                    include_inactive,
                    limit: 0,
                    page_token: page_token.clone(),
                };
                async move { AgentServiceClient::new(channel).list(request).await }
            })
        })
        .await
    }
}
