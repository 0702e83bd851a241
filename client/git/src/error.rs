//! The one error type of the git merge pipeline.
//!
//! Outcomes a caller is expected to act on in the normal course of things (a merge
//! that stopped on conflicts, a commit with nothing to commit) are *not* errors: they
//! are variants of `MergeOutcome` / `CommitOutcome`. `GitError` is for everything that
//! prevented the operation from being carried out, including the two fencing
//! refusals (`Fenced`, `LockLost`) that guarantee a merge which lost its cluster lock
//! never moves the target ref.

use std::path::PathBuf;

use crate::fence::FenceError;

/// Why a git pipeline operation could not be carried out.
#[derive(Debug, thiserror::Error)]
pub enum GitError {
    /// libgit2 refused or failed an operation.
    #[error("git: {0}")]
    Git(#[from] git2::Error),

    /// A filesystem operation around the repository failed.
    #[error("{action} {path}: {source}", path = path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The task id cannot be used in a branch name and a directory name.
    #[error("invalid task id {0:?}: use 1-128 characters from [A-Za-z0-9._-], not starting with '.' or '-'")]
    InvalidTaskId(String),

    /// A branch the operation needs does not exist in the repository.
    #[error("branch {0:?} not found")]
    BranchNotFound(String),

    /// Another live process holds this task's worktree (its lock file is locked).
    #[error("the worktree of task {0:?} is in use by another running process")]
    WorktreeInUse(String),

    /// The target tip was written under a newer fencing token than ours: a newer
    /// holder of the merge lock has merged since we obtained ours.
    #[error("fenced: our fencing token {ours} is older than the target tip's Percy-Fence {tip}")]
    Fenced { ours: u64, tip: u64 },

    /// `MergeFence::still_held` said the merge lock is gone (expired, taken over).
    #[error("the merge lock was lost before the target ref could be moved")]
    LockLost,

    /// `MergeFence::still_held` could not find out whether the lock is held; the
    /// merge is not carried out, since moving the ref is only safe under the lock.
    #[error("could not confirm the merge lock is still held: {0}")]
    FenceCheck(#[source] FenceError),

    /// The target branch is checked out in a working tree that cannot follow the merge
    /// (uncommitted changes, or an untracked file in the way); nothing was changed.
    #[error(
        "branch {branch:?} is checked out in {checkout} and {changes}; commit or stash them there, \
         then merge again (the branch was not moved)",
        checkout = checkout.display()
    )]
    CheckoutDirty {
        branch: String,
        checkout: PathBuf,
        changes: String,
    },

    /// `git push` of a task's branch failed (`push::push_branch`).
    #[error("pushing {branch} to {remote}: {detail}")]
    Push {
        branch: String,
        remote: String,
        detail: String,
    },

    /// The target ref changed under every compare-and-swap attempt (someone outside
    /// the merge lock keeps writing it).
    #[error("target branch {into:?} changed during each of {attempts} merge attempts")]
    TargetMoved { into: String, attempts: u32 },
}

impl GitError {
    /// Wraps an I/O error with what was being done and to which path.
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> Self {
        GitError::Io {
            action,
            path: path.into(),
            source,
        }
    }
}
