//! `percyctl exec` end to end: three in-process percyd nodes and three `percyctl worker
//! --accept-exec` processes with different labels; routing by name, selector and --auto,
//! exit codes and signals, live stdout/stderr, a 10 MB output, --parallel and --all tables,
//! detach/logs/list, Ctrl-C, an executor killed mid-run (lost), a leader failover mid-run,
//! and bad input.

mod ctl;
#[path = "../../tests/support/mod.rs"]
mod support;

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use ctl::{percyctl, percyctl_command, ChildGuard, Ctl};
use support::TestCluster;

/// How long executors may take to register on a loaded machine.
const START_LIMIT: Duration = Duration::from_secs(60);

struct Executor {
    name: &'static str,
    labels: &'static [&'static str],
}

const EXECUTORS: [Executor; 3] = [
    Executor {
        name: "linux-builder",
        labels: &["role=build", "zone=a"],
    },
    Executor {
        name: "mac-1",
        labels: &["role=test", "zone=b"],
    },
    Executor {
        name: "mac-2",
        labels: &["role=test", "zone=c"],
    },
];

fn spawn_executor(endpoints: &str, state: &Path, e: &Executor, ttl: &str) -> ChildGuard {
    let mut args = vec![
        "worker".to_owned(),
        "--name".into(),
        e.name.into(),
        "--accept-exec".into(),
        "--max-concurrent".into(),
        "4".into(),
        "--ttl".into(),
        ttl.into(),
        "--inbox-dir".into(),
        state.to_str().expect("utf-8").into(),
    ];
    for label in e.labels {
        args.push("--label".into());
        args.push((*label).into());
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let child = percyctl_command(endpoints, &args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn an executor");
    ChildGuard(child)
}

fn wait_for(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

struct Setup {
    cluster: TestCluster,
    endpoints: String,
    _executors: Vec<ChildGuard>,
    _state: tempfile::TempDir,
}

fn setup(ttl: &str) -> Setup {
    let cluster = TestCluster::start(3);
    let endpoints = cluster.endpoints_arg();
    let state = tempfile::tempdir().expect("temp dir");
    let executors = EXECUTORS
        .iter()
        .map(|e| spawn_executor(&endpoints, state.path(), e, ttl))
        .collect();
    wait_for("three executors", START_LIMIT, || {
        percyctl(&endpoints, &["agent", "list"])
            .stdout
            .lines()
            .filter(|l| EXECUTORS.iter().any(|e| l.contains(e.name)))
            .count()
            == 3
    });
    Setup {
        cluster,
        endpoints,
        _executors: executors,
        _state: state,
    }
}

fn exec(endpoints: &str, args: &[&str]) -> Ctl {
    let mut all = vec!["exec"];
    all.extend_from_slice(args);
    percyctl(endpoints, &all)
}

/// The caller notices an exec's end when the executor reports it (a watch on the exec's
/// task), not at its next look at the record: that look came every 250 ms, so each exec of
/// `true` took at least 250 ms. Ten in a row must take less than ten such waits; a caller
/// that waits for the poll again cannot pass, whatever the machine's speed.
#[test]
fn an_exec_of_true_returns_without_waiting_for_a_poll_of_its_record() {
    /// The caller's poll of the record (`POLL` in `client/ctl/src/exec.rs`).
    const RECORD_POLL: Duration = Duration::from_millis(250);
    const EXECS: u32 = 10;
    let s = setup("10m");
    let ep = s.endpoints.as_str();
    let warm = exec(ep, &["--on", "mac-1", "--", "true"]);
    assert_eq!(warm.code, 0, "{warm:?}");
    let started = Instant::now();
    for _ in 0..EXECS {
        let run = exec(ep, &["--on", "mac-1", "--", "true"]);
        assert_eq!(run.code, 0, "{run:?}");
    }
    let took = started.elapsed();
    assert!(
        took < RECORD_POLL * EXECS,
        "{EXECS} execs of `true` took {took:?}: the caller waits for a poll of the record"
    );
    drop(s);
}

#[test]
fn exec_routes_streams_and_exits_with_the_remote_code() {
    let s = setup("10m");
    let ep = s.endpoints.as_str();

    // By name: the command runs there (PERCY_AGENT_NAME says where), stdout and stderr
    // arrive on ours, each in order.
    let run = exec(
        ep,
        &[
            "--on",
            "mac-1",
            "--",
            "sh",
            "-c",
            "echo \"on $PERCY_AGENT_NAME\"; for i in 1 2 3; do echo out$i; echo err$i >&2; done",
        ],
    );
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(run.stdout, "on mac-1\nout1\nout2\nout3\n", "{run:?}");
    assert_eq!(run.stderr, "err1\nerr2\nerr3\n", "{run:?}");

    // By selector; arguments keep their spaces and quotes; exit codes come back.
    let run = exec(
        ep,
        &[
            "--on",
            "role=build,zone=a",
            "--",
            "printf",
            "%s|",
            "a b",
            "it's",
        ],
    );
    assert_eq!((run.code, run.stdout.as_str()), (0, "a b|it's|"), "{run:?}");
    let run = exec(ep, &["--on", "role=build", "--", "exit 3"]);
    assert_eq!(run.code, 3, "{run:?}");
    let run = exec(ep, &["--on", "zone=b", "--", "kill -TERM $$"]);
    assert_eq!(run.code, 128 + 15, "{run:?}");

    // --cwd, --env and --timeout are passed through.
    let dir = tempfile::tempdir().expect("temp dir");
    let run = exec(
        ep,
        &[
            "--on",
            "mac-2",
            "--cwd",
            dir.path().to_str().expect("utf-8"),
            "--env",
            "GREETING=hi there",
            "--",
            "echo \"$GREETING from $(pwd)\"",
        ],
    );
    assert_eq!(run.code, 0, "{run:?}");
    let printed = run.stdout.trim().to_owned();
    assert!(printed.starts_with("hi there from "), "{run:?}");
    let started = Instant::now();
    let run = exec(ep, &["--on", "mac-2", "--timeout", "1s", "--", "sleep 30"]);
    assert_eq!(run.code, 124, "{run:?}");
    assert!(started.elapsed() < Duration::from_secs(25));

    // --auto: required labels first, then the lowest load; it says which on stderr.
    let run = exec(
        ep,
        &[
            "--auto",
            "--explain",
            "--on",
            "role=test",
            "--",
            "echo $PERCY_AGENT_NAME",
        ],
    );
    assert_eq!(run.code, 0, "{run:?}");
    let chosen = run.stdout.trim().to_owned();
    assert!(chosen == "mac-1" || chosen == "mac-2", "{run:?}");
    assert!(
        run.stderr.contains(&format!("--auto chose {chosen}")),
        "{run:?}"
    );
    assert!(
        !run.stderr.contains("linux-builder"),
        "the ranking lists only role=test: {run:?}"
    );
    // A busy executor is not chosen: keep mac-1 busy, and --auto among role=test picks mac-2.
    let mut busy = ChildGuard(
        percyctl_command(ep, &["exec", "--on", "mac-1", "--", "sleep 8"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn"),
    );
    wait_for("mac-1 to be busy", START_LIMIT, || {
        exec(ep, &["list"])
            .stdout
            .lines()
            .any(|l| l.contains("running") && l.contains("mac-1"))
    });
    let run = exec(
        ep,
        &[
            "--auto",
            "--explain",
            "--on",
            "role=test",
            "--",
            "echo $PERCY_AGENT_NAME",
        ],
    );
    assert_eq!((run.code, run.stdout.trim()), (0, "mac-2"), "{run:?}");
    assert_eq!(busy.wait_output().code, 0);

    // 10 MB streams through (bounded buffers all the way) and arrives whole.
    let run = exec(
        ep,
        &[
            "--on",
            "linux-builder",
            "--",
            "head -c 10485760 /dev/zero | tr '\\0' x",
        ],
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(run.stdout.len(), 10 * 1024 * 1024);
    assert!(run.stdout.bytes().all(|b| b == b'x'));

    // --parallel: output prefixed by node, a table, exit 0 only if all succeeded.
    let run = exec(
        ep,
        &[
            "--parallel",
            "echo one",
            "echo two; exit 5",
            "sleep 1; echo three",
        ],
    );
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stdout.contains("] one\n"), "{run:?}");
    assert!(run.stdout.contains("] two\n"), "{run:?}");
    assert!(run.stdout.contains("speedup"), "{run:?}");
    assert!(run.stdout.contains("1 of 3 failed"), "{run:?}");
    let run = exec(ep, &["-o", "json", "--parallel", "echo a", "echo b"]);
    assert_eq!(run.code, 0, "{run:?}");
    let last_json = run
        .stdout
        .find("{\n")
        .map(|at| &run.stdout[at..])
        .expect("json");
    let report: serde_json::Value = serde_json::from_str(last_json).expect("json report");
    assert_eq!(report["failed"], 0);
    assert_eq!(report["execs"].as_array().map(Vec::len), Some(2));
    // Two commands on two different executors (spread by load).
    let nodes: Vec<&str> = report["execs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["node"].as_str().unwrap())
        .collect();
    assert_ne!(nodes[0], nodes[1], "{report}");

    // --all: one run per executor.
    let run = exec(ep, &["--all", "--", "echo $PERCY_AGENT_NAME"]);
    assert_eq!(run.code, 0, "{run:?}");
    for e in &EXECUTORS {
        assert!(
            run.stdout.contains(&format!("[{0}] {0}\n", e.name)),
            "{run:?}"
        );
    }
    let run = exec(
        ep,
        &[
            "--all",
            "--on",
            "role=test",
            "--",
            "test $PERCY_AGENT_NAME = mac-1",
        ],
    );
    assert_eq!(run.code, 1, "one of two failed: {run:?}");

    // --detach, then logs and list.
    let run = exec(
        ep,
        &["--detach", "--on", "mac-2", "--", "echo detached; exit 4"],
    );
    assert_eq!(run.code, 0, "{run:?}");
    let id = run.stdout.trim().to_owned();
    assert!(id.starts_with("exec-"), "{run:?}");
    let logs = exec(ep, &["logs", "-f", &id]);
    assert_eq!(
        (logs.code, logs.stdout.as_str()),
        (4, "detached\n"),
        "{logs:?}"
    );
    let list = percyctl(ep, &["-o", "json", "exec", "list"]);
    let listed = list.json();
    let entry = listed
        .as_array()
        .expect("a list")
        .iter()
        .find(|e| e["id"] == id.as_str())
        .cloned()
        .expect("listed");
    assert_eq!(entry["state"], "failed");
    assert_eq!(entry["exit_code"], 4);
    assert_eq!(entry["executor"], "mac-2");

    // logs -f of a running exec follows it live (the relay's output, not the tail at the
    // end): its first line arrives seconds before the exec ends, and nothing repeats.
    let run = exec(
        ep,
        &[
            "--detach",
            "--on",
            "mac-2",
            "--",
            "sleep 2; echo one; sleep 4; echo two; exit 6",
        ],
    );
    assert_eq!(run.code, 0, "{run:?}");
    let id = run.stdout.trim().to_owned();
    let mut follower = ChildGuard(
        percyctl_command(ep, &["exec", "logs", "-f", &id])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn logs -f"),
    );
    let stdout = follower.0.stdout.take().expect("piped");
    let reader = std::thread::spawn(move || {
        use std::io::BufRead;
        let mut lines = Vec::new();
        for line in std::io::BufReader::new(stdout).lines() {
            lines.push((line.expect("utf-8"), Instant::now()));
        }
        lines
    });
    let status = follower.0.wait().expect("logs -f ends");
    let ended = Instant::now();
    let lines = reader.join().expect("reader");
    let texts: Vec<&str> = lines.iter().map(|(l, _)| l.as_str()).collect();
    assert_eq!(texts, ["one", "two"], "live lines, each once");
    assert_eq!(status.code(), Some(6));
    let early = ended.duration_since(lines[0].1);
    assert!(
        early >= Duration::from_secs(2),
        "the first line came only {early:?} before the end: not live"
    );

    // Bad input: clear errors, non-zero exits, nothing submitted.
    let before = percyctl(ep, &["-o", "json", "exec", "list"])
        .json()
        .as_array()
        .map(Vec::len);
    let run = exec(ep, &["--on", "os=plan9", "--", "true"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stderr.contains("no active executor matches"), "{run:?}");
    let run = exec(ep, &["--on", "nobody", "--", "true"]);
    assert_eq!(run.code, 1, "{run:?}");
    let run = exec(ep, &["--on", "mac-1", "--"]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("empty command"), "{run:?}");
    let run = exec(ep, &["--", "true"]);
    assert_eq!(run.code, 2, "{run:?}");
    let run = exec(ep, &["logs", "exec-unknown"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stderr.contains("no exec"), "{run:?}");
    let after = percyctl(ep, &["-o", "json", "exec", "list"])
        .json()
        .as_array()
        .map(Vec::len);
    assert_eq!(before, after);
    drop(s);
}

fn sigint(child: &std::process::Child) {
    let pid = i32::try_from(child.id()).expect("pid");
    // SAFETY: kill(2) on our own child.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGINT) }, 0);
}

fn sigkill_pid(pid: u32) {
    // SAFETY: kill(2) on our own child.
    unsafe {
        libc::kill(i32::try_from(pid).expect("pid"), libc::SIGKILL);
    }
}

#[test]
fn ctrl_c_cancels_a_lost_executor_fails_and_failover_keeps_the_code() {
    let mut s = setup("4s");
    let ep = s.endpoints.clone();
    let dir = tempfile::tempdir().expect("temp dir");

    // Ctrl-C: the remote command is killed (its marker never appears), exit 130.
    let marker = dir.path().join("survived");
    let script = format!("echo started; sleep 6; touch {}", marker.display());
    let mut caller = ChildGuard(
        percyctl_command(&ep, &["exec", "--on", "mac-1", "--", &script])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn"),
    );
    wait_for("the exec to run", START_LIMIT, || {
        exec(&ep, &["list"])
            .stdout
            .lines()
            .any(|l| l.contains("running"))
    });
    std::thread::sleep(Duration::from_millis(500));
    sigint(&caller.0);
    let out = caller.wait_output();
    assert_eq!(out.code, 130, "{out:?}");
    assert!(out.stdout.contains("started"), "{out:?}");
    std::thread::sleep(Duration::from_secs(8));
    assert!(!marker.exists(), "the cancelled command ran on");

    // Leader failover during a long exec: the caller still gets the exit code.
    let mut caller = ChildGuard(
        percyctl_command(&ep, &["exec", "--on", "mac-2", "--", "sleep 4; exit 7"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn"),
    );
    wait_for("the exec to run", START_LIMIT, || {
        exec(&ep, &["list"])
            .stdout
            .lines()
            .any(|l| l.contains("running") && l.contains("mac-2"))
    });
    let leader = s.cluster.leader_index().expect("a leader");
    s.cluster.stop(leader);
    let out = caller.wait_output();
    assert_eq!(out.code, 7, "{out:?}");

    // An executor SIGKILLed mid-run: the exec ends as lost, exit 255, and is not re-run.
    let mut caller = ChildGuard(
        percyctl_command(&ep, &["exec", "--on", "linux-builder", "--", "sleep 60"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn"),
    );
    wait_for("the exec to run", START_LIMIT, || {
        exec(&ep, &["list"])
            .stdout
            .lines()
            .any(|l| l.contains("running") && l.contains("linux-builder"))
    });
    sigkill_pid(s._executors[0].0.id());
    let out = caller.wait_output();
    assert_eq!(out.code, 255, "{out:?}");
    assert!(out.stderr.contains("lost"), "{out:?}");
    let listed = exec(&ep, &["list"]);
    assert!(
        listed.stdout.lines().any(|l| l.contains("lost")),
        "{listed:?}"
    );
}

/// Two executors registered by the test itself, whose loads the test reports with their
/// heartbeats (no worker process, no CPU burning): `--auto` must pick the less loaded one,
/// and `agent list` / `cluster status` must show the figures.
#[test]
fn auto_picks_the_less_loaded_executor_and_agent_list_shows_the_loads() {
    use percy_client::proto::{AgentLoad, RegisterAgentRequest};

    let cluster = TestCluster::start(3);
    let ep = cluster.endpoints_arg();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let client = runtime
        .block_on(percy_client::Client::connect(&cluster.endpoints()))
        .expect("connect");
    let register = |name: &str| -> u64 {
        let request = RegisterAgentRequest {
            name: name.into(),
            capabilities: vec!["percy.exec".into()],
            labels: [
                ("percy.agent".to_owned(), name.to_owned()),
                ("os".to_owned(), "linux".to_owned()),
            ]
            .into(),
            max_concurrent: 4,
            ttl_ms: 600_000,
            ..Default::default()
        };
        runtime
            .block_on(client.register_agent(request))
            .expect("register")
            .agent
            .expect("an agent")
            .id
    };
    let calm = register("calm");
    let busy = register("busy");
    let report = |agent: u64, avg: f64| {
        let load = AgentLoad {
            load_avg_1m: Some(avg),
            cores: Some(4),
            mem_used_bytes: Some(3 << 30),
            mem_total_bytes: Some(16 << 30),
            running_tasks: 0,
            running_execs: 1,
            reported_at_ms: 0,
        };
        runtime
            .block_on(client.heartbeat_with_load(agent, Some(load)))
            .expect("heartbeat");
    };
    report(calm, 0.2);
    report(busy, 3.5);

    let chosen = |stderr: &str| -> String {
        let line = stderr
            .lines()
            .find(|l| l.contains("--auto chose"))
            .unwrap_or_else(|| panic!("no choice on stderr: {stderr}"));
        line.split_whitespace()
            .nth(3)
            .unwrap_or_default()
            .to_owned()
    };
    let routed_to = |id: &str| -> String {
        let task = runtime
            .block_on(client.get_task(id, percy_client::Consistency::Linearizable))
            .expect("the exec's record")
            .task
            .expect("a task");
        task.selector
            .get("percy.agent")
            .cloned()
            .unwrap_or_default()
    };

    let run = exec(&ep, &["--auto", "--explain", "--detach", "--", "true"]).ok();
    assert_eq!(chosen(&run.stderr), "calm", "{run:?}");
    assert_eq!(routed_to(run.stdout.trim()), "calm");
    assert!(
        run.stderr
            .contains("busy: (load 3.50 + 0 running) on 4 cores = 0.88/core"),
        "--explain prints the figures: {}",
        run.stderr
    );
    assert!(
        run.stderr
            .contains("calm: (load 0.20 + 0 running) on 4 cores = 0.05/core"),
        "{}",
        run.stderr
    );

    // The loads change: so does the choice.
    report(calm, 7.0);
    report(busy, 0.5);
    let run = exec(
        &ep,
        &["--auto", "--on", "os=linux", "--detach", "--", "true"],
    )
    .ok();
    assert_eq!(chosen(&run.stderr), "busy", "{run:?}");
    assert_eq!(routed_to(run.stdout.trim()), "busy");

    let listed = percyctl(&ep, &["agent", "list"]).ok().stdout;
    let row = |name: &str| -> String {
        listed
            .lines()
            .find(|l| l.contains(name))
            .unwrap_or_else(|| panic!("{name} is not listed: {listed}"))
            .to_owned()
    };
    assert!(row("calm").contains("7.00"), "{listed}");
    assert!(row("busy").contains("0.50"), "{listed}");
    assert!(row("busy").contains("3.0G/16.0G"), "{listed}");
    assert!(row("busy").contains("1 (1 exec)"), "{listed}");
    let json = percyctl(&ep, &["-o", "json", "agent", "list"]).ok().json();
    let agents = json["agents"].as_array().expect("agents");
    let calm_json = agents.iter().find(|a| a["name"] == "calm").expect("calm");
    assert_eq!(calm_json["load"]["load_avg_1m"], 7.0);
    assert_eq!(calm_json["load"]["cores"], 4);

    let status = percyctl(&ep, &["cluster", "status"]).ok().stdout;
    assert!(
        status
            .lines()
            .any(|l| l.contains("busy") && l.contains("0.50")),
        "cluster status shows the agents' loads: {status}"
    );
}
