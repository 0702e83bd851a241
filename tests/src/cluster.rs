//! The process harness: N real `percyd` processes on loopback, every directed peer link
//! i→j through a [`Proxy`] the harness controls, and process control (SIGKILL and restart on
//! the same data dir, SIGSTOP / SIGCONT).
//!
//! Node *i* is started with `--peers` naming, for every other node *j*, the proxy of link i→j,
//! and listens on a port the kernel picks (percy-testkit's `launch`: `--listen 127.0.0.1:0
//! --address-file`); the proxies leading to it are routed there once it has bound. This relies
//! on percyd dialling peers at the addresses of its local `--peers` in preference to the
//! addresses stored in the Raft membership. Clients talk to nodes directly, so a client of a
//! partitioned node sees what a partitioned user would.
//!
//! A node that exits on its own (a crash, a restart that refuses its data dir) is an error the
//! harness reports with the node's last log lines ([`Cluster::check_running`]), instead of
//! the timeout it would otherwise cause much later.
//!
//! With [`ClusterConfig::power_loss`], each node's data dir is a percy-lazyfs mount (a FUSE
//! filesystem that keeps unsynced writes in memory, `tests/lazyfs`), backed by
//! `node-N.disk/`, and [`Cluster::power_cut`] drops what a killed node had not synced.
//!
//! Everything started here is killed when the [`Cluster`] is dropped, and the mounts are
//! unmounted (each node's durable files are then in its `node-N.disk/`).

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use percy_client::{Client, Consistency, RetryPolicy, Security, TlsOptions};
use tokio::runtime::Handle;
use tokio::sync::oneshot;

use percy_lazyfs::Mounted;
use percy_testkit::launch::{PercydProcess, PercydSpec};

use crate::binaries::{percyctl_binary, percyd_binary};
use crate::proxy::{LinkModes, Mode, Proxy};

/// Raft timings for tests: wide margins for a loaded two-core box.
pub const HEARTBEAT_MS: u64 = 150;
pub const ELECTION_TIMEOUT_MIN_MS: u64 = 1_000;
pub const ELECTION_TIMEOUT_MAX_MS: u64 = 2_000;
/// Snapshot often, so that snapshots, log purges and snapshot installs happen under faults.
pub const SNAPSHOT_EVERY: u64 = 300;
/// How long a status probe of one node may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long to wait for a leader that every running node agrees on.
pub const LEADER_TIMEOUT: Duration = Duration::from_secs(60);
/// Pause between status probes while waiting.
const PROBE_INTERVAL: Duration = Duration::from_millis(250);
/// Threads of the runtime that carries the proxies.
const PROXY_THREADS: usize = 2;
/// How long a node may take to bind its port and report it (a FUSE mount, a loaded box).
const BIND_TIMEOUT: Duration = Duration::from_secs(60);

/// How to start the cluster.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    pub nodes: u64,
    /// Where data dirs and logs go.
    pub dir: PathBuf,
    /// Extra `percyd` flags for every node.
    pub extra_args: Vec<String>,
    /// TLS on every link (client and peer, with the certificates `percyctl certs init`
    /// makes) and `--auth`; clients present the admin certificate.
    pub secure: bool,
    /// Data dirs on percy-lazyfs mounts, so that [`Cluster::power_cut`] can drop what a node
    /// had not synced (needs /dev/fuse and root, or fusermount3).
    pub power_loss: bool,
}

/// One `percyd` node.
struct Node {
    id: u64,
    /// Where it serves (the port it bound on its first start, kept for restarts).
    listen: SocketAddr,
    process: PercydProcess,
    /// The lazy filesystem the data dir is mounted on, in a power-loss cluster.
    mount: Option<Mounted>,
}

/// A running cluster. Dropping it kills every process and proxy it started.
pub struct Cluster {
    nodes: BTreeMap<u64, Node>,
    proxies: BTreeMap<(u64, u64), Proxy>,
    /// What every client of this cluster needs to be let in.
    security: Security,
    net: NetRuntime,
}

impl Cluster {
    /// Starts `config.nodes` nodes and their proxies (does not wait for a leader).
    pub fn start(config: &ClusterConfig) -> Result<Cluster> {
        let percyd = percyd_binary()?;
        let net = NetRuntime::start()?;
        std::fs::create_dir_all(&config.dir)?;
        let ids: Vec<u64> = (1..=config.nodes).collect();
        let mut proxies = BTreeMap::new();
        for &from in &ids {
            for &to in &ids {
                if from != to {
                    proxies.insert((from, to), Proxy::start_unrouted(&net.handle)?);
                }
            }
        }
        let (certs, security) = if config.secure {
            let certs = config.dir.join("certs");
            let security = make_certificates(&certs, &ids)?;
            (Some(certs), security)
        } else {
            (None, Security::default())
        };
        let mut processes = BTreeMap::new();
        let mut mounts = BTreeMap::new();
        for &id in &ids {
            let data_dir = config.dir.join(format!("node-{id}"));
            if config.power_loss {
                let disk = config.dir.join(format!("node-{id}.disk"));
                std::fs::create_dir_all(&disk)?;
                std::fs::create_dir_all(&data_dir)?;
                mounts.insert(id, Mounted::mount(&data_dir, &disk)?);
            }
            let mut spec = PercydSpec::on_any_port(&percyd, id, &data_dir);
            spec.log = config.dir.join(format!("node-{id}.log"));
            spec.peers = ids
                .iter()
                .filter(|&&peer| peer != id)
                .map(|&peer| (peer, proxies[&(id, peer)].listen_addr().to_string()))
                .collect();
            if let Some(certs) = &certs {
                spec = spec
                    .arg([
                        OsStr::new("--tls-cert"),
                        certs.join(format!("node-{id}.crt")).as_os_str(),
                    ])
                    .arg([
                        OsStr::new("--tls-key"),
                        certs.join(format!("node-{id}.key")).as_os_str(),
                    ])
                    .arg([OsStr::new("--tls-ca"), certs.join("ca.crt").as_os_str()])
                    .arg(["--auth"]);
            }
            let spec = spec
                .arg([
                    "--heartbeat-ms".to_string(),
                    HEARTBEAT_MS.to_string(),
                    "--election-timeout-min-ms".to_string(),
                    ELECTION_TIMEOUT_MIN_MS.to_string(),
                    "--election-timeout-max-ms".to_string(),
                    ELECTION_TIMEOUT_MAX_MS.to_string(),
                    "--snapshot-every".to_string(),
                    SNAPSHOT_EVERY.to_string(),
                ])
                .arg(&config.extra_args)
                .env(
                    "RUST_LOG",
                    std::env::var("PERCY_NODE_LOG").unwrap_or_else(|_| "info".to_owned()),
                );
            let mut process = PercydProcess::new(spec);
            process.spawn()?;
            processes.insert(id, process);
        }
        // Every node is starting; each is routed to once it reports its port.
        let mut nodes = BTreeMap::new();
        for (id, mut process) in processes {
            let listen = process.wait_bound(BIND_TIMEOUT)?;
            for (&(_, to), proxy) in &proxies {
                if to == id {
                    proxy.route_to(listen);
                }
            }
            let mount = mounts.remove(&id);
            nodes.insert(
                id,
                Node {
                    id,
                    listen,
                    process,
                    mount,
                },
            );
        }
        Ok(Cluster {
            nodes,
            proxies,
            security,
            net,
        })
    }

    /// Node ids.
    pub fn ids(&self) -> Vec<u64> {
        self.nodes.keys().copied().collect()
    }

    /// What a client of this cluster needs: TLS and the admin certificate for a secure one.
    pub fn security(&self) -> &Security {
        &self.security
    }

    /// The real (client-facing) address of a node.
    pub fn addr(&self, id: u64) -> SocketAddr {
        self.nodes[&id].listen
    }

    /// Every node's client endpoint, `host:port`.
    pub fn endpoints(&self) -> Vec<String> {
        self.nodes.values().map(|n| n.listen.to_string()).collect()
    }

    /// Endpoints starting with node `first`, so a client prefers that node.
    pub fn endpoints_from(&self, first: u64) -> Vec<String> {
        let mut endpoints = vec![self.addr(first).to_string()];
        endpoints.extend(
            self.nodes
                .values()
                .filter(|n| n.id != first)
                .map(|n| n.listen.to_string()),
        );
        endpoints
    }

    /// The node's data dir.
    pub fn data_dir(&self, id: u64) -> &Path {
        self.nodes[&id].process.data_dir()
    }

    /// The node's log file.
    pub fn log_path(&self, id: u64) -> &Path {
        self.nodes[&id].process.log_path()
    }

    fn node(&mut self, id: u64) -> Result<&mut Node> {
        self.nodes
            .get_mut(&id)
            .ok_or_else(|| anyhow!("no node {id}"))
    }

    /// Fails if a node exited without the harness killing it, naming the node, whether it was
    /// a restart, how long it ran, its exit status and the last lines of its log. The dead
    /// node is forgotten (a later [`Cluster::restart`] starts it again).
    pub fn check_running(&mut self) -> Result<()> {
        for node in self.nodes.values_mut() {
            node.process.check_running()?;
        }
        Ok(())
    }

    /// SIGKILLs a node (paused or not: the kill is immediate).
    pub fn kill(&mut self, id: u64) -> Result<()> {
        Ok(self.node(id)?.process.kill()?)
    }

    /// A power cut for a killed node: everything it wrote and did not sync (file contents,
    /// sizes, created, renamed and removed entries) is gone. Returns how many files and
    /// directories lost something. Fails if the node is running or its data dir is not on a
    /// lazy filesystem ([`ClusterConfig::power_loss`]).
    pub fn power_cut(&mut self, id: u64) -> Result<usize> {
        let node = self.node(id)?;
        if node.process.is_started() {
            bail!("power cut of node {id} while it runs: kill it first");
        }
        let mount = node.mount.as_ref().ok_or_else(|| {
            anyhow!("node {id}'s data dir is not on a lazy filesystem (ClusterConfig::power_loss)")
        })?;
        Ok(mount.power_cut())
    }

    /// Starts a killed node again on the same data dir and address.
    pub fn restart(&mut self, id: u64) -> Result<()> {
        Ok(self.node(id)?.process.spawn()?)
    }

    /// True when the node's process is running (possibly paused).
    pub fn is_running(&self, id: u64) -> bool {
        self.nodes[&id].process.is_started()
    }

    /// SIGSTOPs a node.
    pub fn pause(&mut self, id: u64) -> Result<()> {
        Ok(self.node(id)?.process.pause()?)
    }

    /// SIGCONTs a paused node.
    pub fn resume(&mut self, id: u64) -> Result<()> {
        Ok(self.node(id)?.process.resume()?)
    }

    /// Makes traffic from `a` to `b` fail in `mode` for every (a, b) in `blocked`; every
    /// other link passes. Traffic a→b is a's requests on link a→b and a's answers on b→a.
    pub fn set_network(&self, blocked: &BTreeSet<(u64, u64)>, mode: Mode) {
        for (&(from, to), proxy) in &self.proxies {
            let pick = |a: u64, b: u64| {
                if blocked.contains(&(a, b)) {
                    mode
                } else {
                    Mode::Pass
                }
            };
            proxy.set(LinkModes {
                forward: pick(from, to),
                backward: pick(to, from),
            });
        }
    }

    /// Every link passes.
    pub fn heal_network(&self) {
        self.set_network(&BTreeSet::new(), Mode::Pass);
    }

    /// Resumes paused nodes, restarts killed ones and heals the network.
    pub fn heal_all(&mut self) -> Result<()> {
        self.heal_network();
        for id in self.ids() {
            self.resume(id)?;
            self.restart(id)?;
        }
        Ok(())
    }

    /// The running, unpaused nodes and their client addresses.
    pub fn live_nodes(&self) -> Vec<(u64, SocketAddr)> {
        self.nodes
            .values()
            .filter(|node| node.process.is_started() && !node.process.is_paused())
            .map(|node| (node.id, node.listen))
            .collect()
    }

    /// The leader as the running, unpaused nodes see it, if they agree; else `None`.
    pub async fn leader(&self) -> Option<u64> {
        probe_leader(&self.live_nodes(), &self.security).await
    }

    /// Waits until every running node agrees on a leader; fails at once if a node died.
    pub async fn wait_for_leader(&mut self, timeout: Duration) -> Result<u64> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            self.check_running()?;
            if let Some(leader) = self.leader().await {
                return Ok(leader);
            }
            if tokio::time::Instant::now() >= deadline {
                bail!("no agreed leader within {timeout:?}");
            }
            tokio::time::sleep(PROBE_INTERVAL).await;
        }
    }

    /// The tokio handle the proxies run on.
    pub fn net_handle(&self) -> &Handle {
        &self.net.handle
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for node in self.nodes.values_mut() {
            // The mount can only go once nothing has files open on it.
            let _ = node.process.kill();
            if let Some(mount) = node.mount.take() {
                // Best effort: a failed save only costs the post-mortem copy.
                if let Err(error) = mount.unmount() {
                    eprintln!(
                        "percy-tests: unmounting node {}'s data dir: {error}",
                        node.id
                    );
                }
            }
        }
        // Proxies stop with the runtime that carries them.
        self.proxies.clear();
    }
}

/// A client that talks to `addr` only, with a short deadline (for probes).
pub async fn probe_client(addr: SocketAddr, security: &Security) -> Result<Client> {
    let retry = RetryPolicy::default().with_deadline(PROBE_TIMEOUT);
    Ok(Client::connect_secure(&[addr.to_string()], retry, security).await?)
}

/// Writes a development CA and certificates for nodes `ids` (all on 127.0.0.1) into `dir`
/// with `percyctl certs init`, the way a user makes them, and returns the admin's client
/// settings: the CA, and the admin certificate (an admin credential without a token).
fn make_certificates(dir: &Path, ids: &[u64]) -> Result<Security> {
    let nodes: Vec<String> = ids.iter().map(|id| format!("{id}=127.0.0.1")).collect();
    let output = Command::new(percyctl_binary()?)
        .arg("certs")
        .arg("init")
        .arg(dir)
        .arg("--nodes")
        .arg(nodes.join(","))
        .output()
        .context("running percyctl certs init")?;
    if !output.status.success() {
        bail!(
            "percyctl certs init failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let read = |name: &str| {
        std::fs::read(dir.join(name)).with_context(|| format!("read {}", dir.join(name).display()))
    };
    Ok(Security {
        token: None,
        tls: Some(TlsOptions {
            ca_pem: read("ca.crt")?,
            client_cert_pem: Some((read("admin.crt")?, read("admin.key")?)),
        }),
    })
}

/// The leader as `nodes` see it (each asked for its local view), if they all know one and
/// agree; else `None`.
pub async fn probe_leader(nodes: &[(u64, SocketAddr)], security: &Security) -> Option<u64> {
    let mut seen = BTreeSet::new();
    for (_, addr) in nodes {
        let client = probe_client(*addr, security).await.ok()?;
        let status = client
            .cluster_status(Consistency::Serializable)
            .await
            .ok()?;
        if status.leader_id == 0 {
            return None;
        }
        seen.insert(status.leader_id);
    }
    (seen.len() == 1).then(|| *seen.iter().next().expect("one leader"))
}

/// A tokio runtime on its own thread, for the proxies: the workload's runtime may be busy, and
/// a runtime cannot be dropped from inside another one.
struct NetRuntime {
    handle: Handle,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl NetRuntime {
    fn start() -> Result<NetRuntime> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(PROXY_THREADS)
            .thread_name("percy-proxy")
            .enable_all()
            .build()?;
        let handle = runtime.handle().clone();
        let (shutdown, stopped) = oneshot::channel::<()>();
        let thread = thread::Builder::new()
            .name("percy-proxy-runtime".to_owned())
            .spawn(move || {
                runtime.block_on(async {
                    let _ = stopped.await;
                });
                runtime.shutdown_background();
            })?;
        Ok(NetRuntime {
            handle,
            shutdown: Some(shutdown),
            thread: Some(thread),
        })
    }
}

impl Drop for NetRuntime {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
