//! Task worktrees: create, commit everything, remove, and recovery after a crash.

mod git_common;

use std::fs;
use std::path::Path;

use git2::{BranchType, Repository};
use git_common::*;
use percy_git::{prune_stale, CommitOutcome, GitError, TaskWorktree};

fn base_repo(dir: &Path) -> Repository {
    init_repo(
        dir,
        &[
            (".gitignore", Some(b"*.log\n")),
            ("README", Some(b"readme\n")),
            ("old.txt", Some(b"old\n")),
        ],
    )
}

fn branch_tip(repo: &Repository, branch: &str) -> git2::Oid {
    repo.find_branch(branch, BranchType::Local)
        .unwrap()
        .get()
        .peel_to_commit()
        .unwrap()
        .id()
}

#[test]
fn commit_all_records_every_change_with_the_task_trailer() {
    let dir = tempfile::tempdir().unwrap();
    let repo = base_repo(dir.path());
    let main_before = tip(&repo, TARGET);

    let wt = TaskWorktree::create(dir.path(), "t1", TARGET).unwrap();
    assert_eq!(wt.branch(), "percy/t1");
    assert!(
        wt.path().starts_with(dir.path().join(".git")),
        "{}",
        wt.path().display()
    );
    assert_eq!(fs::read(wt.path().join("README")).unwrap(), b"readme\n");
    assert_eq!(branch_tip(&repo, "percy/t1"), main_before);

    assert_eq!(
        wt.commit_all("Agent Smith", "smith@agents", "nothing yet")
            .unwrap(),
        CommitOutcome::NothingToCommit
    );

    fs::write(wt.path().join("new.txt"), b"new\n").unwrap();
    fs::write(wt.path().join("README"), b"readme, edited\n").unwrap();
    fs::remove_file(wt.path().join("old.txt")).unwrap();
    fs::write(wt.path().join("debug.log"), b"ignored\n").unwrap();
    let CommitOutcome::Committed(id) = wt
        .commit_all("Agent Smith", "smith@agents", "Implement the thing")
        .unwrap()
    else {
        panic!("expected a commit");
    };

    let commit = repo.find_commit(id).unwrap();
    assert_eq!(branch_tip(&repo, "percy/t1"), id);
    assert_eq!(commit.parent_ids().collect::<Vec<_>>(), vec![main_before]);
    assert_eq!(commit.author().name().unwrap(), "Agent Smith");
    assert_eq!(commit.author().email().unwrap(), "smith@agents");
    assert_eq!(
        commit.message().unwrap(),
        "Implement the thing\n\nPercy-Task: t1\n"
    );
    assert_eq!(file_at(&repo, id, "new.txt").unwrap(), b"new\n");
    assert_eq!(file_at(&repo, id, "README").unwrap(), b"readme, edited\n");
    assert_eq!(file_at(&repo, id, "old.txt"), None);
    assert_eq!(
        file_at(&repo, id, "debug.log"),
        None,
        ".gitignore respected"
    );

    let path = wt.path().to_owned();
    wt.remove().unwrap();
    assert!(!path.exists());
    assert_eq!(repo.worktrees().unwrap().len(), 0);
    assert_eq!(
        branch_tip(&repo, "percy/t1"),
        id,
        "the branch outlives the worktree"
    );
    // The user's checkout saw none of it.
    assert_eq!(tip(&repo, TARGET), main_before);
    assert!(dir.path().join("old.txt").exists());
    assert!(!dir.path().join("new.txt").exists());
}

#[test]
fn crashed_worktree_is_pruned_and_its_branch_reusable() {
    let dir = tempfile::tempdir().unwrap();
    let repo = base_repo(dir.path());
    let wt = TaskWorktree::create(dir.path(), "t2", TARGET).unwrap();
    fs::write(wt.path().join("half-done.txt"), b"...\n").unwrap();
    wt.commit_all("a", "a@a", "partial").unwrap();
    let path = wt.path().to_owned();
    // The worker dies: the worktree and its checked-out branch stay behind (and a
    // person even ran `git worktree lock` on it).
    drop(wt);
    assert!(path.exists());
    repo.find_worktree("percy-t2")
        .unwrap()
        .lock(Some("left by a crash"))
        .unwrap();
    let main_tip = tip_commit(&repo, TARGET);
    let branch = repo.find_branch("percy/t2", BranchType::Local).unwrap();
    let mut opts = git2::WorktreeAddOptions::new();
    opts.reference(Some(branch.get()));
    let elsewhere = tempfile::tempdir().unwrap();
    assert!(
        repo.worktree("other", &elsewhere.path().join("wt"), Some(&opts))
            .is_err(),
        "the stale worktree blocks checking out its branch anywhere else"
    );

    assert_eq!(prune_stale(dir.path()).unwrap(), vec!["t2".to_owned()]);
    assert!(!path.exists());
    assert_eq!(repo.worktrees().unwrap().len(), 0);
    assert!(
        prune_stale(dir.path()).unwrap().is_empty(),
        "nothing left to prune"
    );

    // The retried task starts over from the base on the same branch.
    let wt = TaskWorktree::create(dir.path(), "t2", TARGET).unwrap();
    assert_eq!(branch_tip(&repo, "percy/t2"), main_tip.id());
    assert!(!wt.path().join("half-done.txt").exists());
    wt.remove().unwrap();
}

#[test]
fn worktree_of_a_crash_during_create_is_pruned() {
    let dir = tempfile::tempdir().unwrap();
    base_repo(dir.path());
    // Only the directory got written before the crash; git never registered it.
    let leftover = dir.path().join(".git/percy-worktrees/t4");
    fs::create_dir_all(&leftover).unwrap();
    fs::write(leftover.join("junk"), b"x").unwrap();
    assert_eq!(prune_stale(dir.path()).unwrap(), vec!["t4".to_owned()]);
    assert!(!leftover.exists());
}

#[test]
fn live_worktrees_and_user_worktrees_are_not_pruned() {
    let dir = tempfile::tempdir().unwrap();
    let repo = base_repo(dir.path());
    let live = TaskWorktree::create(dir.path(), "t3", TARGET).unwrap();
    let user_dir = tempfile::tempdir().unwrap();
    let user_wt = user_dir.path().join("mine");
    repo.worktree("mine", &user_wt, None).unwrap();

    assert!(prune_stale(dir.path()).unwrap().is_empty());
    assert!(live.path().exists());
    assert!(user_wt.exists());
    assert!(matches!(
        TaskWorktree::create(dir.path(), "t3", TARGET),
        Err(GitError::WorktreeInUse(id)) if id == "t3"
    ));
    live.remove().unwrap();
    assert!(repo.find_worktree("mine").is_ok());
}

#[test]
fn bad_task_id_and_missing_base_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    base_repo(dir.path());
    assert!(matches!(
        TaskWorktree::create(dir.path(), "../escape", TARGET),
        Err(GitError::InvalidTaskId(_))
    ));
    assert!(matches!(
        TaskWorktree::create(dir.path(), "t5", "no-such-branch"),
        Err(GitError::BranchNotFound(b)) if b == "no-such-branch"
    ));
}

/// Workers sharing a repository make and remove their task worktrees at the same time.
/// libgit2 refuses a branch whose HEAD it finds checked out, and takes a HEAD it cannot
/// read (another worktree half made) as checked out: without one lock around worktree
/// changes, some of these fail with "reference ... is already checked out".
#[test]
fn worktrees_of_many_tasks_come_and_go_at_once() {
    const THREADS: usize = 8;
    const ROUNDS: usize = 15;
    let dir = tempfile::tempdir().unwrap();
    base_repo(dir.path());
    let failures: Vec<String> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..THREADS)
            .map(|t| {
                let dir = dir.path();
                scope.spawn(move || {
                    let mut failures = Vec::new();
                    for round in 0..ROUNDS {
                        let id = format!("w{t}-r{round}");
                        match TaskWorktree::create(dir, &id, TARGET) {
                            Ok(worktree) => {
                                if let Err(e) = worktree.remove() {
                                    failures.push(format!("remove {id}: {e}"));
                                }
                            }
                            Err(e) => failures.push(format!("create {id}: {e}")),
                        }
                    }
                    failures
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect()
    });
    assert!(failures.is_empty(), "{failures:#?}");
}
