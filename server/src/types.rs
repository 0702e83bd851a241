//! The openraft type configuration shared by storage, network and node code.

use std::io::Cursor;

use percy_statemachine::{Command, Response};
use serde::{Deserialize, Serialize};

pub type NodeId = u64;

/// The payload of one Raft log entry: a command, stamped by the leader with its wall clock
/// when it proposed it. Apply never reads a clock; it uses this stamp, so every replica sees
/// the same time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proposal {
    pub now_ms: u64,
    pub command: Command,
}

/// What applying one entry returned to the proposer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApplyResult {
    /// The state machine revision of this command (the entry's log index).
    pub revision: u64,
    /// The state machine's answer. `None` for entries that carry no command: the blank entry
    /// a new leader appends and membership changes (openraft wants one result per entry, and
    /// `change_membership` hands this value to its caller).
    pub response: Option<Response>,
}

openraft::declare_raft_types!(
    pub TypeConfig:
        D = Proposal,
        R = ApplyResult,
        NodeId = NodeId,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

pub type Raft = openraft::Raft<TypeConfig>;
pub type LogId = openraft::LogId<NodeId>;
pub type StoredMembership = openraft::StoredMembership<NodeId, openraft::BasicNode>;
