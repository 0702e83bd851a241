//! The watch stream against a real (in-process) cluster: ordering, initial state,
//! compaction, and resuming without gaps or duplicates when the node it reads from goes away.

mod support;

use std::time::Duration;

use futures::StreamExt;
use percy_client::proto::event;
use percy_client::{Client, ClientError, EntityKind, EventStream, WatchOptions};
use support::TestCluster;

/// Generous bound for one event to arrive on a loaded machine.
const EVENT_TIMEOUT: Duration = Duration::from_secs(30);

async fn next_key(events: &mut EventStream) -> (u64, String) {
    let event = tokio::time::timeout(EVENT_TIMEOUT, events.next())
        .await
        .expect("an event in time")
        .expect("stream open")
        .expect("no error");
    (event.revision, event.key)
}

fn config_only() -> WatchOptions {
    WatchOptions {
        kinds: vec![EntityKind::Config],
        ..WatchOptions::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn initial_state_then_changes_in_order() {
    let cluster = TestCluster::start(1);
    let client = Client::connect(&cluster.endpoints()).await.expect("client");
    client
        .put_config("a", b"1".to_vec(), None)
        .await
        .expect("put");
    let mut events = client.watch(WatchOptions {
        initial_state: true,
        ..config_only()
    });
    let (initial_revision, key) = next_key(&mut events).await;
    assert_eq!(key, "a");
    client
        .put_config("b", b"2".to_vec(), None)
        .await
        .expect("put");
    let event = tokio::time::timeout(EVENT_TIMEOUT, events.next())
        .await
        .expect("in time")
        .expect("open")
        .expect("ok");
    assert!(event.revision > initial_revision);
    assert_eq!(event.key, "b");
    match event.value {
        Some(event::Value::Config(entry)) => assert_eq!(entry.value, b"2"),
        other => panic!("expected a config entry, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compacted_start_revision_is_a_distinct_error() {
    let cluster = TestCluster::start_with(1, |config| config.watch_history = 3);
    let client = Client::connect(&cluster.endpoints()).await.expect("client");
    for i in 0..10 {
        client
            .put_config(&format!("k{i}"), vec![], None)
            .await
            .expect("put");
    }
    let mut events = client.watch(WatchOptions {
        start_revision: 1,
        ..WatchOptions::default()
    });
    let first = tokio::time::timeout(EVENT_TIMEOUT, events.next())
        .await
        .expect("in time")
        .expect("an item");
    match first {
        Err(ClientError::Compacted {
            requested,
            compact_revision,
        }) => {
            assert_eq!(requested, 1);
            assert!(compact_revision > 1);
        }
        other => panic!("expected Compacted, got {other:?}"),
    }
    let end = tokio::time::timeout(EVENT_TIMEOUT, events.next())
        .await
        .expect("in time");
    assert!(end.is_none(), "the stream ends after compaction");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_resumes_on_another_node_without_gaps_or_duplicates() {
    let mut cluster = TestCluster::start(3);
    let follower = cluster.follower_index().expect("a follower");
    // The watcher reads from the follower first; the writer may use any node.
    let mut endpoints = cluster.endpoints();
    endpoints.rotate_left(follower);
    let watcher = Client::connect(&endpoints)
        .await
        .expect("client")
        .with_deadline(Duration::from_secs(30));
    let writer = Client::connect(&cluster.endpoints())
        .await
        .expect("client")
        .with_deadline(Duration::from_secs(30));
    let mut events = watcher.watch(config_only());
    // Let the watch connect and pin "now" before writing.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let mut seen = Vec::new();
    for i in 0..5 {
        writer
            .put_config(&format!("k{i}"), vec![], None)
            .await
            .expect("put");
    }
    for _ in 0..5 {
        seen.push(next_key(&mut events).await);
    }
    cluster.stop(follower);
    for i in 5..10 {
        writer
            .put_config(&format!("k{i}"), vec![], None)
            .await
            .expect("put");
    }
    for _ in 5..10 {
        seen.push(next_key(&mut events).await);
    }
    let keys: Vec<&str> = seen.iter().map(|(_, k)| k.as_str()).collect();
    let expected: Vec<String> = (0..10).map(|i| format!("k{i}")).collect();
    assert_eq!(keys, expected, "{seen:?}");
    assert!(seen.windows(2).all(|w| w[0].0 < w[1].0), "{seen:?}");
}
