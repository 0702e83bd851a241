//! 06 — Distributed file locking: ancestor paths conflict, a waiter is granted in turn when
//! the holder releases, fencing tokens strictly increase from holder to holder, shared locks
//! coexist, and one call releases everything an agent holds.
//!
//! `cargo run -p percy-tests --example 06_locks`

mod common;

use std::time::Duration;

use anyhow::{Context, Result};
use common::{check, say, step, LocalCluster, LONG_TTL_MS};
use percy_client::proto::RegisterAgentRequest;
use percy_client::{Client, Consistency, LockRequest};

/// How long bob is willing to wait in line.
const WAIT: Duration = Duration::from_secs(20);

async fn register(client: &Client, name: &str) -> Result<u64> {
    let response = client
        .register_agent(RegisterAgentRequest {
            ttl_ms: LONG_TTL_MS,
            name: name.into(),
            ..Default::default()
        })
        .await?;
    Ok(response.agent.context("registration without agent")?.id)
}

fn token(grants: &percy_client::proto::AcquireLocksResponse) -> u64 {
    grants.grants.first().map_or(0, |g| g.fencing_token)
}

#[tokio::main]
async fn main() -> Result<()> {
    step("Start a node and register alice, bob and carol");
    let cluster = LocalCluster::start(1).await?;
    let client = cluster.client().await?;
    let alice = register(&client, "alice").await?;
    let bob = register(&client, "bob").await?;
    let carol = register(&client, "carol").await?;

    step("alice locks the directory src/api");
    let first = client
        .acquire_locks(&LockRequest::exclusive(alice, vec!["src/api".into()]))
        .await?;
    say(format!("granted with fencing token {}", token(&first)));

    step("bob wants src/api/users.rs: inside alice's lock, so it conflicts");
    let refused = client
        .acquire_locks(&LockRequest::exclusive(
            bob,
            vec!["src/api/users.rs".into()],
        ))
        .await;
    say(format!(
        "without waiting: {}",
        refused
            .as_ref()
            .err()
            .map_or("(granted!)".into(), |e| e.to_string())
    ));
    check(refused.is_err(), "an ancestor's lock conflicts")?;

    step("bob queues for it instead; alice releases; bob is granted in turn");
    let waiting = {
        let client = client.clone();
        tokio::spawn(async move {
            let request = LockRequest {
                wait: Some(WAIT),
                ..LockRequest::exclusive(bob, vec!["src/api/users.rs".into()])
            };
            client.acquire_locks(&request).await
        })
    };
    // Let bob's request reach the queue before alice lets go.
    common::wait_for("bob to be queued", || async {
        let locks = client.list_locks("src/", Consistency::Linearizable).await?;
        Ok((!locks.waiters.is_empty()).then_some(()))
    })
    .await?;
    say("bob is in the queue");
    client.release_locks(alice, &["src/api".to_owned()]).await?;
    let second = waiting.await??;
    say(format!("bob granted with fencing token {}", token(&second)));
    check(
        token(&second) > token(&first),
        "the fencing token increased from alice's to bob's",
    )?;

    step("Shared locks coexist: alice and carol both read docs/");
    let shared_a = client
        .acquire_locks(&LockRequest::shared(alice, vec!["docs".into()]))
        .await?;
    let shared_c = client
        .acquire_locks(&LockRequest::shared(carol, vec!["docs".into()]))
        .await?;
    say(format!(
        "tokens {} and {}",
        token(&shared_a),
        token(&shared_c)
    ));
    let writer = client
        .acquire_locks(&LockRequest::exclusive(bob, vec!["docs/index.md".into()]))
        .await;
    check(writer.is_err(), "a writer is kept out while they read")?;

    step("bob takes several paths at once (all or nothing), then releases everything in one call");
    let many = client
        .acquire_locks(&LockRequest::exclusive(
            bob,
            vec![
                "Cargo.toml".into(),
                "Cargo.lock".into(),
                "src/main.rs".into(),
            ],
        ))
        .await?;
    say(format!("bob holds {} more paths", many.grants.len()));
    let released = client.release_all_locks(bob).await?;
    say(format!("released: {:?}", released.released));
    let left = client.list_locks("", Consistency::Linearizable).await?;
    let bobs = left
        .locks
        .iter()
        .filter(|l| l.holders.iter().any(|h| h.agent_id == bob))
        .count();
    check(bobs == 0, "bob holds nothing any more")?;
    for lock in &left.locks {
        say(format!(
            "still held: {} by agents {:?}",
            lock.path,
            lock.holders.iter().map(|h| h.agent_id).collect::<Vec<_>>()
        ));
    }

    cluster.shutdown().await;
    println!("\ndone");
    Ok(())
}
