//! In-memory merges of a branch into `main`: clean merges, fast-forwards, and every
//! kind of conflict with and without a resolver.

mod git_common;

use std::path::Path;
use std::time::Duration;

use git2::Repository;
use git_common::*;
use percy_git::{
    merge_branch, run_merge_cli, ConflictKind, GitError, MergeArgs, MergeOutcome, MergeRequest,
    ResolverCommand, StaticFence, RESOLVER_DELETE_EXIT_CODE,
};

const BASE_TEXT: &[u8] = b"one\ntwo\nthree\n";

fn merge(
    dir: &Path,
    branch: &str,
    resolver: Option<&ResolverCommand>,
    allow_fast_forward: bool,
) -> Result<MergeOutcome, GitError> {
    merge_branch(&MergeRequest {
        repo_dir: dir,
        branch,
        into: TARGET,
        resolver,
        fence: &StaticFence::new(7),
        allow_fast_forward,
        task_id: Some("t1"),
    })
}

/// `main` and `feature` both change line two of `f.txt`.
fn content_conflict(dir: &Path) -> Repository {
    let repo = init_repo(dir, &[("f.txt", Some(BASE_TEXT))]);
    commit_on(
        &repo,
        "feature",
        TARGET,
        &[("f.txt", Some(b"one\nTHEIRS\nthree\n"))],
    );
    commit_on(
        &repo,
        TARGET,
        TARGET,
        &[("f.txt", Some(b"one\nOURS\nthree\n"))],
    );
    repo
}

fn conflicted_paths(outcome: MergeOutcome) -> Vec<(String, ConflictKind, String)> {
    match outcome {
        MergeOutcome::Conflicted { paths } => paths
            .into_iter()
            .map(|p| (p.path, p.kind, p.detail))
            .collect(),
        other => panic!("expected conflicts, got {other:?}"),
    }
}

fn merged_commit(outcome: &MergeOutcome) -> git2::Oid {
    match outcome {
        MergeOutcome::Merged { commit, .. } => *commit,
        other => panic!("expected a merge commit, got {other:?}"),
    }
}

#[test]
fn clean_merge_creates_fenced_merge_commit() {
    let dir = tempfile::tempdir().unwrap();
    let repo = init_repo(
        dir.path(),
        &[("a.txt", Some(b"a\n")), ("b.txt", Some(b"b\n"))],
    );
    let feature = commit_on(
        &repo,
        "feature",
        TARGET,
        &[("b.txt", Some(b"b from feature\n"))],
    );
    let old_main = commit_on(&repo, TARGET, TARGET, &[("a.txt", Some(b"a on main\n"))]);

    let outcome = merge(dir.path(), "feature", None, false).unwrap();

    let commit = repo.find_commit(merged_commit(&outcome)).unwrap();
    assert_eq!(
        tip(&repo, TARGET),
        commit.id(),
        "target ref moved to the merge"
    );
    assert_eq!(
        commit.parent_ids().collect::<Vec<_>>(),
        vec![old_main, feature]
    );
    let message = commit.message().unwrap();
    assert!(
        message.starts_with("Merge branch 'feature' into main\n"),
        "{message}"
    );
    assert!(
        message.contains("\nPercy-Task: t1\nPercy-Fence: 7\n"),
        "{message}"
    );
    assert_eq!(
        file_at(&repo, commit.id(), "a.txt").unwrap(),
        b"a on main\n"
    );
    assert_eq!(
        file_at(&repo, commit.id(), "b.txt").unwrap(),
        b"b from feature\n"
    );
    // (How the checkout of main follows the merge: tests/git_checkout.rs.)
    assert_eq!(
        merge(dir.path(), "feature", None, false).unwrap(),
        MergeOutcome::UpToDate { tip: commit.id() },
        "merging the same branch again changes nothing"
    );
}

#[test]
fn fast_forward_only_when_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let repo = init_repo(dir.path(), &[("a.txt", Some(b"a\n"))]);
    let first = commit_on(&repo, "ff", TARGET, &[("b.txt", Some(b"b\n"))]);
    assert_eq!(
        merge(dir.path(), "ff", None, true).unwrap(),
        MergeOutcome::FastForwarded { commit: first }
    );
    assert_eq!(tip(&repo, TARGET), first);

    let second = commit_on(&repo, "ff", TARGET, &[("c.txt", Some(b"c\n"))]);
    let outcome = merge(dir.path(), "ff", None, false).unwrap();
    let commit = repo.find_commit(merged_commit(&outcome)).unwrap();
    assert_eq!(commit.parent_ids().collect::<Vec<_>>(), vec![first, second]);
}

#[test]
fn content_conflict_resolved_by_resolver_script() {
    let dir = tempfile::tempdir().unwrap();
    let repo = content_conflict(dir.path());
    let resolver = ResolverCommand::new(r#"cat "$PERCY_OURS" "$PERCY_THEIRS" > "$PERCY_OUTPUT""#);

    let outcome = merge(dir.path(), "feature", Some(&resolver), false).unwrap();

    let MergeOutcome::Merged { commit, resolved } = &outcome else {
        panic!("expected a merge, got {outcome:?}");
    };
    assert_eq!(resolved.len(), 1);
    assert_eq!(
        (resolved[0].path.as_str(), resolved[0].kind),
        ("f.txt", ConflictKind::Content)
    );
    assert_eq!(tip(&repo, TARGET), *commit);
    assert_eq!(
        file_at(&repo, *commit, "f.txt").unwrap(),
        b"one\nOURS\nthree\none\nTHEIRS\nthree\n"
    );
    let message = repo
        .find_commit(*commit)
        .unwrap()
        .message()
        .unwrap()
        .to_owned();
    assert!(
        message.contains("Resolved conflicts:\n\tf.txt (content"),
        "{message}"
    );
}

#[test]
fn resolver_sees_the_documented_environment() {
    let dir = tempfile::tempdir().unwrap();
    let repo = content_conflict(dir.path());
    let resolver = ResolverCommand::new(
        r#"{ printf '%s|%s|%s|%s|%s|' "$PERCY_CONFLICT_PATH" "$PERCY_CONFLICT_KIND" "$PERCY_TASK_ID" "$PERCY_BRANCH" "$PERCY_TARGET"; cat "$PERCY_BASE"; } > "$PERCY_OUTPUT""#,
    );
    let commit = merged_commit(&merge(dir.path(), "feature", Some(&resolver), false).unwrap());
    let mut expected = b"f.txt|content|t1|feature|main|".to_vec();
    expected.extend_from_slice(BASE_TEXT);
    assert_eq!(file_at(&repo, commit, "f.txt").unwrap(), expected);
}

#[test]
fn resolver_output_with_conflict_markers_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let repo = content_conflict(dir.path());
    let before = tip(&repo, TARGET);
    let resolver = ResolverCommand::new(
        r#"printf 'one\n<<<<<<< ours\nOURS\n=======\nTHEIRS\n>>>>>>> theirs\nthree\n' > "$PERCY_OUTPUT""#,
    );
    let paths = conflicted_paths(merge(dir.path(), "feature", Some(&resolver), false).unwrap());
    assert_eq!(paths.len(), 1);
    assert_eq!(
        (paths[0].0.as_str(), paths[0].1),
        ("f.txt", ConflictKind::Content)
    );
    assert!(paths[0].2.contains("conflict markers"), "{}", paths[0].2);
    assert_eq!(tip(&repo, TARGET), before, "target untouched");
}

#[test]
fn failing_or_silent_or_slow_resolver_leaves_target_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let repo = content_conflict(dir.path());
    let before = tip(&repo, TARGET);
    let slow = ResolverCommand {
        command: r#"sleep 5; cat "$PERCY_OURS" > "$PERCY_OUTPUT""#.into(),
        timeout: Duration::from_millis(200),
    };
    for (resolver, why) in [
        (
            ResolverCommand::new("echo 'no idea' >&2; exit 1"),
            "no idea",
        ),
        (ResolverCommand::new("true"), "wrote nothing"),
        (slow, "did not finish"),
    ] {
        let paths = conflicted_paths(merge(dir.path(), "feature", Some(&resolver), false).unwrap());
        assert!(
            paths[0].2.contains(why),
            "{}: {}",
            resolver.command,
            paths[0].2
        );
        assert_eq!(tip(&repo, TARGET), before, "target untouched");
    }
}

#[test]
fn any_conflict_without_resolver_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let repo = content_conflict(dir.path());
    let before = tip(&repo, TARGET);
    let paths = conflicted_paths(merge(dir.path(), "feature", None, false).unwrap());
    assert_eq!(paths.len(), 1);
    assert!(paths[0].2.contains("no resolver"), "{}", paths[0].2);
    assert_eq!(tip(&repo, TARGET), before);
}

#[test]
fn add_add_conflict() {
    let dir = tempfile::tempdir().unwrap();
    let repo = init_repo(dir.path(), &[("a.txt", Some(b"a\n"))]);
    commit_on(&repo, "feature", TARGET, &[("new.txt", Some(b"theirs\n"))]);
    commit_on(&repo, TARGET, TARGET, &[("new.txt", Some(b"ours\n"))]);

    let paths = conflicted_paths(merge(dir.path(), "feature", None, false).unwrap());
    assert_eq!(paths[0].0, "new.txt");
    assert_eq!(paths[0].1, ConflictKind::AddAdd);

    // No base version: PERCY_BASE is empty.
    let resolver = ResolverCommand::new(
        r#"test -z "$PERCY_BASE" && cat "$PERCY_THEIRS" "$PERCY_OURS" > "$PERCY_OUTPUT""#,
    );
    let commit = merged_commit(&merge(dir.path(), "feature", Some(&resolver), false).unwrap());
    assert_eq!(
        file_at(&repo, commit, "new.txt").unwrap(),
        b"theirs\nours\n"
    );
}

#[test]
fn modify_delete_and_delete_modify_conflicts() {
    let dir = tempfile::tempdir().unwrap();
    let repo = init_repo(
        dir.path(),
        &[("kept.txt", Some(BASE_TEXT)), ("gone.txt", Some(BASE_TEXT))],
    );
    // The branch deletes kept.txt, which main modifies; main deletes gone.txt, which
    // the branch modifies.
    commit_on(
        &repo,
        "feature",
        TARGET,
        &[
            ("kept.txt", None),
            ("gone.txt", Some(b"one\nbranch\nthree\n")),
        ],
    );
    commit_on(
        &repo,
        TARGET,
        TARGET,
        &[
            ("kept.txt", Some(b"one\nmain\nthree\n")),
            ("gone.txt", None),
        ],
    );

    let paths = conflicted_paths(merge(dir.path(), "feature", None, false).unwrap());
    assert_eq!(
        paths
            .iter()
            .map(|p| (p.0.as_str(), p.1))
            .collect::<Vec<_>>(),
        vec![
            ("gone.txt", ConflictKind::DeleteModify),
            ("kept.txt", ConflictKind::ModifyDelete)
        ]
    );

    // Resolver: whichever side deleted the file wins.
    let resolver = ResolverCommand::new(format!(
        r#"if [ -z "$PERCY_OURS" ] || [ -z "$PERCY_THEIRS" ]; then exit {RESOLVER_DELETE_EXIT_CODE}; fi; exit 1"#
    ));
    let outcome = merge(dir.path(), "feature", Some(&resolver), false).unwrap();
    let commit = merged_commit(&outcome);
    assert_eq!(file_at(&repo, commit, "kept.txt"), None);
    assert_eq!(file_at(&repo, commit, "gone.txt"), None);
    let MergeOutcome::Merged { resolved, .. } = outcome else {
        unreachable!()
    };
    assert!(
        resolved.iter().all(|p| p.detail.contains("deleted")),
        "{resolved:?}"
    );
}

#[test]
fn delete_request_with_output_is_not_a_deletion() {
    let dir = tempfile::tempdir().unwrap();
    let repo = init_repo(dir.path(), &[("f.txt", Some(BASE_TEXT))]);
    commit_on(&repo, "feature", TARGET, &[("f.txt", None)]);
    commit_on(
        &repo,
        TARGET,
        TARGET,
        &[("f.txt", Some(b"one\nmain\nthree\n"))],
    );
    let resolver = ResolverCommand::new(format!(
        r#"echo half > "$PERCY_OUTPUT"; exit {RESOLVER_DELETE_EXIT_CODE}"#
    ));
    let paths = conflicted_paths(merge(dir.path(), "feature", Some(&resolver), false).unwrap());
    assert_eq!(paths[0].1, ConflictKind::ModifyDelete);
    assert!(paths[0].2.contains("also wrote"), "{}", paths[0].2);
}

#[test]
fn binary_conflict_is_never_merged_textually() {
    let dir = tempfile::tempdir().unwrap();
    let repo = init_repo(dir.path(), &[("img.bin", Some(b"\x89PNG\0base\n"))]);
    commit_on(
        &repo,
        "feature",
        TARGET,
        &[("img.bin", Some(b"\x89PNG\0theirs\n"))],
    );
    commit_on(
        &repo,
        TARGET,
        TARGET,
        &[("img.bin", Some(b"\x89PNG\0ours\n"))],
    );
    let before = tip(&repo, TARGET);

    let paths = conflicted_paths(merge(dir.path(), "feature", None, false).unwrap());
    assert_eq!(
        (paths[0].0.as_str(), paths[0].1),
        ("img.bin", ConflictKind::Binary)
    );
    assert_eq!(tip(&repo, TARGET), before);

    let theirs = ResolverCommand::new(
        r#"[ "$PERCY_CONFLICT_KIND" = binary ] && cp "$PERCY_THEIRS" "$PERCY_OUTPUT""#,
    );
    let commit = merged_commit(&merge(dir.path(), "feature", Some(&theirs), false).unwrap());
    assert_eq!(
        file_at(&repo, commit, "img.bin").unwrap(),
        b"\x89PNG\0theirs\n"
    );
}

#[test]
fn rename_rename_conflict_is_reported_and_resolvable_per_path() {
    let dir = tempfile::tempdir().unwrap();
    let text: &[u8] = b"l1\nl2\nl3\nl4\nl5\nl6\nl7\nl8\n";
    let repo = init_repo(dir.path(), &[("a.txt", Some(text))]);
    commit_on(
        &repo,
        "feature",
        TARGET,
        &[("a.txt", None), ("c.txt", Some(text))],
    );
    commit_on(
        &repo,
        TARGET,
        TARGET,
        &[("a.txt", None), ("b.txt", Some(text))],
    );
    let before = tip(&repo, TARGET);

    let paths = conflicted_paths(merge(dir.path(), "feature", None, false).unwrap());
    assert_eq!(
        paths
            .iter()
            .map(|p| (p.0.as_str(), p.1))
            .collect::<Vec<_>>(),
        vec![
            ("a.txt", ConflictKind::Rename),
            ("b.txt", ConflictKind::Rename),
            ("c.txt", ConflictKind::Rename)
        ]
    );
    assert_eq!(tip(&repo, TARGET), before);

    // Keep the target's name, drop the others.
    let ours_name = ResolverCommand::new(format!(
        r#"if [ -n "$PERCY_OURS" ]; then cp "$PERCY_OURS" "$PERCY_OUTPUT"; else exit {RESOLVER_DELETE_EXIT_CODE}; fi"#
    ));
    let commit = merged_commit(&merge(dir.path(), "feature", Some(&ours_name), false).unwrap());
    assert_eq!(file_at(&repo, commit, "b.txt").unwrap(), text);
    assert_eq!(file_at(&repo, commit, "a.txt"), None);
    assert_eq!(file_at(&repo, commit, "c.txt"), None);
}

#[test]
fn file_directory_clash_is_left_to_a_person() {
    let dir = tempfile::tempdir().unwrap();
    let repo = init_repo(dir.path(), &[("a.txt", Some(b"a\n"))]);
    commit_on(&repo, "feature", TARGET, &[("x/y.txt", Some(b"nested\n"))]);
    commit_on(&repo, TARGET, TARGET, &[("x", Some(b"a file\n"))]);
    let resolver = ResolverCommand::new(r#"cat "$PERCY_OURS" > "$PERCY_OUTPUT""#);
    let paths = conflicted_paths(merge(dir.path(), "feature", Some(&resolver), false).unwrap());
    assert_eq!(
        (paths[0].0.as_str(), paths[0].1),
        ("x", ConflictKind::DirectoryFile)
    );
}

#[test]
fn missing_branch_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    init_repo(dir.path(), &[("a.txt", Some(b"a\n"))]);
    assert!(matches!(
        merge(dir.path(), "nope", None, false),
        Err(GitError::BranchNotFound(b)) if b == "nope"
    ));
}

#[test]
fn cli_entry_point_merges_unfenced_with_a_resolver() {
    let dir = tempfile::tempdir().unwrap();
    let repo = content_conflict(dir.path());
    let mut args = MergeArgs::new(dir.path(), "feature", TARGET);
    args.resolver = Some(r#"cp "$PERCY_THEIRS" "$PERCY_OUTPUT""#.into());
    let report = run_merge_cli(args).unwrap();
    assert!(!report.is_conflicted());
    let commit = merged_commit(&report.outcome);
    assert_eq!(tip(&repo, TARGET), commit);
    let message = repo
        .find_commit(commit)
        .unwrap()
        .message()
        .unwrap()
        .to_owned();
    assert!(
        !message.contains("Percy-Fence"),
        "an unfenced merge claims no token: {message}"
    );
    assert!(
        report.to_string().starts_with("merged feature into main: "),
        "{report}"
    );
}
