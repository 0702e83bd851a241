//! The tasks and their indexes: by id, dependents (reverse DAG edges), ready (for
//! claim-next), held per agent, per plan.
//!
//! Tasks are never removed, so they live in a `Vec` in creation order and the indexes refer to
//! them by position (`seq`). Every status/assignee change goes through [`TaskStore::update`],
//! which takes the task out of the indexes before the change and puts it back after, so the
//! indexes cannot drift from the tasks.

use std::collections::{BTreeMap, BTreeSet};

use crate::agent::AgentId;
use crate::task::{Task, TaskStatus};

use super::ready_index::{ReadyIndex, ReadyKey, Shape};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct TaskStore {
    tasks: Vec<Task>,
    by_id: BTreeMap<String, usize>,
    /// `dependents[seq]`: tasks that list `tasks[seq]` as a dependency, in creation order.
    dependents: Vec<Vec<usize>>,
    ready: ReadyIndex,
    held_by: BTreeMap<AgentId, BTreeSet<usize>>,
    plans: BTreeMap<String, Vec<usize>>,
}

impl TaskStore {
    pub fn seq_of(&self, id: &str) -> Option<usize> {
        self.by_id.get(id).copied()
    }

    pub fn by_id(&self, id: &str) -> Option<&Task> {
        self.seq_of(id).and_then(|seq| self.tasks.get(seq))
    }

    /// The task at `seq`. Positions come from this store's own indexes, which only hold
    /// positions of existing tasks.
    pub fn get(&self, seq: usize) -> &Task {
        &self.tasks[seq]
    }

    pub fn iter(&self) -> impl Iterator<Item = &Task> {
        self.tasks.iter()
    }

    pub fn len(&self) -> usize {
        self.tasks.len()
    }

    pub fn contains(&self, id: &str) -> bool {
        self.by_id.contains_key(id)
    }

    pub fn plan_exists(&self, plan_id: &str) -> bool {
        self.plans.contains_key(plan_id)
    }

    pub fn plan_tasks(&self, plan_id: &str) -> impl Iterator<Item = &Task> {
        self.plans
            .get(plan_id)
            .into_iter()
            .flatten()
            .map(|&seq| &self.tasks[seq])
    }

    pub fn dependents(&self, seq: usize) -> &[usize] {
        self.dependents.get(seq).map_or(&[], Vec::as_slice)
    }

    pub fn ready_index(&self) -> &ReadyIndex {
        &self.ready
    }

    pub fn held_by(&self, agent: AgentId) -> impl Iterator<Item = usize> + '_ {
        self.held_by.get(&agent).into_iter().flatten().copied()
    }

    pub fn held_count(&self, agent: AgentId) -> usize {
        self.held_by.get(&agent).map_or(0, BTreeSet::len)
    }

    pub fn held_index(&self) -> &BTreeMap<AgentId, BTreeSet<usize>> {
        &self.held_by
    }

    pub fn plan_index(&self) -> &BTreeMap<String, Vec<usize>> {
        &self.plans
    }

    /// Whether every dependency of the task is completed. Dependencies always exist (checked
    /// at submit); a missing one would count as unfinished.
    pub fn dependencies_completed(&self, task: &Task) -> bool {
        task.depends_on.iter().all(|dep| {
            self.by_id(dep)
                .is_some_and(|d| d.status == TaskStatus::Completed)
        })
    }

    /// Appends a task (its id must be new) and indexes it. Dependency edges are added by
    /// [`Self::link_dependencies`] once every task of a batch is in, because a plan task may
    /// depend on one listed after it.
    pub fn insert(&mut self, task: Task) -> usize {
        let seq = self.tasks.len();
        self.by_id.insert(task.id.clone(), seq);
        if let Some(plan) = &task.plan_id {
            self.plans.entry(plan.clone()).or_default().push(seq);
        }
        self.tasks.push(task);
        self.dependents.push(Vec::new());
        self.index(seq);
        seq
    }

    pub fn link_dependencies(&mut self, seq: usize) {
        for dep in self.tasks[seq].depends_on.clone() {
            if let Some(dep_seq) = self.seq_of(&dep) {
                self.dependents[dep_seq].push(seq);
            }
        }
    }

    /// Changes a task through `change`, keeping every index in step.
    pub fn update(&mut self, seq: usize, change: impl FnOnce(&mut Task)) -> &Task {
        self.unindex(seq);
        change(&mut self.tasks[seq]);
        self.index(seq);
        &self.tasks[seq]
    }

    fn index(&mut self, seq: usize) {
        let task = &self.tasks[seq];
        if task.status == TaskStatus::Ready {
            self.ready
                .insert(Shape::of(task), ReadyKey::new(task.priority, seq));
        }
        if task.status.is_held() {
            if let Some(agent) = task.assignee {
                self.held_by.entry(agent).or_default().insert(seq);
            }
        }
    }

    fn unindex(&mut self, seq: usize) {
        let task = &self.tasks[seq];
        if task.status == TaskStatus::Ready {
            self.ready
                .remove(&Shape::of(task), ReadyKey::new(task.priority, seq));
        }
        if task.status.is_held() {
            if let Some(agent) = task.assignee {
                if let Some(held) = self.held_by.get_mut(&agent) {
                    held.remove(&seq);
                    if held.is_empty() {
                        self.held_by.remove(&agent);
                    }
                }
            }
        }
    }
}
