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
    }
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
        description: t.description.clone(),
        payload: t.payload.clone(),
        requires: t.requires.iter().cloned().collect(),
        selector: t.selector.clone().into_iter().collect(),
        priority: t.priority,
        depends_on: t.depends_on.clone(),
        plan_id: t.plan_id.clone().unwrap_or_default(),
        status: task_status_to_proto(t.status).into(),
        assignee: t.assignee.unwrap_or(0),
        claim_token: t.claim_token.unwrap_or(0),
        attempts: t.attempts,
        max_attempts: t.max_attempts,
        timeout_ms: t.timeout_ms.unwrap_or(0),
        result: t.result.as_ref().map(task_result_to_proto),
        error: t.error.clone().unwrap_or_default(),
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
