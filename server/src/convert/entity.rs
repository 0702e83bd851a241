//! State machine entities → their protobuf form (what the API returns and watch streams carry).

use percy_proto::v1 as pb;
use percy_statemachine as sm;

pub fn agent_status_to_proto(status: sm::AgentStatus) -> pb::AgentStatus {
    match status {
        sm::AgentStatus::Active => pb::AgentStatus::Active,
        sm::AgentStatus::Expired => pb::AgentStatus::Expired,
        sm::AgentStatus::Deregistered => pb::AgentStatus::Deregistered,
    }
}

pub fn agent_to_proto(a: &sm::Agent) -> pb::Agent {
    pb::Agent {
        id: a.id,
        name: a.name.clone(),
        node: a.node.clone(),
        capabilities: a.capabilities.iter().cloned().collect(),
        labels: a.labels.clone().into_iter().collect(),
        max_concurrent: a.max_concurrent,
        ttl_ms: a.ttl_ms,
        status: agent_status_to_proto(a.status).into(),
        registered_at_ms: a.registered_at_ms,
        last_seen_ms: a.last_seen_ms,
        create_revision: a.create_revision,
        revision: a.revision,
        load: None,
    }
}

/// An agent's load on the wire; `reported_at_ms` is when it was reported.
pub fn agent_load_to_proto(load: &sm::AgentLoad, reported_at_ms: u64) -> pb::AgentLoad {
    pb::AgentLoad {
        load_avg_1m: load.load_milli.map(|m| f64::from(m) / 1000.0),
        cores: load.cores,
        mem_used_bytes: load.mem_used_bytes,
        mem_total_bytes: load.mem_total_bytes,
        running_tasks: load.running_tasks,
        running_execs: load.running_execs,
        reported_at_ms,
    }
}

/// Why a reported load is refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BadLoad {
    #[error("load_avg_1m must be a number between 0 and {MAX_LOAD_AVG}, not {0}")]
    LoadAverage(String),
    #[error("cores must be at least 1 when given")]
    NoCores,
    #[error("mem_used_bytes ({used}) is more than mem_total_bytes ({total})")]
    Memory { used: u64, total: u64 },
}

/// The highest load average a heartbeat may report (it is kept × 1000 in a `u32`).
pub const MAX_LOAD_AVG: f64 = 1_000_000.0;

/// A heartbeat's load as the state machine keeps it (load average × 1000, rounded).
pub fn agent_load_from_proto(load: &pb::AgentLoad) -> Result<sm::AgentLoad, BadLoad> {
    let load_milli = match load.load_avg_1m {
        None => None,
        Some(avg) if avg.is_finite() && (0.0..=MAX_LOAD_AVG).contains(&avg) => {
            // In range, so the product fits a u32.
            Some((avg * 1000.0).round() as u32)
        }
        Some(avg) => return Err(BadLoad::LoadAverage(avg.to_string())),
    };
    if load.cores == Some(0) {
        return Err(BadLoad::NoCores);
    }
    if let (Some(used), Some(total)) = (load.mem_used_bytes, load.mem_total_bytes) {
        if used > total {
            return Err(BadLoad::Memory { used, total });
        }
    }
    Ok(sm::AgentLoad {
        load_milli,
        cores: load.cores,
        mem_used_bytes: load.mem_used_bytes,
        mem_total_bytes: load.mem_total_bytes,
        running_tasks: load.running_tasks,
        running_execs: load.running_execs,
    })
}

fn task_status_to_proto(status: sm::TaskStatus) -> pb::TaskStatus {
    match status {
        sm::TaskStatus::Blocked => pb::TaskStatus::Blocked,
        sm::TaskStatus::Ready => pb::TaskStatus::Ready,
        sm::TaskStatus::Claimed => pb::TaskStatus::Claimed,
        sm::TaskStatus::Working => pb::TaskStatus::Working,
        sm::TaskStatus::Completed => pb::TaskStatus::Completed,
        sm::TaskStatus::Failed => pb::TaskStatus::Failed,
        sm::TaskStatus::Cancelled => pb::TaskStatus::Cancelled,
    }
}

fn task_result_to_proto(r: &sm::TaskResult) -> pb::TaskResult {
    pb::TaskResult {
        summary: r.summary.clone(),
        branch: r.branch.clone().unwrap_or_default(),
        exit_code: r.exit_code,
        output_tail: r.output_tail.clone(),
    }
}

pub fn task_to_proto(t: &sm::Task) -> pb::Task {
    pb::Task {
        id: t.id.clone(),
        title: t.title.clone(),
        description: t.description().to_owned(),
        payload: t.payload().to_vec(),
        requires: t.requires().iter().cloned().collect(),
        selector: t
            .selector()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        priority: t.priority,
        depends_on: t.depends_on().to_vec(),
        plan_id: t.plan_id().unwrap_or_default().to_owned(),
        status: task_status_to_proto(t.status).into(),
        assignee: t.assignee.unwrap_or(0),
        claim_token: t.claim_token.unwrap_or(0),
        attempts: t.attempts,
        max_attempts: t.max_attempts,
        timeout_ms: t.timeout_ms().unwrap_or(0),
        result: t.result().map(task_result_to_proto),
        error: t.error().unwrap_or_default().to_owned(),
        created_at_ms: t.created_at_ms,
        updated_at_ms: t.updated_at_ms,
        create_revision: t.create_revision,
        revision: t.revision,
    }
}

fn lock_mode_to_proto(mode: sm::LockMode) -> pb::LockMode {
    match mode {
        sm::LockMode::Exclusive => pb::LockMode::Exclusive,
        sm::LockMode::Shared => pb::LockMode::Shared,
    }
}

pub fn lock_grant_to_proto(g: &sm::LockGrant) -> pb::LockGrant {
    pb::LockGrant {
        path: g.path.clone(),
        mode: lock_mode_to_proto(g.mode).into(),
        agent_id: g.agent_id,
        fencing_token: g.fencing_token,
        expires_at_ms: g.expires_at_ms.unwrap_or(0),
    }
}

pub fn lock_to_proto(l: &sm::Lock) -> pb::Lock {
    pb::Lock {
        path: l.path.clone(),
        mode: lock_mode_to_proto(l.mode).into(),
        holders: l
            .holders
            .iter()
            .map(|h| pb::LockHolder {
                agent_id: h.agent_id,
                fencing_token: h.fencing_token,
                task_id: h.task_id.clone().unwrap_or_default(),
                acquired_at_ms: h.acquired_at_ms,
                expires_at_ms: h.expires_at_ms.unwrap_or(0),
            })
            .collect(),
        revision: l.revision,
    }
}

pub fn lock_waiter_to_proto(w: &sm::LockWaiter) -> pb::LockWaiter {
    pb::LockWaiter {
        queued_revision: w.queued_revision,
        agent_id: w.agent_id,
        paths: w.paths.clone(),
        mode: lock_mode_to_proto(w.mode).into(),
        wait_deadline_ms: w.wait_deadline_ms,
    }
}

pub fn config_to_proto(c: &sm::ConfigEntry) -> pb::ConfigEntry {
    pb::ConfigEntry {
        key: c.key.clone(),
        value: c.value.clone(),
        create_revision: c.create_revision,
        revision: c.revision,
        version: c.version,
    }
}

fn desired_state_to_proto(d: sm::DesiredState) -> pb::DesiredState {
    match d {
        sm::DesiredState::Running => pb::DesiredState::Running,
        sm::DesiredState::Stopped => pb::DesiredState::Stopped,
    }
}

pub fn definition_to_proto(d: &sm::Definition) -> pb::Definition {
    pb::Definition {
        name: d.name.clone(),
        history: d
            .history
            .iter()
            .map(|r| pb::DefinitionRevision {
                id: r.id.clone(),
                spec_json: r.spec_json.clone(),
                revision: r.revision,
                applied_at_ms: r.applied_at_ms,
            })
            .collect(),
        desired: desired_state_to_proto(d.desired).into(),
        create_revision: d.create_revision,
        revision: d.revision,
    }
}

pub fn message_to_proto(m: &sm::Message) -> pb::Message {
    pb::Message {
        id: m.id,
        from: m.from.clone(),
        to_agent: match m.to {
            sm::Recipient::Agent(id) => id,
            sm::Recipient::Broadcast => 0,
        },
        body: m.body.clone(),
        sent_at_ms: m.sent_at_ms,
    }
}

#[cfg(test)]
mod load_tests {
    use super::*;

    #[test]
    fn a_load_round_trips_and_bad_ones_are_refused() {
        let wire = pb::AgentLoad {
            load_avg_1m: Some(1.25),
            cores: Some(4),
            mem_used_bytes: Some(10),
            mem_total_bytes: Some(20),
            running_tasks: 1,
            running_execs: 2,
            reported_at_ms: 0,
        };
        let kept = agent_load_from_proto(&wire).unwrap();
        assert_eq!(kept.load_milli, Some(1_250));
        assert_eq!(agent_load_to_proto(&kept, 0), wire);
        for bad in [f64::NAN, -1.0, f64::INFINITY, MAX_LOAD_AVG * 2.0] {
            let load = pb::AgentLoad {
                load_avg_1m: Some(bad),
                ..wire
            };
            assert!(agent_load_from_proto(&load).is_err(), "{bad}");
        }
        let no_cores = pb::AgentLoad {
            cores: Some(0),
            ..wire
        };
        assert_eq!(agent_load_from_proto(&no_cores), Err(BadLoad::NoCores));
        let too_much = pb::AgentLoad {
            mem_used_bytes: Some(30),
            ..wire
        };
        assert!(agent_load_from_proto(&too_much).is_err());
    }
}
