//! After a git-mode task's work is merged: `--push REMOTE` pushes the task's branch, then
//! `--on-complete CMD` runs (e.g. `gh pr create --head "$PERCY_BRANCH" ...`) with the task's
//! `PERCY_*` variables, `PERCY_BRANCH`, and the task's description on stdin. Either failing
//! fails the task with the reason, so a pull request that was never opened shows on the task.

use std::ffi::OsString;
use std::path::Path;
use std::time::Duration;

use crate::executor::{execute, ExecEnd, Execution};
use crate::tail::STDOUT_TAIL_BYTES;

/// How long `git push` and the on-complete command may take: a hung network call must not
/// hold the task's slot forever.
pub const PUBLISH_TIMEOUT: Duration = Duration::from_secs(600);

/// Pushes `branch` to `remote` from `repo` (percy-git's `push_branch`, on the blocking pool).
pub async fn push(repo: &Path, remote: &str, branch: &str) -> Result<(), String> {
    let (repo, remote_name, branch_name) = (repo.to_owned(), remote.to_owned(), branch.to_owned());
    let pushed = tokio::task::spawn_blocking(move || {
        percy_git::push_branch(&repo, &remote_name, &branch_name, PUBLISH_TIMEOUT)
    })
    .await;
    match pushed {
        Ok(Ok(())) => {
            tracing::info!(%branch, %remote, "pushed the task's branch");
            Ok(())
        }
        Ok(Err(err)) => Err(err.to_string()),
        Err(join) => Err(format!("pushing {branch} to {remote}: {join}")),
    }
}

/// Runs the on-complete `command` through `sh -c` in `repo` with `env` (the task's
/// variables and `PERCY_BRANCH`) and `stdin`.
pub async fn on_complete(
    command: &str,
    repo: &Path,
    env: Vec<(String, OsString)>,
    stdin: Vec<u8>,
    task_id: &str,
) -> Result<(), String> {
    let execution = Execution {
        command: command.to_owned(),
        env,
        stdin,
        workdir: Some(repo.to_owned()),
        timeout: Some(PUBLISH_TIMEOUT),
        record_in: None,
        task_id: task_id.to_owned(),
        stdout_tail_bytes: STDOUT_TAIL_BYTES,
        stop_grace: None,
        live: None,
    };
    let outcome = execute(execution, std::future::pending())
        .await
        .map_err(|e| format!("--on-complete {command:?}: {e}"))?;
    let stderr = outcome.stderr.text();
    let why = match outcome.end {
        ExecEnd::Exited(0) => {
            tracing::info!(task_id, "on-complete command succeeded");
            return Ok(());
        }
        ExecEnd::Exited(code) => format!("exit code {code}"),
        ExecEnd::Signalled(signal) => format!("killed by signal {signal}"),
        ExecEnd::TimedOut(after) => {
            format!("timed out after {}", humantime::format_duration(after))
        }
        ExecEnd::Killed => "killed".to_owned(),
    };
    let stderr = stderr.trim();
    Err(if stderr.is_empty() {
        format!("--on-complete failed: {why}")
    } else {
        format!("--on-complete failed: {why}: {stderr}")
    })
}
