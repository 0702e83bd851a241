//! Running the user's conflict resolver command on one conflicted path, and judging
//! what it produced.
//!
//! # Resolver protocol
//!
//! The command runs as `sh -c <command>` with its working directory set to a fresh
//! temporary directory for this path, stdin from /dev/null and stdout/stderr captured
//! to files (the tail of stderr is reported when the resolver fails). Environment:
//!
//! | variable | meaning |
//! | --- | --- |
//! | `PERCY_CONFLICT_PATH` | repository path the result is written to |
//! | `PERCY_CONFLICT_KIND` | `content`, `add/add`, `modify/delete`, `delete/modify`, `rename`, `binary` (see `ConflictKind`) |
//! | `PERCY_OURS`, `PERCY_THEIRS`, `PERCY_BASE` | files holding the target's, the branch's and the merge base's version; **empty** when that side has no version (added on one side, deleted on the other) |
//! | `PERCY_OUTPUT` | file the resolver writes the resolved content to (it does not exist beforehand) |
//! | `PERCY_TASK_ID`, `PERCY_BRANCH`, `PERCY_TARGET` | the task (empty for a manual merge), the branch merged and the target branch |
//! | `PERCY_REPO` | the repository directory, for context only: the resolver must not write to it |
//!
//! Verdict:
//! - exit 0 and `PERCY_OUTPUT` written → the content of the path (an empty file is an
//!   empty file). Refused if it still contains conflict markers (a line starting with
//!   `<<<<<<<` or `>>>>>>>`, or a line that is exactly `=======`), unless the output is
//!   binary: binary content is never merged textually, so markers can't be in it.
//! - exit [`RESOLVER_DELETE_EXIT_CODE`] and nothing written → delete the path.
//! - anything else (other exit codes, exit 0 without output, a signal, running longer
//!   than the timeout) → the path stays unresolved.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::conflict::{Conflict, ConflictKind};
use crate::error::GitError;

/// Exit status with which a resolver that wrote nothing asks for the path to be
/// deleted. A dedicated code (rather than "exit 0, no output") so that a resolver that
/// merely forgot to write its output cannot delete a file by accident.
pub const RESOLVER_DELETE_EXIT_CODE: i32 = 100;

/// How long a resolver may run unless its `ResolverCommand` says otherwise: long
/// enough for an LLM call, short enough that a hung resolver does not hold the merge
/// lock forever.
pub const DEFAULT_RESOLVER_TIMEOUT: Duration = Duration::from_secs(600);

/// How often a running resolver is polled for exit.
const RESOLVER_POLL_INTERVAL: Duration = Duration::from_millis(20);

/// How many bytes of the resolver's stderr are quoted when it fails.
const STDERR_TAIL_BYTES: usize = 400;

/// A conflict resolver: a shell command line plus how long it may run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolverCommand {
    pub command: String,
    pub timeout: Duration,
}

impl ResolverCommand {
    /// `command` with [`DEFAULT_RESOLVER_TIMEOUT`].
    pub fn new(command: impl Into<String>) -> Self {
        ResolverCommand {
            command: command.into(),
            timeout: DEFAULT_RESOLVER_TIMEOUT,
        }
    }
}

/// The merge a conflict belongs to, passed to the resolver in its environment.
pub(crate) struct ResolverContext<'a> {
    pub repo_dir: &'a Path,
    pub task_id: Option<&'a str>,
    pub branch: &'a str,
    pub target: &'a str,
}

/// What the resolver decided for one path.
#[derive(Debug)]
pub(crate) enum Resolution {
    /// The path's resolved content.
    Content(Vec<u8>),
    /// The path is to be deleted.
    Delete,
    /// Not resolved; the reason is reported with the conflicted path.
    Unresolved(String),
}

/// Runs `resolver` for `conflict` in the fresh directory `workdir`.
pub(crate) fn run_resolver(
    resolver: &ResolverCommand,
    ctx: &ResolverContext<'_>,
    conflict: &Conflict,
    kind: ConflictKind,
    sides: [Option<&[u8]>; 3],
    workdir: &Path,
) -> Result<Resolution, GitError> {
    let [base, ours, theirs] = sides;
    let base = write_side(workdir, "base", base)?;
    let ours = write_side(workdir, "ours", ours)?;
    let theirs = write_side(workdir, "theirs", theirs)?;
    let output = workdir.join("output");
    let stdout_path = workdir.join("resolver.stdout");
    let stderr_path = workdir.join("resolver.stderr");
    let stdout = File::create(&stdout_path).map_err(|e| GitError::io("create", &stdout_path, e))?;
    let stderr = File::create(&stderr_path).map_err(|e| GitError::io("create", &stderr_path, e))?;

    let mut child = Command::new("sh")
        .arg("-c")
        .arg(&resolver.command)
        .current_dir(workdir)
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        .env("PERCY_CONFLICT_PATH", conflict.result_path())
        .env("PERCY_CONFLICT_KIND", kind.as_str())
        .env("PERCY_BASE", base)
        .env("PERCY_OURS", ours)
        .env("PERCY_THEIRS", theirs)
        .env("PERCY_OUTPUT", &output)
        .env("PERCY_TASK_ID", ctx.task_id.unwrap_or_default())
        .env("PERCY_BRANCH", ctx.branch)
        .env("PERCY_TARGET", ctx.target)
        .env("PERCY_REPO", ctx.repo_dir)
        .spawn()
        .map_err(|e| GitError::io("spawn resolver in", workdir, e))?;

    let Some(status) = wait_with_timeout(&mut child, resolver.timeout)? else {
        return Ok(Resolution::Unresolved(format!(
            "resolver did not finish within {:?} and was killed",
            resolver.timeout
        )));
    };
    judge(status, &output, &stderr_path)
}

/// Writes one side to `workdir/name`; the empty path when the side does not exist,
/// which is what the resolver then finds in its variable.
fn write_side(workdir: &Path, name: &str, data: Option<&[u8]>) -> Result<PathBuf, GitError> {
    let Some(data) = data else {
        return Ok(PathBuf::new());
    };
    let path = workdir.join(name);
    fs::write(&path, data).map_err(|e| GitError::io("write", &path, e))?;
    Ok(path)
}

/// Waits for `child` to exit; `None` (after killing it) if it runs past `timeout`.
fn wait_with_timeout(
    child: &mut std::process::Child,
    timeout: Duration,
) -> Result<Option<ExitStatus>, GitError> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child
            .try_wait()
            .map_err(|e| GitError::io("wait for resolver", PathBuf::new(), e))?
        {
            return Ok(Some(status));
        }
        if Instant::now() >= deadline {
            // The resolver may already have exited between try_wait and kill; the
            // wait below reaps it either way.
            let _ = child.kill();
            child
                .wait()
                .map_err(|e| GitError::io("wait for resolver", PathBuf::new(), e))?;
            return Ok(None);
        }
        thread::sleep(RESOLVER_POLL_INTERVAL);
    }
}

fn judge(status: ExitStatus, output: &Path, stderr_path: &Path) -> Result<Resolution, GitError> {
    let written = match fs::read(output) {
        Ok(data) => Some(data),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(GitError::io("read resolver output", output, e)),
    };
    match (status.code(), written) {
        (Some(0), Some(data)) => {
            if !is_binary(&data) && contains_conflict_markers(&data) {
                Ok(Resolution::Unresolved(
                    "resolver output still contains conflict markers".into(),
                ))
            } else {
                Ok(Resolution::Content(data))
            }
        }
        (Some(0), None) => Ok(Resolution::Unresolved(
            "resolver exited 0 but wrote nothing to PERCY_OUTPUT".into(),
        )),
        (Some(RESOLVER_DELETE_EXIT_CODE), None) => Ok(Resolution::Delete),
        (Some(RESOLVER_DELETE_EXIT_CODE), Some(_)) => Ok(Resolution::Unresolved(format!(
            "resolver asked for deletion (exit {RESOLVER_DELETE_EXIT_CODE}) but also wrote PERCY_OUTPUT"
        ))),
        _ => Ok(Resolution::Unresolved(format!(
            "resolver failed ({status}){}",
            stderr_tail(stderr_path)
        ))),
    }
}

/// `": <last bytes of stderr>"`, or nothing when stderr is empty or unreadable (the
/// exit status is reported regardless, so a missing tail loses no verdict).
fn stderr_tail(path: &Path) -> String {
    let data = fs::read(path).unwrap_or_default();
    let start = data.len().saturating_sub(STDERR_TAIL_BYTES);
    let tail = String::from_utf8_lossy(&data[start..]);
    let tail = tail.trim();
    if tail.is_empty() {
        String::new()
    } else {
        format!(": {tail}")
    }
}

/// Git's own heuristic (as in `buffer_is_binary`): a NUL byte within the first
/// 8000 bytes makes content binary.
pub(crate) fn is_binary(data: &[u8]) -> bool {
    const BINARY_SNIFF_BYTES: usize = 8000;
    data.iter().take(BINARY_SNIFF_BYTES).any(|&b| b == 0)
}

/// Whether `data` has a line that git writes as a conflict marker: starting with
/// `<<<<<<<` or `>>>>>>>`, or exactly `=======` (CRLF line endings included).
pub fn contains_conflict_markers(data: &[u8]) -> bool {
    data.split(|&b| b == b'\n').any(|line| {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        line.starts_with(b"<<<<<<<") || line.starts_with(b">>>>>>>") || line == b"======="
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_are_found_only_at_line_start() {
        assert!(contains_conflict_markers(b"a\n<<<<<<< ours\nb\n"));
        assert!(contains_conflict_markers(b"a\n=======\r\nb"));
        assert!(contains_conflict_markers(b">>>>>>> theirs"));
        assert!(!contains_conflict_markers(b"x <<<<<<< y\n"));
        assert!(!contains_conflict_markers(b"========\n"));
        assert!(!contains_conflict_markers(b"  =======\n"));
        assert!(!contains_conflict_markers(b"plain text\n"));
    }

    #[test]
    fn nul_byte_makes_content_binary() {
        assert!(is_binary(b"PNG\0\x01"));
        assert!(!is_binary(b"just text\n"));
    }
}
