//! Which executors run which commands (`--on`, `--auto`, `--parallel`, `--all`), and starting
//! them.

use std::collections::HashMap;

use anyhow::{bail, Context as _};
use percy_client::proto::{Agent, AgentStatus};
use percy_client::{Client, Consistency, TaskFilter, TaskStatus};
use percy_worker::{EXEC_AGENT_LABEL, EXEC_CAPABILITY};

use super::{exit_with, new_exec_id, run_many, run_one, submit, Options, Planned, Prefix, RunArgs};
use crate::exec_rank::{matches, rank, AgentLoadFigures, Candidate};
use crate::{args, Ctx, Refused};

pub(super) async fn run_execs(ctx: &Ctx, run: RunArgs) -> anyhow::Result<()> {
    if run.parallel {
        if !run.argv.is_empty() {
            bail!("--parallel takes its commands as arguments, not after `--`");
        }
        if run.commands.is_empty() {
            bail!("--parallel needs at least one command");
        }
        if run.on.len() > 1 && run.on.len() != run.commands.len() {
            bail!(
                "--parallel with {} commands takes one --on for all or one per command, not {}",
                run.commands.len(),
                run.on.len()
            );
        }
    } else {
        if !run.commands.is_empty() {
            bail!(
                "the command goes after `--` (percyctl exec --on TARGET -- CMD ARGS…); \
                 several commands need --parallel"
            );
        }
        if run.argv.iter().all(|w| w.trim().is_empty()) {
            bail!("empty command: percyctl exec --on TARGET -- CMD ARGS…");
        }
        if run.on.len() > 1 {
            bail!("one --on per exec (several only with --parallel)");
        }
    }
    if !run.auto && !run.all && !run.parallel && run.on.is_empty() {
        bail!("say where to run it: --on TARGET, --auto, or --all");
    }
    let executors = executors(&ctx.client).await?;
    let mut planned = Vec::new();
    if run.all {
        let required = match run.on.first() {
            Some(target) => target_selector(target)?,
            None => HashMap::new(),
        };
        let chosen: Vec<&Candidate> = executors.iter().filter(|c| matches(c, &required)).collect();
        if chosen.is_empty() {
            return Err(no_executor(run.on.first().map(String::as_str)));
        }
        for c in chosen {
            planned.push(Planned {
                command: run.argv.clone(),
                selector: by_name(&c.name),
                target: c.name.clone(),
            });
        }
    } else if run.parallel {
        let mut extra = HashMap::<String, usize>::new();
        for (i, line) in run.commands.iter().enumerate() {
            if line.trim().is_empty() {
                bail!("empty command (argument {} of --parallel)", i + 1);
            }
            let target = run.on.get(i).or(run.on.first());
            let required = match target {
                Some(t) => target_selector(t)?,
                None => HashMap::new(),
            };
            // Spread: the lowest load, counting what this run already put there.
            let ranked = rank(&executors, &required, &extra);
            let Some(best) = ranked.first() else {
                return Err(no_executor(target.map(String::as_str)));
            };
            *extra.entry(best.name.clone()).or_default() += 1;
            planned.push(Planned {
                command: vec![line.clone()],
                selector: by_name(&best.name),
                target: best.name.clone(),
            });
        }
    } else if run.auto {
        let required = match run.on.first() {
            Some(t) => target_selector(t)?,
            None => HashMap::new(),
        };
        let ranked = rank(&executors, &required, &HashMap::new());
        if run.explain {
            let mut labels: Vec<String> =
                required.iter().map(|(k, v)| format!("{k}={v}")).collect();
            labels.sort();
            eprintln!(
                "percyctl: executors by load per core, then running work (required labels: {}):",
                if labels.is_empty() {
                    "none".to_owned()
                } else {
                    labels.join(",")
                }
            );
            for (i, c) in ranked.iter().enumerate() {
                eprintln!("  {}. {}", i + 1, c.explain());
            }
        }
        let Some(best) = ranked.first() else {
            return Err(no_executor(run.on.first().map(String::as_str)));
        };
        let why = match best.load_per_core() {
            Some(per_core) => format!("load {per_core:.2}/core"),
            None => format!("load unknown, running {}", best.running()),
        };
        eprintln!(
            "percyctl: --auto chose {} ({why}, the lowest of {} matching executor{})",
            best.name,
            ranked.len(),
            if ranked.len() == 1 { "" } else { "s" }
        );
        planned.push(Planned {
            command: run.argv.clone(),
            selector: by_name(&best.name),
            target: best.name.clone(),
        });
    } else {
        let target = &run.on[0];
        let selector = target_selector(target)?;
        if !executors.iter().any(|c| matches(c, &selector)) {
            return Err(no_executor(Some(target)));
        }
        planned.push(Planned {
            command: run.argv.clone(),
            selector,
            target: target.clone(),
        });
    }

    let options = Options {
        timeout: run.timeout,
        cwd: run.cwd.clone(),
        env: run.env.iter().cloned().collect(),
        retry: run.retry,
    };
    if run.detach {
        let p = &planned[0];
        let id = new_exec_id();
        // The executor publishes the output to a node even so, where `exec logs -f` attaches
        // to follow it live (the node drops it while nobody is attached).
        let (relay, _stream) = ctx
            .client
            .attach_exec(&id)
            .await
            .context("finding a node to relay the exec's output")?;
        submit(&ctx.client, &id, p, &options, Some(relay)).await?;
        return ctx
            .out
            .emit(&serde_json::json!({ "id": id }), || id.clone());
    }
    if planned.len() == 1 && !run.parallel && !run.all {
        let p = &planned[0];
        let code = run_one(&ctx.client, p, &options, Prefix::None).await?;
        return exit_with(code);
    }
    run_many(ctx, planned, &options).await
}

pub(super) fn no_executor(target: Option<&str>) -> anyhow::Error {
    Refused(match target {
        Some(t) => format!(
            "no active executor matches {t:?} (start one with `percyctl worker --accept-exec`)"
        ),
        None => "no active executor (start one with `percyctl worker --accept-exec`)".into(),
    })
    .into()
}

/// `NAME` → the executor's name label; `k=v,k2=v2` → those labels.
pub(super) fn target_selector(target: &str) -> anyhow::Result<HashMap<String, String>> {
    let target = target.trim();
    if target.is_empty() {
        bail!("empty --on target");
    }
    if !target.contains('=') {
        return Ok(by_name(target));
    }
    target
        .split(',')
        .map(|pair| args::key_value(pair).map_err(|e| anyhow::anyhow!("--on {target:?}: {e}")))
        .collect()
}

pub(super) fn by_name(name: &str) -> HashMap<String, String> {
    HashMap::from([(EXEC_AGENT_LABEL.to_owned(), name.to_owned())])
}

/// Active executors with their load: what each reported with its heartbeats (the leader's
/// figures: this read is linearizable, so it is answered by the leader) and the tasks and
/// execs each holds now.
pub(super) async fn executors(client: &Client) -> anyhow::Result<Vec<Candidate>> {
    let agents = crate::agent::list_from_leader(client, false)
        .await
        .context("listing executors")?;
    let mut load = HashMap::<u64, usize>::new();
    for status in [TaskStatus::Claimed, TaskStatus::Working] {
        let filter = TaskFilter {
            status: Some(status),
            ..Default::default()
        };
        for task in client
            .list_tasks(&filter, Consistency::Linearizable)
            .await?
            .tasks
        {
            *load.entry(task.assignee).or_default() += 1;
        }
    }
    Ok(agents
        .agents
        .into_iter()
        .filter(is_executor)
        .map(|a: Agent| Candidate {
            held: load.get(&a.id).copied().unwrap_or(0),
            max_concurrent: a.max_concurrent,
            load: a.load.as_ref().map(AgentLoadFigures::from),
            labels: a.labels.into_iter().collect(),
            name: a.name,
            routed: 0,
        })
        .collect())
}

pub(super) fn is_executor(agent: &Agent) -> bool {
    agent.status == AgentStatus::Active as i32
        && agent.capabilities.iter().any(|c| c == EXEC_CAPABILITY)
}
