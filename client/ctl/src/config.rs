//! `percyctl config …`: the replicated key/value configuration, with compare-and-set.

use anyhow::Context;
use clap::Subcommand;
use serde_json::json;

use crate::output::{details, table};
use crate::views::{ConfigView, HeaderView};
use crate::{args, Ctx, Refused};

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print a key's value (exit 1 when absent).
    Get {
        /// The key.
        key: String,
        #[command(flatten)]
        read: args::Read,
    },
    /// Set a key.
    Set {
        /// The key.
        key: String,
        /// The new value.
        value: String,
        /// Only if the key is at this revision (0: only if the key does not exist).
        #[arg(long)]
        revision: Option<u64>,
    },
    /// Delete a key.
    Delete {
        /// The key.
        key: String,
        /// Only if the key is at this revision.
        #[arg(long)]
        revision: Option<u64>,
    },
    /// List keys.
    List {
        /// Only keys starting with this.
        #[arg(long, default_value = "")]
        prefix: String,
        #[command(flatten)]
        read: args::Read,
    },
}

pub async fn run(ctx: &Ctx, cmd: Command) -> anyhow::Result<()> {
    match cmd {
        Command::Get { key, read } => {
            let response = ctx
                .client
                .get_config(&key, read.consistency())
                .await
                .with_context(|| format!("get config {key}"))?;
            let Some(entry) = response.entry else {
                return Err(Refused(format!("config key {key:?} not found")).into());
            };
            let view = ConfigView::from(&entry);
            ctx.out.emit(
                &json!({"header": HeaderView::from(response.header), "entry": &view}),
                || view.value.clone(),
            )
        }
        Command::Set {
            key,
            value,
            revision,
        } => {
            let response = ctx
                .client
                .put_config(&key, value.into_bytes(), revision)
                .await
                .with_context(|| format!("set config {key}"))?;
            let entry = response.entry.unwrap_or_default();
            let view = ConfigView::from(&entry);
            ctx.out.emit(
                &json!({"header": HeaderView::from(response.header), "entry": &view}),
                || {
                    details(&[
                        ("key", view.key.clone()),
                        ("revision", view.revision.to_string()),
                        ("version", view.version.to_string()),
                    ])
                },
            )
        }
        Command::Delete { key, revision } => {
            let response = ctx
                .client
                .delete_config(&key, revision)
                .await
                .with_context(|| format!("delete config {key}"))?;
            let header = HeaderView::from(response.header);
            let line = format!("deleted {key} (revision {})", header.revision);
            ctx.out.emit(
                &json!({"header": header, "key": key, "deleted": true}),
                || line,
            )
        }
        Command::List { prefix, read } => {
            let response = ctx
                .client
                .list_config(&prefix, read.consistency())
                .await
                .context("list config")?;
            let views: Vec<ConfigView> = response.entries.iter().map(ConfigView::from).collect();
            ctx.out.emit(
                &json!({"header": HeaderView::from(response.header), "entries": &views}),
                || {
                    table(
                        &["key", "value", "revision", "version"],
                        views.iter().map(|v| {
                            vec![
                                v.key.clone(),
                                v.value.clone(),
                                v.revision.to_string(),
                                v.version.to_string(),
                            ]
                        }),
                    )
                },
            )
        }
    }
}
