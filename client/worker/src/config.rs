//! What a worker is and how it behaves: [`WorkerConfig`], its defaults and its checks.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use crate::error::WorkerError;
use crate::handler::TaskHandler;

/// Tasks run at once unless configured otherwise.
pub const DEFAULT_MAX_CONCURRENT: u32 = 1;
/// Upper bound of `max_concurrent` (the state machine's own limit).
pub const MAX_CONCURRENT: u32 = 1_024;
/// How long running commands get to finish after a shutdown request before they are killed.
pub const DEFAULT_TASK_GRACE: Duration = Duration::from_secs(30);
/// Target branch of merges when `--repo` is given without `--target`.
pub const DEFAULT_TARGET_BRANCH: &str = "main";

/// Merging each task's work into a git repository (`percyctl worker --repo DIR`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GitConfig {
    /// The repository (its working directory or bare directory).
    pub repo: PathBuf,
    /// The branch tasks start from and are merged into.
    pub target: String,
    /// Command that resolves merge conflicts (see [`percy_git::resolver`]); `None` = a
    /// conflict fails the task.
    pub resolver: Option<String>,
    /// Remote the task's branch is pushed to after a successful run (`--push`).
    pub push: Option<String>,
    /// Command run after the push, with the task's variables and `PERCY_BRANCH`
    /// (`--on-complete`); its failure fails the task.
    pub on_complete: Option<String>,
}

/// Everything a [`crate::Worker`] needs besides the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerConfig {
    /// The agent name. Two live workers must not share one: the cluster would treat them as
    /// one agent.
    pub name: String,
    /// Capabilities tasks may require (`requires`: all of them).
    pub capabilities: Vec<String>,
    /// Labels in addition to the detected `os`, `arch` and `host` (these win on conflict).
    pub labels: BTreeMap<String, String>,
    /// Tasks run at once.
    pub max_concurrent: u32,
    /// The command run for each task, through `sh -c`; empty = this worker runs execs only
    /// (`accept_exec` must be set then).
    pub exec: String,
    /// Accept execs (`percyctl exec`) besides tasks: advertise the `percy.exec` capability
    /// and the `percy.agent=<name>` label. Off by default, like Nomad's `raw_exec`.
    pub accept_exec: bool,
    /// How long running commands may finish after a shutdown request.
    pub task_grace: Duration,
    /// Timeout of tasks that do not set one; `None` = no limit.
    pub default_timeout: Option<Duration>,
    /// The worker's state dir: the inbox file (`PERCY_INBOX`) and the crash records of
    /// running commands (`running-<name>/`, reaped by the next run of that name). Removed at a
    /// clean exit unless something else was put in it.
    pub inbox_dir: PathBuf,
    /// Agent TTL asked for at registration; `None` = the server's default.
    pub ttl: Option<Duration>,
    /// Working directory of the commands; `None` = the worker's own. Ignored for tasks that
    /// run in a git worktree.
    pub workdir: Option<PathBuf>,
    /// Run each task in its own worktree and merge the result; `None` = no git.
    pub git: Option<GitConfig>,
    /// Also run the definitions this worker matches, in loops (`--definitions`). With it,
    /// `exec` may be empty: the worker then runs definitions only and claims no tasks.
    pub definitions: bool,
    /// Run tasks with this function in-process instead of `exec` (which must then be
    /// empty); see [`TaskHandler`].
    pub handler: Option<TaskHandler>,
}

impl WorkerConfig {
    /// A worker named `name` that runs `exec` for each task, with default settings and its
    /// inbox in the system temp dir.
    pub fn new(name: impl Into<String>, exec: impl Into<String>) -> Self {
        let name = name.into();
        Self {
            inbox_dir: std::env::temp_dir().join(format!("percy-worker-{name}")),
            name,
            capabilities: Vec::new(),
            labels: BTreeMap::new(),
            max_concurrent: DEFAULT_MAX_CONCURRENT,
            exec: exec.into(),
            accept_exec: false,
            task_grace: DEFAULT_TASK_GRACE,
            default_timeout: None,
            ttl: None,
            workdir: None,
            git: None,
            definitions: false,
            handler: None,
        }
    }

    /// Whether this worker runs tasks (with `exec` or a handler), not only execs or
    /// definitions.
    pub fn runs_tasks(&self) -> bool {
        !self.exec.trim().is_empty() || self.handler.is_some()
    }

    /// Refuses settings that cannot work, before anything is registered.
    pub fn validate(&self) -> Result<(), WorkerError> {
        let bad = |reason: String| Err(WorkerError::Config(reason));
        if self.name.trim().is_empty() {
            return bad("the worker needs a name".into());
        }
        if !self.runs_tasks() && !self.definitions && !self.accept_exec {
            return bad(
                "the worker needs a command to run (--exec), --definitions or --accept-exec".into(),
            );
        }
        if self.handler.is_some() && !self.exec.trim().is_empty() {
            return bad("a worker runs tasks with a command or with a handler, not both".into());
        }
        if !(1..=MAX_CONCURRENT).contains(&self.max_concurrent) {
            return bad(format!(
                "max_concurrent {} is outside 1..={MAX_CONCURRENT}",
                self.max_concurrent
            ));
        }
        if self.default_timeout.is_some_and(|t| t.is_zero()) {
            return bad("the default task timeout must be positive".into());
        }
        if let Some(cap) = self.capabilities.iter().find(|c| c.trim().is_empty()) {
            return bad(format!(
                "empty capability in {:?} ({cap:?})",
                self.capabilities
            ));
        }
        if let Some(git) = &self.git {
            if git.target.trim().is_empty() {
                return bad("the git target branch must not be empty".into());
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        let config = WorkerConfig::new("w1", "true");
        config.validate().unwrap();
        assert_eq!(config.max_concurrent, DEFAULT_MAX_CONCURRENT);
        assert!(config.inbox_dir.ends_with("percy-worker-w1"));
    }

    #[test]
    fn nonsense_is_refused_with_a_reason() {
        type Spoil = fn(&mut WorkerConfig);
        let cases: [(Spoil, &str); 6] = [
            (|c| c.name = " ".into(), "name"),
            (
                |c| c.handler = Some(TaskHandler::new(|_, _| Ok(String::new()))),
                "not both",
            ),
            (|c| c.exec = String::new(), "--exec"),
            (|c| c.max_concurrent = 0, "max_concurrent"),
            (|c| c.default_timeout = Some(Duration::ZERO), "timeout"),
            (
                |c| c.capabilities = vec!["rust".into(), String::new()],
                "capability",
            ),
        ];
        for (spoil, word) in cases {
            let mut config = WorkerConfig::new("w1", "true");
            spoil(&mut config);
            let err = config.validate().unwrap_err().to_string();
            assert!(err.contains(word), "{err}");
        }
    }
}
