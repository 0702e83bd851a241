//! The tasks and their indexes: by id, dependents (reverse DAG edges), ready (for
//! claim-next), held per agent, per plan.
//!
//! Tasks are never removed, so they live in a `Vec` in creation order and the indexes refer to
//! them by position (`seq`). Every status/assignee change goes through [`TaskStore::update`],
//! which takes the task out of the indexes before the change and puts it back after, so the
//! indexes cannot drift from the tasks.
//!
//! A million tasks must be cheap to hold, so the indexes copy nothing they can refer to: the
//! id index is a hash table of positions that hashes the task's own id, positions are 32 bits
//! ([`crate::limits::MAX_TASKS`]), dependents are kept only for tasks that have some, and the
//! store interns each distinct shape and plan id so that tasks share one copy.

use std::collections::{BTreeMap, BTreeSet};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;

use hashbrown::HashTable;

use crate::agent::AgentId;
use crate::task::{Task, TaskShape, TaskStatus};

use super::ready_index::{ReadyIndex, ReadyKey, Shape};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct TaskStore {
    tasks: Vec<Task>,
    by_id: IdIndex,
    /// Tasks that list the task at a position as a dependency, in creation order; absent for
    /// tasks nobody depends on.
    dependents: BTreeMap<u32, Vec<u32>>,
    ready: ReadyIndex,
    held_by: BTreeMap<AgentId, BTreeSet<usize>>,
    plans: BTreeMap<Arc<str>, Vec<u32>>,
    /// Every distinct non-empty shape, shared by the tasks of that shape.
    shapes: BTreeSet<Arc<TaskShape>>,
}

/// Positions of tasks, found by id: a hash table of 32-bit positions whose hash is the id's
/// (so the id is not copied into the index). Only ever looked up, never iterated, so its
/// order does not matter; the hasher has fixed keys all the same.
#[derive(Debug, Clone, Default)]
struct IdIndex(HashTable<u32>);

fn id_hash(id: &str) -> u64 {
    let mut hasher = DefaultHasher::new();
    id.hash(&mut hasher);
    hasher.finish()
}

/// A position as the indexes keep it. Positions below [`crate::limits::MAX_TASKS`] fit:
/// submit refuses tasks beyond it.
fn position(seq: usize) -> u32 {
    u32::try_from(seq).unwrap_or(u32::MAX)
}

impl IdIndex {
    fn find(&self, tasks: &[Task], id: &str) -> Option<usize> {
        self.0
            .find(id_hash(id), |&seq| tasks[seq as usize].id == id)
            .map(|&seq| seq as usize)
    }

    /// Adds `tasks[seq]`, whose id must not be indexed yet.
    fn insert(&mut self, tasks: &[Task], seq: usize) {
        self.0
            .insert_unique(id_hash(&tasks[seq].id), position(seq), |&other| {
                id_hash(&tasks[other as usize].id)
            });
    }

    fn len(&self) -> usize {
        self.0.len()
    }
}

/// Equal when they index the same positions (over equal tasks, the same ids).
impl PartialEq for IdIndex {
    fn eq(&self, other: &Self) -> bool {
        let sorted = |index: &Self| {
            let mut seqs: Vec<u32> = index.0.iter().copied().collect();
            seqs.sort_unstable();
            seqs
        };
        self.len() == other.len() && sorted(self) == sorted(other)
    }
}

impl Eq for IdIndex {}

impl TaskStore {
    pub fn seq_of(&self, id: &str) -> Option<usize> {
        self.by_id.find(&self.tasks, id)
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
        self.seq_of(id).is_some()
    }

    pub fn plan_exists(&self, plan_id: &str) -> bool {
        self.plans.contains_key(plan_id)
    }

    pub fn plan_tasks(&self, plan_id: &str) -> impl Iterator<Item = &Task> {
        self.plans
            .get(plan_id)
            .into_iter()
            .flatten()
            .map(|&seq| &self.tasks[seq as usize])
    }

    /// Positions of the tasks that depend on the task at `seq`, in creation order.
    pub fn dependents(&self, seq: usize) -> impl DoubleEndedIterator<Item = usize> + '_ {
        self.dependents
            .get(&position(seq))
            .into_iter()
            .flatten()
            .map(|&dependent| dependent as usize)
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

    /// Whether the plan lists the task at `seq`.
    pub fn plan_lists(&self, plan_id: &str, seq: usize) -> bool {
        // A plan lists its tasks in creation order (an invariant), so a binary search finds
        // the task: a linear scan would make the invariant check quadratic in the plan size.
        self.plans
            .get(plan_id)
            .is_some_and(|seqs| seqs.binary_search(&position(seq)).is_ok())
    }

    pub fn plan_index(&self) -> impl Iterator<Item = (&str, &[u32])> {
        self.plans
            .iter()
            .map(|(plan, seqs)| (&**plan, seqs.as_slice()))
    }

    /// The number of ids indexed (the invariants compare it with the number of tasks).
    pub fn ids_indexed(&self) -> usize {
        self.by_id.len()
    }

    /// Whether every shape the store shares is some task's, and every task's shape is the
    /// shared copy (for the invariants).
    pub fn shapes_shared(&self) -> Result<(), String> {
        let mut used = BTreeSet::new();
        for task in &self.tasks {
            if let Some(shape) = task.shape() {
                let shared = self
                    .shapes
                    .get(shape)
                    .ok_or_else(|| format!("task {}'s shape is not in the store", task.id))?;
                if !Arc::ptr_eq(shared, shape) {
                    return Err(format!("task {} has a copy of a shared shape", task.id));
                }
                used.insert(Arc::as_ptr(shape));
            }
        }
        if used.len() != self.shapes.len() {
            return Err(format!(
                "{} shapes kept, {} in use",
                self.shapes.len(),
                used.len()
            ));
        }
        Ok(())
    }

    /// Whether every dependency of the task is completed. Dependencies always exist (checked
    /// at submit); a missing one would count as unfinished.
    pub fn dependencies_completed(&self, task: &Task) -> bool {
        task.depends_on().iter().all(|dep| {
            self.by_id(dep)
                .is_some_and(|d| d.status == TaskStatus::Completed)
        })
    }

    /// Builds the store and every index from tasks in creation order (a snapshot image), in
    /// one pass plus a few sorts instead of one B-tree insert per task and index: a restart
    /// with a million tasks spends most of its time here. The result equals the store that
    /// inserting the tasks one by one (then linking their dependencies) would build; the
    /// B-trees compare by content, not shape. Fails on a task id that appears twice, or on
    /// more tasks than [`crate::limits::MAX_TASKS`].
    pub fn from_tasks(mut tasks: Vec<Task>) -> Result<Self, String> {
        if tasks.len() > crate::limits::MAX_TASKS {
            return Err(format!("{} tasks is more than a state holds", tasks.len()));
        }
        let mut by_id = IdIndex(HashTable::with_capacity(tasks.len()));
        for seq in 0..tasks.len() {
            if by_id.find(&tasks, &tasks[seq].id).is_some() {
                return Err(format!("task {} appears twice", tasks[seq].id));
            }
            by_id.insert(&tasks, seq);
        }
        let mut shapes = BTreeSet::new();
        let mut plans: BTreeMap<Arc<str>, Vec<u32>> = BTreeMap::new();
        // Consecutive tasks mostly share a plan and a shape (a plan's tasks are created
        // together), so the last one is kept at hand instead of looked up per task.
        let mut last_plan: Option<(Arc<str>, Vec<u32>)> = None;
        let mut last_shape: Option<Arc<TaskShape>> = None;
        for (seq, task) in tasks.iter_mut().enumerate() {
            if let Some(shape) = task.shape() {
                if !matches!(&last_shape, Some(last) if **last == **shape) {
                    last_shape = Some(intern(&mut shapes, shape));
                }
                if let Some(last) = &last_shape {
                    task.share_shape(Arc::clone(last));
                }
            }
            if let Some(plan) = task.plan() {
                match &mut last_plan {
                    Some((id, seqs)) if **id == **plan => seqs.push(position(seq)),
                    _ => {
                        let shared = plans
                            .get_key_value(&**plan)
                            .map_or_else(|| Arc::clone(plan), |(id, _)| Arc::clone(id));
                        if let Some((id, seqs)) = last_plan.replace((shared, vec![position(seq)])) {
                            plans.entry(id).or_default().extend(seqs);
                        }
                    }
                }
                if let Some((id, _)) = &last_plan {
                    task.share_plan(Arc::clone(id));
                }
            }
        }
        if let Some((id, seqs)) = last_plan {
            plans.entry(id).or_default().extend(seqs);
        }

        let mut dependents: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
        let mut ready: BTreeMap<Shape, Vec<ReadyKey>> = BTreeMap::new();
        let mut held_by: BTreeMap<AgentId, BTreeSet<usize>> = BTreeMap::new();
        let mut last_ready: Option<(Shape, Vec<ReadyKey>)> = None;
        for (seq, task) in tasks.iter().enumerate() {
            for dep in task.depends_on() {
                if let Some(dep_seq) = by_id.find(&tasks, dep) {
                    dependents
                        .entry(position(dep_seq))
                        .or_default()
                        .push(position(seq));
                }
            }
            if task.status == TaskStatus::Ready {
                let key = ReadyKey::new(task.priority, position(seq));
                match &mut last_ready {
                    Some((shape, keys)) if shape.is_of(task) => keys.push(key),
                    _ => {
                        if let Some((shape, keys)) =
                            last_ready.replace((Shape::of(task), vec![key]))
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
        }
        if let Some((shape, keys)) = last_ready {
            ready.entry(shape).or_default().extend(keys);
        }
        Ok(Self {
            by_id,
            dependents,
            ready: ReadyIndex::from_groups(ready),
            held_by,
            plans,
            shapes,
            tasks,
        })
    }

    /// Appends a task (its id must be new, and the store must hold fewer than
    /// [`crate::limits::MAX_TASKS`]) and indexes it. Dependency edges are added by
    /// [`Self::link_dependencies`] once every task of a batch is in, because a plan task may
    /// depend on one listed after it.
    pub fn insert(&mut self, mut task: Task) -> usize {
        let seq = self.tasks.len();
        if let Some(shape) = task.shape() {
            let shared = intern(&mut self.shapes, shape);
            task.share_shape(shared);
        }
        if let Some(plan) = task.plan() {
            // Looked up before inserting: a plan's tasks arrive together, and `entry` would
            // take a key for every one of them.
            match self.plans.get_key_value(&**plan) {
                Some((shared, _)) => {
                    let shared = Arc::clone(shared);
                    task.share_plan(Arc::clone(&shared));
                    if let Some(seqs) = self.plans.get_mut(&shared) {
                        seqs.push(position(seq));
                    }
                }
                None => {
                    self.plans.insert(Arc::clone(plan), vec![position(seq)]);
                }
            }
        }
        self.tasks.push(task);
        self.by_id.insert(&self.tasks, seq);
        self.index(seq);
        seq
    }

    pub fn link_dependencies(&mut self, seq: usize) {
        for dep in self.tasks[seq].depends_on() {
            if let Some(dep_seq) = self.by_id.find(&self.tasks, dep) {
                self.dependents
                    .entry(position(dep_seq))
                    .or_default()
                    .push(position(seq));
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
                .insert(Shape::of(task), ReadyKey::new(task.priority, position(seq)));
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
            self.ready.remove(
                &Shape::of(task),
                ReadyKey::new(task.priority, position(seq)),
            );
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

/// The shared copy of `shape`, added to `shapes` if it is the first of its kind.
fn intern(shapes: &mut BTreeSet<Arc<TaskShape>>, shape: &Arc<TaskShape>) -> Arc<TaskShape> {
    match shapes.get(shape) {
        Some(shared) => Arc::clone(shared),
        None => {
            shapes.insert(Arc::clone(shape));
            Arc::clone(shape)
        }
    }
}
