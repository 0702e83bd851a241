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

    /// Builds the store and every index from tasks in creation order (a snapshot image), in
    /// one pass plus a few sorts instead of one B-tree insert per task and index: a restart
    /// with a million tasks spends most of its time here. The result equals the store that
    /// inserting the tasks one by one (then linking their dependencies) would build; the
    /// B-trees compare by content, not shape. Fails on a task id that appears twice.
    pub fn from_tasks(tasks: Vec<Task>) -> Result<Self, String> {
        // Ids are usually created in increasing order (generated ids carry the revision), so
        // this sort mostly finds one long run and costs a linear pass.
        let mut ids: Vec<(&str, usize)> = tasks
            .iter()
            .enumerate()
            .map(|(seq, task)| (task.id.as_str(), seq))
            .collect();
        ids.sort_unstable_by(|a, b| a.0.cmp(b.0));
        if let Some(pair) = ids.windows(2).find(|pair| pair[0].0 == pair[1].0) {
            return Err(format!("task {} appears twice", pair[0].0));
        }
        // From sorted, distinct keys the B-tree is built in bulk.
        let by_id: BTreeMap<String, usize> = ids
            .into_iter()
            .map(|(id, seq)| (id.to_owned(), seq))
            .collect();

        let mut dependents = vec![Vec::new(); tasks.len()];
        let mut ready: BTreeMap<Shape, Vec<ReadyKey>> = BTreeMap::new();
        let mut held_by: BTreeMap<AgentId, BTreeSet<usize>> = BTreeMap::new();
        let mut plans: BTreeMap<String, Vec<usize>> = BTreeMap::new();
        // Consecutive tasks mostly share a plan and a shape (a plan's tasks are created
        // together), so the last group is kept at hand instead of looked up per task.
        let mut last_plan: Option<(&str, Vec<usize>)> = None;
        let mut last_shape: Option<(Shape, Vec<ReadyKey>)> = None;
        for (seq, task) in tasks.iter().enumerate() {
            for dep in &task.depends_on {
                if let Some(&dep_seq) = by_id.get(dep.as_str()) {
                    dependents[dep_seq].push(seq);
                }
            }
            if task.status == TaskStatus::Ready {
                let key = ReadyKey::new(task.priority, seq);
                match &mut last_shape {
                    Some((shape, keys)) if shape.is_of(task) => keys.push(key),
                    _ => {
                        if let Some((shape, keys)) =
                            last_shape.replace((Shape::of(task), vec![key]))
                        {
                            ready.entry(shape).or_default().extend(keys);
                        }
                    }
                }
            }
            if task.status.is_held() {
                if let Some(agent) = task.assignee {
                    held_by.entry(agent).or_default().insert(seq);
                }
            }
            if let Some(plan) = task.plan_id.as_deref() {
                match &mut last_plan {
                    Some((id, seqs)) if *id == plan => seqs.push(seq),
                    _ => {
                        if let Some((id, seqs)) = last_plan.replace((plan, vec![seq])) {
                            plans.entry(id.to_owned()).or_default().extend(seqs);
                        }
                    }
                }
            }
        }
        if let Some((shape, keys)) = last_shape {
            ready.entry(shape).or_default().extend(keys);
        }
        if let Some((id, seqs)) = last_plan {
            plans.entry(id.to_owned()).or_default().extend(seqs);
        }
        Ok(Self {
            by_id,
            dependents,
            ready: ReadyIndex::from_groups(ready),
            held_by,
            plans,
            tasks,
        })
    }

    /// Appends a task (its id must be new) and indexes it. Dependency edges are added by
    /// [`Self::link_dependencies`] once every task of a batch is in, because a plan task may
    /// depend on one listed after it.
    pub fn insert(&mut self, task: Task) -> usize {
        let seq = self.tasks.len();
        self.by_id.insert(task.id.clone(), seq);
        if let Some(plan) = &task.plan_id {
            // Looked up before inserting: a plan's tasks arrive together, and `entry` would
            // allocate a key for every one of them.
            match self.plans.get_mut(plan) {
                Some(seqs) => seqs.push(seq),
                None => {
                    self.plans.insert(plan.clone(), vec![seq]);
                }
            }
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
