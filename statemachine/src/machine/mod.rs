//! The state machine: the replicated state, `apply`, and the read accessors.
//!
//! Each concept lives in its own module: the entity stores with their indexes
//! (`agent_registry`, `task_store` + `ready_index`, `lock_table`, `sessions`) and the command
//! handlers that use them (`agents`, `submit`, `claims`, `locks`, `config_kv`,
//! `definitions`, `messages`). Handlers follow one rule: check everything first, then mutate
//! with nothing left that can fail, so an error never leaves a partial change behind.

mod agent_registry;
mod agents;
mod claims;
mod config_kv;
mod ctx;
mod definitions;
mod image;
mod invariants;
mod lock_table;
mod locks;
mod messages;
mod ready_index;
mod runs;
mod sessions;
mod submit;
mod task_store;
#[cfg(test)]
mod tests;
mod tokens;

use std::collections::BTreeMap;

use crate::agent::{Agent, AgentId, CheckpointedLoad};
use crate::command::{Command, Op};
use crate::config::ConfigEntry;
use crate::definition::Definition;
use crate::definition_run::DefinitionRun;
use crate::error::CommandError;
use crate::event::Event;
use crate::lock::{Lock, LockWaiter};
use crate::message::{Message, Recipient};
use crate::response::{Outcome, Response};
use crate::task::{Task, TaskStatus};
use crate::token::{Token, TokenId};
use crate::validate::validate;

use agent_registry::AgentRegistry;
use ctx::Ctx;
use lock_table::LockTable;
use messages::Mailbox;
use sessions::{Admission, SessionTable};
use task_store::TaskStore;
use tokens::TokenTable;

/// The result of one apply: the answer for the caller and the changes for watchers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    pub response: Response,
    pub events: Vec<Event>,
    /// Queued lock requests (by queued revision) that left the queue in this command, granted
    /// or dropped — also when events are not built. A node wakes the callers waiting on
    /// exactly these, instead of every waiter at every revision.
    pub resolved_lock_waiters: Vec<u64>,
}

/// One page of a task listing ([`StateMachine::tasks_page`]).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct TaskPage<'a> {
    pub tasks: Vec<&'a Task>,
    /// Where the next page starts, when this one was full (it may then be empty).
    pub next: Option<usize>,
}

/// Which tasks a listing returns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TaskFilter {
    pub status: Option<TaskStatus>,
    pub plan_id: Option<String>,
    pub assignee: Option<AgentId>,
    /// 0 means no limit.
    pub limit: usize,
}

impl TaskFilter {
    fn matches(&self, task: &Task) -> bool {
        self.status.is_none_or(|status| task.status == status)
            && self
                .plan_id
                .as_ref()
                .is_none_or(|plan| task.plan_id() == Some(plan.as_str()))
            && self
                .assignee
                .is_none_or(|agent| task.assignee == Some(agent))
    }
}

/// The whole replicated state. Two machines fed the same commands compare equal (indexes
/// included: they are B-trees rebuilt deterministically).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StateMachine {
    revision: u64,
    /// The latest `now_ms` applied. Time in the state machine never runs backwards: a new
    /// leader whose wall clock is behind the old one's stamps an earlier `now_ms`, and without
    /// this clamp a lock TTL or a session could outlive its deadline again.
    clock_ms: u64,
    agents: AgentRegistry,
    tasks: TaskStore,
    locks: LockTable,
    config: BTreeMap<String, ConfigEntry>,
    definitions: BTreeMap<String, Definition>,
    /// Definition name → its run (runner, iterations, steering messages).
    runs: BTreeMap<String, DefinitionRun>,
    mailboxes: BTreeMap<Recipient, Mailbox>,
    sessions: SessionTable,
    tokens: TokenTable,
    /// The loads active agents reported, as of the last load checkpoint (not every heartbeat).
    agent_loads: BTreeMap<AgentId, CheckpointedLoad>,
}

impl StateMachine {
    pub fn new() -> Self {
        Self::default()
    }

    /// Revision of the last applied command (0 for a new machine).
    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// The state machine's clock: the latest leader timestamp it applied (never decreasing).
    pub fn clock_ms(&self) -> u64 {
        self.clock_ms
    }

    /// Applies one command. `revision` must be greater than [`Self::revision`]; it becomes the
    /// revision of everything this command changes (and every fencing/claim token it grants).
    ///
    /// A `revision` that is not greater is refused with `FailedPrecondition` and changes
    /// nothing (not even [`Self::revision`]). Any other command advances the revision, whether
    /// it succeeds, fails or is a session duplicate.
    pub fn apply(&mut self, revision: u64, now_ms: u64, command: Command) -> Applied {
        self.apply_recording(revision, now_ms, command, true)
    }

    /// [`Self::apply`] without building the change events (`events` is empty): for replaying
    /// a log nobody watches yet, where copying every changed entity into an event only to
    /// drop it was a large part of a restart. State and response are exactly as `apply`'s.
    pub fn apply_without_events(
        &mut self,
        revision: u64,
        now_ms: u64,
        command: Command,
    ) -> Applied {
        self.apply_recording(revision, now_ms, command, false)
    }

    fn apply_recording(
        &mut self,
        revision: u64,
        now_ms: u64,
        command: Command,
        record_events: bool,
    ) -> Applied {
        if revision <= self.revision {
            return Applied {
                response: Err(CommandError::precondition(format!(
                    "revision {revision} is not after the last applied revision {}",
                    self.revision
                ))),
                events: Vec::new(),
                resolved_lock_waiters: Vec::new(),
            };
        }
        self.revision = revision;
        self.clock_ms = self.clock_ms.max(now_ms);
        let now_ms = self.clock_ms;
        let mut ctx = Ctx::new(revision, now_ms, record_events);
        let response = match command.session {
            None => self.apply_op(&mut ctx, command.op),
            Some(session) => match self.sessions.admit(session, now_ms, revision) {
                Admission::Replay(response) => *response,
                Admission::Refuse(error) => Err(error),
                Admission::Proceed => {
                    let response = self.apply_op(&mut ctx, command.op);
                    self.sessions
                        .record(session, response.clone(), now_ms, revision);
                    response
                }
            },
        };
        // Spaced out as the state grows, or a debug replay is quadratic (see `full_check_due`).
        if cfg!(debug_assertions)
            && invariants::full_check_due(revision, invariants::entity_count(self))
        {
            if let Err(violation) = self.check_invariants() {
                panic!(
                    "state machine invariant violated, found after revision {revision} (checked \
                     in full every few revisions on a large state): {violation}"
                );
            }
        }
        let (events, resolved_lock_waiters) = ctx.finish(self);
        Applied {
            response,
            events,
            resolved_lock_waiters,
        }
    }

    fn apply_op(&mut self, ctx: &mut Ctx, op: Op) -> Response {
        validate(&op)?;
        let response = self.dispatch(ctx, op);
        debug_assert!(
            response.is_ok() || ctx.is_empty(),
            "a failed command must change nothing"
        );
        response
    }

    fn dispatch(&mut self, ctx: &mut Ctx, op: Op) -> Response {
        match op {
            Op::RegisterAgent {
                name,
                node,
                capabilities,
                labels,
                max_concurrent,
                ttl_ms,
            } => self.register_agent(
                ctx,
                agents::Registration {
                    name,
                    node,
                    capabilities,
                    labels,
                    max_concurrent,
                    ttl_ms,
                },
            ),
            Op::DeregisterAgent { agent_id } => self.deregister_agent(ctx, agent_id),
            Op::ExpireAgents { agent_ids } => Ok(self.expire_agents(ctx, &agent_ids)),
            Op::CheckpointAgents { last_seen_ms } => Ok(self.checkpoint_agents(ctx, &last_seen_ms)),
            Op::SubmitTask(spec) => self.submit_task(ctx, spec),
            Op::SubmitPlan { plan_id, tasks } => self.submit_plan(ctx, plan_id, tasks),
            Op::ClaimTask {
                task_id,
                agent_id,
                expected_revision,
            } => self.claim_task(ctx, &task_id, agent_id, expected_revision),
            Op::ClaimNext { agent_id } => self.claim_next(ctx, agent_id, TaskStatus::Claimed),
            Op::ClaimNextStarted { agent_id } => {
                self.claim_next(ctx, agent_id, TaskStatus::Working)
            }
            Op::CompleteAndClaimNext {
                task_id,
                agent_id,
                claim_token,
                result,
            } => self.complete_and_claim_next(ctx, &task_id, agent_id, claim_token, result),
            Op::StartTask {
                task_id,
                agent_id,
                claim_token,
            } => self.start_task(ctx, &task_id, agent_id, claim_token),
            Op::CompleteTask {
                task_id,
                agent_id,
                claim_token,
                result,
            } => self.complete_task(ctx, &task_id, agent_id, claim_token, result),
            Op::FailTask {
                task_id,
                agent_id,
                claim_token,
                error,
            } => self.fail_task(ctx, &task_id, agent_id, claim_token, error),
            Op::CancelTask { task_id, reason } => self.cancel_task(ctx, &task_id, &reason),
            Op::RequeueTask { task_id, reason } => self.requeue_task(ctx, &task_id, &reason),
            Op::AcquireLocks {
                agent_id,
                paths,
                mode,
                task_id,
                ttl_ms,
                wait_ms,
            } => self.acquire_locks(
                ctx,
                locks::AcquireRequest {
                    agent_id,
                    paths,
                    mode,
                    task_id,
                    ttl_ms,
                    wait_ms,
                },
            ),
            Op::ReleaseLocks { agent_id, paths } => self.release_locks(ctx, agent_id, &paths),
            Op::ReleaseAllLocks { agent_id } => self.release_all_locks(ctx, agent_id),
            Op::PutConfig {
                key,
                value,
                expected_revision,
            } => self.put_config(ctx, key, value, expected_revision),
            Op::DeleteConfig {
                key,
                expected_revision,
            } => self.delete_config(ctx, key, expected_revision),
            Op::ApplyDefinitions { definitions } => self.apply_definitions(ctx, definitions),
            Op::SetDefinitionState { name, desired } => {
                self.set_definition_state(ctx, &name, desired)
            }
            Op::SendMessage { from, to, body } => self.send_message(ctx, from, to, body),
            Op::Tick => Ok(self.tick(ctx)),
            Op::CreateToken { spec, bootstrap } => self.create_token(ctx, spec, bootstrap),
            Op::RevokeToken { token_id } => self.revoke_token(token_id),
            Op::ClaimDefinitionRun { name, agent_id } => {
                self.claim_definition_run(ctx, &name, agent_id)
            }
            Op::StartIteration {
                name,
                agent_id,
                run_token,
            } => self.start_iteration(ctx, &name, agent_id, run_token),
            Op::FinishIteration {
                name,
                agent_id,
                run_token,
                number,
                report,
            } => self.finish_iteration(ctx, &name, agent_id, run_token, number, report),
            Op::ReleaseDefinitionRun {
                name,
                agent_id,
                run_token,
            } => self.release_definition_run(ctx, &name, agent_id, run_token),
            Op::SteerDefinition { name, from, body } => {
                self.steer_definition(ctx, &name, from, body)
            }
            Op::CheckpointAgentLoads { loads } => Ok(self.checkpoint_agent_loads(ctx, loads)),
        }
    }

    /// Time passes: lock waits past their deadline are dropped, lock holders past their TTL
    /// released (and waiters granted), idle sessions forgotten.
    fn tick(&mut self, ctx: &mut Ctx) -> Outcome {
        let dropped = self.locks.drop_waiters_due(ctx.now_ms);
        let expired_waiters = u32::try_from(dropped.len()).unwrap_or(u32::MAX);
        ctx.waiters_resolved(dropped);
        let expired_lock_holders = self.expire_lock_holders(ctx);
        let expired_sessions = self.sessions.expire_idle(ctx.now_ms);
        let granted = if expired_waiters > 0 || expired_lock_holders > 0 {
            self.grant_waiters(ctx)
        } else {
            Vec::new()
        };
        Outcome::Ticked {
            expired_lock_holders,
            expired_waiters,
            expired_sessions,
            granted,
        }
    }

    /// Earliest `now_ms` at which a `Tick` would change something (a lock TTL, a wait deadline,
    /// an idle session), so the leader knows when to propose one. Something is due at
    /// `now_ms >= deadline`.
    pub fn next_deadline_ms(&self) -> Option<u64> {
        [
            self.locks.next_holder_expiry(),
            self.locks.next_waiter_deadline(),
            self.sessions.next_idle_deadline(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    pub fn check_invariants(&self) -> Result<(), String> {
        invariants::check(self)
    }

    pub fn agent(&self, id: AgentId) -> Option<&Agent> {
        self.agents.get(id)
    }

    /// The newest agent registered under `name` (it may be expired or deregistered).
    pub fn agent_by_name(&self, name: &str) -> Option<&Agent> {
        self.agents.by_name(name)
    }

    /// In id order.
    pub fn agents(&self) -> Vec<&Agent> {
        self.agents.iter().collect()
    }

    pub fn task(&self, id: &str) -> Option<&Task> {
        self.tasks.by_id(id)
    }

    /// In creation order (plan tasks in the order the plan lists them).
    pub fn tasks(&self, filter: &TaskFilter) -> Vec<&Task> {
        let limit = if filter.limit == 0 {
            usize::MAX
        } else {
            filter.limit
        };
        match &filter.plan_id {
            // The plan index avoids scanning every task for the common "show my plan" query.
            Some(plan) => self
                .tasks
                .plan_tasks(plan)
                .filter(|task| filter.matches(task))
                .take(limit)
                .collect(),
            None => self
                .tasks
                .iter()
                .filter(|task| filter.matches(task))
                .take(limit)
                .collect(),
        }
    }

    /// One page of [`StateMachine::tasks`]: up to `page_size` matching tasks from position
    /// `from` of the listing's order (creation order, or the plan's order with a plan filter;
    /// tasks are never removed, so positions are stable). `filter.limit` is ignored.
    pub fn tasks_page(&self, filter: &TaskFilter, from: usize, page_size: usize) -> TaskPage<'_> {
        assert!(page_size > 0, "a page holds at least one task");
        let candidates: Box<dyn Iterator<Item = (usize, &Task)>> = match &filter.plan_id {
            Some(plan) => Box::new(self.tasks.plan_tasks(plan).enumerate().skip(from)),
            None => Box::new(self.tasks.iter().enumerate().skip(from)),
        };
        let mut page = TaskPage::default();
        for (position, task) in candidates.filter(|(_, task)| filter.matches(task)) {
            page.tasks.push(task);
            if page.tasks.len() == page_size {
                page.next = Some(position + 1);
                break;
            }
        }
        page
    }

    /// In path order.
    pub fn locks(&self) -> Vec<&Lock> {
        self.locks.locks().collect()
    }

    /// Locks under `prefix` (a plain string prefix of the path), in path order, from the
    /// first path after `after`: a listing's pages, continued by key so that a lock released
    /// between two pages shifts nothing.
    pub fn locks_after<'a>(
        &'a self,
        prefix: &'a str,
        after: Option<&'a str>,
    ) -> impl Iterator<Item = &'a Lock> {
        self.locks
            .locks_from(page_start(prefix, after))
            .take_while(move |lock| lock.path.starts_with(prefix))
    }

    /// Agents in id order from the first id above `after`: a listing's pages.
    pub fn agents_after(&self, after: Option<AgentId>) -> impl Iterator<Item = &Agent> {
        self.agents.after(after)
    }

    /// Config entries under `prefix`, in key order, from the first key after `after`.
    pub fn config_after<'a>(
        &'a self,
        prefix: &'a str,
        after: Option<&'a str>,
    ) -> impl Iterator<Item = &'a ConfigEntry> {
        self.config
            .range::<str, _>((page_start(prefix, after), std::ops::Bound::Unbounded))
            .take_while(move |(key, _)| key.starts_with(prefix))
            .map(|(_, entry)| entry)
    }

    /// In FIFO order.
    pub fn lock_waiters(&self) -> Vec<&LockWaiter> {
        self.locks.waiters().collect()
    }

    /// The lock on exactly `path` (canonical form), if any is held.
    pub fn lock(&self, path: &str) -> Option<&Lock> {
        self.locks.get(path)
    }

    /// The waiting request queued at `queued_revision`, if it still waits.
    pub fn lock_waiter(&self, queued_revision: u64) -> Option<&LockWaiter> {
        self.locks.waiter(queued_revision)
    }

    pub fn config(&self, key: &str) -> Option<&ConfigEntry> {
        self.config.get(key)
    }

    /// Keys starting with `prefix`, in key order.
    pub fn config_range(&self, prefix: &str) -> Vec<&ConfigEntry> {
        self.config
            .range::<str, _>((
                std::ops::Bound::Included(prefix),
                std::ops::Bound::Unbounded,
            ))
            .take_while(|(key, _)| key.starts_with(prefix))
            .map(|(_, entry)| entry)
            .collect()
    }

    pub fn definition(&self, name: &str) -> Option<&Definition> {
        self.definitions.get(name)
    }

    /// In name order.
    pub fn definitions(&self) -> Vec<&Definition> {
        self.definitions.values().collect()
    }

    /// The run of a definition (absent until first claimed or steered).
    pub fn definition_run(&self, name: &str) -> Option<&DefinitionRun> {
        self.runs.get(name)
    }

    /// In definition name order.
    pub fn definition_runs(&self) -> Vec<&DefinitionRun> {
        self.runs.values().collect()
    }

    /// Messages in that mailbox with id > `after_id`, oldest first, and how many were dropped
    /// from it so far because it was full.
    pub fn messages(&self, recipient: &Recipient, after_id: u64) -> (Vec<&Message>, u64) {
        match self.mailboxes.get(recipient) {
            Some(mailbox) => (mailbox.after(after_id).collect(), mailbox.dropped),
            None => (Vec::new(), 0),
        }
    }

    /// The token whose secret hashes to `secret_sha256`, if it exists (not revoked).
    pub fn token_by_hash(&self, secret_sha256: &[u8; 32]) -> Option<&Token> {
        self.tokens.by_hash(secret_sha256)
    }

    pub fn token(&self, id: TokenId) -> Option<&Token> {
        self.tokens.get(id)
    }

    /// Live tokens, in id order.
    pub fn tokens(&self) -> Vec<&Token> {
        self.tokens.iter().collect()
    }

    /// Whether any token was ever created (revoked ones count): a cluster with tokens gets no
    /// second bootstrap admin token.
    pub fn has_ever_had_tokens(&self) -> bool {
        self.tokens.last_id() > 0
    }

    /// The load `agent_id` reported, as of the last load checkpoint (`None`: none recorded, or
    /// the agent is not active).
    pub fn agent_load(&self, agent_id: AgentId) -> Option<&CheckpointedLoad> {
        self.agent_loads.get(&agent_id).filter(|_| {
            self.agents
                .get(agent_id)
                .is_some_and(|a| a.status == crate::agent::AgentStatus::Active)
        })
    }

    /// How many entities the state holds (agents, tasks, locks and waiters, config keys,
    /// definitions, mailboxes, sessions): a snapshot's cost grows with it.
    pub fn entity_count(&self) -> usize {
        invariants::entity_count(self)
    }

    /// Compact binary image of the whole state, with a format version: the [`image::StateImage`],
    /// then the sections added since, in the order [`Self::restore`] reads them.
    pub fn snapshot(&self) -> Vec<u8> {
        self.snapshot_appended_to(Vec::new())
    }

    /// [`Self::snapshot`]'s bytes appended to `bytes`: for a caller that frames the image (the
    /// server's snapshot envelope) without copying tens of megabytes into a second buffer.
    pub fn snapshot_appended_to(&self, bytes: Vec<u8>) -> Vec<u8> {
        crate::codec::encode_appended(
            &(
                image::StateImageOf(self),
                image::TokenImage::of(self),
                image::RunImage::of(self),
                image::LoadImage::of(self),
            ),
            bytes,
        )
    }

    /// Refuses an unknown format version or corrupt bytes with a clear error. The restored
    /// state must also pass [`Self::check_invariants`], so a snapshot that decodes but makes
    /// no sense is refused as corrupt too.
    pub fn restore(bytes: &[u8]) -> Result<Self, crate::codec::CodecError> {
        let mut sections = crate::codec::Sections::open(bytes)?;
        let image: image::StateImage = sections.required()?;
        let tokens: image::TokenImage = sections.optional()?;
        let runs: image::RunImage = sections.optional()?;
        let loads: image::LoadImage = sections.optional()?;
        sections.finish()?;
        image.into_machine(tokens, runs, loads)
    }
}

/// Where a page of keys under `prefix` starts: after the previous page's last key, or at the
/// prefix itself for the first page (a key before the prefix cannot continue its listing).
fn page_start<'a>(prefix: &'a str, after: Option<&'a str>) -> std::ops::Bound<&'a str> {
    match after {
        Some(after) if after >= prefix => std::ops::Bound::Excluded(after),
        _ => std::ops::Bound::Included(prefix),
    }
}
