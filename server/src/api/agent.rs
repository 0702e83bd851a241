//! `percy.v1.AgentService`: registration, leader-local heartbeats, deregistration, lookups.

use std::sync::Arc;

use percy_proto::v1::agent_service_server::AgentService;
use percy_proto::v1::*;
use percy_statemachine::{AgentStatus as SmStatus, Op, Outcome};
use tonic::{Request, Response, Status};

use super::{observe, read, required_id, unexpected, write};
use crate::context::NodeContext;
use crate::convert::{agent_status_to_proto, agent_to_proto};
use crate::liveness;

pub struct AgentApi {
    pub ctx: Arc<NodeContext>,
}

#[tonic::async_trait]
impl AgentService for AgentApi {
    async fn register(
        &self,
        request: Request<RegisterAgentRequest>,
    ) -> Result<Response<RegisterAgentResponse>, Status> {
        let ctx = &self.ctx;
        observe(ctx, "AgentService/Register", async {
            let r = request.into_inner();
            let ttl_ms = if r.ttl_ms == 0 {
                ctx.config.agent_ttl_ms
            } else {
                r.ttl_ms
            };
            let op = Op::RegisterAgent {
                name: r.name,
                node: r.node,
                capabilities: r.capabilities.into_iter().collect(),
                labels: r.labels.into_iter().collect(),
                max_concurrent: r.max_concurrent,
                ttl_ms,
            };
            match write(ctx, r.header.as_ref(), op).await? {
                (Outcome::AgentRegistered { agent, created }, header) => {
                    Ok(RegisterAgentResponse {
                        header,
                        agent: Some(agent_to_proto(&agent)),
                        created,
                        heartbeat_interval_ms: ctx.config.agent_heartbeat_interval_ms,
                    })
                }
                (other, _) => Err(unexpected(other)),
            }
        })
        .await
    }

    async fn heartbeat(
        &self,
        request: Request<HeartbeatRequest>,
    ) -> Result<Response<HeartbeatResponse>, Status> {
        let ctx = &self.ctx;
        observe(ctx, "AgentService/Heartbeat", async {
            let r = request.into_inner();
            let agent_id = required_id(r.agent_id, "agent_id")?;
            let (status, ttl_ms, forwarded) = liveness::heartbeat(ctx, agent_id).await?;
            let revision = ctx.state.read(|sm| sm.revision());
            Ok(HeartbeatResponse {
                header: ctx.header(revision, forwarded),
                status: status
                    .map(|s| agent_status_to_proto(s).into())
                    .unwrap_or(AgentStatus::Unspecified.into()),
                must_reregister: status != Some(SmStatus::Active),
                ttl_ms,
            })
        })
        .await
    }

    async fn deregister(
        &self,
        request: Request<DeregisterAgentRequest>,
    ) -> Result<Response<DeregisterAgentResponse>, Status> {
        let ctx = &self.ctx;
        observe(ctx, "AgentService/Deregister", async {
            let r = request.into_inner();
            let agent_id = required_id(r.agent_id, "agent_id")?;
            match write(ctx, r.header.as_ref(), Op::DeregisterAgent { agent_id }).await? {
                (Outcome::AgentDeregistered(released), header) => Ok(DeregisterAgentResponse {
                    header,
                    requeued_tasks: released.requeued_tasks,
                    released_locks: released.released_locks,
                }),
                (other, _) => Err(unexpected(other)),
            }
        })
        .await
    }

    async fn get(
        &self,
        request: Request<GetAgentRequest>,
    ) -> Result<Response<GetAgentResponse>, Status> {
        let ctx = &self.ctx;
        observe(ctx, "AgentService/Get", async {
            let r = request.into_inner();
            if r.agent_id == 0 && r.name.is_empty() {
                return Err(Status::invalid_argument("agent_id or name is required"));
            }
            let (agent, header) = read(ctx, r.header.as_ref(), |sm| {
                let agent = if r.agent_id != 0 {
                    sm.agent(r.agent_id)
                } else {
                    sm.agent_by_name(&r.name)
                };
                agent.map(agent_to_proto)
            })
            .await?;
            let agent = agent.ok_or_else(|| {
                if r.agent_id != 0 {
                    Status::not_found(format!("no agent with id {}", r.agent_id))
                } else {
                    Status::not_found(format!("no agent named {:?}", r.name))
                }
            })?;
            Ok(GetAgentResponse {
                header,
                agent: Some(agent),
            })
        })
        .await
    }

    async fn list(
        &self,
        request: Request<ListAgentsRequest>,
    ) -> Result<Response<ListAgentsResponse>, Status> {
        let ctx = &self.ctx;
        observe(ctx, "AgentService/List", async {
            let r = request.into_inner();
            let (agents, header) = read(ctx, r.header.as_ref(), |sm| {
                sm.agents()
                    .into_iter()
                    .filter(|a| r.include_inactive || a.status == SmStatus::Active)
                    .map(agent_to_proto)
                    .collect()
            })
            .await?;
            Ok(ListAgentsResponse { header, agents })
        })
        .await
    }
}
