//! The fault-injection suite against real `percyd` processes.
//!
//! `cargo test -p percy-tests` runs one short seeded schedule per workload (about 30 s of
//! faults each, every fault), plus a shorter register run whose only fault is `restart-all`
//! and one with TLS and `--auth` on, and register, queue and claim runs under the power-loss
//! faults only (data dirs on percy-lazyfs mounts). Soaks: `PERCY_SOAK_SECS=600 PERCY_SEEDS=random:20 cargo test -p percy-tests
//! --release -- --nocapture` (see the crate README for every knob). Runs are serialised: the
//! CI box has two cores and each run is a three-node cluster.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use percy_tests::cluster::{Cluster, ClusterConfig, LEADER_TIMEOUT};
use percy_tests::nemesis::FaultKind;
use percy_tests::proxy::Mode;
use percy_tests::run::{run, RunOptions, Workload};
use percy_tests::workload::claim::ClaimWorkload;
use percy_tests::workload::expiry::ExpiryWorkload;
use percy_tests::workload::lock::LockWorkload;
use percy_tests::workload::queue::QueueWorkload;
use percy_tests::workload::register::RegisterWorkload;
use percy_tests::workload::watch::{WatchWorkload, WATCHERS};

/// One cluster at a time.
static SERIAL: Mutex<()> = Mutex::new(());
/// Seconds of faults per workload in CI.
const CI_SECS: u64 = 30;
/// Seconds of `restart-all` for the register run that reads right after restarts: 4-5
/// restarts, each of which caught the stale reads of a restored leader about 2 times in 3.
const RESTART_ALL_SECS: u64 = 15;
/// Seconds of faults for the register run with TLS and auth.
const SECURE_SECS: u64 = 20;
/// Seconds of power-loss faults per workload (three workloads; keep CI short).
const POWER_LOSS_SECS: u64 = 20;
/// Workers per workload.
const WORKERS: u64 = 5;
/// How soon the harness must report a node that exits at start (percyd refuses a bad data
/// dir in well under a second; the rest is margin for a loaded machine).
const DEATH_REPORTED_WITHIN: Duration = Duration::from_secs(20);
/// Runtime threads for clients and workers.
const RUNTIME_THREADS: usize = 2;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(RUNTIME_THREADS)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// Runs `make()` once per configured seed with every fault for [`CI_SECS`]; panics with the
/// summary of any invalid run.
fn run_workload<W: Workload>(make: impl Fn() -> W, default_seed: u64, workers: u64) {
    run_workload_with(make, default_seed, workers, CI_SECS, &FaultKind::ALL, false);
}

/// [`run_workload`] with other defaults for the duration and the faults (the environment
/// still overrides both).
fn run_workload_with<W: Workload>(
    make: impl Fn() -> W,
    default_seed: u64,
    workers: u64,
    default_secs: u64,
    default_faults: &[FaultKind],
    secure: bool,
) {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let runs = RunOptions::from_env(default_seed, default_secs, workers, default_faults)
        .expect("run options");
    let runtime = runtime();
    for mut options in runs {
        options.secure = secure;
        let summary = runtime
            .block_on(run(Arc::new(make()), &options))
            .unwrap_or_else(|e| panic!("seed {}: run failed: {e:#}", options.seed));
        assert!(summary.valid, "{summary}");
    }
}

#[test]
fn register_is_linearizable_under_faults() {
    run_workload(RegisterWorkload::default, 1, WORKERS);
}

/// Whole-cluster crashes restarted at once, with every restarted node read the moment it
/// answers: a leader that resumes its old term must not serve a read from before the crash's
/// commit point (its read index must cover everything acknowledged).
#[test]
fn register_reads_right_after_whole_cluster_restarts() {
    run_workload_with(
        RegisterWorkload::default,
        6,
        WORKERS,
        RESTART_ALL_SECS,
        &[FaultKind::RestartAll],
        false,
    );
}

/// The register workload on a cluster with TLS on every link (mutual between peers, through
/// the nemesis's proxies) and `--auth`, clients presenting the admin certificate, under every
/// fault: security must cost no safety, and membership changes must work with certificates.
#[test]
fn register_is_linearizable_with_tls_and_auth() {
    run_workload_with(
        RegisterWorkload::default,
        8,
        WORKERS,
        SECURE_SECS,
        &FaultKind::ALL,
        true,
    );
}

/// Power cuts (`power-loss-one`, `-majority`, `-all`): nodes SIGKILLed and their unsynced
/// writes dropped by the lazy filesystem under their data dirs, then restarted on what
/// survived. Nothing acknowledged may be lost, and no node may refuse to start.
#[test]
fn register_survives_power_loss() {
    run_workload_with(
        RegisterWorkload::default,
        11,
        WORKERS,
        POWER_LOSS_SECS,
        &FaultKind::POWER_LOSS,
        false,
    );
}

#[test]
fn queue_survives_power_loss() {
    run_workload_with(
        || QueueWorkload,
        12,
        WORKERS,
        POWER_LOSS_SECS,
        &FaultKind::POWER_LOSS,
        false,
    );
}

#[test]
fn claims_survive_power_loss() {
    run_workload_with(
        || ClaimWorkload::new(WORKERS),
        13,
        WORKERS,
        POWER_LOSS_SECS,
        &FaultKind::POWER_LOSS,
        false,
    );
}

#[test]
fn queue_loses_no_acknowledged_submission() {
    run_workload(|| QueueWorkload, 2, WORKERS);
}

#[test]
fn claims_are_never_doubled_or_lost() {
    run_workload(|| ClaimWorkload::new(WORKERS), 3, WORKERS);
}

#[test]
fn locks_exclude_and_fence() {
    run_workload(|| LockWorkload::new(WORKERS), 4, WORKERS);
}

#[test]
fn leases_and_agents_expire_only_when_due() {
    run_workload(|| ExpiryWorkload::new(WORKERS), 7, WORKERS);
}

#[test]
fn watchers_see_every_revision_once() {
    run_workload(WatchWorkload::default, 5, WATCHERS + 2);
}

/// The harness itself: isolating the leader through the proxies must move leadership (this
/// fails if percyd dials the Raft membership's addresses instead of its local --peers),
/// kill / restart / pause / resume must leave a cluster that elects a leader again, and a node
/// that dies on restart is reported with its log at once, not as a missing leader later.
#[test]
fn harness_controls_links_and_processes() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = std::env::temp_dir().join(format!("percy-harness-{}", std::process::id()));
    let runtime = runtime();
    runtime.block_on(async {
        let mut cluster = Cluster::start(&ClusterConfig {
            nodes: 3,
            dir: dir.clone(),
            extra_args: Vec::new(),
            secure: false,
            power_loss: false,
        })
        .expect("start cluster");
        let leader = cluster
            .wait_for_leader(LEADER_TIMEOUT)
            .await
            .expect("leader");

        let others: Vec<u64> = cluster
            .ids()
            .into_iter()
            .filter(|&id| id != leader)
            .collect();
        let mut blocked = BTreeSet::new();
        for &other in &others {
            blocked.insert((leader, other));
            blocked.insert((other, leader));
        }
        cluster.set_network(&blocked, Mode::Hang);
        let deadline = tokio::time::Instant::now() + LEADER_TIMEOUT;
        let new_leader = loop {
            let majority = percy_tests::cluster::probe_leader(
                &cluster
                    .live_nodes()
                    .into_iter()
                    .filter(|(id, _)| *id != leader)
                    .collect::<Vec<_>>(),
                cluster.security(),
            )
            .await;
            if let Some(new) = majority.filter(|id| *id != leader) {
                break new;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "isolating leader {leader} through the proxies did not move leadership: \
                 does percyd dial its local --peers addresses?"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        };
        assert!(others.contains(&new_leader));
        cluster.heal_network();

        cluster.kill(new_leader).expect("kill");
        assert!(!cluster.is_running(new_leader));
        let other = cluster
            .ids()
            .into_iter()
            .find(|&id| id != new_leader)
            .expect("another node");
        cluster.pause(other).expect("pause");
        cluster.resume(other).expect("resume");
        cluster.restart(new_leader).expect("restart");
        let leader = cluster
            .wait_for_leader(LEADER_TIMEOUT)
            .await
            .expect("leader after restart");

        // A data dir that is a plain file: percyd refuses it and exits.
        let victim = cluster
            .ids()
            .into_iter()
            .find(|&id| id != leader)
            .expect("a follower");
        cluster.kill(victim).expect("kill");
        let data_dir = cluster.data_dir(victim).to_owned();
        std::fs::remove_dir_all(&data_dir).expect("remove data dir");
        std::fs::write(&data_dir, b"not a data dir").expect("plant a file");
        cluster.restart(victim).expect("restart");
        let started = tokio::time::Instant::now();
        let error = cluster
            .wait_for_leader(LEADER_TIMEOUT)
            .await
            .expect_err("a node that died on restart must be reported");
        let message = format!("{error:#}");
        assert!(
            message.contains(&format!("node {victim} exited on its own"))
                && message.contains("after its restart #")
                && message.contains("node-"),
            "{message}"
        );
        assert!(
            started.elapsed() < DEATH_REPORTED_WITHIN,
            "death reported after {:?}: {message}",
            started.elapsed()
        );
    });
    drop(runtime);
    let _ = std::fs::remove_dir_all(&dir);
}
