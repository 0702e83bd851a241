//! Committing everything a task changed in its worktree.

use std::path::Path;

use git2::{IndexAddOption, Oid, Repository, Signature};

use crate::error::GitError;
use crate::trailer::{with_trailers, TASK_TRAILER};

/// Pathspec matching every path of the worktree.
const ALL_PATHS: &str = "*";

/// What `commit_all` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommitOutcome {
    /// A commit with this id is the new tip of the task branch.
    Committed(Oid),
    /// The worktree matches the branch tip; no commit was made.
    NothingToCommit,
}

/// Commits every change in the worktree at `worktree_dir` — added, modified and
/// deleted files, untracked files unless `.gitignore`d — on its checked-out branch,
/// authored and committed by the agent, with a `Percy-Task: <task_id>` trailer.
pub(crate) fn commit_all(
    worktree_dir: &Path,
    author_name: &str,
    author_email: &str,
    message: &str,
    task_id: &str,
) -> Result<CommitOutcome, GitError> {
    let repo = Repository::open(worktree_dir)?;
    let mut index = repo.index()?;
    // add_all stages new and modified files (skipping ignored ones); update_all
    // stages deletions of tracked files, which add_all does not see.
    index.add_all([ALL_PATHS], IndexAddOption::DEFAULT, None)?;
    index.update_all([ALL_PATHS], None)?;
    index.write()?;
    let tree_id = index.write_tree()?;
    let parent = repo.head()?.peel_to_commit()?;
    if parent.tree_id() == tree_id {
        return Ok(CommitOutcome::NothingToCommit);
    }
    let tree = repo.find_tree(tree_id)?;
    let sig = Signature::now(author_name, author_email)?;
    let message = with_trailers(message, &[(TASK_TRAILER, task_id.to_owned())]);
    let id = repo.commit(Some("HEAD"), &sig, &sig, &message, &tree, &[&parent])?;
    Ok(CommitOutcome::Committed(id))
}
