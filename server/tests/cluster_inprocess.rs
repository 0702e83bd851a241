//! Three nodes in one process: election, a write through a follower (forwarded), a
//! linearizable read from a follower, failover after the leader stops, and membership changes
//! at run time (add a fourth node, remove one).

mod common;

use common::*;
use percy_proto::v1::cluster_service_client::ClusterServiceClient;
use percy_proto::v1::config_service_client::ConfigServiceClient;
use percy_proto::v1::*;
use percy_server::NodeHandle;

async fn put(addr: &str, key: &str, value: &str) -> PutConfigResponse {
    let mut client = ConfigServiceClient::new(channel(addr).await);
    client
        .put(PutConfigRequest {
            key: key.into(),
            value: value.as_bytes().to_vec(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
}

async fn get(addr: &str, key: &str, consistency: Consistency) -> GetConfigResponse {
    let mut client = ConfigServiceClient::new(channel(addr).await);
    client
        .get(GetConfigRequest {
            header: Some(RequestHeader {
                consistency: consistency.into(),
                ..Default::default()
            }),
            key: key.into(),
        })
        .await
        .unwrap()
        .into_inner()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_forward_read_fail_over_and_change_membership() {
    let mut slots = slots(&[1, 2, 3, 4]).await;
    let peers = peers_of(&slots[..3]);
    let mut nodes: Vec<NodeHandle> = Vec::new();
    for slot in slots.iter_mut().take(3) {
        nodes.push(start(slot, &peers).await);
    }
    let leader = agreed_leader(&nodes.iter().collect::<Vec<_>>()).await;
    let follower = nodes.iter().find(|n| n.node_id() != leader).unwrap();

    // A write through a follower is forwarded to the leader.
    let written = put(&follower.addr().to_string(), "greeting", "hello").await;
    let header = written.header.unwrap();
    assert!(header.forwarded, "a follower must forward writes");
    assert_eq!(header.node_id, follower.node_id());
    assert_eq!(header.leader_id, leader);
    let revision = written.entry.unwrap().revision;
    assert_eq!(header.revision, revision);

    // Every follower answers a linearizable read with it, at once.
    for node in nodes.iter().filter(|n| n.node_id() != leader) {
        let read = get(
            &node.addr().to_string(),
            "greeting",
            Consistency::Linearizable,
        )
        .await;
        assert_eq!(read.entry.unwrap().value, b"hello");
        let h = read.header.unwrap();
        assert!(
            h.forwarded,
            "a follower's linearizable read consults the leader"
        );
        assert!(h.revision >= revision);
    }

    // Stop the leader: the other two elect a new one and keep taking writes.
    let index = nodes.iter().position(|n| n.node_id() == leader).unwrap();
    nodes.remove(index).shutdown().await;
    let new_leader = agreed_leader(&nodes.iter().collect::<Vec<_>>()).await;
    assert_ne!(new_leader, leader);
    let survivor = nodes[0].addr().to_string();
    put(&survivor, "after-failover", "yes").await;
    let read = get(
        &nodes[1].addr().to_string(),
        "after-failover",
        Consistency::Linearizable,
    )
    .await;
    assert_eq!(read.entry.unwrap().value, b"yes");

    // Add a fourth node at run time (it must not bootstrap: 1 is the lowest id in its peers).
    let mut all_peers = peers.clone();
    all_peers.insert(4, slots[3].addr.clone());
    let fourth = start(&mut slots[3], &all_peers).await;
    let fourth_addr = fourth.addr().to_string();
    let mut cluster = ClusterServiceClient::new(channel(&survivor).await);
    let added = cluster
        .add_node(AddNodeRequest {
            header: None,
            node_id: 4,
            addr: fourth_addr.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        added.members.iter().any(|m| m.id == 4 && m.voter),
        "{added:?}"
    );
    nodes.push(fourth);
    // The new node has the data (it caught up as a learner), and answers reads.
    let read = get(&fourth_addr, "greeting", Consistency::Linearizable).await;
    assert_eq!(read.entry.unwrap().value, b"hello");
    // It learned the cluster's id from the leader's first call.
    assert!(nodes[0].cluster_id().is_some());
    assert_eq!(nodes[2].cluster_id(), nodes[0].cluster_id());

    // Remove the stopped old leader from the membership; three voters remain, all running.
    let removed = cluster
        .remove_node(RemoveNodeRequest {
            header: None,
            node_id: leader,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        !removed.members.iter().any(|m| m.id == leader),
        "{removed:?}"
    );
    assert_eq!(removed.members.iter().filter(|m| m.voter).count(), 3);
    put(&fourth_addr, "after-membership-change", "ok").await;

    // Unknown node → NOT_FOUND; the status reports the members.
    let err = cluster
        .remove_node(RemoveNodeRequest {
            header: None,
            node_id: 99,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    let status = cluster
        .status(ClusterStatusRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status.members.len(), 3);
    assert!(status.applied_index > 0);

    for node in nodes {
        node.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serializable_reads_are_local_and_a_single_node_bootstraps_itself() {
    let mut slots = slots(&[1]).await;
    let peers = peers_of(&slots);
    let node = start(&mut slots[0], &peers).await;
    node.wait_for_leader(SETTLE).await.unwrap();
    let addr = node.addr().to_string();
    put(&addr, "k", "v").await;
    let read = get(&addr, "k", Consistency::Serializable).await;
    assert_eq!(read.entry.unwrap().value, b"v");
    assert!(!read.header.unwrap().forwarded);
    // An absent key is not an error: the entry is simply unset.
    let absent = get(&addr, "missing", Consistency::Linearizable).await;
    assert!(absent.entry.is_none());
    node.shutdown().await;
}

/// Group commit packs many commands into one log entry, so a policy counting entries never
/// snapshotted a state built by a burst of writes. The snapshot policy counts commands: here
/// one burst fills fewer entries than `snapshot_every` and must still be snapshotted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_commands_in_few_entries_is_snapshotted() {
    const EVERY: u64 = 1_000;
    const WRITES: usize = 1_500;
    const CONCURRENT: usize = 100;
    let mut slots = slots(&[1]).await;
    let peers = peers_of(&slots);
    let mut config = config(&slots[0], &peers);
    config.snapshot_every = EVERY;
    let listener = slots[0].listener.take().unwrap();
    let node = percy_server::Node::start_with_listener(config, listener)
        .await
        .unwrap();
    node.wait_for_leader(SETTLE).await.unwrap();
    let addr = node.addr().to_string();
    let client = ConfigServiceClient::new(channel(&addr).await);
    let mut writers = tokio::task::JoinSet::new();
    for writer in 0..CONCURRENT {
        let mut client = client.clone();
        writers.spawn(async move {
            for i in (writer..WRITES).step_by(CONCURRENT) {
                client
                    .put(PutConfigRequest {
                        key: format!("burst/{i}"),
                        value: b"v".to_vec(),
                        ..Default::default()
                    })
                    .await
                    .unwrap();
            }
        });
    }
    while let Some(done) = writers.join_next().await {
        done.unwrap();
    }
    let snapshot_index = eventually("a snapshot of the burst", SETTLE, || async {
        let m = node.raft().metrics().borrow().clone();
        m.snapshot.map(|id| id.index)
    })
    .await;
    let last_index = node.raft().metrics().borrow().last_log_index.unwrap_or(0);
    assert!(
        last_index < EVERY,
        "the burst took {last_index} entries: too few commands per entry for this test"
    );
    assert!(snapshot_index > 0 && snapshot_index <= last_index);
    node.shutdown().await;
}

/// A plan is one command however many tasks it creates, so a policy counting commands never
/// snapshotted a state built from plans (a million tasks as 1,000 plans: 1,000 commands), and
/// once writes stop the tail of a burst must not wait for the next burst: a restart would
/// replay it. Here 4,000 tasks arrive as 8 plans, far below `snapshot_every` in commands; the
/// snapshot must come anyway, once the node is quiet, and cover every entry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_submitted_as_plans_are_snapshotted_once_writes_stop() {
    const EVERY: u64 = 50_000;
    const PLANS: usize = 8;
    const PLAN_TASKS: usize = 500;
    let mut slots = slots(&[1]).await;
    let peers = peers_of(&slots);
    let mut config = config(&slots[0], &peers);
    config.snapshot_every = EVERY;
    let listener = slots[0].listener.take().unwrap();
    let node = percy_server::Node::start_with_listener(config, listener)
        .await
        .unwrap();
    node.wait_for_leader(SETTLE).await.unwrap();
    let addr = node.addr().to_string();
    let mut plans =
        percy_proto::v1::plan_service_client::PlanServiceClient::new(channel(&addr).await);
    for plan in 0..PLANS {
        let tasks = (0..PLAN_TASKS)
            .map(|t| TaskSpec {
                title: format!("plan {plan} task {t}"),
                ..Default::default()
            })
            .collect();
        plans
            .submit(SubmitPlanRequest {
                header: None,
                plan_id: format!("p{plan}"),
                tasks,
            })
            .await
            .unwrap();
    }
    let last_index = node.raft().metrics().borrow().last_log_index.unwrap_or(0);
    eventually("a snapshot of every entry", SETTLE, || async {
        let m = node.raft().metrics().borrow().clone();
        m.snapshot
            .filter(|id| id.index >= last_index)
            .map(|id| id.index)
    })
    .await;
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_added_after_log_purge_catches_up_from_a_snapshot() {
    let mut slots = slots(&[1, 2]).await;
    let peers = peers_of(&slots[..1]);
    let mut config = config(&slots[0], &peers);
    config.snapshot_every = 20;
    let listener = slots[0].listener.take().unwrap();
    let first = percy_server::Node::start_with_listener(config, listener)
        .await
        .unwrap();
    first.wait_for_leader(SETTLE).await.unwrap();
    let addr = first.addr().to_string();
    for i in 0..100 {
        put(&addr, &format!("k{i}"), "v").await;
    }
    eventually("a snapshot and a purged log", SETTLE, || async {
        let m = first.raft().metrics().borrow().clone();
        (m.purged.is_some() && m.snapshot.is_some()).then_some(())
    })
    .await;

    let mut all = peers.clone();
    all.insert(2, slots[1].addr.clone());
    let second = start(&mut slots[1], &all).await;
    ClusterServiceClient::new(channel(&addr).await)
        .add_node(AddNodeRequest {
            header: None,
            node_id: 2,
            addr: slots[1].addr.clone(),
        })
        .await
        .unwrap();
    let read = get(&slots[1].addr, "k99", Consistency::Serializable).await;
    assert_eq!(
        read.entry.unwrap().value,
        b"v",
        "the snapshot carried the state"
    );
    let read = get(&slots[1].addr, "k0", Consistency::Linearizable).await;
    assert_eq!(read.entry.unwrap().value, b"v");
    second.shutdown().await;
    first.shutdown().await;
}
