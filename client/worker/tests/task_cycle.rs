//! The worker's task cycle against a real cluster: claim and start in one write, complete and
//! claim the next in one write (so a busy worker spends one write per task), every task seen
//! working before it completes, each completed once; and a command's completion driven by
//! its exit, not by a timer.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use futures::StreamExt;
use percy_client::proto::event::Value as EventValue;
use percy_client::proto::{TaskSpec, TaskStatus};
use percy_client::{Client, Consistency, EntityKind, WatchOptions};
use percy_testkit::{eventually, TestCluster};
use percy_worker::{TaskHandler, Worker, WorkerConfig, WorkerSummary};

/// Generous for a loaded 2-core machine: the tasks take milliseconds.
const SETTLE: Duration = Duration::from_secs(60);

async fn submit(client: &Client, ids: &[String], capability: &str) {
    for id in ids {
        let spec = TaskSpec {
            id: id.clone(),
            title: id.clone(),
            requires: vec![capability.into()],
            max_attempts: 1,
            ..Default::default()
        };
        client.submit_task(spec).await.unwrap();
    }
}

/// Starts a worker with `config` and returns a way to stop it and its summary.
fn start(
    client: &Client,
    config: WorkerConfig,
) -> (
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<Result<WorkerSummary, percy_worker::WorkerError>>,
) {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let worker = tokio::spawn(Worker::new(client.clone(), config).run(async {
        let _ = stopped.await;
    }));
    (stop, worker)
}

async fn wait_completed(client: &Client, ids: &[String]) {
    eventually("every task completes", SETTLE, || async {
        for id in ids {
            let task = client
                .get_task(id, Consistency::Linearizable)
                .await
                .ok()?
                .task?;
            (task.status() == TaskStatus::Completed).then_some(())?;
        }
        Some(())
    })
    .await;
}

/// One worker, one task at a time, tasks submitted before it starts: after the first claim,
/// each completion claims the next task in the same write, so task k+1 turns working at the
/// very revision task k completes. Every task goes ready → working → completed (seen running
/// before it completes; no claimed step left over), once, in one attempt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_worker_completes_and_claims_the_next_task_in_one_write() {
    let cluster = TestCluster::start(1);
    let client = Client::connect(&cluster.endpoints()).await.unwrap();
    let ids: Vec<String> = (0..8).map(|i| format!("cycle-{i}")).collect();
    submit(&client, &ids, "cycle").await;
    let mut events = client.watch(WatchOptions {
        kinds: vec![EntityKind::Task],
        key_prefix: "cycle-".into(),
        initial_state: true,
        ..Default::default()
    });

    let state = tempfile::tempdir().unwrap();
    let mut config = WorkerConfig::new("cycle-1", "");
    config.capabilities = vec!["cycle".into()];
    config.inbox_dir = state.path().to_owned();
    config.max_concurrent = 1;
    config.handler = Some(TaskHandler::new(|task, _| Ok(format!("did {}", task.id))));
    let (stop, worker) = start(&client, config);

    // (status, revision) of every change of every task, in order.
    let mut history: HashMap<String, Vec<(TaskStatus, u64)>> = HashMap::new();
    let mut completed = 0;
    while completed < ids.len() {
        let event = tokio::time::timeout(SETTLE, events.next())
            .await
            .expect("the tasks move on")
            .expect("the watch goes on")
            .unwrap();
        if let Some(EventValue::Task(task)) = event.value {
            completed += usize::from(task.status() == TaskStatus::Completed);
            history
                .entry(task.id.clone())
                .or_default()
                .push((task.status(), event.revision));
        }
    }
    stop.send(()).unwrap();
    let summary = worker.await.unwrap().unwrap();
    assert_eq!(summary.completed, ids.len() as u64);

    for id in &ids {
        let statuses: Vec<TaskStatus> = history[id].iter().map(|(s, _)| *s).collect();
        assert_eq!(
            statuses,
            [
                TaskStatus::Ready,
                TaskStatus::Working,
                TaskStatus::Completed
            ],
            "{id}: {:?}",
            history[id]
        );
        let task = client
            .get_task(id, Consistency::Linearizable)
            .await
            .unwrap()
            .task
            .unwrap();
        assert_eq!(task.attempts, 1, "{id} ran once");
        assert_eq!(task.result.unwrap_or_default().summary, format!("did {id}"));
    }
    // The tasks run in submission order (same priority, oldest first); each one after the
    // first started in the write that completed the one before it.
    for pair in ids.windows(2) {
        let completed_at = history[&pair[0]][2].1;
        let started_at = history[&pair[1]][1].1;
        assert_eq!(
            started_at, completed_at,
            "{} should start in the write completing {}: {history:?}",
            pair[1], pair[0]
        );
    }
}

/// A worker shutting down does not claim a next task with its last completion: it stops with
/// the remaining tasks still ready.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_shutting_down_claims_nothing_more() {
    let cluster = TestCluster::start(1);
    let client = Client::connect(&cluster.endpoints()).await.unwrap();
    let ids: Vec<String> = (0..3).map(|i| format!("last-{i}")).collect();
    submit(&client, &ids, "last").await;

    let state = tempfile::tempdir().unwrap();
    let mut config = WorkerConfig::new("last-1", "");
    config.capabilities = vec!["last".into()];
    config.inbox_dir = state.path().to_owned();
    config.max_concurrent = 1;
    // The first task waits until the worker was told to stop, so its completion comes
    // during the shutdown.
    let (release, released) = std::sync::mpsc::channel::<()>();
    let released = std::sync::Mutex::new(released);
    config.handler = Some(TaskHandler::new(move |_, _| {
        let _ = released
            .lock()
            .map_err(|e| e.to_string())?
            .recv_timeout(SETTLE);
        Ok(String::new())
    }));
    let (stop, worker) = start(&client, config);
    eventually("the first task runs", SETTLE, || async {
        let task = client
            .get_task(&ids[0], Consistency::Linearizable)
            .await
            .ok()?
            .task?;
        (task.status() == TaskStatus::Working).then_some(())
    })
    .await;
    stop.send(()).unwrap();
    // Give the worker a moment to see the shutdown before the handler returns.
    tokio::time::sleep(Duration::from_millis(200)).await;
    release.send(()).unwrap();
    // Any later call returns at once.
    drop(release);
    let summary = worker.await.unwrap().unwrap();
    assert_eq!(summary.completed, 1);
    for id in &ids[1..] {
        let task = client
            .get_task(id, Consistency::Linearizable)
            .await
            .unwrap()
            .task
            .unwrap();
        assert_eq!(task.status(), TaskStatus::Ready, "{id} was left alone");
        assert_eq!(task.attempts, 0);
    }
}

/// Nothing between a command's exit and its task's completion waits on a timer: 20 tasks
/// whose command is `true`, one at a time through one worker, take a fork, an exec and a
/// write each (milliseconds). A fixed wait of half a second per task anywhere in the path (a
/// poll interval, an output reader's timeout, the supervisor's parent check) would need at
/// least 10 s; the bound leaves that much margin for a loaded machine and no more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sequential_true_commands_complete_without_a_fixed_wait() {
    const TASKS: u32 = 20;
    const NO_FIXED_WAIT: Duration = Duration::from_millis(500 * TASKS as u64);
    let cluster = TestCluster::start(1);
    let client = Client::connect(&cluster.endpoints()).await.unwrap();
    let ids: Vec<String> = (0..TASKS).map(|i| format!("true-{i}")).collect();

    let state = tempfile::tempdir().unwrap();
    let mut config = WorkerConfig::new("true-1", "true");
    config.capabilities = vec!["true".into()];
    config.inbox_dir = state.path().to_owned();
    config.max_concurrent = 1;
    let (stop, worker) = start(&client, config);
    eventually("the worker registers", SETTLE, || async {
        client
            .get_agent_by_name("true-1", Consistency::Linearizable)
            .await
            .ok()?
            .agent
    })
    .await;

    let started = Instant::now();
    submit(&client, &ids, "true").await;
    wait_completed(&client, &ids).await;
    let took = started.elapsed();
    stop.send(()).unwrap();
    let summary = worker.await.unwrap().unwrap();
    assert_eq!(summary.completed, u64::from(TASKS));
    assert!(
        took < NO_FIXED_WAIT,
        "{TASKS} `true` tasks took {took:?}: something waits on a timer"
    );
}
