//! GitHub issues → tasks → branches → pull requests, end to end: signed `issues` deliveries
//! (made here) to `POST /v1/webhooks/github` become tasks; a git-mode worker with
//! `--push origin` and `--on-complete 'gh pr create ...'` runs them, pushes each branch to a
//! local bare repository, and runs a stand-in `gh` (first on PATH) that records its
//! arguments and stdin. A failing `gh` fails the task with its reason.

mod ctl;
#[path = "../../git/tests/git_common/mod.rs"]
mod git_common;
#[path = "../../tests/support/mod.rs"]
mod support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ctl::{percyctl, percyctl_command, ChildGuard};
use git2::Repository;
use git_common::{file_at, init_repo, tip, TARGET};
use hmac::{Hmac, Mac};
use percy_server::config::{
    parse_label_capabilities, GithubWebhook, DEFAULT_GITHUB_LABEL_CAPABILITIES,
};
use serde_json::{json, Value};
use sha2::Sha256;
use support::TestCluster;

const SECRET: &str = "e2e webhook secret";
/// How long a worker may take to run, merge, push and open a PR on a loaded 2-core machine.
const PATIENCE: Duration = Duration::from_secs(120);

fn script(path: &Path, body: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

fn signature(body: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(body.as_bytes());
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Delivers an `issues` event for issue `number` with `labels`; returns the HTTP status.
fn deliver_issue(endpoint: &str, delivery: &str, number: u64, labels: &[&str]) -> u16 {
    let labels: Vec<Value> = labels.iter().map(|l| json!({"name": l})).collect();
    let body = json!({
        "action": "labeled",
        "issue": {"number": number, "title": format!("Issue {number}"),
                  "body": format!("Please fix issue {number}."), "labels": labels},
        "label": {"name": "percy"},
        "repository": {"name": "app", "owner": {"login": "acme"}},
    })
    .to_string();
    let out = Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "30",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
        ])
        .args(["-H", "content-type: application/json"])
        .args(["-H", "x-github-event: issues"])
        .args(["-H", &format!("x-github-delivery: {delivery}")])
        .args(["-H", &format!("x-hub-signature-256: {}", signature(&body))])
        .args(["--data-binary", &body])
        .arg(format!("http://{endpoint}/v1/webhooks/github"))
        .output()
        .expect("curl runs (apt-get install curl)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

/// Waits until task `id` is completed or failed (for good), and returns it.
fn settled(ep: &str, id: &str) -> Value {
    let started = Instant::now();
    loop {
        let got = percyctl(ep, &["-o", "json", "task", "get", id]);
        if got.code == 0 {
            let task = got.json();
            let status = task["task"]["status"].as_str().unwrap_or_default();
            if status == "completed" || status == "failed" {
                return task;
            }
        }
        assert!(
            started.elapsed() < PATIENCE,
            "{id} not settled after {PATIENCE:?}: {got:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_labelled_issue_becomes_a_pushed_branch_and_a_pull_request() {
    let cluster = TestCluster::start_with(1, |c| {
        c.github = Some(GithubWebhook {
            secret: SECRET.as_bytes().to_vec(),
            trigger_label: "percy".into(),
            label_capabilities: parse_label_capabilities(DEFAULT_GITHUB_LABEL_CAPABILITIES)
                .unwrap(),
        })
    });
    let ep = cluster.endpoints_arg();
    let endpoint = cluster.endpoints()[0].clone();

    // The remote (bare) and the repository the worker merges into, with `origin` → remote.
    let tmp = tempfile::tempdir().unwrap();
    let remote_dir = tmp.path().join("remote.git");
    let remote = Repository::init_bare(&remote_dir).unwrap();
    let work_dir = tmp.path().join("app");
    std::fs::create_dir(&work_dir).unwrap();
    let repo = init_repo(&work_dir, &[("README", Some(b"app\n"))]);
    repo.remote("origin", remote_dir.to_str().unwrap()).unwrap();

    // The agent, and a stand-in `gh` first on PATH: records its arguments and stdin, and
    // refuses issue 2's pull request.
    let bin = tmp.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    let gh_log = tmp.path().join("gh.log");
    script(
        &bin.join("gh"),
        &format!(
            r#"if [ "$PERCY_TASK_ID" = gh-acme-app-2 ]; then echo "gh: no permission to open a PR" >&2; exit 4; fi
{{ printf '%s\n' "$@"; echo "--- stdin:"; cat; echo "--- branch: $PERCY_BRANCH"; }} >> {log}"#,
            log = gh_log.display()
        ),
    );
    script(
        &tmp.path().join("agent.sh"),
        r#"echo "fixed by $PERCY_AGENT_NAME" > "$PERCY_TASK_ID.txt""#,
    );
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let work_arg = work_dir.display().to_string();
    let mut worker = ChildGuard(
        percyctl_command(
            &ep,
            &[
                "worker",
                "--name",
                "w1",
                "--capabilities",
                "backend",
                "--repo",
                &work_arg,
                "--exec",
                "./agent.sh",
                "--ttl",
                "1m",
                "--push",
                "origin",
                "--on-complete",
                r#"gh pr create --head "$PERCY_BRANCH" --title "$PERCY_TASK_TITLE" --body-file -"#,
            ],
        )
        .current_dir(tmp.path())
        .env("PATH", &path)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn the worker"),
    );

    assert_eq!(
        deliver_issue(&endpoint, "d1", 1, &["percy", "backend"]),
        202
    );
    // A redelivery creates nothing and is not an error.
    assert_eq!(
        deliver_issue(&endpoint, "d1", 1, &["percy", "backend"]),
        200
    );
    let task = settled(&ep, "gh-acme-app-1");
    assert_eq!(task["task"]["status"], "completed", "{task}");
    let branch = "percy/gh-acme-app-1";
    assert_eq!(task["task"]["result"]["branch"], branch, "{task}");

    // The branch is on the remote with the agent's work.
    let pushed = remote
        .find_reference(&format!("refs/heads/{branch}"))
        .expect("the branch was pushed")
        .peel_to_commit()
        .unwrap()
        .id();
    assert_eq!(
        file_at(&remote, pushed, "gh-acme-app-1.txt").unwrap(),
        b"fixed by w1\n"
    );
    assert!(file_at(&repo, tip(&repo, TARGET), "gh-acme-app-1.txt").is_some());
    // `gh` ran once with the PR's arguments and the issue body on stdin.
    let log = std::fs::read_to_string(&gh_log).unwrap();
    assert_eq!(
        log,
        format!(
            "pr\ncreate\n--head\n{branch}\n--title\nIssue 1\n--body-file\n-\n--- stdin:\nPlease fix issue 1.--- branch: {branch}\n"
        )
    );

    // A failing on-complete command fails the task with its reason.
    assert_eq!(
        deliver_issue(&endpoint, "d2", 2, &["percy", "backend"]),
        202
    );
    let task = settled(&ep, "gh-acme-app-2");
    assert_eq!(task["task"]["status"], "failed", "{task}");
    let error = task["task"]["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("--on-complete failed") && error.contains("no permission"),
        "{task}"
    );
    worker.0.kill().ok();
    worker.0.wait().ok();
}
