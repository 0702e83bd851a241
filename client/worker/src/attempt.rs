//! One attempt at one claimed task: mark it working, run the command, report the result
//! under the claim token. Whatever happens to the task is reported on the task and logged;
//! nothing here stops the worker.

use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::config::WorkerConfig;
use crate::executor::{execute, ExecEnd, ExecOutcome, Execution};
use crate::publish;
use crate::repo::Repo;
use crate::running;
use crate::tail::{last_line, SUMMARY_MAX_BYTES};
use percy_client::proto::{Task, TaskResult};
use percy_client::TaskStatus;
use percy_client::{Client, ClientError};

/// How many times a result is reported when the cluster cannot be reached (each report
/// already retries across endpoints for the client's deadline).
const REPORT_ATTEMPTS: u32 = 3;
/// Pause between two such reports.
const REPORT_RETRY_PAUSE: Duration = Duration::from_secs(1);

/// Why running commands are being stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interrupt {
    None,
    /// The agent expired: its claim tokens are stale, so nothing is reported.
    Expired,
    /// The worker is shutting down and the grace period is over: fail the task.
    Shutdown,
}

/// What an incarnation's attempts share.
pub struct AttemptEnv {
    pub client: Client,
    pub agent_id: u64,
    pub agent_name: String,
    pub config: Arc<WorkerConfig>,
    pub inbox: PathBuf,
    pub repo: Option<Repo>,
    /// Whether a completing attempt may claim the agent's next task in the same write
    /// (`Client::complete_task_and_claim_next`): cleared when the incarnation stops claiming
    /// (shutdown, expiry).
    pub claiming: AtomicBool,
}

/// How an attempt ended, and the next task its completion claimed (already working) for the
/// incarnation to run in its place.
#[derive(Debug)]
pub struct Finished {
    pub outcome: AttemptOutcome,
    pub next: Option<Task>,
}

/// How an attempt ended, from the worker's point of view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttemptOutcome {
    Completed,
    /// Reported as failed (the cluster retries it while attempts remain).
    Failed(String),
    /// The claim was gone when we reported: someone else has the task now.
    Lost(String),
    /// Dropped without reporting because the agent expired.
    Abandoned,
}

/// Runs `task` (claimed by `env.agent_id`) to the end; `interrupt` stops it early.
pub async fn run_attempt(
    env: Arc<AttemptEnv>,
    task: Task,
    mut interrupt: watch::Receiver<Interrupt>,
) -> Finished {
    let mut next = None;
    let outcome = if task.requires.iter().any(|c| c == crate::EXEC_CAPABILITY) {
        crate::exec_attempt::run_exec(&env, &task, &mut interrupt).await
    } else {
        attempt(&env, &task, &mut interrupt, &mut next).await
    };
    match &outcome {
        AttemptOutcome::Completed => {
            tracing::info!(task_id = %task.id, title = %task.title, "completed task");
        }
        AttemptOutcome::Failed(error) => {
            tracing::warn!(task_id = %task.id, attempt = task.attempts, %error, "failed task");
        }
        AttemptOutcome::Lost(reason) => {
            tracing::warn!(task_id = %task.id, %reason, "lost task: the claim is no longer ours");
        }
        AttemptOutcome::Abandoned => {
            tracing::warn!(task_id = %task.id, "abandoned task: the agent expired");
        }
    }
    Finished { outcome, next }
}

/// `next`: set to the task the completion claimed in the same write, if it did.
async fn attempt(
    env: &AttemptEnv,
    task: &Task,
    interrupt: &mut watch::Receiver<Interrupt>,
    next: &mut Option<Task>,
) -> AttemptOutcome {
    let token = task.claim_token;
    if task.status() == TaskStatus::Working {
        // Claimed and started in one write (`claim_next_started`, or a completion's claim).
        tracing::info!(task_id = %task.id, "working on task");
    } else {
        match env.client.start_task(&task.id, env.agent_id, token).await {
            Ok(_) => tracing::info!(task_id = %task.id, "working on task"),
            Err(err) if err.is_refusal() => return AttemptOutcome::Lost(err.to_string()),
            // The claim stands; complete/fail accept a claimed task too, so run it anyway.
            Err(err) => {
                tracing::warn!(task_id = %task.id, error = %err, "could not mark the task working")
            }
        }
    }

    let worktree = match &env.repo {
        Some(repo) => match repo.worktree(&task.id).await {
            Ok(worktree) => Some(worktree),
            Err(err) => {
                return report_failure(env, task, &format!("preparing the worktree: {err}")).await
            }
        },
        None => None,
    };
    let workdir = worktree
        .as_ref()
        .map(|w| w.path().to_owned())
        .or_else(|| env.config.workdir.clone());
    let ran = match &env.config.handler {
        Some(handler) => handler.run(task, workdir.as_deref()).map(|output| Ran {
            summary: last_line(&output, SUMMARY_MAX_BYTES),
            output_tail: output,
        }),
        None => {
            let ran = run_command(env, task, workdir, interrupt).await;
            if *interrupt.borrow() == Interrupt::Expired {
                if let (Some(repo), Some(worktree)) = (&env.repo, worktree) {
                    repo.discard(worktree).await;
                }
                return AttemptOutcome::Abandoned;
            }
            ran
        }
    };
    match ran {
        Ok(ran) => {
            let mut result = TaskResult {
                summary: ran.summary,
                branch: String::new(),
                exit_code: Some(0),
                output_tail: ran.output_tail,
            };
            if let (Some(repo), Some(worktree)) = (&env.repo, worktree) {
                match repo
                    .merge(&env.client, env.agent_id, &env.agent_name, task, worktree)
                    .await
                {
                    Ok(branch) => result.branch = branch,
                    Err(failure) => return report_failure(env, task, &failure.0).await,
                }
                if let Err(why) = publish_branch(env, repo, task, &result.branch).await {
                    return report_failure(env, task, &why).await;
                }
            }
            report_success(env, task, result, next).await
        }
        Err(error) => {
            if let (Some(repo), Some(worktree)) = (&env.repo, worktree) {
                repo.discard(worktree).await;
            }
            report_failure(env, task, &error).await
        }
    }
}

/// What a successful run hands to the result.
struct Ran {
    summary: String,
    output_tail: String,
}

/// Runs the worker's command for `task` (`sh -c <exec>`); `Err` is the task's error text.
async fn run_command(
    env: &AttemptEnv,
    task: &Task,
    workdir: Option<PathBuf>,
    interrupt: &mut watch::Receiver<Interrupt>,
) -> Result<Ran, String> {
    let execution = Execution {
        command: env.config.exec.clone(),
        env: task_env(env, task),
        stdin: task_input(task),
        workdir,
        timeout: task_timeout(task, env.config.default_timeout),
        record_in: Some(running::records_dir(
            &env.config.inbox_dir,
            &env.config.name,
        )),
        task_id: task.id.clone(),
        stdout_tail_bytes: crate::tail::STDOUT_TAIL_BYTES,
        stop_grace: None,
        live: None,
    };
    let kill = async {
        // A dropped sender means the incarnation is gone: stop too.
        let _ = interrupt.wait_for(|i| *i != Interrupt::None).await;
    };
    let executed = execute(execution, kill).await;
    let interrupted = *interrupt.borrow();
    let output = executed.map_err(|err| err.to_string())?;
    judge(&output, interrupted, env)?;
    Ok(Ran {
        summary: output.stdout.last_line(SUMMARY_MAX_BYTES),
        output_tail: output.stdout.text(),
    })
}

/// `--push` then `--on-complete` for a merged task branch (see `publish`).
async fn publish_branch(
    env: &AttemptEnv,
    repo: &Repo,
    task: &Task,
    branch: &str,
) -> Result<(), String> {
    if let Some(remote) = &repo.push {
        publish::push(repo.dir(), remote, branch).await?;
    }
    if let Some(command) = &repo.on_complete {
        let mut variables = task_env(env, task);
        variables.push(("PERCY_BRANCH".to_owned(), OsString::from(branch)));
        variables.push((
            "PERCY_TASK_DESCRIPTION".to_owned(),
            OsString::from(task.description.clone()),
        ));
        let stdin = task.description.clone().into_bytes();
        publish::on_complete(command, repo.dir(), variables, stdin, &task.id).await?;
    }
    Ok(())
}

/// `Ok` for a clean exit, else the task's error text.
fn judge(outcome: &ExecOutcome, interrupted: Interrupt, env: &AttemptEnv) -> Result<(), String> {
    let stderr = outcome.stderr.text();
    let with_stderr = |what: String| {
        if stderr.trim().is_empty() {
            what
        } else {
            format!("{what}: {}", stderr.trim_end())
        }
    };
    match outcome.end {
        ExecEnd::Exited(0) => Ok(()),
        ExecEnd::Exited(code) => Err(with_stderr(format!("exit code {code}"))),
        ExecEnd::Signalled(signal) => Err(with_stderr(format!("killed by signal {signal}"))),
        ExecEnd::TimedOut(after) => Err(with_stderr(format!(
            "timed out after {}",
            humantime::format_duration(after)
        ))),
        ExecEnd::Killed => Err(match interrupted {
            Interrupt::Shutdown => format!(
                "worker {} shut down: killed after the grace period of {}",
                env.agent_name,
                humantime::format_duration(env.config.task_grace)
            ),
            Interrupt::Expired | Interrupt::None => "killed".to_owned(),
        }),
    }
}

/// The task's own timeout, else the worker's default.
pub fn task_timeout(task: &Task, default: Option<Duration>) -> Option<Duration> {
    match task.timeout_ms {
        0 => default,
        ms => Some(Duration::from_millis(ms)),
    }
}

/// What the command reads on stdin: the description, then the payload.
pub fn task_input(task: &Task) -> Vec<u8> {
    let mut input = task.description.clone().into_bytes();
    if !input.is_empty() && !task.payload.is_empty() && !input.ends_with(b"\n") {
        input.push(b'\n');
    }
    input.extend_from_slice(&task.payload);
    input
}

fn task_env(env: &AttemptEnv, task: &Task) -> Vec<(String, OsString)> {
    let text = |key: &str, value: String| (key.to_owned(), OsString::from(value));
    vec![
        text("PERCY_TASK_ID", task.id.clone()),
        text("PERCY_TASK_TITLE", task.title.clone()),
        text("PERCY_TASK_ATTEMPT", task.attempts.to_string()),
        text("PERCY_CLAIM_TOKEN", task.claim_token.to_string()),
        text("PERCY_AGENT_ID", env.agent_id.to_string()),
        text("PERCY_AGENT_NAME", env.agent_name.clone()),
        text("PERCY_PLAN_ID", task.plan_id.clone()),
        text("PERCY_ENDPOINTS", env.client.endpoints().join(",")),
        ("PERCY_INBOX".to_owned(), env.inbox.clone().into_os_string()),
    ]
}

/// Completes the task; while the incarnation claims, the same write claims the agent's next
/// task (already working), which lands in `next`: the task cycle is then one write, not three
/// (claim, start, complete).
async fn report_success(
    env: &AttemptEnv,
    task: &Task,
    result: TaskResult,
    next: &mut Option<Task>,
) -> AttemptOutcome {
    let claim_next = env.config.runs_tasks() && env.claiming.load(Ordering::SeqCst);
    let sent = report(|| {
        let (client, result) = (&env.client, result.clone());
        async move {
            if claim_next {
                client
                    .complete_task_and_claim_next(&task.id, env.agent_id, task.claim_token, result)
                    .await
            } else {
                client
                    .complete_task(&task.id, env.agent_id, task.claim_token, result)
                    .await
            }
        }
    })
    .await;
    match sent {
        Ok(response) => {
            *next = response.next;
            AttemptOutcome::Completed
        }
        Err(err) if err.is_refusal() => AttemptOutcome::Lost(err.to_string()),
        Err(err) => AttemptOutcome::Lost(format!("could not report completion: {err}")),
    }
}

async fn report_failure(env: &AttemptEnv, task: &Task, error: &str) -> AttemptOutcome {
    let sent = report(|| {
        env.client
            .fail_task(&task.id, env.agent_id, task.claim_token, error)
    })
    .await;
    match sent {
        Ok(_) => AttemptOutcome::Failed(error.to_owned()),
        Err(err) if err.is_refusal() => AttemptOutcome::Lost(err.to_string()),
        Err(err) => AttemptOutcome::Lost(format!("could not report failure ({error}): {err}")),
    }
}

/// Sends a report, trying again while the cluster is unreachable. A retry that finds the
/// first one applied is refused as stale, which the caller reads as "lost": the only case
/// where that is wrong is a lost answer to an applied report, and then the log says so.
pub(crate) async fn report<T, F, Fut>(mut send: F) -> Result<T, ClientError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, ClientError>>,
{
    let mut attempt = 1;
    loop {
        match send().await {
            Ok(answer) => return Ok(answer),
            Err(err) if err.is_refusal() || attempt >= REPORT_ATTEMPTS => return Err(err),
            Err(err) => {
                tracing::warn!(error = %err, attempt, "could not report a task result; retrying");
                attempt += 1;
                tokio::time::sleep(REPORT_RETRY_PAUSE).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stdin_is_the_description_then_the_payload() {
        let task = Task {
            description: "fix the bug".into(),
            payload: b"{\"file\":\"a.rs\"}".to_vec(),
            ..Default::default()
        };
        assert_eq!(task_input(&task), b"fix the bug\n{\"file\":\"a.rs\"}");
        let bare = Task {
            payload: b"x".to_vec(),
            ..Default::default()
        };
        assert_eq!(task_input(&bare), b"x");
    }

    #[test]
    fn the_task_timeout_wins_over_the_default() {
        let default = Some(Duration::from_secs(60));
        let mut task = Task::default();
        assert_eq!(task_timeout(&task, default), default);
        assert_eq!(task_timeout(&task, None), None);
        task.timeout_ms = 1_500;
        assert_eq!(
            task_timeout(&task, default),
            Some(Duration::from_millis(1_500))
        );
    }
}
