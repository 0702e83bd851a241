//! `--local N`: N real `percyd` processes on free loopback ports, each with its own temporary
//! data dir (fsync on, as always in percyd), torn down when the [`LocalCluster`] is dropped —
//! on success, on error and on ctrl-c (the caller turns the signal into an error).
//!
//! The nodes share this machine, so each gets an equal share of its cores as runtime worker
//! threads (`percyd --worker-threads`), as one would configure co-located nodes: with every
//! node sized for the whole machine, the extra threads only add wake-ups and context switches
//! (on the 2-core VM of BENCHMARKS.md, ~9 % more CPU per lock handoff).

use std::fs::File;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use percy_client::{Client, Consistency, RetryPolicy, Security};

/// How long a status probe of one node may take.
const PROBE_DEADLINE: Duration = Duration::from_millis(500);
/// Pause between probes while waiting for the cluster.
const PROBE_INTERVAL: Duration = Duration::from_millis(100);
/// Log level of the nodes (their logs go to files in the temp dir).
const NODE_LOG_LEVEL: &str = "warn";
/// Environment variable naming the percyd binary (else: next to percyctl, else PATH).
pub const PERCYD_ENV: &str = "PERCYD";

struct LocalNode {
    id: u64,
    listen: SocketAddr,
    data_dir: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

/// A running local cluster.
pub struct LocalCluster {
    percyd: PathBuf,
    peers: String,
    /// `--worker-threads` of every node: its share of this machine's cores.
    worker_threads: usize,
    nodes: Vec<LocalNode>,
    /// Removed on drop unless `--keep`.
    dir: Option<tempfile::TempDir>,
    kept_dir: Option<PathBuf>,
}

impl LocalCluster {
    /// Starts `n` nodes (ids 1..=n); the caller waits with [`LocalCluster::wait_ready`].
    pub fn start(n: usize, percyd: Option<PathBuf>, keep: bool) -> Result<LocalCluster> {
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
        let mut nodes = Vec::with_capacity(n);
        for id in 1..=n as u64 {
            nodes.push(LocalNode {
                id,
                listen: free_port()?,
                data_dir: dir.path().join(format!("node-{id}")),
                log: dir.path().join(format!("node-{id}.log")),
                child: None,
            });
        }
        let peers = nodes
            .iter()
            .map(|node| format!("{}={}", node.id, node.listen))
            .collect::<Vec<_>>()
            .join(",");
        let (dir, kept_dir) = if keep {
            let path = dir.keep();
            (None, Some(path))
        } else {
            (Some(dir), None)
        };
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        let mut cluster = LocalCluster {
            percyd,
            peers,
            worker_threads: (cores / n).max(1),
            nodes,
            dir,
            kept_dir,
        };
        for id in 1..=n as u64 {
            cluster.spawn(id)?;
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
        self.nodes.iter().map(|n| n.listen.to_string()).collect()
    }

    pub fn endpoint(&self, id: u64) -> Result<String> {
        Ok(self.node(id)?.listen.to_string())
    }

    /// PIDs of the running nodes.
    pub fn pids(&self) -> Vec<u32> {
        self.nodes
            .iter()
            .filter_map(|n| n.child.as_ref().map(Child::id))
            .collect()
    }

    pub fn pid(&self, id: u64) -> Option<u32> {
        self.node(id).ok()?.child.as_ref().map(Child::id)
    }

    pub fn data_dir(&self, id: u64) -> Result<PathBuf> {
        Ok(self.node(id)?.data_dir.clone())
    }

    fn node(&self, id: u64) -> Result<&LocalNode> {
        self.nodes
            .iter()
            .find(|n| n.id == id)
            .ok_or_else(|| anyhow!("no local node {id}"))
    }

    /// Starts node `id` (again) on its data dir.
    pub fn spawn(&mut self, id: u64) -> Result<()> {
        let percyd = self.percyd.clone();
        let peers = self.peers.clone();
        let worker_threads = self.worker_threads;
        let node = self
            .nodes
            .iter_mut()
            .find(|n| n.id == id)
            .ok_or_else(|| anyhow!("no local node {id}"))?;
        if node.child.is_some() {
            return Ok(());
        }
        let log = File::options()
            .create(true)
            .append(true)
            .open(&node.log)
            .with_context(|| format!("open {}", node.log.display()))?;
        let child = Command::new(&percyd)
            .arg("--node-id")
            .arg(id.to_string())
            .arg("--listen")
            .arg(node.listen.to_string())
            .arg("--peers")
            .arg(&peers)
            .arg("--data-dir")
            .arg(&node.data_dir)
            .arg("--worker-threads")
            .arg(worker_threads.to_string())
            .env("RUST_LOG", NODE_LOG_LEVEL)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("start {}", percyd.display()))?;
        node.child = Some(child);
        Ok(())
    }

    /// SIGKILL, and reap the process.
    pub fn kill9(&mut self, id: u64) -> Result<()> {
        let node = self
            .nodes
            .iter_mut()
            .find(|n| n.id == id)
            .ok_or_else(|| anyhow!("no local node {id}"))?;
        if let Some(mut child) = node.child.take() {
            child.kill().with_context(|| format!("kill node {id}"))?;
            child.wait().with_context(|| format!("reap node {id}"))?;
        }
        Ok(())
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
        for node in &self.nodes {
            let client = probe_client(&node.listen.to_string()).await.ok()?;
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

    /// Fails when a node exited on its own (bad flags, corrupt data dir, …).
    pub fn check_alive(&mut self) -> Result<()> {
        for node in &mut self.nodes {
            if let Some(child) = node.child.as_mut() {
                if let Some(status) = child.try_wait()? {
                    node.child = None;
                    bail!(
                        "local node {} exited ({status}); its log: {}",
                        node.id,
                        node.log.display()
                    );
                }
            }
        }
        Ok(())
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
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

fn free_port() -> Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").context("find a free loopback port")?;
    Ok(listener.local_addr()?)
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
