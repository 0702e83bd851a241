//! The fault-injection suite against real `percyd` processes.
//!
//! `cargo test -p percy-tests` runs one short seeded schedule per workload (about 30 s of
//! faults each). Soaks: `PERCY_SOAK_SECS=600 PERCY_SEEDS=random:20 cargo test -p percy-tests
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
use percy_tests::workload::lock::LockWorkload;
use percy_tests::workload::queue::QueueWorkload;
use percy_tests::workload::register::RegisterWorkload;
use percy_tests::workload::watch::{WatchWorkload, WATCHERS};

/// One cluster at a time.
static SERIAL: Mutex<()> = Mutex::new(());
/// Seconds of faults per workload in CI.
const CI_SECS: u64 = 30;
/// Workers per workload.
const WORKERS: u64 = 5;
/// Runtime threads for clients and workers.
const RUNTIME_THREADS: usize = 2;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(RUNTIME_THREADS)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// Runs `make()` once per configured seed; panics with the summary of any invalid run.
fn run_workload<W: Workload>(make: impl Fn() -> W, default_seed: u64, workers: u64) {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let runs =
        RunOptions::from_env(default_seed, CI_SECS, workers, &FaultKind::ALL).expect("run options");
    let runtime = runtime();
    for options in runs {
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
fn watchers_see_every_revision_once() {
    run_workload(WatchWorkload::default, 5, WATCHERS + 2);
}

/// The harness itself: isolating the leader through the proxies must move leadership (this
/// fails if percyd dials the Raft membership's addresses instead of its local --peers), and
/// kill / restart / pause / resume must leave a cluster that elects a leader again.
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
        cluster
            .wait_for_leader(LEADER_TIMEOUT)
            .await
            .expect("leader after restart");
    });
    drop(runtime);
    let _ = std::fs::remove_dir_all(&dir);
}
