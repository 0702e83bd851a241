//! One git worktree per task, on branch `percy/<task-id>`, and the cleanup of
//! worktrees a crashed worker left behind.
//!
//! Layout, inside the repository's git directory so the user's checkout never sees
//! it (`git status` stays clean):
//!
//! ```text
//! <git-dir>/percy-worktrees/<task-id>       the task's working tree
//! <git-dir>/percy-worktrees/<task-id>.lock  held (flock) while a process owns it
//! <git-dir>/worktrees/percy-<task-id>/      git's own administrative directory
//! ```
//!
//! Ownership is an OS file lock rather than a pid in a file: the kernel drops it when
//! the owning process dies, however it dies, and a recycled pid can't fake it. So
//! [`prune_stale`] removes exactly the worktrees whose owner is gone — including
//! those of a worker that crashed — and leaves those of other live workers sharing
//! the repository alone. Dropping a [`TaskWorktree`] without calling `remove` leaves
//! the worktree behind, just as a crash would, for `prune_stale` to clean up.
//!
//! The task branch is kept when the worktree is removed: it holds the committed work
//! until it is merged. Creating a task's worktree again (a retried task) resets the
//! branch to the base, so every attempt starts from the current base.
//!
//! Dependents see their dependencies' code because of ordering, not because of any
//! branch juggling here: the worker merges a task's branch into the target *before*
//! completing the task, a dependent only becomes ready once all its dependencies are
//! completed, and its worktree is created from the target branch when it starts —
//! which by then contains every dependency's merge.

use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use git2::{ErrorCode, Reference, Repository, WorktreeAddOptions, WorktreePruneOptions};

use crate::branch::{branch_commit, task_branch};
use crate::checkout;

use crate::commit::{commit_all, CommitOutcome};
use crate::error::GitError;

/// Prefix of the git worktree names Percy creates (`percy-<task-id>`); worktrees
/// without it are the user's and never touched.
const WORKTREE_NAME_PREFIX: &str = "percy-";

/// Directory under the git directory holding task worktrees and their lock files.
const WORKTREES_DIR: &str = "percy-worktrees";

/// Suffix of a task worktree's lock file.
const LOCK_SUFFIX: &str = ".lock";

/// Longest accepted task id (it becomes a directory and a branch name).
const MAX_TASK_ID_LEN: usize = 128;

/// A task's worktree, owned by this process until `remove` (or drop).
#[derive(Debug)]
pub struct TaskWorktree {
    task_id: String,
    branch: String,
    path: PathBuf,
    repo_dir: PathBuf,
    /// Held for the worktree's lifetime; see the module documentation.
    lock: File,
}

impl TaskWorktree {
    /// Creates the worktree of `task_id` with branch `percy/<task-id>` reset to the
    /// tip of the local branch `base_branch`, replacing any leftover of an earlier
    /// attempt of the same task. Fails with [`GitError::WorktreeInUse`] if a live
    /// process owns that task's worktree.
    pub fn create(repo_dir: &Path, task_id: &str, base_branch: &str) -> Result<Self, GitError> {
        validate_task_id(task_id)?;
        let repo = Repository::open(repo_dir)?;
        let dirs = Dirs::of(&repo);
        fs::create_dir_all(&dirs.root).map_err(|e| GitError::io("create", &dirs.root, e))?;
        let lock =
            try_lock(&dirs, task_id)?.ok_or_else(|| GitError::WorktreeInUse(task_id.to_owned()))?;
        // libgit2 reads every worktree's HEAD to refuse a branch checked out elsewhere, and
        // takes a HEAD it cannot read (another worker's worktree half made or half removed)
        // as "checked out": worktrees of one repository change one at a time.
        let _admin = checkout::lock(&repo)?;
        remove_worktree(&repo, &dirs, task_id)?;

        let base = branch_commit(&repo, base_branch)?;
        let branch_name = task_branch(task_id);
        // force: a retried task starts over from the base (see module docs).
        let branch = repo.branch(&branch_name, &base, true)?;
        let path = dirs.worktree(task_id);
        let mut opts = WorktreeAddOptions::new();
        opts.reference(Some(branch.get()));
        repo.worktree(&worktree_name(task_id), &path, Some(&opts))?;
        tracing::debug!(task_id, path = %path.display(), base = base_branch, "created task worktree");
        Ok(TaskWorktree {
            task_id: task_id.to_owned(),
            branch: branch_name,
            path,
            repo_dir: repo_dir.to_owned(),
            lock,
        })
    }

    /// The working tree the task's command runs in.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The task branch (`percy/<task-id>`), to record in the task's result.
    pub fn branch(&self) -> &str {
        &self.branch
    }

    pub fn task_id(&self) -> &str {
        &self.task_id
    }

    /// Commits everything changed in the worktree (see [`CommitOutcome`]), authored by
    /// the agent, with the trailer `Percy-Task: <task-id>`.
    pub fn commit_all(
        &self,
        author_name: &str,
        author_email: &str,
        message: &str,
    ) -> Result<CommitOutcome, GitError> {
        commit_all(
            &self.path,
            author_name,
            author_email,
            message,
            &self.task_id,
        )
    }

    /// Removes the working tree and git's record of it; the branch stays.
    pub fn remove(self) -> Result<(), GitError> {
        let repo = Repository::open(&self.repo_dir)?;
        let dirs = Dirs::of(&repo);
        let admin = checkout::lock(&repo)?;
        remove_worktree(&repo, &dirs, &self.task_id)?;
        drop(admin);
        // Unlinked while still locked, so nobody can lock the file we are deleting.
        release(&dirs, &self.task_id, self.lock)
    }
}

/// Removes every Percy task worktree of the repository whose owning process is gone
/// (crashed, killed) — worktree, git's record of it and lock file — so that their
/// branches can be checked out again. Worktrees of live processes and worktrees not
/// created by Percy are left alone. Returns the task ids whose worktrees were removed.
pub fn prune_stale(repo_dir: &Path) -> Result<Vec<String>, GitError> {
    let repo = Repository::open(repo_dir)?;
    let dirs = Dirs::of(&repo);
    let mut task_ids = Vec::new();
    for name in repo.worktrees()?.iter() {
        // Names that are not UTF-8 were not created by Percy.
        if let Some(id) = name
            .ok()
            .flatten()
            .and_then(|n| n.strip_prefix(WORKTREE_NAME_PREFIX))
        {
            task_ids.push(id.to_owned());
        }
    }
    // Also what is on disk but not registered (a crash in the middle of `create`).
    match fs::read_dir(&dirs.root) {
        Ok(entries) => {
            for entry in entries {
                let entry = entry.map_err(|e| GitError::io("list", &dirs.root, e))?;
                let name = entry.file_name().to_string_lossy().into_owned();
                task_ids.push(name.strip_suffix(LOCK_SUFFIX).unwrap_or(&name).to_owned());
            }
        }
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => return Err(GitError::io("list", &dirs.root, e)),
    }
    task_ids.sort();
    task_ids.dedup();

    let mut pruned = Vec::new();
    for id in task_ids {
        if validate_task_id(&id).is_err() {
            continue; // not a name Percy would have created
        }
        let Some(lock) = try_lock(&dirs, &id)? else {
            continue; // a live process owns it
        };
        let admin = checkout::lock(&repo)?;
        let removed = remove_worktree(&repo, &dirs, &id)?;
        drop(admin);
        release(&dirs, &id, lock)?;
        if removed {
            tracing::info!(task_id = %id, "pruned stale task worktree");
            pruned.push(id);
        }
    }
    Ok(pruned)
}

/// Where a repository keeps task worktrees.
struct Dirs {
    /// `<git-dir>/percy-worktrees`
    root: PathBuf,
    /// `<git-dir>/worktrees`, git's administrative directories of linked worktrees.
    git_admin: PathBuf,
}

impl Dirs {
    fn of(repo: &Repository) -> Self {
        // commondir: the main git directory even when `repo` is itself a worktree.
        let common = repo.commondir();
        Dirs {
            root: common.join(WORKTREES_DIR),
            git_admin: common.join("worktrees"),
        }
    }

    fn worktree(&self, task_id: &str) -> PathBuf {
        self.root.join(task_id)
    }

    fn lock_file(&self, task_id: &str) -> PathBuf {
        self.root.join(format!("{task_id}{LOCK_SUFFIX}"))
    }
}

fn worktree_name(task_id: &str) -> String {
    format!("{WORKTREE_NAME_PREFIX}{task_id}")
}

/// Task ids become a directory name and part of a ref name: keep them to a safe
/// character set and git's ref-name rules.
fn validate_task_id(task_id: &str) -> Result<(), GitError> {
    let charset_ok = task_id
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    let ok = !task_id.is_empty()
        && task_id.len() <= MAX_TASK_ID_LEN
        && charset_ok
        && !task_id.starts_with(['.', '-'])
        && Reference::is_valid_name(&format!("refs/heads/{}", task_branch(task_id)));
    if ok {
        Ok(())
    } else {
        Err(GitError::InvalidTaskId(task_id.to_owned()))
    }
}

/// Takes the task's lock file without waiting: `None` if another process (or another
/// live `TaskWorktree` of this process) holds it.
fn try_lock(dirs: &Dirs, task_id: &str) -> Result<Option<File>, GitError> {
    let path = dirs.lock_file(task_id);
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| GitError::io("open", &path, e))?;
    match file.try_lock() {
        Ok(()) => Ok(Some(file)),
        Err(TryLockError::WouldBlock) => Ok(None),
        Err(TryLockError::Error(e)) => Err(GitError::io("lock", &path, e)),
    }
}

/// Deletes the task's lock file, then lets go of the lock by closing it.
fn release(dirs: &Dirs, task_id: &str, lock: File) -> Result<(), GitError> {
    let path = dirs.lock_file(task_id);
    let result = remove_if_present(&path, |p| fs::remove_file(p));
    drop(lock);
    result
}

/// Removes the task's worktree if there is anything of it: git's record (pruned with
/// libgit2, which also deletes the working tree) and whatever is left on disk.
/// Returns whether anything was there.
fn remove_worktree(repo: &Repository, dirs: &Dirs, task_id: &str) -> Result<bool, GitError> {
    let name = worktree_name(task_id);
    let mut found = false;
    match repo.find_worktree(&name) {
        Ok(wt) => {
            found = true;
            let mut opts = WorktreePruneOptions::new();
            // valid + locked: prune even a worktree git still considers in use;
            // ownership was already settled by our lock file.
            opts.valid(true).locked(true).working_tree(true);
            if let Err(e) = wt.prune(Some(&mut opts)) {
                // A half-written record can make libgit2 refuse; the directories
                // below are removed by hand either way, which is all pruning does.
                tracing::warn!(task_id, error = %e, "libgit2 could not prune worktree; removing it by hand");
            }
        }
        Err(e) if e.code() == ErrorCode::NotFound => {}
        Err(e) => {
            tracing::warn!(task_id, error = %e, "unreadable worktree record; removing it by hand");
        }
    }
    for dir in [dirs.git_admin.join(&name), dirs.worktree(task_id)] {
        if dir.exists() {
            found = true;
            remove_if_present(&dir, |p| fs::remove_dir_all(p))?;
        }
    }
    Ok(found)
}

fn remove_if_present(
    path: &Path,
    remove: impl FnOnce(&Path) -> std::io::Result<()>,
) -> Result<(), GitError> {
    match remove(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
        Err(e) => Err(GitError::io("remove", path, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_ids_must_be_safe_names() {
        for ok in ["t1", "task-42", "a.b_c", "0198c3e2-7d"] {
            assert!(validate_task_id(ok).is_ok(), "{ok}");
        }
        let long = "x".repeat(MAX_TASK_ID_LEN + 1);
        for bad in [
            "",
            "a/b",
            "..",
            "-x",
            ".x",
            "a..b",
            "x.lock",
            "a b",
            long.as_str(),
        ] {
            assert!(validate_task_id(bad).is_err(), "{bad}");
        }
    }
}
