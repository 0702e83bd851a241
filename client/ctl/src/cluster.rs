//! `percyctl cluster …`: Raft status of every endpoint, membership changes.

use std::time::Duration;

use anyhow::Context;
use clap::Subcommand;
use percy_client::proto::{ClusterStatusResponse, MembershipResponse};
use percy_client::{Client, Consistency};
use serde::Serialize;
use serde_json::json;

use crate::agent::{agents_table, list_from_leader};
use crate::output::{or_dash, table};
use crate::views::{AgentView, HeaderView, MemberView};
use crate::Ctx;

/// How long `cluster status` waits for each endpoint: a node that is down should not hold
/// up the report on the others.
const STATUS_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Raft status of every member (term, leader, log indexes), found from the endpoints,
    /// and the active agents with the load they report (load, cores, memory, running).
    Status,
    /// Add a node: it joins as a learner, then becomes a voter.
    AddNode {
        /// The new node's id (its percyd --node-id).
        id: u64,
        /// The address (host:port) the node listens on.
        addr: String,
    },
    /// Remove a node from the cluster.
    RemoveNode {
        /// The id of the node to remove.
        id: u64,
    },
}

#[derive(Debug, Serialize)]
struct NodeStatus {
    endpoint: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    node_id: u64,
    state: String,
    leader_id: u64,
    term: u64,
    last_log_index: u64,
    commit_index: u64,
    applied_index: u64,
    members: Vec<MemberView>,
}

pub async fn run(ctx: &Ctx, cmd: Command) -> anyhow::Result<()> {
    match cmd {
        Command::Status => status(ctx).await,
        Command::AddNode { id, addr } => {
            let response = ctx
                .client
                .add_node(id, &addr)
                .await
                .with_context(|| format!("add node {id} at {addr}"))?;
            print_members(ctx, response, &format!("node {id} added"))
        }
        Command::RemoveNode { id } => {
            let response = ctx
                .client
                .remove_node(id)
                .await
                .with_context(|| format!("remove node {id}"))?;
            print_members(ctx, response, &format!("node {id} removed"))
        }
    }
}

/// Asks each endpoint on its own (not through the retrying client, which would answer from
/// whichever node works) so that the report shows every node, including dead ones; then each
/// member of the configuration those answers name that no endpoint answered for, at its
/// membership address, so that `--endpoints` naming one node still shows the whole cluster.
async fn status(ctx: &Ctx) -> anyhow::Result<()> {
    let mut nodes = Vec::new();
    for endpoint in ctx.client.endpoints() {
        nodes.push(ask(ctx, endpoint, 0).await?);
    }
    let mut members: Vec<MemberView> = Vec::new();
    for member in nodes.iter().flat_map(|n| n.members.iter()) {
        if !members.iter().any(|m| m.id == member.id) {
            members.push(member.clone());
        }
    }
    for member in members {
        if !nodes.iter().any(|n| n.node_id == member.id) {
            nodes.push(ask(ctx, &member.addr, member.id).await?);
        }
    }
    if nodes.iter().all(|n| n.error.is_some()) {
        let first = nodes
            .first()
            .and_then(|n| n.error.clone())
            .unwrap_or_default();
        anyhow::bail!("cluster status: no endpoint answered: {first}");
    }
    // The agents as the leader sees them (its figures are as fresh as the last heartbeat);
    // a cluster without a leader still gets its Raft report.
    let agents = list_from_leader(&ctx.client.with_deadline(STATUS_TIMEOUT * 2), false)
        .await
        .map(|r| r.agents)
        .map_err(|e| e.to_string());
    let agents_json = match &agents {
        Ok(agents) => json!(agents.iter().map(AgentView::from).collect::<Vec<_>>()),
        Err(error) => json!({ "error": error }),
    };
    ctx.out
        .emit(&json!({"nodes": &nodes, "agents": agents_json}), || {
            let mut text = status_table(&nodes);
            text.push_str("\n\n");
            match &agents {
                Ok(agents) if agents.is_empty() => text.push_str("no active agents"),
                Ok(agents) => text.push_str(&agents_table(agents)),
                Err(error) => text.push_str(&format!("agents: unavailable ({error})")),
            }
            text
        })
}

/// One node's own answer; `expected_id` (0: unknown) names a member that does not answer.
async fn ask(ctx: &Ctx, endpoint: &str, expected_id: u64) -> anyhow::Result<NodeStatus> {
    let single = Client::connect_secure(
        &[endpoint.to_owned()],
        ctx.client.retry_policy().with_deadline(STATUS_TIMEOUT),
        ctx.client.security(),
    )
    .await?;
    Ok(
        match single.cluster_status(Consistency::Serializable).await {
            Ok(status) => node_status(endpoint, status),
            Err(err) => NodeStatus {
                endpoint: endpoint.to_owned(),
                error: Some(err.to_string()),
                node_id: expected_id,
                state: "unreachable".to_owned(),
                leader_id: 0,
                term: 0,
                last_log_index: 0,
                commit_index: 0,
                applied_index: 0,
                members: Vec::new(),
            },
        },
    )
}

fn node_status(endpoint: &str, s: ClusterStatusResponse) -> NodeStatus {
    NodeStatus {
        endpoint: endpoint.to_owned(),
        error: None,
        node_id: s.node_id,
        state: s.state,
        leader_id: s.leader_id,
        term: s.term,
        last_log_index: s.last_log_index,
        commit_index: s.commit_index,
        applied_index: s.applied_index,
        members: s.members.iter().map(MemberView::from).collect(),
    }
}

fn status_table(nodes: &[NodeStatus]) -> String {
    let mut text = table(
        &[
            "endpoint", "id", "state", "leader", "term", "last log", "commit", "applied", "error",
        ],
        nodes.iter().map(|n| {
            vec![
                n.endpoint.clone(),
                or_dash(n.node_id),
                n.state.clone(),
                or_dash(n.leader_id),
                n.term.to_string(),
                n.last_log_index.to_string(),
                n.commit_index.to_string(),
                n.applied_index.to_string(),
                n.error.clone().unwrap_or_else(|| "-".to_owned()),
            ]
        }),
    );
    if let Some(members) = nodes.iter().find(|n| n.error.is_none()).map(|n| &n.members) {
        text.push_str("\n\n");
        text.push_str(&members_table(members));
    }
    text
}

fn members_table(members: &[MemberView]) -> String {
    table(
        &["member", "address", "role"],
        members.iter().map(|m| {
            vec![
                m.id.to_string(),
                m.addr.clone(),
                if m.voter { "voter" } else { "learner" }.to_owned(),
            ]
        }),
    )
}

fn print_members(ctx: &Ctx, response: MembershipResponse, what: &str) -> anyhow::Result<()> {
    let members: Vec<MemberView> = response.members.iter().map(MemberView::from).collect();
    ctx.out.emit(
        &json!({"header": HeaderView::from(response.header), "members": &members}),
        || format!("{what}\n{}", members_table(&members)),
    )
}
