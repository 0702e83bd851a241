//! 01 — "Hello, cluster": one node bootstraps itself, an agent registers and finds itself.
//!
//! `cargo run -p percy-tests --example 01_single_node`

mod common;

use std::collections::HashMap;

use anyhow::{Context, Result};
use common::{check, say, step, LocalCluster, LONG_TTL_MS};
use percy_client::proto::RegisterAgentRequest;
use percy_client::Consistency;

#[tokio::main]
async fn main() -> Result<()> {
    step("Start a single-node cluster (it initialises itself: its log is empty)");
    let cluster = LocalCluster::start(1).await?;
    let client = cluster.client().await?;
    let status = client.cluster_status(Consistency::Linearizable).await?;
    say(format!(
        "node {} at {} is the {} (term {}, {} member)",
        status.node_id,
        cluster.endpoints()[0],
        status.state,
        status.term,
        status.members.len()
    ));
    check(
        status.leader_id == status.node_id,
        "a lone node leads itself",
    )?;

    step("Register an agent with capabilities and labels");
    let registered = client
        .register_agent(RegisterAgentRequest {
            ttl_ms: LONG_TTL_MS,
            name: "alice".into(),
            node: "laptop".into(),
            capabilities: vec!["rust".into(), "review".into()],
            labels: HashMap::from([("team".into(), "core".into())]),
            ..Default::default()
        })
        .await?;
    let alice = registered.agent.context("registration without agent")?;
    say(format!(
        "registered {} as agent {} (ttl {} ms, heartbeat every {} ms)",
        alice.name, alice.id, alice.ttl_ms, registered.heartbeat_interval_ms
    ));

    step("Self-discovery: the agent looks itself up by name and lists the registry");
    let me = client
        .get_agent_by_name("alice", Consistency::Linearizable)
        .await?
        .agent
        .context("alice not found")?;
    say(format!(
        "found agent {} on node {:?} with capabilities {:?} and labels {:?}",
        me.id, me.node, me.capabilities, me.labels
    ));
    check(me.id == alice.id, "the registry returns the same agent")?;
    let beat = client.heartbeat(alice.id).await?;
    check(!beat.must_reregister, "a heartbeat keeps it active")?;
    let all = client.list_agents(false, Consistency::Linearizable).await?;
    for agent in &all.agents {
        say(format!("registry: {} (id {})", agent.name, agent.id));
    }
    check(all.agents.len() == 1, "exactly one agent is registered")?;

    step("Deregister and stop");
    client.deregister_agent(alice.id).await?;
    let left = client.list_agents(false, Consistency::Linearizable).await?;
    check(left.agents.is_empty(), "no active agent is left")?;
    cluster.shutdown().await;
    println!("\ndone");
    Ok(())
}
