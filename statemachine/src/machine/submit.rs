//! Task submission: one task, or a plan validated as a whole.

use std::collections::BTreeSet;
use std::sync::Arc;

use crate::error::CommandError;
use crate::limits::{DEFAULT_MAX_ATTEMPTS, MAX_TASKS};
use crate::response::{Outcome, Response};
use crate::task::{NewTask, Task, TaskId, TaskSpec, TaskStatus};
use crate::validate::check_plan_graph;

use super::ctx::Ctx;
use super::StateMachine;

impl StateMachine {
    pub(super) fn submit_task(&mut self, ctx: &mut Ctx, spec: TaskSpec) -> Response {
        let id = spec
            .id
            .clone()
            .unwrap_or_else(|| format!("task-{}", ctx.revision));
        if self.tasks.contains(&id) {
            return Err(CommandError::already_exists(format!(
                "task {id} already exists"
            )));
        }
        self.check_room_for(1)?;
        let depends_on = dedup(&spec.depends_on);
        for dep in &depends_on {
            if *dep == id {
                return Err(CommandError::invalid(format!(
                    "dependency cycle: {id} -> {id}"
                )));
            }
            self.check_existing_dependency(&id, dep)?;
        }
        let task = self.new_task(ctx, id, spec, depends_on, None);
        let seq = self.tasks.insert(task);
        self.tasks.link_dependencies(seq);
        let task = self.tasks.get(seq).clone();
        ctx.task_changed(&task);
        Ok(Outcome::TaskSubmitted(task))
    }

    /// All tasks or none: every id, dependency and the absence of cycles is checked before the
    /// first task is inserted.
    pub(super) fn submit_plan(
        &mut self,
        ctx: &mut Ctx,
        plan_id: Option<String>,
        specs: Vec<TaskSpec>,
    ) -> Response {
        let plan_id = plan_id.unwrap_or_else(|| format!("plan-{}", ctx.revision));
        if self.tasks.plan_exists(&plan_id) {
            return Err(CommandError::already_exists(format!(
                "plan {plan_id} already exists"
            )));
        }
        self.check_room_for(specs.len())?;
        let ids: Vec<TaskId> = specs
            .iter()
            .enumerate()
            .map(|(n, spec)| {
                spec.id
                    .clone()
                    .unwrap_or_else(|| format!("task-{}-{}", ctx.revision, n + 1))
            })
            .collect();
        let deps: Vec<Vec<TaskId>> = specs.iter().map(|spec| dedup(&spec.depends_on)).collect();

        let graph: Vec<(&str, &[TaskId])> = ids
            .iter()
            .zip(&deps)
            .map(|(id, deps)| (id.as_str(), deps.as_slice()))
            .collect();
        check_plan_graph(&graph)?;
        let in_plan: BTreeSet<&str> = ids.iter().map(String::as_str).collect();
        for id in &ids {
            if self.tasks.contains(id) {
                return Err(CommandError::already_exists(format!(
                    "task {id} already exists"
                )));
            }
        }
        for (id, deps) in ids.iter().zip(&deps) {
            for dep in deps {
                if !in_plan.contains(dep.as_str()) {
                    self.check_existing_dependency(id, dep)?;
                }
            }
        }

        let mut seqs = Vec::with_capacity(specs.len());
        // One copy of the plan id, shared by its tasks.
        let shared_plan_id: Arc<str> = Arc::from(plan_id.as_str());
        for ((id, spec), deps) in ids.into_iter().zip(specs).zip(deps) {
            let task = self.new_task(ctx, id, spec, deps, Some(Arc::clone(&shared_plan_id)));
            seqs.push(self.tasks.insert(task));
        }
        for &seq in &seqs {
            self.tasks.link_dependencies(seq);
        }
        let tasks: Vec<Task> = seqs
            .iter()
            .map(|&seq| self.tasks.get(seq).clone())
            .collect();
        for task in &tasks {
            ctx.task_changed(task);
        }
        Ok(Outcome::PlanSubmitted { plan_id, tasks })
    }

    /// The state may hold `count` more tasks ([`MAX_TASKS`]: tasks are never removed).
    fn check_room_for(&self, count: usize) -> Result<(), CommandError> {
        if self.tasks.len().saturating_add(count) > MAX_TASKS {
            return Err(CommandError::exhausted(format!(
                "the state holds {} tasks; at most {MAX_TASKS} fit",
                self.tasks.len()
            )));
        }
        Ok(())
    }

    /// A dependency outside the batch being submitted must exist and must still be able to
    /// complete.
    fn check_existing_dependency(&self, id: &str, dep: &str) -> Result<(), CommandError> {
        let Some(dependency) = self.tasks.by_id(dep) else {
            return Err(CommandError::invalid(format!(
                "task {id} depends on unknown task {dep}"
            )));
        };
        if matches!(
            dependency.status,
            TaskStatus::Failed | TaskStatus::Cancelled
        ) {
            return Err(CommandError::precondition(format!(
                "task {id} depends on task {dep}, which is {} and will never complete",
                status_word(dependency.status)
            )));
        }
        Ok(())
    }

    /// The task as submitted: ready if every dependency is already completed (dependencies in
    /// the same plan are new, so never completed), blocked otherwise.
    fn new_task(
        &self,
        ctx: &Ctx,
        id: TaskId,
        spec: TaskSpec,
        depends_on: Vec<TaskId>,
        plan_id: Option<Arc<str>>,
    ) -> Task {
        let spec_max_attempts = spec.max_attempts;
        let all_completed = depends_on.iter().all(|dep| {
            self.tasks
                .by_id(dep)
                .is_some_and(|d| d.status == TaskStatus::Completed)
        });
        Task::new(NewTask {
            id,
            spec,
            depends_on,
            plan_id,
            status: if all_completed {
                TaskStatus::Ready
            } else {
                TaskStatus::Blocked
            },
            max_attempts: if spec_max_attempts == 0 {
                DEFAULT_MAX_ATTEMPTS
            } else {
                spec_max_attempts
            },
            now_ms: ctx.now_ms,
            revision: ctx.revision,
        })
    }
}

/// Listing a dependency twice means the same as listing it once.
fn dedup(deps: &[TaskId]) -> Vec<TaskId> {
    let mut seen = BTreeSet::new();
    deps.iter()
        .filter(|dep| seen.insert(dep.as_str()))
        .cloned()
        .collect()
}

pub(super) fn status_word(status: TaskStatus) -> &'static str {
    match status {
        TaskStatus::Blocked => "blocked",
        TaskStatus::Ready => "ready",
        TaskStatus::Claimed => "claimed",
        TaskStatus::Working => "working",
        TaskStatus::Completed => "completed",
        TaskStatus::Failed => "failed",
        TaskStatus::Cancelled => "cancelled",
    }
}
