//! Real `percyd` processes for tests: listening on ports the kernel picks (`--listen
//! 127.0.0.1:0 --address-file`, so no test races another for a port), with their own data
//! dirs, killed (SIGKILL) on drop, output captured to a file for error-message checks and
//! post-mortems. Starting one is [`crate::launch`]'s; here a failure fails the test. A cluster is one bootstrapped node that adds the others (`AddNode`), since
//! nobody knows a port before its node has bound it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use percy_proto::v1::cluster_service_client::ClusterServiceClient;
use percy_proto::v1::{AddNodeRequest, ClusterStatusRequest};

use crate::binaries::percyd_binary;
use crate::grpc::channel;
use crate::launch::{PercydProcess, PercydSpec, ANY_LOOPBACK_PORT};
use crate::wait::{eventually, SETTLE};

/// The `percyd` these processes run (`$PERCYD_BIN`, or built once per test process).
pub fn percyd() -> PathBuf {
    percyd_binary().unwrap_or_else(|e| panic!("no percyd to run: {e:#}"))
}

/// A port nobody listens on right now (the listener is dropped before `percyd` binds it). Only
/// for addresses no process binds (configurations percyd must refuse before binding).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port()
}

/// One node for a test: a [`PercydProcess`] whose failures fail the test.
pub struct Percyd {
    pub id: u64,
    pub addr: String,
    pub data_dir: PathBuf,
    process: PercydProcess,
}

impl Percyd {
    /// Spawns `percyd` as node `id` of `peers`, data in `data_dir`.
    pub fn spawn(id: u64, peers: &BTreeMap<u64, String>, data_dir: &Path) -> Self {
        Self::spawn_with(id, peers, data_dir, &[])
    }

    /// [`Percyd::spawn`] with `extra` flags (kept for restarts).
    pub fn spawn_with(
        id: u64,
        peers: &BTreeMap<u64, String>,
        data_dir: &Path,
        extra: &[&str],
    ) -> Self {
        let mut others = peers.clone();
        let listen = others
            .remove(&id)
            .unwrap_or_else(|| panic!("node {id} is not in {peers:?}"));
        let spec = PercydSpec {
            listen,
            peers: others,
            log: data_dir.with_extension(format!("stderr-{id}")),
            ..PercydSpec::on_any_port(&percyd(), id, data_dir)
        }
        .arg(extra.iter().copied())
        .env("RUST_LOG", "warn,percy_server=info");
        let mut process = PercydProcess::new(spec);
        process
            .spawn()
            .unwrap_or_else(|e| panic!("spawn percyd: {e}"));
        Self {
            id,
            addr: peers[&id].clone(),
            data_dir: data_dir.to_path_buf(),
            process,
        }
    }

    /// Spawns node `id` on a port the kernel picks; `others` are the members it knows of (the
    /// lowest id among them and itself bootstraps). Returns once the node has written its
    /// address; restarts reuse that port (its membership address).
    pub fn spawn_on_any_port(
        id: u64,
        others: &BTreeMap<u64, String>,
        data_dir: &Path,
        extra: &[&str],
    ) -> Self {
        let mut peers = others.clone();
        peers.insert(id, ANY_LOOPBACK_PORT.to_string());
        let mut node = Self::spawn_with(id, &peers, data_dir, extra);
        let addr = node
            .process
            .wait_bound(SETTLE)
            .unwrap_or_else(|e| panic!("{e}"));
        node.addr = addr.to_string();
        node
    }

    /// Starts the process again with the same arguments (after `kill`).
    pub fn restart(&mut self) {
        self.process
            .spawn()
            .unwrap_or_else(|e| panic!("restart percyd: {e}"));
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self) {
        self.process
            .kill()
            .unwrap_or_else(|e| panic!("kill percyd: {e}"));
    }

    /// SIGTERM and wait (bounded) for the exit status.
    pub fn terminate(&mut self) -> Option<std::process::ExitStatus> {
        self.process.terminate(TERMINATE_WITHIN)
    }

    /// What the node printed (every start's output).
    pub fn stderr(&self) -> String {
        self.process.log()
    }

    pub fn is_running(&mut self) -> bool {
        self.process.is_running()
    }
}

/// How long a SIGTERMed node may take to exit.
const TERMINATE_WITHIN: Duration = Duration::from_secs(10);

/// Lines of a node's stderr a failing test prints: its data dir (and the file) is deleted with
/// the test, so this is the only post-mortem a CI log keeps.
const POST_MORTEM_LINES: usize = 60;

impl Drop for Percyd {
    fn drop(&mut self) {
        let _ = self.process.kill();
        if std::thread::panicking() {
            eprintln!(
                "--- percyd node {} at {}: last {POST_MORTEM_LINES} lines of its output ---\n{}",
                self.id,
                self.addr,
                self.process.log_tail(POST_MORTEM_LINES)
            );
        }
    }
}

/// `percyd` processes on loopback ports the kernel picked, forming one cluster.
pub struct ProcCluster {
    pub nodes: Vec<Percyd>,
    pub dir: tempfile::TempDir,
}

impl ProcCluster {
    /// Node 1 bootstraps alone; nodes 2..=n start knowing it and are added as members.
    pub async fn start(n: u64) -> Self {
        Self::start_with(n, |_| &[]).await
    }

    /// [`Self::start`] with extra flags per node id.
    pub async fn start_with(n: u64, extra: impl Fn(u64) -> &'static [&'static str]) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let data = |id: u64| dir.path().join(format!("node{id}"));
        let first = Percyd::spawn_on_any_port(1, &BTreeMap::new(), &data(1), extra(1));
        let seed = BTreeMap::from([(1, first.addr.clone())]);
        let mut nodes = vec![first];
        for id in 2..=n {
            let node = Percyd::spawn_on_any_port(id, &seed, &data(id), extra(id));
            let addr = node.addr.clone();
            nodes.push(node);
            eventually(&format!("node {id} added"), SETTLE, || {
                let (seed, addr) = (seed[&1].clone(), addr.clone());
                async move {
                    let mut c = ClusterServiceClient::new(channel(&seed).await);
                    c.add_node(AddNodeRequest {
                        node_id: id,
                        addr,
                        ..Default::default()
                    })
                    .await
                    .ok()
                }
            })
            .await;
        }
        Self { nodes, dir }
    }

    pub fn node(&mut self, id: u64) -> &mut Percyd {
        self.nodes
            .iter_mut()
            .find(|n| n.id == id)
            .unwrap_or_else(|| panic!("no node {id}"))
    }

    /// Waits until every running node reports the same leader; returns it.
    pub async fn leader(&mut self, among: &[u64]) -> u64 {
        let addrs: Vec<String> = among.iter().map(|id| self.node(*id).addr.clone()).collect();
        eventually("an agreed leader", SETTLE, || {
            let addrs = addrs.clone();
            async move {
                let mut seen = Vec::new();
                for addr in &addrs {
                    let mut c = ClusterServiceClient::new(channel(addr).await);
                    let status = c.status(ClusterStatusRequest::default()).await.ok()?;
                    seen.push(status.into_inner().leader_id);
                }
                let first = seen[0];
                (first != 0 && among.contains(&first) && seen.iter().all(|l| *l == first))
                    .then_some(first)
            }
        })
        .await
    }
}
