//! `percyctl bench WORKLOAD`: a load generator in the style of `nats bench`, against a running
//! cluster (`--endpoints`) or a local three-node cluster it starts itself (`--local 3`).
//! percyctl parses [`Args`], calls [`run`] and prints the [`Printable`] it returns.
//!
//! Every workload: set up (connections, tasks, keys, agents — never timed), warm up (1 s;
//! 0 s for the claim workloads so they do not eat the task pool), then the measured window.
//! Only operations that complete inside the window count. Afterwards the workload verifies
//! what the server holds against what the clients were told. The JSON line has the field
//! names of the etcd/NATS anchor tool, so results can be compared side by side.

mod cas;
mod claim;
mod heartbeat;
mod listing;
mod local_cluster;
mod lock;
mod pipeline;
mod read;
mod report;
mod restart;
mod setup;
mod stats;

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use percy_client::{Client, Consistency, RetryPolicy, Security};
use serde_json::{Map, Value};

use self::local_cluster::{probe_client_with, LocalCluster};
use self::report::{Outcome, Report, RunInfo};
use self::stats::{CpuUsage, Live, Stats, Window};

/// Default measured window.
const DEFAULT_DURATION: &str = "10s";
/// Warmup before the window, except for the claim workloads.
const DEFAULT_WARMUP: Duration = Duration::from_secs(1);
const DEFAULT_CLIENTS: usize = 64;
/// The lock workload's default: the anchor's etcd-lock headline uses 16 contenders.
const DEFAULT_LOCK_CLIENTS: usize = 16;
/// The listing workload's writers: a few, so that their latency shows stalls, not queueing.
const DEFAULT_LISTING_CLIENTS: usize = 4;
/// How long a local cluster may take to elect a leader.
const LOCAL_READY_TIMEOUT: Duration = Duration::from_secs(60);
/// Progress line refresh.
const PROGRESS_TICK: Duration = Duration::from_millis(250);
/// How long reading a node's `/metrics` may take.
const METRICS_TIMEOUT: Duration = Duration::from_secs(10);
/// Per-operation budget in the measured loop (the client retries inside it).
const DEFAULT_OP_TIMEOUT: &str = "30s";

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Workload {
    /// Race to claim random pre-submitted tasks by compare-and-set (task id + revision).
    ClaimRandom,
    /// The worker loop: claim the next ready task, complete it.
    ClaimNext,
    /// Compare-and-set writes, each client on its own config key.
    Cas,
    /// All clients contend for one lock: acquire (wait) → read-modify-write a counter → release.
    Lock,
    /// Reads of random config keys (linearizable; `--serializable` for local reads).
    Read,
    /// Many agents heartbeating at a fixed rate through a few connections.
    Heartbeat,
    /// Load tasks, kill -9 a node, restart it, time until it serves linearizable reads again.
    Restart,
    /// Load --tasks tasks, then compare-and-set write latency idle vs while one client pages
    /// through all tasks (linearizable and serializable), with pages/s and a check that the
    /// listing saw every task exactly once.
    Listing,
    /// --workers worker runtimes take --tasks tasks through claim → start → complete (in
    /// process, or with --exec / --git); tasks per second from submission to the last.
    Pipeline,
}

impl Workload {
    pub fn name(self) -> &'static str {
        match self {
            Workload::ClaimRandom => "claim-random",
            Workload::ClaimNext => "claim-next",
            Workload::Cas => "cas",
            Workload::Lock => "lock",
            Workload::Read => "read",
            Workload::Heartbeat => "heartbeat",
            Workload::Restart => "restart",
            Workload::Pipeline => "pipeline",
            Workload::Listing => "listing",
        }
    }

    fn is_claim(self) -> bool {
        matches!(self, Workload::ClaimRandom | Workload::ClaimNext)
    }
}

/// Which node `bench restart` kills.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Victim {
    Follower,
    Leader,
}

#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// What to measure.
    #[arg(value_enum)]
    pub workload: Workload,
    /// Start N local percyd nodes on loopback (temp data dirs, fsync on) instead of using
    /// --endpoints; they are stopped when the benchmark ends.
    #[arg(long, value_name = "N")]
    pub local: Option<usize>,
    /// The percyd binary for --local (default: $PERCYD, else next to percyctl, else PATH).
    #[arg(long)]
    pub percyd: Option<PathBuf>,
    /// Keep the local cluster's data dirs and logs.
    #[arg(long)]
    pub keep: bool,
    /// Concurrent clients, each with its own connections; client i starts at node
    /// (leader + i) mod N, where it sends serializable reads and heartbeats; writes and
    /// linearizable reads go to the leader once the client has learnt which node it is.
    /// Default 64 (lock: 16). The heartbeat workload's clients are its --connections.
    #[arg(short = 'c', long)]
    pub clients: Option<usize>,
    /// Measured window.
    #[arg(short = 'd', long, default_value = DEFAULT_DURATION, value_parser = duration)]
    pub duration: Duration,
    /// Warmup before the window (default 1s; 0 for the claim workloads).
    #[arg(long, value_parser = duration)]
    pub warmup: Option<Duration>,
    /// Tasks submitted before the claim workloads (and loaded by `restart` and `listing`).
    #[arg(long, default_value_t = 100_000)]
    pub tasks: usize,
    /// Tasks per plan when submitting.
    #[arg(long, default_value_t = 1_000)]
    pub plan_size: usize,
    /// Plans (or other setup writes) in flight at once during setup.
    #[arg(long, default_value_t = 8)]
    pub setup_parallel: usize,
    /// Keys for the read workload.
    #[arg(long, default_value_t = 1_000)]
    pub read_keys: usize,
    /// Value size in bytes for the cas and read workloads.
    #[arg(long, default_value_t = 64)]
    pub value_size: usize,
    /// How long a lock acquire may wait in the queue.
    #[arg(long, default_value = "30s", value_parser = duration)]
    pub lock_wait: Duration,
    /// Heartbeat workload: number of agents.
    #[arg(long, default_value_t = 10_000)]
    pub agents: usize,
    /// Heartbeat workload: heartbeats per agent per second.
    #[arg(long, default_value_t = 1.0)]
    pub rate: f64,
    /// Read workload: serializable reads (the answering node's local state) instead of
    /// linearizable ones.
    #[arg(long)]
    pub serializable: bool,
    /// Heartbeat workload: connections the agents share.
    #[arg(long, default_value_t = 4)]
    pub connections: usize,
    /// Heartbeat workload: one unary Heartbeat call per beat instead of each agent's
    /// keep-alive stream (what the worker runtime uses).
    #[arg(long)]
    pub unary_heartbeats: bool,
    /// Heartbeat workload (with --local): this far into the measured window, kill -9 the
    /// leader, wait for the others to elect a new one, then restart the killed node.
    #[arg(long, value_name = "DURATION", value_parser = duration)]
    pub leader_change_at: Option<Duration>,
    /// Heartbeat workload: TTL the agents register with.
    #[arg(long, default_value = "60s", value_parser = duration)]
    pub agent_ttl: Duration,
    /// PID of the leader process, for its CPU (found automatically with --local).
    #[arg(long)]
    pub leader_pid: Option<u32>,
    /// Files with server PIDs (one per line), for server CPU accounting (automatic with --local).
    #[arg(long)]
    pub pids_file: Vec<PathBuf>,
    /// Restart workload: which node to kill.
    #[arg(long, value_enum, default_value_t = Victim::Follower)]
    pub kill: Victim,
    /// Pipeline workload: worker runtimes started in this process.
    #[arg(long, default_value_t = 64)]
    pub workers: usize,
    /// Pipeline workload: each task runs `sh -c CMD` (fork and exec per task) instead of
    /// in-process.
    #[arg(long, value_name = "CMD")]
    pub exec: Option<String>,
    /// Pipeline workload: run tasks in worktrees of a scratch git repository and merge each
    /// back (fenced), as `percyctl worker --repo` does.
    #[arg(long)]
    pub git: bool,
    /// Free-form label copied into the JSON output.
    #[arg(long, default_value = "")]
    pub tag: String,
    /// Worker threads of the load generator (the anchor tool uses 2).
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
    /// Per-operation time budget in the measured loop.
    #[arg(long, default_value = DEFAULT_OP_TIMEOUT, value_parser = duration)]
    pub op_timeout: Duration,
    /// Keep the endpoint order as given (default: the leader first, so C=1 talks to it).
    #[arg(long)]
    pub no_leader_first: bool,
    /// RNG seed (default: time-based).
    #[arg(long)]
    pub seed: Option<u64>,
}

impl Args {
    /// How the read workload reads.
    pub fn consistency(&self) -> Consistency {
        if self.serializable {
            Consistency::Serializable
        } else {
            Consistency::Linearizable
        }
    }

    /// Concurrent clients (for heartbeat: the connections the agents share).
    pub fn clients(&self) -> usize {
        match self.workload {
            Workload::Heartbeat => self.connections.max(1),
            Workload::Lock => self.clients.unwrap_or(DEFAULT_LOCK_CLIENTS),
            Workload::Listing => self.clients.unwrap_or(DEFAULT_LISTING_CLIENTS),
            _ => self.clients.unwrap_or(DEFAULT_CLIENTS),
        }
    }

    pub fn warmup(&self) -> Duration {
        self.warmup.unwrap_or(if self.workload.is_claim() {
            Duration::ZERO
        } else {
            DEFAULT_WARMUP
        })
    }
}

/// Runs the benchmark on a multi-threaded runtime of its own (percyctl's is single-threaded),
/// in a separate OS thread, and returns the report for the caller to print.
/// `security`: the token and TLS settings of the cluster at `endpoints` (a `--local` cluster
/// is plaintext and open). The token must be an admin's: the workloads register agents of
/// their own and act for them.
pub async fn run(
    endpoints: Vec<String>,
    retry: RetryPolicy,
    consistency: Consistency,
    security: Security,
    args: Args,
) -> Result<Printable> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("bench".into())
        .spawn(move || {
            let result = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(args.threads.max(1))
                .enable_all()
                .build()
                .context("start the benchmark runtime")
                .and_then(|runtime| {
                    runtime.block_on(bench(endpoints, retry, consistency, security, args))
                });
            let _ = tx.send(result);
        })
        .context("start the benchmark thread")?;
    rx.await.context("the benchmark thread died")?
}

async fn bench(
    endpoints: Vec<String>,
    retry: RetryPolicy,
    consistency: Consistency,
    security: Security,
    args: Args,
) -> Result<Printable> {
    if args.clients() == 0 {
        bail!("--clients must be at least 1");
    }
    if let (Workload::Heartbeat, Some(clients)) = (&args.workload, args.clients) {
        if clients != args.connections {
            bail!(
                "heartbeat: its clients are the connections the agents share; \
                 use --connections {clients} instead of -c {clients}"
            );
        }
    }
    let progress = Progress::new();
    let mut cluster = match args.local {
        Some(n) => {
            progress.say(format!("starting {n} local percyd nodes"));
            let mut cluster =
                LocalCluster::start(n, args.percyd.clone(), args.keep, LOCAL_READY_TIMEOUT).await?;
            cluster.wait_ready(LOCAL_READY_TIMEOUT).await?;
            Some(cluster)
        }
        None => None,
    };
    let (endpoints, security) = match &cluster {
        Some(c) => (c.endpoints(), Security::default()),
        None => (endpoints, security),
    };
    let work = async {
        let env = Env::new(
            &args,
            endpoints,
            retry,
            consistency,
            security,
            cluster.as_ref(),
            progress.clone(),
        )
        .await?;
        let outcome = match args.workload {
            Workload::ClaimRandom => claim::claim_random(&env).await?,
            Workload::ClaimNext => claim::claim_next(&env).await?,
            Workload::Cas => cas::run(&env).await?,
            Workload::Lock => lock::run(&env).await?,
            Workload::Read => read::run(&env).await?,
            Workload::Heartbeat => heartbeat::run(&env, cluster.as_mut()).await?,
            Workload::Restart => {
                let cluster = cluster.as_mut().ok_or_else(|| {
                    anyhow!("bench restart needs --local N (it kills and restarts a node)")
                })?;
                return Ok(Printable::Restart(restart::run(&env, cluster).await?));
            }
            Workload::Pipeline => return Ok(Printable::Pipeline(pipeline::run(&env).await?)),
            Workload::Listing => return Ok(Printable::Listing(listing::run(&env).await?)),
        };
        let leader = env.leader_endpoint().await.unwrap_or_else(|_| "?".into());
        Ok(Printable::Bench(Report::build(
            env.run_info(leader),
            outcome,
        )?))
    };
    let result: Result<Printable> = tokio::select! {
        result = work => result,
        signal = interrupted() => Err(anyhow!("interrupted ({signal})")),
    };
    progress.finish();
    drop(cluster);
    result
}

/// A finished run's report.
pub enum Printable {
    Bench(Report),
    Restart(restart::RestartReport),
    Pipeline(pipeline::PipelineReport),
    Listing(listing::ListingReport),
}

impl Printable {
    /// One JSON line, with the field names of the etcd/NATS anchor tool.
    pub fn json(&self) -> Result<String> {
        Ok(match self {
            Printable::Bench(report) => serde_json::to_string(report)?,
            Printable::Restart(report) => serde_json::to_string(report)?,
            Printable::Pipeline(report) => serde_json::to_string(report)?,
            Printable::Listing(report) => serde_json::to_string(report)?,
        })
    }

    /// A two-column METRIC/VALUE table for people.
    pub fn table(&self) -> Result<String> {
        match self {
            Printable::Bench(report) => Ok(report.table()),
            Printable::Restart(report) => report.table(),
            Printable::Pipeline(report) => report.table(),
            Printable::Listing(report) => report.table(),
        }
    }
}

/// "10s", "500ms", "2m".
fn duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text).map_err(|e| format!("{e} (examples: 10s, 500ms, 2m)"))
}

/// Resolves on ctrl-c or SIGTERM, so that the local cluster is torn down.
async fn interrupted() -> &'static str {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(term) => term,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return "SIGINT";
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => "SIGINT",
        _ = term.recv() => "SIGTERM",
    }
}

/// What every workload needs: endpoints (leader first), how to make clients, CPU accounting.
pub struct Env {
    pub args: Args,
    /// Endpoints with the leader first (unless --no-leader-first).
    pub endpoints: Vec<String>,
    pub retry: RetryPolicy,
    pub consistency: Consistency,
    /// Token and TLS of every client the run makes.
    pub security: Security,
    pub server_pids: Vec<u32>,
    pub leader_pid: Option<u32>,
    pub server_version: String,
    /// Unique per run, so runs against one cluster do not collide.
    pub run_id: String,
    pub progress: Progress,
}

impl Env {
    async fn new(
        args: &Args,
        mut endpoints: Vec<String>,
        retry: RetryPolicy,
        consistency: Consistency,
        security: Security,
        cluster: Option<&LocalCluster>,
        progress: Progress,
    ) -> Result<Env> {
        let leader = leader_of_with(&endpoints, &security).await?;
        if !args.no_leader_first {
            if let Some(i) = endpoints.iter().position(|e| same_addr(e, &leader.1)) {
                endpoints.rotate_left(i);
            }
        }
        let mut server_pids = read_pids(&args.pids_file)?;
        let mut leader_pid = args.leader_pid;
        let mut server_version = String::from("percyd (version not reported over the API)");
        if let Some(cluster) = cluster {
            server_pids = cluster.pids();
            leader_pid = leader_pid.or_else(|| cluster.pid(leader.0));
            server_version = percyd_version(cluster.percyd());
        }
        let run_id = format!(
            "{}",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis())
                .unwrap_or_default()
        );
        Ok(Env {
            args: args.clone(),
            endpoints,
            retry,
            consistency,
            security,
            server_pids,
            leader_pid,
            server_version,
            run_id,
            progress,
        })
    }

    /// A client with its own connections whose preferred endpoint is (leader + i) mod N.
    pub async fn client(&self, i: usize) -> Result<Client> {
        let mut endpoints = self.endpoints.clone();
        let first = i % endpoints.len().max(1);
        endpoints.rotate_left(first);
        let policy = self
            .retry
            .with_deadline(self.args.op_timeout.max(self.retry.deadline));
        Ok(Client::connect_secure(&endpoints, policy, &self.security).await?)
    }

    /// `n` clients, each connected (one cheap read each) before the window opens.
    pub async fn clients(&self, n: usize) -> Result<Vec<Client>> {
        let mut clients = Vec::with_capacity(n);
        for i in 0..n {
            clients.push(self.client(i).await?);
        }
        let warm = clients
            .iter()
            .map(|c| async move { c.cluster_status(Consistency::Serializable).await });
        futures::future::try_join_all(warm)
            .await
            .context("connect the benchmark clients")?;
        Ok(clients)
    }

    /// A client whose preferred endpoint is `endpoint` (the others follow).
    pub async fn client_for(&self, endpoint: &str) -> Result<Client> {
        let i = self
            .endpoints
            .iter()
            .position(|e| same_addr(e, endpoint))
            .unwrap_or(0);
        self.client(i).await
    }

    pub fn window(&self) -> Window {
        Window::new(self.args.warmup(), self.args.duration)
    }

    pub fn seed(&self) -> u64 {
        self.args
            .seed
            .unwrap_or_else(|| self.run_id.parse().unwrap_or(1))
    }

    /// Sleeps through the window; CPU used in its measured part.
    pub async fn cpu_over_window(&self, w: Window) -> CpuUsage {
        let ticker = self.progress.follow(self.args.workload.name(), w);
        let cpu = stats::cpu_over_window(w, self.server_pids.clone(), self.leader_pid).await;
        ticker.abort();
        cpu
    }

    async fn leader_endpoint(&self) -> Result<String> {
        Ok(leader_of_with(&self.endpoints, &self.security).await?.1)
    }

    fn run_info(&self, leader: String) -> RunInfo {
        RunInfo {
            workload: self.args.workload.name().to_owned(),
            clients: self.args.clients(),
            duration_s: self.args.duration.as_secs_f64(),
            warmup_s: self.args.warmup().as_secs_f64(),
            server_version: self.server_version.clone(),
            leader,
            client0_endpoint: self.endpoints.first().cloned().unwrap_or_default(),
            tag: self.args.tag.clone(),
        }
    }

    /// Fresh counters for one client.
    pub fn stats(&self) -> Result<Stats> {
        Stats::new(self.progress.live.clone())
    }

    pub fn outcome(&self, stats: Vec<Stats>, cpu: CpuUsage, extra: Map<String, Value>) -> Outcome {
        Outcome { stats, cpu, extra }
    }
}

/// (leader id, leader address) as the members report it.
pub async fn leader_of(endpoints: &[String]) -> Result<(u64, String)> {
    leader_of_with(endpoints, &Security::default()).await
}

/// [`leader_of`] with a token and/or TLS.
pub async fn leader_of_with(endpoints: &[String], security: &Security) -> Result<(u64, String)> {
    let mut last_error = anyhow!("no endpoints");
    for endpoint in endpoints {
        let status = match probe_client_with(endpoint, security)
            .await?
            .cluster_status(Consistency::Serializable)
            .await
        {
            Ok(status) => status,
            Err(e) => {
                last_error = anyhow::Error::from(e).context(format!("status of {endpoint}"));
                continue;
            }
        };
        if status.leader_id == 0 {
            last_error = anyhow!("{endpoint} knows no leader");
            continue;
        }
        let addr = status
            .members
            .iter()
            .find(|m| m.id == status.leader_id)
            .map(|m| m.addr.clone())
            .unwrap_or_default();
        return Ok((status.leader_id, addr));
    }
    Err(last_error)
}

/// The Prometheus text a node serves at `GET /metrics` (plain HTTP on its one port).
pub async fn node_metrics(endpoint: &str) -> Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let host = endpoint
        .split("://")
        .last()
        .unwrap_or(endpoint)
        .trim_end_matches('/');
    let fetch = async {
        let mut stream = tokio::net::TcpStream::connect(host).await?;
        let request = format!("GET /metrics HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await?;
        Ok::<_, std::io::Error>(response)
    };
    let response = tokio::time::timeout(METRICS_TIMEOUT, fetch)
        .await
        .map_err(|_| anyhow!("GET {host}/metrics timed out"))?
        .with_context(|| format!("GET {host}/metrics"))?;
    let text = String::from_utf8_lossy(&response);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| anyhow!("GET {host}/metrics: not an HTTP answer"))?;
    if !head.starts_with("HTTP/1.1 200") {
        bail!(
            "GET {host}/metrics: {}",
            head.lines().next().unwrap_or_default()
        );
    }
    Ok(body.to_owned())
}

/// `http://127.0.0.1:1` and `127.0.0.1:1` are the same endpoint.
fn same_addr(a: &str, b: &str) -> bool {
    let strip = |s: &str| {
        s.split("://")
            .last()
            .unwrap_or(s)
            .trim_end_matches('/')
            .to_owned()
    };
    !b.is_empty() && strip(a) == strip(b)
}

fn read_pids(files: &[PathBuf]) -> Result<Vec<u32>> {
    let mut pids = Vec::new();
    for file in files {
        let text =
            std::fs::read_to_string(file).with_context(|| format!("read {}", file.display()))?;
        pids.extend(
            text.split_whitespace()
                .filter_map(|p| p.parse::<u32>().ok()),
        );
    }
    Ok(pids)
}

fn percyd_version(percyd: &std::path::Path) -> String {
    std::process::Command::new(percyd)
        .arg("--version")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "percyd (unknown version)".to_owned())
}

/// The progress line on stderr (drawn only when stderr is a terminal).
#[derive(Clone)]
pub struct Progress {
    bar: ProgressBar,
    live: Live,
}

impl Progress {
    fn new() -> Self {
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template("{spinner} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        Self {
            bar,
            live: Live::default(),
        }
    }

    /// A setup phase message.
    pub fn say(&self, message: String) {
        self.bar.set_message(message);
        self.bar.tick();
    }

    /// Updates the line with live counts until aborted.
    fn follow(&self, workload: &'static str, w: Window) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        let started = Instant::now();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(PROGRESS_TICK);
            loop {
                tick.tick().await;
                let ok = this.live.ok.load(Ordering::Relaxed);
                let failed = this.live.failed.load(Ordering::Relaxed);
                let elapsed = started.elapsed().as_secs_f64();
                let phase = if Instant::now() < w.measure_start {
                    "warmup"
                } else {
                    "measuring"
                };
                this.say(format!(
                    "{workload}: {phase} {elapsed:.1}s / {:.1}s  ok {ok} ({:.0}/s)  failed {failed}",
                    (w.end - started).as_secs_f64(),
                    ok as f64 / elapsed.max(f64::MIN_POSITIVE),
                ));
            }
        })
    }

    fn finish(&self) {
        self.bar.finish_and_clear();
    }
}
