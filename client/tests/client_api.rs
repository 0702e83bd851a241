//! The client library against a real (in-process) Percy cluster: typed calls, error codes,
//! waiting lock acquires, writes that carry on through the loss of the leader, calls routed to
//! the leader, and keep-alive streams that carry on through the loss of their node.

mod support;

use std::time::Duration;

use percy_client::proto::{RegisterAgentRequest, TaskResult, TaskSpec};
use percy_client::{Client, Consistency, LockRequest, TaskFilter, TaskStatus};
use support::TestCluster;
use tonic::Code;

async fn agent(client: &Client, name: &str) -> u64 {
    let response = client
        .register_agent(RegisterAgentRequest {
            name: name.to_owned(),
            ttl_ms: 600_000,
            ..RegisterAgentRequest::default()
        })
        .await
        .expect("register");
    response.agent.expect("agent").id
}

fn spec(id: &str) -> TaskSpec {
    TaskSpec {
        id: id.to_owned(),
        title: id.to_owned(),
        ..TaskSpec::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_claims_have_exactly_one_winner() {
    let cluster = TestCluster::start(1);
    let client = Client::connect(&cluster.endpoints()).await.expect("client");
    let a = agent(&client, "a").await;
    let b = agent(&client, "b").await;
    client.submit_task(spec("t")).await.expect("submit");
    let (first, second) = tokio::join!(
        client.claim_task(a, "t", None),
        client.claim_task(b, "t", None)
    );
    let outcomes = [first, second];
    let winners = outcomes.iter().filter(|r| r.is_ok()).count();
    assert_eq!(winners, 1, "{outcomes:?}");
    let loser = outcomes
        .iter()
        .find_map(|r| r.as_ref().err())
        .expect("a loser");
    assert_eq!(loser.code(), Code::FailedPrecondition, "{loser}");
    assert!(loser.is_refusal());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_keep_their_grpc_code() {
    let cluster = TestCluster::start(1);
    let client = Client::connect(&cluster.endpoints()).await.expect("client");
    let a = agent(&client, "a").await;
    client.submit_task(spec("t")).await.expect("submit");
    let claimed = client
        .claim_next(a)
        .await
        .expect("claim")
        .task
        .expect("a task");
    assert_eq!(claimed.id, "t");

    let stale = client
        .complete_task("t", a, claimed.claim_token + 1, TaskResult::default())
        .await
        .expect_err("wrong token");
    assert_eq!(stale.code(), Code::FailedPrecondition, "{stale}");
    let missing = client
        .get_task("no-such-task", Consistency::Linearizable)
        .await
        .expect_err("missing");
    assert_eq!(missing.code(), Code::NotFound, "{missing}");
    let bad_path = client
        .acquire_locks(&LockRequest::exclusive(a, vec!["a/../b".into()]))
        .await
        .expect_err("bad path");
    assert_eq!(bad_path.code(), Code::InvalidArgument, "{bad_path}");

    let done = client
        .complete_task("t", a, claimed.claim_token, TaskResult::default())
        .await
        .expect("complete");
    assert_eq!(
        done.task.expect("task").status,
        TaskStatus::Completed as i32
    );
    let header = done.header.expect("header");
    assert_eq!(header.node_id, 1);
    assert!(header.revision > claimed.claim_token);

    let completed = client
        .list_tasks(
            &TaskFilter {
                status: Some(TaskStatus::Completed),
                ..TaskFilter::default()
            },
            Consistency::Serializable,
        )
        .await
        .expect("list");
    assert_eq!(completed.tasks.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_acquire_is_granted_on_release_with_a_larger_fencing_token() {
    let cluster = TestCluster::start(1);
    let client = Client::connect(&cluster.endpoints()).await.expect("client");
    let holder = agent(&client, "holder").await;
    let waiter = agent(&client, "waiter").await;
    let held = client
        .acquire_locks(&LockRequest::exclusive(holder, vec!["src".into()]))
        .await
        .expect("first acquire");
    let first_token = held.grants[0].fencing_token;

    let waiting = {
        let client = client.clone();
        tokio::spawn(async move {
            let request = LockRequest {
                wait: Some(Duration::from_secs(20)),
                ..LockRequest::exclusive(waiter, vec!["src/main.rs".into()])
            };
            client.acquire_locks(&request).await
        })
    };
    // Give the waiter time to queue; the grant must not come before the release.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!waiting.is_finished(), "granted while the lock was held");
    client.release_all_locks(holder).await.expect("release");
    let granted = waiting.await.expect("task").expect("granted after release");
    assert!(granted.grants[0].fencing_token > first_token);

    let impatient = client
        .acquire_locks(&LockRequest {
            wait: Some(Duration::from_millis(300)),
            ..LockRequest::exclusive(holder, vec!["src".into()])
        })
        .await
        .expect_err("still held by the waiter");
    assert_eq!(impatient.code(), Code::DeadlineExceeded, "{impatient}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_continue_through_the_loss_of_the_leader() {
    let mut cluster = TestCluster::start(3);
    let client = Client::connect(&cluster.endpoints())
        .await
        .expect("client")
        .with_deadline(Duration::from_secs(30));
    client
        .put_config("before", b"1".to_vec(), None)
        .await
        .expect("write before");
    let leader = cluster.leader_index().expect("a leader");
    cluster.stop(leader);
    let after = client
        .put_config("after", b"2".to_vec(), None)
        .await
        .expect("write after the leader is gone");
    let header = after.header.expect("header");
    assert_ne!(header.node_id, leader as u64 + 1);
    let read = client
        .get_config("before", Consistency::Linearizable)
        .await
        .expect("read");
    assert_eq!(read.entry.expect("entry").value, b"1");
}

/// Writes until one is answered by the leader itself (not forwarded); returns how many it took.
async fn writes_until_the_leader_answers(client: &Client, limit: usize) -> (usize, u64) {
    for attempt in 1..=limit {
        let header = client
            .put_config("routed", attempt.to_string().into_bytes(), None)
            .await
            .expect("write")
            .header
            .expect("header");
        if !header.forwarded {
            assert_eq!(
                header.node_id, header.leader_id,
                "answered unforwarded by the leader"
            );
            return (attempt, header.node_id);
        }
    }
    panic!("{limit} writes were all forwarded: the client never found the leader");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_and_linearizable_reads_go_to_the_leader_serializable_reads_stay() {
    let mut cluster = TestCluster::start(3);
    let leader = cluster.leader_index().expect("a leader");
    // The leader's endpoint last, so only what the answers say can lead the client to it.
    let mut endpoints = cluster.endpoints();
    let leader_endpoint = endpoints.remove(leader);
    endpoints.push(leader_endpoint);
    let first_node = cluster
        .endpoints()
        .iter()
        .position(|e| *e == endpoints[0])
        .expect("known endpoint") as u64
        + 1;
    let client = Client::connect(&endpoints)
        .await
        .expect("client")
        .with_deadline(Duration::from_secs(30));
    // Each answer names its node and the leader: at most one write per endpoint to find it.
    let (writes, answered_by) = writes_until_the_leader_answers(&client, 3).await;
    assert_eq!(answered_by, leader as u64 + 1);
    assert!(writes <= 3);
    let (writes, _) = writes_until_the_leader_answers(&client, 1).await;
    assert_eq!(writes, 1, "once found, the leader is used first");
    let answered_read = |consistency| {
        let client = client.clone();
        async move {
            let read = client.get_config("routed", consistency).await;
            read.expect("read").header.expect("header").node_id
        }
    };
    assert_eq!(
        answered_read(Consistency::Linearizable).await,
        leader as u64 + 1
    );
    assert_eq!(
        answered_read(Consistency::Serializable).await,
        first_node,
        "serializable reads stay on the endpoint that answered"
    );
    // The leader goes: the client falls back to a follower, which names the new leader.
    cluster.stop(leader);
    let (_, new_leader) = writes_until_the_leader_answers(&client, 10).await;
    assert_ne!(new_leader, leader as u64 + 1);
    let (writes, _) = writes_until_the_leader_answers(&client, 1).await;
    assert_eq!(writes, 1, "the new leader is used first");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_service_answers_through_the_library() {
    let cluster = TestCluster::start(1);
    let client = Client::connect(&cluster.endpoints()).await.expect("client");
    let a = agent(&client, "a").await;
    let beat = client.heartbeat(a).await.expect("heartbeat");
    assert!(!beat.must_reregister);
    let by_name = client
        .get_agent_by_name("a", Consistency::Linearizable)
        .await
        .expect("by name");
    assert_eq!(by_name.agent.expect("agent").id, a);

    let plan = client
        .submit_plan(
            "p",
            vec![
                spec("x"),
                TaskSpec {
                    depends_on: vec!["x".into()],
                    ..spec("y")
                },
            ],
        )
        .await
        .expect("plan");
    assert_eq!(plan.plan_id, "p");
    let got = client
        .get_plan("p", Consistency::Linearizable)
        .await
        .expect("get plan");
    assert_eq!(got.tasks.len(), 2);

    let sent = client.send_message("ops", a, "hi").await.expect("send");
    let history = client
        .message_history(a, 0, Consistency::Linearizable)
        .await
        .expect("history");
    assert_eq!(history.messages[0].id, sent.message.expect("message").id);

    let status = client
        .cluster_status(Consistency::Linearizable)
        .await
        .expect("status");
    assert_eq!(status.members.len(), 1);

    let gone = client.deregister_agent(a).await.expect("deregister");
    assert!(gone.header.is_some());
    let beat = client
        .heartbeat(a)
        .await
        .expect("heartbeat after deregister");
    assert!(beat.must_reregister);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keep_alive_stream_keeps_its_agent_alive_and_moves_when_its_node_goes() {
    let mut cluster = TestCluster::start(3);
    let follower = cluster.follower_index().expect("a follower");
    // The follower first: the stream opens there and its beats are relayed to the leader.
    let mut endpoints = cluster.endpoints();
    endpoints.rotate_left(follower);
    let client = Client::connect(&endpoints)
        .await
        .expect("client")
        .with_deadline(Duration::from_secs(30));
    let a = client
        .register_agent(RegisterAgentRequest {
            name: "kept".to_owned(),
            ttl_ms: 1_500,
            ..RegisterAgentRequest::default()
        })
        .await
        .expect("register")
        .agent
        .expect("agent")
        .id;
    let mut keep_alive = client.keep_alive(a);
    assert_eq!(keep_alive.agent_id(), a);
    // Beats keep the agent alive well past its TTL.
    for _ in 0..6 {
        let beat = keep_alive.beat().await.expect("beat");
        assert!(!beat.must_reregister, "{beat:?}");
        assert_eq!(beat.agent_id, a);
        let header = beat.header.expect("header");
        assert_eq!(header.node_id, follower as u64 + 1);
        assert!(header.forwarded);
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    // The node under the stream goes away: the next beat gets through on a new stream.
    cluster.stop(follower);
    let beat = keep_alive
        .beat()
        .await
        .expect("beat after the node stopped");
    assert!(!beat.must_reregister, "{beat:?}");
    assert_ne!(beat.header.expect("header").node_id, follower as u64 + 1);

    client.deregister_agent(a).await.expect("deregister");
    let beat = keep_alive.beat().await.expect("beat after deregister");
    assert!(beat.must_reregister);
    // A refusal comes back as such, without retrying.
    let refused = client
        .keep_alive(0)
        .beat()
        .await
        .expect_err("agent id 0 is refused");
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused}");
}

/// Listings are paginated on the server (1,000 tasks a page by default, at most 10,000), and
/// the library follows the pages: a caller gets every task, a raw caller gets pages and a
/// token, and a bad token or an oversized page is INVALID_ARGUMENT.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_listings_are_paginated_and_the_library_follows_the_pages() {
    use percy_client::proto::task_service_client::TaskServiceClient;
    use percy_client::proto::ListTasksRequest;

    const TASKS: usize = 1_050;
    let cluster = TestCluster::start(1);
    let client = Client::connect(&cluster.endpoints()).await.expect("client");
    let specs: Vec<TaskSpec> = (0..TASKS).map(|i| spec(&format!("p{i:04}"))).collect();
    client.submit_plan("big", specs).await.expect("plan");

    let all = client
        .list_tasks(&TaskFilter::default(), Consistency::Linearizable)
        .await
        .expect("list");
    let ids: Vec<&str> = all.tasks.iter().map(|t| t.id.as_str()).collect();
    let expected: Vec<String> = (0..TASKS).map(|i| format!("p{i:04}")).collect();
    assert_eq!(ids, expected, "every task once, in creation order");
    assert!(all.next_page_token.is_empty());
    let limited = client
        .list_tasks(
            &TaskFilter {
                limit: 1_020,
                ..TaskFilter::default()
            },
            Consistency::Serializable,
        )
        .await
        .expect("list");
    assert_eq!(limited.tasks.len(), 1_020);

    let channel =
        tonic::transport::Endpoint::from_shared(format!("http://{}", cluster.endpoints()[0]))
            .expect("endpoint")
            .connect()
            .await
            .expect("connect");
    let mut raw = TaskServiceClient::new(channel);
    let first = raw
        .list(ListTasksRequest::default())
        .await
        .expect("first page")
        .into_inner();
    assert_eq!(first.tasks.len(), 1_000, "the default page");
    assert!(!first.next_page_token.is_empty());
    let second = raw
        .list(ListTasksRequest {
            limit: 100,
            page_token: first.next_page_token.clone(),
            ..ListTasksRequest::default()
        })
        .await
        .expect("second page")
        .into_inner();
    assert_eq!(second.tasks.len(), 50);
    assert_eq!(second.tasks[0].id, "p1000");
    assert!(
        second.next_page_token.is_empty(),
        "a short page is the last"
    );
    for bad in [
        ListTasksRequest {
            page_token: "not-a-token".into(),
            ..ListTasksRequest::default()
        },
        ListTasksRequest {
            limit: 10_001,
            ..ListTasksRequest::default()
        },
    ] {
        let status = raw.list(bad).await.expect_err("refused");
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    }
}

/// Agents, locks and config are paginated too, continued after the last key of a page (so a
/// key removed between two pages shifts nothing); the library follows the pages; a config
/// page also ends at 1 MiB of values.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyed_listings_are_paginated_and_the_library_follows_the_pages() {
    use percy_client::proto::agent_service_client::AgentServiceClient;
    use percy_client::proto::config_service_client::ConfigServiceClient;
    use percy_client::proto::lock_service_client::LockServiceClient;
    use percy_client::proto::{ListAgentsRequest, ListConfigRequest, ListLocksRequest};

    const KEYS: usize = 1_050;
    const PATHS_PER_ACQUIRE: usize = 250;
    let cluster = TestCluster::start(1);
    let client = Client::connect(&cluster.endpoints()).await.expect("client");
    let mut writes = tokio::task::JoinSet::new();
    for i in 0..KEYS {
        let client = client.clone();
        writes.spawn(async move {
            client
                .put_config(&format!("k/{i:04}"), b"v".to_vec(), None)
                .await
                .expect("put");
            agent(&client, &format!("agent-{i:04}")).await;
        });
    }
    while let Some(done) = writes.join_next().await {
        done.expect("writer");
    }
    let holder = agent(&client, "holder").await;
    let paths: Vec<String> = (0..KEYS).map(|i| format!("src/{i:04}")).collect();
    for chunk in paths.chunks(PATHS_PER_ACQUIRE) {
        client
            .acquire_locks(&LockRequest::exclusive(holder, chunk.to_vec()))
            .await
            .expect("acquire");
    }
    let waiter = agent(&client, "waiter").await;
    let waiting = tokio::spawn({
        let client = client.clone();
        async move {
            let request = LockRequest {
                wait: Some(Duration::from_secs(60)),
                ..LockRequest::exclusive(waiter, vec!["src/0000".into()])
            };
            client.acquire_locks(&request).await
        }
    });
    for _ in 0..200 {
        let listed = client.list_locks("src/", Consistency::Linearizable).await;
        if listed.is_ok_and(|l| !l.waiters.is_empty()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The library hands back whole listings.
    let config = client
        .list_config("k/", Consistency::Linearizable)
        .await
        .expect("config");
    let keys: Vec<&str> = config.entries.iter().map(|e| e.key.as_str()).collect();
    let expected: Vec<String> = (0..KEYS).map(|i| format!("k/{i:04}")).collect();
    assert_eq!(keys, expected);
    let agents = client
        .list_agents(false, Consistency::Linearizable)
        .await
        .expect("agents");
    assert_eq!(agents.agents.len(), KEYS + 2);
    assert!(
        agents.agents.windows(2).all(|w| w[0].id < w[1].id),
        "id order"
    );
    let locks = client
        .list_locks("src/", Consistency::Linearizable)
        .await
        .expect("locks");
    assert_eq!(locks.locks.len(), KEYS);
    assert!(locks.next_page_token.is_empty());

    // Raw pages: keyed tokens, and a deletion between pages shifts nothing.
    let channel =
        tonic::transport::Endpoint::from_shared(format!("http://{}", cluster.endpoints()[0]))
            .expect("endpoint")
            .connect()
            .await
            .expect("connect");
    let mut raw_config = ConfigServiceClient::new(channel.clone());
    let first = raw_config
        .list(ListConfigRequest {
            prefix: "k/".into(),
            limit: 400,
            ..Default::default()
        })
        .await
        .expect("first page")
        .into_inner();
    assert_eq!(first.entries.len(), 400);
    assert_eq!(first.next_page_token, "k/0399");
    client.delete_config("k/0100", None).await.expect("delete");
    let second = raw_config
        .list(ListConfigRequest {
            prefix: "k/".into(),
            limit: 400,
            page_token: first.next_page_token,
            ..Default::default()
        })
        .await
        .expect("second page")
        .into_inner();
    assert_eq!(
        second.entries[0].key, "k/0400",
        "continued after the last key"
    );

    let first_agents = AgentServiceClient::new(channel.clone())
        .list(ListAgentsRequest {
            limit: 1_000,
            ..Default::default()
        })
        .await
        .expect("agents page")
        .into_inner();
    assert_eq!(first_agents.agents.len(), 1_000, "the default page size");
    let last_id = first_agents.agents.last().expect("agents").id;
    assert_eq!(first_agents.next_page_token, last_id.to_string());

    let mut raw_locks = LockServiceClient::new(channel.clone());
    let first_locks = raw_locks
        .list(ListLocksRequest {
            prefix: "src/".into(),
            limit: 1_000,
            ..Default::default()
        })
        .await
        .expect("locks page")
        .into_inner();
    assert_eq!(first_locks.locks.len(), 1_000);
    assert_eq!(
        first_locks.waiters.len(),
        1,
        "the waiter, with the first page"
    );
    let rest = raw_locks
        .list(ListLocksRequest {
            prefix: "src/".into(),
            page_token: first_locks.next_page_token,
            ..Default::default()
        })
        .await
        .expect("locks page")
        .into_inner();
    assert_eq!(rest.locks.len(), KEYS - 1_000);
    assert!(rest.waiters.is_empty(), "waiters come with the first page");
    assert!(rest.next_page_token.is_empty());

    // A config page ends at 1 MiB of values, but always holds one entry.
    let big = vec![b'x'; LARGEST_CONFIG_VALUE];
    for i in 0..5 {
        client
            .put_config(&format!("big/{i}"), big.clone(), None)
            .await
            .expect("big put");
    }
    let heavy = raw_config
        .list(ListConfigRequest {
            prefix: "big/".into(),
            ..Default::default()
        })
        .await
        .expect("heavy page")
        .into_inner();
    assert_eq!(heavy.entries.len(), 4, "1 MiB of 256 KiB values");
    assert_eq!(heavy.next_page_token, "big/3");
    let all_big = client
        .list_config("big/", Consistency::Linearizable)
        .await
        .expect("big");
    assert_eq!(all_big.entries.len(), 5);

    for bad in [
        ListAgentsRequest {
            page_token: "not-an-id".into(),
            ..Default::default()
        },
        ListAgentsRequest {
            limit: 10_001,
            ..Default::default()
        },
    ] {
        let status = AgentServiceClient::new(channel.clone())
            .list(bad)
            .await
            .expect_err("refused");
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    }
    waiting.abort();
}

/// The largest config value (256 KiB, the state machine's `MAX_CONFIG_VALUE_LEN`).
const LARGEST_CONFIG_VALUE: usize = 256 * 1024;
