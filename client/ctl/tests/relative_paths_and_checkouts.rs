//! What a user trying the README runs: `--exec ./agent.sh` and `--resolver ./resolve.sh`
//! next to them, and merges into the branch their checkout is on.

mod ctl;
#[path = "../../git/tests/git_common/mod.rs"]
mod git_common;
#[path = "../../tests/support/mod.rs"]
mod support;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use ctl::{percyctl, percyctl_command, ChildGuard};
use git2::{Repository, StatusOptions};
use git_common::{commit_on, file_at, init_repo, tip, TARGET};
use support::TestCluster;

/// How long a worker may take to run and merge a task on a loaded 2-core machine.
const PATIENCE: Duration = Duration::from_secs(90);

/// Writes an executable shell script.
fn script(path: &Path, body: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

fn merge_in(cwd: &Path, repo: &Path, extra: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_percyctl"))
        .current_dir(cwd)
        .args(["-o", "json", "merge", "--repo"])
        .arg(repo)
        .args(["--branch", "feature", "--into", TARGET])
        .args(extra)
        .output()
        .expect("run percyctl")
}

fn is_clean(repo: &Path) -> bool {
    let repo = Repository::open(repo).unwrap();
    let mut options = StatusOptions::new();
    options.include_untracked(true);
    let clean = repo.statuses(Some(&mut options)).unwrap().is_empty();
    clean
}

#[test]
fn a_relative_resolver_is_found_in_the_directory_percyctl_runs_in() {
    let home = tempfile::tempdir().unwrap();
    script(
        &home.path().join("resolve.sh"),
        r#"cp "$PERCY_THEIRS" "$PERCY_OUTPUT""#,
    );
    let dir = tempfile::tempdir().unwrap();
    let repo = init_repo(dir.path(), &[("a.txt", Some(b"base\n"))]);
    commit_on(&repo, "feature", TARGET, &[("a.txt", Some(b"theirs\n"))]);
    commit_on(&repo, TARGET, TARGET, &[("a.txt", Some(b"ours\n"))]);

    let out = merge_in(home.path(), dir.path(), &["--resolver", "./resolve.sh"]);
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        file_at(&repo, tip(&repo, TARGET), "a.txt").unwrap(),
        b"theirs\n"
    );
    // The checkout of main followed the merge.
    assert_eq!(
        std::fs::read(dir.path().join("a.txt")).unwrap(),
        b"theirs\n"
    );
    assert!(is_clean(dir.path()));
}

#[test]
fn merging_into_a_checkout_with_uncommitted_changes_exits_1_and_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let repo = init_repo(dir.path(), &[("a.txt", Some(b"a\n"))]);
    commit_on(&repo, "feature", TARGET, &[("b.txt", Some(b"b\n"))]);
    let before = tip(&repo, TARGET);
    std::fs::write(dir.path().join("a.txt"), b"edited\n").unwrap();

    let out = merge_in(dir.path(), dir.path(), &[]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("branch \"main\" is checked out in"),
        "{stderr}"
    );
    assert!(
        stderr.contains(&dir.path().display().to_string()),
        "{stderr}"
    );
    assert!(stderr.contains("a.txt"), "{stderr}");
    assert_eq!(tip(&repo, TARGET), before);
    assert_eq!(
        std::fs::read(dir.path().join("a.txt")).unwrap(),
        b"edited\n"
    );
}

#[test]
fn a_git_worker_runs_a_relative_exec_and_its_merge_updates_the_checkout() {
    let cluster = TestCluster::start(1);
    let ep = cluster.endpoints_arg();
    let home = tempfile::tempdir().unwrap();
    script(
        &home.path().join("agent.sh"),
        r#"echo "done by $PERCY_AGENT_NAME" > result.txt"#,
    );
    let dir = tempfile::tempdir().unwrap();
    let repo = init_repo(dir.path(), &[("a.txt", Some(b"a\n"))]);
    let repo_arg = dir.path().display().to_string();

    let mut worker = ChildGuard(
        percyctl_command(
            &ep,
            &[
                "worker",
                "--name",
                "w1",
                "--repo",
                &repo_arg,
                "--exec",
                "./agent.sh",
                "--ttl",
                "1m",
            ],
        )
        .current_dir(home.path())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn the worker"),
    );
    percyctl(
        &ep,
        &["task", "submit", "--id", "t1", "--title", "write it"],
    )
    .ok();

    let started = Instant::now();
    let task = loop {
        let task = percyctl(&ep, &["-o", "json", "task", "get", "t1"])
            .ok()
            .json();
        let status = task["task"]["status"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        if status == "completed" || status == "failed" {
            break task;
        }
        assert!(
            started.elapsed() < PATIENCE,
            "t1 still {status} after {PATIENCE:?}: {task}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(task["task"]["status"], "completed", "{task}");
    assert_eq!(
        file_at(&repo, tip(&repo, TARGET), "result.txt").unwrap(),
        b"done by w1\n"
    );
    assert_eq!(
        std::fs::read(dir.path().join("result.txt")).unwrap(),
        b"done by w1\n",
        "the checkout of main followed the worker's merge"
    );
    worker.0.kill().ok();
}
