//! Agent commands: register, deregister, expire, checkpoint.

use std::collections::{BTreeMap, BTreeSet};

use crate::agent::{Agent, AgentId, AgentLoad, AgentStatus, CheckpointedLoad};
use crate::error::CommandError;
use crate::limits::DEFAULT_AGENT_TTL_MS;
use crate::response::{Outcome, Released, Response};

use super::agent_registry::AgentRegistry;
use super::ctx::Ctx;
use super::StateMachine;

/// The fields of a `RegisterAgent` command.
pub(crate) struct Registration {
    pub name: String,
    pub node: String,
    pub capabilities: BTreeSet<String>,
    pub labels: BTreeMap<String, String>,
    pub max_concurrent: u32,
    pub ttl_ms: u64,
}

impl StateMachine {
    /// A live agent of that name is refreshed in place (same id, so its claims and locks stay
    /// valid); otherwise a new incarnation is created with id = this revision, so a process
    /// that comes back after expiry can never act under its old identity.
    pub(super) fn register_agent(&mut self, ctx: &mut Ctx, registration: Registration) -> Response {
        let Registration {
            name,
            node,
            capabilities,
            mut labels,
            max_concurrent,
            ttl_ms,
        } = registration;
        let max_concurrent = max_concurrent.max(1);
        let ttl_ms = if ttl_ms == 0 {
            DEFAULT_AGENT_TTL_MS
        } else {
            ttl_ms
        };
        // Selectors such as `node=builder` match on labels only, so the node is offered as a
        // label too unless the operator set that label explicitly.
        if !node.is_empty() {
            labels
                .entry("node".to_string())
                .or_insert_with(|| node.clone());
        }

        let live_id = self
            .agents
            .by_name(&name)
            .filter(|agent| agent.status == AgentStatus::Active)
            .map(|agent| agent.id);
        if let Some(id) = live_id {
            if let Some(agent) = self.agents.get_mut(id) {
                agent.node = node;
                agent.capabilities = capabilities;
                agent.labels = labels;
                agent.max_concurrent = max_concurrent;
                agent.ttl_ms = ttl_ms;
                agent.last_seen_ms = agent.last_seen_ms.max(ctx.now_ms);
                agent.revision = ctx.revision;
                ctx.agent_changed(agent);
                return Ok(Outcome::AgentRegistered {
                    agent: agent.clone(),
                    created: false,
                });
            }
        }

        let agent = Agent {
            id: ctx.revision,
            name,
            node,
            capabilities,
            labels,
            max_concurrent,
            ttl_ms,
            status: AgentStatus::Active,
            registered_at_ms: ctx.now_ms,
            last_seen_ms: ctx.now_ms,
            create_revision: ctx.revision,
            revision: ctx.revision,
        };
        ctx.agent_changed(&agent);
        self.agents.insert(agent.clone());
        Ok(Outcome::AgentRegistered {
            agent,
            created: true,
        })
    }

    pub(super) fn deregister_agent(&mut self, ctx: &mut Ctx, agent_id: AgentId) -> Response {
        let agent = self
            .agents
            .get(agent_id)
            .ok_or_else(|| CommandError::not_found(format!("agent {agent_id} not found")))?;
        if agent.status != AgentStatus::Active {
            return Err(CommandError::precondition(format!(
                "agent {agent_id} ({}) is already {}",
                agent.name,
                status_word(agent.status)
            )));
        }
        let mut released = self.retire_agents(ctx, &[agent_id], AgentStatus::Deregistered);
        Ok(Outcome::AgentDeregistered(
            released.pop().unwrap_or_default(),
        ))
    }

    /// Ids that are unknown or no longer active are skipped (the monitor's view may be a
    /// little behind the log).
    pub(super) fn expire_agents(&mut self, ctx: &mut Ctx, agent_ids: &[AgentId]) -> Outcome {
        let mut targets: Vec<AgentId> = Vec::new();
        for &id in agent_ids {
            if self.agents.active(id).is_some() && !targets.contains(&id) {
                targets.push(id);
            }
        }
        Outcome::AgentsExpired(self.retire_agents(ctx, &targets, AgentStatus::Expired))
    }

    /// Takes active agents out of service: their held tasks go back to ready (the attempt was
    /// counted when they were claimed), their lock requests are dropped, their locks released
    /// and the waiters this frees are granted.
    ///
    /// Every retiring agent's queued requests are dropped before any lock is released, so a
    /// release never grants a lock to another agent that is retiring in the same batch.
    fn retire_agents(
        &mut self,
        ctx: &mut Ctx,
        agent_ids: &[AgentId],
        status: AgentStatus,
    ) -> Vec<Released> {
        let mut grant_pass_due = false;
        for &id in agent_ids {
            let dropped = self.locks.drop_waiters_of(id, |_| true);
            // A dropped request may have been all that held back a later one (strict FIFO).
            grant_pass_due |= !dropped.is_empty();
            ctx.waiters_resolved(dropped);
        }
        let mut all_released = Vec::with_capacity(agent_ids.len());
        for &agent_id in agent_ids {
            let requeued_tasks = self.requeue_held_tasks(ctx, agent_id);
            let released_locks = self.release_all_holds(ctx, agent_id);
            self.runs_lose_agent(ctx, agent_id);
            if let Some(agent) = self.agents.get_mut(agent_id) {
                agent.status = status;
                agent.revision = ctx.revision;
                ctx.agent_changed(agent);
            }
            let granted = if grant_pass_due || !released_locks.is_empty() {
                grant_pass_due = false;
                self.grant_waiters(ctx)
            } else {
                Vec::new()
            };
            all_released.push(Released {
                agent_id,
                requeued_tasks,
                released_locks,
                granted,
            });
        }
        all_released
    }

    /// Moves `last_seen_ms` of active agents forward (never back: checkpoints from different
    /// leaders may arrive out of order).
    pub(super) fn checkpoint_agents(
        &mut self,
        ctx: &mut Ctx,
        last_seen: &[(AgentId, u64)],
    ) -> Outcome {
        let mut updated = 0u32;
        for &(id, seen_ms) in last_seen {
            let Some(agent) = self.agents.get_mut(id) else {
                continue;
            };
            if agent.status != AgentStatus::Active || seen_ms <= agent.last_seen_ms {
                continue;
            }
            agent.last_seen_ms = seen_ms;
            agent.revision = ctx.revision;
            ctx.agent_changed(agent);
            updated += 1;
        }
        Outcome::AgentsCheckpointed { updated }
    }

    /// Records the loads of active agents (others skipped) as of `ctx.now_ms`, and forgets
    /// the loads of agents no longer active, so the table never outgrows the live registry.
    /// No event: a load is not part of the agent record, and a watch event per agent every
    /// checkpoint would be noise.
    pub(super) fn checkpoint_agent_loads(
        &mut self,
        ctx: &mut Ctx,
        loads: Vec<(AgentId, AgentLoad)>,
    ) -> Outcome {
        let is_active = |agents: &AgentRegistry, id: AgentId| {
            agents
                .get(id)
                .is_some_and(|a| a.status == AgentStatus::Active)
        };
        let mut updated = 0u32;
        for (id, load) in loads {
            if !is_active(&self.agents, id) {
                continue;
            }
            self.agent_loads.insert(
                id,
                CheckpointedLoad {
                    load,
                    at_ms: ctx.now_ms,
                },
            );
            updated += 1;
        }
        let agents = &self.agents;
        self.agent_loads.retain(|id, _| is_active(agents, *id));
        Outcome::AgentsCheckpointed { updated }
    }
}

impl StateMachine {
    /// The agent, if it exists and is active; otherwise NotFound / FailedPrecondition.
    pub(super) fn active_agent(&self, agent_id: AgentId) -> Result<&Agent, CommandError> {
        let agent = self
            .agents
            .get(agent_id)
            .ok_or_else(|| CommandError::not_found(format!("agent {agent_id} not found")))?;
        if agent.status != AgentStatus::Active {
            return Err(CommandError::precondition(format!(
                "agent {agent_id} ({}) is {}; register again",
                agent.name,
                status_word(agent.status)
            )));
        }
        Ok(agent)
    }
}

pub(super) fn status_word(status: AgentStatus) -> &'static str {
    match status {
        AgentStatus::Active => "active",
        AgentStatus::Expired => "expired",
        AgentStatus::Deregistered => "deregistered",
    }
}
