//! One run of the suite: start a cluster, set up a workload, let its workers run while the
//! nemesis follows a seeded schedule (and the workload's restart readers run whenever the
//! nemesis starts killed nodes again), heal everything, do the final reads, check the history
//! and write a summary. The run directory (printed) holds `history.jsonl`, `summary.json` and,
//! when the run failed, the nodes' data dirs and logs.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, Context, Result};
use percy_client::{Client, ClientError, Consistency, RetryPolicy, Security};
use serde::Serialize;
use serde_json::{json, Value};
use tokio::sync::{mpsc, watch, Mutex};
use tokio::task::JoinSet;

use crate::checker::Verdict;
use crate::cluster::{Cluster, ClusterConfig, LEADER_TIMEOUT};
use crate::history::{History, Recorder, Status, StatusCounts};
use crate::nemesis::{monitor_leader, FaultKind, Nemesis, NemesisStats};

/// Budget of one workload operation (all its retries); past it the operation is `info`.
pub const OP_TIMEOUT: Duration = Duration::from_secs(5);
/// Extra slack for the outer guard around the client's own deadline.
const OP_GUARD_SLACK: Duration = Duration::from_secs(5);
/// How long final reads keep retrying after the final heal.
pub const FINAL_TIMEOUT: Duration = Duration::from_secs(90);
/// Pause between final-read attempts.
const FINAL_RETRY_PAUSE: Duration = Duration::from_millis(500);
/// How long workers get to notice the stop signal and finish their current operation.
const WORKER_DRAIN: Duration = Duration::from_secs(60);

/// Environment variables that turn the short CI runs into soaks.
pub const ENV_SOAK_SECS: &str = "PERCY_SOAK_SECS";
pub const ENV_SEEDS: &str = "PERCY_SEEDS";
pub const ENV_FAULTS: &str = "PERCY_FAULTS";
pub const ENV_RUN_DIR: &str = "PERCY_RUN_DIR";

/// What to run.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub seed: u64,
    /// How long the workers run under faults.
    pub duration: Duration,
    pub nodes: u64,
    pub workers: u64,
    pub faults: Vec<FaultKind>,
    /// TLS on every link and `--auth` (see [`ClusterConfig::secure`]).
    pub secure: bool,
}

impl RunOptions {
    /// The options for each seed to run: `PERCY_SEEDS` (comma-separated, or `N` random ones as
    /// `random:N`) or `default_seed`; `PERCY_SOAK_SECS` or `default_secs`; `PERCY_FAULTS`
    /// (comma-separated names) or `default_faults`.
    pub fn from_env(
        default_seed: u64,
        default_secs: u64,
        workers: u64,
        default_faults: &[FaultKind],
    ) -> Result<Vec<RunOptions>> {
        let secs = match std::env::var(ENV_SOAK_SECS) {
            Ok(raw) => raw
                .parse()
                .with_context(|| format!("{ENV_SOAK_SECS}={raw}"))?,
            Err(_) => default_secs,
        };
        let faults = match std::env::var(ENV_FAULTS) {
            Ok(raw) => raw
                .split(',')
                .map(|name| {
                    FaultKind::parse(name.trim())
                        .ok_or_else(|| anyhow!("{ENV_FAULTS}: unknown fault {name:?}"))
                })
                .collect::<Result<Vec<_>>>()?,
            Err(_) => default_faults.to_vec(),
        };
        let seeds: Vec<u64> = match std::env::var(ENV_SEEDS) {
            Ok(raw) => match raw.strip_prefix("random:") {
                Some(count) => (0..count.parse::<u64>().context(ENV_SEEDS)?)
                    .map(|_| rand::random::<u32>().into())
                    .collect(),
                None => raw
                    .split(',')
                    .map(|seed| seed.trim().parse::<u64>().context(ENV_SEEDS))
                    .collect::<Result<_>>()?,
            },
            Err(_) => vec![default_seed],
        };
        Ok(seeds
            .into_iter()
            .map(|seed| RunOptions {
                seed,
                duration: Duration::from_secs(secs),
                nodes: 3,
                workers,
                faults: faults.clone(),
                secure: false,
            })
            .collect())
    }
}

/// What a workload's code gets to work with.
pub struct Env {
    pub cluster: Arc<Mutex<Cluster>>,
    pub recorder: Arc<Recorder>,
    pub seed: u64,
    /// Client endpoints of the nodes, by id.
    pub nodes: Vec<(u64, String)>,
    /// What clients need to be let in (TLS and a credential on a secure cluster).
    pub security: Security,
}

impl Env {
    /// A client for `process`: prefers node `process mod n`, gives up after [`OP_TIMEOUT`].
    pub async fn client_for(&self, process: u64) -> Result<Client> {
        let first = (process as usize) % self.nodes.len();
        let endpoints: Vec<String> = self.nodes[first..]
            .iter()
            .chain(&self.nodes[..first])
            .map(|(_, addr)| addr.clone())
            .collect();
        let retry = RetryPolicy::default().with_deadline(OP_TIMEOUT);
        self.connect(&endpoints, retry).await
    }

    /// A client of every node with a long deadline, for setup and final reads.
    pub async fn admin_client(&self) -> Result<Client> {
        let endpoints: Vec<String> = self.nodes.iter().map(|(_, addr)| addr.clone()).collect();
        let retry = RetryPolicy::default().with_deadline(FINAL_TIMEOUT);
        self.connect(&endpoints, retry).await
    }

    /// A client of `endpoints` with this cluster's security.
    pub async fn connect(&self, endpoints: &[String], retry: RetryPolicy) -> Result<Client> {
        Ok(Client::connect_secure(endpoints, retry, &self.security).await?)
    }

    /// Runs one client call and records it: `ok` with `output(&result)`, `fail` when the
    /// server refused it, `info` when the outcome is unknown (including a hung call).
    pub async fn call<T, F>(
        &self,
        process: u64,
        key: &str,
        op: &str,
        input: Value,
        call: F,
        output: impl FnOnce(&T) -> Value,
    ) -> Outcome<T>
    where
        F: Future<Output = std::result::Result<T, ClientError>>,
    {
        let pending = self.recorder.invoke(process, key, op, input);
        match tokio::time::timeout(OP_TIMEOUT + OP_GUARD_SLACK, call).await {
            Ok(Ok(value)) => {
                self.recorder.complete(pending, Status::Ok, output(&value));
                Outcome::Ok(value)
            }
            Ok(Err(error)) => {
                let status = if error.is_refusal() {
                    Status::Fail
                } else {
                    Status::Info
                };
                self.recorder.complete(
                    pending,
                    status,
                    json!({"error": error.to_string(), "code": format!("{:?}", error.code())}),
                );
                if status == Status::Fail {
                    Outcome::Fail(error)
                } else {
                    Outcome::Info
                }
            }
            Err(_) => {
                self.recorder
                    .complete(pending, Status::Info, json!({"error": "client hung"}));
                Outcome::Info
            }
        }
    }

    /// Retries `call` until it succeeds or [`FINAL_TIMEOUT`] passes; records only the
    /// successful attempt (for final reads after the final heal).
    pub async fn final_read<T, F, Fut>(
        &self,
        key: &str,
        op: &str,
        mut call: F,
        output: impl Fn(&T) -> Value,
    ) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = std::result::Result<T, ClientError>>,
    {
        let deadline = tokio::time::Instant::now() + FINAL_TIMEOUT;
        loop {
            let pending = self.recorder.invoke(0, key, op, json!({}));
            match call().await {
                Ok(value) => {
                    self.recorder.complete(pending, Status::Ok, output(&value));
                    return Ok(value);
                }
                Err(error) if tokio::time::Instant::now() >= deadline => {
                    return Err(anyhow!("final {op} failed for {FINAL_TIMEOUT:?}: {error}"));
                }
                Err(_) => tokio::time::sleep(FINAL_RETRY_PAUSE).await,
            }
        }
    }
}

/// How a recorded call ended.
#[derive(Debug)]
pub enum Outcome<T> {
    Ok(T),
    /// Refused by the server: certainly not applied.
    Fail(ClientError),
    /// Unknown.
    Info,
}

/// A workload: setup, concurrent workers, final reads, checkers.
pub trait Workload: Send + Sync + 'static {
    fn name(&self) -> &'static str;

    /// Runs before any fault (e.g. registering agents, submitting tasks).
    fn setup(self: Arc<Self>, env: Arc<Env>) -> impl Future<Output = Result<()>> + Send;

    /// One worker's loop; returns when `stop` turns true.
    fn worker(
        self: Arc<Self>,
        env: Arc<Env>,
        process: u64,
        stop: watch::Receiver<bool>,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Runs the moment the nemesis has started `nodes` again after killing them, concurrently
    /// with the workers (e.g. reads of what was acknowledged before the crash). Default:
    /// nothing.
    fn after_restart(
        self: Arc<Self>,
        _env: Arc<Env>,
        _nodes: Vec<u64>,
    ) -> impl Future<Output = Result<()>> + Send {
        async { Ok(()) }
    }

    /// Final reads, after the final heal.
    fn finish(self: Arc<Self>, env: Arc<Env>) -> impl Future<Output = Result<()>> + Send;

    /// The verdicts on the history.
    fn check(&self, history: &History) -> Vec<Verdict>;
}

/// What a run did and concluded.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub workload: String,
    pub seed: u64,
    pub dir: PathBuf,
    pub duration_secs: u64,
    pub ops: StatusCounts,
    pub nemesis: NemesisStats,
    pub leader_changes: usize,
    pub verdicts: Vec<Verdict>,
    pub valid: bool,
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "== {} seed={} {} ({}s) in {}",
            self.workload,
            self.seed,
            if self.valid { "VALID" } else { "INVALID" },
            self.duration_secs,
            self.dir.display()
        )?;
        writeln!(
            f,
            "   ops ok={} fail={} info={}; faults={} heals={}; leader changes={}",
            self.ops.ok,
            self.ops.fail,
            self.ops.info,
            self.nemesis.faults,
            self.nemesis.heals,
            self.leader_changes
        )?;
        if self.nemesis.power_cuts > 0 {
            writeln!(
                f,
                "   power cuts={}, files and directories that lost unsynced changes={}",
                self.nemesis.power_cuts, self.nemesis.unsynced_lost
            )?;
        }
        for verdict in &self.verdicts {
            writeln!(f, "   {verdict}")?;
        }
        Ok(())
    }
}

/// A secure run must really be one: a client without TLS gets no answer from any node.
async fn refuses_plaintext(cluster: &Cluster) -> Result<()> {
    let retry = RetryPolicy::default().with_deadline(Duration::from_secs(2));
    let plain = Client::connect_with(&cluster.endpoints(), retry).await?;
    match plain.cluster_status(Consistency::Serializable).await {
        Ok(status) => Err(anyhow!(
            "a plaintext client was answered by node {} of a TLS cluster",
            status.node_id
        )),
        Err(_) => Ok(()),
    }
}

/// The directory for a run's files.
fn run_dir(workload: &str, seed: u64) -> Result<PathBuf> {
    let base = match std::env::var(ENV_RUN_DIR) {
        Ok(dir) => PathBuf::from(dir),
        Err(_) => {
            // <target>/<profile>/deps/<test binary> -> <target>/percy-jepsen
            let exe = std::env::current_exe()?;
            exe.ancestors()
                .nth(3)
                .map(|target| target.join("percy-jepsen"))
                .unwrap_or_else(|| std::env::temp_dir().join("percy-jepsen"))
        }
    };
    let stamp = SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis();
    let dir = base.join(format!("{workload}-seed{seed}-{stamp}"));
    std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    Ok(dir)
}

/// Runs the workload's [`Workload::after_restart`] for every restart the nemesis announces, at
/// once and concurrently (a slow one must not delay the next), until the channel closes; then
/// waits for all of them. The first error is the result.
async fn after_restarts<W: Workload>(
    workload: Arc<W>,
    env: Arc<Env>,
    mut restarts: mpsc::UnboundedReceiver<Vec<u64>>,
) -> Result<()> {
    let mut readers = JoinSet::new();
    while let Some(nodes) = restarts.recv().await {
        readers.spawn(Arc::clone(&workload).after_restart(Arc::clone(&env), nodes));
    }
    while let Some(done) = readers.join_next().await {
        done??;
    }
    Ok(())
}

/// Runs `workload` once with `options`.
pub async fn run<W: Workload>(workload: Arc<W>, options: &RunOptions) -> Result<Summary> {
    let dir = run_dir(workload.name(), options.seed)?;
    // Never set: the run lasts its full duration.
    let (_never, interrupt) = watch::channel(false);
    run_in(workload, options, dir, interrupt).await
}

/// Runs `workload` once with `options`, its files in `dir` (created if missing). When
/// `interrupt` turns true the faults stop early, and the run heals, reads and checks as at its
/// normal end: a soak that is told to stop still gets a verdict on what ran (`percy-soak`).
pub async fn run_in<W: Workload>(
    workload: Arc<W>,
    options: &RunOptions,
    dir: PathBuf,
    mut interrupt: watch::Receiver<bool>,
) -> Result<Summary> {
    std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    println!(
        "percy-jepsen: {} seed={} duration={:?} faults={:?}{} -> {}",
        workload.name(),
        options.seed,
        options.duration,
        options.faults.iter().map(|f| f.name()).collect::<Vec<_>>(),
        if options.secure { " tls+auth" } else { "" },
        dir.display()
    );
    let recorder = Arc::new(Recorder::to_file(&dir.join("history.jsonl"))?);
    let mut cluster = Cluster::start(&ClusterConfig {
        nodes: options.nodes,
        dir: dir.join("cluster"),
        extra_args: Vec::new(),
        secure: options.secure,
        power_loss: options.faults.iter().any(|kind| kind.is_power_loss()),
    })?;
    cluster.wait_for_leader(LEADER_TIMEOUT).await?;
    if options.secure {
        refuses_plaintext(&cluster).await?;
    }
    let nodes = cluster
        .ids()
        .into_iter()
        .map(|id| (id, cluster.addr(id).to_string()))
        .collect();
    let security = cluster.security().clone();
    let cluster = Arc::new(Mutex::new(cluster));
    let env = Arc::new(Env {
        cluster: Arc::clone(&cluster),
        recorder: Arc::clone(&recorder),
        seed: options.seed,
        nodes,
        security,
    });
    Arc::clone(&workload)
        .setup(Arc::clone(&env))
        .await
        .context("workload setup")?;

    let (stop_tx, stop_rx) = watch::channel(false);
    let mut workers = Vec::new();
    for process in 1..=options.workers {
        let task = Arc::clone(&workload).worker(Arc::clone(&env), process, stop_rx.clone());
        workers.push(tokio::spawn(task));
    }
    let monitor = tokio::spawn(monitor_leader(
        Arc::clone(&cluster),
        Arc::clone(&recorder),
        stop_rx.clone(),
    ));
    let (restarts_tx, restarts_rx) = mpsc::unbounded_channel();
    let restart_readers = tokio::spawn(after_restarts(
        Arc::clone(&workload),
        Arc::clone(&env),
        restarts_rx,
    ));
    let mut nemesis = Nemesis::new(
        Arc::clone(&cluster),
        Arc::clone(&recorder),
        options.seed,
        options.faults.clone(),
        restarts_tx,
    );
    let stopper = {
        let duration = options.duration;
        tokio::spawn(async move {
            let interrupted = async {
                // A dropped sender is no interrupt.
                if interrupt.wait_for(|stop| *stop).await.is_err() {
                    std::future::pending::<()>().await;
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(duration) => {}
                _ = interrupted => {}
            }
            let _ = stop_tx.send(true);
        })
    };
    // Runs until the stopper fires, then heals everything.
    let nemesis_stats = nemesis.run(stop_rx.clone()).await?;
    // Closes the restart channel: the restart readers finish what they started.
    drop(nemesis);
    stopper.await?;
    for worker in workers {
        tokio::time::timeout(WORKER_DRAIN, worker)
            .await
            .context("a worker did not stop")???;
    }
    tokio::time::timeout(WORKER_DRAIN, restart_readers)
        .await
        .context("restart readers did not stop")???;
    let leader_changes = monitor.await?;
    cluster
        .lock()
        .await
        .wait_for_leader(LEADER_TIMEOUT)
        .await
        .context("no leader after the final heal")?;
    Arc::clone(&workload)
        .finish(Arc::clone(&env))
        .await
        .context("final reads")?;

    let history = recorder.history();
    let verdicts = workload.check(&history);
    let valid = verdicts.iter().all(Verdict::is_valid);
    let summary = Summary {
        workload: workload.name().to_owned(),
        seed: options.seed,
        dir: dir.clone(),
        duration_secs: options.duration.as_secs(),
        ops: history.status_counts(),
        nemesis: nemesis_stats,
        leader_changes,
        verdicts,
        valid,
    };
    std::fs::write(
        dir.join("summary.json"),
        serde_json::to_string_pretty(&summary)?,
    )?;
    println!("{summary}");
    drop(env);
    drop(cluster);
    if valid {
        // Keep the history and summary; the data dirs and logs only matter for failures.
        let _ = std::fs::remove_dir_all(dir.join("cluster"));
    }
    Ok(summary)
}
