//! Keeping a checkout of the merge target in step with it, the way git's
//! `receive.denyCurrentBranch=updateInstead` does for a push.
//!
//! A merge moves `refs/heads/<into>`. When that branch is checked out in a working tree of
//! the repository (its main checkout or a linked worktree), moving only the ref would leave
//! that checkout's files and index at the old tip: `git status` would then show the merge
//! reversed as staged changes, and a commit there would undo it. So, before the ref moves:
//!
//! - a checkout of the target with any change against its HEAD (staged, or in tracked files)
//!   refuses the merge with [`GitError::CheckoutDirty`], naming the branch and the checkout —
//!   nothing is changed, the person's work is never overwritten;
//! - a clean one has its files and index brought to the merged tree (a *safe* checkout: an
//!   untracked file in the way refuses it too, and libgit2 checks for that before it writes
//!   anything).
//!
//! Merges into one repository take [`lock`] (an OS file lock in its git directory) around
//! all of this and the compare-and-swap, so two of them never update a checkout at once.
//!
//! The checkout is updated before the compare-and-swap of the ref, as git does, so the ref
//! never points past a checkout that could not follow. If the compare-and-swap then loses (the
//! ref moved under us), [`CheckoutUpdate::undo`] puts back the old tree — only when the
//! checkout's index still holds exactly what the update wrote, so nothing anyone did in the
//! meantime is overwritten.

use std::fs::File;
use std::path::PathBuf;

use git2::build::CheckoutBuilder;
use git2::{Oid, Repository, Status, StatusOptions};

use crate::error::GitError;

/// Most changed paths named in a [`GitError::CheckoutDirty`] message.
pub const MAX_DIRTY_PATHS_SHOWN: usize = 10;

/// File in the repository's common git directory whose OS lock serialises the checkout
/// updates and ref moves of merges, and the making and removing of task worktrees (which
/// read every checkout's HEAD); released when the process dies.
pub const CHECKOUT_LOCK_FILE: &str = "percy-checkout.lock";

/// Waits for and takes the repository's checkout lock; it is held until the file is dropped.
pub(crate) fn lock(repo: &Repository) -> Result<File, GitError> {
    let path = repo.commondir().join(CHECKOUT_LOCK_FILE);
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| GitError::io("open", &path, e))?;
    file.lock().map_err(|e| GitError::io("lock", &path, e))?;
    Ok(file)
}

/// A working tree whose HEAD is the target branch.
struct Checkout {
    repo: Repository,
    dir: PathBuf,
}

/// Checkouts updated to a merge, so that a lost compare-and-swap can take them back.
pub(crate) struct CheckoutUpdate {
    updated: Vec<Checkout>,
    old_tree: Oid,
    new_tree: Oid,
}

/// Brings every checkout of `target_ref` from `old_tip` to `new_tip`, or refuses (changing
/// nothing) when one has local changes; see the module documentation.
pub(crate) fn update_checkouts(
    repo: &Repository,
    into: &str,
    target_ref: &str,
    old_tip: Oid,
    new_tip: Oid,
) -> Result<CheckoutUpdate, GitError> {
    let checkouts = checkouts_of(repo, target_ref)?;
    for checkout in &checkouts {
        let changed = changed_paths(&checkout.repo)?;
        if !changed.is_empty() {
            return Err(dirty(into, checkout, changed));
        }
    }
    let old_tree = repo.find_commit(old_tip)?.tree_id();
    let new_tree = repo.find_commit(new_tip)?.tree_id();
    let mut update = CheckoutUpdate {
        updated: Vec::new(),
        old_tree,
        new_tree,
    };
    for checkout in checkouts {
        // HEAD still names the old tip here, so a safe checkout treats exactly the files
        // that differ from it as the person's, and refuses rather than touch them.
        let result = checkout.repo.find_tree(new_tree).and_then(|tree| {
            checkout
                .repo
                .checkout_tree(tree.as_object(), Some(CheckoutBuilder::new().safe()))
        });
        if let Err(e) = result {
            update.undo();
            return Err(GitError::CheckoutDirty {
                branch: into.to_owned(),
                checkout: checkout.dir,
                changes: format!("it cannot be updated safely ({})", e.message()),
            });
        }
        update.updated.push(checkout);
    }
    Ok(update)
}

impl CheckoutUpdate {
    /// Takes the updated checkouts back to the old tree (the ref did not move after all).
    pub(crate) fn undo(&self) {
        for checkout in &self.updated {
            let untouched = checkout
                .repo
                .index()
                .and_then(|mut index| index.write_tree())
                .is_ok_and(|tree| tree == self.new_tree);
            if !untouched {
                tracing::warn!(checkout = ?checkout.dir, "checkout changed after the merge updated it; not taking it back");
                continue;
            }
            let restored = checkout.repo.find_tree(self.old_tree).and_then(|tree| {
                checkout
                    .repo
                    .checkout_tree(tree.as_object(), Some(CheckoutBuilder::new().force()))
            });
            if let Err(e) = restored {
                tracing::warn!(checkout = ?checkout.dir, error = %e, "could not take a checkout back to the old tip");
            }
        }
    }
}

/// The working trees (main and linked) whose HEAD is the symbolic ref `target_ref`.
fn checkouts_of(repo: &Repository, target_ref: &str) -> Result<Vec<Checkout>, GitError> {
    // The main repository, whichever of its working trees `repo` was opened from.
    let main = Repository::open(repo.commondir())?;
    let mut candidates = Vec::new();
    if !main.is_bare() {
        candidates.push(Repository::open(repo.commondir())?);
    }
    let names = main.worktrees()?;
    for name in names.iter() {
        // A name that is not UTF-8 cannot be looked up by name; git never makes one.
        let Some(name) = name? else { continue };
        let worktree = main.find_worktree(name)?;
        // A worktree whose directory is gone (prunable) has no files to keep in step.
        if worktree.validate().is_err() {
            continue;
        }
        candidates.push(Repository::open_from_worktree(&worktree)?);
    }
    let mut checkouts = Vec::new();
    for candidate in candidates {
        let is_target = candidate.find_reference("HEAD")?.symbolic_target()? == Some(target_ref);
        if !is_target {
            continue;
        }
        if let Some(dir) = candidate.workdir().map(|d| d.to_path_buf()) {
            checkouts.push(Checkout {
                repo: candidate,
                dir,
            });
        }
    }
    Ok(checkouts)
}

/// Paths staged or changed in tracked files, against the checkout's HEAD (untracked and
/// ignored files do not count, as with git).
fn changed_paths(repo: &Repository) -> Result<Vec<String>, GitError> {
    let mut options = StatusOptions::new();
    options
        .include_untracked(false)
        .include_ignored(false)
        .exclude_submodules(true);
    let statuses = repo.statuses(Some(&mut options))?;
    Ok(statuses
        .iter()
        .filter(|s| s.status() != Status::CURRENT)
        .map(|s| String::from_utf8_lossy(s.path_bytes()).into_owned())
        .collect())
}

fn dirty(into: &str, checkout: &Checkout, mut changed: Vec<String>) -> GitError {
    let more = changed.len().saturating_sub(MAX_DIRTY_PATHS_SHOWN);
    changed.truncate(MAX_DIRTY_PATHS_SHOWN);
    let mut changes = format!("it has uncommitted changes: {}", changed.join(", "));
    if more > 0 {
        changes.push_str(&format!(" and {more} more"));
    }
    GitError::CheckoutDirty {
        branch: into.to_owned(),
        checkout: checkout.dir.clone(),
        changes,
    }
}
