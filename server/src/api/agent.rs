//! `percy.v1.AgentService`: registration, leader-local heartbeats (one per call, or a stream
//! of them), deregistration, lookups.

use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use percy_proto::v1::agent_service_server::AgentService;
use percy_proto::v1::*;
use percy_statemachine::{AgentStatus as SmStatus, Op, Outcome};
use tonic::{Request, Response, Status, Streaming};

use super::{observe, paging, read, required_id, unexpected, write};
use crate::auth;
use crate::context::NodeContext;
use crate::convert::{
    agent_load_from_proto, agent_load_to_proto, agent_status_to_proto, agent_to_proto,
};
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
            let load = reported_load(r.load.as_ref())?;
            auth::require_agent(ctx, auth::current(ctx)?.as_ref(), agent_id)?;
            let beat = liveness::heartbeat(ctx, agent_id, load).await?;
            let (status, must_reregister) = status_of(&beat);
            Ok(HeartbeatResponse {
                header: ctx.header(beat.revision, beat.forwarded),
                status,
                must_reregister,
                ttl_ms: beat.seen.ttl_ms,
            })
        })
        .await
    }

    type KeepAliveStream =
        Pin<Box<dyn Stream<Item = Result<KeepAliveResponse, Status>> + Send + 'static>>;

    /// Answers each message in order, as `heartbeat` would. The first error ends the stream
    /// with that status (the client opens a new one), and so does this node's shutdown; each
    /// message counts in the request metrics as one `AgentService/KeepAlive`.
    async fn keep_alive(
        &self,
        request: Request<Streaming<KeepAliveRequest>>,
    ) -> Result<Response<Self::KeepAliveStream>, Status> {
        // Read now: the stream is polled outside the authenticated scope.
        let caller = auth::current(&self.ctx)?;
        let open = Some(KeepAliveState {
            caller,
            closed: self.ctx.watch.closed(),
            ctx: self.ctx.clone(),
            inbound: request.into_inner(),
        });
        let replies = futures::stream::unfold(open, |state| async move {
            let KeepAliveState {
                ctx,
                caller,
                mut inbound,
                mut closed,
            } = state?;
            let message = tokio::select! {
                message = inbound.message() => message,
                _ = closed.changed() => {
                    let status = Status::unavailable("this node is shutting down; reconnect");
                    return Some((Err(status), None));
                }
            };
            let request = match message {
                Ok(Some(request)) => request,
                // The client closed its side: the stream ends with OK.
                Ok(None) => return None,
                Err(status) => return Some((Err(status), None)),
            };
            let reply = observe(
                &ctx,
                "AgentService/KeepAlive",
                keep_alive_reply(&ctx, caller.as_ref(), request),
            )
            .await
            .map(Response::into_inner);
            let next = reply.is_ok().then_some(KeepAliveState {
                ctx,
                caller,
                inbound,
                closed,
            });
            Some((reply, next))
        });
        Ok(Response::new(Box::pin(replies)))
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
                agent.map(|a| with_checkpointed_load(sm, a))
            })
            .await?;
            let agent = agent.map(|mut a| {
                overlay_live_loads(ctx, std::slice::from_mut(&mut a));
                a
            });
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
            let page_size = paging::page_size(r.limit)?;
            let after = paging::id_token(&r.page_token)?;
            let ((agents, next_page_token), header) = read(ctx, r.header.as_ref(), |sm| {
                let selected = sm
                    .agents_after(after)
                    .filter(|a| r.include_inactive || a.status == SmStatus::Active);
                let (page, next) =
                    paging::take_page(selected, page_size, usize::MAX, |_| 0, |a| a.id.to_string());
                let page: Vec<Agent> = page.iter().map(|a| with_checkpointed_load(sm, a)).collect();
                (page, next)
            })
            .await?;
            let mut agents = agents;
            overlay_live_loads(ctx, &mut agents);
            Ok(ListAgentsResponse {
                header,
                agents,
                next_page_token,
            })
        })
        .await
    }
}

/// The load a heartbeat reported, checked (INVALID_ARGUMENT when it makes no sense).
fn reported_load(
    load: Option<&AgentLoad>,
) -> Result<Option<percy_statemachine::AgentLoad>, Status> {
    load.map(agent_load_from_proto)
        .transpose()
        .map_err(|e| Status::invalid_argument(e.to_string()))
}

/// The agent with the load the last checkpoint recorded (what a follower can say).
fn with_checkpointed_load(
    sm: &percy_statemachine::StateMachine,
    agent: &percy_statemachine::Agent,
) -> Agent {
    let mut wire = agent_to_proto(agent);
    wire.load = sm
        .agent_load(agent.id)
        .map(|c| agent_load_to_proto(&c.load, c.at_ms));
    wire
}

/// On the leader, the loads its heartbeat table holds replace the checkpointed ones: they are
/// as fresh as the last heartbeat. A follower has no table and keeps the checkpointed values
/// (ARCHITECTURE.md, "Exec": load).
fn overlay_live_loads(ctx: &NodeContext, agents: &mut [Agent]) {
    if agents.is_empty() || !ctx.is_leader() {
        return;
    }
    let live = ctx.liveness.live_loads();
    for agent in agents {
        if agent.status != AgentStatus::Active as i32 {
            continue;
        }
        if let Some((load, at_ms)) = live.get(&agent.id) {
            agent.load = Some(agent_load_to_proto(load, *at_ms));
        }
    }
}

/// An open keep-alive stream between two messages.
struct KeepAliveState {
    ctx: Arc<NodeContext>,
    /// Who opened the stream (`None` without `--auth`): every message must be for its agent.
    caller: Option<auth::Caller>,
    inbound: Streaming<KeepAliveRequest>,
    /// The node's shutdown signal.
    closed: tokio::sync::watch::Receiver<bool>,
}

async fn keep_alive_reply(
    ctx: &NodeContext,
    caller: Option<&auth::Caller>,
    request: KeepAliveRequest,
) -> Result<KeepAliveResponse, Status> {
    let agent_id = required_id(request.agent_id, "agent_id")?;
    let load = reported_load(request.load.as_ref())?;
    auth::require_agent(ctx, caller, agent_id)?;
    let beat = liveness::heartbeat(ctx, agent_id, load).await?;
    let (status, must_reregister) = status_of(&beat);
    Ok(KeepAliveResponse {
        header: ctx.header(beat.revision, beat.forwarded),
        agent_id,
        status,
        must_reregister,
        ttl_ms: beat.seen.ttl_ms,
    })
}

/// The agent's status on the wire, and whether it must register again (it is not active).
fn status_of(beat: &liveness::Beat) -> (i32, bool) {
    let status = beat.seen.status;
    (
        status
            .map_or(AgentStatus::Unspecified, agent_status_to_proto)
            .into(),
        status != Some(SmStatus::Active),
    )
}
