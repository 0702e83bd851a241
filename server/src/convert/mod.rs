//! Conversions between the public protobuf types (`percy_proto::v1`) and the state machine's
//! types. Pure data mapping: no validation beyond what the wire format forces (unknown enum
//! values), no I/O. Validation of the converted commands happens in `crate::api::edge`.

mod entity;
mod event;
mod run;
mod spec;
mod status;

pub use entity::{
    agent_load_from_proto, agent_load_to_proto, agent_status_to_proto, agent_to_proto,
    config_to_proto, definition_to_proto, lock_grant_to_proto, lock_to_proto, lock_waiter_to_proto,
    message_to_proto, task_to_proto,
};
pub use event::{entity_kind_from_proto, event_to_proto};
pub use run::{
    definition_run_to_proto, iteration_report_from_proto, iteration_to_proto,
    steering_message_to_proto,
};
pub use spec::{
    definition_spec_from_proto, desired_state_from_proto, lock_mode_from_proto,
    task_result_from_proto, task_spec_from_proto, task_status_from_proto,
};
pub use status::command_error_to_status;

/// Protobuf uses "" and 0 for "absent"; the state machine uses `Option`.
pub(crate) fn non_empty(s: String) -> Option<String> {
    if s.is_empty() {
        None
    } else {
        Some(s)
    }
}

/// The inverse of [`non_empty`] for numbers: `0` is "none" on the wire.
pub(crate) fn non_zero(v: u64) -> Option<u64> {
    if v == 0 {
        None
    } else {
        Some(v)
    }
}
