//! Merging a branch into a target branch, in memory, under a fence.
//!
//! The merge never touches a working tree or an index file: libgit2 merges the two
//! commits into an in-memory index (`merge_commits`), conflicts are resolved in that
//! index, the tree is written straight to the object database (`write_tree_to`), and
//! the merge commit is created without updating any ref. Only then is the target ref
//! moved, by compare-and-swap (see [`crate::fence`] for the checks around it).
//!
//! When `<into>` is checked out in a working tree of the repository, that checkout follows
//! the merge as with git's `receive.denyCurrentBranch=updateInstead`: updated when it is
//! clean, and the merge refused (nothing moved) when it has uncommitted changes — see
//! [`crate::checkout`].
//!
//! When the compare-and-swap finds the target moved (someone outside the merge lock
//! wrote it, e.g. a person committing on it), the merge is recomputed on the new tip,
//! up to [`MAX_MERGE_ATTEMPTS`] times: the other write is never overwritten.

use std::path::Path;
use std::thread;
use std::time::Duration;

use git2::{Commit, ErrorCode, MergeOptions, Oid, Repository, Signature};

use crate::branch::branch_commit;
use crate::checkout::{self, update_checkouts};

use crate::conflict::{collect_conflicts, renamed_paths, Conflict, ConflictKind, ConflictedPath};
use crate::error::GitError;
use crate::fence::{
    check_not_superseded, confirm_held, tip_fence_token, MergeFence, UNFENCED_TOKEN,
};
use crate::resolver::{run_resolver, Resolution, ResolverCommand, ResolverContext};
use crate::trailer::{with_trailers, FENCE_TRAILER, TASK_TRAILER};

/// Name recorded as author and committer of merge commits.
pub const MERGE_COMMITTER_NAME: &str = "Percy";

/// Email recorded as author and committer of merge commits.
pub const MERGE_COMMITTER_EMAIL: &str = "percy@localhost";

/// How many times a merge is computed before giving up on a target that keeps moving.
pub const MAX_MERGE_ATTEMPTS: u32 = 8;

/// Pause before recomputing after the target moved, multiplied by the attempt
/// number, so that a writer holding the ref's lock file gets to finish; plus up to
/// this much random jitter, so that two losers do not collide again in lockstep.
const RETRY_BACKOFF: Duration = Duration::from_millis(20);

/// A request to merge `branch` into `into`.
pub struct MergeRequest<'a> {
    /// Any directory of the repository (its main checkout, a bare repo, a worktree).
    pub repo_dir: &'a Path,
    /// Local branch to merge (e.g. `percy/<task-id>`).
    pub branch: &'a str,
    /// Local target branch (e.g. `main`).
    pub into: &'a str,
    /// Resolver for conflicted paths; without one any conflict refuses the merge.
    pub resolver: Option<&'a ResolverCommand>,
    /// The merge lock on `into`.
    pub fence: &'a dyn MergeFence,
    /// Fast-forward instead of creating a merge commit when `into` is an ancestor of
    /// `branch`. A fast-forward writes no `Percy-Fence` trailer (no new commit), so
    /// the worker leaves this off: every task then gets one fenced merge commit.
    pub allow_fast_forward: bool,
    /// Task whose branch this is: `Percy-Task` trailer and `PERCY_TASK_ID`.
    pub task_id: Option<&'a str>,
}

/// How a merge ended (errors aside).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MergeOutcome {
    /// A merge commit (parents: old target tip, branch tip) is the new target tip.
    /// `resolved` lists the paths the resolver settled.
    Merged {
        commit: Oid,
        resolved: Vec<ConflictedPath>,
    },
    /// The target was moved to the branch tip.
    FastForwarded { commit: Oid },
    /// The branch was already contained in the target; nothing changed.
    UpToDate { tip: Oid },
    /// Some paths could not be resolved; the target was not touched. Lists every
    /// conflicted path, the reason it was not resolved in `detail`.
    Conflicted { paths: Vec<ConflictedPath> },
}

/// Merges `req.branch` into `req.into`; see the module documentation.
pub fn merge_branch(req: &MergeRequest<'_>) -> Result<MergeOutcome, GitError> {
    let repo = Repository::open(req.repo_dir)?;
    let target_ref = format!("refs/heads/{}", req.into);
    for attempt in 1..=MAX_MERGE_ATTEMPTS {
        match attempt_merge(&repo, req, &target_ref)? {
            Attempt::Done(outcome) => return Ok(outcome),
            Attempt::TargetMoved => {
                tracing::info!(
                    into = req.into,
                    attempt,
                    "target moved during merge; recomputing"
                );
                let jitter = RETRY_BACKOFF.mul_f64(rand::random::<f64>());
                thread::sleep(RETRY_BACKOFF * attempt + jitter);
            }
        }
    }
    Err(GitError::TargetMoved {
        into: req.into.to_owned(),
        attempts: MAX_MERGE_ATTEMPTS,
    })
}

enum Attempt {
    Done(MergeOutcome),
    TargetMoved,
}

fn attempt_merge(
    repo: &Repository,
    req: &MergeRequest<'_>,
    target_ref: &str,
) -> Result<Attempt, GitError> {
    let tip = branch_commit(repo, req.into)?;
    let theirs = branch_commit(repo, req.branch)?;
    if theirs.id() == tip.id() || repo.graph_descendant_of(tip.id(), theirs.id())? {
        return Ok(Attempt::Done(MergeOutcome::UpToDate { tip: tip.id() }));
    }
    // Checked before any work, so a superseded merger does not even run resolvers.
    check_not_superseded(req.fence.token(), tip_fence_token(repo, &tip)?)?;

    let (new_tip, outcome) =
        if req.allow_fast_forward && repo.graph_descendant_of(theirs.id(), tip.id())? {
            (
                theirs.id(),
                MergeOutcome::FastForwarded {
                    commit: theirs.id(),
                },
            )
        } else {
            match merge_trees(repo, req, &tip, &theirs)? {
                TreeMerge::Clean { tree, resolved } => {
                    let commit = write_merge_commit(repo, req, &tip, &theirs, tree, &resolved)?;
                    (commit, MergeOutcome::Merged { commit, resolved })
                }
                TreeMerge::Conflicted(paths) => {
                    return Ok(Attempt::Done(MergeOutcome::Conflicted { paths }))
                }
            }
        };

    // One merge at a time past this point, so checkouts follow one merge after the other.
    let _checkout_lock = checkout::lock(repo)?;
    if branch_commit(repo, req.into)?.id() != tip.id() {
        // Another merge moved the target while this one was computed: a checkout now shows
        // that merge, and must not be taken to this one's tree.
        return Ok(Attempt::TargetMoved);
    }
    // As late as possible: nothing but the compare-and-swap itself comes after.
    confirm_held(req.fence)?;
    let log_message = format!(
        "percy: merge {} into {} (fence {})",
        req.branch,
        req.into,
        req.fence.token()
    );
    // A checkout of the target follows before the ref moves, as with git's updateInstead.
    let checkouts = update_checkouts(repo, req.into, target_ref, tip.id(), new_tip)?;
    match repo.reference_matching(target_ref, new_tip, true, tip.id(), &log_message) {
        Ok(_) => Ok(Attempt::Done(outcome)),
        // Modified: the ref is no longer `tip`. Locked: another writer is mid-update.
        Err(e) if matches!(e.code(), ErrorCode::Modified | ErrorCode::Locked) => {
            checkouts.undo();
            Ok(Attempt::TargetMoved)
        }
        Err(e) => {
            checkouts.undo();
            Err(e.into())
        }
    }
}

enum TreeMerge {
    Clean {
        tree: Oid,
        resolved: Vec<ConflictedPath>,
    },
    Conflicted(Vec<ConflictedPath>),
}

/// Merges the trees of `tip` and `theirs` in memory, resolving conflicts.
fn merge_trees(
    repo: &Repository,
    req: &MergeRequest<'_>,
    tip: &Commit<'_>,
    theirs: &Commit<'_>,
) -> Result<TreeMerge, GitError> {
    let mut opts = MergeOptions::new();
    opts.find_renames(true);
    let mut index = repo.merge_commits(tip, theirs, Some(&opts))?;
    let mut resolved = Vec::new();
    let mut unresolved = Vec::new();
    if index.has_conflicts() {
        let conflicts = collect_conflicts(&index)?;
        let base = match repo.merge_base(tip.id(), theirs.id()) {
            Ok(id) => Some(repo.find_commit(id)?.tree()?),
            Err(e) if e.code() == ErrorCode::NotFound => None,
            Err(e) => return Err(e.into()),
        };
        let renamed = renamed_paths(repo, base.as_ref(), &tip.tree()?, &theirs.tree()?)?;
        let scratch = tempfile::Builder::new()
            .prefix("percy-merge-")
            .tempdir()
            .map_err(|e| GitError::io("create temp dir in", std::env::temp_dir(), e))?;
        let ctx = ResolverContext {
            repo_dir: req.repo_dir,
            task_id: req.task_id,
            branch: req.branch,
            target: req.into,
        };
        for (n, conflict) in conflicts.iter().enumerate() {
            let kind = conflict.classify(repo, &renamed)?;
            let path = conflict.result_path();
            let resolution = match req.resolver {
                None => Resolution::Unresolved("no resolver configured".into()),
                Some(_)
                    if matches!(kind, ConflictKind::Submodule | ConflictKind::DirectoryFile) =>
                {
                    Resolution::Unresolved(format!(
                        "{kind} conflicts are never resolved automatically"
                    ))
                }
                // One unresolvable path refuses the whole merge: spare the (possibly
                // expensive) resolver the remaining paths, but still report them.
                Some(_) if !unresolved.is_empty() => Resolution::Unresolved(
                    "not attempted: another path could not be resolved".into(),
                ),
                Some(resolver) => {
                    let workdir = scratch.path().join(n.to_string());
                    std::fs::create_dir(&workdir)
                        .map_err(|e| GitError::io("create", &workdir, e))?;
                    resolve_one(repo, resolver, &ctx, conflict, kind, &workdir)?
                }
            };
            match resolution {
                Resolution::Content(data) => {
                    conflict.resolve_with(repo, &mut index, &data)?;
                    resolved.push(ConflictedPath {
                        path,
                        kind,
                        detail: "resolved by the resolver".into(),
                    });
                }
                Resolution::Delete => {
                    conflict.remove_from(&mut index)?;
                    resolved.push(ConflictedPath {
                        path,
                        kind,
                        detail: "deleted by the resolver".into(),
                    });
                }
                Resolution::Unresolved(detail) => {
                    tracing::info!(path, %kind, detail, "conflict not resolved");
                    unresolved.push(ConflictedPath { path, kind, detail });
                }
            }
        }
    }
    if !unresolved.is_empty() {
        return Ok(TreeMerge::Conflicted(unresolved));
    }
    let tree = index.write_tree_to(repo)?;
    Ok(TreeMerge::Clean { tree, resolved })
}

/// Reads the sides of `conflict` and runs the resolver on them.
fn resolve_one(
    repo: &Repository,
    resolver: &ResolverCommand,
    ctx: &ResolverContext<'_>,
    conflict: &Conflict,
    kind: ConflictKind,
    workdir: &Path,
) -> Result<Resolution, GitError> {
    let [base, ours, theirs] = conflict
        .sides()
        .map(|side| side.map(|s| repo.find_blob(s.id)).transpose());
    let (base, ours, theirs) = (base?, ours?, theirs?);
    run_resolver(
        resolver,
        ctx,
        conflict,
        kind,
        [
            base.as_ref().map(|b| b.content()),
            ours.as_ref().map(|b| b.content()),
            theirs.as_ref().map(|b| b.content()),
        ],
        workdir,
    )
}

/// Creates (without moving any ref) the merge commit of `theirs` into `tip`.
fn write_merge_commit(
    repo: &Repository,
    req: &MergeRequest<'_>,
    tip: &Commit<'_>,
    theirs: &Commit<'_>,
    tree: Oid,
    resolved: &[ConflictedPath],
) -> Result<Oid, GitError> {
    let mut message = format!("Merge branch '{}' into {}\n", req.branch, req.into);
    if !resolved.is_empty() {
        message.push_str("\nResolved conflicts:\n");
        for p in resolved {
            message.push_str(&format!("\t{} ({}, {})\n", p.path, p.kind, p.detail));
        }
    }
    let mut trailers = Vec::new();
    if let Some(task_id) = req.task_id {
        trailers.push((TASK_TRAILER, task_id.to_owned()));
    }
    if req.fence.token() != UNFENCED_TOKEN {
        trailers.push((FENCE_TRAILER, req.fence.token().to_string()));
    }
    let message = if trailers.is_empty() {
        message
    } else {
        with_trailers(&message, &trailers)
    };
    let sig = Signature::now(MERGE_COMMITTER_NAME, MERGE_COMMITTER_EMAIL)?;
    let tree = repo.find_tree(tree)?;
    Ok(repo.commit(None, &sig, &sig, &message, &tree, &[tip, theirs])?)
}
