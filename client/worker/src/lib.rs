//! The worker runtime: an agent that runs tasks by running a command.
//!
//! [`Worker::run`] registers an agent (name, capabilities, labels with `os`, `arch` and
//! `host` detected), heartbeats in the background, wakes on the watch when a task it can run
//! becomes ready (with a slow re-check as a safety net), claims with claim-next, marks the task
//! working, runs `sh -c <exec>` with the task in `PERCY_*` variables and on stdin, and
//! completes it (exit 0, stdout tail as the result) or fails it (stderr tail as the error),
//! up to `max_concurrent` at once. Messages for the agent are appended to the inbox file
//! (`PERCY_INBOX`). See `incarnation` for what happens on expiry and on shutdown, and `repo`
//! for the git mode.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use percy_worker::{terminate_signal, Worker, WorkerConfig};
//! let client = percy_client::Client::connect(&["127.0.0.1:7070".to_owned()]).await?;
//! let mut config = WorkerConfig::new("builder-1", "make -C \"$PERCY_TASK_ID\"");
//! config.capabilities = vec!["make".into()];
//! let summary = Worker::new(client, config).run(terminate_signal()?).await?;
//! println!("{} tasks completed", summary.completed);
//! # Ok(()) }
//! ```

mod attempt;
mod config;
mod error;
mod exec_attempt;
mod exec_claim;
mod exec_request;
mod executor;
mod feed;
mod handler;
mod heartbeat;
mod inbox;
mod incarnation;
mod labels;
mod leftovers;
mod loops;
mod machine_load;
mod publish;
mod repo;
mod running;
mod shutdown;
mod supervisor;
mod tail;

use std::sync::Arc;
use std::time::Duration;

use crate::attempt::AttemptEnv;
use crate::inbox::Inbox;
use crate::incarnation::{Incarnation, IncarnationEnd};
use crate::repo::Repo;
use crate::shutdown::Shutdown;
use percy_client::proto::RegisterAgentRequest;
use percy_client::Client;

pub use config::{
    GitConfig, WorkerConfig, DEFAULT_MAX_CONCURRENT, DEFAULT_TARGET_BRANCH, DEFAULT_TASK_GRACE,
    MAX_CONCURRENT,
};
pub use error::WorkerError;
pub use exec_attempt::{CANCEL_POLL, TIMED_OUT_EXIT_CODE};
pub const LOST_EXEC_PREFIX: &str = "lost";
pub use exec_request::{shell_quote, ExecRequest, ExecRequestError};
pub use feed::can_run;
pub use handler::TaskHandler;
pub use heartbeat::{heartbeat_interval, BEATS_PER_TTL, MIN_HEARTBEAT_INTERVAL};
pub use incarnation::CLAIM_RECHECK_INTERVAL;
pub use labels::{detected_labels, host_name, ARCH_LABEL, HOST_LABEL, OS_LABEL};
pub use loops::{llm_output, LOOP_SCAN_INTERVAL, STOP_GRACE};
pub use percy_client::proto::Task as ExecTask;
pub use repo::{merge_lock_path, MERGE_LOCK_TTL, MERGE_LOCK_WAIT};
pub use shutdown::terminate_signal;

/// The reserved capability of execs (`percy_proto::exec::EXEC_CAPABILITY`): workers with
/// `accept_exec` advertise it.
pub const EXEC_CAPABILITY: &str = "percy.exec";
/// The label an executor carries with its own name, so an exec can target it by name.
pub const EXEC_AGENT_LABEL: &str = "percy.agent";

/// Pause before registering again when the cluster cannot be reached.
const REGISTER_RETRY_PAUSE: Duration = Duration::from_secs(1);

/// What a worker did, returned when it stops.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WorkerSummary {
    /// Registrations (1 + how often the agent expired and registered again).
    pub registrations: u32,
    pub completed: u64,
    /// Attempts reported as failed.
    pub failed: u64,
    /// Attempts whose claim was gone when they reported (someone else owns the task now).
    pub lost: u64,
    /// Attempts killed without a report because the agent expired.
    pub abandoned: u64,
    /// Whether the last registration was deregistered at shutdown.
    pub deregistered: bool,
}

/// A worker; see the module documentation.
pub struct Worker {
    client: Client,
    config: Arc<WorkerConfig>,
}

impl Worker {
    pub fn new(client: Client, config: WorkerConfig) -> Worker {
        Worker {
            client,
            config: Arc::new(config),
        }
    }

    /// Runs until `shutdown` resolves, then stops as described in the module documentation.
    /// Errors are only what prevents the worker from working at all (bad configuration, a
    /// refused registration, an unusable inbox or repository).
    pub async fn run(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<WorkerSummary, WorkerError> {
        self.config.validate()?;
        // One worker per name and state dir: a second one would reap the first one's running
        // commands. Workers of other names may share the dir (`--inbox-dir`).
        let _lock = lock_state(&self.config.inbox_dir, &self.config.name)?;
        let records = running::records_dir(&self.config.inbox_dir, &self.config.name);
        // Before anything new runs: what a previous run killed with SIGKILL left behind.
        let reaped = running::reap_leftovers(&records);
        if !reaped.is_empty() {
            tracing::warn!(groups = ?reaped, "killed the commands a previous run left running");
        }
        let result = self.work(shutdown).await;
        // Every command has ended by now (killed at the latest when its attempt was dropped),
        // so the state dir holds nothing a later run needs.
        remove_state_dir(&self.config.inbox_dir, &records, &self.config.name).await;
        result
    }

    async fn work(
        &self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<WorkerSummary, WorkerError> {
        let mut shutdown = Shutdown::spawn(shutdown);
        let inbox = Inbox::create(&self.config.inbox_dir, &self.config.name)
            .await
            .map_err(|source| WorkerError::Inbox {
                path: self.config.inbox_dir.clone(),
                source,
            })?;
        let repo = match &self.config.git {
            Some(git) => Some(Repo::open(git).await?),
            None => None,
        };
        let mut summary = WorkerSummary::default();
        loop {
            let Some(registered) = self.register(&mut shutdown).await? else {
                return Ok(summary);
            };
            summary.registrations += 1;
            let agent = registered.agent.clone().unwrap_or_default();
            let interval = heartbeat_interval(registered.heartbeat_interval_ms, agent.ttl_ms);
            tracing::info!(
                agent_id = agent.id,
                name = %agent.name,
                capabilities = ?agent.capabilities,
                labels = ?agent.labels,
                ttl_ms = agent.ttl_ms,
                ?interval,
                "registered"
            );
            let env = Arc::new(AttemptEnv {
                client: self.client.clone(),
                agent_id: agent.id,
                agent_name: agent.name.clone(),
                config: self.config.clone(),
                inbox: inbox.path().to_owned(),
                repo: repo.clone(),
                claiming: std::sync::atomic::AtomicBool::new(true),
            });
            if !registered.created {
                // A live agent of our name: a previous run of this worker that died.
                leftovers::abandon_leftovers(&self.client, &agent).await;
            }
            let from_revision = registered.header.map_or(0, |h| h.revision + 1);
            let incarnation = Incarnation::new(env, agent, interval, from_revision, inbox.clone());
            match incarnation.run(&mut shutdown, &mut summary).await {
                IncarnationEnd::ShutDown { deregistered } => {
                    summary.deregistered = deregistered;
                    return Ok(summary);
                }
                IncarnationEnd::Expired(_) if shutdown.is_requested() => return Ok(summary),
                IncarnationEnd::Expired(reason) => {
                    tracing::warn!(%reason, "registering again");
                }
            }
        }
    }

    /// Registers, retrying while the cluster is unreachable; `None` if shutdown came first.
    async fn register(
        &self,
        shutdown: &mut Shutdown,
    ) -> Result<Option<percy_client::proto::RegisterAgentResponse>, WorkerError> {
        let mut labels = labels::merged_labels(&self.config.labels);
        let mut capabilities = self.config.capabilities.clone();
        if self.config.accept_exec {
            // `percyctl exec --on NAME` selects an executor by this label.
            labels.insert(EXEC_AGENT_LABEL.to_owned(), self.config.name.clone());
            if !capabilities.iter().any(|c| c == EXEC_CAPABILITY) {
                capabilities.push(EXEC_CAPABILITY.to_owned());
            }
        }
        let request = RegisterAgentRequest {
            header: None,
            name: self.config.name.clone(),
            node: labels.get(HOST_LABEL).cloned().unwrap_or_default(),
            capabilities,
            labels: labels.into_iter().collect(),
            max_concurrent: self.config.max_concurrent,
            ttl_ms: self
                .config
                .ttl
                .map_or(0, |t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX)),
        };
        loop {
            let attempt = tokio::select! {
                () = shutdown.requested() => return Ok(None),
                attempt = self.client.register_agent(request.clone()) => attempt,
            };
            match attempt {
                Ok(response) if response.agent.is_some() => return Ok(Some(response)),
                Ok(_) => tracing::warn!("registration answered without the agent; retrying"),
                Err(source) if source.is_refusal() => {
                    return Err(WorkerError::Register {
                        name: self.config.name.clone(),
                        source,
                    })
                }
                Err(err) => tracing::warn!(error = %err, "cannot register yet; retrying"),
            }
            tokio::select! {
                () = shutdown.requested() => return Ok(None),
                () = tokio::time::sleep(REGISTER_RETRY_PAUSE) => {}
            }
        }
    }
}

/// Removes this worker's inbox file, (empty) records dir and lock file, then the state dir
/// itself if nothing else is in it: a directory shared with other workers, or one the user
/// keeps other files in, stays.
async fn remove_state_dir(dir: &std::path::Path, records: &std::path::Path, name: &str) {
    let _ = tokio::fs::remove_dir(records).await;
    let _ = tokio::fs::remove_file(inbox::inbox_path(dir, name)).await;
    let _ = tokio::fs::remove_file(lock_path(dir, name)).await;
    let _ = tokio::fs::remove_dir(dir).await;
}

/// The lock file of worker `name` in its state dir.
fn lock_path(dir: &std::path::Path, name: &str) -> std::path::PathBuf {
    dir.join(format!("{}.lock", inbox::file_safe(name)))
}

/// Creates the state dir and takes worker `name`'s lock in it (an advisory lock, released
/// when the returned handle is dropped or the process dies). The file is removed at a clean
/// exit; a worker of the same name starting in that instant may lock the removed file, which
/// only weakens this guard against a misconfiguration (two live workers of one name).
fn lock_state(dir: &std::path::Path, name: &str) -> Result<std::fs::File, WorkerError> {
    let inbox_error = |source| WorkerError::Inbox {
        path: dir.to_owned(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(inbox_error)?;
    let handle = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(lock_path(dir, name))
        .map_err(inbox_error)?;
    match handle.try_lock() {
        Ok(()) => Ok(handle),
        Err(std::fs::TryLockError::WouldBlock) => Err(WorkerError::StateDirBusy(dir.to_owned())),
        Err(std::fs::TryLockError::Error(source)) => Err(inbox_error(source)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workers_of_different_names_share_a_state_dir_but_one_name_is_locked() {
        let dir = tempfile::tempdir().unwrap();
        let _a = lock_state(dir.path(), "a").unwrap();
        let _b = lock_state(dir.path(), "b").unwrap();
        assert!(matches!(
            lock_state(dir.path(), "a"),
            Err(WorkerError::StateDirBusy(_))
        ));
        assert_ne!(
            running::records_dir(dir.path(), "a"),
            running::records_dir(dir.path(), "b")
        );
    }
}
