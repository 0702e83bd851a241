//! The context of one apply: its revision, the leader's timestamp, and the events collected.

use std::collections::BTreeSet;

use crate::agent::Agent;
use crate::config::ConfigEntry;
use crate::definition::Definition;
use crate::definition_run::DefinitionRun;
use crate::event::{EntityKind, EntityValue, Event};
use crate::message::{Message, Recipient};
use crate::task::Task;

use super::StateMachine;

pub(crate) struct Ctx {
    pub revision: u64,
    pub now_ms: u64,
    /// Off when the caller discards the events (a replay nobody watches): nothing is copied.
    record_events: bool,
    events: Vec<Event>,
    /// Lock paths changed by this apply. One path may change several times in one apply (a
    /// release, then a grant to a waiter); watchers get one event per path with its final
    /// state, emitted once the apply is done.
    touched_locks: BTreeSet<String>,
    /// Queued lock requests that left the queue in this apply (granted or dropped), recorded
    /// whether or not events are: the node wakes exactly their waiting callers.
    resolved_waiters: Vec<u64>,
}

impl Ctx {
    pub fn new(revision: u64, now_ms: u64, record_events: bool) -> Self {
        Self {
            revision,
            now_ms,
            record_events,
            events: Vec::new(),
            touched_locks: BTreeSet::new(),
            resolved_waiters: Vec::new(),
        }
    }

    /// Nothing changed so far (always true when events are not recorded).
    pub fn is_empty(&self) -> bool {
        self.events.is_empty() && self.touched_locks.is_empty()
    }

    /// Records one event; `describe` (which copies the entity) runs only when recording.
    fn push(&mut self, kind: EntityKind, describe: impl FnOnce() -> (String, Option<EntityValue>)) {
        if !self.record_events {
            return;
        }
        let (key, value) = describe();
        self.events.push(Event {
            revision: self.revision,
            kind,
            key,
            value,
        });
    }

    pub fn agent_changed(&mut self, agent: &Agent) {
        self.push(EntityKind::Agent, || {
            (
                agent.id.to_string(),
                Some(EntityValue::Agent(agent.clone())),
            )
        });
    }

    pub fn task_changed(&mut self, task: &Task) {
        self.push(EntityKind::Task, || {
            (task.id.clone(), Some(EntityValue::Task(task.clone())))
        });
    }

    pub fn lock_touched(&mut self, path: &str) {
        if self.record_events && !self.touched_locks.contains(path) {
            self.touched_locks.insert(path.to_string());
        }
    }

    pub fn config_changed(&mut self, key: &str, entry: Option<&ConfigEntry>) {
        self.push(EntityKind::Config, || {
            (key.to_string(), entry.cloned().map(EntityValue::Config))
        });
    }

    pub fn definition_changed(&mut self, definition: &Definition) {
        self.push(EntityKind::Definition, || {
            (
                definition.name.clone(),
                Some(EntityValue::Definition(definition.clone())),
            )
        });
    }

    pub fn run_changed(&mut self, run: &DefinitionRun) {
        self.push(EntityKind::DefinitionRun, || {
            (
                run.name.clone(),
                Some(EntityValue::DefinitionRun(run.for_event())),
            )
        });
    }

    /// `message` is `None` when the message with that id left the mailbox (dropped because
    /// the mailbox was full).
    pub fn message_changed(&mut self, recipient: &Recipient, id: u64, message: Option<&Message>) {
        self.push(EntityKind::Message, || {
            (
                message_key(recipient, id),
                message.cloned().map(EntityValue::Message),
            )
        });
    }

    /// The events in order, lock events (final state of each touched path) last.
    pub fn waiters_resolved(&mut self, queued_revisions: impl IntoIterator<Item = u64>) {
        self.resolved_waiters.extend(queued_revisions);
    }

    /// The events (lock events last, one per touched path) and the resolved lock requests.
    pub fn finish(mut self, machine: &StateMachine) -> (Vec<Event>, Vec<u64>) {
        for path in std::mem::take(&mut self.touched_locks) {
            let value = machine.locks.get(&path).cloned().map(EntityValue::Lock);
            self.push(EntityKind::Lock, || (path, value));
        }
        (self.events, self.resolved_waiters)
    }
}

/// `<recipient>/<message id>`, the recipient being an agent id in decimal or `*`.
pub(crate) fn message_key(recipient: &Recipient, id: u64) -> String {
    match recipient {
        Recipient::Agent(agent) => format!("{agent}/{id}"),
        Recipient::Broadcast => format!("*/{id}"),
    }
}
