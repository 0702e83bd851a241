//! The task encoding is the one snapshots and log entries have always used: a snapshot written
//! by the build before the compact task layout (`fixtures/tasks-before-compact-layout.snapshot`,
//! made by [`regenerate_fixture`] at that commit) restores with every field intact, and encodes
//! again to the very same bytes.

use std::collections::{BTreeMap, BTreeSet};

use percy_statemachine::{Command, Op, Outcome, StateMachine, TaskResult, TaskSpec};

const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/tasks-before-compact-layout.snapshot"
);

/// Every kind of task field set: plain and rich tasks, a plan with a dependency, a completed
/// task with a result, a failed attempt's error, a cancellation that cascaded.
fn machine_with_every_kind_of_task() -> StateMachine {
    let mut sm = StateMachine::new();
    let mut revision = 0;
    let mut apply = |sm: &mut StateMachine, op: Op| {
        revision += 1;
        let applied = sm.apply(revision, 1_000 + revision, Command::new(op));
        applied.response.expect("the fixture's commands succeed")
    };
    let agent = match apply(
        &mut sm,
        Op::RegisterAgent {
            name: "builder".into(),
            node: "n1".into(),
            capabilities: BTreeSet::from(["rust".to_string(), "gpu".to_string()]),
            labels: BTreeMap::from([("os".to_string(), "linux".to_string())]),
            max_concurrent: 4,
            ttl_ms: 0,
        },
    ) {
        Outcome::AgentRegistered { agent, .. } => agent.id,
        other => panic!("unexpected {other:?}"),
    };
    apply(
        &mut sm,
        Op::SubmitTask(TaskSpec {
            id: Some("plain".into()),
            title: "a plain task".into(),
            ..TaskSpec::default()
        }),
    );
    apply(
        &mut sm,
        Op::SubmitTask(TaskSpec {
            id: Some("rich".into()),
            title: "a rich task".into(),
            description: "with every field".into(),
            payload: vec![1, 2, 3],
            requires: BTreeSet::from(["rust".to_string()]),
            selector: BTreeMap::from([("os".to_string(), "linux".to_string())]),
            priority: 5,
            max_attempts: 2,
            timeout_ms: Some(60_000),
            ..TaskSpec::default()
        }),
    );
    apply(
        &mut sm,
        Op::SubmitPlan {
            plan_id: Some("p1".into()),
            tasks: vec![
                TaskSpec {
                    id: Some("p1-a".into()),
                    title: "first".into(),
                    ..TaskSpec::default()
                },
                TaskSpec {
                    id: Some("p1-b".into()),
                    title: "second".into(),
                    depends_on: vec!["p1-a".into()],
                    ..TaskSpec::default()
                },
                TaskSpec {
                    id: Some("p1-c".into()),
                    title: "on a gpu".into(),
                    requires: BTreeSet::from(["gpu".to_string()]),
                    ..TaskSpec::default()
                },
            ],
        },
    );
    let claim = |sm: &mut StateMachine,
                 id: &str,
                 apply: &mut dyn FnMut(&mut StateMachine, Op) -> Outcome| {
        match apply(
            sm,
            Op::ClaimTask {
                task_id: id.into(),
                agent_id: agent,
                expected_revision: None,
            },
        ) {
            Outcome::TaskClaimed(Some(task)) => task.claim_token.expect("a claim token"),
            other => panic!("unexpected {other:?}"),
        }
    };
    let token = claim(&mut sm, "rich", &mut apply);
    apply(
        &mut sm,
        Op::CompleteTask {
            task_id: "rich".into(),
            agent_id: agent,
            claim_token: token,
            result: TaskResult {
                summary: "done".into(),
                branch: Some("percy/rich".into()),
                exit_code: Some(0),
                output_tail: "ok\n".into(),
            },
        },
    );
    let token = claim(&mut sm, "plain", &mut apply);
    apply(
        &mut sm,
        Op::FailTask {
            task_id: "plain".into(),
            agent_id: agent,
            claim_token: token,
            error: "boom".into(),
        },
    );
    claim(&mut sm, "p1-c", &mut apply);
    apply(
        &mut sm,
        Op::CancelTask {
            task_id: "p1-a".into(),
            reason: "no longer needed".into(),
        },
    );
    sm
}

/// Writes the fixture. Run once, at the commit before the compact layout:
/// `cargo test -p percy-statemachine --test task_encoding -- --ignored regenerate_fixture`.
#[test]
#[ignore]
fn regenerate_fixture() {
    std::fs::write(FIXTURE, machine_with_every_kind_of_task().snapshot()).unwrap();
}

#[test]
fn a_snapshot_from_before_the_compact_layout_restores_and_encodes_the_same() {
    let old = std::fs::read(FIXTURE).expect("the fixture");
    let restored = StateMachine::restore(&old).expect("an old snapshot restores");
    assert_eq!(
        restored.snapshot(),
        old,
        "the task encoding changed: old snapshots would no longer read as written"
    );
    assert_eq!(restored, machine_with_every_kind_of_task());

    let rich = restored.task("rich").expect("task rich");
    assert_eq!(rich.title, "a rich task");
    assert_eq!(rich.description(), "with every field");
    assert_eq!(rich.payload(), [1, 2, 3]);
    assert_eq!(rich.requires(), &BTreeSet::from(["rust".to_string()]));
    assert_eq!(
        rich.selector(),
        &BTreeMap::from([("os".to_string(), "linux".to_string())])
    );
    assert_eq!((rich.priority, rich.max_attempts), (5, 2));
    assert_eq!(rich.timeout_ms(), Some(60_000));
    let result = rich.result().expect("rich's result");
    assert_eq!(
        (
            result.summary.as_str(),
            result.branch.as_deref(),
            result.exit_code
        ),
        ("done", Some("percy/rich"), Some(0))
    );
    assert_eq!(restored.task("plain").and_then(|t| t.error()), Some("boom"));
    let second = restored.task("p1-b").expect("task p1-b");
    assert_eq!(second.depends_on(), ["p1-a"]);
    assert_eq!(second.plan_id(), Some("p1"));
    assert!(second
        .error()
        .is_some_and(|error| error.contains("p1-a was cancelled")));
    let gpu = restored.task("p1-c").expect("task p1-c");
    assert!(gpu.assignee.is_some() && gpu.requires().contains("gpu"));
}
