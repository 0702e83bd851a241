//! The index behind claim-next: ready tasks grouped by their *shape* (required capabilities +
//! label selector), each group ordered best first.
//!
//! Claim-next looks only at the head of each group whose shape the agent satisfies, so its cost
//! grows with the number of distinct shapes among ready tasks (small: a cluster has a handful
//! of task kinds), not with the number of ready tasks.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use crate::agent::Agent;
use crate::task::{Task, TaskShape};

/// What an agent must offer to run a task: the task's shared [`TaskShape`] (`None`: nothing),
/// compared by content. Taking it from a task is a reference count, not a copy of its sets.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Shape(Option<Arc<TaskShape>>);

impl Shape {
    pub fn of(task: &Task) -> Self {
        Self(task.shape().cloned())
    }

    /// Whether `task` has this shape.
    pub fn is_of(&self, task: &Task) -> bool {
        self.0.as_ref() == task.shape()
    }

    pub fn admits(&self, agent: &Agent) -> bool {
        match &self.0 {
            Some(shape) => agent_can_run(agent, &shape.requires, &shape.selector),
            None => true,
        }
    }
}

/// `requires` ⊆ the agent's capabilities, and every selector label carried with that value.
pub(crate) fn agent_can_run(
    agent: &Agent,
    requires: &BTreeSet<String>,
    selector: &BTreeMap<String, String>,
) -> bool {
    requires.is_subset(&agent.capabilities)
        && selector
            .iter()
            .all(|(key, value)| agent.labels.get(key) == Some(value))
}

/// Best first: higher priority, then older (lower creation sequence number). Eight bytes:
/// a million ready tasks are a million keys (positions fit in 32 bits, see
/// [`super::task_store`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct ReadyKey {
    priority: Reverse<i32>,
    seq: u32,
}

impl ReadyKey {
    pub fn new(priority: i32, seq: u32) -> Self {
        Self {
            priority: Reverse(priority),
            seq,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ReadyIndex {
    groups: BTreeMap<Shape, BTreeSet<ReadyKey>>,
    len: usize,
}

impl ReadyIndex {
    /// Builds the index from each shape's keys (in any order; duplicates count once).
    /// Each group's B-tree is built in bulk from its sorted keys.
    pub fn from_groups(groups: BTreeMap<Shape, Vec<ReadyKey>>) -> Self {
        let groups: BTreeMap<Shape, BTreeSet<ReadyKey>> = groups
            .into_iter()
            .filter(|(_, keys)| !keys.is_empty())
            .map(|(shape, keys)| (shape, keys.into_iter().collect()))
            .collect();
        let len = groups.values().map(BTreeSet::len).sum();
        Self { groups, len }
    }

    pub fn insert(&mut self, shape: Shape, key: ReadyKey) {
        if self.groups.entry(shape).or_default().insert(key) {
            self.len += 1;
        }
    }

    pub fn remove(&mut self, shape: &Shape, key: ReadyKey) {
        if let Some(group) = self.groups.get_mut(shape) {
            if group.remove(&key) {
                self.len -= 1;
            }
            // Empty groups are dropped so claim-next never walks dead shapes.
            if group.is_empty() {
                self.groups.remove(shape);
            }
        }
    }

    pub fn contains(&self, shape: &Shape, key: ReadyKey) -> bool {
        self.groups
            .get(shape)
            .is_some_and(|group| group.contains(&key))
    }

    /// Sequence number of the best ready task this agent can run.
    pub fn best_for(&self, agent: &Agent) -> Option<usize> {
        self.groups
            .iter()
            .filter(|(shape, _)| shape.admits(agent))
            .filter_map(|(_, group)| group.first())
            .min()
            .map(|key| key.seq as usize)
    }

    pub fn len(&self) -> usize {
        self.len
    }

    /// Sum of the group sizes (for the invariant check of `len`).
    pub fn counted_len(&self) -> usize {
        self.groups.values().map(BTreeSet::len).sum()
    }

    pub fn has_empty_group(&self) -> bool {
        self.groups.values().any(BTreeSet::is_empty)
    }
}
