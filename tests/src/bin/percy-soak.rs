//! `percy-soak`: every workload under every nemesis for a given total time, each run with a
//! fresh random seed, recorded in a results file (JSON lines).
//!
//! The soak goes in *rounds*: a round is every workload × nemesis pair once, in an order
//! shuffled by the soak's seed; rounds repeat until the time budget is spent (the last run
//! gets what is left of it). Every run is one [`percy_tests::run::run_in`], the same machinery
//! as `cargo test --test jepsen`, with that test's worker counts, so a failing run can be
//! replayed there from its seed (the results file gives the command).
//!
//! The first SIGINT / SIGTERM ends the current run's faults early: it heals, reads and checks
//! as at its normal end, its line and the summary are written and no further run starts. A
//! second one abandons the current run (recorded as `aborted`, without a verdict). Exit status:
//! 1 if any run failed, else 2 if the soak was interrupted, else 0.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, Context, Result};
use clap::{Parser, ValueEnum};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use tokio::sync::watch;

use percy_tests::history::History;
use percy_tests::nemesis::FaultKind;
use percy_tests::run::{run_in, RunOptions, Summary};
use percy_tests::workload::claim::ClaimWorkload;
use percy_tests::workload::expiry::ExpiryWorkload;
use percy_tests::workload::lock::LockWorkload;
use percy_tests::workload::queue::QueueWorkload;
use percy_tests::workload::register::RegisterWorkload;
use percy_tests::workload::watch::{WatchWorkload, WATCHERS};

/// Workers per workload, as in `tests/jepsen.rs` (so that its replay command reproduces a run).
const WORKERS: u64 = 5;
/// Nodes per cluster.
const NODES: u64 = 3;
/// A run shorter than this is not started: the budget is spent.
const MIN_RUN: Duration = Duration::from_secs(10);
/// Anomalies kept per verdict in the results file (the run's `summary.json` has them all).
const MAX_ANOMALIES: usize = 10;
/// Runtime threads for clients and workers, as in `tests/jepsen.rs`.
const RUNTIME_THREADS: usize = 2;
/// How long a shutdown waits for abandoned tasks (an aborted run) to stop.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// Exit statuses.
const EXIT_FAILED: i32 = 1;
const EXIT_INTERRUPTED: i32 = 2;

#[derive(Parser, Debug)]
#[command(
    name = "percy-soak",
    about = "Runs every workload under every nemesis for a total time, with random seeds, and \
             records seeds, operations, faults and verdicts in a results file (JSON lines)"
)]
struct Args {
    /// Wall-clock budget of the soak (e.g. 1h, 90m, 30s); no run starts once it is spent
    #[arg(long, value_parser = humantime::parse_duration, default_value = "1h")]
    total: Duration,
    /// Time under faults of each run (the last run gets what is left of the budget)
    #[arg(long, value_parser = humantime::parse_duration, default_value = "60s")]
    per_run: Duration,
    /// Seed of the soak: the order of the pairs and every run's seed derive from it (random
    /// when absent; always recorded)
    #[arg(long)]
    seed: Option<u64>,
    /// Results file (JSON lines, written run by run; must not exist) [default:
    /// tests/results/soak-<UTC time>.jsonl]
    #[arg(long)]
    out: Option<PathBuf>,
    /// Workloads to cycle through, comma-separated [default: all]
    #[arg(long, value_delimiter = ',', value_enum)]
    workloads: Vec<WorkloadName>,
    /// Nemeses to cycle through, comma-separated: partition, crash, pause, membership,
    /// power-loss, mixed (every fault), or any single fault name [default: the six groups]
    #[arg(long, value_delimiter = ',', value_parser = NemesisSpec::parse)]
    nemeses: Vec<NemesisSpec>,
    /// Where the run directories go [default: <target>/percy-soak/<UTC time>/]
    #[arg(long)]
    run_dir: Option<PathBuf>,
}

/// The workloads of the suite.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum WorkloadName {
    Register,
    Queue,
    Claim,
    Lock,
    Expiry,
    Watch,
}

impl WorkloadName {
    fn name(self) -> &'static str {
        match self {
            WorkloadName::Register => "register",
            WorkloadName::Queue => "queue",
            WorkloadName::Claim => "claim",
            WorkloadName::Lock => "lock",
            WorkloadName::Expiry => "expiry",
            WorkloadName::Watch => "watch",
        }
    }

    fn workers(self) -> u64 {
        match self {
            WorkloadName::Watch => WATCHERS + 2,
            _ => WORKERS,
        }
    }

    /// The `tests/jepsen.rs` test that runs this workload (for the replay command).
    fn jepsen_test(self) -> &'static str {
        match self {
            WorkloadName::Register => "register_is_linearizable_under_faults",
            WorkloadName::Queue => "queue_loses_no_acknowledged_submission",
            WorkloadName::Claim => "claims_are_never_doubled_or_lost",
            WorkloadName::Lock => "locks_exclude_and_fence",
            WorkloadName::Expiry => "leases_and_agents_expire_only_when_due",
            WorkloadName::Watch => "watchers_see_every_revision_once",
        }
    }

    /// Runs this workload once.
    async fn run(
        self,
        options: &RunOptions,
        dir: PathBuf,
        interrupt: watch::Receiver<bool>,
    ) -> Result<Summary> {
        let workers = self.workers();
        match self {
            WorkloadName::Register => {
                run_in(
                    Arc::new(RegisterWorkload::default()),
                    options,
                    dir,
                    interrupt,
                )
                .await
            }
            WorkloadName::Queue => run_in(Arc::new(QueueWorkload), options, dir, interrupt).await,
            WorkloadName::Claim => {
                run_in(
                    Arc::new(ClaimWorkload::new(workers)),
                    options,
                    dir,
                    interrupt,
                )
                .await
            }
            WorkloadName::Lock => {
                run_in(
                    Arc::new(LockWorkload::new(workers)),
                    options,
                    dir,
                    interrupt,
                )
                .await
            }
            WorkloadName::Expiry => {
                run_in(
                    Arc::new(ExpiryWorkload::new(workers)),
                    options,
                    dir,
                    interrupt,
                )
                .await
            }
            WorkloadName::Watch => {
                run_in(Arc::new(WatchWorkload::default()), options, dir, interrupt).await
            }
        }
    }
}

/// A nemesis: a name and the faults its schedule picks from.
#[derive(Debug, Clone, PartialEq, Eq)]
struct NemesisSpec {
    name: String,
    faults: Vec<FaultKind>,
}

impl NemesisSpec {
    /// The groups, each a family of faults (`mixed` is every fault at once).
    fn groups() -> Vec<NemesisSpec> {
        use FaultKind::*;
        let group = |name: &str, faults: &[FaultKind]| NemesisSpec {
            name: name.to_owned(),
            faults: faults.to_vec(),
        };
        vec![
            group(
                "partition",
                &[
                    IsolateOne,
                    IsolateLeader,
                    Halves,
                    MajorityRing,
                    Bridge,
                    OneWay,
                ],
            ),
            group(
                "crash",
                &[KillOne, KillLeader, KillMajority, KillAll, RestartAll],
            ),
            group("pause", &[PauseOne, PauseLeader]),
            group("membership", &[Membership]),
            group("power-loss", &FaultKind::POWER_LOSS),
            group(
                "mixed",
                &FaultKind::ALL
                    .into_iter()
                    .chain(FaultKind::POWER_LOSS)
                    .collect::<Vec<_>>(),
            ),
        ]
    }

    /// A group's name or a single fault's.
    fn parse(name: &str) -> std::result::Result<NemesisSpec, String> {
        let name = name.trim();
        if let Some(group) = NemesisSpec::groups().into_iter().find(|g| g.name == name) {
            return Ok(group);
        }
        match FaultKind::parse(name) {
            Some(fault) => Ok(NemesisSpec {
                name: name.to_owned(),
                faults: vec![fault],
            }),
            None => Err(format!(
                "unknown nemesis {name:?}: expected one of {} or a fault name",
                NemesisSpec::groups()
                    .iter()
                    .map(|g| g.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
        }
    }

    fn fault_names(&self) -> Vec<&'static str> {
        self.faults.iter().map(|f| f.name()).collect()
    }
}

/// The order of the runs: rounds of every pair, each round shuffled.
struct Plan {
    pairs: Vec<(WorkloadName, NemesisSpec)>,
    rng: StdRng,
    round: Vec<usize>,
    rounds_started: u64,
}

impl Plan {
    fn new(workloads: &[WorkloadName], nemeses: &[NemesisSpec], seed: u64) -> Plan {
        let pairs = workloads
            .iter()
            .flat_map(|&w| nemeses.iter().map(move |n| (w, n.clone())))
            .collect();
        Plan {
            pairs,
            rng: StdRng::seed_from_u64(seed),
            round: Vec::new(),
            rounds_started: 0,
        }
    }

    /// The next pair (its index among the pairs) and a fresh seed for its run.
    fn next(&mut self) -> (usize, u64) {
        if self.round.is_empty() {
            self.round = (0..self.pairs.len()).collect();
            self.round.shuffle(&mut self.rng);
            self.round.reverse(); // popped from the back
            self.rounds_started += 1;
        }
        let pair = self.round.pop().expect("a round is never empty");
        // u32 seeds, like PERCY_SEEDS=random:N: short to type when replaying.
        let seed = u64::from(self.rng.gen::<u32>());
        (pair, seed)
    }
}

/// The results file: one JSON object per line, flushed at once.
struct Results {
    file: File,
}

impl Results {
    fn create(path: &Path) -> Result<Results> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("create {}", parent.display()))?;
        }
        let file = File::options()
            .write(true)
            .create_new(true)
            .open(path)
            .with_context(|| format!("create results file {}", path.display()))?;
        Ok(Results { file })
    }

    fn write(&mut self, line: &Value) -> Result<()> {
        writeln!(self.file, "{line}")?;
        self.file.flush()?;
        Ok(())
    }
}

/// Totals over the soak.
#[derive(Default)]
struct Totals {
    runs: usize,
    valid: usize,
    failed: Vec<Value>,
    aborted: usize,
    fault_secs: f64,
    ops: BTreeMap<&'static str, usize>,
    faults: BTreeMap<String, usize>,
    faults_total: usize,
    power_cuts: usize,
    unsynced_lost: usize,
    pairs_run: BTreeSet<usize>,
}

fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

/// The 1, 5 and 15 minute load averages (the machine may be shared: the results say so).
fn load_average() -> Value {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|text| {
            text.split_whitespace()
                .take(3)
                .filter_map(|n| n.parse::<f64>().ok())
                .collect::<Vec<_>>()
        })
        .map_or(Value::Null, |loads| json!(loads))
}

/// What a run's history says: operations by status and nemesis actions by name (read from
/// the file, so that a run that ended in an error is counted too).
fn history_counts(dir: &Path) -> (Value, BTreeMap<String, usize>) {
    let Ok(history) = History::load(&dir.join("history.jsonl")) else {
        return (Value::Null, BTreeMap::new());
    };
    let counts = history.status_counts();
    let ops = json!({
        "attempted": counts.ok + counts.fail + counts.info,
        "ok": counts.ok,
        "fail": counts.fail,
        "info": counts.info,
    });
    let mut faults = BTreeMap::new();
    for event in &history.nemesis {
        if event.op != "heal" && event.op != "leader" {
            *faults.entry(event.op.clone()).or_insert(0) += 1;
        }
    }
    (ops, faults)
}

/// What is left in a run directory.
fn kept(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// `<target>` for this binary at `<target>/<profile>/percy-soak`.
fn default_target_dir() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.ancestors().nth(2).map(Path::to_owned))
        .unwrap_or_else(std::env::temp_dir)
}

/// A file-name-safe UTC stamp, e.g. `2026-12-06T0310Z`.
fn file_stamp() -> String {
    let rfc = now_rfc3339(); // 2026-12-06T03:10:42Z
    format!("{}{}Z", &rfc[..13], &rfc[14..16])
}

/// `$PERCYD_BIN`, or `percyd` built by cargo in this binary's profile and named in
/// `PERCYD_BIN` for the runs. (`binaries::percyd_binary` finds the profile from a test's path,
/// `<target>/<profile>/deps/`; this binary lives one level up.)
fn resolve_percyd() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os("PERCYD_BIN") {
        return Ok(PathBuf::from(path));
    }
    let exe = std::env::current_exe()?;
    let profile = exe
        .parent()
        .context("cannot find the target dir from this binary's path")?;
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut build = std::process::Command::new(cargo);
    build.args(["build", "-p", "percy-server", "--bin", "percyd"]);
    if profile.file_name().is_some_and(|name| name == "release") {
        build.arg("--release");
    }
    let status = build
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .context("running cargo build for percyd")?;
    if !status.success() {
        bail!("cargo build -p percy-server --bin percyd failed: {status}");
    }
    let percyd = profile.join("percyd");
    if !percyd.exists() {
        bail!("{} missing after the build", percyd.display());
    }
    // Before any other thread exists: the runs' clusters read it.
    std::env::set_var("PERCYD_BIN", &percyd);
    Ok(percyd)
}

fn main() {
    let args = Args::parse();
    if let Err(error) = resolve_percyd() {
        eprintln!("percy-soak: percyd: {error:#}");
        std::process::exit(EXIT_FAILED);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(RUNTIME_THREADS)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("percy-soak: tokio runtime: {error}");
            std::process::exit(EXIT_FAILED);
        }
    };
    let outcome = runtime.block_on(soak(args));
    runtime.shutdown_timeout(SHUTDOWN_GRACE);
    match outcome {
        Ok(code) => std::process::exit(code),
        Err(error) => {
            eprintln!("percy-soak: {error:#}");
            std::process::exit(EXIT_FAILED);
        }
    }
}

/// Turns the first SIGINT/SIGTERM into `interrupt`, the second into `abort`.
fn watch_signals(interrupt: watch::Sender<bool>, abort: watch::Sender<bool>) -> Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut int = signal(SignalKind::interrupt()).context("SIGINT handler")?;
    let mut term = signal(SignalKind::terminate()).context("SIGTERM handler")?;
    tokio::spawn(async move {
        let mut seen = 0;
        loop {
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
            seen += 1;
            if seen == 1 {
                eprintln!(
                    "percy-soak: stopping: the current run heals and is checked, no other \
                     starts (signal again to abandon it)"
                );
                let _ = interrupt.send(true);
            } else {
                eprintln!("percy-soak: abandoning the current run");
                let _ = abort.send(true);
            }
        }
    });
    Ok(())
}

async fn soak(args: Args) -> Result<i32> {
    if args.per_run < Duration::from_secs(1) {
        bail!("--per-run must be at least 1s");
    }
    let workloads = if args.workloads.is_empty() {
        WorkloadName::value_variants().to_vec()
    } else {
        args.workloads.clone()
    };
    let nemeses = if args.nemeses.is_empty() {
        NemesisSpec::groups()
    } else {
        args.nemeses.clone()
    };
    let seed = args
        .seed
        .unwrap_or_else(|| u64::from(rand::random::<u32>()));
    let stamp = file_stamp();
    let out = args.out.clone().unwrap_or_else(|| {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("results")
            .join(format!("soak-{stamp}.jsonl"))
    });
    let run_base = args
        .run_dir
        .clone()
        .unwrap_or_else(|| default_target_dir().join("percy-soak").join(&stamp));
    // Resolved (or built, by `resolve_percyd`) before the clock starts.
    let percyd = percy_tests::binaries::percyd_binary().context("percyd")?;
    let mut results = Results::create(&out)?;

    let (interrupt_tx, interrupt) = watch::channel(false);
    let (abort_tx, mut abort) = watch::channel(false);
    watch_signals(interrupt_tx, abort_tx)?;

    let mut plan = Plan::new(&workloads, &nemeses, seed);
    println!(
        "percy-soak: seed={seed} total={} per-run={} pairs={} -> {}",
        humantime::format_duration(args.total),
        humantime::format_duration(args.per_run),
        plan.pairs.len(),
        out.display()
    );
    results.write(&json!({
        "type": "soak",
        "started_at": now_rfc3339(),
        "command": std::env::args().collect::<Vec<_>>().join(" "),
        "seed": seed,
        "total_secs": args.total.as_secs_f64(),
        "per_run_secs": args.per_run.as_secs_f64(),
        "order": "rounds: every workload x nemesis pair once per round, order shuffled by the \
                  seed; rounds repeat until the total is spent; a fresh seed per run",
        "workloads": workloads.iter().map(|w| w.name()).collect::<Vec<_>>(),
        "nemeses": nemeses.iter().map(|n| json!({"name": n.name, "faults": n.fault_names()}))
            .collect::<Vec<_>>(),
        "nodes": NODES,
        "percyd": percyd.display().to_string(),
        "build": if cfg!(debug_assertions) { "debug" } else { "release" },
        "host": {
            "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
            "load_average": load_average(),
        },
        "run_dir": run_base.display().to_string(),
    }))?;

    let started = Instant::now();
    let mut totals = Totals::default();
    let mut interrupted = false;
    loop {
        if *interrupt.borrow() {
            interrupted = true;
            break;
        }
        let left = args.total.saturating_sub(started.elapsed());
        let duration = left.min(args.per_run);
        if duration < MIN_RUN.min(args.per_run) {
            break;
        }
        let (pair, run_seed) = plan.next();
        let (workload, nemesis) = plan.pairs[pair].clone();
        let index = totals.runs + totals.aborted + 1;
        let dir = run_base.join(format!(
            "{index:03}-{}-{}-seed{run_seed}",
            workload.name(),
            nemesis.name
        ));
        let options = RunOptions {
            seed: run_seed,
            duration: Duration::from_secs(duration.as_secs()),
            nodes: NODES,
            workers: workload.workers(),
            faults: nemesis.faults.clone(),
            secure: false,
        };
        let run_started = Instant::now();
        let started_at = now_rfc3339();
        let outcome = tokio::select! {
            outcome = workload.run(&options, dir.clone(), interrupt.clone()) => Some(outcome),
            _ = abort.wait_for(|abort| *abort) => None,
        };
        let wall_secs = run_started.elapsed().as_secs_f64();
        let run_interrupted = *interrupt.borrow();
        let (ops, faults_by_kind) = history_counts(&dir);
        let mut line = json!({
            "type": "run",
            "index": index,
            "round": plan.rounds_started,
            "workload": workload.name(),
            "nemesis": nemesis.name,
            "faults_enabled": nemesis.fault_names(),
            "seed": run_seed,
            "started_at": started_at,
            "fault_secs": options.duration.as_secs(),
            "wall_secs": (wall_secs * 10.0).round() / 10.0,
            "interrupted": run_interrupted,
            "ops": ops,
            "faults_injected": faults_by_kind,
            "dir": dir.display().to_string(),
            "replay": format!(
                "PERCY_SEEDS={run_seed} PERCY_SOAK_SECS={} PERCY_FAULTS={} cargo test -p \
                 percy-tests --release --test jepsen {} -- --exact --nocapture",
                options.duration.as_secs(),
                nemesis.fault_names().join(","),
                workload.jepsen_test()
            ),
        });
        totals.fault_secs += options.duration.as_secs_f64().min(wall_secs);
        totals.pairs_run.insert(pair);
        for (kind, count) in &faults_by_kind {
            *totals.faults.entry(kind.clone()).or_insert(0) += count;
            totals.faults_total += count;
        }
        for status in ["attempted", "ok", "fail", "info"] {
            let n = ops.get(status).and_then(Value::as_u64).unwrap_or(0) as usize;
            *totals.ops.entry(status).or_insert(0) += n;
        }
        let failure = |line: &Value| {
            json!({
                "index": line["index"],
                "workload": line["workload"],
                "nemesis": line["nemesis"],
                "seed": line["seed"],
                "dir": line["dir"],
            })
        };
        match outcome {
            None => {
                line["aborted"] = json!(true);
                line["valid"] = Value::Null;
                line["kept"] = json!(kept(&dir));
                totals.aborted += 1;
                results.write(&line)?;
                interrupted = true;
                break;
            }
            Some(Ok(summary)) => {
                totals.runs += 1;
                totals.power_cuts += summary.nemesis.power_cuts;
                totals.unsynced_lost += summary.nemesis.unsynced_lost;
                line["nemesis_stats"] = json!(summary.nemesis);
                line["leader_changes"] = json!(summary.leader_changes);
                line["verdicts"] = summary
                    .verdicts
                    .iter()
                    .map(|v| {
                        json!({
                            "checker": v.checker,
                            "validity": v.validity,
                            "checked": v.checked,
                            "anomalies": v.anomalies.iter().take(MAX_ANOMALIES)
                                .collect::<Vec<_>>(),
                            "anomalies_total": v.anomalies.len(),
                        })
                    })
                    .collect();
                line["valid"] = json!(summary.valid);
                if summary.valid {
                    totals.valid += 1;
                } else {
                    line["failure"] = json!(summary
                        .verdicts
                        .iter()
                        .filter(|v| !v.is_valid())
                        .map(|v| v.to_string())
                        .collect::<Vec<_>>()
                        .join("\n"));
                    line["kept"] = json!(kept(&dir));
                    totals.failed.push(failure(&line));
                }
            }
            Some(Err(error)) => {
                // The harness or the cluster gave up (e.g. a node that exited on its own or
                // refused its data dir): a failed run, with what the history recorded.
                totals.runs += 1;
                line["verdicts"] = json!([]);
                line["valid"] = json!(false);
                line["failure"] = json!(format!("{error:#}"));
                line["kept"] = json!(kept(&dir));
                totals.failed.push(failure(&line));
                println!(
                    "== {} under {} seed={run_seed} FAILED in {}: {error:#}",
                    workload.name(),
                    nemesis.name,
                    dir.display()
                );
            }
        }
        results.write(&line)?;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let summary = json!({
        "type": "summary",
        "ended_at": now_rfc3339(),
        "seed": seed,
        "wall_secs": elapsed.round(),
        "fault_secs": totals.fault_secs.round(),
        "runs": totals.runs,
        "valid": totals.valid,
        "failed": totals.failed.len(),
        "aborted": totals.aborted,
        "interrupted": interrupted,
        "rounds_started": plan.rounds_started,
        "pairs": plan.pairs.len(),
        "pairs_run": totals.pairs_run.len(),
        "ops": totals.ops,
        "faults_injected": totals.faults_total,
        "faults_by_kind": totals.faults,
        "power_cuts": totals.power_cuts,
        "unsynced_lost": totals.unsynced_lost,
        "failures": totals.failed,
        "load_average_end": load_average(),
    });
    results.write(&summary)?;
    println!(
        "percy-soak: {} runs in {:.0} s ({} of {} pairs): {} valid, {} failed{} -> {}",
        totals.runs,
        elapsed,
        totals.pairs_run.len(),
        plan.pairs.len(),
        totals.valid,
        totals.failed.len(),
        if interrupted { ", interrupted" } else { "" },
        out.display()
    );
    Ok(if !totals.failed.is_empty() {
        EXIT_FAILED
    } else if interrupted {
        EXIT_INTERRUPTED
    } else {
        0
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nemeses_parse_by_group_or_fault_and_refuse_unknown_names() {
        let power = NemesisSpec::parse("power-loss").expect("group");
        assert_eq!(power.faults, FaultKind::POWER_LOSS.to_vec());
        let one = NemesisSpec::parse("kill-leader").expect("fault");
        assert_eq!(one.faults, vec![FaultKind::KillLeader]);
        let error = NemesisSpec::parse("earthquake").expect_err("unknown");
        assert!(
            error.contains("earthquake") && error.contains("partition"),
            "{error}"
        );
    }

    #[test]
    fn the_groups_cover_every_fault() {
        let covered: BTreeSet<&str> = NemesisSpec::groups()
            .iter()
            .filter(|g| g.name != "mixed")
            .flat_map(|g| g.fault_names())
            .collect();
        for fault in FaultKind::ALL.into_iter().chain(FaultKind::POWER_LOSS) {
            assert!(
                covered.contains(fault.name()),
                "{} in no group",
                fault.name()
            );
        }
    }

    #[test]
    fn a_round_runs_every_pair_once_with_fresh_seeds() {
        let nemeses = NemesisSpec::groups();
        let workloads = WorkloadName::value_variants();
        let mut plan = Plan::new(workloads, &nemeses, 7);
        let total = workloads.len() * nemeses.len();
        let mut pairs = BTreeSet::new();
        let mut seeds = BTreeSet::new();
        for _ in 0..total {
            let (pair, seed) = plan.next();
            pairs.insert(pair);
            seeds.insert(seed);
        }
        assert_eq!(pairs.len(), total);
        assert_eq!(seeds.len(), total);
        assert_eq!(plan.rounds_started, 1);
        plan.next();
        assert_eq!(plan.rounds_started, 2);
    }
}
