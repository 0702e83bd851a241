//! The git merge pipeline: agents work on their own branches, the cluster merges
//! those branches back into a target branch safely. Everything here is synchronous
//! libgit2 work with no network dependency; the cluster lock is abstracted as
//! [`MergeFence`].
//!
//! - [`worktree`]: one worktree per task on `percy/<task-id>`, committing its work,
//!   cleaning up after crashes ([`TaskWorktree`], [`prune_stale`]).
//! - [`commit`]: committing everything a task changed ([`CommitOutcome`]).
//! - [`merge`]: merging a branch in memory and moving the target ref by
//!   compare-and-swap ([`merge_branch`]).
//! - [`conflict`]: conflicted paths and their kinds; [`resolver`]: the resolver
//!   command protocol; [`fence`]: the fencing rules; [`trailer`]: `Percy-*` trailers.
//! - checked-out targets follow the merge as with git's `updateInstead` (`checkout`).
//! - [`queue`]: merging a backlog in completion order; [`cli`]: `percyctl merge`.
//!
//! How the worker uses it, per task: `prune_stale` once at start;
//! `TaskWorktree::create(repo, task, target)` → run the command in `path()` →
//! `commit_all` → `remove` → take the cluster lock `git/<repo>/refs/heads/<target>`
//! → `merge_branch` with `allow_fast_forward: false` → release the lock → complete
//! the task with the branch name, or mark it with the conflicted paths.

pub mod branch;
mod checkout;
pub mod cli;
pub mod commit;
pub mod conflict;
pub mod error;
pub mod fence;
pub mod merge;
pub mod push;
pub mod queue;
pub mod resolver;
pub mod trailer;
pub mod worktree;

pub use branch::{task_branch, TASK_BRANCH_PREFIX};
pub use cli::{run_merge_cli, MergeArgs, MergeReport};
pub use commit::CommitOutcome;
pub use conflict::{ConflictKind, ConflictedPath};
pub use error::GitError;
pub use fence::{tip_fence_token, FenceError, MergeFence, StaticFence, UNFENCED_TOKEN};
pub use merge::{merge_branch, MergeOutcome, MergeRequest};
pub use push::push_branch;
pub use queue::{ConflictPolicy, MergeQueue, QueueReport, QueueSettings, QueuedMerge};
pub use resolver::{
    contains_conflict_markers, ResolverCommand, DEFAULT_RESOLVER_TIMEOUT, RESOLVER_DELETE_EXIT_CODE,
};
pub use trailer::{FENCE_TRAILER, TASK_TRAILER};
pub use worktree::{prune_stale, TaskWorktree};
