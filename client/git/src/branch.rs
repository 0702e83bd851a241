//! Branch naming and lookup shared by the worktree and merge code.

use git2::{BranchType, Commit, ErrorCode, Repository};

use crate::error::GitError;

/// Prefix of task branches: task `t1` works on `percy/t1`.
pub const TASK_BRANCH_PREFIX: &str = "percy/";

/// The branch a task works on.
pub fn task_branch(task_id: &str) -> String {
    format!("{TASK_BRANCH_PREFIX}{task_id}")
}

/// The commit the local branch `name` points at; [`GitError::BranchNotFound`] if
/// there is no such branch.
pub(crate) fn branch_commit<'r>(repo: &'r Repository, name: &str) -> Result<Commit<'r>, GitError> {
    let branch = repo.find_branch(name, BranchType::Local).map_err(|e| {
        if e.code() == ErrorCode::NotFound {
            GitError::BranchNotFound(name.to_owned())
        } else {
            GitError::Git(e)
        }
    })?;
    Ok(branch.get().peel_to_commit()?)
}
