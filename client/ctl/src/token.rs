//! `percyctl token …`: access tokens of a cluster started with `percyd --auth` (admin only).

use anyhow::Context;
use clap::Subcommand;
use percy_client::proto::{Role, TokenInfo};
use serde::Serialize;
use serde_json::json;

use crate::output::table;
use crate::views::timestamp;
use crate::Ctx;

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a token and print it (once: the cluster keeps only its hash). With `-o table`
    /// stdout is the token alone, so `TOKEN=$(percyctl token create …)` works.
    Create {
        /// admin, operator, agent or reader.
        #[arg(long, value_parser = parse_role)]
        role: Role,
        /// The agent name an agent token acts as (required with --role agent).
        #[arg(long)]
        agent: Option<String>,
        /// A label for listings (default: the agent name, or <role>-<id>).
        #[arg(long, default_value = "")]
        name: String,
    },
    /// List tokens (ids, roles, agents; never secrets).
    List,
    /// Revoke a token: every node refuses it from then on.
    Revoke {
        /// The token's id (from `token list`).
        id: u64,
    },
}

fn parse_role(raw: &str) -> Result<Role, String> {
    match raw {
        "admin" => Ok(Role::Admin),
        "operator" => Ok(Role::Operator),
        "agent" => Ok(Role::Agent),
        "reader" => Ok(Role::Reader),
        other => Err(format!(
            "unknown role {other:?}: admin, operator, agent or reader"
        )),
    }
}

fn role_name(role: i32) -> &'static str {
    match Role::try_from(role) {
        Ok(Role::Admin) => "admin",
        Ok(Role::Operator) => "operator",
        Ok(Role::Agent) => "agent",
        Ok(Role::Reader) => "reader",
        _ => "unknown",
    }
}

#[derive(Serialize)]
struct TokenView<'a> {
    id: u64,
    role: &'static str,
    agent: &'a str,
    name: &'a str,
    created_revision: u64,
    created: String,
}

impl<'a> From<&'a TokenInfo> for TokenView<'a> {
    fn from(t: &'a TokenInfo) -> Self {
        Self {
            id: t.id,
            role: role_name(t.role),
            agent: &t.agent,
            name: &t.name,
            created_revision: t.created_revision,
            created: timestamp(t.created_ms),
        }
    }
}

pub async fn run(ctx: &Ctx, cmd: Command) -> anyhow::Result<()> {
    match cmd {
        Command::Create { role, agent, name } => {
            let agent = agent.unwrap_or_default();
            let response = ctx
                .client
                .create_token(role, &agent, &name)
                .await
                .context("create token")?;
            let info = response.token.unwrap_or_default();
            let view = TokenView::from(&info);
            if !ctx.out.is_json() {
                let acting = if agent.is_empty() {
                    String::new()
                } else {
                    format!(", acting as agent {agent}")
                };
                eprintln!(
                    "created token {} (role {}{acting}); it is shown only now",
                    view.id, view.role
                );
            }
            ctx.out
                .emit(&json!({"token": view, "secret": &response.secret}), || {
                    response.secret.clone()
                })
        }
        Command::List => {
            let response = ctx.client.list_tokens().await.context("list tokens")?;
            let views: Vec<TokenView> = response.tokens.iter().map(TokenView::from).collect();
            ctx.out.emit(&json!({"tokens": &views}), || {
                table(
                    &["id", "role", "agent", "name", "created"],
                    views.iter().map(|v| {
                        vec![
                            v.id.to_string(),
                            v.role.to_owned(),
                            v.agent.to_owned(),
                            v.name.to_owned(),
                            v.created.clone(),
                        ]
                    }),
                )
            })
        }
        Command::Revoke { id } => {
            let response = ctx
                .client
                .revoke_token(id)
                .await
                .with_context(|| format!("revoke token {id}"))?;
            let info = response.token.unwrap_or_default();
            let view = TokenView::from(&info);
            ctx.out.emit(&json!({"revoked": view}), || {
                format!("revoked token {} ({})", view.id, view.name)
            })
        }
    }
}
