//! 05 — DAG scheduling: a plan's tasks run in dependency order (a task becomes ready only
//! when everything it depends on completed), independent tasks run side by side, and a plan
//! with a cycle is rejected as a whole.
//!
//! `cargo run -p percy-tests --example 05_dependencies`

mod common;

use anyhow::{Context, Result};
use common::{check, refusal_text, say, step, wait_for, LocalCluster};
use percy_client::proto::TaskSpec;
use percy_client::{Consistency, TaskStatus};
use percy_worker::{Worker, WorkerConfig};
use tokio::sync::oneshot;

/// fetch → {build-a, build-b} → link → release
const PLAN: [(&str, &[&str]); 5] = [
    ("fetch", &[]),
    ("build-a", &["fetch"]),
    ("build-b", &["fetch"]),
    ("link", &["build-a", "build-b"]),
    ("release", &["link"]),
];

fn spec(id: &str, depends_on: &[&str]) -> TaskSpec {
    TaskSpec {
        id: id.into(),
        title: id.into(),
        depends_on: depends_on.iter().map(|d| d.to_string()).collect(),
        ..Default::default()
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    step("Start a node");
    let cluster = LocalCluster::start(1).await?;
    let client = cluster.client().await?;

    step("A plan with a cycle is rejected whole");
    let cyclic = vec![spec("x", &["z"]), spec("y", &["x"]), spec("z", &["y"])];
    let refused = client.submit_plan("cyclic", cyclic).await;
    say(refusal_text(&refused));
    check(refused.is_err(), "the cyclic plan is refused")?;

    step("Submit the plan fetch → {build-a, build-b} → link → release");
    let tasks = PLAN.iter().map(|(id, deps)| spec(id, deps)).collect();
    let plan = client.submit_plan("release-1.0", tasks).await?;
    for task in &plan.tasks {
        say(format!(
            "{:8} {:?} (depends on {:?})",
            task.id,
            task.status(),
            task.depends_on
        ));
    }
    let ready: Vec<&str> = plan
        .tasks
        .iter()
        .filter(|t| t.status() == TaskStatus::Ready)
        .map(|t| t.id.as_str())
        .collect();
    check(
        ready == ["fetch"],
        "only the root is ready; the rest are blocked",
    )?;

    step("A worker running two tasks at once works through the plan");
    let scratch = tempfile::tempdir()?;
    let log = scratch.path().join("order.log");
    let exec = format!(
        "echo \"start $PERCY_TASK_ID\" >> {log}; sleep 0.3; echo \"end $PERCY_TASK_ID\" >> {log}",
        log = log.display()
    );
    let mut config = WorkerConfig::new("builder", exec);
    config.max_concurrent = 2;
    config.inbox_dir = scratch.path().to_owned();
    let (stop, stopped) = oneshot::channel::<()>();
    let worker = tokio::spawn(Worker::new(client.clone(), config).run(async move {
        let _ = stopped.await;
    }));
    wait_for("the plan to complete", || async {
        let plan = client
            .get_plan("release-1.0", Consistency::Linearizable)
            .await?;
        Ok(plan
            .tasks
            .iter()
            .all(|t| t.status() == TaskStatus::Completed)
            .then_some(()))
    })
    .await?;
    let _ = stop.send(());
    worker.await??;

    step("What ran when");
    let order = std::fs::read_to_string(&log).context("reading the log")?;
    let lines: Vec<&str> = order.lines().collect();
    for line in &lines {
        say(line);
    }
    let position = |entry: String| lines.iter().position(|l| *l == entry);
    for (id, deps) in PLAN {
        let started = position(format!("start {id}")).context("a task never started")?;
        for dep in deps {
            let ended = position(format!("end {dep}")).context("a dependency never ended")?;
            check(ended < started, &format!("{dep} ended before {id} started"))?;
        }
    }
    let a = position("start build-a".into()).unwrap_or(usize::MAX);
    let b_end = position("end build-b".into()).unwrap_or(0);
    let b = position("start build-b".into()).unwrap_or(usize::MAX);
    let a_end = position("end build-a".into()).unwrap_or(0);
    say(format!(
        "build-a and build-b overlapped: {}",
        a < b_end && b < a_end
    ));

    cluster.shutdown().await;
    println!("\ndone");
    Ok(())
}
