//! The library side of `percyctl merge`: one manual merge, no cluster needed.
//!
//! The CLI passes the fence token the user gave (default [`UNFENCED_TOKEN`], for a
//! repository no cluster merges into) and a fence that always holds. Merges made by
//! the cluster go through the worker instead, which calls `merge_branch` with a
//! `MergeFence` backed by the cluster lock on the target ref.

use std::fmt;
use std::path::PathBuf;

use crate::error::GitError;
use crate::fence::{StaticFence, UNFENCED_TOKEN};
use crate::merge::{merge_branch, MergeOutcome, MergeRequest};
use crate::resolver::ResolverCommand;

/// Arguments of `percyctl merge`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MergeArgs {
    pub repo: PathBuf,
    pub branch: String,
    pub into: String,
    /// Shell command line of the resolver (`--resolver CMD`).
    pub resolver: Option<String>,
    /// Fencing token to merge under; [`UNFENCED_TOKEN`] for a plain manual merge.
    pub fence_token: u64,
    pub allow_fast_forward: bool,
    /// Task the branch belongs to, if known (adds the `Percy-Task` trailer).
    pub task_id: Option<String>,
}

impl MergeArgs {
    /// A manual, unfenced merge of `branch` into `into` with merge commits only.
    pub fn new(
        repo: impl Into<PathBuf>,
        branch: impl Into<String>,
        into: impl Into<String>,
    ) -> Self {
        MergeArgs {
            repo: repo.into(),
            branch: branch.into(),
            into: into.into(),
            resolver: None,
            fence_token: UNFENCED_TOKEN,
            allow_fast_forward: false,
            task_id: None,
        }
    }
}

/// What `percyctl merge` prints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MergeReport {
    pub branch: String,
    pub into: String,
    pub outcome: MergeOutcome,
}

impl MergeReport {
    /// Whether the merge stopped on unresolved conflicts (the CLI exits non-zero).
    pub fn is_conflicted(&self) -> bool {
        matches!(self.outcome, MergeOutcome::Conflicted { .. })
    }
}

impl fmt::Display for MergeReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (branch, into) = (&self.branch, &self.into);
        match &self.outcome {
            MergeOutcome::Merged { commit, resolved } => {
                write!(f, "merged {branch} into {into}: {commit}")?;
                for p in resolved {
                    write!(f, "\n  resolved {} ({}): {}", p.path, p.kind, p.detail)?;
                }
                Ok(())
            }
            MergeOutcome::FastForwarded { commit } => {
                write!(f, "fast-forwarded {into} to {branch}: {commit}")
            }
            MergeOutcome::UpToDate { tip } => {
                write!(f, "{into} already contains {branch} (tip {tip})")
            }
            MergeOutcome::Conflicted { paths } => {
                write!(
                    f,
                    "conflicts merging {branch} into {into}; {into} unchanged"
                )?;
                for p in paths {
                    write!(f, "\n  {} ({}): {}", p.path, p.kind, p.detail)?;
                }
                Ok(())
            }
        }
    }
}

/// Runs one manual merge as described by `args`.
pub fn run_merge_cli(args: MergeArgs) -> Result<MergeReport, GitError> {
    let resolver = args.resolver.as_deref().map(ResolverCommand::new);
    let fence = StaticFence::new(args.fence_token);
    let outcome = merge_branch(&MergeRequest {
        repo_dir: &args.repo,
        branch: &args.branch,
        into: &args.into,
        resolver: resolver.as_ref(),
        fence: &fence,
        allow_fast_forward: args.allow_fast_forward,
        task_id: args.task_id.as_deref(),
    })?;
    Ok(MergeReport {
        branch: args.branch,
        into: args.into,
        outcome,
    })
}
