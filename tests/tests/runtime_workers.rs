//! The worker runtime end to end: three real `percyd` processes and real `percyctl worker`
//! processes with different capabilities and labels.
//!
//! Each task's command is `run.sh` below: it appends `start <task> <agent> <attempt>` to a
//! shared log, runs the task's payload (a shell snippet on stdin), then appends
//! `end <task> <agent>`. Single small appends are atomic, so the log is the order in which
//! things really ran.

mod runtime_common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use percy_client::proto::{TaskResult, TaskSpec};
use percy_client::{Consistency, TaskStatus, BROADCAST};
use runtime_common::*;

const RUN_SH: &str = r#"log="$1"
echo "start $PERCY_TASK_ID $PERCY_AGENT_NAME $PERCY_TASK_ATTEMPT" >> "$log"
script=$(cat)
eval "$script" || exit $?
echo "end $PERCY_TASK_ID $PERCY_AGENT_NAME" >> "$log"
"#;

/// How long a task of the plan takes.
const STEP: &str = "sleep 0.3";

/// Writes run.sh and returns the `--exec` that runs it, and the log path.
fn exec(setup: &Setup) -> Result<(String, std::path::PathBuf)> {
    let script = setup.path("run.sh");
    std::fs::write(&script, RUN_SH)?;
    let log = setup.path("tasks.log");
    Ok((format!("sh {} {}", script.display(), log.display()), log))
}

fn spec(
    id: &str,
    requires: &[&str],
    selector: &[(&str, &str)],
    deps: &[&str],
    payload: &str,
) -> TaskSpec {
    TaskSpec {
        id: id.into(),
        title: format!("task {id}"),
        requires: requires.iter().map(|s| s.to_string()).collect(),
        selector: selector
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        depends_on: deps.iter().map(|s| s.to_string()).collect(),
        payload: payload.as_bytes().to_vec(),
        ..Default::default()
    }
}

/// A worker's capabilities and extra labels.
type WorkerTraits = (
    &'static [&'static str],
    &'static [(&'static str, &'static str)],
);

/// (task, agent) of every `start`/`end` line, in log order.
fn entries(log: &[String], kind: &str) -> Vec<(String, String, usize)> {
    log.iter()
        .enumerate()
        .filter_map(|(i, line)| {
            let mut words = line.split_whitespace();
            (words.next() == Some(kind)).then(|| {
                let task = words.next().unwrap_or_default().to_owned();
                let agent = words.next().unwrap_or_default().to_owned();
                (task, agent, i)
            })
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plan_runs_in_dependency_order_each_task_once_on_a_matching_worker() -> Result<()> {
    let _serial = serial().await;
    let setup = Setup::start().await?;
    let (exec, log) = exec(&setup)?;
    let workers: BTreeMap<&str, WorkerTraits> = BTreeMap::from([
        ("ru", (&["rust"][..], &[("pool", "blue")][..])),
        ("py", (&["python"][..], &[][..])),
        ("poly", (&["rust", "python", "docs"][..], &[][..])),
    ]);
    let mut processes = Vec::new();
    for (name, (caps, labels)) in &workers {
        let mut args = vec!["--capabilities".to_owned(), caps.join(",")];
        for (k, v) in *labels {
            args.extend(["--label".to_owned(), format!("{k}={v}")]);
        }
        if *name == "poly" {
            args.extend(["--max-concurrent".to_owned(), "2".to_owned()]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        processes.push(setup.worker(name, &exec, &args)?);
    }

    let plan: Vec<TaskSpec> = vec![
        spec("fetch", &[], &[], &[], STEP),
        spec("gen-proto", &["rust"], &[], &["fetch"], STEP),
        spec("build-core", &["rust"], &[], &["gen-proto"], STEP),
        spec(
            "build-cli",
            &["rust"],
            &[("pool", "blue")],
            &["gen-proto"],
            STEP,
        ),
        spec("lint-py", &["python"], &[], &["fetch"], STEP),
        spec("test-py", &["python"], &[], &["lint-py"], STEP),
        spec("test-core", &["rust"], &[], &["build-core"], STEP),
        spec("test-cli", &["rust"], &[], &["build-cli"], STEP),
        spec("docs", &["docs"], &[], &["build-core"], STEP),
        spec(
            "package",
            &["rust", "python"],
            &[],
            &["test-core", "test-cli", "test-py"],
            STEP,
        ),
        spec("publish", &[], &[], &["package", "docs"], STEP),
        spec("announce", &["python"], &[], &["publish"], STEP),
    ];
    setup.client.submit_plan("release", plan.clone()).await?;
    // Nobody has a GPU, and nobody runs Plan 9.
    setup
        .client
        .submit_task(spec("train", &["gpu"], &[], &[], STEP))
        .await?;
    setup
        .client
        .submit_task(spec("port", &[], &[("os", "plan9")], &[], STEP))
        .await?;

    eventually("the plan to complete", SETTLE, || async {
        let tasks = setup
            .client
            .get_plan("release", Consistency::Linearizable)
            .await?
            .tasks;
        Ok(tasks
            .iter()
            .all(|t| t.status() == TaskStatus::Completed)
            .then_some(()))
    })
    .await?;

    let lines = lines(&log);
    let starts = entries(&lines, "start");
    let ends = entries(&lines, "end");
    let agents: BTreeMap<u64, String> = setup
        .agents()
        .await?
        .into_iter()
        .map(|a| (a.id, a.name))
        .collect();
    for task in &plan {
        let started: Vec<_> = starts.iter().filter(|(t, _, _)| *t == task.id).collect();
        let ended: Vec<_> = ends.iter().filter(|(t, _, _)| *t == task.id).collect();
        ensure!(
            started.len() == 1 && ended.len() == 1,
            "{} ran {} times:\n{}",
            task.id,
            started.len(),
            lines.join("\n")
        );
        let (_, runner, start_at) = started[0];
        ensure!(
            ended[0].1 == *runner,
            "{} started on {runner}, ended on {}",
            task.id,
            ended[0].1
        );
        let (caps, labels) = workers[runner.as_str()];
        for needed in &task.requires {
            ensure!(
                caps.contains(&needed.as_str()),
                "{} needs {needed}, ran on {runner}",
                task.id
            );
        }
        for (k, v) in &task.selector {
            ensure!(
                labels.contains(&(k.as_str(), v.as_str())),
                "{} selects {k}={v}, ran on {runner}",
                task.id
            );
        }
        for dep in &task.depends_on {
            let dep_end = ends
                .iter()
                .find(|(t, _, _)| t == dep)
                .map(|(_, _, i)| *i)
                .context("dependency never ended")?;
            ensure!(
                dep_end < *start_at,
                "{} started before its dependency {dep} ended:\n{}",
                task.id,
                lines.join("\n")
            );
        }
        let state = setup.task(&task.id).await?;
        ensure!(
            state.attempts == 1,
            "{} took {} attempts",
            task.id,
            state.attempts
        );
        ensure!(
            agents.get(&state.assignee) == Some(runner),
            "{} is recorded on agent {}, ran on {runner}",
            task.id,
            state.assignee
        );
        let result = state.result.unwrap_or_default();
        ensure!(result.exit_code == Some(0), "{} result {result:?}", task.id);
    }

    for id in ["train", "port"] {
        let task = setup.task(id).await?;
        ensure!(
            task.status() == TaskStatus::Ready && task.attempts == 0 && task.assignee == 0,
            "{id} has no matching worker yet is {:?} after {} attempts",
            task.status(),
            task.attempts
        );
        ensure!(!starts.iter().any(|(t, _, _)| t == id), "{id} was run");
    }

    for worker in &mut processes {
        let status = worker.terminate().await?;
        ensure!(
            status.success(),
            "worker {} exited with {status}:\n{}",
            worker.name,
            worker.log()
        );
    }
    let active = setup
        .client
        .list_agents(false, Consistency::Linearizable)
        .await?
        .agents;
    ensure!(
        active.is_empty(),
        "agents still active after shutdown: {active:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_worker_s_task_is_finished_by_another_after_the_ttl_and_its_locks_released(
) -> Result<()> {
    let _serial = serial().await;
    let setup = Setup::start().await?;
    let (exec, log) = exec(&setup)?;
    let pgids = setup.path("pgids");
    // Take a lock as the agent, note the process group (to clean up the orphan), work.
    let payload = format!(
        r#"{percyctl} --endpoints "$PERCY_ENDPOINTS" lock acquire data/db --agent "$PERCY_AGENT_ID" >/dev/null || exit 9
read -r _ _ _ _ pgrp _ < /proc/$$/stat; echo "$pgrp" >> {pgids}
sleep 4"#,
        percyctl = percyctl_binary()?.display(),
        pgids = pgids.display()
    );
    let mut first = setup.worker("first", &exec, &["--capabilities", "db"])?;
    setup
        .client
        .submit_task(spec("migrate", &["db"], &[], &[], &payload))
        .await?;

    let first_id = eventually("first to lock data/db", SETTLE, || async {
        let locks = setup
            .client
            .list_locks("data/", Consistency::Linearizable)
            .await?;
        Ok(locks
            .locks
            .first()
            .and_then(|l| l.holders.first())
            .map(|h| h.agent_id))
    })
    .await?;
    first.kill()?;
    let orphans = GroupGuard(
        lines(&pgids)
            .iter()
            .filter_map(|l| l.trim().parse().ok())
            .collect(),
    );
    let mut second = setup.worker("second", &exec, &["--capabilities", "db"])?;

    let done = eventually("migrate to complete", SETTLE, || async {
        let task = setup.task("migrate").await?;
        Ok((task.status() == TaskStatus::Completed).then_some(task))
    })
    .await?;
    let second_id = setup
        .active_agent("second")
        .await?
        .context("second is not active")?
        .id;
    ensure!(
        done.assignee == second_id,
        "completed by agent {}, not second ({second_id})",
        done.assignee
    );
    ensure!(done.attempts == 2, "{} attempts", done.attempts);
    let first_agent = setup
        .client
        .get_agent(first_id, Consistency::Linearizable)
        .await?
        .agent
        .context("first missing")?;
    ensure!(
        first_agent.status() == percy_client::proto::AgentStatus::Expired,
        "first is {:?}",
        first_agent.status()
    );
    let locks = setup
        .client
        .list_locks("", Consistency::Linearizable)
        .await?;
    ensure!(
        locks
            .locks
            .iter()
            .all(|l| l.holders.iter().all(|h| h.agent_id != first_id)),
        "the dead worker still holds locks: {locks:?}"
    );
    let lines = lines(&log);
    ensure!(
        lines.iter().any(|l| l == "start migrate first 1"),
        "{lines:?}"
    );
    ensure!(
        lines.iter().any(|l| l == "start migrate second 2"),
        "{lines:?}"
    );
    ensure!(lines.iter().any(|l| l == "end migrate second"), "{lines:?}");
    drop(orphans);

    let status = second.terminate().await?;
    ensure!(
        status.success(),
        "second exited with {status}:\n{}",
        second.log()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_worker_cannot_complete_its_lost_task_and_registers_again() -> Result<()> {
    let _serial = serial().await;
    let setup = Setup::start().await?;
    let (exec, log) = exec(&setup)?;
    let payload = r#"if [ "$PERCY_AGENT_NAME" = sleeper ]; then sleep 2; fi
echo "done by $PERCY_AGENT_NAME""#;
    let mut sleeper = setup.worker("sleeper", &exec, &["--capabilities", "io"])?;
    setup
        .client
        .submit_task(spec("copy", &["io"], &[], &[], payload))
        .await?;
    let held = eventually("sleeper to start copy", SETTLE, || async {
        let task = setup.task("copy").await?;
        let started = lines(&log).iter().any(|l| l == "start copy sleeper 1");
        Ok((started && task.status() == TaskStatus::Working).then_some(task))
    })
    .await?;
    let (old_agent, old_token) = (held.assignee, held.claim_token);
    sleeper.signal(libc::SIGSTOP)?;

    let mut helper = setup.worker("helper", &exec, &["--capabilities", "io"])?;
    let done = eventually("helper to complete copy", SETTLE, || async {
        let task = setup.task("copy").await?;
        Ok((task.status() == TaskStatus::Completed).then_some(task))
    })
    .await?;
    let helper_id = setup
        .active_agent("helper")
        .await?
        .context("helper is not active")?
        .id;
    ensure!(
        done.assignee == helper_id,
        "completed by {}, not helper {helper_id}",
        done.assignee
    );
    ensure!(
        done.result.as_ref().map(|r| r.summary.as_str()) == Some("done by helper"),
        "{done:?}"
    );

    // What the sleeper will try when it wakes up is refused.
    let stale = setup
        .client
        .complete_task("copy", old_agent, old_token, TaskResult::default())
        .await;
    ensure!(
        stale
            .as_ref()
            .is_err_and(|e| percy_client::code_name(e.code()) == "FAILED_PRECONDITION"),
        "a stale token was not refused: {stale:?}"
    );

    sleeper.signal(libc::SIGCONT)?;
    let again = eventually("sleeper to register again", SETTLE, || async {
        Ok(setup
            .active_agent("sleeper")
            .await?
            .filter(|a| a.id != old_agent))
    })
    .await?;
    ensure!(again.id > old_agent);
    let log_text = eventually("sleeper to drop the lost attempt", SETTLE, || async {
        let text = sleeper.log();
        Ok((text.contains("lost task") || text.contains("abandoned task")).then_some(text))
    })
    .await?;
    ensure!(
        !log_text.contains("completed task"),
        "the sleeper claims it completed:\n{log_text}"
    );
    let after = setup.task("copy").await?;
    ensure!(
        after.assignee == helper_id && after.status() == TaskStatus::Completed,
        "{after:?}"
    );

    for worker in [&mut sleeper, &mut helper] {
        let status = worker.terminate().await?;
        ensure!(
            status.success(),
            "{} exited with {status}:\n{}",
            worker.name,
            worker.log()
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_are_retried_to_the_limit_then_cancel_dependents_and_timeouts_kill() -> Result<()>
{
    let _serial = serial().await;
    let setup = Setup::start().await?;
    let (exec, log) = exec(&setup)?;
    let mut worker = setup.worker(
        "fixer",
        &exec,
        &["--capabilities", "z", "--max-concurrent", "2"],
    )?;

    let mut flaky = spec("flaky", &["z"], &[], &[], "echo boom >&2; exit 3");
    flaky.max_attempts = 2;
    let mut hang = spec("hang", &["z"], &[], &[], "sleep 60");
    hang.max_attempts = 1;
    hang.timeout_ms = 1_000;
    let plan = vec![
        flaky,
        spec("after", &["z"], &[], &["flaky"], STEP),
        spec("after-after", &["z"], &[], &["after"], STEP),
        hang,
    ];
    setup.client.submit_plan("fragile", plan).await?;

    let failed = eventually("flaky to fail for good", SETTLE, || async {
        let task = setup.task("flaky").await?;
        Ok((task.status() == TaskStatus::Failed).then_some(task))
    })
    .await?;
    ensure!(failed.attempts == 2, "{} attempts", failed.attempts);
    ensure!(
        failed.error.contains("exit code 3") && failed.error.contains("boom"),
        "error: {}",
        failed.error
    );
    for id in ["after", "after-after"] {
        let task = setup.task(id).await?;
        ensure!(
            task.status() == TaskStatus::Cancelled,
            "{id} is {:?}",
            task.status()
        );
        ensure!(
            task.error.contains("flaky"),
            "{id}'s reason does not name flaky: {}",
            task.error
        );
    }
    let starts = entries(&lines(&log), "start");
    let runs = |id: &str| starts.iter().filter(|(t, _, _)| t == id).count();
    ensure!(
        runs("flaky") == 2 && runs("after") == 0 && runs("after-after") == 0,
        "{starts:?}"
    );

    let timed_out = eventually("hang to time out", SETTLE, || async {
        let task = setup.task("hang").await?;
        Ok((task.status() == TaskStatus::Failed).then_some(task))
    })
    .await?;
    ensure!(
        timed_out.error.contains("timed out after 1s"),
        "error: {}",
        timed_out.error
    );

    // Steering messages reach the worker's inbox file.
    let agent = setup
        .active_agent("fixer")
        .await?
        .context("fixer is not active")?;
    setup
        .client
        .send_message("ops", agent.id, "use the staging db")
        .await?;
    setup
        .client
        .send_message("ops", BROADCAST, "freeze at 5pm")
        .await?;
    let inbox = setup.path("inbox").join("fixer.inbox");
    eventually(
        "the messages in the inbox",
        Duration::from_secs(30),
        || async {
            let lines = lines(&inbox);
            Ok(
                (lines.iter().any(|l| l.ends_with("ops: use the staging db"))
                    && lines.iter().any(|l| l.ends_with("ops: freeze at 5pm")))
                .then_some(()),
            )
        },
    )
    .await?;

    // SIGTERM while a task runs: it gets the grace period, then is killed and failed, and
    // the worker still exits 0 after deregistering.
    let mut marathon = spec("marathon", &["z"], &[], &[], "sleep 60");
    marathon.max_attempts = 1;
    setup.client.submit_task(marathon).await?;
    eventually("marathon to start", SETTLE, || async {
        Ok(lines(&log)
            .iter()
            .any(|l| l == "start marathon fixer 1")
            .then_some(()))
    })
    .await?;
    let status = worker.terminate().await?;
    ensure!(
        status.success(),
        "fixer exited with {status}:\n{}",
        worker.log()
    );
    let marathon = setup.task("marathon").await?;
    ensure!(
        marathon.status() == TaskStatus::Failed
            && marathon
                .error
                .contains("killed after the grace period of 5s"),
        "marathon is {:?}: {}",
        marathon.status(),
        marathon.error
    );
    ensure!(!lines(&log).iter().any(|l| l == "end marathon fixer"));
    let leftover: BTreeSet<String> = setup
        .client
        .list_agents(false, Consistency::Linearizable)
        .await?
        .agents
        .into_iter()
        .map(|a| a.name)
        .collect();
    ensure!(leftover.is_empty(), "{leftover:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_restarted_under_its_name_gives_up_the_dead_run_s_task_and_reruns_it() -> Result<()>
{
    let _serial = serial().await;
    let setup = Setup::start().await?;
    let (exec, log) = exec(&setup)?;
    let pgids = setup.path("pgids");
    // The first run sleeps long; the rerun is quick.
    let payload = format!(
        r#"read -r _ _ _ _ pgrp _ < /proc/$$/stat; echo "$pgrp" >> {pgids}
if [ "$PERCY_TASK_ATTEMPT" = 1 ]; then sleep 30; fi"#,
        pgids = pgids.display()
    );
    let mut phoenix = setup.worker("phoenix", &exec, &["--capabilities", "fire"])?;
    setup
        .client
        .submit_task(spec("rise", &["fire"], &[], &[], &payload))
        .await?;
    eventually("phoenix to start rise", SETTLE, || async {
        Ok(lines(&log)
            .iter()
            .any(|l| l == "start rise phoenix 1")
            .then_some(()))
    })
    .await?;
    let agent_id = setup
        .active_agent("phoenix")
        .await?
        .context("phoenix is not active")?
        .id;
    phoenix.kill()?;
    let orphans = GroupGuard(
        lines(&pgids)
            .iter()
            .filter_map(|l| l.trim().parse().ok())
            .collect(),
    );

    // Back before its TTL ran out: the cluster hands it the same agent.
    let mut reborn = setup.worker("phoenix", &exec, &["--capabilities", "fire"])?;
    let done = eventually("rise to complete", SETTLE, || async {
        let task = setup.task("rise").await?;
        Ok((task.status() == TaskStatus::Completed).then_some(task))
    })
    .await?;
    ensure!(
        done.assignee == agent_id,
        "rerun by agent {}, expected the adopted {agent_id}",
        done.assignee
    );
    ensure!(done.attempts == 2, "{} attempts", done.attempts);
    ensure!(
        lines(&log).iter().any(|l| l == "start rise phoenix 2"),
        "{:?}",
        lines(&log)
    );
    ensure!(
        reborn
            .log()
            .contains("gave up the tasks of the previous run"),
        "{}",
        reborn.log()
    );
    drop(orphans);
    let status = reborn.terminate().await?;
    ensure!(
        status.success(),
        "phoenix exited with {status}:\n{}",
        reborn.log()
    );
    Ok(())
}
