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
