//! The stores under a real single-node openraft: snapshots by policy, log purge, and a restart
//! that restores the snapshot and replays the log after it.

mod storage_common;

use std::collections::BTreeMap;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{InstallSnapshotError, RPCError, RaftError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::storage::{RaftLogReader, RaftLogStorage, RaftStateMachine};
use openraft::{BasicNode, Config, ServerState, SnapshotPolicy};
use percy_server::storage::StateMachineStore;
use percy_server::types::{NodeId, Proposal, Raft, TypeConfig};
use percy_statemachine::{Command, Op, Outcome};
use storage_common::{open, NODE};

/// Generous: CI is a loaded 2-core machine.
const WAIT: Duration = Duration::from_secs(30);
const SNAPSHOT_EVERY: u64 = 10;
const WRITES: u64 = 25;

/// A one-node cluster never talks to a peer.
struct NoPeers;

fn no_peer<E: std::error::Error>() -> RPCError<NodeId, BasicNode, E> {
    RPCError::Unreachable(Unreachable::new(&io::Error::other(
        "single-node test has no peers",
    )))
}

impl RaftNetworkFactory<TypeConfig> for NoPeers {
    type Network = NoPeers;

    async fn new_client(&mut self, _target: NodeId, _node: &BasicNode) -> NoPeers {
        NoPeers
    }
}

impl RaftNetwork<TypeConfig> for NoPeers {
    async fn append_entries(
        &mut self,
        _rpc: AppendEntriesRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        Err(no_peer())
    }

    async fn install_snapshot(
        &mut self,
        _rpc: InstallSnapshotRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, BasicNode, RaftError<NodeId, InstallSnapshotError>>,
    > {
        Err(no_peer())
    }

    async fn vote(
        &mut self,
        _rpc: VoteRequest<NodeId>,
        _option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        Err(no_peer())
    }
}

async fn start(dir: &std::path::Path) -> (Raft, StateMachineStore) {
    let config = Config {
        snapshot_policy: SnapshotPolicy::LogsSinceLast(SNAPSHOT_EVERY),
        max_in_snapshot_log_to_keep: 0,
        purge_batch_size: 1,
        ..Default::default()
    };
    let (log_store, sm_store) = open(dir);
    let raft = Raft::new(
        NODE,
        Arc::new(config.validate().expect("config")),
        NoPeers,
        log_store,
        sm_store.clone(),
    )
    .await
    .expect("raft");
    (raft, sm_store)
}

fn put(i: u64) -> Proposal {
    Proposal {
        now_ms: 1_700_000_000_000 + i,
        commands: vec![Command::new(Op::PutConfig {
            key: format!("key-{i}"),
            value: i.to_string().into_bytes(),
            expected_revision: None,
        })],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_purge_and_restart_under_openraft() {
    let dir = tempfile::tempdir().expect("tempdir");
    let last_index = {
        let (raft, sm) = start(dir.path()).await;
        assert!(!raft.is_initialized().await.expect("is_initialized"));
        raft.initialize(BTreeMap::from([(NODE, BasicNode::new("127.0.0.1:1"))]))
            .await
            .expect("initialize");
        raft.wait(Some(WAIT))
            .state(ServerState::Leader, "leader")
            .await
            .expect("leader");

        let mut last_index = 0;
        let mut last_revision = 0;
        for i in 0..WRITES {
            let reply = raft.client_write(put(i)).await.expect("write");
            let [result] = reply.data.commands.as_slice() else {
                panic!("one result per command: {:?}", reply.data);
            };
            assert_eq!(
                result.revision,
                last_revision + 1,
                "revisions count commands"
            );
            assert!(
                matches!(result.response, Ok(Outcome::ConfigPut(_))),
                "{:?}",
                result.response
            );
            last_index = reply.log_id.index;
            last_revision = result.revision;
        }
        // Wait for a snapshot recent enough that one more write cannot trigger the next one,
        // then make that write: it exists only in the log, so the restart must replay it.
        let metrics = raft
            .wait(Some(WAIT))
            .metrics(
                |m| {
                    m.snapshot
                        .is_some_and(|s| s.index + SNAPSHOT_EVERY > last_index + 1)
                        && m.purged.is_some()
                },
                "snapshot and purge",
            )
            .await
            .expect("snapshot");
        let snapshot_index = metrics.snapshot.expect("snapshot").index;
        assert!(
            snapshot_index >= SNAPSHOT_EVERY,
            "snapshot at {snapshot_index}"
        );
        let tail = raft.client_write(put(WRITES)).await.expect("tail write");
        last_index = tail.log_id.index;
        assert_eq!(*sm.applied_revision().borrow(), last_revision + 1);
        raft.shutdown().await.expect("shutdown");
        last_index
    };

    // The log starts after the purge point, and the snapshot covers what was purged.
    {
        let (mut log, mut sm) = open(dir.path());
        let state = log.get_log_state().await.expect("log state");
        let purged = state.last_purged_log_id.expect("purged").index;
        assert!(purged >= SNAPSHOT_EVERY, "purged up to {purged}");
        let remaining = log.try_get_log_entries(..).await.expect("entries");
        assert_eq!(remaining.first().map(|e| e.log_id.index), Some(purged + 1));
        let (restored, _) = sm.applied_state().await.expect("applied state");
        let restored_index = restored.map_or(0, |id| id.index);
        assert!(
            restored_index >= purged,
            "snapshot at {restored_index}, purged {purged}"
        );
        assert!(
            restored_index < last_index,
            "the tail write must come from log replay"
        );
    }

    let (raft, sm) = start(dir.path()).await;
    assert!(raft.is_initialized().await.expect("is_initialized"));
    raft.wait(Some(WAIT))
        .applied_index_at_least(Some(last_index), "replay")
        .await
        .expect("replay");
    {
        let state = sm.state();
        let state = state.read();
        for i in 0..=WRITES {
            let value = state.config(&format!("key-{i}")).map(|e| e.value.clone());
            assert_eq!(value, Some(i.to_string().into_bytes()), "key-{i}");
        }
    }
    raft.wait(Some(WAIT))
        .state(ServerState::Leader, "leader after restart")
        .await
        .expect("leader");
    let reply = raft
        .client_write(put(WRITES + 1))
        .await
        .expect("write after restart");
    assert!(reply.log_id.index > last_index);
    raft.shutdown().await.expect("shutdown");
}
