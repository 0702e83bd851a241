//! The queue workload: workers submit tasks with ids they choose; after the final heal one
//! linearizable read must show every acknowledged submission and nothing else. Some
//! submissions are sent twice with one session header ([`Duplicator`]): both attempts must
//! get the same answer, which a task id that already exists would not.

use std::sync::Arc;

use anyhow::Result;
use percy_client::proto::{SubmitTaskResponse, TaskSpec};
use percy_proto::v1::task_service_client::TaskServiceClient;
use percy_proto::v1::SubmitTaskRequest;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use tokio::sync::watch;

use super::{final_task_read, think, DUPLICATE_PROBABILITY};
use crate::checker::{exactly_once, queue, Verdict};
use crate::duplicate::{self, Duplicator};
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
        let mut duplicator = Duplicator::new(&env)?;
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
            if rng.gen_bool(DUPLICATE_PROBABILITY) {
                let pending = env
                    .recorder
                    .invoke(process, &id, "submit", json!({"id": id}));
                let answers = duplicator
                    .send_twice(process as usize, |channel, header| {
                        let request = SubmitTaskRequest {
                            header: Some(header),
                            task: Some(spec.clone()),
                        };
                        async move { TaskServiceClient::new(channel).submit(request).await }
                    })
                    .await;
                duplicate::record(&env, pending, answers, submitted);
            } else {
                env.call(
                    process,
                    &id,
                    "submit",
                    json!({"id": id}),
                    client.submit_task(spec),
                    submitted,
                )
                .await;
            }
            think(&mut rng).await;
        }
        Ok(())
    }

    async fn finish(self: Arc<Self>, env: Arc<Env>) -> Result<()> {
        final_task_read(&env).await
    }

    fn check(&self, history: &History) -> Vec<Verdict> {
        vec![queue::check(history), exactly_once::check(history)]
    }
}

/// The output of an acknowledged submission.
fn submitted(response: &SubmitTaskResponse) -> Value {
    json!({"revision": response.task.as_ref().map(|t| t.revision)})
}
