//! Helpers shared by the server's integration tests: in-process clusters on free ports, and
//! waiting with generous deadlines (CI is a loaded 2-core machine).

#![allow(dead_code)] // each test binary uses its own subset

pub mod procs;

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use percy_server::{Node, NodeConfig, NodeHandle};
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tonic::transport::Channel;

/// Generous bound for anything that involves an election on a busy machine.
pub const SETTLE: Duration = Duration::from_secs(20);

/// One in-process node slot: its port (reserved by a bound listener) and data dir.
pub struct Slot {
    pub id: u64,
    pub listener: Option<TcpListener>,
    pub addr: String,
    pub dir: TempDir,
}

pub async fn slots(ids: &[u64]) -> Vec<Slot> {
    let mut out = Vec::new();
    for id in ids {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        out.push(Slot {
            id: *id,
            listener: Some(listener),
            addr,
            dir: tempfile::tempdir().unwrap(),
        });
    }
    out
}

pub fn config(slot: &Slot, peers: &BTreeMap<u64, String>) -> NodeConfig {
    NodeConfig::cluster(
        slot.id,
        slot.addr.parse().unwrap(),
        peers.clone(),
        slot.dir.path().to_path_buf(),
    )
}

pub async fn start(slot: &mut Slot, peers: &BTreeMap<u64, String>) -> NodeHandle {
    let listener = slot.listener.take().expect("slot already started");
    Node::start_with_listener(config(slot, peers), listener)
        .await
        .unwrap()
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

pub fn peers_of(slots: &[Slot]) -> BTreeMap<u64, String> {
    slots.iter().map(|s| (s.id, s.addr.clone())).collect()
}

pub async fn channel(addr: &str) -> Channel {
    tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_timeout(Duration::from_secs(5))
        .connect_lazy()
}

/// Polls `f` until it returns `Some`, or panics after `timeout` naming `what`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
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

/// The value of the un-labelled metric `name` in `addr`'s /metrics.
pub async fn metric(addr: &str, name: &str) -> f64 {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: percy\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut body = String::new();
    stream.read_to_string(&mut body).await.unwrap();
    body.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no metric {name} in {body}"))
}
