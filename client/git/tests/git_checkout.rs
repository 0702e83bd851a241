//! A merge into a branch that is checked out: the checkout follows when it is clean and the
//! merge is refused (nothing moved) when it is not — git's `updateInstead` rule.

mod git_common;

use std::fs;
use std::path::Path;

use git2::{Repository, Status, StatusOptions};
use git_common::*;
use percy_git::{merge_branch, GitError, MergeOutcome, MergeRequest, StaticFence};

fn merge(dir: &Path) -> Result<MergeOutcome, GitError> {
    merge_branch(&MergeRequest {
        repo_dir: dir,
        branch: "feature",
        into: TARGET,
        resolver: None,
        fence: &StaticFence::new(7),
        allow_fast_forward: false,
        task_id: None,
    })
}

/// `main` (checked out) changes a.txt, `feature` changes b.txt and adds c.txt.
fn diverged(dir: &Path) -> Repository {
    let repo = init_repo(dir, &[("a.txt", Some(b"a\n")), ("b.txt", Some(b"b\n"))]);
    commit_on(
        &repo,
        "feature",
        TARGET,
        &[
            ("b.txt", Some(b"b from feature\n")),
            ("c.txt", Some(b"new\n")),
        ],
    );
    commit_on(&repo, TARGET, TARGET, &[("a.txt", Some(b"a on main\n"))]);
    repo
}

/// What `git status` would list (tracked changes and untracked files).
fn status(repo: &Repository) -> Vec<(String, Status)> {
    let mut options = StatusOptions::new();
    options.include_untracked(true);
    repo.statuses(Some(&mut options))
        .unwrap()
        .iter()
        .map(|s| (s.path().unwrap().to_owned(), s.status()))
        .collect()
}

#[test]
fn a_clean_checkout_of_the_target_follows_the_merge() {
    let dir = tempfile::tempdir().unwrap();
    let repo = diverged(dir.path());
    let outcome = merge(dir.path()).unwrap();
    assert!(
        matches!(outcome, MergeOutcome::Merged { .. }),
        "{outcome:?}"
    );

    assert_eq!(fs::read(dir.path().join("a.txt")).unwrap(), b"a on main\n");
    assert_eq!(
        fs::read(dir.path().join("b.txt")).unwrap(),
        b"b from feature\n"
    );
    assert_eq!(fs::read(dir.path().join("c.txt")).unwrap(), b"new\n");
    let repo = Repository::open(repo.path()).unwrap();
    assert_eq!(status(&repo), vec![], "git status is clean after the merge");
}

#[test]
fn uncommitted_changes_refuse_the_merge_and_nothing_moves() {
    let dir = tempfile::tempdir().unwrap();
    let repo = diverged(dir.path());
    let before = tip(&repo, TARGET);
    // The person's edit touches a file the merge does not change.
    fs::write(dir.path().join("a.txt"), b"work in progress\n").unwrap();
    let index_before = fs::read(dir.path().join(".git/index")).unwrap();

    let err = merge(dir.path()).unwrap_err();
    assert!(matches!(err, GitError::CheckoutDirty { .. }), "{err:?}");
    let text = err.to_string();
    assert!(text.contains("\"main\""), "{text}");
    assert!(text.contains(&dir.path().display().to_string()), "{text}");
    assert!(text.contains("a.txt"), "{text}");

    assert_eq!(tip(&repo, TARGET), before, "the branch did not move");
    assert_eq!(
        fs::read(dir.path().join("a.txt")).unwrap(),
        b"work in progress\n"
    );
    assert_eq!(fs::read(dir.path().join("b.txt")).unwrap(), b"b\n");
    assert!(!dir.path().join("c.txt").exists());
    assert_eq!(
        fs::read(dir.path().join(".git/index")).unwrap(),
        index_before
    );
}

#[test]
fn staged_changes_refuse_the_merge() {
    let dir = tempfile::tempdir().unwrap();
    let repo = diverged(dir.path());
    let before = tip(&repo, TARGET);
    fs::write(dir.path().join("a.txt"), b"staged\n").unwrap();
    let mut index = repo.index().unwrap();
    index.add_path(Path::new("a.txt")).unwrap();
    index.write().unwrap();

    let err = merge(dir.path()).unwrap_err();
    assert!(matches!(err, GitError::CheckoutDirty { .. }), "{err:?}");
    assert_eq!(tip(&repo, TARGET), before);
}

#[test]
fn an_untracked_file_in_the_way_refuses_the_merge_and_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let repo = diverged(dir.path());
    let before = tip(&repo, TARGET);
    fs::write(dir.path().join("c.txt"), b"mine, untracked\n").unwrap();

    let err = merge(dir.path()).unwrap_err();
    assert!(matches!(err, GitError::CheckoutDirty { .. }), "{err:?}");
    assert_eq!(tip(&repo, TARGET), before);
    assert_eq!(
        fs::read(dir.path().join("c.txt")).unwrap(),
        b"mine, untracked\n"
    );
    assert_eq!(
        fs::read(dir.path().join("b.txt")).unwrap(),
        b"b\n",
        "nothing written"
    );
}

#[test]
fn untracked_files_out_of_the_way_do_not_matter() {
    let dir = tempfile::tempdir().unwrap();
    let repo = diverged(dir.path());
    fs::write(dir.path().join("notes.txt"), b"scratch\n").unwrap();
    merge(dir.path()).unwrap();
    assert_eq!(fs::read(dir.path().join("c.txt")).unwrap(), b"new\n");
    assert_eq!(
        fs::read(dir.path().join("notes.txt")).unwrap(),
        b"scratch\n"
    );
    let repo = Repository::open(repo.path()).unwrap();
    assert_eq!(
        status(&repo),
        vec![("notes.txt".to_owned(), Status::WT_NEW)]
    );
}

#[test]
fn a_linked_worktree_of_the_target_follows_too_and_other_checkouts_are_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let repo = diverged(dir.path());
    // The main checkout moves to another branch; main is checked out in a linked worktree.
    let other = repo
        .branch("other", &tip_commit(&repo, TARGET), false)
        .unwrap();
    repo.set_head(other.get().name().unwrap()).unwrap();
    let linked_dir = tempfile::tempdir().unwrap();
    let linked_path = linked_dir.path().join("main-wt");
    let main_ref = repo.find_reference("refs/heads/main").unwrap();
    let mut options = git2::WorktreeAddOptions::new();
    options.reference(Some(&main_ref));
    let worktree = repo
        .worktree("main-wt", &linked_path, Some(&options))
        .unwrap();
    let linked = Repository::open_from_worktree(&worktree).unwrap();
    assert_eq!(status(&linked), vec![]);

    merge(dir.path()).unwrap();

    assert_eq!(fs::read(linked_path.join("c.txt")).unwrap(), b"new\n");
    assert_eq!(status(&Repository::open(&linked_path).unwrap()), vec![]);
    assert!(
        !dir.path().join("c.txt").exists(),
        "the checkout of 'other' is untouched"
    );
}
