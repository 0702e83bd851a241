//! `percyctl lock …`: acquire (all-or-nothing, optionally waiting), release, list.

use std::time::Duration;

use anyhow::Context;
use clap::Subcommand;
use percy_client::proto::{ListLocksResponse, LockMode};
use percy_client::LockRequest;
use serde_json::json;

use crate::output::{list, or_dash, table};
use crate::views::{lock_mode_name, timestamp, GrantView, HeaderView, LockView, WaiterView};
use crate::{agent, args, Ctx, Refused};

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Lock paths for an agent: all of them or none.
    Acquire {
        /// Paths to lock (a path conflicts with its ancestors and descendants).
        #[arg(required = true)]
        paths: Vec<String>,
        /// Agent id or name.
        #[arg(long)]
        agent: String,
        /// Shared (read) lock instead of exclusive.
        #[arg(long)]
        shared: bool,
        /// Wait in line up to this long instead of failing at once on conflict.
        #[arg(long, value_parser = args::duration)]
        wait: Option<Duration>,
        /// Release automatically after this long.
        #[arg(long, value_parser = args::positive_duration)]
        ttl: Option<Duration>,
        /// The task the locks are for.
        #[arg(long)]
        task: Option<String>,
    },
    /// Release paths held by an agent.
    Release {
        /// Paths to release (exit 1 if the agent does not hold one of them).
        #[arg(required = true)]
        paths: Vec<String>,
        /// Agent id or name.
        #[arg(long)]
        agent: String,
    },
    /// Release every lock an agent holds.
    ReleaseAll {
        /// Agent id or name.
        #[arg(long)]
        agent: String,
    },
    /// List held locks and waiters.
    List {
        /// Only paths starting with this.
        #[arg(long, default_value = "")]
        prefix: String,
        #[command(flatten)]
        read: args::Read,
    },
}

pub async fn run(ctx: &Ctx, cmd: Command) -> anyhow::Result<()> {
    match cmd {
        Command::Acquire {
            paths,
            agent,
            shared,
            wait,
            ttl,
            task,
        } => {
            let agent_id = agent::resolve(ctx, &agent).await?;
            let request = LockRequest {
                agent_id,
                paths: paths.clone(),
                mode: if shared {
                    LockMode::Shared
                } else {
                    LockMode::Exclusive
                },
                task_id: task,
                ttl,
                wait,
            };
            let response = ctx
                .client
                .acquire_locks(&request)
                .await
                .with_context(|| format!("lock {} for agent {agent}", paths.join(" ")))?;
            let grants: Vec<GrantView> = response.grants.iter().map(GrantView::from).collect();
            ctx.out.emit(
                &json!({"header": HeaderView::from(response.header), "grants": grants}),
                || {
                    grants
                        .iter()
                        .map(|g| {
                            format!(
                                "locked {} ({}) for agent {}, fencing_token {}",
                                g.path, g.mode, g.agent_id, g.fencing_token
                            )
                        })
                        .collect::<Vec<_>>()
                        .join("\n")
                },
            )
        }
        Command::Release { paths, agent } => release(ctx, &agent, paths).await,
        Command::ReleaseAll { agent } => release(ctx, &agent, Vec::new()).await,
        Command::List { prefix, read } => {
            let response = ctx
                .client
                .list_locks(&prefix, read.consistency())
                .await
                .context("list locks")?;
            let locks: Vec<LockView> = response.locks.iter().map(LockView::from).collect();
            let waiters: Vec<WaiterView> = response.waiters.iter().map(WaiterView::from).collect();
            ctx.out.emit(
                &json!({
                    "header": HeaderView::from(response.header),
                    "locks": locks,
                    "waiters": waiters,
                }),
                || locks_table(&response),
            )
        }
    }
}

async fn release(ctx: &Ctx, agent: &str, paths: Vec<String>) -> anyhow::Result<()> {
    let agent_id = agent::resolve(ctx, agent).await?;
    let response = ctx
        .client
        .release_locks(agent_id, &paths)
        .await
        .with_context(|| format!("release locks of agent {agent}"))?;
    // Releasing a path the agent does not hold changes nothing and is answered as such; for
    // the caller it is a failure (someone else holds it, or nobody does).
    if response.released.len() < paths.len() {
        let not_held: Vec<&String> = paths
            .iter()
            .filter(|p| !response.released.contains(*p))
            .collect();
        return Err(Refused(format!(
            "release locks of agent {agent}: it does not hold {}",
            list(&not_held)
        ))
        .into());
    }
    let granted: Vec<GrantView> = response
        .granted_to_waiters
        .iter()
        .map(GrantView::from)
        .collect();
    ctx.out.emit(
        &json!({
            "header": HeaderView::from(response.header),
            "released": response.released,
            "granted_to_waiters": granted,
        }),
        || {
            let mut text = format!("released: {}", list(&response.released));
            for g in &granted {
                text.push_str(&format!(
                    "\ngranted {} to waiting agent {} (fencing_token {})",
                    g.path, g.agent_id, g.fencing_token
                ));
            }
            text
        },
    )
}

fn locks_table(response: &ListLocksResponse) -> String {
    let mut rows = Vec::new();
    for lock in &response.locks {
        for holder in &lock.holders {
            rows.push(vec![
                lock.path.clone(),
                lock_mode_name(lock.mode),
                holder.agent_id.to_string(),
                holder.fencing_token.to_string(),
                or_dash(&holder.task_id),
                timestamp(holder.expires_at_ms),
            ]);
        }
    }
    let mut text = table(
        &["path", "mode", "agent", "fencing token", "task", "expires"],
        rows,
    );
    if !response.waiters.is_empty() {
        text.push_str("\n\n");
        text.push_str(&table(
            &[
                "waiting agent",
                "mode",
                "paths",
                "queued at rev",
                "gives up",
            ],
            response.waiters.iter().map(|w| {
                vec![
                    w.agent_id.to_string(),
                    lock_mode_name(w.mode),
                    list(&w.paths),
                    w.queued_revision.to_string(),
                    timestamp(w.wait_deadline_ms),
                ]
            }),
        ));
    }
    text
}
