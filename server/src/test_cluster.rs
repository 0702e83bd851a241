//! Test support: a three-node cluster of in-process nodes on free ports, and the calls the
//! server's unit tests make against it.

use std::collections::BTreeMap;
use std::time::Duration;

use percy_proto::v1::config_service_client::ConfigServiceClient;
use percy_proto::v1::{GetConfigRequest, PutConfigRequest};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::{Node, NodeConfig, NodeHandle};

/// Bound on anything that should happen soon, an election included: generous for a loaded
/// 2-core CI machine.
pub(crate) const SETTLE: Duration = Duration::from_secs(20);

/// Three in-process nodes on free ports; stopped by [`Cluster::stop`].
pub(crate) struct Cluster {
    pub nodes: Vec<NodeHandle>,
    _dirs: Vec<tempfile::TempDir>,
}

impl Cluster {
    pub async fn start() -> Self {
        let mut listeners = Vec::new();
        let mut peers = BTreeMap::new();
        for id in 1..=3u64 {
            let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            let addr = listener.local_addr().expect("addr");
            peers.insert(id, addr.to_string());
            listeners.push((id, addr, listener));
        }
        let mut nodes = Vec::new();
        let mut dirs = Vec::new();
        for (id, addr, listener) in listeners {
            let dir = tempfile::tempdir().expect("tempdir");
            let config = NodeConfig::cluster(id, addr, peers.clone(), dir.path().to_path_buf());
            nodes.push(
                Node::start_with_listener(config, listener)
                    .await
                    .expect("start"),
            );
            dirs.push(dir);
        }
        let cluster = Self { nodes, _dirs: dirs };
        cluster.leader_index().await;
        cluster
    }

    /// The position in `nodes` of the leader every node agrees on.
    pub async fn leader_index(&self) -> usize {
        let deadline = tokio::time::Instant::now() + SETTLE;
        loop {
            let leaders: Vec<_> = self.nodes.iter().map(NodeHandle::leader).collect();
            if let Some(Some(leader)) = leaders.first() {
                if leaders.iter().all(|l| l == &Some(*leader)) {
                    if let Some(at) = self.nodes.iter().position(|n| n.node_id() == *leader) {
                        return at;
                    }
                }
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no agreed leader: {leaders:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Writes one key through the leader and waits until every node has applied it, so the
    /// leader's blank entry and the membership are behind everyone; returns that index.
    pub async fn warm_up(&self, leader: usize) -> u64 {
        self.put(leader, "warm-up")
            .await
            .expect("task")
            .expect("put");
        let settled = self.applied(leader);
        let deadline = tokio::time::Instant::now() + SETTLE;
        for at in 0..self.nodes.len() {
            while self.applied(at) < settled {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "node {} catches up",
                    self.nodes[at].node_id()
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        settled
    }

    pub fn applied(&self, at: usize) -> u64 {
        let metrics = self.nodes[at].raft().metrics();
        let applied = metrics.borrow().last_applied.map_or(0, |l| l.index);
        applied
    }

    /// Puts `key` through node `at`, in a task.
    pub fn put(&self, at: usize, key: &str) -> JoinHandle<Result<(), tonic::Status>> {
        let endpoint = self.nodes[at].endpoint();
        let key = key.to_string();
        tokio::spawn(async move {
            let mut client = ConfigServiceClient::connect(endpoint)
                .await
                .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
            client
                .put(PutConfigRequest {
                    key,
                    value: b"v".to_vec(),
                    ..Default::default()
                })
                .await
                .map(drop)
        })
    }

    /// Reads `key` through node `at`, linearizably; `None` when it is absent.
    pub async fn get(&self, at: usize, key: &str) -> Option<Vec<u8>> {
        let mut client = ConfigServiceClient::connect(self.nodes[at].endpoint())
            .await
            .expect("connect");
        client
            .get(GetConfigRequest {
                key: key.to_string(),
                ..Default::default()
            })
            .await
            .expect("get")
            .into_inner()
            .entry
            .map(|entry| entry.value)
    }

    /// The other two nodes' positions in `nodes`.
    pub fn followers(&self, leader: usize) -> Vec<usize> {
        (0..self.nodes.len()).filter(|at| *at != leader).collect()
    }

    pub async fn stop(self) {
        for node in self.nodes {
            node.shutdown().await;
        }
    }
}
