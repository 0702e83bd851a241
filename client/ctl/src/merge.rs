//! `percyctl merge`: merge one branch into a target with the git pipeline, by hand.
//!
//! The merge happens in memory and moves the target ref with a compare-and-swap; a checkout of
//! the target follows it (or refuses it while it has uncommitted changes), as with git's
//! `updateInstead`. Without `--fence-token` it is an unfenced manual merge; merges the cluster
//! makes go through the worker, which holds the cluster lock on the target ref and passes its
//! fencing token. A token here lets an operator merge "as" a lock holder: the merge is refused
//! if the target's tip carries a newer `Percy-Fence` token.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args as ClapArgs;
use percy_git::{run_merge_cli, GitError, MergeArgs, UNFENCED_TOKEN};

use crate::{program_path, Ctx, Refused};

#[derive(Debug, ClapArgs)]
pub struct Args {
    /// The repository (any checkout of it). A checkout of the target branch is updated with
    /// the merge, or the merge refused while it has uncommitted changes.
    #[arg(long)]
    repo: PathBuf,
    /// Branch to merge.
    #[arg(long)]
    branch: String,
    /// Target branch.
    #[arg(long, default_value = "main")]
    into: String,
    /// Command run through `sh -c` for each conflicted path (see the git module's resolver
    /// protocol: PERCY_OURS, PERCY_THEIRS, PERCY_BASE, PERCY_OUTPUT, …); a relative program
    /// path is relative to the current directory.
    #[arg(long)]
    resolver: Option<String>,
    /// Fencing token to merge under (0: an unfenced manual merge).
    #[arg(long, default_value_t = UNFENCED_TOKEN)]
    fence_token: u64,
    /// Fast-forward the target when possible instead of always making a merge commit.
    #[arg(long)]
    fast_forward: bool,
    /// Task the branch belongs to (adds a `Percy-Task` trailer to the merge commit).
    #[arg(long)]
    task: Option<String>,
}

pub async fn run(ctx: &Ctx, args: Args) -> anyhow::Result<()> {
    let merge_args = MergeArgs {
        repo: args.repo,
        branch: args.branch,
        into: args.into,
        // It runs in a scratch directory: a relative path means the one percyctl runs in.
        resolver: args
            .resolver
            .map(|r| program_path::anchor_in_current_dir(&r)),
        fence_token: args.fence_token,
        allow_fast_forward: args.fast_forward,
        task_id: args.task,
    };
    let what = format!("merge {} into {}", merge_args.branch, merge_args.into);
    // libgit2 is blocking I/O: keep it off the async runtime's thread.
    let report = tokio::task::spawn_blocking(move || run_merge_cli(merge_args))
        .await
        .context("merge task panicked")?
        .map_err(|err| match err {
            // A checkout the merge would overwrite is a refusal (exit 1), like a conflict.
            GitError::CheckoutDirty { .. } => {
                anyhow::Error::from(Refused(format!("{what}: {err}")))
            }
            err => anyhow::Error::from(err).context(what.clone()),
        })?;
    ctx.out.emit(&report_json(&report), || report.to_string())?;
    if report.is_conflicted() {
        return Err(Refused(format!(
            "{what}: unresolved conflicts, target left untouched"
        ))
        .into());
    }
    Ok(())
}

fn report_json(report: &percy_git::MergeReport) -> serde_json::Value {
    use percy_git::MergeOutcome;
    let (outcome, commit, paths) = match &report.outcome {
        MergeOutcome::Merged { commit, resolved } => ("merged", Some(commit.to_string()), resolved),
        MergeOutcome::FastForwarded { commit } => {
            ("fast-forwarded", Some(commit.to_string()), &Vec::new())
        }
        MergeOutcome::UpToDate { tip } => ("up-to-date", Some(tip.to_string()), &Vec::new()),
        MergeOutcome::Conflicted { paths } => ("conflicted", None, paths),
    };
    serde_json::json!({
        "branch": report.branch,
        "into": report.into,
        "outcome": outcome,
        "commit": commit,
        "paths": paths
            .iter()
            .map(|p| serde_json::json!({"path": p.path, "kind": p.kind.to_string(), "detail": p.detail}))
            .collect::<Vec<_>>(),
    })
}
