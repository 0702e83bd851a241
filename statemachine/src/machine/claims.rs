//! The life of a task after submission: claim (specific or next), start, complete, fail,
//! cancel, requeue, and the cascades they cause in the dependency DAG.
//!
//! The claim token is the revision of the claim. Start/complete/fail must present the token
//! of the current claim, so a holder that lost the task (requeue, expiry, re-claim) can never
//! act on it again.

use crate::agent::{Agent, AgentId};
use crate::command::SessionRef;
use crate::error::CommandError;
use crate::response::{Cascade, Outcome, Response};
use crate::task::{Task, TaskId, TaskResult, TaskStatus, EXEC_CAPABILITY, LOST_EXEC_PREFIX};

use super::ctx::Ctx;
use super::ready_index::agent_can_run;
use super::submit::status_word;
use super::StateMachine;

/// The refusal of a compare-and-swap on a task that moved on.
fn stale_task_revision(task_id: &str, current: u64, expected: u64) -> CommandError {
    CommandError::precondition(format!(
        "task {task_id} is at revision {current}, not the expected {expected}"
    ))
}

impl StateMachine {
    /// Read-only: the refusal a compare-and-swap claim is certain to get, if this (possibly
    /// stale) replica already shows it, so the API edge can answer without a Raft round trip.
    /// Revisions only grow, so a task already past `expected` can never be claimed at it. Not
    /// certain, and so `None`: an `expected` newer than this replica has seen, and a retry of a
    /// request this replica already applied — its own claim moved the revision, and its
    /// session holds the answer it must get again (both are recorded in the same apply).
    pub fn lost_claim(
        &self,
        task_id: &str,
        expected_revision: u64,
        session: Option<SessionRef>,
    ) -> Option<CommandError> {
        if session.is_some_and(|s| self.sessions.has_response(s.client_id, s.seq)) {
            return None;
        }
        let task = self.tasks.get(self.tasks.seq_of(task_id)?);
        (task.revision > expected_revision)
            .then(|| stale_task_revision(task_id, task.revision, expected_revision))
    }

    /// Claims one named task; with `expected_revision`, only if the task is still at that
    /// revision (compare-and-set).
    pub(super) fn claim_task(
        &mut self,
        ctx: &mut Ctx,
        task_id: &str,
        agent_id: AgentId,
        expected_revision: Option<u64>,
    ) -> Response {
        let seq = self.task_seq(task_id)?;
        let agent = self.claiming_agent(agent_id)?;
        let task = self.tasks.get(seq);
        if let Some(expected) = expected_revision {
            if task.revision != expected {
                return Err(stale_task_revision(task_id, task.revision, expected));
            }
        }
        if task.status != TaskStatus::Ready {
            return Err(CommandError::precondition(format!(
                "task {task_id} is {}, not ready",
                status_word(task.status)
            )));
        }
        check_eligible(agent, task)?;
        Ok(Outcome::TaskClaimed(Some(self.grant_claim(
            ctx,
            seq,
            agent_id,
            TaskStatus::Claimed,
        ))))
    }

    /// The best ready task this agent can run (highest priority, then oldest), found through the
    /// ready index without scanning tasks, claimed with `status`: `Claimed`, or `Working` for a
    /// claim and start in one write (one event, ready → working, under a claim token like any
    /// claim's). `None` when there is nothing for this agent.
    pub(super) fn claim_next(
        &mut self,
        ctx: &mut Ctx,
        agent_id: AgentId,
        status: TaskStatus,
    ) -> Response {
        debug_assert!(status.is_held());
        let agent = self.claiming_agent(agent_id)?;
        let Some(seq) = self.tasks.ready_index().best_for(agent) else {
            return Ok(Outcome::TaskClaimed(None));
        };
        Ok(Outcome::TaskClaimed(Some(
            self.grant_claim(ctx, seq, agent_id, status),
        )))
    }

    /// Completes a held task, then claims (started) the next one for the same agent. Every
    /// check that can refuse comes first — the completion's (the claim token) and the
    /// agent's (active) — so a refusal changes nothing. An agent with no room after the
    /// completion gets no next task rather than a refusal: it can hold more than its
    /// `max_concurrent` when it re-registered with a lower one while holding tasks.
    pub(super) fn complete_and_claim_next(
        &mut self,
        ctx: &mut Ctx,
        task_id: &str,
        agent_id: AgentId,
        claim_token: u64,
        result: TaskResult,
    ) -> Response {
        self.held_task(task_id, agent_id, claim_token)?;
        self.active_agent(agent_id)?;
        let (task, cascade) =
            match self.complete_task(ctx, task_id, agent_id, claim_token, result)? {
                Outcome::TaskUpdated { task, cascade } => (task, cascade),
                other => {
                    return Err(CommandError::precondition(format!(
                        "internal: completing {task_id} answered {other:?}"
                    )))
                }
            };
        // The agent is active (checked above), so with room the claim cannot be refused.
        let next = match self.claiming_agent(agent_id) {
            Err(_no_room) => None,
            Ok(_) => match self.claim_next(ctx, agent_id, TaskStatus::Working)? {
                Outcome::TaskClaimed(next) => next.map(Box::new),
                _ => None,
            },
        };
        Ok(Outcome::TaskCompletedClaimedNext {
            task,
            cascade,
            next,
        })
    }

    /// An active agent with room for one more task.
    fn claiming_agent(&self, agent_id: AgentId) -> Result<&Agent, CommandError> {
        let agent = self.active_agent(agent_id)?;
        let held = self.tasks.held_count(agent_id);
        if held >= agent.max_concurrent as usize {
            return Err(CommandError::exhausted(format!(
                "agent {agent_id} already holds {held} tasks (max_concurrent {})",
                agent.max_concurrent
            )));
        }
        Ok(agent)
    }

    /// Hands a ready task to `agent_id` under this revision's claim token; `status` is
    /// `Claimed`, or `Working` for a claim that starts the task too.
    fn grant_claim(
        &mut self,
        ctx: &mut Ctx,
        seq: usize,
        agent_id: AgentId,
        status: TaskStatus,
    ) -> Task {
        let task = self.tasks.update(seq, |task| {
            task.status = status;
            task.assignee = Some(agent_id);
            task.claim_token = Some(ctx.revision);
            task.attempts += 1;
            task.updated_at_ms = ctx.now_ms;
            task.revision = ctx.revision;
        });
        ctx.task_changed(task);
        task.clone()
    }

    /// Claimed → working. Starting a task that is already working (a retry) changes nothing.
    pub(super) fn start_task(
        &mut self,
        ctx: &mut Ctx,
        task_id: &str,
        agent_id: AgentId,
        claim_token: u64,
    ) -> Response {
        let seq = self.held_task(task_id, agent_id, claim_token)?;
        if self.tasks.get(seq).status == TaskStatus::Working {
            return Ok(updated(self.tasks.get(seq).clone(), Cascade::default()));
        }
        let task = self.tasks.update(seq, |task| {
            task.status = TaskStatus::Working;
            task.updated_at_ms = ctx.now_ms;
            task.revision = ctx.revision;
        });
        ctx.task_changed(task);
        Ok(updated(task.clone(), Cascade::default()))
    }

    /// Completed; dependents whose dependencies are now all completed become ready. The
    /// assignee and claim token stay on the task for the record.
    pub(super) fn complete_task(
        &mut self,
        ctx: &mut Ctx,
        task_id: &str,
        agent_id: AgentId,
        claim_token: u64,
        result: TaskResult,
    ) -> Response {
        let seq = self.held_task(task_id, agent_id, claim_token)?;
        let task = self
            .tasks
            .update(seq, |task| {
                task.status = TaskStatus::Completed;
                task.set_result(Some(result));
                task.updated_at_ms = ctx.now_ms;
                task.revision = ctx.revision;
            })
            .clone();
        ctx.task_changed(&task);
        let mut cascade = Cascade::default();
        for dependent in self.tasks.dependents(seq).collect::<Vec<_>>() {
            let waiting = self.tasks.get(dependent);
            if waiting.status == TaskStatus::Blocked && self.tasks.dependencies_completed(waiting) {
                let unblocked = self.tasks.update(dependent, |task| {
                    task.status = TaskStatus::Ready;
                    task.updated_at_ms = ctx.now_ms;
                    task.revision = ctx.revision;
                });
                ctx.task_changed(unblocked);
                cascade.unblocked.push(unblocked.id.clone());
            }
        }
        Ok(updated(task, cascade))
    }

    /// Back to ready while attempts remain; otherwise failed for good, and every transitive
    /// dependent that has not finished is cancelled with a reason naming this task.
    pub(super) fn fail_task(
        &mut self,
        ctx: &mut Ctx,
        task_id: &str,
        agent_id: AgentId,
        claim_token: u64,
        error: String,
    ) -> Response {
        let seq = self.held_task(task_id, agent_id, claim_token)?;
        let current = self.tasks.get(seq);
        if current.attempts < current.max_attempts {
            let task = self.tasks.update(seq, |task| {
                requeue(task, ctx);
                task.set_error(Some(error));
            });
            ctx.task_changed(task);
            return Ok(updated(task.clone(), Cascade::default()));
        }
        let task = self
            .tasks
            .update(seq, |task| {
                task.status = TaskStatus::Failed;
                task.set_error(Some(error));
                task.updated_at_ms = ctx.now_ms;
                task.revision = ctx.revision;
            })
            .clone();
        ctx.task_changed(&task);
        let reason = format!("cancelled: dependency {task_id} failed");
        let cancelled = self.cancel_dependents(ctx, seq, &reason);
        Ok(updated(
            task,
            Cascade {
                unblocked: Vec::new(),
                cancelled,
            },
        ))
    }

    /// Operator cancel of a task that has not finished; a holder loses it, and every
    /// transitive dependent that has not finished is cancelled too.
    pub(super) fn cancel_task(&mut self, ctx: &mut Ctx, task_id: &str, reason: &str) -> Response {
        let seq = self.task_seq(task_id)?;
        let status = self.tasks.get(seq).status;
        if status.is_terminal() {
            return Err(CommandError::precondition(format!(
                "task {task_id} is already {}",
                status_word(status)
            )));
        }
        let error = if reason.is_empty() {
            "cancelled".to_string()
        } else {
            format!("cancelled: {reason}")
        };
        let task = self
            .tasks
            .update(seq, |task| cancel(task, ctx, error))
            .clone();
        ctx.task_changed(&task);
        let dependents_reason = format!("cancelled: dependency {task_id} was cancelled");
        let cancelled = self.cancel_dependents(ctx, seq, &dependents_reason);
        Ok(updated(
            task,
            Cascade {
                unblocked: Vec::new(),
                cancelled,
            },
        ))
    }

    /// Operator requeue of a held task: back to ready, the holder's token becomes stale.
    pub(super) fn requeue_task(&mut self, ctx: &mut Ctx, task_id: &str, reason: &str) -> Response {
        let seq = self.task_seq(task_id)?;
        let status = self.tasks.get(seq).status;
        if !status.is_held() {
            return Err(CommandError::precondition(format!(
                "task {task_id} is {}, not claimed or working",
                status_word(status)
            )));
        }
        let task = self.tasks.update(seq, |task| {
            requeue(task, ctx);
            if !reason.is_empty() {
                task.set_error(Some(format!("requeued: {reason}")));
            }
        });
        ctx.task_changed(task);
        Ok(updated(task.clone(), Cascade::default()))
    }

    /// Requeues every task the agent holds (it expired or left). The attempt was counted when
    /// the task was claimed, so none is added here.
    ///
    /// An exec (a task requiring [`EXEC_CAPABILITY`]) is not idempotent: one whose attempts
    /// are used up is not run again but fails as lost (`LOST_EXEC_PREFIX`); only an exec
    /// submitted with more attempts (`percyctl exec --retry`) is requeued.
    pub(super) fn requeue_held_tasks(&mut self, ctx: &mut Ctx, agent_id: AgentId) -> Vec<TaskId> {
        let held: Vec<usize> = self.tasks.held_by(agent_id).collect();
        let mut requeued = Vec::with_capacity(held.len());
        for seq in held {
            let current = self.tasks.get(seq);
            if current.requires().contains(EXEC_CAPABILITY)
                && current.attempts >= current.max_attempts
            {
                let error = format!(
                    "{LOST_EXEC_PREFIX}: executor agent {agent_id} expired or left while running it"
                );
                let task = self.tasks.update(seq, |task| {
                    task.status = TaskStatus::Failed;
                    task.set_error(Some(error));
                    task.updated_at_ms = ctx.now_ms;
                    task.revision = ctx.revision;
                });
                ctx.task_changed(task);
                let reason = format!("cancelled: dependency {} was lost", task.id);
                self.cancel_dependents(ctx, seq, &reason);
                continue;
            }
            let task = self.tasks.update(seq, |task| requeue(task, ctx));
            ctx.task_changed(task);
            requeued.push(task.id.clone());
        }
        requeued
    }

    /// Cancels every not-yet-finished task that depends, directly or transitively, on
    /// `tasks[root]`. Such tasks are blocked (they wait for `root`), but any status is handled
    /// so the indexes stay right whatever happens.
    fn cancel_dependents(&mut self, ctx: &mut Ctx, root: usize, reason: &str) -> Vec<TaskId> {
        let mut cancelled = Vec::new();
        let mut pending: Vec<usize> = self.tasks.dependents(root).rev().collect();
        while let Some(seq) = pending.pop() {
            if self.tasks.get(seq).status.is_terminal() {
                // Already finished: its own dependents were dealt with when it finished.
                continue;
            }
            let task = self
                .tasks
                .update(seq, |task| cancel(task, ctx, reason.to_string()));
            ctx.task_changed(task);
            cancelled.push(task.id.clone());
            pending.extend(self.tasks.dependents(seq).rev().collect::<Vec<_>>());
        }
        cancelled
    }

    fn task_seq(&self, task_id: &str) -> Result<usize, CommandError> {
        self.tasks
            .seq_of(task_id)
            .ok_or_else(|| CommandError::not_found(format!("task {task_id} not found")))
    }

    /// The task is held by `agent_id` under `claim_token`; anything else means the caller's
    /// token is stale.
    fn held_task(
        &self,
        task_id: &str,
        agent_id: AgentId,
        claim_token: u64,
    ) -> Result<usize, CommandError> {
        let seq = self.task_seq(task_id)?;
        let task = self.tasks.get(seq);
        if !task.status.is_held() {
            return Err(CommandError::precondition(format!(
                "stale claim token {claim_token} for task {task_id}: the task is {}",
                status_word(task.status)
            )));
        }
        if task.assignee != Some(agent_id) || task.claim_token != Some(claim_token) {
            return Err(CommandError::precondition(format!(
                "stale claim token {claim_token} of agent {agent_id} for task {task_id}: it is held by agent {} under token {}",
                task.assignee.map_or_else(|| "?".to_string(), |a| a.to_string()),
                task.claim_token.map_or_else(|| "?".to_string(), |t| t.to_string()),
            )));
        }
        Ok(seq)
    }
}

/// The agent offers everything the task needs.
fn check_eligible(agent: &Agent, task: &Task) -> Result<(), CommandError> {
    if agent_can_run(agent, task.requires(), task.selector()) {
        return Ok(());
    }
    if let Some(missing) = task
        .requires()
        .iter()
        .find(|cap| !agent.capabilities.contains(*cap))
    {
        return Err(CommandError::precondition(format!(
            "agent {} lacks capability {missing} required by task {}",
            agent.id, task.id
        )));
    }
    let (key, value) = task
        .selector()
        .iter()
        .find(|(key, value)| agent.labels.get(*key) != Some(*value))
        .map_or(("?", "?"), |(k, v)| (k.as_str(), v.as_str()));
    Err(CommandError::precondition(format!(
        "agent {} does not match selector {key}={value} of task {}",
        agent.id, task.id
    )))
}

fn requeue(task: &mut Task, ctx: &Ctx) {
    task.status = TaskStatus::Ready;
    task.assignee = None;
    task.claim_token = None;
    task.updated_at_ms = ctx.now_ms;
    task.revision = ctx.revision;
}

/// A cancelled task keeps its last assignee and token for the record; it leaves the held
/// index anyway because it is no longer held.
fn cancel(task: &mut Task, ctx: &Ctx, error: String) {
    task.status = TaskStatus::Cancelled;
    task.set_error(Some(error));
    task.updated_at_ms = ctx.now_ms;
    task.revision = ctx.revision;
}

fn updated(task: Task, cascade: Cascade) -> Outcome {
    Outcome::TaskUpdated { task, cascade }
}
