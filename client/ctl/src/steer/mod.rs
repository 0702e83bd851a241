//! `percyctl steer`: the cockpit TUI over definitions, loops and iterations (no subcommand),
//! and `percyctl steer inject NAME TEXT`, which queues a steering message for a definition's
//! next iteration.

mod app;
mod model;
mod render;
#[cfg(test)]
mod snapshots;
mod terminal;

use anyhow::Context;
use clap::{Args as ClapArgs, Subcommand};
use serde_json::json;

use crate::iterations::SteeringView;
use crate::views::HeaderView;
use crate::Ctx;

/// Sender name when `--from` is not given and calls carry no token (with a token, the
/// cluster names the sender).
pub const DEFAULT_SENDER: &str = "operator";

#[derive(Debug, ClapArgs)]
#[command(args_conflicts_with_subcommands = true)]
pub struct Args {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Queue a steering message: appended to the definition's next iteration's prompt.
    Inject {
        /// Definition name.
        name: String,
        /// The message.
        text: String,
        /// Sender name (default: the token's identity, or "operator" without a token).
        #[arg(long)]
        from: Option<String>,
    },
}

pub async fn run(ctx: &Ctx, args: Args) -> anyhow::Result<()> {
    match args.command {
        Some(Command::Inject { name, text, from }) => inject(ctx, &name, &text, from).await,
        None => terminal::run(ctx.client.clone(), sender(ctx, None)).await,
    }
}

/// The sender to put on a message: `--from`, else the token's identity (the cluster fills
/// it in), else [`DEFAULT_SENDER`].
pub fn sender(ctx: &Ctx, from: Option<String>) -> String {
    match from {
        Some(from) => from,
        None if ctx.has_token => String::new(),
        None => DEFAULT_SENDER.to_owned(),
    }
}

async fn inject(ctx: &Ctx, name: &str, text: &str, from: Option<String>) -> anyhow::Result<()> {
    let from = sender(ctx, from);
    let response = ctx
        .client
        .steer(name, &from, text)
        .await
        .with_context(|| format!("steer definition {name}"))?;
    let message = response.message.unwrap_or_default();
    ctx.out.emit_line(
        &json!({
            "header": HeaderView::from(response.header),
            "message": SteeringView::from(&message),
        }),
        || {
            format!(
                "message {} queued for the next iteration of {name}",
                message.id
            )
        },
    )
}
