//! `percyctl chat …`: messages to one agent or to all of them.

use anyhow::Context;
use clap::Subcommand;
use percy_client::proto::Message;
use percy_client::BROADCAST;
use serde_json::json;

use crate::output::table;
use crate::views::{timestamp, HeaderView, MessageView};
use crate::{agent, args, Ctx};

/// Sender name when `--from` is not given and calls carry no token (with a token, the
/// cluster names the sender: the token's agent or name).
const DEFAULT_SENDER: &str = "operator";

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Send a message to one agent (id or name).
    Send {
        /// Agent id or name.
        agent: String,
        /// The message.
        text: String,
        /// Sender name shown to the agent (default: the token's identity, or "operator" without a token).
        #[arg(long)]
        from: Option<String>,
    },
    /// Send a message to every agent.
    Broadcast {
        /// The message.
        text: String,
        /// Sender name shown to the agents (default: the token's identity, or "operator" without a token).
        #[arg(long)]
        from: Option<String>,
    },
    /// Show an agent's mailbox, or the broadcast mailbox without AGENT.
    History {
        /// Agent id or name (default: the broadcast mailbox).
        agent: Option<String>,
        /// Only messages with an id above this.
        #[arg(long, default_value_t = 0)]
        after: u64,
        #[command(flatten)]
        read: args::Read,
    },
}

pub async fn run(ctx: &Ctx, cmd: Command) -> anyhow::Result<()> {
    match cmd {
        Command::Send { agent, text, from } => {
            let agent_id = agent::resolve(ctx, &agent).await?;
            send(ctx, &from, agent_id, &text, &format!("agent {agent}")).await
        }
        Command::Broadcast { text, from } => send(ctx, &from, BROADCAST, &text, "everyone").await,
        Command::History { agent, after, read } => {
            let agent_id = match &agent {
                Some(agent) => agent::resolve(ctx, agent).await?,
                None => BROADCAST,
            };
            let response = ctx
                .client
                .message_history(agent_id, after, read.consistency())
                .await
                .context("message history")?;
            let views: Vec<MessageView> = response.messages.iter().map(MessageView::from).collect();
            ctx.out.emit(
                &json!({
                    "header": HeaderView::from(response.header),
                    "messages": views,
                    "dropped": response.dropped,
                }),
                || {
                    let mut text = messages_table(&response.messages);
                    if response.dropped > 0 {
                        text.push_str(&format!(
                            "\n({} older messages were dropped from the mailbox)",
                            response.dropped
                        ));
                    }
                    text
                },
            )
        }
    }
}

async fn send(
    ctx: &Ctx,
    from: &Option<String>,
    to: u64,
    text: &str,
    whom: &str,
) -> anyhow::Result<()> {
    let from = match from {
        Some(from) => from.as_str(),
        None if ctx.has_token => "",
        None => DEFAULT_SENDER,
    };
    let response = ctx
        .client
        .send_message(from, to, text)
        .await
        .with_context(|| format!("send message to {whom}"))?;
    let message = response.message.unwrap_or_default();
    ctx.out.emit(
        &json!({
            "header": HeaderView::from(response.header),
            "message": MessageView::from(&message),
            "dropped": response.dropped,
        }),
        || format!("message {} sent to {whom}", message.id),
    )
}

fn messages_table(messages: &[Message]) -> String {
    table(
        &["id", "sent", "from", "to", "message"],
        messages.iter().map(|m| {
            vec![
                m.id.to_string(),
                timestamp(m.sent_at_ms),
                m.from.clone(),
                if m.to_agent == BROADCAST {
                    "*".to_owned()
                } else {
                    m.to_agent.to_string()
                },
                m.body.clone(),
            ]
        }),
    )
}
