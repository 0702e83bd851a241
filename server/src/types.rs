//! The openraft type configuration shared by storage, network and node code.

use std::io::Cursor;

use percy_statemachine::{Command, Response};
use serde::{Deserialize, Serialize};

pub type NodeId = u64;

/// The payload of one Raft log entry: the commands the leader batched into it (group commit,
/// see `batcher`), stamped with the leader's wall clock when it proposed them. Apply never
/// reads a clock; it uses this stamp, so every replica sees the same time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proposal {
    pub now_ms: u64,
    /// Applied in order, each at its own revision. Never empty.
    pub commands: Vec<Command>,
}

/// What applying one command returned to its proposer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandResult {
    /// The state machine revision of this command: the state machine numbers commands itself
    /// (one more than the revision before), so several commands in one entry stay distinct.
    pub revision: u64,
    pub response: Response,
}

/// What applying one entry returned: one result per command, in the entry's order. Empty for
/// entries that carry no command: the blank entry a new leader appends and membership changes
/// (openraft wants one result per entry, and `change_membership` hands this value to its
/// caller).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApplyResult {
    pub commands: Vec<CommandResult>,
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
