//! The watch workload: writers put config keys under one prefix while several watchers, each
//! preferring a different node, follow the prefix from one start revision. Watchers survive
//! stream failures by resuming from their last revision + 1 (the client library does it, and
//! the watcher restarts the stream itself when the library gives up). After the final heal a
//! last write is made, every watcher must reach its revision, and each watcher's sequence is
//! recorded as one `watch` operation for the checker.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Result};
use futures::StreamExt;
use percy_client::proto::event::Value as EventValue;
use percy_client::{ClientError, EntityKind, WatchOptions};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use tokio::sync::{watch, Mutex, OnceCell};
use tokio::task::JoinHandle;

use super::think;
use crate::checker::{register, watch as watch_checker, Verdict};
use crate::history::{History, Status};
use crate::run::{Env, Workload, FINAL_TIMEOUT};

/// The watched prefix.
const PREFIX: &str = "watch/";
/// Keys written under it.
const KEYS: u64 = 4;
/// Watchers (the remaining workers write).
pub const WATCHERS: u64 = 3;
/// Pause before a watcher restarts a stream that ended.
const RESTART_PAUSE: Duration = Duration::from_millis(200);
/// How often `finish` checks whether the watchers caught up.
const CATCH_UP_POLL: Duration = Duration::from_millis(200);

/// What one watcher saw.
#[derive(Debug, Default)]
struct Seen {
    call_ns: u64,
    events: Vec<(u64, String, Option<String>)>,
    skipped: Vec<(u64, u64)>,
    next: u64,
}

/// See the module docs.
#[derive(Default)]
pub struct WatchWorkload {
    start_revision: OnceCell<u64>,
    seen: Arc<Mutex<HashMap<u64, Seen>>>,
    watchers: Mutex<Vec<JoinHandle<()>>>,
}

impl WatchWorkload {
    /// Follows the prefix from `start` forever (until aborted), recording into `seen`.
    async fn follow(env: Arc<Env>, seen: Arc<Mutex<HashMap<u64, Seen>>>, process: u64, start: u64) {
        let client = match env.client_for(process).await {
            Ok(client) => client.with_deadline(FINAL_TIMEOUT),
            Err(_) => return,
        };
        let mut next = start;
        loop {
            let mut stream = client.watch(WatchOptions {
                start_revision: next,
                kinds: vec![EntityKind::Config],
                key_prefix: PREFIX.to_owned(),
                task_statuses: Vec::new(),
                initial_state: false,
            });
            while let Some(item) = stream.next().await {
                let mut seen = seen.lock().await;
                let entry = seen.entry(process).or_default();
                match item {
                    Ok(event) => {
                        let value = match &event.value {
                            Some(EventValue::Config(entry)) if !event.deleted => {
                                Some(String::from_utf8_lossy(&entry.value).into_owned())
                            }
                            _ => None,
                        };
                        entry
                            .events
                            .push((event.revision, event.key.clone(), value));
                        next = next.max(event.revision + 1);
                        entry.next = next;
                    }
                    Err(ClientError::Compacted {
                        compact_revision, ..
                    }) => {
                        entry
                            .skipped
                            .push((next, compact_revision.saturating_sub(1)));
                        next = next.max(compact_revision);
                        entry.next = next;
                        break;
                    }
                    Err(_) => break,
                }
            }
            tokio::time::sleep(RESTART_PAUSE).await;
        }
    }
}

impl Workload for WatchWorkload {
    fn name(&self) -> &'static str {
        "watch"
    }

    async fn setup(self: Arc<Self>, env: Arc<Env>) -> Result<()> {
        let client = env.admin_client().await?;
        let key = format!("{PREFIX}start");
        let pending = env
            .recorder
            .invoke(0, &key, "write", json!({"value": "start"}));
        let response = client.put_config(&key, b"start".to_vec(), None).await?;
        let revision = response
            .entry
            .map(|e| e.revision)
            .ok_or_else(|| anyhow!("put returned no entry"))?;
        env.recorder
            .complete(pending, Status::Ok, json!({"revision": revision}));
        self.start_revision
            .set(revision)
            .map_err(|_| anyhow!("setup ran twice"))?;
        let mut watchers = self.watchers.lock().await;
        for process in 1..=WATCHERS {
            self.seen.lock().await.insert(
                process,
                Seen {
                    call_ns: env.recorder.now_ns(),
                    next: revision,
                    ..Default::default()
                },
            );
            watchers.push(tokio::spawn(Self::follow(
                Arc::clone(&env),
                Arc::clone(&self.seen),
                process,
                revision,
            )));
        }
        Ok(())
    }

    async fn worker(
        self: Arc<Self>,
        env: Arc<Env>,
        process: u64,
        stop: watch::Receiver<bool>,
    ) -> Result<()> {
        if process <= WATCHERS {
            return Ok(());
        }
        let client = env.client_for(process).await?;
        let mut rng = StdRng::seed_from_u64(env.seed ^ process);
        let mut written = 0u64;
        while !*stop.borrow() {
            written += 1;
            let key = format!("{PREFIX}{}", rng.gen_range(0..KEYS));
            let value = format!("p{process}-{written}");
            env.call(
                process,
                &key,
                "write",
                json!({"value": value}),
                client.put_config(&key, value.clone().into_bytes(), None),
                |response| json!({"revision": response.entry.as_ref().map(|e| e.revision)}),
            )
            .await;
            think(&mut rng).await;
        }
        Ok(())
    }

    async fn finish(self: Arc<Self>, env: Arc<Env>) -> Result<()> {
        let client = env.admin_client().await?;
        let key = format!("{PREFIX}end");
        let pending = env
            .recorder
            .invoke(0, &key, "write", json!({"value": "end"}));
        let response = client.put_config(&key, b"end".to_vec(), None).await?;
        let until = response
            .entry
            .map(|e| e.revision)
            .ok_or_else(|| anyhow!("put returned no entry"))?;
        env.recorder
            .complete(pending, Status::Ok, json!({"revision": until}));
        let deadline = tokio::time::Instant::now() + FINAL_TIMEOUT;
        loop {
            let caught_up = self.seen.lock().await.values().all(|s| s.next > until);
            if caught_up || tokio::time::Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(CATCH_UP_POLL).await;
        }
        for watcher in self.watchers.lock().await.drain(..) {
            watcher.abort();
        }
        let start = *self
            .start_revision
            .get()
            .ok_or_else(|| anyhow!("no setup"))?;
        let seen = self.seen.lock().await;
        let mut processes: Vec<_> = seen.keys().copied().collect();
        processes.sort_unstable();
        for process in processes {
            let watcher = &seen[&process];
            let events: Vec<Value> = watcher
                .events
                .iter()
                .map(|(revision, key, value)| json!([revision, key, value]))
                .collect();
            let skipped: Vec<Value> = watcher.skipped.iter().map(|(a, b)| json!([a, b])).collect();
            let pending = crate::history::Pending::at(
                process,
                PREFIX,
                "watch",
                json!({"start_revision": start, "prefix": PREFIX}),
                watcher.call_ns,
            );
            env.recorder.complete(
                pending,
                Status::Ok,
                json!({
                    "events": events,
                    "until": until,
                    "caught_up": watcher.next > until,
                    "skipped": skipped,
                }),
            );
        }
        Ok(())
    }

    fn check(&self, history: &History) -> Vec<Verdict> {
        vec![
            watch_checker::check(history),
            register::check(history, register::DEFAULT_STEP_BUDGET),
        ]
    }
}
