//! Entry points for fuzzing what the HTTP/JSON API decodes (feature `fuzzing`, used by
//! `tests/fuzz` through `crate::fuzzing`): the JSON request bodies, and GitHub webhook
//! deliveries. Each takes arbitrary bytes and must return: an error is fine, a panic, a hang
//! or an unbounded allocation is a bug.

use std::collections::BTreeMap;

use percy_statemachine::limits::{MAX_DESCRIPTION_LEN, MAX_NAME_LEN};
use percy_statemachine::{validate, Op};

use super::{agents, config, github, locks, messages, plans, signature, tasks};
use crate::convert::{lock_mode_from_proto, task_spec_from_proto};

/// A JSON request body: the first byte picks the endpoint, the rest is the body. Decoded as
/// `JsonBody` does, then turned into the command the endpoint's gRPC handler would propose
/// and validated, for the bodies that carry more than ids.
pub fn http_body(bytes: &[u8]) {
    let Some((&kind, body)) = bytes.split_first() else {
        return;
    };
    let op = match kind % 10 {
        0 => serde_json::from_slice::<tasks::SubmitTask>(body)
            .ok()
            .map(|t| Op::SubmitTask(task_spec_from_proto(t.into_proto()))),
        1 => serde_json::from_slice::<plans::SubmitPlan>(body)
            .ok()
            .map(|p| Op::SubmitPlan {
                plan_id: (!p.plan_id.is_empty()).then_some(p.plan_id),
                tasks: p
                    .tasks
                    .into_iter()
                    .map(|t| task_spec_from_proto(t.into_proto()))
                    .collect(),
            }),
        2 => serde_json::from_slice::<locks::Acquire>(body)
            .ok()
            .and_then(|a| {
                let mode = lock_mode_from_proto(a.mode.to_proto().into()).ok()?;
                Some(Op::AcquireLocks {
                    agent_id: a.agent_id,
                    paths: a.paths,
                    mode,
                    task_id: (!a.task_id.is_empty()).then_some(a.task_id),
                    ttl_ms: (a.ttl_ms > 0).then_some(a.ttl_ms),
                    wait_ms: (a.wait_ms > 0).then_some(a.wait_ms),
                })
            }),
        3 => serde_json::from_slice::<locks::Release>(body)
            .ok()
            .map(|r| Op::ReleaseLocks {
                agent_id: r.agent_id,
                paths: r.paths,
            }),
        4 => serde_json::from_slice::<config::Put>(body)
            .ok()
            .map(|p| Op::PutConfig {
                key: "key".to_owned(),
                value: p.value.into_bytes(),
                expected_revision: p.expected_revision,
            }),
        5 => decoded::<agents::RegisterAgent>(body),
        6 => decoded::<messages::Send>(body),
        7 => decoded::<tasks::ClaimTask>(body),
        8 => decoded::<tasks::CompleteTask>(body),
        _ => decoded::<tasks::FailTask>(body).or_else(|| decoded::<tasks::StartTask>(body)),
    };
    if let Some(op) = op {
        let _ = validate(&op);
    }
}

/// Only the decoding: these bodies carry ids and strings the gRPC handler checks against the
/// state, not a command of their own.
fn decoded<T: serde::de::DeserializeOwned>(body: &[u8]) -> Option<Op> {
    let _ = serde_json::from_slice::<T>(body);
    None
}

/// The secret the fuzzed deliveries are checked against.
const SECRET: &[u8] = b"fuzzing-secret";
/// The label that makes an issue a task.
const TRIGGER_LABEL: &str = "percy";

/// A GitHub webhook delivery: the first line is the `X-Hub-Signature-256` value, the rest
/// the body. The signature check runs on it; then, whatever its answer (a fuzzer cannot
/// forge an HMAC, and the parser behind it must hold up on its own), the `issues` body is
/// decoded and turned into its task, which must fit the limits a task has.
pub fn github_webhook(bytes: &[u8]) {
    let (header, body) = match bytes.iter().position(|&b| b == b'\n') {
        Some(at) => (&bytes[..at], &bytes[at + 1..]),
        None => (&[][..], bytes),
    };
    let header = std::str::from_utf8(header).ok();
    let _ = signature::verify(SECRET, body, header);
    let capabilities = BTreeMap::from([
        ("percy".to_owned(), "rust".to_owned()),
        ("docs".to_owned(), "writing".to_owned()),
    ]);
    let Ok(Some(spec)) = github::issue_task_spec(body, TRIGGER_LABEL, &capabilities) else {
        return;
    };
    // The webhook cuts GitHub's longer fields to fit; a cut that did not would turn every
    // such issue into a refused delivery.
    assert!(spec.id.len() <= MAX_NAME_LEN, "task id over the limit");
    assert!(spec.title.len() <= MAX_NAME_LEN, "title over the limit");
    assert!(
        spec.description.len() <= MAX_DESCRIPTION_LEN,
        "description over the limit"
    );
    let _ = validate(&Op::SubmitTask(task_spec_from_proto(spec)));
}
