//! A worker that runs tasks with an in-process handler (no `sh -c`): the handler's `Ok`
//! completes the task with its output, its `Err` fails it, both under the claim token.

use std::time::Duration;

use percy_client::proto::{TaskSpec, TaskStatus};
use percy_client::{Client, Consistency};
use percy_testkit::{eventually, TestCluster};
use percy_worker::{TaskHandler, Worker, WorkerConfig};

/// Generous for a loaded 2-core machine: the tasks take milliseconds.
const SETTLE: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_completes_and_fails_tasks_without_a_command() {
    let cluster = TestCluster::start(1);
    let client = Client::connect(&cluster.endpoints()).await.unwrap();
    for (id, title) in [("h-ok", "fine"), ("h-bad", "refuse me")] {
        let spec = TaskSpec {
            id: id.into(),
            title: title.into(),
            requires: vec!["inproc".into()],
            max_attempts: 1,
            ..Default::default()
        };
        client.submit_task(spec).await.unwrap();
    }

    let state = tempfile::tempdir().unwrap();
    let mut config = WorkerConfig::new("inproc-1", "");
    config.capabilities = vec!["inproc".into()];
    config.inbox_dir = state.path().to_owned();
    config.handler = Some(TaskHandler::new(|task, _workdir| {
        if task.title == "refuse me" {
            Err(format!("handler refused {}", task.id))
        } else {
            Ok(format!("working\ndid {}\n", task.id))
        }
    }));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let worker = tokio::spawn(Worker::new(client.clone(), config).run(async {
        let _ = stopped.await;
    }));

    let [done, failed] = eventually("both tasks end", SETTLE, || async {
        let mut ended = Vec::new();
        for id in ["h-ok", "h-bad"] {
            let task = client
                .get_task(id, Consistency::Linearizable)
                .await
                .ok()?
                .task?;
            matches!(task.status(), TaskStatus::Completed | TaskStatus::Failed).then_some(())?;
            ended.push(task);
        }
        <[_; 2]>::try_from(ended).ok()
    })
    .await;
    assert_eq!(done.status(), TaskStatus::Completed);
    let result = done.result.unwrap_or_default();
    assert_eq!(result.summary, "did h-ok");
    assert_eq!(result.output_tail, "working\ndid h-ok\n");
    assert_eq!(failed.status(), TaskStatus::Failed);
    assert!(
        failed.error.contains("handler refused h-bad"),
        "{}",
        failed.error
    );

    stop.send(()).unwrap();
    let summary = worker.await.unwrap().unwrap();
    assert_eq!((summary.completed, summary.failed), (1, 1));
}
