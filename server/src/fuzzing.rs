//! Entry points for fuzzing what a node decodes (feature `fuzzing`, used by `tests/fuzz`):
//! the storage formats (`storage::fuzzing`), the public API's requests as the edge turns
//! them into commands, and the HTTP API's JSON bodies and GitHub deliveries
//! (`http::fuzzing`). Each takes arbitrary bytes and must return: an error is fine, a panic,
//! a hang or an unbounded allocation is a bug.

/// The generated API types, for building request seeds.
pub use percy_proto::v1 as proto;

use percy_proto::v1 as pb;
use percy_statemachine::{validate, Op};
use prost::Message;

pub use crate::http::fuzzing::{github_webhook, http_body};
pub use crate::storage::fuzzing::{log_entry, seeds as storage_seeds, snapshot, wal_segment};

use crate::convert::{definition_spec_from_proto, lock_mode_from_proto, task_spec_from_proto};

/// A request of the public API: the first byte picks its type, the rest is its protobuf
/// encoding; decoded, converted and validated as the API edge does before proposing.
pub fn request(bytes: &[u8]) {
    let Some((&kind, body)) = bytes.split_first() else {
        return;
    };
    let op = match kind % 5 {
        0 => pb::SubmitTaskRequest::decode(body)
            .ok()
            .and_then(|r| r.task)
            .map(|spec| Op::SubmitTask(task_spec_from_proto(spec))),
        1 => pb::SubmitPlanRequest::decode(body)
            .ok()
            .map(|r| Op::SubmitPlan {
                plan_id: (!r.plan_id.is_empty()).then_some(r.plan_id),
                tasks: r.tasks.into_iter().map(task_spec_from_proto).collect(),
            }),
        2 => pb::ApplyDefinitionsRequest::decode(body)
            .ok()
            .and_then(|r| {
                let definitions: Result<Vec<_>, _> = r
                    .definitions
                    .into_iter()
                    .map(definition_spec_from_proto)
                    .collect();
                definitions
                    .ok()
                    .map(|definitions| Op::ApplyDefinitions { definitions })
            }),
        3 => pb::AcquireLocksRequest::decode(body).ok().and_then(|r| {
            let mode = lock_mode_from_proto(r.mode).ok()?;
            Some(Op::AcquireLocks {
                agent_id: r.agent_id,
                paths: r.paths,
                mode,
                task_id: None,
                ttl_ms: None,
                wait_ms: None,
            })
        }),
        _ => pb::PutConfigRequest::decode(body)
            .ok()
            .map(|r| Op::PutConfig {
                key: r.key,
                value: r.value,
                expected_revision: None,
            }),
    };
    if let Some(op) = op {
        let _ = validate(&op);
    }
}
