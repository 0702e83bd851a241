//! Helpers shared by the `storage_*` test crates: building log entries and opening stores.
// Each test crate uses a different subset of these helpers.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::Path;

use openraft::{BasicNode, CommittedLeaderId, Entry, EntryPayload, Membership};
use percy_server::storage::{self, LogStore, StateMachineStore};
use percy_server::types::{LogId, Proposal, TypeConfig};
use percy_statemachine::{Command, Op};

pub const NODE: u64 = 1;

pub fn log_id(term: u64, index: u64) -> LogId {
    LogId::new(CommittedLeaderId::new(term, NODE), index)
}

pub fn blank(term: u64, index: u64) -> Entry<TypeConfig> {
    Entry {
        log_id: log_id(term, index),
        payload: EntryPayload::Blank,
    }
}

pub fn membership(term: u64, index: u64, voters: &[u64]) -> Entry<TypeConfig> {
    let nodes: BTreeMap<u64, BasicNode> = voters
        .iter()
        .map(|id| (*id, BasicNode::new(format!("127.0.0.1:{}", 7000 + id))))
        .collect();
    Entry {
        log_id: log_id(term, index),
        payload: EntryPayload::Membership(Membership::new(
            vec![voters.iter().copied().collect()],
            nodes,
        )),
    }
}

pub fn command(term: u64, index: u64, op: Op) -> Entry<TypeConfig> {
    batch(term, index, vec![op])
}

/// One entry carrying several commands, as the leader's group commit builds them.
pub fn batch(term: u64, index: u64, ops: Vec<Op>) -> Entry<TypeConfig> {
    Entry {
        log_id: log_id(term, index),
        payload: EntryPayload::Normal(Proposal {
            now_ms: 1_700_000_000_000 + index,
            commands: ops.into_iter().map(Command::new).collect(),
        }),
    }
}

pub fn put_config(term: u64, index: u64, key: &str, value: &str) -> Entry<TypeConfig> {
    command(
        term,
        index,
        Op::PutConfig {
            key: key.to_string(),
            value: value.as_bytes().to_vec(),
            expected_revision: None,
        },
    )
}

pub fn open(dir: &Path) -> (LogStore, StateMachineStore) {
    storage::open(dir).expect("open storage")
}
