//! The durability gates (`storage::durable_log`): with the log's sync rounds held back, nothing
//! that lets an entry count outside a node may happen — no apply, no stored commit index past
//! the disk, no membership change, no client answer, no follower learning a commit, no
//! follower acknowledgement. Each test fails if its gate is removed: the held-back sync never
//! comes, so only the gate stands between the entry and the outcome the test forbids.

use std::collections::BTreeMap;
use std::time::Duration;

use openraft::storage::{RaftLogStorage, RaftLogStorageExt, RaftStateMachine};
use openraft::{BasicNode, CommittedLeaderId, Entry, EntryPayload, Membership};
use percy_statemachine::{Command, Op};
use tokio::task::JoinHandle;

use crate::storage::{self, LogStore, StateMachineStore};
use crate::test_cluster::{Cluster, SETTLE};
use crate::types::{LogId, Proposal, TypeConfig};

/// How long a held-back outcome is watched for not happening. Long enough that a missing
/// gate shows (the write path takes about a millisecond), short enough to keep tests quick.
const STAYS_PENDING: Duration = Duration::from_millis(400);

fn log_id(index: u64) -> LogId {
    LogId::new(CommittedLeaderId::new(1, 1), index)
}

fn put(index: u64, key: &str) -> Entry<TypeConfig> {
    Entry {
        log_id: log_id(index),
        payload: EntryPayload::Normal(Proposal {
            now_ms: 1_700_000_000_000,
            commands: vec![Command::new(Op::PutConfig {
                key: key.into(),
                value: b"v".to_vec(),
                expected_revision: None,
            })],
        }),
    }
}

fn membership(index: u64) -> Entry<TypeConfig> {
    let nodes = BTreeMap::from([(1, BasicNode::new("127.0.0.1:1"))]);
    Entry {
        log_id: log_id(index),
        payload: EntryPayload::Membership(Membership::new(vec![[1].into()], nodes)),
    }
}

fn open(dir: &std::path::Path) -> (LogStore, StateMachineStore) {
    storage::open(dir).expect("open storage")
}

/// Asserts that `task` is still running after [`STAYS_PENDING`].
async fn assert_pending<T>(task: &JoinHandle<T>, what: &str) {
    tokio::time::sleep(STAYS_PENDING).await;
    assert!(
        !task.is_finished(),
        "{what} happened while the log was not durable"
    );
}

async fn finishes<T>(task: JoinHandle<T>, what: &str) -> T {
    tokio::time::timeout(SETTLE, task)
        .await
        .unwrap_or_else(|_| panic!("{what} did not happen once syncs ran"))
        .expect("task")
}

#[tokio::test]
async fn an_entry_is_applied_only_once_durable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut log, mut sm) = open(dir.path());
    let durable = log.durable_log();
    durable.hold_syncs(true);
    // openraft hears "flushed" at once: that is what lets it replicate while the disk works.
    tokio::time::timeout(SETTLE, log.blocking_append([put(1, "a"), put(2, "b")]))
        .await
        .expect("an append does not wait for the disk")
        .expect("append");
    assert_eq!(durable.watermark().durable, None);

    let apply = tokio::spawn(async move { sm.apply([put(1, "a"), put(2, "b")]).await });
    assert_pending(&apply, "apply").await;
    durable.hold_syncs(false);
    finishes(apply, "apply").await.expect("applied");
    assert!(durable.watermark().covers(2));
}

#[tokio::test]
async fn the_stored_commit_index_never_passes_the_durable_log() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut log, _sm) = open(dir.path());
    let durable = log.durable_log();
    durable.hold_syncs(true);
    log.blocking_append([put(1, "a"), put(2, "b")])
        .await
        .expect("append");
    log.save_committed(Some(log_id(2))).await.expect("save");
    assert_eq!(log.read_committed().await.expect("read"), None);

    durable.hold_syncs(false);
    durable.wait_covered(2).await.expect("durable");
    log.save_committed(Some(log_id(2))).await.expect("save");
    assert_eq!(log.read_committed().await.expect("read"), Some(log_id(2)));

    durable.hold_syncs(true);
    log.blocking_append([put(3, "c")]).await.expect("append");
    log.save_committed(Some(log_id(3))).await.expect("save");
    assert_eq!(log.read_committed().await.expect("read"), Some(log_id(2)));
}

#[tokio::test]
async fn a_membership_entry_is_durable_before_its_append_returns() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut log, _sm) = open(dir.path());
    let durable = log.durable_log();
    durable.hold_syncs(true);
    let append = tokio::spawn(async move { log.blocking_append([membership(1)]).await });
    assert_pending(&append, "the membership append").await;
    durable.hold_syncs(false);
    finishes(append, "the membership append")
        .await
        .expect("append");
    assert!(durable.watermark().covers(1));
}

#[tokio::test]
async fn nothing_counts_before_the_leaders_log_is_durable() {
    let cluster = Cluster::start().await;
    let leader = cluster.leader_index().await;
    let settled = cluster.warm_up(leader).await;

    cluster.nodes[leader].durable_log().hold_syncs(true);
    let put = cluster.put(leader, "held");
    assert_pending(&put, "the answer to the client").await;
    // The followers hold the entry durably and the leader counts itself, so openraft sees it
    // committed; but no node may apply it while only a minority has it on disk.
    for at in 0..3 {
        assert_eq!(
            cluster.applied(at),
            settled,
            "node {} applied an entry the leader has not made durable",
            cluster.nodes[at].node_id()
        );
    }
    cluster.nodes[leader].durable_log().hold_syncs(false);
    finishes(put, "the answer to the client")
        .await
        .expect("put");
    cluster.stop().await;
}

#[tokio::test]
async fn a_follower_acknowledges_only_durable_entries() {
    let cluster = Cluster::start().await;
    let leader = cluster.leader_index().await;
    let followers = cluster.followers(leader);
    cluster.warm_up(leader).await;

    for &at in &followers {
        cluster.nodes[at].durable_log().hold_syncs(true);
    }
    let put = cluster.put(leader, "held");
    // Only the leader holds the entry durably: one node of three is not a majority.
    assert_pending(&put, "the answer to the client").await;
    cluster.nodes[followers[0]].durable_log().hold_syncs(false);
    finishes(put, "the answer to the client")
        .await
        .expect("put");
    cluster.nodes[followers[1]].durable_log().hold_syncs(false);
    cluster.stop().await;
}
