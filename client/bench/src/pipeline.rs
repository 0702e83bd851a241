//! `pipeline`: the whole path a task takes. `--workers` real worker runtimes
//! (`percy_worker::Worker`, in this process, one connection each) register; then a plan of
//! `--tasks` tasks is submitted and the workers take each through claim → start → complete,
//! woken by the watch as in production. Three modes:
//!
//! - no `--exec`: the task runs in-process (a no-op [`TaskHandler`]): the cluster's cost per
//!   task cycle, comparable with the same cycle done with etcd transactions;
//! - `--exec CMD`: each task forks and runs `sh -c CMD`, as `percyctl worker --exec` does;
//! - `--git`: each worker runs tasks in worktrees of a scratch repository and merges them
//!   back under the fenced merge lock (the in-process task writes one file; with `--exec` the
//!   command does whatever it does).
//!
//! The clock runs from the first submission to the last completion (submission overlaps the
//! work, as it does for a user). Completions are counted from a watch on the run's tasks, so
//! nothing polls the cluster during the measurement. Afterwards every task is read back: each
//! must be completed exactly once (one attempt).

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use futures::StreamExt;
use percy_client::proto::event::Value as EventValue;
use percy_client::{Client, Consistency, EntityKind, TaskStatus, WatchOptions};
use percy_worker::{GitConfig, TaskHandler, Worker, WorkerConfig, WorkerSummary};
use serde::Serialize;

use super::report::{fields_table, r3};
use super::{setup, Env};

/// The target of the performance issue: tasks per second at 64 workers without exec.
const TARGET_TASKS_PER_S: f64 = 5_000.0;
/// How long the workers may take to register.
const REGISTER_TIMEOUT: Duration = Duration::from_secs(60);
/// Pause between two looks at whether the workers have registered.
const REGISTER_POLL: Duration = Duration::from_millis(100);
/// A run that completes nothing for this long has stalled: stop and say so.
const STALL_TIMEOUT: Duration = Duration::from_secs(60);
/// The most workers one run starts (each holds a connection and a watch).
pub const MAX_WORKERS: usize = 1_024;

#[derive(Debug, Serialize)]
pub struct PipelineReport {
    pub workload: &'static str,
    /// `in-process`, `exec` or either with `+git`.
    pub mode: String,
    pub workers: usize,
    pub tasks: usize,
    /// From the first submission to the last completion.
    pub elapsed_s: f64,
    /// Until the last plan of the run was acknowledged.
    pub submit_s: f64,
    pub tasks_per_s: f64,
    /// Wall time one worker spends per task (workers × elapsed ÷ tasks): claim, start, run,
    /// complete, and waiting for the watch to wake it.
    pub per_task_ms: f64,
    pub completed: u64,
    pub failed: u64,
    /// Attempts whose claim was gone when they reported, or abandoned by an expired agent.
    pub lost: u64,
    /// Tasks read back that are not completed after exactly one attempt.
    pub anomalies: u64,
    /// The first such task, with its last error (why an attempt failed).
    pub first_anomaly: Option<String>,
    pub verify_ok: bool,
    /// The target (no exec, 64 workers); informative in the other modes.
    pub target_tasks_per_s: f64,
    pub target_met: bool,
    pub server_version: String,
    pub tag: String,
}

impl PipelineReport {
    /// The report as a two-column table: its JSON fields, one per row.
    pub fn table(&self) -> Result<String> {
        fields_table(self)
    }
}

pub async fn run(env: &Env) -> Result<PipelineReport> {
    let workers = env.args.workers;
    let count = env.args.tasks;
    if !(1..=MAX_WORKERS).contains(&workers) {
        bail!("--workers {workers} is outside 1..={MAX_WORKERS}");
    }
    if count == 0 {
        bail!("--tasks must be at least 1");
    }
    let exec = env.args.exec.clone().unwrap_or_default();
    if env.args.exec.is_some() && exec.trim().is_empty() {
        bail!("--exec needs a command (leave it out to run tasks in-process)");
    }
    let scratch = tempfile::Builder::new()
        .prefix("percy-bench-pipeline-")
        .tempdir()
        .context("create the workers' state dir")?;
    let git = if env.args.git {
        Some(scratch_repository(&scratch.path().join("repo"))?)
    } else {
        None
    };
    // The run's tasks require a capability only its workers have: tasks other runs left
    // ready in the cluster are not claimed, and other agents do not claim these.
    let capability = format!("bench-{}", env.run_id);

    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut running = Vec::with_capacity(workers);
    let mut names = Vec::with_capacity(workers);
    for i in 0..workers {
        let name = format!("b{}-w{i}", env.run_id);
        let mut config = WorkerConfig::new(name.clone(), exec.clone());
        config.capabilities = vec![capability.clone()];
        config.inbox_dir = scratch.path().join("state");
        config.git = git.clone();
        if exec.is_empty() {
            config.handler = Some(in_process_task(git.is_some()));
        }
        let client = env.client(i).await?;
        let mut stopped = stopped.clone();
        running.push(tokio::spawn(Worker::new(client, config).run(async move {
            let _ = stopped.wait_for(|stop| *stop).await;
        })));
        names.push(name);
    }
    let client = env.client(0).await?;
    let outcome = measure(env, &client, &names, &capability, count).await;
    let _ = stop.send(true);
    let mut summary = WorkerSummary::default();
    for worker in running {
        let ended = worker
            .await
            .map_err(|e| anyhow!("a worker panicked: {e}"))?
            .context("a worker stopped with an error")?;
        summary.completed += ended.completed;
        summary.failed += ended.failed;
        summary.lost += ended.lost + ended.abandoned;
    }
    let (elapsed, submit, submitted) = outcome?;

    env.progress.say("pipeline: verifying".into());
    let tasks = setup::read_back(env, &client, &submitted).await?;
    let anomalous: Vec<_> = tasks
        .iter()
        .filter(|(_, task)| task.status() != TaskStatus::Completed || task.attempts != 1)
        .collect();
    let anomalies = anomalous.len() as u64 + count.saturating_sub(tasks.len()) as u64;
    let first_anomaly = anomalous.first().map(|(_, task)| {
        format!(
            "{}: {:?} after {} attempts; last error: {}",
            task.id,
            task.status(),
            task.attempts,
            task.error
        )
    });
    let tasks_per_s = count as f64 / elapsed.as_secs_f64().max(f64::EPSILON);
    let mode = match (exec.is_empty(), git.is_some()) {
        (true, false) => "in-process".to_owned(),
        (false, false) => "exec".to_owned(),
        (true, true) => "in-process+git".to_owned(),
        (false, true) => "exec+git".to_owned(),
    };
    Ok(PipelineReport {
        workload: "pipeline",
        mode,
        workers,
        tasks: count,
        elapsed_s: r3(elapsed.as_secs_f64()),
        submit_s: r3(submit.as_secs_f64()),
        tasks_per_s: r3(tasks_per_s),
        per_task_ms: r3(workers as f64 * elapsed.as_secs_f64() * 1000.0 / count as f64),
        completed: summary.completed,
        failed: summary.failed,
        lost: summary.lost,
        anomalies,
        first_anomaly,
        verify_ok: anomalies == 0 && summary.completed == count as u64,
        target_tasks_per_s: TARGET_TASKS_PER_S,
        target_met: tasks_per_s >= TARGET_TASKS_PER_S,
        server_version: env.server_version.clone(),
        tag: env.args.tag.clone(),
    })
}

/// Waits for the workers, submits the tasks and counts them through to the end: (from the
/// first submission to the last completion, the submission alone, what was submitted).
async fn measure(
    env: &Env,
    client: &Client,
    names: &[String],
    capability: &str,
    count: usize,
) -> Result<(Duration, Duration, setup::Submitted)> {
    env.progress.say(format!(
        "pipeline: waiting for {} workers to register",
        names.len()
    ));
    wait_registered(client, names).await?;
    let mut events = client.watch(WatchOptions {
        kinds: vec![EntityKind::Task],
        key_prefix: setup::task_id_prefix(&env.run_id),
        ..Default::default()
    });
    env.progress.say(format!("pipeline: {count} tasks"));
    let start = Instant::now();
    let clients = [client.clone()];
    let requires = [capability.to_owned()];
    let submitting = setup::submit_tasks(env, &clients, count, &requires);
    let counting = async {
        let mut ended = HashSet::with_capacity(count);
        while ended.len() < count {
            let event = tokio::time::timeout(STALL_TIMEOUT, events.next())
                .await
                .map_err(|_| {
                    anyhow!(
                        "stalled: {} of {count} tasks ended, none in the last {}s",
                        ended.len(),
                        STALL_TIMEOUT.as_secs()
                    )
                })?
                .ok_or_else(|| anyhow!("the watch on the run's tasks ended"))?
                .context("watching the run's tasks")?;
            if let Some(EventValue::Task(task)) = event.value {
                if matches!(
                    task.status(),
                    TaskStatus::Completed | TaskStatus::Failed | TaskStatus::Cancelled
                ) && ended.insert(task.id)
                    && ended.len() % 1_000 == 0
                {
                    env.progress
                        .say(format!("pipeline: {} / {count} tasks ended", ended.len()));
                }
            }
        }
        Ok::<_, anyhow::Error>(start.elapsed())
    };
    let (submitted, elapsed) = tokio::join!(
        async {
            let submitted = submitting.await;
            (submitted, start.elapsed())
        },
        counting
    );
    let (submitted, submit) = (submitted.0?, submitted.1);
    Ok((elapsed?, submit, submitted))
}

/// Until every worker's agent is registered.
async fn wait_registered(client: &Client, names: &[String]) -> Result<()> {
    let deadline = Instant::now() + REGISTER_TIMEOUT;
    let mut waiting: Vec<&String> = names.iter().collect();
    while !waiting.is_empty() {
        let mut still = Vec::new();
        for name in waiting {
            let found = client
                .get_agent_by_name(name, Consistency::Serializable)
                .await
                .ok()
                .and_then(|r| r.agent);
            if found.is_none() {
                still.push(name);
            }
        }
        waiting = still;
        if waiting.is_empty() {
            break;
        }
        if Instant::now() > deadline {
            bail!(
                "{} workers did not register within {}s",
                waiting.len(),
                REGISTER_TIMEOUT.as_secs()
            );
        }
        tokio::time::sleep(REGISTER_POLL).await;
    }
    Ok(())
}

/// The in-process task: nothing, or in git mode one new file in the task's worktree (so
/// every merge moves the target branch).
fn in_process_task(git: bool) -> TaskHandler {
    TaskHandler::new(move |task, workdir| {
        if !git {
            return Ok(String::new());
        }
        let dir = workdir.ok_or("git mode without a worktree")?;
        let file = dir.join(format!("{}.txt", task.id));
        std::fs::write(&file, format!("{}\n", task.id))
            .map_err(|e| format!("writing {}: {e}", file.display()))?;
        Ok(format!("wrote {}", file.display()))
    })
}

/// A repository with one commit on `main`, for the git mode's merges.
fn scratch_repository(dir: &Path) -> Result<GitConfig> {
    let repo = git2::Repository::init(dir)
        .with_context(|| format!("create a scratch repository in {}", dir.display()))?;
    let signature = git2::Signature::now("percy bench", "bench@percy.invalid")?;
    std::fs::write(dir.join("README"), "pipeline benchmark\n")?;
    let mut index = repo.index()?;
    index.add_path(Path::new("README"))?;
    index.write()?;
    let tree = repo.find_tree(index.write_tree()?)?;
    repo.commit(
        Some("refs/heads/main"),
        &signature,
        &signature,
        "initial",
        &tree,
        &[],
    )?;
    repo.set_head("refs/heads/main")?;
    Ok(GitConfig {
        repo: PathBuf::from(dir),
        target: "main".into(),
        resolver: None,
        push: None,
        on_complete: None,
    })
}
