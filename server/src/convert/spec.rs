//! Protobuf request parts → state machine inputs. Unknown enum values are refused here (the
//! only validation this module does), everything else is checked by the state machine's
//! stateless `validate` at the API edge.

use percy_proto::v1 as pb;
use percy_statemachine as sm;
use tonic::Status;

use super::{non_empty, non_zero};

pub fn task_spec_from_proto(s: pb::TaskSpec) -> sm::TaskSpec {
    sm::TaskSpec {
        id: non_empty(s.id),
        title: s.title,
        description: s.description,
        payload: s.payload,
        requires: s.requires.into_iter().collect(),
        selector: s.selector.into_iter().collect(),
        priority: s.priority,
        depends_on: s.depends_on,
        max_attempts: s.max_attempts,
        timeout_ms: non_zero(s.timeout_ms),
    }
}

pub fn task_result_from_proto(r: pb::TaskResult) -> sm::TaskResult {
    sm::TaskResult {
        summary: r.summary,
        branch: non_empty(r.branch),
        exit_code: r.exit_code,
        output_tail: r.output_tail,
    }
}

/// `None` for `TASK_STATUS_UNSPECIFIED` (no filter).
pub fn task_status_from_proto(status: i32) -> Result<Option<sm::TaskStatus>, Status> {
    let status = pb::TaskStatus::try_from(status)
        .map_err(|_| Status::invalid_argument(format!("unknown task status {status}")))?;
    Ok(match status {
        pb::TaskStatus::Unspecified => None,
        pb::TaskStatus::Blocked => Some(sm::TaskStatus::Blocked),
        pb::TaskStatus::Ready => Some(sm::TaskStatus::Ready),
        pb::TaskStatus::Claimed => Some(sm::TaskStatus::Claimed),
        pb::TaskStatus::Working => Some(sm::TaskStatus::Working),
        pb::TaskStatus::Completed => Some(sm::TaskStatus::Completed),
        pb::TaskStatus::Failed => Some(sm::TaskStatus::Failed),
        pb::TaskStatus::Cancelled => Some(sm::TaskStatus::Cancelled),
    })
}

pub fn lock_mode_from_proto(mode: i32) -> Result<sm::LockMode, Status> {
    match pb::LockMode::try_from(mode) {
        Ok(pb::LockMode::Exclusive) => Ok(sm::LockMode::Exclusive),
        Ok(pb::LockMode::Shared) => Ok(sm::LockMode::Shared),
        Err(_) => Err(Status::invalid_argument(format!(
            "unknown lock mode {mode}"
        ))),
    }
}

/// `None` for `DESIRED_STATE_UNSPECIFIED` (keep the current state).
pub fn desired_state_from_proto(desired: i32) -> Result<Option<sm::DesiredState>, Status> {
    match pb::DesiredState::try_from(desired) {
        Ok(pb::DesiredState::Unspecified) => Ok(None),
        Ok(pb::DesiredState::Running) => Ok(Some(sm::DesiredState::Running)),
        Ok(pb::DesiredState::Stopped) => Ok(Some(sm::DesiredState::Stopped)),
        Err(_) => Err(Status::invalid_argument(format!(
            "unknown desired state {desired}"
        ))),
    }
}

pub fn definition_spec_from_proto(d: pb::DefinitionSpec) -> Result<sm::DefinitionSpec, Status> {
    Ok(sm::DefinitionSpec {
        name: d.name,
        spec_json: d.spec_json,
        desired: desired_state_from_proto(d.desired)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_and_zero_mean_absent() {
        let spec = task_spec_from_proto(pb::TaskSpec {
            title: "t".into(),
            ..Default::default()
        });
        assert_eq!(spec.id, None);
        assert_eq!(spec.timeout_ms, None);
        let spec = task_spec_from_proto(pb::TaskSpec {
            id: "a".into(),
            timeout_ms: 5,
            ..Default::default()
        });
        assert_eq!(spec.id.as_deref(), Some("a"));
        assert_eq!(spec.timeout_ms, Some(5));
    }

    #[test]
    fn unknown_enum_values_are_invalid_arguments() {
        assert_eq!(
            lock_mode_from_proto(42).unwrap_err().code(),
            tonic::Code::InvalidArgument
        );
        assert_eq!(
            task_status_from_proto(42).unwrap_err().code(),
            tonic::Code::InvalidArgument
        );
        assert_eq!(task_status_from_proto(0).unwrap(), None);
        assert_eq!(
            desired_state_from_proto(2).unwrap(),
            Some(sm::DesiredState::Stopped)
        );
    }
}
