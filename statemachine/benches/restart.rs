//! What a restarting node pays in the state machine: replaying plan submissions from the log,
//! and restoring a snapshot image of the same state.
//!
//! The workload mirrors `percyctl bench restart`: plans of 1,000 tasks with short ids and a
//! title, each submitted through a client session (8 clients, so 8 responses in flight).
//! Each phase is timed `RUNS` times and the median reported.
//!
//! Run: `cargo bench -p percy-statemachine --bench restart [-- --tasks N --plan-size N]`

use std::time::{Duration, Instant};

use percy_statemachine::{Command, Op, SessionRef, StateMachine, TaskSpec};

const DEFAULT_TASKS: usize = 1_000_000;
const DEFAULT_PLAN_SIZE: usize = 1_000;
/// Clients submitting at once, as in the cluster benchmark's setup.
const CLIENTS: u64 = 8;
const RUNS: usize = 3;

/// The log: one command per plan, with the timestamp its leader stamped.
fn log(tasks: usize, plan_size: usize) -> Vec<Command> {
    (0..tasks.div_ceil(plan_size))
        .map(|n| {
            let start = n * plan_size;
            let specs = (start..(start + plan_size).min(tasks))
                .map(|t| TaskSpec {
                    id: Some(format!("b-{t:07}")),
                    title: format!("bench task {t}"),
                    ..TaskSpec::default()
                })
                .collect();
            let client = n as u64 % CLIENTS;
            let seq = n as u64 / CLIENTS + 1;
            Command::with_session(
                Op::SubmitPlan {
                    plan_id: Some(format!("p{n:05}")),
                    tasks: specs,
                },
                SessionRef {
                    client_id: client + 1,
                    seq,
                    acked_below: seq,
                },
            )
        })
        .collect()
}

/// As a restarting node replays: nobody watches yet, so no change events are built.
fn replay(log: &[Command]) -> StateMachine {
    let mut machine = StateMachine::new();
    for (n, command) in log.iter().enumerate() {
        let revision = n as u64 + 1;
        let applied = machine.apply_without_events(revision, 1_000 + revision, command.clone());
        if let Err(e) = applied.response {
            panic!("replay failed at revision {revision}: {e}");
        }
    }
    machine
}

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map_or(default, |v| {
            v.parse().unwrap_or_else(|e| panic!("{name} {v}: {e}"))
        })
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` would pass other flags: only the
    // real bench run measures.
    if !std::env::args().any(|arg| arg == "--bench") {
        println!("restart: skipped (run with `cargo bench`)");
        return;
    }
    let tasks = arg("--tasks", DEFAULT_TASKS);
    let plan_size = arg("--plan-size", DEFAULT_PLAN_SIZE);
    let log = log(tasks, plan_size);
    println!(
        "restart: {tasks} tasks in {} plans of {plan_size}, median of {RUNS} runs",
        log.len()
    );

    let mut machine = None;
    let mut times = Vec::with_capacity(RUNS);
    for _ in 0..RUNS {
        let start = Instant::now();
        let replayed = replay(&log);
        times.push(start.elapsed());
        // Dropping a million tasks takes a while too; keep it out of the next measurement.
        drop(machine.replace(replayed));
    }
    let replay_time = median(times);
    let Some(machine) = machine else {
        unreachable!("RUNS is at least 1")
    };

    let mut times = Vec::with_capacity(RUNS);
    let mut image = Vec::new();
    for _ in 0..RUNS {
        let start = Instant::now();
        image = machine.snapshot();
        times.push(start.elapsed());
    }
    let snapshot_time = median(times);

    let mut times = Vec::with_capacity(RUNS);
    for _ in 0..RUNS {
        let start = Instant::now();
        let restored = StateMachine::restore(&image);
        times.push(start.elapsed());
        match restored {
            Ok(restored) => assert!(restored == machine, "restored state differs"),
            Err(e) => panic!("restore failed: {e}"),
        }
    }
    let restore_time = median(times);

    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!("replay log     {:>8.0} ms", ms(replay_time));
    println!(
        "snapshot       {:>8.0} ms ({:.1} MB)",
        ms(snapshot_time),
        image.len() as f64 / 1e6
    );
    println!("restore        {:>8.0} ms", ms(restore_time));
}
