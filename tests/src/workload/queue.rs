//! The queue workload: workers submit tasks with ids they choose; after the final heal one
//! linearizable read must show every acknowledged submission and nothing else.

use std::sync::Arc;

use anyhow::Result;
use percy_client::proto::TaskSpec;
use rand::rngs::StdRng;
use rand::SeedableRng;
use serde_json::json;
use tokio::sync::watch;

use super::{final_task_read, think};
use crate::checker::{queue, Verdict};
use crate::history::History;
use crate::run::{Env, Workload};

/// See the module docs.
#[derive(Default)]
pub struct QueueWorkload;

impl Workload for QueueWorkload {
    fn name(&self) -> &'static str {
        "queue"
    }

    async fn setup(self: Arc<Self>, _env: Arc<Env>) -> Result<()> {
        Ok(())
    }

    async fn worker(
        self: Arc<Self>,
        env: Arc<Env>,
        process: u64,
        stop: watch::Receiver<bool>,
    ) -> Result<()> {
        let client = env.client_for(process).await?;
        let mut rng = StdRng::seed_from_u64(env.seed ^ process);
        let mut n = 0u64;
        while !*stop.borrow() {
            n += 1;
            let id = format!("q-{process}-{n}");
            let spec = TaskSpec {
                id: id.clone(),
                title: format!("queue task {id}"),
                ..Default::default()
            };
            env.call(
                process,
                &id,
                "submit",
                json!({"id": id}),
                client.submit_task(spec),
                |response| json!({"revision": response.task.as_ref().map(|t| t.revision)}),
            )
            .await;
            think(&mut rng).await;
        }
        Ok(())
    }

    async fn finish(self: Arc<Self>, env: Arc<Env>) -> Result<()> {
        final_task_read(&env).await
    }

    fn check(&self, history: &History) -> Vec<Verdict> {
        vec![queue::check(history)]
    }
}
