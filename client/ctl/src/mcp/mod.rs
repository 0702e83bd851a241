//! `percyctl mcp --agent NAME`: a Model Context Protocol server over stdio, so an LLM coding
//! CLI (`claude mcp add percy -- percyctl mcp --agent NAME`) can itself claim tasks, lock the
//! files it edits and talk to other agents.
//!
//! One process is one MCP session and one Percy agent. At start it registers the agent (a
//! live agent of that name is reused, keeping its id), then serves the tools of
//! [`tools::PercyMcp`] on stdin/stdout while two background tasks run beside it: heartbeats
//! ([`liveness`]) and the message announcer ([`announce`]). The claim tokens and fencing
//! tokens the tools obtain stay in the [`session::Session`], so the model never copies them.
//! The process exits when stdin closes; an agent this session created is then deregistered
//! (its tasks requeued, its locks released), since nobody else holds its tokens.

mod announce;
mod liveness;
mod params;
mod session;
mod tools;

use std::time::Duration;

use anyhow::Context;
use rmcp::ServiceExt;

use crate::args;
use crate::Ctx;
use session::{Registration, Session};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Name of the agent this session acts as (registered, or reused when it is live).
    #[arg(long)]
    agent: String,
    /// Capabilities of the agent, comma-separated (which tasks claim_task may pick).
    #[arg(long, value_delimiter = ',')]
    capabilities: Vec<String>,
    /// Label k=v of the agent (repeatable), matched by tasks' selectors.
    #[arg(long = "label", value_parser = args::key_value)]
    labels: Vec<(String, String)>,
    /// Tasks the agent may hold at once.
    #[arg(long, default_value_t = 1)]
    max_concurrent: u32,
    /// Expire the agent after this long without a heartbeat (default: the server's).
    #[arg(long, value_parser = args::duration)]
    ttl: Option<Duration>,
}

pub async fn run(ctx: &Ctx, args: Args) -> anyhow::Result<()> {
    let registration = Registration {
        name: args.agent,
        capabilities: args.capabilities,
        labels: args::to_map(&args.labels),
        max_concurrent: args.max_concurrent,
        ttl_ms: args.ttl.map_or(0, args::millis),
    };
    let (session, registered) = Session::register(ctx.client.clone(), registration)
        .await
        .context("register the session's agent")?;
    tracing::info!(
        agent_id = session.agent_id().await,
        created = registered.created,
        "MCP session's agent registered"
    );

    let server = tools::PercyMcp::new(ctx.client.clone(), session.clone());
    let running = match server.serve(rmcp::transport::stdio()).await {
        Ok(running) => running,
        Err(err) => {
            // No session after all (stdin closed before the handshake, or a bad one).
            session.end().await;
            return Err(anyhow::Error::from(err).context("start the MCP session on stdin/stdout"));
        }
    };

    let heartbeats = tokio::spawn(liveness::keep_alive(
        session.clone(),
        running.peer().clone(),
        ctx.client.clone(),
        registered.interval,
    ));
    let announcer = tokio::spawn(announce::announce_messages(
        ctx.client.clone(),
        session.clone(),
        running.peer().clone(),
        registered.revision + 1,
    ));

    // Ends when the client closes stdin (or the transport fails).
    let quit = running.waiting().await;
    heartbeats.abort();
    announcer.abort();
    tracing::info!(reason = ?quit, "MCP session ended");
    session.end().await;
    Ok(())
}
