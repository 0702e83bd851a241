//! `percyctl worker` as a real process: killed with SIGKILL, it must not leave its task's
//! command (nor what that command started) running; started again, it reaps what a previous
//! run left behind; stopped cleanly, it leaves no state dir behind.

mod ctl;
#[path = "../../tests/support/mod.rs"]
mod support;

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ctl::{percyctl, percyctl_command, ChildGuard};
use support::TestCluster;

/// How long a killed process may take to disappear: generous for a loaded CI box.
const DEATH_LIMIT: Duration = Duration::from_secs(5);
/// How long a worker may take to pick up a task or to start.
const START_LIMIT: Duration = Duration::from_secs(30);

fn spawn_worker(
    endpoints: &str,
    name: &str,
    state_dir: &Path,
    exec: &str,
    stderr: Stdio,
) -> ChildGuard {
    let child = percyctl_command(
        endpoints,
        &[
            "worker",
            "--name",
            name,
            "--ttl",
            "10m",
            "--inbox-dir",
            state_dir.to_str().expect("utf-8 temp dir"),
            "--exec",
            exec,
        ],
    )
    .stdout(Stdio::null())
    .stderr(stderr)
    // Logs at info, so that the clean exit below has something to say.
    .env("RUST_LOG", "info")
    .spawn()
    .expect("spawn percyctl worker");
    ChildGuard(child)
}

fn wait_for(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn read_pid(path: &Path) -> Option<i32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Whether `pid` runs (a zombie, waiting for a parent that may never reap it, does not).
fn alive(pid: i32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let state = stat
        .rfind(')')
        .and_then(|end| stat[end + 1..].split_whitespace().next());
    state != Some("Z")
}

fn sigkill(child: &Child) {
    let pid = i32::try_from(child.id()).expect("pid fits");
    // SAFETY: kill(2) on our own child; it touches no memory of ours.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
}

#[test]
fn a_worker_killed_with_sigkill_takes_its_command_and_grandchildren_along() {
    let cluster = TestCluster::start(1);
    let ep = cluster.endpoints_arg();
    let dir = tempfile::tempdir().unwrap();
    let (child_file, grandchild_file) = (dir.path().join("child"), dir.path().join("grandchild"));
    // The command records its own pid, starts a grandchild and waits: the LLM agent that
    // must not keep editing after its worker is gone.
    let exec = format!(
        "echo $$ > {}; sleep 60 & echo $! > {}; wait",
        child_file.display(),
        grandchild_file.display()
    );
    let mut worker = spawn_worker(
        &ep,
        "doomed",
        &dir.path().join("state"),
        &exec,
        Stdio::null(),
    );
    percyctl(&ep, &["task", "submit", "--id", "t1", "--title", "t1"]).ok();
    wait_for("the command to start", START_LIMIT, || {
        read_pid(&child_file).is_some() && read_pid(&grandchild_file).is_some()
    });
    let (child, grandchild) = (
        read_pid(&child_file).unwrap(),
        read_pid(&grandchild_file).unwrap(),
    );
    assert!(alive(child) && alive(grandchild));

    sigkill(&worker.0);
    worker.0.wait().unwrap();
    wait_for("the command and its child to die", DEATH_LIMIT, || {
        !alive(child) && !alive(grandchild)
    });
}

#[test]
fn a_restarted_worker_reaps_what_a_previous_run_left_and_a_clean_exit_leaves_no_state_dir() {
    let cluster = TestCluster::start(1);
    let ep = cluster.endpoints_arg();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let records = state.join("running-phoenix");
    std::fs::create_dir_all(&records).unwrap();

    // What a previous run left: a command group still running (its supervisor was killed
    // too, say), and its crash record in the state dir.
    let mut leftover = Command::new("sh")
        .args(["-c", "sleep 60 & wait"])
        .process_group(0)
        .spawn()
        .unwrap();
    let pgid = i32::try_from(leftover.id()).unwrap();
    let stat = std::fs::read_to_string(format!("/proc/{pgid}/stat")).unwrap();
    let start_ticks = stat[stat.rfind(')').unwrap() + 1..]
        .split_whitespace()
        .nth(19)
        .unwrap()
        .to_owned();
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap();
    std::fs::write(
        records.join(format!("{pgid}.pgid")),
        format!(
            "pgid={pgid}\nstart_ticks={start_ticks}\nboot_id={}\ntask=t0\n",
            boot.trim()
        ),
    )
    .unwrap();

    let mut worker = spawn_worker(&ep, "phoenix", &state, "true", Stdio::piped());
    wait_for("the leftover group to be killed", START_LIMIT, || {
        leftover.try_wait().unwrap().is_some()
    });
    // Registered, so past its start-up: a clean stop must remove its state dir.
    wait_for("the worker to register", START_LIMIT, || {
        percyctl(&ep, &["-o", "json", "agent", "list"])
            .stdout
            .contains("phoenix")
    });
    let pid = i32::try_from(worker.0.id()).unwrap();
    // SAFETY: kill(2) on our own child.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let stopped = worker.wait_output();
    assert_eq!(stopped.code, 0, "{stopped:?}");
    // stderr is a pipe here, not a terminal: plain text, no colour codes.
    assert!(stopped.stderr.contains("worker stopped"), "{stopped:?}");
    assert!(
        !stopped.stderr.contains('\x1b'),
        "ANSI codes in a log: {stopped:?}"
    );
    assert!(
        !state.exists(),
        "the state dir outlived a clean exit: {:?}",
        std::fs::read_dir(&state).map(|d| d.flatten().map(|e| e.path()).collect::<Vec<_>>())
    );
}
