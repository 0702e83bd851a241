//! The merge queue: completion order, and the conflict policies.

mod git_common;

use std::path::Path;

use git2::Repository;
use git_common::*;
use percy_git::{
    ConflictPolicy, MergeOutcome, MergeQueue, QueueSettings, QueuedMerge, StaticFence, TASK_TRAILER,
};

fn entry(task_id: &str, completion_revision: u64) -> QueuedMerge {
    QueuedMerge {
        task_id: task_id.into(),
        branch: format!("percy/{task_id}"),
        completion_revision,
    }
}

/// Tasks a, b, c each add a file; c also changes the line main changed.
fn repo_with_tasks(dir: &Path) -> Repository {
    let repo = init_repo(dir, &[("shared.txt", Some(b"base\n"))]);
    commit_on(&repo, "percy/a", TARGET, &[("a.txt", Some(b"a\n"))]);
    commit_on(&repo, "percy/b", TARGET, &[("b.txt", Some(b"b\n"))]);
    commit_on(
        &repo,
        "percy/c",
        TARGET,
        &[("c.txt", Some(b"c\n")), ("shared.txt", Some(b"from c\n"))],
    );
    commit_on(
        &repo,
        TARGET,
        TARGET,
        &[("shared.txt", Some(b"from main\n"))],
    );
    repo
}

/// Task ids of the merge commits on main's first-parent chain, oldest first.
fn merged_task_order(repo: &Repository) -> Vec<String> {
    let mut order = Vec::new();
    let mut commit = tip_commit(repo, TARGET);
    while commit.parent_count() > 0 {
        let msg = commit.message().unwrap().to_owned();
        if let Some(line) = msg.lines().find(|l| l.starts_with(TASK_TRAILER)) {
            order.push(line[TASK_TRAILER.len() + 2..].to_owned());
        }
        commit = commit.parent(0).unwrap();
    }
    order.reverse();
    order
}

fn settings<'a>(
    dir: &'a Path,
    fence: &'a StaticFence,
    on_conflict: ConflictPolicy,
) -> QueueSettings<'a> {
    QueueSettings {
        repo_dir: dir,
        into: TARGET,
        resolver: None,
        fence,
        allow_fast_forward: false,
        on_conflict,
    }
}

#[test]
fn merges_in_completion_order_and_continues_past_conflicts() {
    let dir = tempfile::tempdir().unwrap();
    let repo = repo_with_tasks(dir.path());
    let queue = MergeQueue::new(vec![entry("b", 30), entry("c", 20), entry("a", 10)]);
    let ids: Vec<_> = queue.entries().iter().map(|e| e.task_id.as_str()).collect();
    assert_eq!(ids, ["a", "c", "b"]);

    let fence = StaticFence::new(3);
    let report = queue.merge_all(&settings(dir.path(), &fence, ConflictPolicy::Continue));
    assert!(report.not_attempted.is_empty());
    let outcomes: Vec<_> = report
        .attempted
        .iter()
        .map(|(e, r)| {
            (
                e.task_id.as_str(),
                matches!(r, Ok(MergeOutcome::Merged { .. })),
            )
        })
        .collect();
    assert_eq!(outcomes, [("a", true), ("c", false), ("b", true)]);
    assert_eq!(merged_task_order(&repo), ["a", "b"]);
}

#[test]
fn stop_policy_leaves_the_rest_unattempted() {
    let dir = tempfile::tempdir().unwrap();
    let repo = repo_with_tasks(dir.path());
    let queue = MergeQueue::new(vec![entry("a", 1), entry("c", 2), entry("b", 3)]);
    let fence = StaticFence::new(3);
    let report = queue.merge_all(&settings(dir.path(), &fence, ConflictPolicy::Stop));
    assert_eq!(report.attempted.len(), 2);
    assert!(matches!(
        report.attempted[1].1,
        Ok(MergeOutcome::Conflicted { .. })
    ));
    assert_eq!(report.not_attempted, vec![entry("b", 3)]);
    assert_eq!(merged_task_order(&repo), ["a"]);
}
