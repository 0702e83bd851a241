//! The agent-runtime side of the server, in-process: watch (initial state, resume, filters,
//! compaction), liveness (expiry after the TTL, grace across failover, keep-alive streams,
//! relayed heartbeats), queued lock acquires, and the Prometheus endpoint.

mod common;

use std::time::Duration;

use common::*;
use percy_proto::v1::agent_service_client::AgentServiceClient;
use percy_proto::v1::config_service_client::ConfigServiceClient;
use percy_proto::v1::lock_service_client::LockServiceClient;
use percy_proto::v1::task_service_client::TaskServiceClient;
use percy_proto::v1::watch_service_client::WatchServiceClient;
use percy_proto::v1::*;
use percy_server::{Node, NodeHandle};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::Code;

async fn single(watch_history: usize) -> (NodeHandle, Slot) {
    let mut slot = slots(&[1]).await.remove(0);
    let mut config = config(&slot, &peers_of(std::slice::from_ref(&slot)));
    config.watch_history = watch_history;
    let node = Node::start_with_listener(config, slot.listener.take().unwrap())
        .await
        .unwrap();
    node.wait_for_leader(SETTLE).await.unwrap();
    (node, slot)
}

async fn put(addr: &str, key: &str) -> u64 {
    ConfigServiceClient::new(channel(addr).await)
        .put(PutConfigRequest {
            key: key.into(),
            value: b"x".to_vec(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .entry
        .unwrap()
        .revision
}

async fn register(addr: &str, name: &str, ttl_ms: u64) -> u64 {
    AgentServiceClient::new(channel(addr).await)
        .register(RegisterAgentRequest {
            name: name.into(),
            ttl_ms,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .agent
        .unwrap()
        .id
}

async fn heartbeat(addr: &str, agent_id: u64) -> HeartbeatResponse {
    AgentServiceClient::new(channel(addr).await)
        .heartbeat(HeartbeatRequest {
            header: None,
            agent_id,
            load: None,
        })
        .await
        .unwrap()
        .into_inner()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_gives_initial_state_then_changes_resumes_and_reports_compaction() {
    let (node, _slot) = single(3).await;
    let addr = node.addr().to_string();
    put(&addr, "app/one").await;
    put(&addr, "other/x").await;

    let mut watch = WatchServiceClient::new(channel(&addr).await);
    let mut stream = watch
        .watch(WatchRequest {
            kinds: vec![EntityKind::Config as i32],
            key_prefix: "app/".into(),
            initial_state: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let initial = stream.message().await.unwrap().unwrap();
    let keys: Vec<&str> = initial.events.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(keys, ["app/one"], "initial state, filtered by prefix");

    let rev_two = put(&addr, "app/two").await;
    put(&addr, "other/y").await; // filtered out
    let rev_three = put(&addr, "app/three").await;
    let next = tokio::time::timeout(SETTLE, stream.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(next.events[0].key, "app/two");
    assert_eq!(next.events[0].revision, rev_two);
    let next = tokio::time::timeout(SETTLE, stream.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(next.events[0].key, "app/three");

    // Resume from a revision still in the history.
    let mut resumed = watch
        .watch(WatchRequest {
            start_revision: rev_three,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let first = tokio::time::timeout(SETTLE, resumed.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(first.events[0].revision, rev_three);

    // Older than the history (3 revisions kept): compacted, and the stream ends.
    let mut old = watch
        .watch(WatchRequest {
            start_revision: 1,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let answer = tokio::time::timeout(SETTLE, old.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(answer.compacted);
    assert!(answer.compact_revision > 1);
    assert!(old.message().await.unwrap().is_none());

    // Unknown kinds are refused up front.
    let err = watch
        .watch(WatchRequest {
            kinds: vec![99],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    node.shutdown().await;
}

/// A watch filtered on task statuses (what a worker waiting for work asks for) gets the
/// events of tasks in those statuses only, live and in the initial state, and events of
/// other kinds as before; UNSPECIFIED or an unknown status is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_filtered_on_ready_tasks_skips_claims_starts_and_completions() {
    let (node, _slot) = single(100).await;
    let addr = node.addr().to_string();
    let agent = register(&addr, "filtered", 60_000).await;
    let mut tasks = TaskServiceClient::new(channel(&addr).await);
    let submit = |id: &str| SubmitTaskRequest {
        header: None,
        task: Some(TaskSpec {
            id: id.into(),
            title: id.into(),
            ..Default::default()
        }),
    };
    tasks.submit(submit("before")).await.unwrap();
    let claimed = tasks
        .claim(ClaimTaskRequest {
            agent_id: agent,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .task
        .unwrap();
    assert_eq!(claimed.id, "before");
    tasks.submit(submit("waiting")).await.unwrap();

    let mut watch = WatchServiceClient::new(channel(&addr).await);
    let mut stream = watch
        .watch(WatchRequest {
            kinds: vec![EntityKind::Task as i32, EntityKind::Config as i32],
            initial_state: true,
            task_statuses: vec![TaskStatus::Ready as i32],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let initial = tokio::time::timeout(SETTLE, stream.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let keys: Vec<&str> = initial.events.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(
        keys,
        ["waiting"],
        "the initial state holds the ready task only"
    );

    // Start and complete the claimed task, then submit one more and put a config key: the
    // watch sees the new ready task and the config key, nothing of the claimed one.
    tasks
        .start(StartTaskRequest {
            header: None,
            task_id: claimed.id.clone(),
            agent_id: agent,
            claim_token: claimed.claim_token,
        })
        .await
        .unwrap();
    tasks
        .complete(CompleteTaskRequest {
            header: None,
            task_id: claimed.id.clone(),
            agent_id: agent,
            claim_token: claimed.claim_token,
            result: None,
            claim_next: false,
        })
        .await
        .unwrap();
    tasks.submit(submit("after")).await.unwrap();
    put(&addr, "cfg").await;
    let mut seen = Vec::new();
    while seen.len() < 2 {
        let next = tokio::time::timeout(SETTLE, stream.message())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        for event in next.events {
            if let Some(event::Value::Task(task)) = &event.value {
                assert_eq!(task.status, TaskStatus::Ready as i32, "{event:?}");
            }
            seen.push(event.key);
        }
    }
    assert_eq!(seen, ["after", "cfg"]);

    for bad in [TaskStatus::Unspecified as i32, 99] {
        let err = watch
            .watch(WatchRequest {
                task_statuses: vec![TaskStatus::Ready as i32, bad],
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{bad}: {err:?}");
    }
    node.shutdown().await;
}

/// Claim-next with `start` answers the task working; Complete with `claim_next` answers the
/// next task (working) in `next`, or none; a stale token is refused and claims nothing; `start`
/// with a task id is INVALID_ARGUMENT.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claim_started_and_complete_claiming_the_next_over_grpc() {
    let (node, _slot) = single(100).await;
    let addr = node.addr().to_string();
    let agent = register(&addr, "one-write", 60_000).await;
    let mut tasks = TaskServiceClient::new(channel(&addr).await);
    for id in ["a", "b"] {
        tasks
            .submit(SubmitTaskRequest {
                header: None,
                task: Some(TaskSpec {
                    id: id.into(),
                    title: id.into(),
                    ..Default::default()
                }),
            })
            .await
            .unwrap();
    }
    let refused = tasks
        .claim(ClaimTaskRequest {
            agent_id: agent,
            task_id: "a".into(),
            start: true,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    let a = tasks
        .claim(ClaimTaskRequest {
            agent_id: agent,
            start: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .task
        .unwrap();
    assert_eq!((a.id.as_str(), a.status()), ("a", TaskStatus::Working));
    let complete = |task: &Task, claim_token| CompleteTaskRequest {
        task_id: task.id.clone(),
        agent_id: agent,
        claim_token,
        claim_next: true,
        ..Default::default()
    };
    let stale = tasks
        .complete(complete(&a, a.claim_token + 1))
        .await
        .unwrap_err();
    assert_eq!(stale.code(), Code::FailedPrecondition, "{stale:?}");
    let answer = tasks
        .complete(complete(&a, a.claim_token))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(answer.task.unwrap().status(), TaskStatus::Completed);
    let b = answer.next.expect("b claimed in the same write");
    assert_eq!((b.id.as_str(), b.status()), ("b", TaskStatus::Working));
    assert_eq!(b.claim_token, answer.header.unwrap().revision);
    let last = tasks
        .complete(complete(&b, b.claim_token))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(last.task.unwrap().status(), TaskStatus::Completed);
    assert_eq!(last.next, None, "nothing left to claim");
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_agents_expire_their_work_is_requeued_and_they_must_reregister() {
    let (node, _slot) = single(100).await;
    let addr = node.addr().to_string();
    let agent = register(&addr, "sleepy", 1_000).await;
    let beat = heartbeat(&addr, agent).await;
    assert_eq!(beat.status, AgentStatus::Active as i32);
    assert!(!beat.must_reregister);

    let mut tasks = TaskServiceClient::new(channel(&addr).await);
    tasks
        .submit(SubmitTaskRequest {
            header: None,
            task: Some(TaskSpec {
                id: "t".into(),
                title: "t".into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap();
    let claimed = tasks
        .claim(ClaimTaskRequest {
            agent_id: agent,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .task
        .unwrap();
    assert_eq!(claimed.id, "t");

    // Heartbeats keep it alive past its TTL...
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!heartbeat(&addr, agent).await.must_reregister);
    }
    // ...silence expires it (polled without heartbeating), and its task goes back to ready.
    eventually("expiry", SETTLE, || {
        let addr = addr.clone();
        async move {
            let mut agents = AgentServiceClient::new(channel(&addr).await);
            let a = agents
                .get(GetAgentRequest {
                    agent_id: agent,
                    ..Default::default()
                })
                .await
                .ok()?
                .into_inner()
                .agent?;
            (a.status == AgentStatus::Expired as i32).then_some(())
        }
    })
    .await;
    let expired = heartbeat(&addr, agent).await;
    assert!(expired.must_reregister);
    assert_eq!(expired.status, AgentStatus::Expired as i32);
    let task = tasks
        .get(GetTaskRequest {
            header: None,
            task_id: "t".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .task
        .unwrap();
    assert_eq!(task.status, TaskStatus::Ready as i32);
    // Its old claim token is stale now.
    let err = tasks
        .complete(CompleteTaskRequest {
            task_id: "t".into(),
            agent_id: agent,
            claim_token: claimed.claim_token,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    // Unknown agents are told to register.
    assert!(heartbeat(&addr, 987_654).await.must_reregister);
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_never_expires_a_live_agent() {
    let mut slots = slots(&[1, 2, 3]).await;
    let mut nodes = start_all(&mut slots).await;
    let leader = agreed_leader(&nodes.iter().collect::<Vec<_>>()).await;
    let followers: Vec<String> = nodes
        .iter()
        .filter(|n| n.node_id() != leader)
        .map(|n| n.addr().to_string())
        .collect();
    let agent = register(&followers[0], "steady", 2_000).await;
    // Heartbeat through a follower (forwarded to the leader) while the leader goes away.
    let beats = {
        let followers = followers.clone();
        tokio::spawn(async move {
            let mut statuses = Vec::new();
            for i in 0..20 {
                let addr = &followers[i % 2];
                let mut client = AgentServiceClient::new(channel(addr).await);
                if let Ok(r) = client
                    .heartbeat(HeartbeatRequest {
                        header: None,
                        agent_id: agent,
                        load: None,
                    })
                    .await
                {
                    statuses.push(r.into_inner().must_reregister);
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            statuses
        })
    };
    tokio::time::sleep(Duration::from_millis(600)).await;
    let index = nodes.iter().position(|n| n.node_id() == leader).unwrap();
    nodes.remove(index).shutdown().await;
    let statuses = beats.await.unwrap();
    assert!(
        statuses.len() >= 10,
        "most heartbeats got through: {statuses:?}"
    );
    assert!(
        statuses.iter().all(|must| !must),
        "a live agent was expired across failover: {statuses:?}"
    );
    let mut agents = AgentServiceClient::new(channel(&followers[0]).await);
    let a = agents
        .get(GetAgentRequest {
            agent_id: agent,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .agent
        .unwrap();
    assert_eq!(a.status, AgentStatus::Active as i32);
    for node in nodes {
        node.shutdown().await;
    }
}

/// A keep-alive stream on `addr`: the sender for its requests and its replies.
async fn keep_alive(
    addr: &str,
) -> (
    tokio::sync::mpsc::Sender<KeepAliveRequest>,
    tonic::Streaming<KeepAliveResponse>,
) {
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    let replies = AgentServiceClient::new(channel(addr).await)
        .keep_alive(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    (tx, replies)
}

async fn next_reply(replies: &mut tonic::Streaming<KeepAliveResponse>) -> KeepAliveResponse {
    tokio::time::timeout(SETTLE, replies.message())
        .await
        .expect("a keep-alive reply in time")
        .expect("no error")
        .expect("the stream is still open")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_streams_answer_each_beat_in_order_on_the_leader_and_through_followers() {
    let mut slots = slots(&[1, 2, 3]).await;
    let mut nodes = start_all(&mut slots).await;
    let leader = agreed_leader(&nodes.iter().collect::<Vec<_>>()).await;
    let leader_addr = nodes[leader as usize - 1].addr().to_string();
    let index = nodes.iter().position(|n| n.node_id() != leader).unwrap();
    let (follower_id, follower_addr) = (nodes[index].node_id(), nodes[index].addr().to_string());
    let agent = register(&leader_addr, "streaming", 60_000).await;

    // On the leader: one answer per message, in order, for known and unknown agents alike.
    let (tx, mut replies) = keep_alive(&leader_addr).await;
    for id in [agent, 987_654, agent] {
        tx.send(KeepAliveRequest {
            agent_id: id,
            load: None,
        })
        .await
        .unwrap();
    }
    let first = next_reply(&mut replies).await;
    assert_eq!(first.agent_id, agent);
    assert_eq!(first.status, AgentStatus::Active as i32);
    assert!(!first.must_reregister);
    assert_eq!(first.ttl_ms, 60_000);
    assert!(!first.header.unwrap().forwarded);
    let unknown = next_reply(&mut replies).await;
    assert_eq!(unknown.agent_id, 987_654);
    assert!(unknown.must_reregister);
    assert_eq!(unknown.status, AgentStatus::Unspecified as i32);
    assert!(!next_reply(&mut replies).await.must_reregister);
    // The client closing its side ends the stream cleanly.
    drop(tx);
    assert!(replies.message().await.unwrap().is_none());

    // Through a follower: relayed to the leader, in batches when heartbeats come together.
    let relayed_before = metric(&leader_addr, "percy_heartbeats_relayed_total").await;
    let batches_before = metric(&leader_addr, "percy_heartbeat_relay_batches_total").await;
    let mut agents = Vec::new();
    for i in 0..40 {
        agents.push(register(&leader_addr, &format!("many-{i}"), 60_000).await);
    }
    let mut streams = Vec::new();
    for _ in &agents {
        streams.push(keep_alive(&follower_addr).await);
    }
    for ((tx, _), id) in streams.iter().zip(&agents) {
        tx.send(KeepAliveRequest {
            agent_id: *id,
            load: None,
        })
        .await
        .unwrap();
    }
    for ((_, replies), id) in streams.iter_mut().zip(&agents) {
        let reply = next_reply(replies).await;
        assert_eq!(reply.agent_id, *id);
        assert!(!reply.must_reregister, "{reply:?}");
        let header = reply.header.unwrap();
        assert!(header.forwarded);
        assert_eq!(header.node_id, follower_id);
    }
    let relayed = metric(&leader_addr, "percy_heartbeats_relayed_total").await - relayed_before;
    let batches =
        metric(&leader_addr, "percy_heartbeat_relay_batches_total").await - batches_before;
    assert_eq!(relayed, 40.0);
    assert!(
        batches < relayed,
        "40 simultaneous heartbeats took {batches} relay batches"
    );

    // A bad message ends the stream with its error.
    let (tx, mut replies) = keep_alive(&follower_addr).await;
    tx.send(KeepAliveRequest {
        agent_id: 0,
        load: None,
    })
    .await
    .unwrap();
    let err = replies.message().await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);

    // A node that shuts down ends its open streams rather than waiting for the clients.
    let (tx, mut replies) = keep_alive(&follower_addr).await;
    tx.send(KeepAliveRequest {
        agent_id: agent,
        load: None,
    })
    .await
    .unwrap();
    assert!(!next_reply(&mut replies).await.must_reregister);
    let stopping = tokio::spawn(nodes.remove(index).shutdown());
    let err = tokio::time::timeout(SETTLE, replies.message())
        .await
        .expect("the stream ends")
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable);
    assert!(err.message().contains("shutting down"), "{err}");
    stopping.await.unwrap();
    drop(streams);
    for node in nodes {
        node.shutdown().await;
    }
}

/// An acquire of `path` that waits up to `wait_ms`, running in the background.
fn spawn_queued_acquire(
    locks: &LockServiceClient<tonic::transport::Channel>,
    agent_id: u64,
    path: &str,
    wait_ms: u64,
) -> tokio::task::JoinHandle<Result<tonic::Response<AcquireLocksResponse>, tonic::Status>> {
    let mut locks = locks.clone();
    let path = path.to_string();
    tokio::spawn(async move {
        locks
            .acquire(AcquireLocksRequest {
                agent_id,
                paths: vec![path],
                wait_ms,
                ..Default::default()
            })
            .await
    })
}

/// Waits until some acquire stands in the lock wait queue.
async fn wait_until_queued(locks: &LockServiceClient<tonic::transport::Channel>) {
    eventually("the waiter to queue", SETTLE, || {
        let mut locks = locks.clone();
        async move {
            let l = locks
                .list(ListLocksRequest::default())
                .await
                .ok()?
                .into_inner();
            (!l.waiters.is_empty()).then_some(())
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_lock_acquires_wait_for_release_or_time_out() {
    let (node, _slot) = single(100).await;
    let addr = node.addr().to_string();
    let holder = register(&addr, "holder", 0).await;
    let waiter = register(&addr, "waiter", 0).await;
    let mut locks = LockServiceClient::new(channel(&addr).await);
    let held = locks
        .acquire(AcquireLocksRequest {
            agent_id: holder,
            paths: vec!["src".into()],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .grants;

    // Times out: DEADLINE_EXCEEDED, and the request leaves the queue.
    let err = locks
        .acquire(AcquireLocksRequest {
            agent_id: waiter,
            paths: vec!["src/lib.rs".into()],
            wait_ms: 400,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::DeadlineExceeded);
    let listed = locks
        .list(ListLocksRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(listed.waiters.is_empty(), "{:?}", listed.waiters);

    // Granted when the holder releases while it waits.
    let waiting = spawn_queued_acquire(&locks, waiter, "src/lib.rs", 15_000);
    wait_until_queued(&locks).await;
    let released = locks
        .release(ReleaseLocksRequest {
            header: None,
            agent_id: holder,
            paths: vec![],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(released.released, ["src"]);
    let granted = waiting.await.unwrap().unwrap().into_inner().grants;
    assert_eq!(granted[0].agent_id, waiter);
    assert!(granted[0].fencing_token > held[0].fencing_token);
    node.shutdown().await;
}

/// Wake-ups are per queued request (the node wakes the caller whose request left the queue,
/// not every caller at every revision): each way out of the queue must end its call at once.
/// The waits are far longer than the test's patience, so a lost wake-up fails it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_way_out_of_the_lock_queue_ends_the_waiting_call_at_once() {
    const LONG_WAIT_MS: u64 = 600_000;
    let (node, _slot) = single(100).await;
    let addr = node.addr().to_string();
    let holder = register(&addr, "holder", 0).await;
    let mut locks = LockServiceClient::new(channel(&addr).await);
    locks
        .acquire(AcquireLocksRequest {
            agent_id: holder,
            paths: vec!["a".into(), "b".into(), "c".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    let granted_later = register(&addr, "granted-later", 0).await;
    let deregistered = register(&addr, "deregistered", 0).await;
    let unaffected = register(&addr, "unaffected", 0).await;
    let on_a = spawn_queued_acquire(&locks, granted_later, "a", LONG_WAIT_MS);
    let on_b = spawn_queued_acquire(&locks, deregistered, "b", LONG_WAIT_MS);
    let on_c = spawn_queued_acquire(&locks, unaffected, "c", LONG_WAIT_MS);
    eventually("three queued requests", SETTLE, || {
        let mut locks = locks.clone();
        async move {
            let l = locks.list(ListLocksRequest::default()).await.ok()?;
            (l.into_inner().waiters.len() == 3).then_some(())
        }
    })
    .await;

    // Granted: a release hands "a" over.
    locks
        .release(ReleaseLocksRequest {
            header: None,
            agent_id: holder,
            paths: vec!["a".into()],
        })
        .await
        .unwrap();
    let grant = tokio::time::timeout(SETTLE, on_a)
        .await
        .expect("the granted caller is woken")
        .unwrap()
        .unwrap()
        .into_inner();
    assert_eq!(grant.grants[0].agent_id, granted_later);

    // Dropped: its agent leaves, so the request leaves the queue without a grant.
    AgentServiceClient::new(channel(&addr).await)
        .deregister(DeregisterAgentRequest {
            agent_id: deregistered,
            ..Default::default()
        })
        .await
        .unwrap();
    let err = tokio::time::timeout(SETTLE, on_b)
        .await
        .expect("the dropped caller is woken")
        .unwrap()
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err}");
    assert!(err.message().contains("left the queue"), "{err}");

    // Neither event concerned the third request: it still waits.
    assert!(!on_c.is_finished());
    locks
        .release(ReleaseLocksRequest {
            header: None,
            agent_id: holder,
            paths: vec![],
        })
        .await
        .unwrap();
    let grant = tokio::time::timeout(SETTLE, on_c)
        .await
        .expect("the last caller is woken")
        .unwrap()
        .unwrap()
        .into_inner();
    assert_eq!(grant.grants[0].agent_id, unaffected);
    node.shutdown().await;
}

const QUEUED_ACQUIRE_ROUNDS: usize = 20;

/// Regression: a waiting acquire sent to a follower is forwarded to the leader and queued
/// there; the follower used to look for the queue entry before its replica had applied it,
/// saw neither a grant nor a queue entry, and withdrew the request at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queued_acquire_through_a_follower_waits_for_the_grant() {
    let mut slots = slots(&[1, 2, 3]).await;
    let nodes = start_all(&mut slots).await;
    let leader = agreed_leader(&nodes.iter().collect::<Vec<_>>()).await;
    let leader_addr = nodes
        .iter()
        .find(|n| n.node_id() == leader)
        .unwrap()
        .addr()
        .to_string();
    let follower_addr = nodes
        .iter()
        .find(|n| n.node_id() != leader)
        .unwrap()
        .addr()
        .to_string();
    let holder = register(&leader_addr, "holder", 60_000).await;
    let waiter = register(&follower_addr, "waiter", 60_000).await;
    let mut leader_locks = LockServiceClient::new(channel(&leader_addr).await);
    let follower_locks = LockServiceClient::new(channel(&follower_addr).await);
    // The window is the follower's apply lag, short in-process: several rounds make hitting it
    // (without the fix) close to certain.
    for round in 0..QUEUED_ACQUIRE_ROUNDS {
        let path = format!("src/{round}");
        leader_locks
            .acquire(AcquireLocksRequest {
                agent_id: holder,
                paths: vec![path.clone()],
                ..Default::default()
            })
            .await
            .unwrap();
        let waiting = spawn_queued_acquire(&follower_locks, waiter, &path, 20_000);
        wait_until_queued(&leader_locks).await;
        // Still waiting after the follower has caught up: nothing withdrew it.
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(
            !waiting.is_finished(),
            "round {round}: the queued acquire ended early: {:?}",
            waiting.await
        );
        leader_locks
            .release(ReleaseLocksRequest {
                header: None,
                agent_id: holder,
                paths: vec![path],
            })
            .await
            .unwrap();
        let granted = waiting.await.unwrap().unwrap().into_inner().grants;
        assert_eq!(granted[0].agent_id, waiter);
        leader_locks
            .release(ReleaseLocksRequest {
                header: None,
                agent_id: waiter,
                paths: vec![],
            })
            .await
            .unwrap();
    }
    for node in nodes {
        node.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_served_as_prometheus_text_on_the_same_port() {
    let (node, _slot) = single(100).await;
    let addr = node.addr().to_string();
    put(&addr, "k").await;
    let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: percy\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut body = String::new();
    stream.read_to_string(&mut body).await.unwrap();
    assert!(body.starts_with("HTTP/1.1 200"), "{body}");
    for metric in [
        "percy_raft_term 1",
        "percy_raft_is_leader 1",
        "percy_raft_applied_index",
        "percy_raft_commit_index",
        "percy_requests_total{code=\"Ok\",method=\"ConfigService/Put\"} 1",
        "percy_request_duration_seconds_bucket",
    ] {
        assert!(body.contains(metric), "missing {metric}: {body}");
    }
    node.shutdown().await;
}

/// A compare-and-swap claim that is already lost is refused at the edge: same answer as the
/// state machine would give, without a replicated, fsync'd log entry — but never a retry of a
/// claim that won, which must get its first answer again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_cas_claim_is_refused_without_a_log_entry() {
    let (node, _slot) = single(100).await;
    let addr = node.addr().to_string();
    let winner = register(&addr, "winner", 60_000).await;
    let loser = register(&addr, "loser", 60_000).await;
    let mut tasks = TaskServiceClient::new(channel(&addr).await);
    let submitted = tasks
        .submit(SubmitTaskRequest {
            header: None,
            task: Some(TaskSpec {
                id: "t1".into(),
                title: "race".into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .task
        .unwrap();
    let claim = |agent_id, seq| ClaimTaskRequest {
        header: Some(RequestHeader {
            client_id: agent_id,
            seq,
            acked_below: 1,
            ..Default::default()
        }),
        agent_id,
        task_id: "t1".into(),
        expected_revision: Some(submitted.revision),
        start: false,
    };
    let won = tasks.claim(claim(winner, 1)).await.unwrap().into_inner();
    // A retry of the winning claim (same client id and seq) is answered from its session,
    // even though the task's revision has moved past the expected one since.
    let retried = tasks.claim(claim(winner, 1)).await.unwrap().into_inner();
    assert_eq!(
        retried.task.unwrap().claim_token,
        won.task.unwrap().claim_token
    );
    let last_log_index = || node.raft().metrics().borrow().last_log_index;
    let before = last_log_index();
    let err = tasks.claim(claim(loser, 1)).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(
        err.message().contains("not the expected"),
        "{}",
        err.message()
    );
    assert_eq!(last_log_index(), before, "the lost claim was proposed");
    node.shutdown().await;
}

fn load(avg: f64, running_execs: u32) -> AgentLoad {
    AgentLoad {
        load_avg_1m: Some(avg),
        cores: Some(4),
        mem_used_bytes: Some(2 << 30),
        mem_total_bytes: Some(8 << 30),
        running_tasks: 1,
        running_execs,
        reported_at_ms: 0,
    }
}

async fn listed_load(addr: &str, agent_id: u64, consistency: Consistency) -> Option<AgentLoad> {
    let agents = AgentServiceClient::new(channel(addr).await)
        .list(ListAgentsRequest {
            header: Some(RequestHeader {
                consistency: consistency.into(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .agents;
    agents.into_iter().find(|a| a.id == agent_id)?.load
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_heartbeats_load_shows_in_the_agent_list_through_a_follower_and_bad_loads_are_refused() {
    let mut slots = slots(&[1, 2, 3]).await;
    let nodes = start_all(&mut slots).await;
    let leader = agreed_leader(&nodes.iter().collect::<Vec<_>>()).await;
    let leader_addr = nodes
        .iter()
        .find(|n| n.node_id() == leader)
        .unwrap()
        .addr()
        .to_string();
    let follower = nodes
        .iter()
        .find(|n| n.node_id() != leader)
        .unwrap()
        .addr()
        .to_string();
    let agent = register(&follower, "loaded", 10_000).await;
    assert_eq!(
        listed_load(&leader_addr, agent, Consistency::Linearizable).await,
        None,
        "nothing reported yet"
    );

    // A unary heartbeat through the follower: relayed with its load to the leader.
    AgentServiceClient::new(channel(&follower).await)
        .heartbeat(HeartbeatRequest {
            header: None,
            agent_id: agent,
            load: Some(load(1.5, 2)),
        })
        .await
        .unwrap();
    let shown = listed_load(&leader_addr, agent, Consistency::Linearizable)
        .await
        .expect("the leader shows the reported load");
    assert_eq!(
        AgentLoad {
            reported_at_ms: 0,
            ..shown
        },
        load(1.5, 2)
    );
    assert!(shown.reported_at_ms > 0, "when it was reported");
    // A follower has no heartbeat table: it shows the last checkpoint (none yet, they come
    // every 30 s). The client library sends linearizable reads to the leader anyway.
    assert_eq!(
        listed_load(&follower, agent, Consistency::Serializable).await,
        None,
        "a follower shows only checkpointed loads"
    );

    // A keep-alive beat on the leader replaces it; a beat without a load keeps it.
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let mut replies = AgentServiceClient::new(channel(&leader_addr).await)
        .keep_alive(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    tx.send(KeepAliveRequest {
        agent_id: agent,
        load: Some(load(0.25, 0)),
    })
    .await
    .unwrap();
    replies.message().await.unwrap().unwrap();
    tx.send(KeepAliveRequest {
        agent_id: agent,
        load: None,
    })
    .await
    .unwrap();
    replies.message().await.unwrap().unwrap();
    let shown = listed_load(&leader_addr, agent, Consistency::Linearizable)
        .await
        .unwrap();
    assert_eq!(shown.load_avg_1m, Some(0.25));
    assert_eq!(shown.running_execs, 0);
    let got = AgentServiceClient::new(channel(&leader_addr).await)
        .get(GetAgentRequest {
            agent_id: agent,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .agent
        .unwrap();
    assert_eq!(got.load.and_then(|l| l.load_avg_1m), Some(0.25));

    // Nonsense is refused, and changes nothing.
    for bad in [
        AgentLoad {
            load_avg_1m: Some(-1.0),
            ..load(0.0, 0)
        },
        AgentLoad {
            cores: Some(0),
            ..load(0.0, 0)
        },
        AgentLoad {
            mem_used_bytes: Some(u64::MAX),
            ..load(0.0, 0)
        },
    ] {
        let err = AgentServiceClient::new(channel(&follower).await)
            .heartbeat(HeartbeatRequest {
                header: None,
                agent_id: agent,
                load: Some(bad),
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    }
    let shown = listed_load(&leader_addr, agent, Consistency::Linearizable)
        .await
        .unwrap();
    assert_eq!(shown.load_avg_1m, Some(0.25));
    for node in nodes {
        node.shutdown().await;
    }
}
