//! `percyctl apply -f FILE` and `percyctl definition …`: declarative agent definitions.

use std::path::PathBuf;

use crate::files::manifest::Manifest;
use anyhow::Context;
use clap::{Args, Subcommand};
use percy_client::proto::{Definition, DefinitionResponse, DesiredState};
use serde_json::json;

use crate::output::{details, table};
use crate::views::{desired_state_name, timestamp, DefinitionView, HeaderView};
use crate::{args, Ctx};

#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// YAML or TOML file with a list of definitions {name, spec, desired}.
    #[arg(short = 'f', long = "filename")]
    file: PathBuf,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// List definitions.
    List {
        #[command(flatten)]
        read: args::Read,
    },
    /// Show a definition with its revision history.
    Get {
        /// Definition name.
        name: String,
        #[command(flatten)]
        read: args::Read,
    },
    /// Set a definition's desired state to stopped.
    Stop {
        /// Definition name.
        name: String,
    },
    /// Set a definition's desired state to running.
    Start {
        /// Definition name.
        name: String,
    },
    /// A definition's recent iterations (newest first), its runner and waiting messages.
    Iterations {
        /// Definition name.
        name: String,
        #[command(flatten)]
        read: args::Read,
    },
}

pub async fn apply(ctx: &Ctx, args: ApplyArgs) -> anyhow::Result<()> {
    let manifest = Manifest::from_path(&args.file)?;
    let response = ctx
        .client
        .apply_definitions(manifest.definition_specs())
        .await
        .with_context(|| format!("apply {}", args.file.display()))?;
    ctx.out.emit(
        &json!({
            "header": HeaderView::from(response.header),
            "created": response.created,
            "updated": response.updated,
            "unchanged": response.unchanged,
        }),
        || {
            let created = response
                .created
                .iter()
                .map(|n| format!("definition {n} created"));
            let updated = response
                .updated
                .iter()
                .map(|n| format!("definition {n} updated"));
            let unchanged = response
                .unchanged
                .iter()
                .map(|n| format!("definition {n} unchanged"));
            created
                .chain(updated)
                .chain(unchanged)
                .collect::<Vec<_>>()
                .join("\n")
        },
    )
}

pub async fn run(ctx: &Ctx, cmd: Command) -> anyhow::Result<()> {
    match cmd {
        Command::List { read } => {
            let response = ctx
                .client
                .list_definitions(read.consistency())
                .await
                .context("list definitions")?;
            let views: Vec<DefinitionView> = response
                .definitions
                .iter()
                .map(DefinitionView::from)
                .collect();
            ctx.out.emit(
                &json!({"header": HeaderView::from(response.header), "definitions": views}),
                || definitions_table(&response.definitions),
            )
        }
        Command::Get { name, read } => {
            let response = ctx
                .client
                .get_definition(&name, read.consistency())
                .await
                .with_context(|| format!("get definition {name}"))?;
            print(ctx, response)
        }
        Command::Stop { name } => set_state(ctx, &name, DesiredState::Stopped).await,
        Command::Start { name } => set_state(ctx, &name, DesiredState::Running).await,
        Command::Iterations { name, read } => {
            let response = ctx
                .client
                .get_run(&name, read.consistency())
                .await
                .with_context(|| format!("iterations of definition {name}"))?;
            let run = response.run.unwrap_or_default();
            let view = crate::iterations::RunView::from(&run);
            ctx.out.emit(
                &json!({"header": HeaderView::from(response.header), "run": &view}),
                || {
                    let runner = match &run.runner {
                        Some(r) => format!(
                            "runner: {} on {} (run token {})",
                            r.agent_name, r.node, r.run_token
                        ),
                        None => "runner: none".to_owned(),
                    };
                    format!(
                        "{runner}\nwaiting steering messages: {}\n\n{}",
                        run.pending.len(),
                        crate::iterations::iterations_table(&run)
                    )
                },
            )
        }
    }
}

async fn set_state(ctx: &Ctx, name: &str, desired: DesiredState) -> anyhow::Result<()> {
    let response = ctx
        .client
        .set_definition_state(name, desired)
        .await
        .with_context(|| {
            format!(
                "set definition {name} to {}",
                desired_state_name(desired as i32)
            )
        })?;
    print(ctx, response)
}

fn print(ctx: &Ctx, response: DefinitionResponse) -> anyhow::Result<()> {
    let definition = response.definition.unwrap_or_default();
    let view = DefinitionView::from(&definition);
    ctx.out.emit(
        &json!({"header": HeaderView::from(response.header), "definition": &view}),
        || {
            let history: Vec<String> = definition
                .history
                .iter()
                .map(|r| {
                    format!(
                        "{} at revision {} ({})",
                        r.id,
                        r.revision,
                        timestamp(r.applied_at_ms)
                    )
                })
                .collect();
            details(&[
                ("name", view.name.clone()),
                ("desired", view.desired.clone()),
                ("id", view.id.clone()),
                ("spec", view.spec.to_string()),
                ("history", history.join("\n           ")),
                ("revision", view.revision.to_string()),
            ])
        },
    )
}

fn definitions_table(definitions: &[Definition]) -> String {
    table(
        &["name", "desired", "id", "revisions", "revision"],
        definitions.iter().map(|d| {
            let id = d.history.last().map(|r| r.id.clone()).unwrap_or_default();
            vec![
                d.name.clone(),
                desired_state_name(d.desired),
                id.chars().take(12).collect(),
                d.history.len().to_string(),
                d.revision.to_string(),
            ]
        }),
    )
}
