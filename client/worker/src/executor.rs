//! Running a task's command: `sh -c <exec>` in its own process group, with the task in its
//! environment and on stdin, bounded output tails, a timeout, and a kill switch.
//!
//! The command is a process group leader so that the whole tree it starts (a shell pipeline,
//! an LLM CLI and its helpers) can be killed at once: on timeout, on the kill switch, and
//! after it exits, so nothing of a task outlives it and keeps writing in its name. The group
//! is also killed if the future is dropped half-way (the worker itself is going away).
//! What none of these paths can cover — the worker killed with SIGKILL — is covered by the
//! supervisor that leads the group (`supervisor`) and by a crash record of the running group
//! (`running`) that a restarted worker reaps.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;
use tokio::task::JoinHandle;

use crate::running::RunningRecord;
use crate::supervisor::supervise;
use crate::tail::{Tail, STDERR_TAIL_BYTES};

/// The shell commands run through.
const SHELL: &str = "sh";
/// How long to wait for the output pipes to close after the command is gone: a killed
/// group closes them at once; this only bounds a pathological case (a process that escaped
/// the group and keeps the pipe open).
const OUTPUT_DRAIN_TIMEOUT: Duration = Duration::from_secs(2);
/// Read buffer of the output pipes.
const READ_CHUNK: usize = 8 * 1024;

/// One command to run.
#[derive(Debug, Clone)]
pub struct Execution {
    /// Handed to `sh -c`.
    pub command: String,
    pub env: Vec<(String, OsString)>,
    pub stdin: Vec<u8>,
    pub workdir: Option<PathBuf>,
    /// `None` = no limit.
    pub timeout: Option<Duration>,
    /// Directory of the crash records (`running`); `None` = not recorded.
    pub record_in: Option<PathBuf>,
    /// The task the command runs for, in the crash record.
    pub task_id: String,
    /// Bytes of stdout kept ([`STDOUT_TAIL_BYTES`] for tasks).
    pub stdout_tail_bytes: usize,
    /// When the kill switch fires: `None` SIGKILLs the group at once; `Some(grace)` first
    /// sends SIGTERM to the command's processes and SIGKILLs the group only if it is still
    /// there after `grace` (a definition loop that is stopped gets to end its turn cleanly).
    pub stop_grace: Option<Duration>,
    /// Where the output goes as it comes (`exec`: relayed live), as (fd, bytes) with fd 1
    /// for stdout and 2 for stderr, besides the tails. The readers wait while it is full, so
    /// a slow consumer slows the command down (back-pressure) instead of buffering.
    pub live: Option<tokio::sync::mpsc::Sender<(u32, Vec<u8>)>>,
}

/// How the command ended, with the tails of its output.
#[derive(Debug, Clone)]
pub struct ExecOutcome {
    pub end: ExecEnd,
    pub stdout: Tail,
    pub stderr: Tail,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExecEnd {
    /// Exited with this code.
    Exited(i32),
    /// Ended by a signal nobody in the worker sent.
    Signalled(i32),
    /// Outlived its timeout and was killed.
    TimedOut(Duration),
    /// Killed through the kill switch.
    Killed,
}

/// Why the command could not be run at all.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("cannot start `{SHELL} -c`: {0}")]
    Spawn(std::io::Error),
    #[error("waiting for the command: {0}")]
    Wait(std::io::Error),
}

/// Runs `execution` until it exits, times out, or `kill` resolves.
pub async fn execute(
    execution: Execution,
    kill: impl std::future::Future<Output = ()>,
) -> Result<ExecOutcome, ExecError> {
    let mut command = Command::new(SHELL);
    command
        .arg("-c")
        .arg(&execution.command)
        .envs(execution.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    if let Some(dir) = &execution.workdir {
        command.current_dir(dir);
    }
    supervise(&mut command);
    let mut child = command.spawn().map_err(ExecError::Spawn)?;
    // The group id is the leader's pid; `id()` is only `None` after the child was reaped.
    let pgid = child.id().and_then(|pid| i32::try_from(pid).ok());
    let record = match (&execution.record_in, pgid) {
        (Some(dir), Some(pgid)) => RunningRecord::write(dir, pgid, &execution.task_id),
        _ => None,
    };
    let group = ProcessGroup {
        pgid,
        _record: record,
    };

    // stdin is written concurrently: a command that never reads it must not block us, and
    // one that exits early makes the write fail with EPIPE, which is fine.
    let stdin_writer = child.stdin.take().map(|mut stdin| {
        let input = execution.stdin;
        tokio::spawn(async move {
            let _ = stdin.write_all(&input).await;
            let _ = stdin.shutdown().await;
        })
    });
    let stdout = child
        .stdout
        .take()
        .map(|pipe| spawn_reader(pipe, execution.stdout_tail_bytes, 1, execution.live.clone()));
    let stderr = child
        .stderr
        .take()
        .map(|pipe| spawn_reader(pipe, STDERR_TAIL_BYTES, 2, execution.live.clone()));

    let timeout = async {
        match execution.timeout {
            Some(limit) => tokio::time::sleep(limit).await,
            None => std::future::pending().await,
        }
    };
    let end = tokio::select! {
        status = child.wait() => exit_end(status.map_err(ExecError::Wait)?),
        () = timeout => {
            group.kill();
            child.wait().await.map_err(ExecError::Wait)?;
            // `timeout` is only reachable when set.
            ExecEnd::TimedOut(execution.timeout.unwrap_or_default())
        }
        () = kill => {
            if let Some(grace) = execution.stop_grace {
                group.terminate();
                if let Ok(status) = tokio::time::timeout(grace, child.wait()).await {
                    status.map_err(ExecError::Wait)?;
                }
            }
            group.kill();
            child.wait().await.map_err(ExecError::Wait)?;
            ExecEnd::Killed
        }
    };
    // Whatever the command left running in its group goes with it.
    group.kill();
    if let Some(writer) = stdin_writer {
        writer.abort();
    }
    Ok(ExecOutcome {
        end,
        stdout: collect(stdout, execution.stdout_tail_bytes).await,
        stderr: collect(stderr, STDERR_TAIL_BYTES).await,
    })
}

fn exit_end(status: ExitStatus) -> ExecEnd {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => ExecEnd::Exited(code),
        (None, Some(signal)) => ExecEnd::Signalled(signal),
        // Neither code nor signal cannot happen on Unix; call it a failure.
        (None, None) => ExecEnd::Exited(-1),
    }
}

fn spawn_reader(
    mut pipe: impl AsyncRead + Unpin + Send + 'static,
    capacity: usize,
    fd: u32,
    mut live: Option<tokio::sync::mpsc::Sender<(u32, Vec<u8>)>>,
) -> JoinHandle<Tail> {
    tokio::spawn(async move {
        let mut tail = Tail::new(capacity);
        let mut chunk = vec![0u8; READ_CHUNK];
        loop {
            match pipe.read(&mut chunk).await {
                Ok(0) | Err(_) => return tail,
                Ok(n) => {
                    tail.push(&chunk[..n]);
                    if let Some(sender) = &live {
                        // A consumer that went away stops only the live copy.
                        if sender.send((fd, chunk[..n].to_vec())).await.is_err() {
                            live = None;
                        }
                    }
                }
            }
        }
    })
}

async fn collect(reader: Option<JoinHandle<Tail>>, capacity: usize) -> Tail {
    let Some(mut reader) = reader else {
        return Tail::new(capacity);
    };
    match tokio::time::timeout(OUTPUT_DRAIN_TIMEOUT, &mut reader).await {
        Ok(Ok(tail)) => tail,
        Ok(Err(_panicked)) => Tail::new(capacity),
        Err(_elapsed) => {
            tracing::warn!(
                "a process outside the task's group keeps its output open; output dropped"
            );
            reader.abort();
            Tail::new(capacity)
        }
    }
}

/// The command's process group; killed on drop. Its crash record is a field, so it is
/// removed only after the group was killed.
struct ProcessGroup {
    pgid: Option<i32>,
    _record: Option<RunningRecord>,
}

impl ProcessGroup {
    /// SIGKILLs every process in the group. ESRCH (nobody left) is the normal case after the
    /// command exited.
    fn kill(&self) {
        if let Some(pgid) = self.pgid {
            // SAFETY: killpg(2) on a group we created; it touches no memory of ours.
            unsafe {
                libc::killpg(pgid, libc::SIGKILL);
            }
        }
    }
}

impl ProcessGroup {
    /// SIGTERM to the command's processes. Not to the group leader on Linux: that is the
    /// supervisor, which takes SIGTERM as "the worker died" and SIGKILLs everything at once.
    fn terminate(&self) {
        let Some(pgid) = self.pgid else {
            return;
        };
        #[cfg(target_os = "linux")]
        for pid in group_members(pgid) {
            if pid != pgid {
                // SAFETY: kill(2) with a pid read from /proc; it touches no memory of ours.
                unsafe {
                    libc::kill(pid, libc::SIGTERM);
                }
            }
        }
        #[cfg(not(target_os = "linux"))]
        // SAFETY: killpg(2) on a group we created.
        unsafe {
            libc::killpg(pgid, libc::SIGTERM);
        }
    }
}

/// The pids whose process group is `pgid`, from `/proc/<pid>/stat` (field 5).
#[cfg(target_os = "linux")]
fn group_members(pgid: i32) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut members = Vec::new();
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // The command name (field 2) is in parentheses and may contain spaces.
        let Some(after_name) = stat.rfind(')').map(|at| &stat[at + 1..]) else {
            continue;
        };
        let group = after_name
            .split_whitespace()
            .nth(2)
            .and_then(|f| f.parse::<i32>().ok());
        if group == Some(pgid) {
            members.push(pid);
        }
    }
    members
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        self.kill();
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    fn run(command: &str) -> Execution {
        Execution {
            command: command.to_owned(),
            env: vec![("PERCY_TASK_ID".into(), "t1".into())],
            stdin: b"the description\n".to_vec(),
            workdir: None,
            timeout: None,
            record_in: None,
            task_id: "t1".into(),
            stdout_tail_bytes: crate::tail::STDOUT_TAIL_BYTES,
            stop_grace: None,
            live: None,
        }
    }

    #[tokio::test]
    async fn exit_code_env_and_stdin_reach_the_command() {
        let outcome = execute(
            run("echo \"task $PERCY_TASK_ID\"; cat; echo oops >&2; exit 3"),
            std::future::pending(),
        )
        .await
        .unwrap();
        assert_eq!(outcome.end, ExecEnd::Exited(3));
        assert_eq!(outcome.stdout.text(), "task t1\nthe description\n");
        assert_eq!(outcome.stderr.text(), "oops\n");
    }

    #[tokio::test]
    async fn a_command_that_outlives_its_timeout_is_killed_with_its_children() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("survivor");
        let mut execution = run(&format!("(sleep 2; touch {}) & sleep 30", marker.display()));
        execution.timeout = Some(Duration::from_millis(300));
        let started = Instant::now();
        let outcome = execute(execution, std::future::pending()).await.unwrap();
        assert_eq!(outcome.end, ExecEnd::TimedOut(Duration::from_millis(300)));
        assert!(started.elapsed() < Duration::from_secs(10));
        // The background child was in the group and died with it.
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert!(
            !marker.exists(),
            "a child of the timed-out command survived"
        );
    }

    #[tokio::test]
    async fn the_kill_switch_ends_the_command() {
        let kill = tokio::time::sleep(Duration::from_millis(200));
        let outcome = execute(run("echo started; sleep 30"), kill).await.unwrap();
        assert_eq!(outcome.end, ExecEnd::Killed);
        assert_eq!(outcome.stdout.text(), "started\n");
    }

    #[tokio::test]
    async fn a_command_killed_by_a_signal_is_reported_as_signalled() {
        let outcome = execute(run("kill -TERM $$"), std::future::pending())
            .await
            .unwrap();
        assert_eq!(outcome.end, ExecEnd::Signalled(libc::SIGTERM));
    }

    /// Each command's supervisor is forked while other commands' pipes are open in the
    /// worker; it must not keep them open, or their output would never end.
    #[tokio::test]
    async fn a_later_command_does_not_hold_an_earlier_one_s_output_open() {
        let first = tokio::spawn(execute(
            run("sleep 0.5; echo first"),
            std::future::pending(),
        ));
        tokio::time::sleep(Duration::from_millis(100)).await;
        let second = tokio::spawn(execute(run("sleep 30"), std::future::pending()));
        let started = Instant::now();
        let outcome = first.await.unwrap().unwrap();
        assert_eq!(outcome.end, ExecEnd::Exited(0));
        assert_eq!(outcome.stdout.text(), "first\n");
        assert!(
            started.elapsed() < OUTPUT_DRAIN_TIMEOUT,
            "{:?}",
            started.elapsed()
        );
        second.abort();
    }

    #[tokio::test]
    async fn a_command_ignoring_stdin_with_a_huge_input_does_not_block() {
        let mut execution = run("echo done");
        execution.stdin = vec![b'x'; 4 * 1024 * 1024];
        let outcome = execute(execution, std::future::pending()).await.unwrap();
        assert_eq!(outcome.end, ExecEnd::Exited(0));
        assert_eq!(outcome.stdout.text(), "done\n");
    }

    #[tokio::test]
    async fn the_workdir_is_honoured() {
        let dir = tempfile::tempdir().unwrap();
        let mut execution = run("pwd");
        execution.workdir = Some(dir.path().to_owned());
        let outcome = execute(execution, std::future::pending()).await.unwrap();
        let printed = PathBuf::from(outcome.stdout.text().trim());
        assert_eq!(
            printed.canonicalize().unwrap(),
            dir.path().canonicalize().unwrap()
        );
    }

    /// With a stop grace the command gets SIGTERM first and may end its turn (its trap runs);
    /// without one it is SIGKILLed at once.
    #[tokio::test]
    async fn a_stop_grace_lets_the_command_end_on_sigterm() {
        let script = "trap 'echo bye; exit 0' TERM; echo ready; while :; do sleep 0.1; done";
        for (grace, expect_bye) in [(Some(Duration::from_secs(10)), true), (None, false)] {
            let mut execution = run(script);
            execution.stop_grace = grace;
            let started = Instant::now();
            let kill = tokio::time::sleep(Duration::from_millis(500));
            let outcome = execute(execution, kill).await.unwrap();
            assert_eq!(outcome.end, ExecEnd::Killed);
            assert_eq!(
                outcome.stdout.text().contains("bye"),
                expect_bye,
                "grace {grace:?}: {:?}",
                outcome.stdout.text()
            );
            assert!(
                started.elapsed() < Duration::from_secs(9),
                "SIGKILL waited for nothing"
            );
        }
    }
}
