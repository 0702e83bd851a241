//! `percyctl plan …`: submit a plan file, show its DAG, follow it live until it finishes.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;

use crate::files::plan::{topological_order, PlanError, PlanFile};
use anyhow::Context;
use clap::Subcommand;
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use percy_client::proto::{event, Task};
use percy_client::{ClientError, Consistency, EntityKind, TaskStatus, WatchOptions};
use serde_json::json;

use crate::output::{list, or_dash, table};
use crate::views::{task_status_name, HeaderView, TaskView};
use crate::{args, Ctx, Refused};

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Submit the tasks of a TOML or YAML plan file as one plan.
    Submit {
        /// The plan file (.toml, .yaml or .yml; format in README.md).
        file: PathBuf,
        /// Plan id (overrides the file's `id`; default: generated).
        #[arg(long)]
        id: Option<String>,
    },
    /// Show a plan's tasks in dependency order with their states.
    Status {
        /// Plan id.
        plan: String,
        #[command(flatten)]
        read: args::Read,
    },
    /// Follow a plan until every task is finished; exit 0 only if all completed.
    Watch {
        /// Plan id.
        plan: String,
    },
    /// Cancel every unfinished task of a plan (claimed and working ones too: their claim
    /// tokens become stale, so their agents can no longer report them).
    Cancel {
        /// Plan id.
        plan: String,
        /// Why, recorded on each task.
        #[arg(long, default_value = "plan cancelled by operator")]
        reason: String,
    },
}

pub async fn run(ctx: &Ctx, cmd: Command) -> anyhow::Result<()> {
    match cmd {
        Command::Submit { file, id } => submit(ctx, &file, id).await,
        Command::Status { plan, read } => status(ctx, &plan, read.consistency()).await,
        Command::Watch { plan } => watch(ctx, &plan).await,
        Command::Cancel { plan, reason } => cancel(ctx, &plan, &reason).await,
    }
}

async fn submit(ctx: &Ctx, file: &std::path::Path, id: Option<String>) -> anyhow::Result<()> {
    // A plan that cannot be read is a usage error; one whose content is wrong is refused like
    // the server refuses a cycle (exit 1 for both).
    let plan = PlanFile::from_path(file).map_err(|err| match err {
        PlanError::Document(_) => anyhow::Error::from(err),
        content => Refused(format!("plan {}: {content}", file.display())).into(),
    })?;
    let plan_id = id.or(plan.id.clone()).unwrap_or_default();
    let response = ctx
        .client
        .submit_plan(&plan_id, plan.task_specs())
        .await
        .with_context(|| format!("submit plan {}", file.display()))?;
    let views: Vec<TaskView> = response.tasks.iter().map(TaskView::from).collect();
    ctx.out.emit(
        &json!({
            "header": HeaderView::from(response.header),
            "plan_id": response.plan_id,
            "tasks": views,
        }),
        || {
            format!(
                "plan {} submitted with {} tasks\n{}",
                response.plan_id,
                response.tasks.len(),
                dag_table(&response.tasks)
            )
        },
    )
}

async fn status(ctx: &Ctx, plan_id: &str, consistency: Consistency) -> anyhow::Result<()> {
    let response = ctx
        .client
        .get_plan(plan_id, consistency)
        .await
        .with_context(|| format!("get plan {plan_id}"))?;
    let ordered = topological_order(&response.tasks);
    let views: Vec<TaskView> = ordered.iter().map(|t| TaskView::from(*t)).collect();
    let counts = counts(response.tasks.iter());
    ctx.out.emit(
        &json!({
            "header": HeaderView::from(response.header),
            "plan_id": response.plan_id,
            "counts": counts,
            "finished": is_finished(response.tasks.iter()),
            "tasks": views,
        }),
        || {
            format!(
                "plan {}: {}\n{}",
                response.plan_id,
                counts_line(&counts),
                dag_table(&response.tasks)
            )
        },
    )
}

/// Cancels the plan's unfinished tasks with the state machine's own task cancellation, roots
/// first: cancelling a task cancels its unfinished dependents in the same command, so a plan
/// usually takes one command per root, not one per task. Not one atomic step: a task that
/// finishes meanwhile stays finished (its cancellation is refused and skipped), and its
/// dependents are cancelled when reached in the order.
async fn cancel(ctx: &Ctx, plan_id: &str, reason: &str) -> anyhow::Result<()> {
    let (tasks, _) = fetch(ctx, plan_id).await?;
    let tasks: Vec<Task> = tasks.into_values().collect();
    let mut done: HashSet<String> = tasks
        .iter()
        .filter(|t| is_terminal(t.status))
        .map(|t| t.id.clone())
        .collect();
    let mut cancelled = Vec::new();
    let mut skipped = Vec::new();
    for task in topological_order(&tasks) {
        if done.contains(&task.id) {
            continue;
        }
        match ctx.client.cancel_task(&task.id, reason).await {
            Ok(response) => {
                let cascade = response.cascade.unwrap_or_default();
                for id in std::iter::once(task.id.clone()).chain(cascade.cancelled) {
                    if done.insert(id.clone()) {
                        cancelled.push(id);
                    }
                }
            }
            // Finished between the listing and now.
            Err(err) if err.code() == tonic::Code::FailedPrecondition => {
                done.insert(task.id.clone());
                skipped.push(task.id.clone());
            }
            Err(err) => {
                return Err(anyhow::Error::from(err).context(format!(
                    "cancel plan {plan_id}: task {} (cancelled so far: {})",
                    task.id,
                    list(&cancelled)
                )))
            }
        }
    }
    ctx.out.emit(
        &json!({"plan_id": plan_id, "cancelled": cancelled, "already_finished": skipped}),
        || {
            format!(
                "plan {plan_id}: {} tasks cancelled: {}",
                cancelled.len(),
                list(&cancelled)
            )
        },
    )
}

/// Follows the plan with the watch stream (no polling) until every task is terminal.
async fn watch(ctx: &Ctx, plan_id: &str) -> anyhow::Result<()> {
    let bar = if ctx.out.is_json() {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(0).with_style(
            ProgressStyle::with_template("{bar:40} {pos}/{len} finished  {msg}")
                .context("progress bar template")?,
        )
    };
    let tasks = loop {
        let (mut tasks, revision) = fetch(ctx, plan_id).await?;
        bar.set_length(tasks.len() as u64);
        show_progress(&bar, &tasks);
        if is_finished(tasks.values()) {
            break tasks;
        }
        let options = WatchOptions {
            start_revision: revision + 1,
            kinds: vec![EntityKind::Task],
            ..WatchOptions::default()
        };
        let mut events = ctx.client.watch(options);
        while let Some(item) = events.next().await {
            let event = match item {
                Ok(event) => event,
                // Fell too far behind: start over from a fresh read of the plan.
                Err(ClientError::Compacted { .. }) => break,
                Err(err) => return Err(err).with_context(|| format!("watch plan {plan_id}")),
            };
            let Some(event::Value::Task(task)) = event.value else {
                continue;
            };
            let Some(previous) = tasks.get(&task.id) else {
                continue;
            };
            if previous.status != task.status {
                let line = transition_line(event.revision, previous, &task);
                if ctx.out.is_json() {
                    crate::output::print_line(&serde_json::to_string(&TaskView::from(&task))?)?;
                } else if bar.is_hidden() {
                    // Not a terminal (a pipe, a log file): plain lines, no bar.
                    crate::output::print_line(&line)?;
                } else {
                    bar.println(line);
                }
            }
            tasks.insert(task.id.clone(), task);
            show_progress(&bar, &tasks);
            if is_finished(tasks.values()) {
                break;
            }
        }
        if is_finished(tasks.values()) {
            break tasks;
        }
    };
    bar.finish_and_clear();
    let counts = counts(tasks.values());
    let completed = counts.get("completed").copied().unwrap_or(0);
    ctx.out.emit_line(
        &json!({"plan_id": plan_id, "finished": true, "counts": counts}),
        || format!("plan {plan_id} finished: {}", counts_line(&counts)),
    )?;
    if completed == tasks.len() {
        Ok(())
    } else {
        Err(Refused(format!(
            "plan {plan_id} did not complete: {}",
            counts_line(&counts)
        ))
        .into())
    }
}

async fn fetch(ctx: &Ctx, plan_id: &str) -> anyhow::Result<(BTreeMap<String, Task>, u64)> {
    let response = ctx
        .client
        .get_plan(plan_id, Consistency::Linearizable)
        .await
        .with_context(|| format!("get plan {plan_id}"))?;
    let revision = response.header.map_or(0, |h| h.revision);
    let tasks = response
        .tasks
        .into_iter()
        .map(|t| (t.id.clone(), t))
        .collect();
    Ok((tasks, revision))
}

fn show_progress(bar: &ProgressBar, tasks: &BTreeMap<String, Task>) {
    let finished = tasks.values().filter(|t| is_terminal(t.status)).count();
    bar.set_position(finished as u64);
    bar.set_message(counts_line(&counts(tasks.values())));
}

fn transition_line(revision: u64, before: &Task, after: &Task) -> String {
    let mut line = format!(
        "[rev {revision}] {}: {} -> {}",
        after.id,
        task_status_name(before.status),
        task_status_name(after.status)
    );
    if after.assignee != 0 && after.status != TaskStatus::Completed as i32 {
        line.push_str(&format!(" (agent {})", after.assignee));
    }
    if !after.error.is_empty() {
        line.push_str(&format!(": {}", after.error));
    }
    line
}

fn is_terminal(status: i32) -> bool {
    [
        TaskStatus::Completed,
        TaskStatus::Failed,
        TaskStatus::Cancelled,
    ]
    .iter()
    .any(|s| *s as i32 == status)
}

fn is_finished<'a>(mut tasks: impl Iterator<Item = &'a Task>) -> bool {
    tasks.all(|t| is_terminal(t.status))
}

fn counts<'a>(tasks: impl Iterator<Item = &'a Task>) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for task in tasks {
        *counts.entry(task_status_name(task.status)).or_insert(0) += 1;
    }
    counts
}

fn counts_line(counts: &BTreeMap<String, usize>) -> String {
    if counts.is_empty() {
        return "no tasks".to_owned();
    }
    counts
        .iter()
        .map(|(status, n)| format!("{n} {status}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The plan's tasks in dependency order, with each task's stage (1 + the deepest stage among
/// its dependencies), so the DAG's layers are visible.
fn dag_table(tasks: &[Task]) -> String {
    let ordered = topological_order(tasks);
    let status_of: HashMap<&str, i32> = tasks.iter().map(|t| (t.id.as_str(), t.status)).collect();
    let mut stage: HashMap<&str, usize> = HashMap::new();
    for task in &ordered {
        let depth = task
            .depends_on
            .iter()
            .filter_map(|d| stage.get(d.as_str()))
            .max()
            .map_or(1, |deepest| deepest + 1);
        stage.insert(task.id.as_str(), depth);
    }
    table(
        &[
            "stage",
            "id",
            "title",
            "status",
            "assignee",
            "attempts",
            "depends on",
        ],
        ordered.iter().map(|t| {
            let deps: Vec<String> = t
                .depends_on
                .iter()
                .map(|d| match status_of.get(d.as_str()) {
                    Some(status) => format!("{d}({})", task_status_name(*status)),
                    None => d.clone(),
                })
                .collect();
            vec![
                stage.get(t.id.as_str()).copied().unwrap_or(1).to_string(),
                t.id.clone(),
                t.title.clone(),
                task_status_name(t.status),
                or_dash(t.assignee),
                format!("{}/{}", t.attempts, t.max_attempts),
                list(&deps),
            ]
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(id: &str, status: TaskStatus, deps: &[&str]) -> Task {
        Task {
            id: id.into(),
            title: id.to_uppercase(),
            status: status as i32,
            depends_on: deps.iter().map(|d| (*d).into()).collect(),
            ..Task::default()
        }
    }

    #[test]
    fn dag_tables_show_stages_in_dependency_order() {
        let tasks = [
            task("deploy", TaskStatus::Blocked, &["test"]),
            task("test", TaskStatus::Ready, &["build"]),
            task("build", TaskStatus::Completed, &[]),
        ];
        let text = dag_table(&tasks);
        let rows: Vec<&str> = text.lines().skip(1).collect();
        assert!(
            rows[0].starts_with("1") && rows[0].contains("build"),
            "{text}"
        );
        assert!(
            rows[1].starts_with("2") && rows[1].contains("build(completed)"),
            "{text}"
        );
        assert!(
            rows[2].starts_with("3") && rows[2].contains("test(ready)"),
            "{text}"
        );
    }

    #[test]
    fn plans_finish_when_every_task_is_terminal() {
        let done = [
            task("a", TaskStatus::Completed, &[]),
            task("b", TaskStatus::Cancelled, &[]),
        ];
        assert!(is_finished(done.iter()));
        let running = [
            task("a", TaskStatus::Completed, &[]),
            task("b", TaskStatus::Working, &[]),
        ];
        assert!(!is_finished(running.iter()));
        assert_eq!(
            counts_line(&counts(done.iter())),
            "1 cancelled, 1 completed"
        );
    }

    #[test]
    fn transitions_name_the_agent_and_error() {
        let before = task("a", TaskStatus::Working, &[]);
        let mut after = task("a", TaskStatus::Ready, &[]);
        after.assignee = 0;
        after.error = "exit 1".into();
        assert_eq!(
            transition_line(9, &before, &after),
            "[rev 9] a: working -> ready: exit 1"
        );
    }
}
