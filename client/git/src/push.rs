//! Pushing a task's branch to a remote (`percyctl worker --push REMOTE`). Through the git
//! command line, not libgit2: the user's remotes, credential helpers and SSH keys apply, and
//! libgit2 is built here without network transports.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::error::GitError;

/// How often a running push is checked for its end.
const POLL: Duration = Duration::from_millis(50);

/// `git push REMOTE +refs/heads/B:refs/heads/B` in `repo`, killed after `timeout`. Forced: a
/// retried task's branch starts over from the target and replaces what an earlier attempt
/// pushed. Never prompts (a push that needs a password fails instead of hanging).
pub fn push_branch(
    repo: &Path,
    remote: &str,
    branch: &str,
    timeout: Duration,
) -> Result<(), GitError> {
    let refspec = format!("+refs/heads/{branch}:refs/heads/{branch}");
    let failed = |detail: String| GitError::Push {
        branch: branch.to_owned(),
        remote: remote.to_owned(),
        detail,
    };
    let mut child = Command::new("git")
        .arg("-C")
        .arg(repo)
        .args(["push", "--quiet", remote, &refspec])
        .env("GIT_TERMINAL_PROMPT", "0")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| failed(format!("running git: {e}")))?;
    let started = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if started.elapsed() >= timeout => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(failed(format!("no answer within {timeout:?}")));
            }
            Ok(None) => std::thread::sleep(POLL),
            Err(e) => return Err(failed(format!("waiting for git: {e}"))),
        }
    }
    // The stderr of a failed push is a few lines: reading it after the exit cannot block.
    let output = child
        .wait_with_output()
        .map_err(|e| failed(format!("waiting for git: {e}")))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(failed(format!(
            "git push {}: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        )))
    }
}
