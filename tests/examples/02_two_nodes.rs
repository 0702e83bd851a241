//! 02 — Multi-node clustering and the distributed agent registry: agents registered through
//! different nodes are visible from every node. Two nodes, as the seed has it (a two-node
//! Raft cluster needs both nodes for a quorum; three is what production runs).
//!
//! `cargo run -p percy-tests --example 02_two_nodes`

mod common;

use anyhow::{Context, Result};
use common::{check, say, step, LocalCluster, LONG_TTL_MS};
use percy_client::proto::RegisterAgentRequest;
use percy_client::Consistency;

#[tokio::main]
async fn main() -> Result<()> {
    step("Start two nodes that form one cluster");
    let cluster = LocalCluster::start(2).await?;
    let leader = cluster.wait_for_leader().await?;
    for (id, endpoint) in (1..=2).zip(cluster.endpoints()) {
        let status = cluster
            .client_of(id)
            .await?
            .cluster_status(Consistency::Serializable)
            .await?;
        say(format!(
            "node {id} at {endpoint}: {} (leader {})",
            status.state, status.leader_id
        ));
    }
    say(format!("node {leader} leads"));

    step("Register one agent through each node");
    let mut ids = Vec::new();
    for (node, name) in [(1, "alice"), (2, "bob")] {
        let client = cluster.client_of(node).await?;
        let response = client
            .register_agent(RegisterAgentRequest {
                ttl_ms: LONG_TTL_MS,
                name: name.into(),
                node: format!("host-{node}"),
                capabilities: vec!["rust".into()],
                ..Default::default()
            })
            .await?;
        let agent = response.agent.context("registration without agent")?;
        let via = response.header.context("no header")?;
        say(format!(
            "{name} registered through node {node} as agent {} (answered by node {}, forwarded to the leader: {})",
            agent.id, via.node_id, via.forwarded
        ));
        ids.push(agent.id);
    }

    step("Every node sees both agents");
    for node in 1..=2 {
        let client = cluster.client_of(node).await?;
        let agents = client.list_agents(false, Consistency::Linearizable).await?;
        let names: Vec<&str> = agents.agents.iter().map(|a| a.name.as_str()).collect();
        say(format!("node {node} lists {names:?}"));
        check(
            names.contains(&"alice") && names.contains(&"bob"),
            &format!("node {node} sees alice and bob"),
        )?;
    }

    step("A local (serializable) read on the follower agrees once it caught up");
    let follower = if leader == 1 { 2 } else { 1 };
    let local = cluster
        .client_of(follower)
        .await?
        .get_agent(ids[0], Consistency::Serializable)
        .await?;
    say(format!(
        "node {follower} answers from its own replica: agent {} is {:?}",
        ids[0],
        local.agent.map(|a| a.name)
    ));

    cluster.shutdown().await;
    println!("\ndone");
    Ok(())
}
