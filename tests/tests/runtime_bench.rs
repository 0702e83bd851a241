//! `percyctl bench` end to end, as BENCHMARKS.md runs it: `--local 3` starts three real
//! `percyd` processes (fsync on), runs one workload briefly and tears the cluster down. Each
//! test checks the JSON line the anchor tool shares the schema of, that the workload did work,
//! and the workload's own verification (no task claimed twice, no lost update under the lock,
//! no Raft entry per heartbeat, a restarted node caught up before it served).
//!
//! The figures themselves are not checked: performance lives in BENCHMARKS.md, not in tests.

use std::process::Command;
use std::sync::Mutex;

use anyhow::{ensure, Context, Result};
use percy_tests::binaries::{percyctl_binary, percyd_binary};
use serde_json::Value;

/// The fields every workload's line carries, shared with the etcd/NATS load generator (anchor-bench) BENCHMARKS.md compares against.
const SCHEMA: [&str; 8] = [
    "workload",
    "clients",
    "duration_s",
    "ok_ops",
    "failed_ops",
    "ops_per_s",
    "p50_ms",
    "p99_ms",
];

/// One benchmark at a time: each starts three nodes, and CI has two cores.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Runs `percyctl -o json bench <workload> --local 3 …` and returns its JSON line.
fn bench(workload: &str, args: &[&str]) -> Result<Value> {
    let _serial = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let output = Command::new(percyctl_binary()?)
        .args(["-o", "json", "bench", workload, "--local", "3", "--percyd"])
        .arg(percyd_binary()?)
        .args(args)
        .output()
        .context("run percyctl bench")?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    ensure!(
        output.status.success(),
        "percyctl bench {workload} failed ({}):\n{stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let line = stdout
        .lines()
        .rev()
        .find(|line| line.starts_with('{'))
        .with_context(|| format!("no JSON line in:\n{stdout}"))?;
    let report: Value = serde_json::from_str(line).with_context(|| line.to_string())?;
    ensure!(report["workload"] == workload, "wrong workload: {line}");
    Ok(report)
}

/// A measured workload: the shared schema, the client count asked for, and some work done.
fn measured(workload: &str, clients: u64, args: &[&str]) -> Result<Value> {
    let clients_arg = clients.to_string();
    let window = ["-c", clients_arg.as_str(), "-d", "1s", "--warmup", "0s"];
    let report = bench(workload, &[&window[..], args].concat())?;
    for field in SCHEMA {
        ensure!(report.get(field).is_some(), "no {field} in {report}");
    }
    ensure!(report["clients"] == clients, "clients: {report}");
    ensure!(
        report["ok_ops"].as_u64() > Some(0),
        "no work done: {report}"
    );
    ensure!(
        report["ops_per_s"].as_f64() > Some(0.0),
        "no rate: {report}"
    );
    Ok(report)
}

fn verified(report: &Value) -> Result<()> {
    ensure!(
        report["verify"]["ok"] == true,
        "verification failed: {report}"
    );
    Ok(())
}

#[test]
fn claim_random_races_and_no_task_is_claimed_twice() -> Result<()> {
    let report = measured("claim-random", 8, &["--tasks", "300", "--plan-size", "100"])?;
    verified(&report)?;
    ensure!(report["verify"]["double_claims"] == 0, "{report}");
    ensure!(report["tasks"] == 300, "{report}");
    Ok(())
}

#[test]
fn claim_next_claims_and_completes() -> Result<()> {
    let report = measured("claim-next", 4, &["--tasks", "300", "--plan-size", "100"])?;
    verified(&report)
}

/// No check of `failed_ops`: an election on a loaded CI box may fail a write whose retry then
/// conflicts; what must hold is that every key's revision and version add up.
#[test]
fn cas_writes_see_only_their_own_versions() -> Result<()> {
    let report = measured("cas", 4, &[])?;
    verified(&report)
}

#[test]
fn lock_handoffs_lose_no_update_and_never_reuse_a_fencing_token() -> Result<()> {
    let report = measured("lock", 4, &[])?;
    verified(&report)?;
    let verify = &report["verify"];
    ensure!(verify["counter"] == verify["increments"], "{report}");
    ensure!(
        verify["grants"] == verify["distinct_fencing_tokens"],
        "{report}"
    );
    Ok(())
}

#[test]
fn linearizable_and_serializable_reads() -> Result<()> {
    let linearizable = measured("read", 4, &["--read-keys", "50"])?;
    ensure!(
        linearizable["consistency"] == "linearizable",
        "{linearizable}"
    );
    let serializable = measured("read", 4, &["--read-keys", "50", "--serializable"])?;
    ensure!(
        serializable["consistency"] == "serializable",
        "{serializable}"
    );
    Ok(())
}

#[test]
fn heartbeats_cause_no_raft_entries() -> Result<()> {
    // The heartbeat workload's clients are its connections.
    let report = measured(
        "heartbeat",
        2,
        &["--agents", "200", "--rate", "5", "--connections", "2"],
    )?;
    let accepted = report["ok_ops"].as_u64().unwrap_or(0);
    let entries = report["raft_entries"]
        .as_u64()
        .with_context(|| format!("no raft_entries: {report}"))?;
    // Zero is the target; one stray entry (a liveness checkpoint) must not fail the test, one
    // entry per heartbeat must.
    ensure!(
        entries * 100 < accepted,
        "{entries} Raft entries for {accepted} heartbeats: {report}"
    );
    ensure!(
        report.get("leader_cpu_pct_of_one_core").is_some(),
        "--local knows the leader's pid, so its CPU is reported: {report}"
    );
    Ok(())
}

#[test]
fn heartbeat_refuses_a_client_count_other_than_its_connections() -> Result<()> {
    let output = Command::new(percyctl_binary()?)
        .args([
            "bench",
            "heartbeat",
            "-c",
            "8",
            "--connections",
            "2",
            "--local",
            "3",
        ])
        .output()?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    ensure!(
        output.status.code() == Some(2),
        "{}: {stderr}",
        output.status
    );
    ensure!(stderr.contains("--connections 8"), "{stderr}");
    Ok(())
}

#[test]
fn a_restarted_node_serves_after_catching_up() -> Result<()> {
    let report = bench("restart", &["--tasks", "2000", "--plan-size", "500"])?;
    ensure!(report["tasks"] == 2000, "{report}");
    let ms = report["restart_to_linearizable_read_ms"].as_f64();
    ensure!(ms > Some(0.0), "no recovery time: {report}");
    ensure!(
        report["applied_index_when_serving"].as_u64()
            >= report["applied_index_before_kill"].as_u64(),
        "served before catching up: {report}"
    );
    // Every node's memory growth per task is reported (these tests run on Linux).
    let per_task = report["rss_bytes_per_task"]
        .as_array()
        .ok_or_else(|| anyhow::anyhow!("no rss_bytes_per_task: {report}"))?;
    ensure!(per_task.len() == 3, "one figure per node: {report}");
    ensure!(
        per_task.iter().all(|v| v.as_f64().is_some()),
        "a node's RSS was not read: {report}"
    );
    Ok(())
}

/// The pipeline's three modes, small: every task completed exactly once by the workers
/// (in-process, forking `sh -c`, and merging into a scratch repository).
#[test]
fn the_pipeline_completes_every_task_once_in_each_mode() -> Result<()> {
    let modes: [(&[&str], &str); 3] = [
        (&[], "in-process"),
        (&["--exec", "true"], "exec"),
        (&["--git"], "in-process+git"),
    ];
    for (flags, mode) in modes {
        let common = ["--workers", "4", "--tasks", "40", "--plan-size", "10"];
        let report = bench("pipeline", &[&common[..], flags].concat())?;
        ensure!(report["mode"] == mode, "{report}");
        ensure!(report["completed"] == 40, "{report}");
        ensure!(
            report["anomalies"] == 0 && report["verify_ok"] == true,
            "{report}"
        );
        ensure!(report["tasks_per_s"].as_f64() > Some(0.0), "{report}");
    }
    Ok(())
}

#[test]
fn the_pipeline_refuses_an_empty_command() -> Result<()> {
    let err = bench("pipeline", &["--exec", " ", "--tasks", "1"]).unwrap_err();
    ensure!(
        format!("{err:#}").contains("--exec needs a command"),
        "{err:#}"
    );
    Ok(())
}
