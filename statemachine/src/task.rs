//! Tasks: the queue, claiming with fencing tokens, and the dependency DAG.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::agent::AgentId;

pub type TaskId = String;

/// The reserved capability of an exec (`percyctl exec`): a task whose payload is a command
/// request, run only by workers that accept execs. An exec is not idempotent, so its holder's
/// expiry fails it (see [`LOST_EXEC_PREFIX`]) instead of requeuing it, unless attempts remain.
pub const EXEC_CAPABILITY: &str = "percy.exec";
/// How the error of an exec whose executor expired or left mid-run begins.
pub const LOST_EXEC_PREFIX: &str = "lost";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum TaskStatus {
    /// Waits for a dependency that is not completed yet.
    Blocked,
    /// Claimable.
    Ready,
    /// Held by `assignee` under `claim_token`, not started yet.
    Claimed,
    /// Held and started.
    Working,
    Completed,
    /// Failed `max_attempts` times (terminal).
    Failed,
    Cancelled,
}

impl TaskStatus {
    /// Completed, failed and cancelled tasks never change again.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Completed | Self::Failed | Self::Cancelled)
    }
    /// Claimed or working: the task has an assignee and a claim token.
    pub fn is_held(self) -> bool {
        matches!(self, Self::Claimed | Self::Working)
    }
}

/// What a submitter says about a new task.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskSpec {
    /// Chosen by the submitter, or generated (`task-<revision>`) when `None`.
    pub id: Option<TaskId>,
    pub title: String,
    pub description: String,
    pub payload: Vec<u8>,
    /// Capabilities an agent must all have.
    pub requires: BTreeSet<String>,
    /// Labels an agent must carry with these exact values (`node=builder`, `os=linux`).
    pub selector: BTreeMap<String, String>,
    /// Higher runs first.
    pub priority: i32,
    pub depends_on: Vec<TaskId>,
    /// 0 means [`crate::limits::DEFAULT_MAX_ATTEMPTS`].
    pub max_attempts: u32,
    /// How long a worker lets the task's command run (enforced by the worker, not here).
    pub timeout_ms: Option<u64>,
}

/// What a worker reports when it completes a task.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskResult {
    pub summary: String,
    pub branch: Option<String>,
    pub exit_code: Option<i32>,
    pub output_tail: String,
}

/// A task. A million ready tasks must fit in a few hundred megabytes across the cluster, so
/// the fields most tasks leave empty live behind one pointer ([`TaskDetails`], absent when
/// all are empty), the required capabilities and label selector are one shared
/// [`TaskShape`] per distinct shape (the task store interns them), and the plan id is shared
/// by the plan's tasks. Read those through the accessors.
///
/// Encoded exactly as the struct of public fields it replaced (see [`TaskWire`]), so
/// snapshots, log entries and forwarded answers written before and after read the same.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Task {
    pub id: TaskId,
    pub title: String,
    pub priority: i32,
    pub status: TaskStatus,
    /// Claims so far (a requeue after expiry or failure counts).
    pub attempts: u32,
    pub max_attempts: u32,
    plan_id: Option<Arc<str>>,
    /// `None`: requires nothing and selects nothing.
    shape: Option<Arc<TaskShape>>,
    pub assignee: Option<AgentId>,
    /// Revision of the claim that made `assignee` the holder: the fencing token every
    /// start/complete/fail must present. Kept after completion for the record.
    pub claim_token: Option<u64>,
    pub created_at_ms: u64,
    pub updated_at_ms: u64,
    pub create_revision: u64,
    pub revision: u64,
    /// `None` when every detail is empty (kept so: see [`Task::details_mut`]).
    details: Option<Box<TaskDetails>>,
}

/// What an agent must offer to run a task: capabilities it must all have, and labels it must
/// carry with these exact values. Shared by every task of the same shape.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TaskShape {
    pub requires: BTreeSet<String>,
    pub selector: BTreeMap<String, String>,
}

impl TaskShape {
    /// `None` for the empty shape, so that tasks without requirements carry no pointer target.
    pub fn shared(
        requires: BTreeSet<String>,
        selector: BTreeMap<String, String>,
    ) -> Option<Arc<Self>> {
        if requires.is_empty() && selector.is_empty() {
            None
        } else {
            Some(Arc::new(Self { requires, selector }))
        }
    }
}

/// The fields of a task that most tasks leave empty.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct TaskDetails {
    description: String,
    payload: Vec<u8>,
    depends_on: Vec<TaskId>,
    timeout_ms: Option<u64>,
    result: Option<TaskResult>,
    /// Last failure, or why it was cancelled (names the failed dependency).
    error: Option<String>,
}

impl TaskDetails {
    fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// Everything a new task is made of, for [`Task::new`].
#[derive(Debug, Clone)]
pub struct NewTask {
    pub id: TaskId,
    pub spec: TaskSpec,
    pub depends_on: Vec<TaskId>,
    pub plan_id: Option<Arc<str>>,
    pub status: TaskStatus,
    pub max_attempts: u32,
    pub now_ms: u64,
    pub revision: u64,
}

static EMPTY_REQUIRES: BTreeSet<String> = BTreeSet::new();
static EMPTY_SELECTOR: BTreeMap<String, String> = BTreeMap::new();

impl Task {
    /// A task as submitted: unclaimed, no attempts, no result. `spec.id` and
    /// `spec.depends_on` are ignored (`id` and `depends_on` are the decided ones).
    pub fn new(new: NewTask) -> Self {
        let NewTask {
            id,
            spec,
            depends_on,
            plan_id,
            status,
            max_attempts,
            now_ms,
            revision,
        } = new;
        let mut task = Self {
            id,
            title: spec.title,
            priority: spec.priority,
            status,
            attempts: 0,
            max_attempts,
            plan_id,
            shape: TaskShape::shared(spec.requires, spec.selector),
            assignee: None,
            claim_token: None,
            created_at_ms: now_ms,
            updated_at_ms: now_ms,
            create_revision: revision,
            revision,
            details: Some(Box::new(TaskDetails {
                description: spec.description,
                payload: spec.payload,
                depends_on,
                timeout_ms: spec.timeout_ms,
                result: None,
                error: None,
            })),
        };
        task.drop_empty_details();
        task
    }

    pub fn description(&self) -> &str {
        self.details.as_ref().map_or("", |d| &d.description)
    }

    pub fn payload(&self) -> &[u8] {
        self.details.as_ref().map_or(&[], |d| &d.payload)
    }

    /// Capabilities an agent must all have.
    pub fn requires(&self) -> &BTreeSet<String> {
        self.shape.as_ref().map_or(&EMPTY_REQUIRES, |s| &s.requires)
    }

    /// Labels an agent must carry with these exact values.
    pub fn selector(&self) -> &BTreeMap<String, String> {
        self.shape.as_ref().map_or(&EMPTY_SELECTOR, |s| &s.selector)
    }

    /// The shared shape (`None`: requires nothing, selects nothing).
    pub fn shape(&self) -> Option<&Arc<TaskShape>> {
        self.shape.as_ref()
    }

    /// Replaces the shape by an equal one (the task store's interned copy).
    pub(crate) fn share_shape(&mut self, shared: Arc<TaskShape>) {
        debug_assert!(self.shape.as_deref() == Some(&*shared));
        self.shape = Some(shared);
    }

    pub fn depends_on(&self) -> &[TaskId] {
        self.details.as_ref().map_or(&[], |d| &d.depends_on)
    }

    pub fn plan_id(&self) -> Option<&str> {
        self.plan_id.as_deref()
    }

    /// The shared plan id.
    pub(crate) fn plan(&self) -> Option<&Arc<str>> {
        self.plan_id.as_ref()
    }

    /// Replaces the plan id by an equal one (the task store's shared copy).
    pub(crate) fn share_plan(&mut self, shared: Arc<str>) {
        debug_assert!(self.plan_id.as_deref() == Some(&*shared));
        self.plan_id = Some(shared);
    }

    /// How long a worker lets the task's command run.
    pub fn timeout_ms(&self) -> Option<u64> {
        self.details.as_ref().and_then(|d| d.timeout_ms)
    }

    pub fn result(&self) -> Option<&TaskResult> {
        self.details.as_ref().and_then(|d| d.result.as_ref())
    }

    /// Last failure, or why it was cancelled (names the failed dependency).
    pub fn error(&self) -> Option<&str> {
        self.details.as_ref().and_then(|d| d.error.as_deref())
    }

    pub fn set_result(&mut self, result: Option<TaskResult>) {
        self.details_mut(|d| d.result = result);
    }

    pub fn set_error(&mut self, error: Option<String>) {
        self.details_mut(|d| d.error = error);
    }

    /// Changes the details through `change`. Empty details are dropped afterwards, so that two
    /// equal tasks are equal field by field (`None`, never `Some(empty)`).
    fn details_mut(&mut self, change: impl FnOnce(&mut TaskDetails)) {
        change(self.details.get_or_insert_with(Box::default));
        self.drop_empty_details();
    }

    fn drop_empty_details(&mut self) {
        if self.details.as_ref().is_some_and(|d| d.is_empty()) {
            self.details = None;
        }
    }
}

/// The encoding of a [`Task`]: its fields in the order of the struct that was encoded before
/// the compact layout (postcard is positional), so that every snapshot and log entry ever
/// written still reads.
#[derive(Serialize)]
struct TaskWireRef<'a> {
    id: &'a str,
    title: &'a str,
    description: &'a str,
    payload: &'a [u8],
    requires: &'a BTreeSet<String>,
    selector: &'a BTreeMap<String, String>,
    priority: i32,
    depends_on: &'a [TaskId],
    plan_id: Option<&'a str>,
    status: TaskStatus,
    assignee: Option<AgentId>,
    claim_token: Option<u64>,
    attempts: u32,
    max_attempts: u32,
    timeout_ms: Option<u64>,
    result: Option<&'a TaskResult>,
    error: Option<&'a str>,
    created_at_ms: u64,
    updated_at_ms: u64,
    create_revision: u64,
    revision: u64,
}

/// [`TaskWireRef`], owned, for decoding.
#[derive(Deserialize)]
struct TaskWire {
    id: TaskId,
    title: String,
    description: String,
    payload: Vec<u8>,
    requires: BTreeSet<String>,
    selector: BTreeMap<String, String>,
    priority: i32,
    depends_on: Vec<TaskId>,
    plan_id: Option<String>,
    status: TaskStatus,
    assignee: Option<AgentId>,
    claim_token: Option<u64>,
    attempts: u32,
    max_attempts: u32,
    timeout_ms: Option<u64>,
    result: Option<TaskResult>,
    error: Option<String>,
    created_at_ms: u64,
    updated_at_ms: u64,
    create_revision: u64,
    revision: u64,
}

impl Serialize for Task {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        TaskWireRef {
            id: &self.id,
            title: &self.title,
            description: self.description(),
            payload: self.payload(),
            requires: self.requires(),
            selector: self.selector(),
            priority: self.priority,
            depends_on: self.depends_on(),
            plan_id: self.plan_id(),
            status: self.status,
            assignee: self.assignee,
            claim_token: self.claim_token,
            attempts: self.attempts,
            max_attempts: self.max_attempts,
            timeout_ms: self.timeout_ms(),
            result: self.result(),
            error: self.error(),
            created_at_ms: self.created_at_ms,
            updated_at_ms: self.updated_at_ms,
            create_revision: self.create_revision,
            revision: self.revision,
        }
        .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Task {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let w = TaskWire::deserialize(deserializer)?;
        let mut task = Self {
            id: w.id,
            title: w.title,
            priority: w.priority,
            status: w.status,
            attempts: w.attempts,
            max_attempts: w.max_attempts,
            plan_id: w.plan_id.map(Arc::from),
            shape: TaskShape::shared(w.requires, w.selector),
            assignee: w.assignee,
            claim_token: w.claim_token,
            created_at_ms: w.created_at_ms,
            updated_at_ms: w.updated_at_ms,
            create_revision: w.create_revision,
            revision: w.revision,
            details: Some(Box::new(TaskDetails {
                description: w.description,
                payload: w.payload,
                depends_on: w.depends_on,
                timeout_ms: w.timeout_ms,
                result: w.result,
                error: w.error,
            })),
        };
        task.drop_empty_details();
        Ok(task)
    }
}
