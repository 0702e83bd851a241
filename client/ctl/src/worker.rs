//! `percyctl worker`: run a worker in the foreground until SIGTERM or ctrl-c (see
//! `percy_worker`). Logs go to stderr through tracing; the exit code is 0 after a
//! clean shutdown.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Args as ClapArgs;
use percy_worker::{
    terminate_signal, GitConfig, Worker, WorkerConfig, DEFAULT_MAX_CONCURRENT,
    DEFAULT_TARGET_BRANCH,
};

use crate::{args, program_path, Ctx};

/// Default grace period, as text for clap.
const DEFAULT_GRACE: &str = "30s";

#[derive(Debug, ClapArgs)]
pub struct Args {
    /// Agent name (unique among live agents).
    #[arg(long)]
    name: String,
    /// Capabilities, comma-separated.
    #[arg(long, value_delimiter = ',')]
    capabilities: Vec<String>,
    /// Label k=v in addition to the detected os, arch and host (repeatable).
    #[arg(long = "label", value_parser = args::key_value)]
    labels: Vec<(String, String)>,
    /// Tasks run at once.
    #[arg(long, default_value_t = DEFAULT_MAX_CONCURRENT, value_parser = args::positive_count)]
    max_concurrent: u32,
    /// Command run for each task through `sh -c`; it gets PERCY_TASK_ID, PERCY_TASK_TITLE,
    /// PERCY_TASK_ATTEMPT, PERCY_CLAIM_TOKEN, PERCY_AGENT_ID, PERCY_AGENT_NAME, PERCY_PLAN_ID,
    /// PERCY_ENDPOINTS and PERCY_INBOX, and the description and payload on stdin. A relative
    /// program path (`./agent.sh`) is relative to the current directory (to --workdir when
    /// given). Optional with --definitions or --accept-exec (such a worker runs definitions
    /// or execs only).
    #[arg(long, required_unless_present_any = ["definitions", "accept_exec"])]
    exec: Option<String>,
    /// Also run the definitions whose capabilities and selector this worker matches, in
    /// loops: `sh -c <command>` per iteration with the prompt (and steering messages) on stdin.
    #[arg(long)]
    definitions: bool,
    /// Also accept execs (`percyctl exec`): commands operators send to run here, streamed
    /// live. Off by default: it lets any operator of the cluster run commands on this host.
    #[arg(long)]
    accept_exec: bool,
    /// Timeout of tasks that set none (default: no limit).
    #[arg(long, value_parser = args::positive_duration)]
    timeout: Option<Duration>,
    /// How long running commands may finish after SIGTERM before they are killed.
    #[arg(long, default_value = DEFAULT_GRACE, value_parser = args::duration)]
    grace: Duration,
    /// Agent TTL: expired after this long without a heartbeat (default: the server's).
    #[arg(long, value_parser = args::positive_duration)]
    ttl: Option<Duration>,
    /// Directory of the inbox file (PERCY_INBOX) (default: a directory in $TMPDIR).
    #[arg(long)]
    inbox_dir: Option<PathBuf>,
    /// Working directory of the commands (default: the current one).
    #[arg(long)]
    workdir: Option<PathBuf>,
    /// Git repository: run each task in its own worktree and merge it into --target.
    #[arg(long)]
    repo: Option<PathBuf>,
    /// Branch tasks start from and merge into (with --repo).
    #[arg(long, default_value = DEFAULT_TARGET_BRANCH, requires = "repo")]
    target: String,
    /// Command that resolves merge conflicts (with --repo); without it a conflict fails the task.
    /// A relative program path is relative to the current directory.
    #[arg(long, requires = "repo")]
    resolver: Option<String>,
    /// After a task's work is merged, push its branch (percy/<task-id>) to this git remote
    /// (a remote name or URL; with --repo).
    #[arg(long, value_name = "REMOTE", requires = "repo")]
    push: Option<String>,
    /// After the merge (and --push), run this command through `sh -c` in --repo with the
    /// task's PERCY_TASK_* variables and PERCY_BRANCH, the description on stdin — e.g.
    /// `gh pr create --head "$PERCY_BRANCH" --title "$PERCY_TASK_TITLE" --body-file -`.
    /// Its failure fails the task. A relative program path is relative to the current
    /// directory.
    #[arg(long, value_name = "CMD", requires = "repo")]
    on_complete: Option<String>,
}

pub async fn run(ctx: &Ctx, args: Args) -> anyhow::Result<()> {
    // A relative program path means the directory percyctl runs in; commands run elsewhere
    // (a task's worktree), unless --workdir names where they run and so what they are
    // relative to.
    let exec = match (args.exec, &args.workdir) {
        (None, _) => String::new(),
        (Some(exec), None) => program_path::anchor_in_current_dir(&exec),
        (Some(exec), Some(_)) => exec,
    };
    let mut config = WorkerConfig::new(args.name, exec);
    config.definitions = args.definitions;
    config.accept_exec = args.accept_exec;
    config.capabilities = args.capabilities;
    config.labels = args.labels.into_iter().collect::<BTreeMap<_, _>>();
    config.max_concurrent = args.max_concurrent;
    config.task_grace = args.grace;
    config.default_timeout = args.timeout;
    config.ttl = args.ttl;
    config.workdir = args.workdir;
    if let Some(dir) = args.inbox_dir {
        config.inbox_dir = dir;
    }
    config.git = args.repo.map(|repo| GitConfig {
        repo,
        target: args.target,
        resolver: args
            .resolver
            .map(|r| program_path::anchor_in_current_dir(&r)),
        push: args.push,
        on_complete: args
            .on_complete
            .map(|c| program_path::anchor_in_current_dir(&c)),
    });
    let name = config.name.clone();
    let signal = terminate_signal().context("installing the signal handlers")?;
    let summary = Worker::new(ctx.client.clone(), config)
        .run(signal)
        .await
        .with_context(|| format!("worker {name}"))?;
    tracing::info!(
        completed = summary.completed,
        failed = summary.failed,
        lost = summary.lost,
        abandoned = summary.abandoned,
        registrations = summary.registrations,
        "worker stopped"
    );
    Ok(())
}
