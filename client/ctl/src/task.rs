//! `percyctl task …`: submit, claim, start, complete, fail, cancel, requeue, get, list.

use std::time::Duration;

use anyhow::Context;
use clap::Subcommand;
use percy_client::proto::{Cascade, Task, TaskResult, TaskSpec, TaskUpdateResponse};
use percy_client::{TaskFilter, TaskStatus};
use serde_json::json;

use crate::output::{details, list, map, or_dash, table};
use crate::views::{task_status_name, timestamp, HeaderView, TaskView};
use crate::{agent, args, Ctx, Refused};

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Submit one task.
    Submit {
        /// One-line title (workers get it as PERCY_TASK_TITLE).
        #[arg(long)]
        title: String,
        /// Longer description, given to the worker's command on stdin.
        #[arg(long, default_value = "")]
        description: String,
        /// Input for the worker: text, or @file.
        #[arg(long, value_parser = args::payload)]
        payload: Option<args::Payload>,
        /// Capabilities the agent must have, comma-separated.
        #[arg(long, value_delimiter = ',')]
        requires: Vec<String>,
        /// Label k=v the agent must carry (repeatable).
        #[arg(long = "selector", value_parser = args::key_value)]
        selector: Vec<(String, String)>,
        /// Higher runs first among ready tasks.
        #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
        priority: i32,
        /// Task ids that must complete first, comma-separated.
        #[arg(long, value_delimiter = ',')]
        depends_on: Vec<String>,
        /// Attempts before the task fails for good (default: the server's).
        #[arg(long, value_parser = args::positive_count)]
        max_attempts: Option<u32>,
        /// How long one attempt may run.
        #[arg(long, value_parser = args::positive_duration)]
        timeout: Option<Duration>,
        /// Task id (default: generated).
        #[arg(long)]
        id: Option<String>,
    },
    /// Claim a task for an agent: a given one (--task), or the best one it can run.
    Claim {
        /// Agent id or name.
        #[arg(long)]
        agent: String,
        /// Claim this task instead of the best one the agent can run.
        #[arg(long)]
        task: Option<String>,
        /// Claim only if the task is still at this revision.
        #[arg(long, requires = "task")]
        revision: Option<u64>,
    },
    /// Mark a claimed task as working.
    Start {
        /// Task id.
        id: String,
        /// Agent id or name (the claim holder).
        #[arg(long)]
        agent: String,
        /// The claim token from the claim.
        #[arg(long)]
        token: u64,
    },
    /// Complete a task.
    Complete {
        /// Task id.
        id: String,
        /// Agent id or name (the claim holder).
        #[arg(long)]
        agent: String,
        /// The claim token from the claim.
        #[arg(long)]
        token: u64,
        /// One-line result.
        #[arg(long, default_value = "")]
        summary: String,
        /// Branch holding the work, if any.
        #[arg(long, default_value = "")]
        branch: String,
    },
    /// Fail an attempt (requeued while attempts remain).
    Fail {
        /// Task id.
        id: String,
        /// Agent id or name (the claim holder).
        #[arg(long)]
        agent: String,
        /// The claim token from the claim.
        #[arg(long)]
        token: u64,
        /// What went wrong.
        #[arg(long)]
        error: String,
    },
    /// Cancel a task (its dependents are cancelled too).
    Cancel {
        /// Task id.
        id: String,
        /// Why, recorded on the task.
        #[arg(long, default_value = "cancelled by operator")]
        reason: String,
    },
    /// Put a claimed or working task back to ready.
    Requeue {
        /// Task id.
        id: String,
        /// Why, recorded on the task.
        #[arg(long, default_value = "requeued by operator")]
        reason: String,
    },
    /// Show one task.
    Get {
        /// Task id.
        id: String,
        #[command(flatten)]
        read: args::Read,
    },
    /// List tasks.
    List {
        /// Only tasks in this state (ready, claimed, working, completed, …).
        #[arg(long, value_parser = args::task_status)]
        status: Option<TaskStatus>,
        /// Only the tasks of this plan.
        #[arg(long)]
        plan: Option<String>,
        /// Only tasks held by this agent (id or name).
        #[arg(long)]
        assignee: Option<String>,
        /// At most this many tasks (0: no limit).
        #[arg(long, default_value_t = 0)]
        limit: u32,
        #[command(flatten)]
        read: args::Read,
    },
}

pub async fn run(ctx: &Ctx, cmd: Command) -> anyhow::Result<()> {
    match cmd {
        Command::Submit {
            title,
            description,
            payload,
            requires,
            selector,
            priority,
            depends_on,
            max_attempts,
            timeout,
            id,
        } => {
            let spec = TaskSpec {
                id: id.unwrap_or_default(),
                title,
                description,
                payload: payload.map(|p| p.0).unwrap_or_default(),
                requires,
                selector: args::to_map(&selector),
                priority,
                depends_on,
                max_attempts: max_attempts.unwrap_or(0),
                timeout_ms: timeout.map_or(0, args::millis),
            };
            let response = ctx.client.submit_task(spec).await.context("submit task")?;
            let task = response.task.context("submit task: server sent no task")?;
            print_task(ctx, response.header, &task, || {
                format!(
                    "task {} submitted ({}, revision {})",
                    task.id,
                    task_status_name(task.status),
                    task.revision
                )
            })
        }
        Command::Claim {
            agent,
            task,
            revision,
        } => {
            let agent_id = agent::resolve(ctx, &agent).await?;
            let response = match &task {
                Some(task_id) => ctx.client.claim_task(agent_id, task_id, revision).await,
                None => ctx.client.claim_next(agent_id).await,
            }
            .with_context(|| match &task {
                Some(task_id) => format!("claim task {task_id} for agent {agent}"),
                None => format!("claim a task for agent {agent}"),
            })?;
            let Some(claimed) = response.task else {
                return Err(Refused(format!("no claimable task for agent {agent}")).into());
            };
            print_task(ctx, response.header, &claimed, || {
                format!(
                    "task {} claimed by agent {} (claim_token {})",
                    claimed.id, claimed.assignee, claimed.claim_token
                )
            })
        }
        Command::Start { id, agent, token } => {
            let agent_id = agent::resolve(ctx, &agent).await?;
            let response = ctx
                .client
                .start_task(&id, agent_id, token)
                .await
                .with_context(|| format!("start task {id}"))?;
            print_update(ctx, response, "started")
        }
        Command::Complete {
            id,
            agent,
            token,
            summary,
            branch,
        } => {
            let agent_id = agent::resolve(ctx, &agent).await?;
            let result = TaskResult {
                summary,
                branch,
                ..TaskResult::default()
            };
            let response = ctx
                .client
                .complete_task(&id, agent_id, token, result)
                .await
                .with_context(|| format!("complete task {id}"))?;
            print_update(ctx, response, "completed")
        }
        Command::Fail {
            id,
            agent,
            token,
            error,
        } => {
            let agent_id = agent::resolve(ctx, &agent).await?;
            let response = ctx
                .client
                .fail_task(&id, agent_id, token, &error)
                .await
                .with_context(|| format!("fail task {id}"))?;
            print_update(ctx, response, "failed")
        }
        Command::Cancel { id, reason } => {
            let response = ctx
                .client
                .cancel_task(&id, &reason)
                .await
                .with_context(|| format!("cancel task {id}"))?;
            print_update(ctx, response, "cancelled")
        }
        Command::Requeue { id, reason } => {
            let response = ctx
                .client
                .requeue_task(&id, &reason)
                .await
                .with_context(|| format!("requeue task {id}"))?;
            print_update(ctx, response, "requeued")
        }
        Command::Get { id, read } => {
            let response = ctx
                .client
                .get_task(&id, read.consistency())
                .await
                .with_context(|| format!("get task {id}"))?;
            let task = response
                .task
                .with_context(|| format!("get task {id}: server sent no task"))?;
            print_task(ctx, response.header, &task, || task_details(&task))
        }
        Command::List {
            status,
            plan,
            assignee,
            limit,
            read,
        } => {
            let assignee = match assignee {
                Some(agent) => Some(agent::resolve(ctx, &agent).await?),
                None => None,
            };
            let filter = TaskFilter {
                status,
                plan_id: plan,
                assignee,
                limit,
            };
            let response = ctx
                .client
                .list_tasks(&filter, read.consistency())
                .await
                .context("list tasks")?;
            let views: Vec<TaskView> = response.tasks.iter().map(TaskView::from).collect();
            ctx.out.emit(
                &json!({"header": HeaderView::from(response.header), "tasks": views}),
                || tasks_table(&response.tasks),
            )
        }
    }
}

fn print_task(
    ctx: &Ctx,
    header: Option<percy_client::proto::ResponseHeader>,
    task: &Task,
    line: impl FnOnce() -> String,
) -> anyhow::Result<()> {
    ctx.out.emit(
        &json!({"header": HeaderView::from(header), "task": TaskView::from(task)}),
        line,
    )
}

fn print_update(ctx: &Ctx, response: TaskUpdateResponse, verb: &str) -> anyhow::Result<()> {
    let task = response.task.unwrap_or_default();
    let cascade = response.cascade.unwrap_or_default();
    ctx.out.emit(
        &json!({
            "header": HeaderView::from(response.header),
            "task": TaskView::from(&task),
            "cascade": {"unblocked": cascade.unblocked, "cancelled": cascade.cancelled},
        }),
        || update_line(&task, verb, &cascade),
    )
}

fn update_line(task: &Task, verb: &str, cascade: &Cascade) -> String {
    let mut line = format!(
        "task {} {verb}: now {} (attempt {}/{})",
        task.id,
        task_status_name(task.status),
        task.attempts,
        task.max_attempts
    );
    if !cascade.unblocked.is_empty() {
        line.push_str(&format!("; unblocked {}", list(&cascade.unblocked)));
    }
    if !cascade.cancelled.is_empty() {
        line.push_str(&format!("; cancelled {}", list(&cascade.cancelled)));
    }
    line
}

pub fn tasks_table(tasks: &[Task]) -> String {
    table(
        &[
            "id",
            "title",
            "status",
            "prio",
            "assignee",
            "token",
            "attempts",
            "depends on",
            "plan",
        ],
        tasks.iter().map(|t| {
            vec![
                t.id.clone(),
                t.title.clone(),
                task_status_name(t.status),
                t.priority.to_string(),
                or_dash(t.assignee),
                or_dash(t.claim_token),
                format!("{}/{}", t.attempts, t.max_attempts),
                list(&t.depends_on),
                or_dash(&t.plan_id),
            ]
        }),
    )
}

fn task_details(t: &Task) -> String {
    let result = t.result.clone().unwrap_or_default();
    details(&[
        ("id", t.id.clone()),
        ("title", t.title.clone()),
        ("description", or_dash(&t.description)),
        ("status", task_status_name(t.status)),
        ("priority", t.priority.to_string()),
        ("requires", list(&t.requires)),
        ("selector", map(&t.selector)),
        ("depends on", list(&t.depends_on)),
        ("plan", or_dash(&t.plan_id)),
        ("assignee", or_dash(t.assignee)),
        ("claim token", or_dash(t.claim_token)),
        ("attempts", format!("{}/{}", t.attempts, t.max_attempts)),
        (
            "timeout",
            if t.timeout_ms == 0 {
                "-".to_owned()
            } else {
                format!("{}ms", t.timeout_ms)
            },
        ),
        ("summary", or_dash(&result.summary)),
        ("branch", or_dash(&result.branch)),
        ("error", or_dash(&t.error)),
        ("created", timestamp(t.created_at_ms)),
        ("updated", timestamp(t.updated_at_ms)),
        ("revision", t.revision.to_string()),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn update_lines_mention_the_cascade() {
        let task = Task {
            id: "build".into(),
            status: TaskStatus::Completed as i32,
            attempts: 1,
            max_attempts: 3,
            ..Task::default()
        };
        let cascade = Cascade {
            unblocked: vec!["test".into(), "lint".into()],
            cancelled: vec![],
        };
        assert_eq!(
            update_line(&task, "completed", &cascade),
            "task build completed: now completed (attempt 1/3); unblocked test,lint"
        );
    }

    #[test]
    fn task_tables_show_tokens_and_dependencies() {
        let task = Task {
            id: "t1".into(),
            title: "Build".into(),
            status: TaskStatus::Claimed as i32,
            assignee: 2,
            claim_token: 17,
            depends_on: vec!["t0".into()],
            ..Task::default()
        };
        let text = tasks_table(&[task]);
        let row = text.lines().nth(1).unwrap();
        for cell in ["t1", "Build", "claimed", "17", "t0"] {
            assert!(row.contains(cell), "{cell} missing in {row}");
        }
    }
}
