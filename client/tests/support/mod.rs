//! Test support: an in-process Percy cluster (real gRPC on loopback ports, real storage in a
//! temp dir). percyctl's tests use it too (`client/ctl/tests/`, through `#[path]`), with
//! their runner for the binary next to them.
//!
//! The cluster runs on its own tokio runtime, so both plain `#[test]`s (driving percyctl as a
//! child process) and `#[tokio::test]`s (driving the library) can use it. Everything it
//! starts is stopped on drop.

#![allow(dead_code)] // Each test binary uses a different part of this module.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use percy_server::{Node, NodeConfig, NodeHandle};
use tokio::net::TcpListener;

/// How long a new cluster may take to elect a leader on a loaded 2-core machine.
const LEADER_TIMEOUT: Duration = Duration::from_secs(30);

/// A running in-process cluster.
pub struct TestCluster {
    runtime: Option<tokio::runtime::Runtime>,
    nodes: Vec<Option<NodeHandle>>,
    endpoints: Vec<String>,
    _data: tempfile::TempDir,
}

impl TestCluster {
    pub fn start(size: usize) -> Self {
        Self::start_with(size, |_| {})
    }

    /// Starts `size` nodes on free loopback ports, letting `tweak` adjust each config.
    pub fn start_with(size: usize, tweak: impl Fn(&mut NodeConfig)) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("test runtime");
        let data = tempfile::tempdir().expect("temp dir");
        let configs_and_listeners = on(&runtime, async move {
            let mut listeners = Vec::new();
            for _ in 0..size {
                // Bound before any node starts, so the ports are ours.
                listeners.push(TcpListener::bind("127.0.0.1:0").await.expect("bind"));
            }
            listeners
        });
        let peers: BTreeMap<u64, String> = configs_and_listeners
            .iter()
            .enumerate()
            .map(|(i, l)| (i as u64 + 1, l.local_addr().expect("addr").to_string()))
            .collect();
        let mut starts = Vec::new();
        for (i, listener) in configs_and_listeners.into_iter().enumerate() {
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
            _data: data,
        }
    }

    /// `host:port` of every node, in node id order.
    pub fn endpoints(&self) -> Vec<String> {
        self.endpoints.clone()
    }

    /// The data dir of node `id` (1-based), e.g. for the `--auth` bootstrap token file.
    pub fn data_dir(&self, id: u64) -> std::path::PathBuf {
        self._data.path().join(format!("node{id}"))
    }

    /// The comma-separated list percyctl takes.
    pub fn endpoints_arg(&self) -> String {
        self.endpoints.join(",")
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
