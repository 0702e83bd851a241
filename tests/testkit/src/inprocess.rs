//! Nodes in the test's own process: real gRPC on loopback ports, real storage in a temp dir.
//! Every port is bound by a listener before any node starts and handed to its node
//! (`Node::start_with_listener`), so the ports are the test's own.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use percy_server::{Node, NodeConfig, NodeHandle};
use tempfile::TempDir;
use tokio::net::TcpListener;

use crate::wait::{eventually, SETTLE};

/// How long a new cluster may take to elect a leader on a loaded 2-core machine.
const LEADER_TIMEOUT: Duration = Duration::from_secs(30);

/// One node's place, for tests that start nodes one by one: its port (reserved by a bound
/// listener) and its data dir.
pub struct Slot {
    pub id: u64,
    pub listener: Option<TcpListener>,
    pub addr: String,
    pub dir: TempDir,
}

/// A slot for each id.
pub async fn slots(ids: &[u64]) -> Vec<Slot> {
    let mut out = Vec::new();
    for id in ids {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind a port");
        let addr = listener.local_addr().expect("bound address").to_string();
        out.push(Slot {
            id: *id,
            listener: Some(listener),
            addr,
            dir: tempfile::tempdir().expect("temp dir"),
        });
    }
    out
}

/// The configuration of the node in `slot` among `peers`.
pub fn config(slot: &Slot, peers: &BTreeMap<u64, String>) -> NodeConfig {
    NodeConfig::cluster(
        slot.id,
        slot.addr.parse().expect("a socket address"),
        peers.clone(),
        slot.dir.path().to_path_buf(),
    )
}

/// Starts the node in `slot` (once).
pub async fn start(slot: &mut Slot, peers: &BTreeMap<u64, String>) -> NodeHandle {
    let listener = slot.listener.take().expect("slot already started");
    Node::start_with_listener(config(slot, peers), listener)
        .await
        .expect("node starts")
}

/// Starts a node in every slot, all knowing each other as peers.
pub async fn start_all(slots: &mut [Slot]) -> Vec<NodeHandle> {
    let peers = peers_of(slots);
    let mut nodes = Vec::new();
    for slot in slots.iter_mut() {
        nodes.push(start(slot, &peers).await);
    }
    nodes
}

/// The `--peers` map of these slots.
pub fn peers_of(slots: &[Slot]) -> BTreeMap<u64, String> {
    slots.iter().map(|s| (s.id, s.addr.clone())).collect()
}

/// The id every running node agrees leads.
pub async fn agreed_leader(nodes: &[&NodeHandle]) -> u64 {
    eventually("an agreed leader", SETTLE, || async {
        let leaders: Vec<Option<u64>> = nodes.iter().map(|n| n.leader()).collect();
        let first = leaders[0]?;
        let running: Vec<u64> = nodes.iter().map(|n| n.node_id()).collect();
        (running.contains(&first) && leaders.iter().all(|l| *l == Some(first))).then_some(first)
    })
    .await
}

/// A running in-process cluster with a leader. It runs on its own tokio runtime, so both
/// plain `#[test]`s (driving percyctl as a child process) and async tests (driving the
/// library) can use it. Everything it starts is stopped on drop.
pub struct TestCluster {
    runtime: Option<tokio::runtime::Runtime>,
    nodes: Vec<Option<NodeHandle>>,
    endpoints: Vec<String>,
    data: TempDir,
}

impl TestCluster {
    /// `size` nodes (ids 1..=size) with default settings.
    pub fn start(size: usize) -> Self {
        Self::start_with(size, |_| {})
    }

    /// Starts `size` nodes, letting `tweak` adjust each config, and waits until every node
    /// knows a leader.
    pub fn start_with(size: usize, tweak: impl Fn(&mut NodeConfig)) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("test runtime");
        let data = tempfile::tempdir().expect("temp dir");
        let listeners = on(&runtime, async move {
            let mut listeners = Vec::new();
            for _ in 0..size {
                listeners.push(TcpListener::bind("127.0.0.1:0").await.expect("bind"));
            }
            listeners
        });
        let peers: BTreeMap<u64, String> = listeners
            .iter()
            .enumerate()
            .map(|(i, l)| (i as u64 + 1, l.local_addr().expect("addr").to_string()))
            .collect();
        let mut starts = Vec::new();
        for (i, listener) in listeners.into_iter().enumerate() {
            let id = i as u64 + 1;
            let addr = listener.local_addr().expect("addr");
            let mut config = NodeConfig::cluster(
                id,
                addr,
                peers.clone(),
                data.path().join(format!("node{id}")),
            );
            tweak(&mut config);
            starts.push((config, listener));
        }
        let nodes = on(&runtime, async move {
            let mut nodes = Vec::new();
            for (config, listener) in starts {
                nodes.push(
                    Node::start_with_listener(config, listener)
                        .await
                        .expect("node starts"),
                );
            }
            for node in &nodes {
                node.wait_for_leader(LEADER_TIMEOUT)
                    .await
                    .expect("a leader is elected");
            }
            nodes
        });
        let endpoints = nodes.iter().map(|n| n.addr().to_string()).collect();
        TestCluster {
            runtime: Some(runtime),
            nodes: nodes.into_iter().map(Some).collect(),
            endpoints,
            data,
        }
    }

    /// `host:port` of every node, in node id order.
    pub fn endpoints(&self) -> Vec<String> {
        self.endpoints.clone()
    }

    /// The comma-separated list percyctl takes.
    pub fn endpoints_arg(&self) -> String {
        self.endpoints.join(",")
    }

    /// The data dir of node `id` (1-based), e.g. for the `--auth` bootstrap token file.
    pub fn data_dir(&self, id: u64) -> PathBuf {
        self.data.path().join(format!("node{id}"))
    }

    /// Index of the node that believes it is the leader.
    pub fn leader_index(&self) -> Option<usize> {
        self.nodes
            .iter()
            .position(|n| n.as_ref().is_some_and(NodeHandle::is_leader))
    }

    /// Index of some running node that is not the leader.
    pub fn follower_index(&self) -> Option<usize> {
        let leader = self.leader_index();
        (0..self.nodes.len()).find(|&i| Some(i) != leader && self.nodes[i].is_some())
    }

    /// Stops node `index` (graceful shutdown: its port closes, streams end).
    pub fn stop(&mut self, index: usize) {
        if let (Some(node), Some(runtime)) = (self.nodes[index].take(), &self.runtime) {
            on(runtime, node.shutdown());
        }
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        let nodes: Vec<NodeHandle> = self.nodes.iter_mut().filter_map(Option::take).collect();
        if let Some(runtime) = self.runtime.take() {
            on(&runtime, async move {
                for node in nodes {
                    node.shutdown().await;
                }
            });
            // Dropping a runtime inside an async test would panic; this never blocks.
            runtime.shutdown_background();
        }
    }
}

/// Runs `future` to completion on `runtime` from a fresh thread, which works whether or not
/// the caller is itself inside a runtime.
fn on<F>(runtime: &tokio::runtime::Runtime, future: F) -> F::Output
where
    F: Future + Send,
    F::Output: Send,
{
    std::thread::scope(|scope| {
        scope
            .spawn(|| runtime.block_on(future))
            .join()
            .expect("cluster thread panicked")
    })
}
