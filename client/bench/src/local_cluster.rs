//! `--local N`: N real `percyd` processes on loopback ports the kernel picks, each with its own
//! temporary data dir (fsync on, as always in percyd), torn down when the [`LocalCluster`] is
//! dropped — on success, on error and on ctrl-c (the caller turns the signal into an error).
//!
//! A process is started the way every Percy harness starts one (percy-testkit's `launch`,
//! built without the rest of the test kit): `--listen 127.0.0.1:0 --address-file`, so no node
//! loses its port to someone else between a probe and its bind. Since no port is known before
//! its node has bound it, node 1 bootstraps alone and adds the others (`AddNode`).
//!
//! The nodes share this machine, so each gets an equal share of its cores as runtime worker
//! threads (`percyd --worker-threads`), as one would configure co-located nodes: with every
//! node sized for the whole machine, the extra threads only add wake-ups and context switches
//! (on the 2-core VM of BENCHMARKS.md, ~9 % more CPU per lock handoff).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use percy_client::{Client, Consistency, RetryPolicy, Security};
use percy_testkit::launch::{PercydProcess, PercydSpec};

/// How long a status probe of one node may take.
const PROBE_DEADLINE: Duration = Duration::from_millis(500);
/// Pause between probes while waiting for the cluster.
const PROBE_INTERVAL: Duration = Duration::from_millis(100);
/// Log level of the nodes (their logs go to files in the temp dir).
const NODE_LOG_LEVEL: &str = "warn";
/// Environment variable naming the percyd binary (else: next to percyctl, else PATH).
pub const PERCYD_ENV: &str = "PERCYD";

/// A running local cluster.
pub struct LocalCluster {
    percyd: PathBuf,
    /// Nodes 1..=n, each bound (its address known).
    nodes: Vec<PercydProcess>,
    /// Removed on drop unless `--keep`.
    dir: Option<tempfile::TempDir>,
    kept_dir: Option<PathBuf>,
}

impl LocalCluster {
    /// Starts `n` nodes (ids 1..=n) as one cluster: node 1 alone, then each other node added
    /// as a member, all within `timeout`. The caller waits for the cluster to be ready with
    /// [`LocalCluster::wait_ready`].
    pub async fn start(
        n: usize,
        percyd: Option<PathBuf>,
        keep: bool,
        timeout: Duration,
    ) -> Result<LocalCluster> {
        if n == 0 {
            bail!("--local needs at least one node");
        }
        let percyd = match percyd {
            Some(path) => path,
            None => find_percyd()?,
        };
        let dir = tempfile::Builder::new()
            .prefix("percy-bench-")
            .tempdir()
            .context("create a temp dir for the local cluster")?;
        let (dir, kept_dir) = if keep {
            let path = dir.keep();
            (None, Some(path))
        } else {
            (Some(dir), None)
        };
        let mut cluster = LocalCluster {
            percyd,
            nodes: Vec::with_capacity(n),
            dir,
            kept_dir,
        };
        let deadline = Instant::now() + timeout;
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        // `--worker-threads` of every node: its share of this machine's cores.
        let worker_threads = (cores / n).max(1).to_string();
        let mut first: BTreeMap<u64, String> = BTreeMap::new();
        for id in 1..=n as u64 {
            let data_dir = cluster.root().join(format!("node-{id}"));
            let spec = PercydSpec {
                peers: first.clone(),
                ..PercydSpec::on_any_port(&cluster.percyd, id, &data_dir)
            }
            .arg(["--worker-threads", &worker_threads])
            .env("RUST_LOG", NODE_LOG_LEVEL);
            let left = deadline.saturating_duration_since(Instant::now());
            let node =
                // Waiting for its address blocks: off the runtime's threads.
                tokio::task::spawn_blocking(move || PercydProcess::start(spec, left))
                    .await?
                    .with_context(|| {
                        format!("local node {id}; logs in {}", cluster.root().display())
                    })?;
            let addr = node
                .addr()
                .ok_or_else(|| anyhow!("local node {id} has no address"))?
                .to_string();
            cluster.nodes.push(node);
            if id == 1 {
                first.insert(id, addr);
            } else {
                let left = deadline.saturating_duration_since(Instant::now());
                let policy = RetryPolicy::default().with_deadline(left);
                let bootstrap =
                    Client::connect_secure(&cluster.endpoints()[..1], policy, &Security::default())
                        .await?;
                bootstrap
                    .add_node(id, &addr)
                    .await
                    .with_context(|| format!("adding local node {id} to the cluster"))?;
            }
        }
        Ok(cluster)
    }

    pub fn root(&self) -> &Path {
        match (&self.dir, &self.kept_dir) {
            (Some(dir), _) => dir.path(),
            (None, Some(path)) => path,
            (None, None) => Path::new("."),
        }
    }

    pub fn percyd(&self) -> &Path {
        &self.percyd
    }

    /// Client endpoints, node 1 first.
    pub fn endpoints(&self) -> Vec<String> {
        self.nodes
            .iter()
            .filter_map(PercydProcess::addr)
            .map(|addr| addr.to_string())
            .collect()
    }

    pub fn endpoint(&self, id: u64) -> Result<String> {
        self.node(id)?
            .addr()
            .map(|addr| addr.to_string())
            .ok_or_else(|| anyhow!("local node {id} has no address"))
    }

    /// PIDs of the running nodes.
    pub fn pids(&self) -> Vec<u32> {
        self.nodes.iter().filter_map(PercydProcess::pid).collect()
    }

    pub fn pid(&self, id: u64) -> Option<u32> {
        self.node(id).ok()?.pid()
    }

    pub fn data_dir(&self, id: u64) -> Result<PathBuf> {
        Ok(self.node(id)?.data_dir().to_path_buf())
    }

    fn node(&self, id: u64) -> Result<&PercydProcess> {
        self.nodes
            .iter()
            .find(|n| n.node_id() == id)
            .ok_or_else(|| anyhow!("no local node {id}"))
    }

    fn node_mut(&mut self, id: u64) -> Result<&mut PercydProcess> {
        self.nodes
            .iter_mut()
            .find(|n| n.node_id() == id)
            .ok_or_else(|| anyhow!("no local node {id}"))
    }

    /// Starts node `id` again on its data dir and address.
    pub fn spawn(&mut self, id: u64) -> Result<()> {
        Ok(self.node_mut(id)?.spawn()?)
    }

    /// SIGKILL, and reap the process.
    pub fn kill9(&mut self, id: u64) -> Result<()> {
        Ok(self.node_mut(id)?.kill()?)
    }

    /// Waits until every node answers and they agree on a leader, then until a linearizable
    /// read through the leader succeeds. Returns the leader's id.
    pub async fn wait_ready(&mut self, timeout: Duration) -> Result<u64> {
        let deadline = Instant::now() + timeout;
        loop {
            self.check_alive()?;
            if let Some(leader) = self.agreed_leader().await {
                let client = probe_client(&self.endpoint(leader)?).await?;
                if client
                    .cluster_status(Consistency::Linearizable)
                    .await
                    .is_ok()
                {
                    return Ok(leader);
                }
            }
            if Instant::now() >= deadline {
                bail!(
                    "the local cluster did not elect a leader within {timeout:?}; node logs in {}",
                    self.root().display()
                );
            }
            tokio::time::sleep(PROBE_INTERVAL).await;
        }
    }

    async fn agreed_leader(&self) -> Option<u64> {
        let mut leader = None;
        for endpoint in self.endpoints() {
            let client = probe_client(&endpoint).await.ok()?;
            let status = client
                .cluster_status(Consistency::Serializable)
                .await
                .ok()?;
            if status.leader_id == 0 || leader.is_some_and(|l| l != status.leader_id) {
                return None;
            }
            leader = Some(status.leader_id);
        }
        leader
    }

    /// Fails when a node exited on its own (bad flags, corrupt data dir, …), quoting its log.
    pub fn check_alive(&mut self) -> Result<()> {
        for node in &mut self.nodes {
            node.check_running()?;
        }
        Ok(())
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        // Each node is killed when dropped; before a kept dir is announced.
        self.nodes.clear();
        if let Some(path) = &self.kept_dir {
            eprintln!(
                "kept the local cluster's data and logs in {}",
                path.display()
            );
        }
    }
}

/// A client for one node that gives up quickly.
pub async fn probe_client(endpoint: &str) -> Result<Client> {
    probe_client_with(endpoint, &Security::default()).await
}

/// [`probe_client`] with a token and/or TLS (a cluster with `--auth` or `--tls-*`).
pub async fn probe_client_with(endpoint: &str, security: &Security) -> Result<Client> {
    let policy = RetryPolicy::default().with_deadline(PROBE_DEADLINE);
    Client::connect_secure(&[endpoint.to_owned()], policy, security)
        .await
        .with_context(|| format!("client for {endpoint}"))
}

/// `$PERCYD`, else `percyd` next to this executable, else `percyd` on the PATH.
fn find_percyd() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os(PERCYD_ENV) {
        return Ok(PathBuf::from(path));
    }
    let exe = std::env::current_exe().context("locate percyctl")?;
    let sibling = exe.with_file_name("percyd");
    if sibling.is_file() {
        return Ok(sibling);
    }
    Ok(PathBuf::from("percyd"))
}
