//! percyctl end to end against a real (in-process) Percy cluster: the binary is run as a
//! child process, exactly as a user or script would.

mod ctl;
// The in-process cluster of the client library's tests, shared rather than copied.
#[path = "../../tests/support/mod.rs"]
mod support;

use std::io::Write;
use std::process::Stdio;

use ctl::{percyctl, percyctl_command};
use support::TestCluster;

/// Registers an agent with a long TTL (the test must not race its expiry) and returns its id.
fn register(endpoints: &str, name: &str, extra: &[&str]) -> u64 {
    let mut args = vec![
        "-o", "json", "agent", "register", "--name", name, "--ttl", "10m",
    ];
    args.extend_from_slice(extra);
    let out = percyctl(endpoints, &args).ok().json();
    out["agent"]["id"].as_u64().expect("agent id")
}

fn submit(endpoints: &str, id: &str, extra: &[&str]) -> serde_json::Value {
    let mut args = vec!["-o", "json", "task", "submit", "--title", id, "--id", id];
    args.extend_from_slice(extra);
    percyctl(endpoints, &args).ok().json()
}

fn claim_token(endpoints: &str, agent: &str, task: &str) -> u64 {
    let out = percyctl(
        endpoints,
        &[
            "-o", "json", "task", "claim", "--agent", agent, "--task", task,
        ],
    )
    .ok()
    .json();
    out["task"]["claim_token"].as_u64().expect("claim token")
}

#[test]
fn two_agents_race_for_a_task_and_exactly_one_wins() {
    let cluster = TestCluster::start(1);
    let ep = cluster.endpoints_arg();
    register(&ep, "racer-a", &[]);
    register(&ep, "racer-b", &[]);
    submit(&ep, "contested", &[]);

    let children: Vec<_> = ["racer-a", "racer-b"]
        .iter()
        .map(|agent| {
            percyctl_command(
                &ep,
                &["task", "claim", "--agent", agent, "--task", "contested"],
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn percyctl")
        })
        .collect();
    let results: Vec<ctl::Ctl> = children
        .into_iter()
        .map(|c| c.wait_with_output().expect("percyctl exits").into())
        .collect();

    let winners: Vec<_> = results.iter().filter(|r| r.code == 0).collect();
    let losers: Vec<_> = results.iter().filter(|r| r.code != 0).collect();
    assert_eq!(winners.len(), 1, "{results:?}");
    assert_eq!(losers.len(), 1, "{results:?}");
    let loser = losers[0];
    assert_eq!(loser.code, 1, "a refusal exits 1: {loser:?}");
    assert!(
        loser.stderr.starts_with("error: claim task contested"),
        "{loser:?}"
    );
    assert!(loser.stderr.contains("FAILED_PRECONDITION"), "{loser:?}");
    assert_eq!(
        loser.stderr.trim_end().lines().count(),
        1,
        "one line: {loser:?}"
    );
    assert!(
        winners[0].stdout.contains("claimed by agent"),
        "{results:?}"
    );
}

#[test]
fn a_stale_claim_token_cannot_complete_a_task() {
    let cluster = TestCluster::start(1);
    let ep = cluster.endpoints_arg();
    register(&ep, "slow", &[]);
    register(&ep, "fresh", &[]);
    submit(&ep, "job", &[]);
    let stale = claim_token(&ep, "slow", "job");
    percyctl(
        &ep,
        &["task", "requeue", "job", "--reason", "took too long"],
    )
    .ok();
    let current = claim_token(&ep, "fresh", "job");
    assert!(current > stale, "claim tokens grow: {stale} then {current}");

    let refused = percyctl(
        &ep,
        &[
            "task",
            "complete",
            "job",
            "--agent",
            "slow",
            "--token",
            &stale.to_string(),
        ],
    );
    assert_eq!(refused.code, 1, "{refused:?}");
    assert!(
        refused.stderr.starts_with("error: complete task job"),
        "{refused:?}"
    );

    let token = current.to_string();
    percyctl(
        &ep,
        &[
            "task", "start", "job", "--agent", "fresh", "--token", &token,
        ],
    )
    .ok();
    let done = percyctl(
        &ep,
        &[
            "-o",
            "json",
            "task",
            "complete",
            "job",
            "--agent",
            "fresh",
            "--token",
            &token,
            "--summary",
            "all good",
        ],
    )
    .ok()
    .json();
    assert_eq!(done["task"]["status"], "completed");
    assert_eq!(done["task"]["result"]["summary"], "all good");
}

#[test]
fn locks_are_refused_while_held_and_regranted_with_a_larger_fencing_token() {
    let cluster = TestCluster::start(1);
    let ep = cluster.endpoints_arg();
    register(&ep, "holder", &[]);
    register(&ep, "other", &[]);

    let first = percyctl(
        &ep,
        &[
            "-o", "json", "lock", "acquire", "src/api", "--agent", "holder",
        ],
    )
    .ok()
    .json();
    let first_token = first["grants"][0]["fencing_token"].as_u64().expect("token");

    // A descendant path conflicts with the held ancestor.
    let refused = percyctl(
        &ep,
        &["lock", "acquire", "src/api/users.rs", "--agent", "other"],
    );
    assert_eq!(refused.code, 1, "{refused:?}");
    assert!(refused.stderr.contains("src/api"), "{refused:?}");

    let listed = percyctl(&ep, &["-o", "json", "lock", "list"]).ok().json();
    assert_eq!(listed["locks"][0]["path"], "src/api");

    percyctl(&ep, &["lock", "release", "src/api", "--agent", "holder"]).ok();
    let second = percyctl(
        &ep,
        &[
            "-o",
            "json",
            "lock",
            "acquire",
            "src/api/users.rs",
            "--agent",
            "other",
        ],
    )
    .ok()
    .json();
    let second_token = second["grants"][0]["fencing_token"]
        .as_u64()
        .expect("token");
    assert!(
        second_token > first_token,
        "{first_token} then {second_token}"
    );

    let bad = percyctl(
        &ep,
        &["lock", "acquire", "../etc/passwd", "--agent", "other"],
    );
    assert_eq!(bad.code, 1, "{bad:?}");
    assert!(bad.stderr.contains("INVALID_ARGUMENT"), "{bad:?}");

    let released = percyctl(
        &ep,
        &["-o", "json", "lock", "release-all", "--agent", "other"],
    )
    .ok()
    .json();
    assert_eq!(released["released"][0], "src/api/users.rs");
}

#[test]
fn config_compare_and_set() {
    let cluster = TestCluster::start(1);
    let ep = cluster.endpoints_arg();
    let created = percyctl(
        &ep,
        &[
            "-o",
            "json",
            "config",
            "set",
            "mode",
            "fast",
            "--revision",
            "0",
        ],
    )
    .ok()
    .json();
    let revision = created["entry"]["revision"].as_u64().expect("revision");

    let again = percyctl(&ep, &["config", "set", "mode", "x", "--revision", "0"]);
    assert_eq!(
        again.code, 1,
        "only-if-absent on an existing key: {again:?}"
    );
    let stale = percyctl(
        &ep,
        &[
            "config",
            "set",
            "mode",
            "slow",
            "--revision",
            &(revision + 100).to_string(),
        ],
    );
    assert_eq!(stale.code, 1, "{stale:?}");
    assert!(stale.stderr.contains("FAILED_PRECONDITION"), "{stale:?}");

    percyctl(
        &ep,
        &[
            "config",
            "set",
            "mode",
            "slow",
            "--revision",
            &revision.to_string(),
        ],
    )
    .ok();
    let value = percyctl(&ep, &["config", "get", "mode"]).ok();
    assert_eq!(value.stdout.trim(), "slow");
    let entry = percyctl(
        &ep,
        &["-o", "json", "config", "get", "mode", "--serializable"],
    )
    .ok()
    .json();
    assert_eq!(entry["entry"]["version"], 2);

    percyctl(&ep, &["config", "delete", "mode"]).ok();
    let gone = percyctl(&ep, &["config", "get", "mode"]);
    assert_eq!(gone.code, 1, "{gone:?}");
}

const PLAN: &str = r#"
id = "release"

[[tasks]]
id = "build"
title = "Build"
priority = 5

[[tasks]]
id = "test"
title = "Test"
depends_on = ["build"]

[[tasks]]
id = "ship"
title = "Ship"
depends_on = ["test"]
"#;

#[test]
fn plans_are_submitted_shown_in_dependency_order_and_watched_to_the_end() {
    let cluster = TestCluster::start(1);
    let ep = cluster.endpoints_arg();
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("plan.toml");
    std::fs::write(&path, PLAN).expect("write plan");
    let path = path.to_str().expect("utf-8 path");

    let submitted = percyctl(&ep, &["-o", "json", "plan", "submit", path])
        .ok()
        .json();
    assert_eq!(submitted["plan_id"], "release");

    let status = percyctl(&ep, &["-o", "json", "plan", "status", "release"])
        .ok()
        .json();
    let order: Vec<&str> = status["tasks"]
        .as_array()
        .expect("tasks")
        .iter()
        .map(|t| t["id"].as_str().expect("id"))
        .collect();
    assert_eq!(order, ["build", "test", "ship"]);
    assert_eq!(status["tasks"][0]["status"], "ready");
    assert_eq!(status["tasks"][1]["status"], "blocked");
    let table = percyctl(&ep, &["plan", "status", "release"]).ok();
    assert!(table.stdout.contains("build(ready)"), "{table:?}");

    // Follow the plan while an "agent" works through it.
    let mut watcher = ctl::ChildGuard(
        percyctl_command(&ep, &["plan", "watch", "release"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn plan watch"),
    );
    register(&ep, "worker", &[]);
    for task in ["build", "test", "ship"] {
        let token = claim_token(&ep, "worker", task).to_string();
        percyctl(
            &ep,
            &[
                "task", "complete", task, "--agent", "worker", "--token", &token,
            ],
        )
        .ok();
    }
    let finished = watcher.wait_output();
    assert_eq!(finished.code, 0, "{finished:?}");
    assert!(finished.stdout.contains("3 completed"), "{finished:?}");
    assert!(
        finished.stdout.contains("test: blocked -> ready"),
        "{finished:?}"
    );
}

#[test]
fn a_plan_that_does_not_complete_makes_plan_watch_exit_1() {
    let cluster = TestCluster::start(1);
    let ep = cluster.endpoints_arg();
    let mut plan = tempfile::Builder::new()
        .suffix(".yaml")
        .tempfile()
        .expect("temp file");
    plan.write_all(b"id: doomed\ntasks:\n  - {id: a, title: A, max_attempts: 1}\n  - {id: b, title: B, depends_on: [a]}\n")
        .expect("write plan");
    let path = plan.path().to_str().expect("utf-8 path");
    percyctl(&ep, &["plan", "submit", path]).ok();
    register(&ep, "unlucky", &[]);
    let token = claim_token(&ep, "unlucky", "a").to_string();
    percyctl(
        &ep,
        &[
            "task", "fail", "a", "--agent", "unlucky", "--token", &token, "--error", "boom",
        ],
    )
    .ok();
    let watched = percyctl(&ep, &["plan", "watch", "doomed"]);
    assert_eq!(watched.code, 1, "{watched:?}");
    assert!(watched.stderr.contains("did not complete"), "{watched:?}");
}

#[test]
fn a_bad_plan_is_rejected_and_changes_nothing() {
    let cluster = TestCluster::start(1);
    let ep = cluster.endpoints_arg();
    let mut plan = tempfile::Builder::new()
        .suffix(".yml")
        .tempfile()
        .expect("temp file");
    plan.write_all(b"id: broken\ntasks:\n  - {id: a, title: A, depends_on: [nowhere]}\n")
        .expect("write plan");
    let path = plan.path().to_str().expect("utf-8 path");
    let rejected = percyctl(&ep, &["plan", "submit", path]);
    assert_eq!(rejected.code, 1, "{rejected:?}");
    assert!(rejected.stderr.contains("nowhere"), "{rejected:?}");
    let tasks = percyctl(&ep, &["-o", "json", "task", "list"]).ok().json();
    assert_eq!(tasks["tasks"].as_array().map(Vec::len), Some(0));

    let unparsable = percyctl(&ep, &["plan", "submit", "/nonexistent/plan.toml"]);
    assert_eq!(unparsable.code, 2, "{unparsable:?}");
}

#[test]
fn json_output_carries_ids_and_revisions_for_scripts() {
    let cluster = TestCluster::start(1);
    let ep = cluster.endpoints_arg();
    let id = register(
        &ep,
        "scripted",
        &["--capabilities", "rust,git", "--label", "os=linux"],
    );
    let agent = percyctl(&ep, &["-o", "json", "agent", "get", "scripted"])
        .ok()
        .json();
    assert_eq!(agent["agent"]["id"].as_u64(), Some(id));
    assert_eq!(agent["agent"]["labels"]["os"], "linux");
    assert!(agent["header"]["revision"].as_u64().unwrap_or(0) >= 1);

    let task = submit(
        &ep,
        "t1",
        &[
            "--requires",
            "rust",
            "--selector",
            "os=linux",
            "--payload",
            "hi",
        ],
    );
    assert_eq!(task["task"]["payload"], "hi");
    let claimed = percyctl(
        &ep,
        &["-o", "json", "task", "claim", "--agent", &id.to_string()],
    )
    .ok()
    .json();
    assert_eq!(claimed["task"]["id"], "t1");
    assert_eq!(
        claimed["task"]["claim_token"],
        claimed["header"]["revision"]
    );

    let nothing = percyctl(&ep, &["task", "claim", "--agent", "scripted"]);
    assert_eq!(nothing.code, 1, "{nothing:?}");

    let listed = percyctl(&ep, &["-o", "json", "task", "list", "--status", "claimed"])
        .ok()
        .json();
    assert_eq!(listed["tasks"][0]["assignee"].as_u64(), Some(id));

    percyctl(&ep, &["chat", "send", "scripted", "hello"]).ok();
    let history = percyctl(&ep, &["-o", "json", "chat", "history", "scripted"])
        .ok()
        .json();
    assert_eq!(history["messages"][0]["body"], "hello");

    let status = percyctl(&ep, &["-o", "json", "cluster", "status"])
        .ok()
        .json();
    assert_eq!(status["nodes"][0]["state"], "Leader");
}

#[test]
fn definitions_apply_idempotently() {
    let cluster = TestCluster::start(1);
    let ep = cluster.endpoints_arg();
    let mut file = tempfile::Builder::new()
        .suffix(".yaml")
        .tempfile()
        .expect("temp file");
    file.write_all(b"- name: reviewer\n  spec: {exec: review.sh}\n- name: builder\n  desired: stopped\n  spec: {exec: build.sh}\n")
        .expect("write manifest");
    let path = file.path().to_str().expect("utf-8 path");
    let first = percyctl(&ep, &["-o", "json", "apply", "-f", path])
        .ok()
        .json();
    assert_eq!(first["created"].as_array().map(Vec::len), Some(2));
    let second = percyctl(&ep, &["apply", "-f", path]).ok();
    assert!(
        second.stdout.contains("definition reviewer unchanged"),
        "{second:?}"
    );
    percyctl(&ep, &["definition", "stop", "reviewer"]).ok();
    let got = percyctl(&ep, &["-o", "json", "definition", "get", "reviewer"])
        .ok()
        .json();
    assert_eq!(got["definition"]["desired"], "stopped");
    assert_eq!(got["definition"]["spec"]["exec"], "review.sh");
}

#[test]
fn an_unreachable_cluster_is_a_one_line_error_with_exit_2() {
    let quick = ctl::percyctl_with_timeout("127.0.0.1:1", "1s", &["task", "list"]);
    assert_eq!(quick.code, 2, "{quick:?}");
    assert!(
        quick
            .stderr
            .starts_with("error: list tasks: cluster unavailable"),
        "{quick:?}"
    );
    assert!(quick.stderr.contains("127.0.0.1:1"), "{quick:?}");
    assert_eq!(quick.stderr.trim_end().lines().count(), 1, "{quick:?}");
}

#[test]
fn a_follower_answers_writes_by_forwarding() {
    let cluster = TestCluster::start(3);
    let follower = cluster.follower_index().expect("a follower");
    let ep = cluster.endpoints()[follower].clone();
    let out = percyctl(&ep, &["-o", "json", "config", "set", "via", "follower"])
        .ok()
        .json();
    assert_eq!(out["header"]["forwarded"], true, "{out}");
    assert_eq!(out["header"]["node_id"].as_u64(), Some(follower as u64 + 1));
    let all = cluster.endpoints_arg();
    let value = percyctl(&all, &["config", "get", "via"]).ok();
    assert_eq!(value.stdout.trim(), "follower");
}
