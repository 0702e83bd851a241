//! percyctl against a cluster started with `--auth`: the bootstrap admin token file, token
//! create/list/revoke, tokens from --token, PERCY_TOKEN and --token-file, a worker running with
//! an agent token, and an agent token that cannot act for another agent.

mod ctl;
// The in-process cluster of the client library's tests, shared rather than copied.
#[path = "../../tests/support/mod.rs"]
mod support;

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use ctl::{percyctl, percyctl_command, ChildGuard, Ctl};
use support::TestCluster;

/// Generous bound for anything that waits on the cluster (2 loaded cores).
const SETTLE: Duration = Duration::from_secs(30);

fn with_token(endpoints: &str, token: &str, args: &[&str]) -> Ctl {
    let mut full = vec!["--token", token];
    full.extend_from_slice(args);
    percyctl(endpoints, &full)
}

fn wait_for_file(path: &Path) -> String {
    let deadline = Instant::now() + SETTLE;
    loop {
        if let Ok(text) = std::fs::read_to_string(path) {
            return text.trim().to_owned();
        }
        assert!(
            Instant::now() < deadline,
            "{} never appeared",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn tokens_gate_the_cli_and_an_agent_token_acts_only_as_its_agent() {
    let cluster = TestCluster::start_with(1, |config| config.auth = true);
    let ep = cluster.endpoints_arg();
    let admin_file = cluster.data_dir(1).join("admin.token");
    let admin = wait_for_file(&admin_file);
    let admin_path = admin_file.to_str().unwrap();

    // No token: refused, exit 1, one line naming the fix.
    let refused = percyctl(&ep, &["task", "list"]);
    assert_eq!(refused.code, 1, "{refused:?}");
    assert!(refused.stderr.contains("UNAUTHENTICATED"), "{refused:?}");
    assert!(refused.stderr.contains("--token"), "{refused:?}");

    // The admin (from the file) makes tokens; stdout is the secret alone.
    let create = |args: &[&str]| {
        let mut full = vec!["--token-file", admin_path, "token", "create"];
        full.extend_from_slice(args);
        let out = percyctl(&ep, &full).ok();
        out.stdout.trim().to_owned()
    };
    let builder = create(&["--role", "agent", "--agent", "builder"]);
    let other = create(&["--role", "agent", "--agent", "other"]);
    let operator = create(&["--role", "operator"]);
    assert!(builder.starts_with("percy_") && builder != other);

    // Listing shows no secrets.
    let listed = with_token(&ep, &admin, &["-o", "json", "token", "list"]).ok();
    assert_eq!(listed.json()["tokens"].as_array().unwrap().len(), 4);
    for secret in [&admin, &builder, &other, &operator] {
        assert!(
            !listed.stdout.contains(secret.as_str()),
            "a secret was listed"
        );
    }

    // PERCY_TOKEN works like --token.
    percyctl_command(&ep, &["task", "submit", "--id", "t1", "--title", "one"])
        .env("PERCY_TOKEN", &operator)
        .output()
        .map(Ctl::from)
        .unwrap()
        .ok();
    for (token, name) in [(&builder, "builder"), (&other, "other")] {
        with_token(
            &ep,
            token,
            &["agent", "register", "--name", name, "--ttl", "10m"],
        )
        .ok();
    }
    // An agent token registers only as its own agent.
    let impostor = with_token(&ep, &builder, &["agent", "register", "--name", "other"]);
    assert_eq!(impostor.code, 1, "{impostor:?}");
    assert!(
        impostor.stderr.contains("PERMISSION_DENIED"),
        "{impostor:?}"
    );

    with_token(
        &ep,
        &other,
        &["lock", "acquire", "src/other", "--agent", "other"],
    )
    .ok();
    let claimed = with_token(
        &ep,
        &builder,
        &[
            "-o", "json", "task", "claim", "--agent", "builder", "--task", "t1",
        ],
    )
    .ok()
    .json();
    let claim = claimed["task"]["claim_token"].as_u64().unwrap().to_string();

    // The builder's token cannot release the other agent's locks, and the other agent's token
    // cannot finish the builder's task even with its claim token.
    let release = with_token(&ep, &builder, &["lock", "release-all", "--agent", "other"]);
    assert_eq!(release.code, 1, "{release:?}");
    assert!(release.stderr.contains("PERMISSION_DENIED"), "{release:?}");
    let fail = with_token(
        &ep,
        &other,
        &[
            "task", "fail", "t1", "--agent", "builder", "--token", &claim, "--error", "x",
        ],
    );
    assert_eq!(fail.code, 1, "{fail:?}");
    assert!(fail.stderr.contains("PERMISSION_DENIED"), "{fail:?}");
    let locks = with_token(&ep, &admin, &["-o", "json", "lock", "list"]).ok();
    assert!(
        locks.stdout.contains("src/other"),
        "the lock is still held: {locks:?}"
    );

    // A worker runs with its agent token.
    with_token(
        &ep,
        &builder,
        &[
            "task",
            "complete",
            "t1",
            "--agent",
            "builder",
            "--token",
            &claim,
            "--summary",
            "done",
        ],
    )
    .ok();
    with_token(
        &ep,
        &operator,
        &["task", "submit", "--id", "t2", "--title", "two"],
    )
    .ok();
    let worker = percyctl_command(
        &ep,
        &[
            "--token", &builder, "worker", "--name", "builder", "--exec", "true",
        ],
    )
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .spawn()
    .expect("spawn the worker");
    let _worker = ChildGuard(worker);
    let deadline = Instant::now() + SETTLE;
    loop {
        let task = with_token(&ep, &admin, &["-o", "json", "task", "get", "t2"]).ok();
        if task.json()["task"]["status"] == "completed" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the worker never completed t2: {task:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // Revoked: refused from then on.
    let builder_id = listed.json()["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["agent"] == "builder")
        .unwrap()["id"]
        .as_u64()
        .unwrap()
        .to_string();
    with_token(&ep, &admin, &["token", "revoke", &builder_id]).ok();
    let revoked = with_token(&ep, &builder, &["task", "list"]);
    assert_eq!(revoked.code, 1, "{revoked:?}");
    assert!(revoked.stderr.contains("UNAUTHENTICATED"), "{revoked:?}");
}

#[test]
fn certs_init_writes_the_files_and_prints_the_flags() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("certs");
    let done = percyctl(
        "127.0.0.1:1",
        &[
            "certs",
            "init",
            out.to_str().unwrap(),
            "--nodes",
            "1=127.0.0.1,2=127.0.0.1,3=127.0.0.1",
        ],
    )
    .ok();
    for name in [
        "ca.crt",
        "node-1.crt",
        "node-1.key",
        "node-3.key",
        "admin.crt",
        "admin.key",
    ] {
        assert!(out.join(name).exists(), "{name} missing: {done:?}");
    }
    assert!(done.stdout.contains("--tls-cert"), "{done:?}");
    assert!(done.stdout.contains("PERCY_CACERT"), "{done:?}");
    let again = percyctl(
        "127.0.0.1:1",
        &["certs", "init", out.to_str().unwrap(), "--nodes", "1=a"],
    );
    assert_ne!(again.code, 0, "{again:?}");
}

/// Remote execution is for operators and admins only (CVE-2023-48022): an executor runs with
/// its agent token; an operator's exec runs and streams; an agent's or a reader's is refused
/// before anything is submitted.
#[test]
fn only_operators_run_execs() {
    let cluster = TestCluster::start_with(1, |config| config.auth = true);
    let ep = cluster.endpoints_arg();
    let admin_file = cluster.data_dir(1).join("admin.token");
    let _admin = wait_for_file(&admin_file);
    let admin_path = admin_file.to_str().unwrap();
    let create = |args: &[&str]| {
        let mut full = vec!["--token-file", admin_path, "token", "create"];
        full.extend_from_slice(args);
        percyctl(&ep, &full).ok().stdout.trim().to_owned()
    };
    let runner = create(&["--role", "agent", "--agent", "runner"]);
    let operator = create(&["--role", "operator"]);
    let reader = create(&["--role", "reader"]);
    let state = tempfile::tempdir().unwrap();
    let _executor = ChildGuard(
        percyctl_command(
            &ep,
            &[
                "--token",
                &runner,
                "worker",
                "--name",
                "runner",
                "--accept-exec",
                "--inbox-dir",
                state.path().to_str().unwrap(),
            ],
        )
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn the executor"),
    );
    let deadline = Instant::now() + SETTLE;
    while !with_token(&ep, &operator, &["agent", "list"])
        .stdout
        .contains("runner")
    {
        assert!(Instant::now() < deadline, "the executor never registered");
        std::thread::sleep(Duration::from_millis(100));
    }

    let run = with_token(
        &ep,
        &operator,
        &["exec", "--on", "runner", "--", "echo hi; exit 3"],
    );
    assert_eq!((run.code, run.stdout.as_str()), (3, "hi\n"), "{run:?}");
    for token in [&runner, &reader] {
        let refused = with_token(
            &ep,
            token,
            &["exec", "--on", "runner", "--", "touch /tmp/x"],
        );
        assert_eq!(refused.code, 1, "{refused:?}");
        assert!(refused.stderr.contains("PERMISSION_DENIED"), "{refused:?}");
    }
    let listed = with_token(&ep, &operator, &["-o", "json", "exec", "list"]).ok();
    assert_eq!(
        listed.json().as_array().map(Vec::len),
        Some(1),
        "{listed:?}"
    );
}
