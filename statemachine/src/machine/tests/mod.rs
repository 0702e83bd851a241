//! Unit tests, one file per concept, on a small harness that numbers revisions and checks the
//! invariants after every apply.

mod agents;
mod claim_started;
mod config_definitions_messages;
mod locks;
mod machine;
mod runs;
mod sessions;
mod tasks;
mod tokens;

use std::collections::{BTreeMap, BTreeSet};

use crate::agent::AgentId;
use crate::command::{Command, Op, SessionRef};
use crate::error::{CommandError, ErrorKind};
use crate::lock::{LockGrant, LockMode};
use crate::response::Outcome;
use crate::task::{Task, TaskId, TaskResult, TaskSpec};

use super::{Applied, StateMachine};

#[derive(Clone)]
pub(super) struct Harness {
    pub machine: StateMachine,
    pub revision: u64,
    pub now_ms: u64,
}

impl Harness {
    pub fn new() -> Self {
        Self {
            machine: StateMachine::new(),
            revision: 0,
            now_ms: 1_000,
        }
    }

    /// The revision the next apply will get.
    pub fn next_revision(&self) -> u64 {
        self.revision + 1
    }

    pub fn command(&mut self, command: Command) -> Applied {
        self.revision += 1;
        let applied = self.machine.apply(self.revision, self.now_ms, command);
        if let Err(violation) = self.machine.check_invariants() {
            panic!(
                "invariant violated at revision {}: {violation}",
                self.revision
            );
        }
        assert_eq!(self.machine.revision(), self.revision);
        for event in &applied.events {
            assert_eq!(event.revision, self.revision);
        }
        applied
    }

    pub fn apply(&mut self, op: Op) -> Applied {
        self.command(Command::new(op))
    }

    pub fn ok(&mut self, op: Op) -> Outcome {
        let applied = self.apply(op.clone());
        match applied.response {
            Ok(outcome) => outcome,
            Err(e) => panic!("{op:?} failed: {e:?}"),
        }
    }

    /// Applies an op that must fail, and checks that it changed nothing but the revision.
    pub fn err(&mut self, op: Op) -> CommandError {
        let before = self.machine.clone();
        let applied = self.apply(op.clone());
        let error = match applied.response {
            Ok(outcome) => panic!("{op:?} succeeded: {outcome:?}"),
            Err(e) => e,
        };
        assert!(applied.events.is_empty(), "a failed command emitted events");
        // The revision and the clock advance with every apply; nothing else may change.
        let mut after = self.machine.clone();
        after.revision = before.revision;
        after.clock_ms = before.clock_ms;
        assert_eq!(after, before, "a failed command changed the state");
        error
    }

    pub fn err_kind(&mut self, op: Op, kind: ErrorKind, contains: &str) -> CommandError {
        let error = self.err(op);
        assert_eq!(error.kind, kind, "{error:?}");
        assert!(
            error.message.contains(contains),
            "{:?} does not contain {contains:?}",
            error.message
        );
        error
    }

    pub fn advance(&mut self, ms: u64) {
        self.now_ms += ms;
    }

    pub fn register(
        &mut self,
        name: &str,
        capabilities: &[&str],
        labels: &[(&str, &str)],
        max_concurrent: u32,
    ) -> AgentId {
        match self.ok(register_op(name, capabilities, labels, max_concurrent)) {
            Outcome::AgentRegistered { agent, .. } => agent.id,
            other => panic!("unexpected {other:?}"),
        }
    }

    pub fn submit(&mut self, spec: TaskSpec) -> Task {
        match self.ok(Op::SubmitTask(spec)) {
            Outcome::TaskSubmitted(task) => task,
            other => panic!("unexpected {other:?}"),
        }
    }

    pub fn claim_next(&mut self, agent_id: AgentId) -> Option<Task> {
        match self.ok(Op::ClaimNext { agent_id }) {
            Outcome::TaskClaimed(task) => task,
            other => panic!("unexpected {other:?}"),
        }
    }

    pub fn claim(&mut self, task_id: &str, agent_id: AgentId) -> Task {
        match self.ok(Op::ClaimTask {
            task_id: task_id.into(),
            agent_id,
            expected_revision: None,
        }) {
            Outcome::TaskClaimed(Some(task)) => task,
            other => panic!("unexpected {other:?}"),
        }
    }

    pub fn complete(&mut self, task: &Task) -> Outcome {
        self.ok(complete_op(task))
    }

    pub fn fail(&mut self, task: &Task, error: &str) -> Outcome {
        self.ok(Op::FailTask {
            task_id: task.id.clone(),
            agent_id: task.assignee.expect("held"),
            claim_token: task.claim_token.expect("held"),
            error: error.into(),
        })
    }

    pub fn acquire(
        &mut self,
        agent_id: AgentId,
        paths: &[&str],
        mode: LockMode,
        wait_ms: Option<u64>,
    ) -> Applied {
        self.apply(acquire_op(agent_id, paths, mode, wait_ms, None))
    }

    pub fn acquired(
        &mut self,
        agent_id: AgentId,
        paths: &[&str],
        mode: LockMode,
    ) -> Vec<LockGrant> {
        match self.acquire(agent_id, paths, mode, None).response {
            Ok(Outcome::LocksAcquired(grants)) => grants,
            other => panic!("unexpected {other:?}"),
        }
    }

    pub fn task(&self, id: &str) -> &Task {
        self.machine.task(id).expect("task exists")
    }

    pub fn session(client_id: u64, seq: u64, acked_below: u64) -> SessionRef {
        SessionRef {
            client_id,
            seq,
            acked_below,
        }
    }
}

pub(super) fn register_op(
    name: &str,
    capabilities: &[&str],
    labels: &[(&str, &str)],
    max_concurrent: u32,
) -> Op {
    Op::RegisterAgent {
        name: name.into(),
        node: "node-a".into(),
        capabilities: set(capabilities),
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<BTreeMap<_, _>>(),
        max_concurrent,
        ttl_ms: 0,
    }
}

pub(super) fn acquire_op(
    agent_id: AgentId,
    paths: &[&str],
    mode: LockMode,
    wait_ms: Option<u64>,
    ttl_ms: Option<u64>,
) -> Op {
    Op::AcquireLocks {
        agent_id,
        paths: paths.iter().map(|p| p.to_string()).collect(),
        mode,
        task_id: None,
        ttl_ms,
        wait_ms,
    }
}

pub(super) fn complete_op(task: &Task) -> Op {
    Op::CompleteTask {
        task_id: task.id.clone(),
        agent_id: task.assignee.expect("held"),
        claim_token: task.claim_token.expect("held"),
        result: TaskResult {
            summary: "done".into(),
            ..TaskResult::default()
        },
    }
}

pub(super) fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

pub(super) fn spec(id: &str) -> TaskSpec {
    TaskSpec {
        id: Some(id.into()),
        title: id.into(),
        ..TaskSpec::default()
    }
}

pub(super) fn spec_deps(id: &str, deps: &[&str]) -> TaskSpec {
    TaskSpec {
        depends_on: deps.iter().map(|d| d.to_string()).collect(),
        ..spec(id)
    }
}

pub(super) fn ids(tasks: &[TaskId]) -> Vec<&str> {
    tasks.iter().map(String::as_str).collect()
}
