//! `percyctl merge` as a user runs it: a clean merge exits 0 and moves the target, an
//! unresolved conflict exits 1 and leaves the target untouched.

// The repository fixtures of percy-git's tests, shared rather than copied.
#[path = "../../git/tests/git_common/mod.rs"]
mod git_common;

use std::process::Command;

use git_common::{commit_on, init_repo, tip, tip_commit, TARGET};

fn percyctl_merge(repo: &std::path::Path, branch: &str) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_percyctl"))
        .args(["-o", "json", "merge", "--repo"])
        .arg(repo)
        .args(["--branch", branch, "--into", TARGET])
        .output()
        .expect("run percyctl")
}

#[test]
fn a_clean_merge_exits_0_and_makes_a_merge_commit() {
    let dir = tempfile::tempdir().unwrap();
    let repo = init_repo(dir.path(), &[("a.txt", Some(b"a\n"))]);
    commit_on(&repo, "feature", TARGET, &[("b.txt", Some(b"b\n"))]);
    commit_on(&repo, TARGET, TARGET, &[("c.txt", Some(b"c\n"))]);

    let out = percyctl_merge(dir.path(), "feature");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["outcome"], "merged");
    let merged = tip_commit(&repo, TARGET);
    assert_eq!(merged.parent_count(), 2);
    assert_eq!(report["commit"], merged.id().to_string());
}

#[test]
fn an_unresolved_conflict_exits_1_and_leaves_the_target() {
    let dir = tempfile::tempdir().unwrap();
    let repo = init_repo(dir.path(), &[("a.txt", Some(b"base\n"))]);
    commit_on(&repo, "feature", TARGET, &[("a.txt", Some(b"theirs\n"))]);
    let before = commit_on(&repo, TARGET, TARGET, &[("a.txt", Some(b"ours\n"))]);

    let out = percyctl_merge(dir.path(), "feature");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("unresolved conflicts"), "{stderr}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["outcome"], "conflicted");
    assert_eq!(report["paths"][0]["path"], "a.txt");
    assert_eq!(tip(&repo, TARGET), before);
}
