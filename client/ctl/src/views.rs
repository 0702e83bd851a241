//! Serializable views of the proto types, for `-o json` and for tables: enums as lowercase
//! names, bytes as text, maps sorted. Every id, revision, claim token and fencing token is
//! kept so that scripts can chain commands.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use percy_client::proto::{
    self, event, AgentStatus, DesiredState, EntityKind, LockMode, ResponseHeader, TaskStatus,
};
use serde::Serialize;

/// Which node answered, and at which revision.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct HeaderView {
    pub node_id: u64,
    pub leader_id: u64,
    pub revision: u64,
    pub forwarded: bool,
}

impl From<Option<ResponseHeader>> for HeaderView {
    fn from(header: Option<ResponseHeader>) -> Self {
        let h = header.unwrap_or_default();
        Self {
            node_id: h.node_id,
            leader_id: h.leader_id,
            revision: h.revision,
            forwarded: h.forwarded,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct AgentView {
    pub id: u64,
    pub name: String,
    pub node: String,
    pub capabilities: Vec<String>,
    pub labels: BTreeMap<String, String>,
    pub max_concurrent: u32,
    pub ttl_ms: u64,
    pub status: String,
    pub registered_at_ms: u64,
    pub last_seen_ms: u64,
    pub create_revision: u64,
    pub revision: u64,
    /// What the agent last reported with its heartbeats (`null`: nothing known).
    pub load: Option<AgentLoadView>,
}

/// An agent's reported load (absent fields: unknown on its platform).
#[derive(Debug, Serialize)]
pub struct AgentLoadView {
    pub load_avg_1m: Option<f64>,
    pub cores: Option<u32>,
    pub mem_used_bytes: Option<u64>,
    pub mem_total_bytes: Option<u64>,
    pub running_tasks: u32,
    pub running_execs: u32,
    pub reported_at_ms: u64,
}

impl From<&proto::AgentLoad> for AgentLoadView {
    fn from(l: &proto::AgentLoad) -> Self {
        Self {
            load_avg_1m: l.load_avg_1m,
            cores: l.cores,
            mem_used_bytes: l.mem_used_bytes,
            mem_total_bytes: l.mem_total_bytes,
            running_tasks: l.running_tasks,
            running_execs: l.running_execs,
            reported_at_ms: l.reported_at_ms,
        }
    }
}

/// The LOAD, CORES, MEM and RUNNING cells of an agent ("-" where unknown).
pub fn load_cells(load: Option<&proto::AgentLoad>) -> [String; 4] {
    let dash = || "-".to_owned();
    let Some(l) = load else {
        return [dash(), dash(), dash(), dash()];
    };
    [
        l.load_avg_1m.map_or_else(dash, |avg| format!("{avg:.2}")),
        l.cores.map_or_else(dash, |c| c.to_string()),
        match (l.mem_used_bytes, l.mem_total_bytes) {
            (Some(used), Some(total)) => format!("{}/{}", bytes(used), bytes(total)),
            (None, Some(total)) => format!("?/{}", bytes(total)),
            (Some(used), None) => bytes(used),
            (None, None) => dash(),
        },
        running_cell(l.running_tasks, l.running_execs),
    ]
}

/// "2 (1 exec)": tasks and execs together, execs named when there are any.
pub fn running_cell(tasks: u32, execs: u32) -> String {
    let total = u64::from(tasks) + u64::from(execs);
    match execs {
        0 => total.to_string(),
        1 => format!("{total} (1 exec)"),
        n => format!("{total} ({n} execs)"),
    }
}

/// A byte count in binary units, one decimal ("1.5G").
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "K", "M", "G", "T"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n}B")
    } else {
        format!("{value:.1}{}", UNITS[unit])
    }
}

impl From<&proto::Agent> for AgentView {
    fn from(a: &proto::Agent) -> Self {
        Self {
            id: a.id,
            name: a.name.clone(),
            node: a.node.clone(),
            capabilities: a.capabilities.clone(),
            labels: a.labels.clone().into_iter().collect(),
            max_concurrent: a.max_concurrent,
            ttl_ms: a.ttl_ms,
            status: agent_status_name(a.status),
            registered_at_ms: a.registered_at_ms,
            last_seen_ms: a.last_seen_ms,
            create_revision: a.create_revision,
            revision: a.revision,
            load: a.load.as_ref().map(AgentLoadView::from),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct TaskView {
    pub id: String,
    pub title: String,
    pub description: String,
    pub payload: String,
    pub requires: Vec<String>,
    pub selector: BTreeMap<String, String>,
    pub priority: i32,
    pub depends_on: Vec<String>,
    pub plan_id: String,
    pub status: String,
    pub assignee: u64,
    pub claim_token: u64,
    pub attempts: u32,
    pub max_attempts: u32,
    pub timeout_ms: u64,
    pub result: Option<ResultView>,
    pub error: String,
    pub created_at_ms: u64,
    pub updated_at_ms: u64,
    pub create_revision: u64,
    pub revision: u64,
}

#[derive(Debug, Serialize)]
pub struct ResultView {
    pub summary: String,
    pub branch: String,
    pub exit_code: Option<i32>,
    pub output_tail: String,
}

impl From<&proto::Task> for TaskView {
    fn from(t: &proto::Task) -> Self {
        Self {
            id: t.id.clone(),
            title: t.title.clone(),
            description: t.description.clone(),
            payload: String::from_utf8_lossy(&t.payload).into_owned(),
            requires: t.requires.clone(),
            selector: t.selector.clone().into_iter().collect(),
            priority: t.priority,
            depends_on: t.depends_on.clone(),
            plan_id: t.plan_id.clone(),
            status: task_status_name(t.status),
            assignee: t.assignee,
            claim_token: t.claim_token,
            attempts: t.attempts,
            max_attempts: t.max_attempts,
            timeout_ms: t.timeout_ms,
            result: t.result.as_ref().map(|r| ResultView {
                summary: r.summary.clone(),
                branch: r.branch.clone(),
                exit_code: r.exit_code,
                output_tail: r.output_tail.clone(),
            }),
            error: t.error.clone(),
            created_at_ms: t.created_at_ms,
            updated_at_ms: t.updated_at_ms,
            create_revision: t.create_revision,
            revision: t.revision,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct GrantView {
    pub path: String,
    pub mode: String,
    pub agent_id: u64,
    pub fencing_token: u64,
    pub expires_at_ms: u64,
}

impl From<&proto::LockGrant> for GrantView {
    fn from(g: &proto::LockGrant) -> Self {
        Self {
            path: g.path.clone(),
            mode: lock_mode_name(g.mode),
            agent_id: g.agent_id,
            fencing_token: g.fencing_token,
            expires_at_ms: g.expires_at_ms,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct LockView {
    pub path: String,
    pub mode: String,
    pub holders: Vec<HolderView>,
    pub revision: u64,
}

#[derive(Debug, Serialize)]
pub struct HolderView {
    pub agent_id: u64,
    pub fencing_token: u64,
    pub task_id: String,
    pub acquired_at_ms: u64,
    pub expires_at_ms: u64,
}

impl From<&proto::Lock> for LockView {
    fn from(l: &proto::Lock) -> Self {
        Self {
            path: l.path.clone(),
            mode: lock_mode_name(l.mode),
            holders: l
                .holders
                .iter()
                .map(|h| HolderView {
                    agent_id: h.agent_id,
                    fencing_token: h.fencing_token,
                    task_id: h.task_id.clone(),
                    acquired_at_ms: h.acquired_at_ms,
                    expires_at_ms: h.expires_at_ms,
                })
                .collect(),
            revision: l.revision,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct WaiterView {
    pub queued_revision: u64,
    pub agent_id: u64,
    pub paths: Vec<String>,
    pub mode: String,
    pub wait_deadline_ms: u64,
}

impl From<&proto::LockWaiter> for WaiterView {
    fn from(w: &proto::LockWaiter) -> Self {
        Self {
            queued_revision: w.queued_revision,
            agent_id: w.agent_id,
            paths: w.paths.clone(),
            mode: lock_mode_name(w.mode),
            wait_deadline_ms: w.wait_deadline_ms,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct ConfigView {
    pub key: String,
    pub value: String,
    pub create_revision: u64,
    pub revision: u64,
    pub version: u64,
}

impl From<&proto::ConfigEntry> for ConfigView {
    fn from(e: &proto::ConfigEntry) -> Self {
        Self {
            key: e.key.clone(),
            value: String::from_utf8_lossy(&e.value).into_owned(),
            create_revision: e.create_revision,
            revision: e.revision,
            version: e.version,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct DefinitionView {
    pub name: String,
    pub desired: String,
    /// The current revision's id (SHA-256 of the canonical spec).
    pub id: String,
    pub spec: serde_json::Value,
    pub history: Vec<DefinitionRevisionView>,
    pub create_revision: u64,
    pub revision: u64,
}

#[derive(Debug, Serialize)]
pub struct DefinitionRevisionView {
    pub id: String,
    pub revision: u64,
    pub applied_at_ms: u64,
}

impl From<&proto::Definition> for DefinitionView {
    fn from(d: &proto::Definition) -> Self {
        let current = d.history.last();
        Self {
            name: d.name.clone(),
            desired: desired_state_name(d.desired),
            id: current.map(|r| r.id.clone()).unwrap_or_default(),
            spec: current
                .and_then(|r| serde_json::from_str(&r.spec_json).ok())
                .unwrap_or(serde_json::Value::Null),
            history: d
                .history
                .iter()
                .map(|r| DefinitionRevisionView {
                    id: r.id.clone(),
                    revision: r.revision,
                    applied_at_ms: r.applied_at_ms,
                })
                .collect(),
            create_revision: d.create_revision,
            revision: d.revision,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct MessageView {
    pub id: u64,
    pub from: String,
    /// 0 = broadcast.
    pub to_agent: u64,
    pub body: String,
    pub sent_at_ms: u64,
}

impl From<&proto::Message> for MessageView {
    fn from(m: &proto::Message) -> Self {
        Self {
            id: m.id,
            from: m.from.clone(),
            to_agent: m.to_agent,
            body: m.body.clone(),
            sent_at_ms: m.sent_at_ms,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct MemberView {
    pub id: u64,
    pub addr: String,
    pub voter: bool,
}

impl From<&proto::Member> for MemberView {
    fn from(m: &proto::Member) -> Self {
        Self {
            id: m.id,
            addr: m.addr.clone(),
            voter: m.voter,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct EventView {
    pub revision: u64,
    pub kind: String,
    pub key: String,
    pub deleted: bool,
    pub value: serde_json::Value,
}

impl From<&proto::Event> for EventView {
    fn from(e: &proto::Event) -> Self {
        let value = match &e.value {
            None => serde_json::Value::Null,
            Some(event::Value::Agent(a)) => to_json(AgentView::from(a)),
            Some(event::Value::Task(t)) => to_json(TaskView::from(t)),
            Some(event::Value::Lock(l)) => to_json(LockView::from(l)),
            Some(event::Value::Config(c)) => to_json(ConfigView::from(c)),
            Some(event::Value::Definition(d)) => to_json(DefinitionView::from(d)),
            Some(event::Value::Message(m)) => to_json(MessageView::from(m)),
            Some(event::Value::DefinitionRun(r)) => to_json(crate::iterations::RunView::from(r)),
        };
        Self {
            revision: e.revision,
            kind: entity_kind_name(e.kind),
            key: e.key.clone(),
            deleted: e.deleted,
            value,
        }
    }
}

/// Serializing these plain structs cannot fail; `Null` would only hide a bug, not a user error.
fn to_json(view: impl Serialize) -> serde_json::Value {
    serde_json::to_value(view).unwrap_or(serde_json::Value::Null)
}

/// The enum's proto name without its prefix, lowercased: `TASK_STATUS_READY` → `ready`.
fn short_name(full: Option<&str>, prefix: &str, raw: i32) -> String {
    full.map_or_else(
        || format!("unknown({raw})"),
        |name| name.trim_start_matches(prefix).to_ascii_lowercase(),
    )
}

pub fn task_status_name(raw: i32) -> String {
    let full = TaskStatus::try_from(raw).ok().map(|s| s.as_str_name());
    short_name(full, "TASK_STATUS_", raw)
}

pub fn agent_status_name(raw: i32) -> String {
    let full = AgentStatus::try_from(raw).ok().map(|s| s.as_str_name());
    short_name(full, "AGENT_STATUS_", raw)
}

pub fn lock_mode_name(raw: i32) -> String {
    let full = LockMode::try_from(raw).ok().map(|s| s.as_str_name());
    short_name(full, "LOCK_MODE_", raw)
}

pub fn desired_state_name(raw: i32) -> String {
    let full = DesiredState::try_from(raw).ok().map(|s| s.as_str_name());
    short_name(full, "DESIRED_STATE_", raw)
}

pub fn entity_kind_name(raw: i32) -> String {
    let full = EntityKind::try_from(raw).ok().map(|s| s.as_str_name());
    short_name(full, "ENTITY_KIND_", raw)
}

/// A wall-clock time in ms since the epoch as RFC 3339 (seconds), "-" for 0.
pub fn timestamp(ms: u64) -> String {
    if ms == 0 {
        return "-".to_owned();
    }
    let time = UNIX_EPOCH + Duration::from_millis(ms);
    humantime::format_rfc3339_seconds(time).to_string()
}

/// How long ago `ms` was, "-" for 0 or the future.
pub fn age(ms: u64, now: SystemTime) -> String {
    let then = UNIX_EPOCH + Duration::from_millis(ms);
    match now.duration_since(then) {
        Ok(elapsed) if ms != 0 => {
            humantime::format_duration(Duration::from_secs(elapsed.as_secs())).to_string()
        }
        _ => "-".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enum_names_are_short_and_lowercase() {
        assert_eq!(task_status_name(TaskStatus::Ready as i32), "ready");
        assert_eq!(agent_status_name(AgentStatus::Expired as i32), "expired");
        assert_eq!(lock_mode_name(LockMode::Shared as i32), "shared");
        assert_eq!(desired_state_name(DesiredState::Stopped as i32), "stopped");
        assert_eq!(entity_kind_name(EntityKind::Config as i32), "config");
        assert_eq!(task_status_name(99), "unknown(99)");
    }

    #[test]
    fn task_json_keeps_tokens_and_revisions() {
        let task = proto::Task {
            id: "t1".into(),
            status: TaskStatus::Claimed as i32,
            claim_token: 42,
            revision: 42,
            assignee: 3,
            payload: b"make".to_vec(),
            ..Default::default()
        };
        let json = serde_json::to_value(TaskView::from(&task)).unwrap();
        assert_eq!(json["id"], "t1");
        assert_eq!(json["status"], "claimed");
        assert_eq!(json["claim_token"], 42);
        assert_eq!(json["revision"], 42);
        assert_eq!(json["payload"], "make");
        assert!(json["result"].is_null());
    }

    #[test]
    fn event_json_nests_the_entity() {
        let event = proto::Event {
            revision: 7,
            kind: EntityKind::Lock as i32,
            key: "src/api".into(),
            deleted: false,
            value: Some(event::Value::Lock(proto::Lock {
                path: "src/api".into(),
                holders: vec![proto::LockHolder {
                    agent_id: 1,
                    fencing_token: 7,
                    ..Default::default()
                }],
                ..Default::default()
            })),
        };
        let json = serde_json::to_value(EventView::from(&event)).unwrap();
        assert_eq!(json["kind"], "lock");
        assert_eq!(json["value"]["mode"], "exclusive");
        assert_eq!(json["value"]["holders"][0]["fencing_token"], 7);
    }

    #[test]
    fn definition_view_shows_the_current_spec() {
        let def = proto::Definition {
            name: "reviewer".into(),
            desired: DesiredState::Running as i32,
            history: vec![
                proto::DefinitionRevision {
                    id: "old".into(),
                    spec_json: "{\"v\":1}".into(),
                    ..Default::default()
                },
                proto::DefinitionRevision {
                    id: "new".into(),
                    spec_json: "{\"v\":2}".into(),
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        let view = DefinitionView::from(&def);
        assert_eq!(view.id, "new");
        assert_eq!(view.spec["v"], 2);
        assert_eq!(view.history.len(), 2);
    }

    #[test]
    fn times_render_readably() {
        assert_eq!(timestamp(0), "-");
        assert_eq!(timestamp(1_700_000_000_000), "2023-11-14T22:13:20Z");
        let now = UNIX_EPOCH + Duration::from_secs(100);
        assert_eq!(age(40_000, now), "1m");
        assert_eq!(age(0, now), "-");
        assert_eq!(age(200_000, now), "-");
    }

    #[test]
    fn load_cells_show_what_is_known() {
        assert_eq!(load_cells(None), ["-", "-", "-", "-"]);
        let load = proto::AgentLoad {
            load_avg_1m: Some(1.5),
            cores: Some(8),
            mem_used_bytes: Some(3 << 30),
            mem_total_bytes: Some(16 << 30),
            running_tasks: 1,
            running_execs: 2,
            reported_at_ms: 0,
        };
        assert_eq!(
            load_cells(Some(&load)),
            ["1.50", "8", "3.0G/16.0G", "3 (2 execs)"]
        );
        let unknown = proto::AgentLoad {
            running_tasks: 1,
            ..proto::AgentLoad::default()
        };
        assert_eq!(load_cells(Some(&unknown)), ["-", "-", "-", "1"]);
        assert_eq!(bytes(512), "512B");
    }
}
