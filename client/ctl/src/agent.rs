//! `percyctl agent …`: register, heartbeat, list, get, deregister.

use std::time::{Duration, SystemTime};

use anyhow::Context;
use clap::Subcommand;
use percy_client::proto::{Agent, RegisterAgentRequest};
use percy_client::Consistency;
use serde_json::json;

use crate::args;
use crate::output::{details, list, map, or_dash, table};
use crate::views::{age, agent_status_name, load_cells, timestamp, AgentView, HeaderView};
use crate::{Ctx, Refused};

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Register an agent (a live agent of the same name is refreshed, keeping its id).
    Register {
        /// Agent name (a live agent of this name is refreshed).
        #[arg(long)]
        name: String,
        /// Host the agent runs on (default: this host's name).
        #[arg(long)]
        node: Option<String>,
        /// Capabilities, comma-separated.
        #[arg(long, value_delimiter = ',')]
        capabilities: Vec<String>,
        /// Label k=v (repeatable).
        #[arg(long = "label", value_parser = args::key_value)]
        labels: Vec<(String, String)>,
        /// Tasks the agent runs at once.
        #[arg(long, default_value_t = 1, value_parser = args::positive_count)]
        max_concurrent: u32,
        /// Expire the agent after this long without a heartbeat (default: the server's).
        #[arg(long, value_parser = args::positive_duration)]
        ttl: Option<Duration>,
    },
    /// Send one heartbeat for an agent.
    Heartbeat {
        /// Agent id or name.
        agent: String,
    },
    /// List agents (active ones unless --all).
    List {
        /// Include expired and deregistered agents.
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        read: args::Read,
    },
    /// Show one agent (by id or name).
    Get {
        /// Agent id or name.
        agent: String,
        #[command(flatten)]
        read: args::Read,
    },
    /// Deregister an agent: its tasks are requeued and its locks released.
    Deregister {
        /// Agent id or name.
        agent: String,
    },
}

pub async fn run(ctx: &Ctx, cmd: Command) -> anyhow::Result<()> {
    match cmd {
        Command::Register {
            name,
            node,
            capabilities,
            labels,
            max_concurrent,
            ttl,
        } => {
            let request = RegisterAgentRequest {
                header: None,
                name: name.clone(),
                node: node.unwrap_or_else(hostname),
                capabilities,
                labels: args::to_map(&labels),
                max_concurrent,
                ttl_ms: ttl.map_or(0, args::millis),
            };
            let response = ctx
                .client
                .register_agent(request)
                .await
                .with_context(|| format!("register agent {name}"))?;
            let agent = response
                .agent
                .context("register agent: server sent no agent")?;
            ctx.out.emit(
                &json!({
                    "header": HeaderView::from(response.header),
                    "agent": AgentView::from(&agent),
                    "created": response.created,
                    "heartbeat_interval_ms": response.heartbeat_interval_ms,
                }),
                || {
                    let verb = if response.created {
                        "registered"
                    } else {
                        "refreshed"
                    };
                    format!(
                        "agent {} {verb} with id {} (heartbeat every {}ms, ttl {}ms)",
                        agent.name, agent.id, response.heartbeat_interval_ms, agent.ttl_ms
                    )
                },
            )
        }
        Command::Heartbeat { agent } => {
            let id = resolve(ctx, &agent).await?;
            let response = ctx
                .client
                .heartbeat(id)
                .await
                .with_context(|| format!("heartbeat agent {agent}"))?;
            let status = agent_status_name(response.status);
            // A heartbeat for an agent the cluster does not know (never registered, expired,
            // deregistered) is answered, not refused; it is still a failure for the caller.
            if response.must_reregister
                || response.status == percy_client::proto::AgentStatus::Unspecified as i32
            {
                return Err(Refused(format!(
                    "heartbeat agent {agent}: no live agent {id} (status {status}); register it again"
                ))
                .into());
            }
            ctx.out.emit(
                &json!({
                    "header": HeaderView::from(response.header),
                    "agent_id": id,
                    "status": status,
                    "must_reregister": response.must_reregister,
                    "ttl_ms": response.ttl_ms,
                }),
                || format!("agent {id} is {status} (ttl {}ms)", response.ttl_ms),
            )
        }
        Command::List { all, read } => {
            let response = match read.consistency() {
                Consistency::Linearizable => list_from_leader(&ctx.client, all).await,
                other => ctx.client.list_agents(all, other).await,
            }
            .context("list agents")?;
            let views: Vec<AgentView> = response.agents.iter().map(AgentView::from).collect();
            ctx.out.emit(
                &json!({"header": HeaderView::from(response.header), "agents": views}),
                || agents_table(&response.agents),
            )
        }
        Command::Get { agent, read } => {
            let found = get(ctx, &agent, read.consistency()).await?;
            ctx.out.emit(
                &json!({"header": HeaderView::from(found.0), "agent": AgentView::from(&found.1)}),
                || agent_details(&found.1),
            )
        }
        Command::Deregister { agent } => {
            let id = resolve(ctx, &agent).await?;
            let response = ctx
                .client
                .deregister_agent(id)
                .await
                .with_context(|| format!("deregister agent {agent}"))?;
            ctx.out.emit(
                &json!({
                    "header": HeaderView::from(response.header),
                    "agent_id": id,
                    "requeued_tasks": response.requeued_tasks,
                    "released_locks": response.released_locks,
                }),
                || {
                    format!(
                        "agent {id} deregistered; requeued tasks: {}; released locks: {}",
                        list(&response.requeued_tasks),
                        list(&response.released_locks)
                    )
                },
            )
        }
    }
}

/// The agents as the leader answers (linearizable): only the leader holds the loads agents
/// report with their heartbeats; a follower shows the last checkpoint of them (up to 30 s
/// old). When a follower answered, ask again: its answer named the leader, so the client
/// sends the next read there (when the leader is one of its endpoints).
pub(crate) async fn list_from_leader(
    client: &percy_client::Client,
    include_inactive: bool,
) -> Result<percy_client::proto::ListAgentsResponse, percy_client::ClientError> {
    let mut response = client
        .list_agents(include_inactive, Consistency::Linearizable)
        .await?;
    for _ in 0..client.endpoints().len() {
        match &response.header {
            Some(h) if h.leader_id != 0 && h.node_id != h.leader_id => {}
            _ => break,
        }
        response = client
            .list_agents(include_inactive, Consistency::Linearizable)
            .await?;
    }
    Ok(response)
}

/// An agent given by id (a number) or by name.
pub async fn resolve(ctx: &Ctx, agent: &str) -> anyhow::Result<u64> {
    match agent.parse::<u64>() {
        Ok(id) => Ok(id),
        // Resolved for a write or a filter: never from a stale replica.
        Err(_) => Ok(get(ctx, agent, Consistency::Linearizable).await?.1.id),
    }
}

async fn get(
    ctx: &Ctx,
    agent: &str,
    consistency: Consistency,
) -> anyhow::Result<(Option<percy_client::proto::ResponseHeader>, Agent)> {
    let response = match agent.parse::<u64>() {
        Ok(id) => ctx.client.get_agent(id, consistency).await,
        Err(_) => ctx.client.get_agent_by_name(agent, consistency).await,
    }
    .with_context(|| format!("get agent {agent}"))?;
    let found = response
        .agent
        .with_context(|| format!("get agent {agent}: server sent no agent"))?;
    Ok((response.header, found))
}

pub(crate) fn agents_table(agents: &[Agent]) -> String {
    let now = SystemTime::now();
    table(
        &[
            "id",
            "name",
            "node",
            "status",
            "capabilities",
            "labels",
            "slots",
            "load",
            "cores",
            "mem",
            "running",
            "last seen",
        ],
        agents.iter().map(|a| {
            let mut row = vec![
                a.id.to_string(),
                a.name.clone(),
                or_dash(&a.node),
                agent_status_name(a.status),
                list(&a.capabilities),
                map(&a.labels),
                a.max_concurrent.to_string(),
            ];
            row.extend(load_cells(a.load.as_ref()));
            row.push(age(a.last_seen_ms, now));
            row
        }),
    )
}

fn agent_details(a: &Agent) -> String {
    details(&[
        ("id", a.id.to_string()),
        ("name", a.name.clone()),
        ("node", or_dash(&a.node)),
        ("status", agent_status_name(a.status)),
        ("capabilities", list(&a.capabilities)),
        ("labels", map(&a.labels)),
        ("max concurrent", a.max_concurrent.to_string()),
        ("load", load_line(a.load.as_ref())),
        ("ttl", format!("{}ms", a.ttl_ms)),
        ("registered", timestamp(a.registered_at_ms)),
        ("last seen", timestamp(a.last_seen_ms)),
        ("revision", a.revision.to_string()),
    ])
}

/// The agent's load on one line, and when it was reported.
fn load_line(load: Option<&percy_client::proto::AgentLoad>) -> String {
    let [avg, cores, mem, running] = load_cells(load);
    match load {
        None => "-".to_owned(),
        Some(l) => format!(
            "{avg} on {cores} cores, memory {mem}, running {running} (reported {})",
            timestamp(l.reported_at_ms)
        ),
    }
}

/// This machine's host name, for an agent's `node` ("" when it cannot be told).
fn hostname() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|h| h.trim().to_owned())
        })
        .unwrap_or_default()
}
