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
        (
            "wal_records",
            named(
                "segment",
                vec![storage_seeds::wal_segment(
                    commands.iter().map(|c| vec![c.clone()]).collect(),
                )],
            ),
        ),
        ("request", named("request", requests())),
        ("backup", named("backup", backups(&image))),
        ("plan", named("plan", documents(&[PLAN_TOML, PLAN_YAML]))),
        (
            "manifest",
            named("manifest", documents(&[MANIFEST_TOML, MANIFEST_YAML])),
        ),
        ("http_body", named("body", http_bodies())),
        ("github_webhook", named("delivery", github_deliveries())),
    ]
}

/// A backup file of the seed machine's image, as is (mode byte 0) and with the checksum
/// mended after mutation (1).
fn backups(image: &[u8]) -> Vec<Vec<u8>> {
    use percy_server::fuzzing::proto as pb;
    let header = pb::SnapshotFileHeader {
        cluster_id: "0123456789abcdef0123456789abcdef".into(),
        revision: machine().revision(),
        node_id: 1,
        created_ms: 1_000,
        counts: Some(pb::SnapshotCounts {
            agents: 1,
            tasks: 3,
            ..Default::default()
        }),
    };
    let file = percy_proto::backup::encode(&header, image);
    vec![[vec![0], file.clone()].concat(), [vec![1], file].concat()]
}

const PLAN_TOML: &str = r#"id = "release"

[[tasks]]
id = "build"
title = "Build"
requires = ["rust"]
selector = { os = "linux" }
timeout = "30m"
max_attempts = 2

[[tasks]]
id = "test"
title = "Test"
description = "run the suite"
payload = "cargo test"
depends_on = ["build"]
priority = 5
"#;

const PLAN_YAML: &str = r#"- id: build
  title: Build
  requires: [rust]
  timeout: 90s
- id: test
  title: Test
  depends_on: [build]
  selector: {os: linux}
"#;

const MANIFEST_TOML: &str = r#"[[definitions]]
name = "reviewer"
desired = "stopped"
[definitions.spec]
exec = "review.sh"
slots = 2
"#;

const MANIFEST_YAML: &str = r#"- name: reviewer
  desired: running
  spec:
    exec: claude -p "$PERCY_TASK_TITLE"
    capabilities: [review]
- name: writer
  spec: {exec: write.sh, slots: 1}
"#;

/// TOML (first byte 0) and YAML (1) documents.
fn documents(texts: &[&str; 2]) -> Vec<Vec<u8>> {
    vec![
        [&[0u8][..], texts[0].as_bytes()].concat(),
        [&[1u8][..], texts[1].as_bytes()].concat(),
    ]
}

/// One JSON body per endpoint, behind its kind byte (`http_body`).
fn http_bodies() -> Vec<Vec<u8>> {
    let task = r#"{"id":"t1","title":"fix","description":"d","requires":["rust"],"selector":{"os":"linux"},"priority":1,"depends_on":["t0"],"max_attempts":2,"timeout_ms":1000}"#;
    let bodies = [
        task.to_owned(),
        format!(r#"{{"plan_id":"p","tasks":[{task},{{"title":"second","depends_on":["t1"]}}]}}"#),
        r#"{"agent_id":1,"paths":["src/a"],"mode":"shared","task_id":"t1","ttl_ms":5,"wait_ms":5}"#.to_owned(),
        r#"{"agent_id":1,"paths":["src/a"]}"#.to_owned(),
        r#"{"value":"v","expected_revision":3}"#.to_owned(),
        r#"{"name":"a","node":"n","capabilities":["rust"],"labels":{"os":"linux"},"max_concurrent":2,"ttl_ms":1}"#.to_owned(),
        r#"{"from":"me","to_agent":2,"body":"hello"}"#.to_owned(),
        r#"{"agent_id":1,"expected_revision":4}"#.to_owned(),
        r#"{"agent_id":1,"claim_token":2,"summary":"s","branch":"b","exit_code":0,"output_tail":"o"}"#.to_owned(),
        r#"{"agent_id":1,"claim_token":2,"error":"e"}"#.to_owned(),
    ];
    bodies
        .iter()
        .zip(0u8..)
        .map(|(body, kind)| [&[kind][..], body.as_bytes()].concat())
        .collect()
}

/// `issues` deliveries: a signature line, then the body.
fn github_deliveries() -> Vec<Vec<u8>> {
    let signature = format!("sha256={}", "0".repeat(64));
    let opened = r#"{"action":"opened","issue":{"number":7,"title":"Crash on start","body":"steps","labels":[{"name":"percy"},{"name":"docs"}],"html_url":"https://github.com/o/r/issues/7"},"repository":{"name":"r","owner":{"login":"o"}}}"#;
    let labeled = r#"{"action":"labeled","issue":{"number":8,"title":"t","labels":[{"name":"percy"}]},"repository":{"name":"r","owner":{"login":"o"}}}"#;
    // Longer than a task's title may be, cut inside a two-byte character: the webhook must
    // shorten it on a character boundary.
    let long = format!(
        r#"{{"action":"opened","issue":{{"number":9,"title":"x{}","labels":[{{"name":"percy"}}]}},"repository":{{"name":"r","owner":{{"login":"o"}}}}}}"#,
        "é".repeat(200)
    );
    [opened, labeled, long.as_str()]
        .iter()
        .map(|body| format!("{signature}\n{body}").into_bytes())
        .collect()
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
