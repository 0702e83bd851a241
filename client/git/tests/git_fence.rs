//! Fenced merges: a merge that lost its lock never moves the target, and concurrent
//! merges into one target never lose a commit.

mod git_common;

use std::path::Path;
use std::thread;

use git2::Repository;
use git_common::*;
use percy_git::{
    merge_branch, tip_fence_token, GitError, MergeFence, MergeOutcome, MergeRequest, StaticFence,
};

fn merge(dir: &Path, branch: &str, fence: &dyn MergeFence) -> Result<MergeOutcome, GitError> {
    merge_branch(&MergeRequest {
        repo_dir: dir,
        branch,
        into: TARGET,
        resolver: None,
        fence,
        allow_fast_forward: false,
        task_id: Some(branch),
    })
}

/// A repository with `count` branches `b0..`, each adding its own file.
fn repo_with_branches(dir: &Path, count: usize) -> (Repository, Vec<git2::Oid>) {
    let repo = init_repo(dir, &[("README", Some(b"readme\n"))]);
    let tips = (0..count)
        .map(|i| {
            let file = format!("file{i}.txt");
            commit_on(
                &repo,
                &format!("b{i}"),
                TARGET,
                &[(file.as_str(), Some(b"x\n"))],
            )
        })
        .collect();
    (repo, tips)
}

#[test]
fn older_fence_token_than_the_tip_does_not_move_the_ref() {
    let dir = tempfile::tempdir().unwrap();
    let (repo, _) = repo_with_branches(dir.path(), 2);
    merge(dir.path(), "b0", &TestFence::new(5)).unwrap();
    let tip_after_first = tip(&repo, TARGET);
    assert_eq!(
        tip_fence_token(&repo, &tip_commit(&repo, TARGET)).unwrap(),
        5
    );

    let err = merge(dir.path(), "b1", &TestFence::new(3)).unwrap_err();
    assert!(matches!(err, GitError::Fenced { ours: 3, tip: 5 }), "{err}");
    assert_eq!(tip(&repo, TARGET), tip_after_first);

    // The fence token is found through unfenced commits on top of the tip too.
    commit_on(&repo, TARGET, TARGET, &[("hotfix.txt", Some(b"h\n"))]);
    let err = merge(dir.path(), "b1", &TestFence::new(4)).unwrap_err();
    assert!(matches!(err, GitError::Fenced { ours: 4, tip: 5 }), "{err}");

    // A newer holder merges fine, and so does the same grant again.
    merge(dir.path(), "b1", &TestFence::new(5)).unwrap();
    assert_eq!(
        tip_fence_token(&repo, &tip_commit(&repo, TARGET)).unwrap(),
        5
    );
}

#[test]
fn lost_lock_does_not_move_the_ref() {
    let dir = tempfile::tempdir().unwrap();
    let (repo, _) = repo_with_branches(dir.path(), 1);
    let before = tip(&repo, TARGET);
    // The agent was paused past its TTL: its token is still the newest, but the
    // lock is gone by the time the ref would move.
    let fence = TestFence::new(9);
    fence.lose();
    let err = merge(dir.path(), "b0", &fence).unwrap_err();
    assert!(matches!(err, GitError::LockLost), "{err}");
    assert_eq!(tip(&repo, TARGET), before);
}

#[test]
fn fence_that_cannot_be_checked_does_not_move_the_ref() {
    struct Unreachable;
    impl MergeFence for Unreachable {
        fn token(&self) -> u64 {
            1
        }
        fn still_held(&self) -> Result<bool, percy_git::FenceError> {
            Err("cluster unreachable".into())
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let (repo, _) = repo_with_branches(dir.path(), 1);
    let before = tip(&repo, TARGET);
    let err = merge(dir.path(), "b0", &Unreachable).unwrap_err();
    assert!(matches!(err, GitError::FenceCheck(_)), "{err}");
    assert_eq!(tip(&repo, TARGET), before);
}

#[test]
fn merges_serialised_by_the_lock_never_lose_a_commit() {
    const BRANCHES: usize = 6;
    let dir = tempfile::tempdir().unwrap();
    let (repo, tips) = repo_with_branches(dir.path(), BRANCHES);
    let lock = InMemoryLock::default();
    thread::scope(|s| {
        for i in 0..BRANCHES {
            let (lock, dir) = (&lock, dir.path());
            s.spawn(move || {
                let guard = lock.acquire();
                let outcome = merge(dir, &format!("b{i}"), &guard).unwrap();
                assert!(
                    matches!(outcome, MergeOutcome::Merged { .. }),
                    "{outcome:?}"
                );
            });
        }
    });
    let final_tip = tip(&repo, TARGET);
    for t in tips {
        assert!(reaches(&repo, final_tip, t), "branch commit {t} lost");
    }
    // The last grant's token is on the tip.
    assert_eq!(
        tip_fence_token(&repo, &tip_commit(&repo, TARGET)).unwrap(),
        BRANCHES as u64
    );
}

#[test]
fn unlocked_concurrent_merges_are_kept_by_compare_and_swap() {
    // Fewer writers than MAX_MERGE_ATTEMPTS: a merge only loses a compare-and-swap
    // to a writer that is mid-update or has just succeeded, so each gets through.
    const BRANCHES: usize = 4;
    let dir = tempfile::tempdir().unwrap();
    let (repo, tips) = repo_with_branches(dir.path(), BRANCHES);
    // No lock at all: every thread computes its merge on whatever tip it saw, and
    // only the compare-and-swap (with recomputation on failure) keeps them apart.
    thread::scope(|s| {
        for i in 0..BRANCHES {
            let dir = dir.path();
            s.spawn(move || {
                merge(dir, &format!("b{i}"), &StaticFence::new(0)).unwrap();
            });
        }
    });
    let final_tip = tip(&repo, TARGET);
    for t in tips {
        assert!(reaches(&repo, final_tip, t), "branch commit {t} lost");
    }
}
