//! `percyctl worker --repo`: every task runs in its own worktree on `percy/<task-id>`, its
//! work is committed by the agent and merged into the target under the cluster merge lock;
//! a conflict fails the task with the conflicted path and leaves the target untouched.
//! Needs the `git` command (to set up and inspect the repository).

mod runtime_common;

use std::path::Path;
use std::process::Command;

use anyhow::{bail, ensure, Context, Result};
use percy_client::proto::TaskSpec;
use percy_client::TaskStatus;
use runtime_common::*;

fn git(repo: &Path, args: &[&str]) -> Result<String> {
    let output = Command::new("git")
        .arg("-C")
        .arg(repo)
        .args(args)
        .output()
        .context("running git")?;
    if !output.status.success() {
        bail!(
            "git {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

fn task(id: &str, payload: &str) -> TaskSpec {
    TaskSpec {
        id: id.into(),
        title: format!("write {id}"),
        payload: payload.as_bytes().to_vec(),
        max_attempts: 1,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_are_merged_into_the_target_and_conflicts_fail_with_the_path() -> Result<()> {
    let _serial = serial().await;
    let setup = Setup::start().await?;
    let repo = setup.path("app");
    std::fs::create_dir_all(&repo)?;
    git(&repo, &["init", "-q", "-b", "main"])?;
    std::fs::write(repo.join("README"), "app\n")?;
    git(&repo, &["add", "README"])?;
    git(
        &repo,
        &[
            "-c",
            "user.name=setup",
            "-c",
            "user.email=setup@example.com",
            "commit",
            "-q",
            "-m",
            "initial",
        ],
    )?;

    // The payload runs in the task's worktree (the command's working directory).
    let mut worker = setup.worker(
        "gitter",
        r#"eval "$(cat)""#,
        &[
            "--repo",
            &repo.display().to_string(),
            "--max-concurrent",
            "2",
        ],
    )?;
    // Two independent tasks, then two that write the same new file from the same base: both
    // worktrees exist before either merges, so the second merge conflicts.
    setup
        .client
        .submit_plan(
            "edits",
            vec![
                task("alpha", "echo alpha > alpha.txt"),
                task("beta", "echo beta > beta.txt"),
            ],
        )
        .await?;
    for id in ["alpha", "beta"] {
        let done = eventually(&format!("{id} to finish"), SETTLE, || async {
            let task = setup.task(id).await?;
            Ok(matches!(task.status(), TaskStatus::Completed | TaskStatus::Failed).then_some(task))
        })
        .await?;
        ensure!(
            done.status() == TaskStatus::Completed,
            "{id}: {}\nworker log:\n{}",
            done.error,
            worker.log()
        );
        let branch = done.result.map(|r| r.branch).unwrap_or_default();
        ensure!(
            branch == format!("percy/{id}"),
            "{id} recorded branch {branch:?}"
        );
    }
    setup
        .client
        .submit_plan(
            "clash",
            vec![
                task("left", "echo left > shared.txt; sleep 1"),
                task("right", "echo right > shared.txt; sleep 1"),
            ],
        )
        .await?;
    let mut outcomes = Vec::new();
    for id in ["left", "right"] {
        outcomes.push(
            eventually(&format!("{id} to finish"), SETTLE, || async {
                let task = setup.task(id).await?;
                Ok(
                    matches!(task.status(), TaskStatus::Completed | TaskStatus::Failed)
                        .then_some(task),
                )
            })
            .await?,
        );
    }
    let completed: Vec<_> = outcomes
        .iter()
        .filter(|t| t.status() == TaskStatus::Completed)
        .collect();
    let failed: Vec<_> = outcomes
        .iter()
        .filter(|t| t.status() == TaskStatus::Failed)
        .collect();
    ensure!(completed.len() == 1 && failed.len() == 1, "{outcomes:?}");
    ensure!(
        failed[0].error.contains("conflicts in shared.txt"),
        "the conflict is not named: {}",
        failed[0].error
    );

    let files = git(&repo, &["ls-tree", "--name-only", "main"])?;
    for file in ["README", "alpha.txt", "beta.txt", "shared.txt"] {
        ensure!(
            files.lines().any(|l| l == file),
            "{file} not on main:\n{files}"
        );
    }
    let winner = &completed[0].id;
    let shared = git(&repo, &["show", "main:shared.txt"])?;
    ensure!(
        shared.trim() == winner.as_str(),
        "main has {shared:?}, {winner} won"
    );
    let merges = git(&repo, &["log", "--merges", "--format=%B", "main"])?;
    ensure!(
        merges.matches("Percy-Fence:").count() == 3,
        "expected three fenced merges:\n{merges}"
    );
    let authors = git(&repo, &["log", "--no-merges", "--format=%an", "main"])?;
    ensure!(
        authors.lines().filter(|a| *a == "gitter").count() == 3,
        "commits not authored by the agent:\n{authors}"
    );
    let worktrees = git(&repo, &["worktree", "list"])?;
    ensure!(
        worktrees.lines().count() == 1,
        "worktrees left behind:\n{worktrees}"
    );

    let status = worker.terminate().await?;
    ensure!(
        status.success(),
        "gitter exited with {status}:\n{}",
        worker.log()
    );
    Ok(())
}
