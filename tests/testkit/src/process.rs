//! Real `percyd` processes for tests: listening on ports the kernel picks (`--listen
//! 127.0.0.1:0 --address-file`, so no test races another for a port), with their own data
//! dirs, killed (SIGKILL) on drop, stderr captured to a file for error-message checks and
//! post-mortems. A cluster is one bootstrapped node that adds the others (`AddNode`), since
//! nobody knows a port before its node has bound it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use percy_proto::v1::cluster_service_client::ClusterServiceClient;
use percy_proto::v1::{AddNodeRequest, ClusterStatusRequest};

use crate::binaries::percyd_binary;
use crate::grpc::channel;
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

pub struct Percyd {
    pub id: u64,
    pub addr: String,
    pub data_dir: PathBuf,
    args: Vec<String>,
    stderr_path: PathBuf,
    child: Option<Child>,
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
        let addr = peers[&id].clone();
        let peers_arg: Vec<String> = peers.iter().map(|(i, a)| format!("{i}={a}")).collect();
        let mut args = vec![
            "--node-id".to_string(),
            id.to_string(),
            "--listen".into(),
            addr.clone(),
            "--peers".into(),
            peers_arg.join(","),
            "--data-dir".into(),
            data_dir.display().to_string(),
        ];
        args.extend(extra.iter().map(|arg| arg.to_string()));
        let mut p = Self {
            id,
            addr,
            data_dir: data_dir.to_path_buf(),
            args,
            stderr_path: data_dir.with_extension(format!("stderr-{id}")),
            child: None,
        };
        p.restart();
        p
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
        const ANY_PORT: &str = "127.0.0.1:0";
        let mut peers = others.clone();
        peers.insert(id, ANY_PORT.to_string());
        let address_file = data_dir.with_extension(format!("address-{id}"));
        let _absent = std::fs::remove_file(&address_file);
        let mut extra: Vec<&str> = extra.to_vec();
        let address_arg = address_file.display().to_string();
        extra.extend(["--address-file", &address_arg]);
        let mut node = Self::spawn_with(id, &peers, data_dir, &extra);
        let started = std::time::Instant::now();
        let addr = loop {
            if let Ok(text) = std::fs::read_to_string(&address_file) {
                break text.trim().to_string();
            }
            assert!(
                node.is_running() && started.elapsed() < SETTLE,
                "percyd {id} wrote no --address-file: {}",
                node.stderr()
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        // From now on the node is where it bound: a restart must come back there.
        for arg in &mut node.args {
            *arg = arg.replace(&format!("{id}={ANY_PORT}"), &format!("{id}={addr}"));
            if arg == ANY_PORT {
                arg.clone_from(&addr);
            }
        }
        node.addr = addr;
        node
    }

    /// Starts the process again with the same arguments (after `kill`).
    pub fn restart(&mut self) {
        let stderr = std::fs::File::create(&self.stderr_path).expect("stderr file");
        let child = Command::new(percyd())
            .args(&self.args)
            .env("RUST_LOG", "warn,percy_server=info")
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("spawn percyd");
        self.child = Some(child);
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM and wait (bounded) for the exit status.
    pub fn terminate(&mut self) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        // SAFETY: plain kill(2) on a child we spawned and have not reaped.
        unsafe {
            libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
        }
        for _ in 0..200 {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
        None
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }
}

/// Lines of a node's stderr a failing test prints: its data dir (and the file) is deleted with
/// the test, so this is the only post-mortem a CI log keeps.
const POST_MORTEM_LINES: usize = 60;

impl Drop for Percyd {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            let stderr = self.stderr();
            let lines: Vec<&str> = stderr.lines().collect();
            let tail = &lines[lines.len().saturating_sub(POST_MORTEM_LINES)..];
            eprintln!(
                "--- percyd node {} at {}: last {} lines of stderr ---\n{}",
                self.id,
                self.addr,
                tail.len(),
                tail.join("\n")
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
