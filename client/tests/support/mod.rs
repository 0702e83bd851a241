//! Test support: an in-process Percy cluster (real gRPC on loopback ports, real storage in a
//! temp dir) and a runner for the `percyctl` binary.
//!
//! The cluster runs on its own tokio runtime, so both plain `#[test]`s (driving percyctl as a
//! child process) and `#[tokio::test]`s (driving the library) can use it. Everything it
//! starts is stopped on drop.

#![allow(dead_code)] // Each test binary uses a different part of this module.

use std::collections::BTreeMap;
use std::future::Future;
use std::process::{Command, Output};
use std::time::Duration;

use percy_server::{Node, NodeConfig, NodeHandle};
use tokio::net::TcpListener;

/// How long a new cluster may take to elect a leader on a loaded 2-core machine.
const LEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// percyctl's retry deadline in tests: generous, so a slow CI box does not flake.
pub const CTL_TIMEOUT: &str = "30s";

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

/// The result of one percyctl run.
#[derive(Debug)]
pub struct Ctl {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Ctl {
    /// Parses stdout as JSON (for `-o json` runs), failing the test with the output if not.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {self:?}"))
    }

    #[track_caller]
    pub fn ok(self) -> Self {
        assert_eq!(self.code, 0, "percyctl failed: {self:?}");
        self
    }
}

impl From<Output> for Ctl {
    fn from(output: Output) -> Self {
        Ctl {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }
}

/// A percyctl command against `endpoints`, ready to run or spawn.
pub fn percyctl_command(endpoints: &str, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_percyctl"));
    command
        .arg("--timeout")
        .arg(CTL_TIMEOUT)
        .args(args)
        .env("PERCY_ENDPOINTS", endpoints)
        .env_remove("RUST_LOG");
    command
}

/// Runs percyctl to completion.
pub fn percyctl(endpoints: &str, args: &[&str]) -> Ctl {
    percyctl_command(endpoints, args)
        .output()
        .expect("percyctl runs")
        .into()
}

/// Runs percyctl with a specific `--timeout` (for tests of failure paths).
pub fn percyctl_with_timeout(endpoints: &str, timeout: &str, args: &[&str]) -> Ctl {
    Command::new(env!("CARGO_BIN_EXE_percyctl"))
        .arg("--timeout")
        .arg(timeout)
        .args(args)
        .env("PERCY_ENDPOINTS", endpoints)
        .env_remove("RUST_LOG")
        .output()
        .expect("percyctl runs")
        .into()
}

/// A child process that is killed if the test ends before it does.
pub struct ChildGuard(pub std::process::Child);

impl ChildGuard {
    /// Waits for the child to exit on its own, giving up (and killing it) after a generous
    /// limit so a hung child fails the test instead of hanging it.
    pub fn wait_output(&mut self) -> Ctl {
        const LIMIT: Duration = Duration::from_secs(60);
        // Drain the pipes while waiting, so a chatty child never blocks on a full pipe.
        let stdout = drain(self.0.stdout.take());
        let stderr = drain(self.0.stderr.take());
        let started = std::time::Instant::now();
        let status = loop {
            match self.0.try_wait().expect("wait for child") {
                Some(status) => break status,
                None if started.elapsed() > LIMIT => {
                    let _ = self.0.kill();
                    panic!("child still running after {LIMIT:?}");
                }
                None => std::thread::sleep(Duration::from_millis(50)),
            }
        };
        Ctl {
            code: status.code().unwrap_or(-1),
            stdout: stdout.join().expect("stdout reader"),
            stderr: stderr.join().expect("stderr reader"),
        }
    }
}

fn drain(pipe: Option<impl std::io::Read + Send + 'static>) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut text = String::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_string(&mut text);
        }
        text
    })
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
