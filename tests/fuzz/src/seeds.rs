//! Valid inputs of every target, made with the code under test: where the fuzzer starts.

use percy_server::fuzzing::storage_seeds;
use percy_statemachine::{
    encode_command, Command, DefinitionSpec, LockMode, Op, StateMachine, TaskSpec,
};

fn task(id: &str, depends_on: &[&str]) -> TaskSpec {
    TaskSpec {
        id: Some(id.to_string()),
        title: format!("task {id}"),
        requires: ["rust".to_string()].into(),
        depends_on: depends_on.iter().map(|d| d.to_string()).collect(),
        payload: b"payload".to_vec(),
        ..TaskSpec::default()
    }
}

/// A few commands of every kind that builds state.
fn commands() -> Vec<Command> {
    [
        Op::RegisterAgent {
            name: "builder".into(),
            node: "box".into(),
            capabilities: ["rust".to_string()].into(),
            labels: [("os".to_string(), "linux".to_string())].into(),
            max_concurrent: 2,
            ttl_ms: 60_000,
        },
        Op::SubmitTask(task("t1", &[])),
        Op::SubmitPlan {
            plan_id: Some("p".into()),
            tasks: vec![task("a", &[]), task("b", &["a"])],
        },
        Op::ClaimNext { agent_id: 1 },
        Op::AcquireLocks {
            agent_id: 1,
            paths: vec!["src/lib.rs".into()],
            mode: LockMode::Exclusive,
            task_id: None,
            ttl_ms: Some(30_000),
            wait_ms: None,
        },
        Op::PutConfig {
            key: "app/x".into(),
            value: b"v".to_vec(),
            expected_revision: None,
        },
        Op::ApplyDefinitions {
            definitions: vec![DefinitionSpec {
                name: "reviewer".into(),
                spec_json: r#"{"prompt":"review the diff"}"#.into(),
                desired: None,
            }],
        },
    ]
    .into_iter()
    .map(Command::new)
    .collect()
}

/// A machine that went through [`commands`].
fn machine() -> StateMachine {
    let mut machine = StateMachine::new();
    for (command, revision) in commands().into_iter().zip(1u64..) {
        let _ = machine.apply(revision, 1_000 + revision, command);
    }
    machine
}

/// A named seed input.
pub type Seed = (String, Vec<u8>);

/// (target, its seeds) for every target.
pub fn all() -> Vec<(&'static str, Vec<Seed>)> {
    let commands = commands();
    let image = machine().snapshot();
    let named = |prefix: &str, items: Vec<Vec<u8>>| -> Vec<Seed> {
        items
            .into_iter()
            .enumerate()
            .map(|(i, bytes)| (format!("{prefix}-{i}"), bytes))
            .collect()
    };
    vec![
        (
            "command",
            named("command", commands.iter().map(encode_command).collect()),
        ),
        ("state_image", named("image", vec![image.clone()])),
        (
            "snapshot",
            named("snapshot", vec![storage_seeds::snapshot(&image)]),
        ),
        (
            "log_entry",
            named("entry", vec![storage_seeds::log_entry(commands.clone())]),
        ),
        (
            "wal_segment",
            named(
                "segment",
                vec![storage_seeds::wal_segment(
                    commands.iter().map(|c| vec![c.clone()]).collect(),
                )],
            ),
        ),
        ("request", named("request", requests())),
    ]
}

/// Public API requests: the type byte, then the protobuf encoding.
fn requests() -> Vec<Vec<u8>> {
    use percy_server::fuzzing::proto as pb;
    use prost::Message;
    let spec = pb::TaskSpec {
        id: "t1".into(),
        title: "fix".into(),
        requires: vec!["rust".into()],
        depends_on: vec!["t0".into()],
        ..Default::default()
    };
    let typed = |kind: u8, body: Vec<u8>| [vec![kind], body].concat();
    vec![
        typed(
            0,
            pb::SubmitTaskRequest {
                task: Some(spec.clone()),
                ..Default::default()
            }
            .encode_to_vec(),
        ),
        typed(
            1,
            pb::SubmitPlanRequest {
                plan_id: "p".into(),
                tasks: vec![spec],
                ..Default::default()
            }
            .encode_to_vec(),
        ),
        typed(
            3,
            pb::AcquireLocksRequest {
                agent_id: 1,
                paths: vec!["src/a".into()],
                ..Default::default()
            }
            .encode_to_vec(),
        ),
        typed(
            4,
            pb::PutConfigRequest {
                key: "k".into(),
                value: b"v".to_vec(),
                ..Default::default()
            }
            .encode_to_vec(),
        ),
    ]
}
