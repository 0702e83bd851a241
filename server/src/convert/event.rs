//! State machine events → protobuf watch events.

use percy_proto::v1 as pb;
use percy_statemachine as sm;

use super::entity::{
    agent_to_proto, config_to_proto, definition_to_proto, lock_to_proto, message_to_proto,
    task_to_proto,
};

fn entity_kind_to_proto(kind: sm::EntityKind) -> pb::EntityKind {
    match kind {
        sm::EntityKind::Agent => pb::EntityKind::Agent,
        sm::EntityKind::Task => pb::EntityKind::Task,
        sm::EntityKind::Lock => pb::EntityKind::Lock,
        sm::EntityKind::Config => pb::EntityKind::Config,
        sm::EntityKind::Definition => pb::EntityKind::Definition,
        sm::EntityKind::Message => pb::EntityKind::Message,
        sm::EntityKind::DefinitionRun => pb::EntityKind::DefinitionRun,
    }
}

/// `None` for `ENTITY_KIND_UNSPECIFIED` ("all kinds") and for values this build does not know.
pub fn entity_kind_from_proto(kind: i32) -> Option<sm::EntityKind> {
    match pb::EntityKind::try_from(kind).ok()? {
        pb::EntityKind::Unspecified => None,
        pb::EntityKind::Agent => Some(sm::EntityKind::Agent),
        pb::EntityKind::Task => Some(sm::EntityKind::Task),
        pb::EntityKind::Lock => Some(sm::EntityKind::Lock),
        pb::EntityKind::Config => Some(sm::EntityKind::Config),
        pb::EntityKind::Definition => Some(sm::EntityKind::Definition),
        pb::EntityKind::Message => Some(sm::EntityKind::Message),
        pb::EntityKind::DefinitionRun => Some(sm::EntityKind::DefinitionRun),
    }
}

pub fn event_to_proto(e: &sm::Event) -> pb::Event {
    use pb::event::Value;
    let value = e.value.as_ref().map(|v| match v {
        sm::EntityValue::Agent(a) => Value::Agent(agent_to_proto(a)),
        sm::EntityValue::Task(t) => Value::Task(task_to_proto(t)),
        sm::EntityValue::Lock(l) => Value::Lock(lock_to_proto(l)),
        sm::EntityValue::Config(c) => Value::Config(config_to_proto(c)),
        sm::EntityValue::Definition(d) => Value::Definition(definition_to_proto(d)),
        sm::EntityValue::Message(m) => Value::Message(message_to_proto(m)),
        sm::EntityValue::DefinitionRun(r) => {
            Value::DefinitionRun(super::run::definition_run_to_proto(r))
        }
    });
    pb::Event {
        revision: e.revision,
        kind: entity_kind_to_proto(e.kind).into(),
        key: e.key.clone(),
        deleted: e.value.is_none(),
        value,
    }
}
