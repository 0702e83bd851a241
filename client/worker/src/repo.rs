//! The worker's git mode (`--repo DIR`): every task runs in its own worktree on
//! `percy/<task-id>`, branched from the target; after success everything is committed
//! (authored by the agent) and merged into the target under the cluster lock
//! `git/<repo-name>/refs/heads/<target>`, whose fencing token guards the merge
//! (see [`percy_git::fence`]). A conflict the resolver cannot settle fails the task with
//! the conflicted paths; the target is then untouched.
//!
//! libgit2 is blocking, so every git step runs on the blocking pool.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::runtime::Handle;

use crate::config::GitConfig;
use crate::error::WorkerError;
use percy_client::proto::Task;
use percy_client::{Client, Consistency, LockRequest};
use percy_git::{
    merge_branch, prune_stale, CommitOutcome, ConflictedPath, FenceError, GitError, MergeFence,
    MergeOutcome, MergeRequest, ResolverCommand, TaskWorktree,
};

/// Lease of the merge lock: a worker that dies mid-merge must not block the target forever
/// (its agent's expiry releases it too; this bounds a live but stuck merge).
pub const MERGE_LOCK_TTL: Duration = Duration::from_secs(300);
/// How long a merge waits in line for the merge lock.
pub const MERGE_LOCK_WAIT: Duration = Duration::from_secs(600);
/// Domain of the email recorded for commits authored by agents.
const AGENT_EMAIL_DOMAIN: &str = "percy.local";

/// The repository a worker merges into.
#[derive(Debug, Clone)]
pub struct Repo {
    dir: PathBuf,
    target: String,
    lock_path: String,
    resolver: Option<ResolverCommand>,
    /// `--push REMOTE` and `--on-complete CMD` (see `publish`).
    pub push: Option<String>,
    pub on_complete: Option<String>,
    /// One merge at a time per worker: the cluster lock belongs to the agent, not to the
    /// task, so two of our merges would share one grant and the first release would pull
    /// the lock from under the second.
    merging: Arc<tokio::sync::Mutex<()>>,
}

/// Why a task's work could not be merged; the text fails the task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MergeFailure(pub String);

impl Repo {
    /// Checks the repository and its target branch, and removes worktrees left behind by
    /// workers that died.
    pub async fn open(config: &GitConfig) -> Result<Repo, WorkerError> {
        let dir = config.repo.clone();
        let target = config.target.clone();
        let git_error = |source| WorkerError::Git {
            repo: config.repo.clone(),
            source,
        };
        let checked = {
            let (dir, target) = (dir.clone(), target.clone());
            blocking(move || -> Result<Vec<String>, GitError> {
                let repo = git2::Repository::open(&dir)?;
                repo.find_branch(&target, git2::BranchType::Local)
                    .map_err(|_| GitError::BranchNotFound(target.clone()))?;
                prune_stale(&dir)
            })
            .await
        };
        let pruned = checked.map_err(git_error)?;
        if !pruned.is_empty() {
            tracing::info!(?pruned, "removed stale task worktrees");
        }
        Ok(Repo {
            lock_path: merge_lock_path(&dir, &target),
            dir,
            target,
            resolver: config.resolver.clone().map(ResolverCommand::new),
            push: config.push.clone(),
            on_complete: config.on_complete.clone(),
            merging: Arc::default(),
        })
    }

    /// The repository's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A fresh worktree for `task_id`, branched from the target's tip.
    pub async fn worktree(&self, task_id: &str) -> Result<TaskWorktree, GitError> {
        let (dir, target, id) = (self.dir.clone(), self.target.clone(), task_id.to_owned());
        blocking(move || TaskWorktree::create(&dir, &id, &target)).await
    }

    /// Removes a worktree whose work is not merged (the task failed); the branch stays for
    /// inspection and the next attempt starts over from the target.
    pub async fn discard(&self, worktree: TaskWorktree) {
        let task_id = worktree.task_id().to_owned();
        if let Err(err) = blocking(move || worktree.remove()).await {
            tracing::warn!(task_id, error = %err, "could not remove the task worktree");
        }
    }

    /// Commits the worktree, merges its branch into the target under the cluster lock, and
    /// returns the branch name for the task's result.
    pub async fn merge(
        &self,
        client: &Client,
        agent_id: u64,
        agent_name: &str,
        task: &Task,
        worktree: TaskWorktree,
    ) -> Result<String, MergeFailure> {
        let branch = worktree.branch().to_owned();
        let committed = {
            let (name, email) = (agent_name.to_owned(), agent_email(agent_name));
            let message = commit_message(task);
            blocking(move || {
                let outcome = worktree.commit_all(&name, &email, &message);
                let removed = worktree.remove();
                outcome.and_then(|outcome| removed.map(|()| outcome))
            })
            .await
        };
        match committed {
            Ok(CommitOutcome::Committed(id)) => {
                tracing::info!(task_id = %task.id, %branch, commit = %id, "committed the task's work");
            }
            Ok(CommitOutcome::NothingToCommit) => {
                tracing::info!(task_id = %task.id, %branch, "the task changed nothing");
            }
            Err(err) => return Err(MergeFailure(format!("committing {branch}: {err}"))),
        }

        let _one_merge_at_a_time = self.merging.lock().await;
        let request = LockRequest {
            task_id: Some(task.id.clone()),
            ttl: Some(MERGE_LOCK_TTL),
            wait: Some(MERGE_LOCK_WAIT),
            ..LockRequest::exclusive(agent_id, vec![self.lock_path.clone()])
        };
        let grant = client
            .acquire_locks(&request)
            .await
            .map_err(|e| MergeFailure(format!("taking the merge lock {}: {e}", self.lock_path)))?;
        let token = grant
            .grants
            .iter()
            .find(|g| g.path == self.lock_path)
            .map_or(0, |g| g.fencing_token);
        if token == 0 {
            return Err(MergeFailure(format!(
                "the merge lock {} was granted without a fencing token",
                self.lock_path
            )));
        }
        let fence = ClusterFence {
            runtime: Handle::current(),
            client: client.clone(),
            agent_id,
            path: self.lock_path.clone(),
            token,
        };
        let merged = {
            let repo = self.clone();
            let (branch, task_id) = (branch.clone(), task.id.clone());
            let fence = Arc::new(fence);
            blocking(move || {
                merge_branch(&MergeRequest {
                    repo_dir: &repo.dir,
                    branch: &branch,
                    into: &repo.target,
                    resolver: repo.resolver.as_ref(),
                    fence: fence.as_ref(),
                    allow_fast_forward: false,
                    task_id: Some(&task_id),
                })
            })
            .await
        };
        if let Err(err) = client
            .release_locks(agent_id, std::slice::from_ref(&self.lock_path))
            .await
        {
            // The lease (and the agent's expiry) releases it anyway.
            tracing::warn!(lock = %self.lock_path, error = %err, "could not release the merge lock");
        }
        match merged {
            Ok(MergeOutcome::Merged { commit, resolved }) => {
                tracing::info!(task_id = %task.id, %branch, into = %self.target, %commit, resolved = resolved.len(), "merged");
                Ok(branch)
            }
            Ok(MergeOutcome::FastForwarded { .. } | MergeOutcome::UpToDate { .. }) => Ok(branch),
            Ok(MergeOutcome::Conflicted { paths }) => Err(MergeFailure(format!(
                "merging {branch} into {}: conflicts in {}",
                self.target,
                conflict_list(&paths)
            ))),
            Err(err) => Err(MergeFailure(format!(
                "merging {branch} into {}: {err}",
                self.target
            ))),
        }
    }
}

/// `git/<repo-name>/refs/heads/<target>`, the repository named after its directory.
pub fn merge_lock_path(repo: &Path, target: &str) -> String {
    let absolute = repo.canonicalize().unwrap_or_else(|_| repo.to_owned());
    let name = absolute
        .file_name()
        .map(|n| n.to_string_lossy().trim_end_matches(".git").to_owned())
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "repo".to_owned());
    format!("git/{name}/refs/heads/{target}")
}

fn agent_email(agent_name: &str) -> String {
    let local: String = agent_name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '-'
            }
        })
        .collect();
    format!("{local}@{AGENT_EMAIL_DOMAIN}")
}

fn commit_message(task: &Task) -> String {
    if task.description.trim().is_empty() {
        task.title.clone()
    } else {
        format!("{}\n\n{}", task.title, task.description.trim())
    }
}

fn conflict_list(paths: &[ConflictedPath]) -> String {
    paths
        .iter()
        .map(|p| format!("{} ({}: {})", p.path, p.kind, p.detail))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Runs libgit2 work on the blocking pool. A panic there is a bug and propagates; the only
/// other way the work does not finish is the runtime shutting down under it.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, GitError> + Send + 'static,
) -> Result<T, GitError> {
    match tokio::task::spawn_blocking(work).await {
        Ok(result) => result,
        Err(join) => match join.try_into_panic() {
            Ok(panic) => std::panic::resume_unwind(panic),
            Err(_cancelled) => Err(GitError::Io {
                action: "finish git work before the runtime shut down",
                path: PathBuf::new(),
                source: std::io::Error::other("cancelled"),
            }),
        },
    }
}

/// The merge lock as a [`MergeFence`]: held while a linearizable read still shows our grant.
struct ClusterFence {
    runtime: Handle,
    client: Client,
    agent_id: u64,
    path: String,
    token: u64,
}

impl MergeFence for ClusterFence {
    fn token(&self) -> u64 {
        self.token
    }

    fn still_held(&self) -> Result<bool, FenceError> {
        // Called from the blocking pool, never from a runtime thread.
        let locks = self.runtime.block_on(
            self.client
                .list_locks(&self.path, Consistency::Linearizable),
        )?;
        let held = locks.locks.iter().any(|lock| {
            lock.path == self.path
                && lock
                    .holders
                    .iter()
                    .any(|h| h.agent_id == self.agent_id && h.fencing_token == self.token)
        });
        if !held {
            tracing::warn!(lock = %self.path, token = self.token, seen = ?locks.locks, "the merge lock is no longer ours");
        }
        Ok(held)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lock_is_named_after_the_repository_and_target() {
        assert_eq!(
            merge_lock_path(Path::new("/nonexistent/work/app.git"), "main"),
            "git/app/refs/heads/main"
        );
        assert_eq!(
            merge_lock_path(Path::new("/nonexistent/app"), "release"),
            "git/app/refs/heads/release"
        );
    }

    #[test]
    fn agent_emails_are_plain() {
        assert_eq!(agent_email("builder 1/α"), "builder-1--@percy.local");
    }
}
