//! Counts of the log entries this node applied, by kind, for `/metrics`
//! (`percy_raft_applied_entries_total{kind}`). A benchmark reads them on a node that stays up
//! to tell what a workload wrote to the log apart from the leader's periodic housekeeping: the
//! issue's "zero Raft entries per heartbeat" is about the `other` kind, while liveness
//! checkpoints every 30 s and the blank entry of a new leader are expected.

use std::sync::atomic::{AtomicU64, Ordering};

use openraft::EntryPayload;
use percy_statemachine::Op;

use crate::types::TypeConfig;

/// What an applied entry was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    /// The empty entry a new leader commits first.
    Blank,
    /// A membership change.
    Membership,
    /// Only the liveness monitor's periodic writes: `CheckpointAgents`,
    /// `CheckpointAgentLoads`, `Tick`.
    Checkpoint,
    /// Contains an `ExpireAgents` (and otherwise only monitor writes).
    Expiry,
    /// Anything else: a client's write (or a monitor write that rode along with one).
    Other,
}

impl EntryKind {
    pub const ALL: [EntryKind; 5] = [
        EntryKind::Blank,
        EntryKind::Membership,
        EntryKind::Checkpoint,
        EntryKind::Expiry,
        EntryKind::Other,
    ];

    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            EntryKind::Blank => "blank",
            EntryKind::Membership => "membership",
            EntryKind::Checkpoint => "checkpoint",
            EntryKind::Expiry => "expiry",
            EntryKind::Other => "other",
        }
    }

    pub fn of(payload: &EntryPayload<TypeConfig>) -> EntryKind {
        match payload {
            EntryPayload::Blank => EntryKind::Blank,
            EntryPayload::Membership(_) => EntryKind::Membership,
            EntryPayload::Normal(proposal) => {
                let mut kind = EntryKind::Checkpoint;
                for command in &proposal.commands {
                    match command.op {
                        Op::CheckpointAgents { .. }
                        | Op::CheckpointAgentLoads { .. }
                        | Op::Tick => {}
                        Op::ExpireAgents { .. } => kind = EntryKind::Expiry,
                        _ => return EntryKind::Other,
                    }
                }
                kind
            }
        }
    }
}

/// Entries applied since this process started, by [`EntryKind`] (log replay at start counts).
#[derive(Debug, Default)]
pub struct AppliedEntries {
    counts: [AtomicU64; EntryKind::ALL.len()],
}

impl AppliedEntries {
    pub fn count(&self, kind: EntryKind) {
        self.counts[kind as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn get(&self, kind: EntryKind) -> u64 {
        self.counts[kind as usize].load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::Proposal;
    use percy_statemachine::Command;

    fn normal(ops: Vec<Op>) -> EntryPayload<TypeConfig> {
        EntryPayload::Normal(Proposal {
            now_ms: 1,
            commands: ops.into_iter().map(Command::new).collect(),
        })
    }

    #[test]
    fn monitor_writes_are_told_apart_from_client_writes() {
        assert_eq!(EntryKind::of(&EntryPayload::Blank), EntryKind::Blank);
        let checkpoint = normal(vec![
            Op::CheckpointAgents {
                last_seen_ms: Vec::new(),
            },
            Op::Tick,
        ]);
        assert_eq!(EntryKind::of(&checkpoint), EntryKind::Checkpoint);
        let expiry = normal(vec![Op::Tick, Op::ExpireAgents { agent_ids: vec![1] }]);
        assert_eq!(EntryKind::of(&expiry), EntryKind::Expiry);
        let mixed = normal(vec![
            Op::Tick,
            Op::ExpireAgents { agent_ids: vec![1] },
            Op::DeleteConfig {
                key: "k".into(),
                expected_revision: None,
            },
        ]);
        assert_eq!(EntryKind::of(&mixed), EntryKind::Other);
    }

    #[test]
    fn counts_are_kept_per_kind() {
        let applied = AppliedEntries::default();
        applied.count(EntryKind::Other);
        applied.count(EntryKind::Other);
        applied.count(EntryKind::Blank);
        assert_eq!(applied.get(EntryKind::Other), 2);
        assert_eq!(applied.get(EntryKind::Blank), 1);
        assert_eq!(applied.get(EntryKind::Checkpoint), 0);
    }
}
