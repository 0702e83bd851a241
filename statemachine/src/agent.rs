//! Agents: the registry of workers, their capabilities, labels and liveness status.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

/// An agent's id: the revision at which this incarnation registered. Re-registering a live agent
/// by name keeps its id; registering again after expiry or deregistration makes a new one, so a
/// revived process can never act under its old identity.
pub type AgentId = u64;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum AgentStatus {
    Active,
    /// Silent longer than its TTL; its tasks were requeued and its locks released.
    Expired,
    /// Left on its own.
    Deregistered,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Agent {
    pub id: AgentId,
    pub name: String,
    /// Host it runs on (also available as the `node` label for selectors).
    pub node: String,
    pub capabilities: BTreeSet<String>,
    /// os, arch, node, and whatever else the operator adds.
    pub labels: BTreeMap<String, String>,
    pub max_concurrent: u32,
    /// No heartbeat for this long → the leader's monitor proposes expiry.
    pub ttl_ms: u64,
    pub status: AgentStatus,
    pub registered_at_ms: u64,
    /// Last checkpoint of liveness that went through the log (heartbeats themselves do not).
    pub last_seen_ms: u64,
    pub create_revision: u64,
    pub revision: u64,
}

/// What an agent reported about its machine with a heartbeat (load average, cores, memory,
/// what it runs). Heartbeats never go through the log: the leader keeps the latest report in
/// memory and checkpoints it now and then (`Op::CheckpointAgentLoads`). `None` = the agent's
/// platform does not say. Integers only, so commands stay `Eq` and encode exactly.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentLoad {
    /// The 1-minute load average × 1000.
    pub load_milli: Option<u32>,
    /// CPUs the agent may use.
    pub cores: Option<u32>,
    pub mem_used_bytes: Option<u64>,
    pub mem_total_bytes: Option<u64>,
    /// Tasks (not execs) it runs now.
    pub running_tasks: u32,
    /// Execs it runs now.
    pub running_execs: u32,
}

impl AgentLoad {
    /// The load average per core (`None` when either is unknown): how busy the machine is,
    /// comparable across machines of different sizes.
    pub fn load_per_core(&self) -> Option<f64> {
        let load = f64::from(self.load_milli?) / 1000.0;
        let cores = f64::from(self.cores?.max(1));
        Some(load / cores)
    }
}

/// An agent's load as the last checkpoint recorded it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointedLoad {
    pub load: AgentLoad,
    /// The leader's time of the checkpoint that wrote it.
    pub at_ms: u64,
}
