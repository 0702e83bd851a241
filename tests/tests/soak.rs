//! `percy-soak` end to end: a short real soak writes a well-formed results file, a failing
//! verdict makes it exit non-zero with the failure and the kept history recorded, and SIGTERM
//! stops it cleanly with the interrupted run still checked and written.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// One soak at a time (each run is a three-node cluster on a two-core machine).
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
/// How long a soak of `--total 30s` may take on a loaded machine (the last run's heal, final
/// reads and checks come after the budget).
const SOAK_DEADLINE: Duration = Duration::from_secs(300);
/// How long to wait for the first run to be under way before interrupting it.
const RUN_START_DEADLINE: Duration = Duration::from_secs(120);

fn soak_command(dir: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_percy-soak"));
    command
        .args(args)
        .arg("--out")
        .arg(dir.join("results.jsonl"))
        .arg("--run-dir")
        .arg(dir.join("runs"))
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit());
    command
}

/// Waits for `child` to exit, killing it (and failing) past `deadline`.
fn wait(child: &mut Child, deadline: Duration) -> ExitStatus {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("wait for percy-soak") {
            return status;
        }
        if started.elapsed() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("percy-soak still running after {deadline:?}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The results file's lines: header, runs, summary (checks that shape).
fn read_results(dir: &Path) -> (Value, Vec<Value>, Value) {
    let text = std::fs::read_to_string(dir.join("results.jsonl")).expect("results file");
    let mut lines: Vec<Value> = text
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect();
    assert!(lines.len() >= 2, "{text}");
    let summary = lines.pop().expect("summary");
    let header = lines.remove(0);
    assert_eq!(header["type"], "soak", "{header}");
    assert_eq!(summary["type"], "summary", "{summary}");
    for run in &lines {
        assert_eq!(run["type"], "run", "{run}");
        for field in ["workload", "nemesis", "seed", "fault_secs", "dir", "replay"] {
            assert!(!run[field].is_null(), "{field} missing: {run}");
        }
        for status in ["attempted", "ok", "fail", "info"] {
            assert!(run["ops"][status].is_u64(), "ops.{status} missing: {run}");
        }
    }
    assert_eq!(
        summary["runs"].as_u64(),
        Some(lines.len() as u64),
        "{summary}"
    );
    (header, lines, summary)
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("percy-soak-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

#[test]
fn a_short_soak_writes_a_results_file_with_runs_and_verdicts() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = temp_dir("short");
    let mut child = soak_command(
        &dir,
        &[
            "--total",
            "30s",
            "--per-run",
            "15s",
            "--seed",
            "7",
            "--workloads",
            "queue,register",
            "--nemeses",
            "membership,crash",
        ],
    )
    .spawn()
    .expect("start percy-soak");
    let status = wait(&mut child, SOAK_DEADLINE);
    let (header, runs, summary) = read_results(&dir);
    assert!(status.success(), "{status}: {summary}");
    assert_eq!(header["seed"], 7);
    assert!(!runs.is_empty(), "{summary}");
    for run in &runs {
        assert_eq!(run["valid"], true, "{run}");
        let verdicts = run["verdicts"].as_array().expect("verdicts");
        assert!(!verdicts.is_empty(), "{run}");
        assert!(verdicts.iter().all(|v| v["validity"] == "valid"), "{run}");
        assert!(run["ops"]["ok"].as_u64() > Some(0), "{run}");
        assert!(Path::new(run["dir"].as_str().expect("dir"))
            .join("history.jsonl")
            .exists());
    }
    assert_eq!(summary["failed"], 0, "{summary}");
    assert_eq!(summary["interrupted"], false, "{summary}");
    assert!(summary["ops"]["attempted"].as_u64() > Some(0), "{summary}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A client that reads without a barrier (`PERCY_REGISTER_READS=serializable`) under network
/// partitions: the register run must be INVALID, and the soak must say so and exit non-zero.
#[test]
fn a_failed_verdict_is_recorded_and_fails_the_soak() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = temp_dir("fail");
    let mut child = soak_command(
        &dir,
        &[
            "--total",
            "20s",
            "--per-run",
            "20s",
            "--seed",
            "3",
            "--workloads",
            "register",
            "--nemeses",
            "partition",
        ],
    )
    .env("PERCY_REGISTER_READS", "serializable")
    .spawn()
    .expect("start percy-soak");
    let status = wait(&mut child, SOAK_DEADLINE);
    let (_, runs, summary) = read_results(&dir);
    assert_eq!(status.code(), Some(1), "{summary}");
    assert_eq!(summary["failed"], 1, "{summary}");
    let run = &runs[0];
    assert_eq!(run["valid"], false, "{run}");
    let failure = run["failure"].as_str().expect("failure text");
    assert!(failure.contains("not linearizable"), "{failure}");
    let kept: Vec<&str> = run["kept"]
        .as_array()
        .expect("kept")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        kept.contains(&"history.jsonl") && kept.contains(&"cluster"),
        "{run}"
    );
    assert_eq!(summary["failures"][0]["seed"], run["seed"], "{summary}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// SIGTERM in the middle of a run: its faults stop, it heals and is checked, its line and the
/// summary are written, no other run starts, and the exit status says "interrupted".
#[test]
fn sigterm_stops_the_soak_cleanly_and_keeps_what_finished() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = temp_dir("sigterm");
    let mut child = soak_command(
        &dir,
        &[
            "--total",
            "10m",
            "--per-run",
            "5m",
            "--workloads",
            "queue",
            "--nemeses",
            "crash",
        ],
    )
    .spawn()
    .expect("start percy-soak");
    // Under way: the run's history has operations in it.
    let started = Instant::now();
    loop {
        let histories = std::fs::read_dir(dir.join("runs"))
            .map(|entries| {
                entries
                    .filter_map(|e| e.ok())
                    .filter_map(|e| std::fs::read_to_string(e.path().join("history.jsonl")).ok())
                    .map(|text| text.lines().count())
                    .sum::<usize>()
            })
            .unwrap_or(0);
        if histories > 20 {
            break;
        }
        assert!(
            started.elapsed() < RUN_START_DEADLINE,
            "the first run did not start"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    std::thread::sleep(Duration::from_secs(5));
    let pid = libc::pid_t::try_from(child.id()).expect("pid");
    // SAFETY: kill(2) with the pid of a child this test started and has not reaped.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let interrupted_at = Instant::now();
    let status = wait(&mut child, SOAK_DEADLINE);
    let (_, runs, summary) = read_results(&dir);
    assert_eq!(status.code(), Some(2), "{summary}");
    // Far sooner than the 5 minutes the run had left (heal, final reads and checks only).
    assert!(interrupted_at.elapsed() < Duration::from_secs(150));
    assert_eq!(runs.len(), 1, "{summary}");
    assert_eq!(runs[0]["interrupted"], true, "{}", runs[0]);
    assert_eq!(runs[0]["valid"], true, "{}", runs[0]);
    assert!(!runs[0]["verdicts"].as_array().expect("verdicts").is_empty());
    assert_eq!(summary["interrupted"], true, "{summary}");
    assert_eq!(summary["failed"], 0, "{summary}");
    let _ = std::fs::remove_dir_all(&dir);
}
