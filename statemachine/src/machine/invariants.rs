//! The invariants of the state, as code. Checked on every restored snapshot, after every step
//! of the tests (their harnesses call [`check`] themselves), and in debug builds after applies
//! spaced out as the state grows ([`full_check_due`]).

use std::collections::{BTreeMap, BTreeSet};

use crate::agent::{AgentId, AgentStatus};
use crate::limits::{
    MAILBOX_CAPACITY, MAX_DEFINITION_REVISIONS, MAX_LOCK_WAITERS, MAX_SESSIONS,
    MAX_SESSION_INFLIGHT,
};
use crate::lock::LockMode;
use crate::message::Recipient;
use crate::path::{lock_paths_conflict, normalize_lock_path};
use crate::task::TaskStatus;

use super::ready_index::{ReadyKey, Shape};
use super::StateMachine;

macro_rules! ensure {
    ($cond:expr, $($message:tt)+) => {
        if !$cond {
            return Err(format!($($message)+));
        }
    };
}

/// How many entities, on average, debug builds may walk per apply to check invariants.
const CHECKED_ENTITIES_PER_APPLY: usize = 16;

/// Whether a debug build checks every invariant after the apply that made `revision`, the
/// state then holding `entities` entities ([`entity_count`]).
///
/// Why not after every apply: a full check walks the whole state, so checking after each apply
/// made replaying a long log quadratic in debug builds (a node took 19 s to start, 0.2 s
/// without the checks). The check runs when `revision` is a multiple of a stride, the power of
/// two at or above `entities / CHECKED_ENTITIES_PER_APPLY`: a small state is still checked
/// after every apply, a large one every few applies, and the work per apply stays below
/// `2 * CHECKED_ENTITIES_PER_APPLY` entities on average however long the log is. Deciding by
/// the revision alone keeps it stateless (every replica and every replay checks at the same
/// revisions), and powers of two nest, so as the state grows the checked revisions thin out
/// but never shift. A violation is then found up to a stride late; tests that need the
/// failing step check after every step themselves.
pub(super) fn full_check_due(revision: u64, entities: usize) -> bool {
    let stride = (entities / CHECKED_ENTITIES_PER_APPLY)
        .max(1)
        .next_power_of_two() as u64;
    revision.is_multiple_of(stride)
}

/// Roughly what a full check walks, for [`full_check_due`]: O(1), so that deciding costs
/// nothing per apply (a mailbox counts once, whatever it holds: at most `MAILBOX_CAPACITY`).
pub(super) fn entity_count(machine: &StateMachine) -> usize {
    machine.agents.len()
        + machine.tasks.len()
        + machine.locks.lock_count()
        + machine.locks.waiter_count()
        + machine.config.len()
        + machine.definitions.len()
        + machine.runs.len()
        + machine.mailboxes.len()
        + machine.sessions.len()
}

pub(super) fn check(machine: &StateMachine) -> Result<(), String> {
    check_agents(machine)?;
    check_tasks(machine)?;
    check_locks(machine)?;
    check_waiters(machine)?;
    check_config_and_definitions(machine)?;
    check_runs(machine)?;
    check_mailboxes(machine)?;
    check_sessions(machine)?;
    machine.tokens.check()
}

fn is_active(machine: &StateMachine, agent_id: AgentId) -> bool {
    machine.agents.active(agent_id).is_some()
}

fn check_agents(machine: &StateMachine) -> Result<(), String> {
    let mut newest: BTreeMap<&str, AgentId> = BTreeMap::new();
    for agent in machine.agents.iter() {
        ensure!(
            machine
                .agents
                .get(agent.id)
                .is_some_and(|a| a.id == agent.id),
            "agent {} is stored under another id",
            agent.id
        );
        ensure!(
            agent.id <= machine.revision && agent.revision <= machine.revision,
            "agent {} is from the future",
            agent.id
        );
        ensure!(
            agent.max_concurrent >= 1,
            "agent {} has max_concurrent 0",
            agent.id
        );
        let entry = newest.entry(agent.name.as_str()).or_insert(agent.id);
        *entry = (*entry).max(agent.id);
        if agent.status != AgentStatus::Active {
            ensure!(
                machine.tasks.held_count(agent.id) == 0,
                "agent {} is not active but holds tasks",
                agent.id
            );
            ensure!(
                machine.locks.paths_held_by(agent.id).is_empty(),
                "agent {} is not active but holds locks",
                agent.id
            );
            ensure!(
                !machine
                    .locks
                    .waiters_by_agent_index()
                    .contains_key(&agent.id),
                "agent {} is not active but has queued lock requests",
                agent.id
            );
        }
    }
    let index: BTreeMap<&str, AgentId> = machine
        .agents
        .newest_by_name()
        .iter()
        .map(|(name, id)| (name.as_str(), *id))
        .collect();
    ensure!(index == newest, "the agent name index is out of date");
    // Only the newest incarnation of a name may be active.
    for agent in machine.agents.iter() {
        ensure!(
            agent.status != AgentStatus::Active
                || newest.get(agent.name.as_str()) == Some(&agent.id),
            "agent {} is active but a newer agent has its name {}",
            agent.id,
            agent.name
        );
    }
    Ok(())
}

fn check_tasks(machine: &StateMachine) -> Result<(), String> {
    let tasks = &machine.tasks;
    let mut ready = 0usize;
    let mut held = 0usize;
    let mut edges = 0usize;
    let mut in_plans = 0usize;
    for (seq, task) in tasks.iter().enumerate() {
        let id = &task.id;
        ensure!(
            tasks.seq_of(id) == Some(seq),
            "task {id} is not indexed by its id"
        );
        ensure!(
            task.revision <= machine.revision && task.create_revision <= task.revision,
            "task {id} has revision {} (create {}) beyond {}",
            task.revision,
            task.create_revision,
            machine.revision
        );
        for dep in task.depends_on() {
            let dep_seq = tasks
                .seq_of(dep)
                .ok_or_else(|| format!("task {id} depends on missing task {dep}"))?;
            ensure!(
                tasks.dependents(dep_seq).any(|d| d == seq),
                "task {id} is missing from the dependents of {dep}"
            );
            edges += 1;
        }
        let deps_completed = tasks.dependencies_completed(task);
        match task.status {
            TaskStatus::Blocked => ensure!(
                !deps_completed,
                "task {id} is blocked but every dependency is completed"
            ),
            TaskStatus::Ready
            | TaskStatus::Claimed
            | TaskStatus::Working
            | TaskStatus::Completed => {
                ensure!(
                    deps_completed,
                    "task {id} is {:?} but a dependency is not completed",
                    task.status
                )
            }
            TaskStatus::Failed | TaskStatus::Cancelled => {
                for dependent in tasks.dependents(seq) {
                    let dependent = tasks.get(dependent);
                    ensure!(
                        dependent.status == TaskStatus::Cancelled,
                        "task {} depends on {:?} task {id} but is {:?}",
                        dependent.id,
                        task.status,
                        dependent.status
                    );
                }
            }
        }
        let key = ReadyKey::new(
            task.priority,
            u32::try_from(seq).map_err(|_| format!("task {id} is beyond the position limit"))?,
        );
        let indexed_ready = tasks.ready_index().contains(&Shape::of(task), key);
        ensure!(
            indexed_ready == (task.status == TaskStatus::Ready),
            "task {id} is {:?} but the ready index says {indexed_ready}",
            task.status
        );
        if task.status == TaskStatus::Ready {
            ready += 1;
        }
        if task.status.is_held() {
            held += 1;
            let (Some(agent_id), Some(token)) = (task.assignee, task.claim_token) else {
                return Err(format!("task {id} is held without an assignee and token"));
            };
            ensure!(
                is_active(machine, agent_id),
                "task {id} is held by agent {agent_id}, which is not active"
            );
            ensure!(
                token <= task.revision,
                "task {id} has a claim token from the future"
            );
            ensure!(task.attempts >= 1, "task {id} is held with 0 attempts");
            ensure!(
                tasks
                    .held_index()
                    .get(&agent_id)
                    .is_some_and(|s| s.contains(&seq)),
                "task {id} is missing from the held index of agent {agent_id}"
            );
        }
        if task.status == TaskStatus::Ready {
            ensure!(
                task.assignee.is_none() && task.claim_token.is_none(),
                "ready task {id} still has an assignee or token"
            );
        }
        if let Some(plan) = task.plan_id() {
            in_plans += 1;
            ensure!(
                tasks.plan_lists(plan, seq),
                "task {id} is missing from the index of plan {plan}"
            );
        }
    }
    let dependents_count: usize = (0..tasks.len())
        .map(|seq| tasks.dependents(seq).count())
        .sum();
    ensure!(
        dependents_count == edges,
        "{dependents_count} dependents edges for {edges} dependencies"
    );
    ensure!(
        tasks.ids_indexed() == tasks.len(),
        "the id index holds {} ids for {} tasks",
        tasks.ids_indexed(),
        tasks.len()
    );
    tasks.shapes_shared()?;
    let index = tasks.ready_index();
    ensure!(
        index.len() == ready && index.counted_len() == ready && !index.has_empty_group(),
        "ready index holds {} ({} counted) for {ready} ready tasks",
        index.len(),
        index.counted_len()
    );
    // Each held task is in exactly its assignee's set: no task is held by two agents.
    let indexed_held: usize = tasks.held_index().values().map(BTreeSet::len).sum();
    ensure!(
        indexed_held == held && tasks.held_index().values().all(|s| !s.is_empty()),
        "held index holds {indexed_held} for {held} held tasks"
    );
    ensure!(
        tasks
            .plan_index()
            .all(|(_, p)| p.windows(2).all(|pair| pair[0] < pair[1])),
        "a plan index is not in creation order"
    );
    let indexed_plans: usize = tasks.plan_index().map(|(_, p)| p.len()).sum();
    ensure!(
        indexed_plans == in_plans,
        "plan index holds {indexed_plans} for {in_plans} plan tasks"
    );
    Ok(())
}

fn check_locks(machine: &StateMachine) -> Result<(), String> {
    let table = &machine.locks;
    let mut held_by: BTreeMap<AgentId, BTreeSet<String>> = BTreeMap::new();
    let mut expiries = BTreeSet::new();
    let mut tokens = BTreeSet::new();
    for lock in table.locks() {
        let path = &lock.path;
        ensure!(
            table.get(path).is_some_and(|l| l.path == *path),
            "lock {path} is stored under another path"
        );
        ensure!(
            normalize_lock_path(path).as_deref() == Ok(path.as_str()),
            "lock path {path:?} is not normalised"
        );
        ensure!(!lock.holders.is_empty(), "lock {path} has no holder");
        ensure!(
            lock.mode == LockMode::Shared || lock.holders.len() == 1,
            "exclusive lock {path} has {} holders",
            lock.holders.len()
        );
        ensure!(
            lock.revision <= machine.revision,
            "lock {path} is from the future"
        );
        for holder in &lock.holders {
            ensure!(
                is_active(machine, holder.agent_id),
                "lock {path} is held by agent {}, which is not active",
                holder.agent_id
            );
            ensure!(
                held_by
                    .entry(holder.agent_id)
                    .or_default()
                    .insert(path.clone()),
                "agent {} holds lock {path} twice",
                holder.agent_id
            );
            ensure!(
                holder.fencing_token <= table.last_fencing_token(),
                "lock {path} has fencing token {} above the last issued {}",
                holder.fencing_token,
                table.last_fencing_token()
            );
            // One grant shares its token among its paths, so a token may repeat across paths
            // but never within one lock, and never for two different agents.
            ensure!(
                tokens.insert((holder.fencing_token, path.clone())),
                "lock {path} has two holders with fencing token {}",
                holder.fencing_token
            );
            if let Some(at) = holder.expires_at_ms {
                expiries.insert((at, path.clone(), holder.agent_id));
            }
        }
        for other in table.conflicting_locks(path) {
            if other.path != *path {
                ensure!(
                    lock.mode == LockMode::Shared && other.mode == LockMode::Shared,
                    "locks {path} ({:?}) and {} ({:?}) conflict",
                    lock.mode,
                    other.path,
                    other.mode
                );
                ensure!(
                    lock_paths_conflict(path, &other.path),
                    "conflict lookup returned unrelated path {}",
                    other.path
                );
            }
        }
    }
    let mut token_owner: BTreeMap<u64, AgentId> = BTreeMap::new();
    for lock in table.locks() {
        for holder in &lock.holders {
            let owner = token_owner
                .entry(holder.fencing_token)
                .or_insert(holder.agent_id);
            ensure!(
                *owner == holder.agent_id,
                "fencing token {} was issued to two agents",
                holder.fencing_token
            );
        }
    }
    ensure!(
        *table.held_index() == held_by,
        "the per-agent lock index is out of date"
    );
    ensure!(
        *table.expiry_index() == expiries,
        "the lock expiry index is out of date"
    );
    Ok(())
}

fn check_waiters(machine: &StateMachine) -> Result<(), String> {
    let table = &machine.locks;
    ensure!(
        table.waiter_count() <= MAX_LOCK_WAITERS,
        "{} queued lock requests (at most {MAX_LOCK_WAITERS})",
        table.waiter_count()
    );
    let mut by_path: BTreeMap<String, BTreeSet<u64>> = BTreeMap::new();
    let mut by_agent: BTreeMap<AgentId, BTreeSet<u64>> = BTreeMap::new();
    let mut deadlines = BTreeSet::new();
    for waiter in table.waiters() {
        let q = waiter.queued_revision;
        ensure!(
            table.waiter(q).is_some_and(|w| w.queued_revision == q),
            "lock request {q} is stored under another revision"
        );
        ensure!(q <= machine.revision, "lock request {q} is from the future");
        ensure!(
            is_active(machine, waiter.agent_id),
            "lock request {q} belongs to agent {}, which is not active",
            waiter.agent_id
        );
        ensure!(!waiter.paths.is_empty(), "lock request {q} names no path");
        for path in &waiter.paths {
            ensure!(
                normalize_lock_path(path).as_deref() == Ok(path.as_str()),
                "lock request {q} has path {path:?}, which is not normalised"
            );
            by_path.entry(path.clone()).or_default().insert(q);
        }
        by_agent.entry(waiter.agent_id).or_default().insert(q);
        deadlines.insert((waiter.wait_deadline_ms, q));
    }
    ensure!(
        *table.waiting_path_index() == by_path,
        "the waiting-path index is out of date"
    );
    ensure!(
        *table.waiters_by_agent_index() == by_agent,
        "the per-agent lock request index is out of date"
    );
    ensure!(
        *table.deadline_index() == deadlines,
        "the lock request deadline index is out of date"
    );
    Ok(())
}

fn check_config_and_definitions(machine: &StateMachine) -> Result<(), String> {
    for (key, entry) in &machine.config {
        ensure!(
            *key == entry.key,
            "config entry {} is stored under {key}",
            entry.key
        );
        ensure!(
            entry.version >= 1
                && entry.create_revision <= entry.revision
                && entry.revision <= machine.revision,
            "config entry {key} has inconsistent revisions"
        );
    }
    for (name, definition) in &machine.definitions {
        ensure!(
            *name == definition.name,
            "definition {} is stored under {name}",
            definition.name
        );
        ensure!(
            !definition.history.is_empty() && definition.history.len() <= MAX_DEFINITION_REVISIONS,
            "definition {name} has {} revisions",
            definition.history.len()
        );
        ensure!(
            definition.revision <= machine.revision,
            "definition {name} is from the future"
        );
    }
    Ok(())
}

/// A run belongs to a definition; its runner is an active agent; iterations are numbered
/// strictly upwards below `next_number`, only the newest may be running, and only while a
/// runner holds the run; bounded history and queue.
fn check_runs(machine: &StateMachine) -> Result<(), String> {
    use crate::definition_run::IterationStatus;
    use crate::limits::{MAX_ITERATIONS_KEPT, MAX_PENDING_STEERING_MESSAGES};
    for (name, run) in &machine.runs {
        ensure!(*name == run.name, "run {} is stored under {name}", run.name);
        ensure!(
            machine.definitions.contains_key(name),
            "run {name} has no definition"
        );
        if let Some(runner) = &run.runner {
            ensure!(
                is_active(machine, runner.agent_id),
                "run {name} is held by agent {}, which is not active",
                runner.agent_id
            );
        }
        ensure!(
            run.iterations.len() <= MAX_ITERATIONS_KEPT
                && run.pending.len() <= MAX_PENDING_STEERING_MESSAGES,
            "run {name} keeps too much"
        );
        ensure!(
            run.first_number_of_start <= run.next_number && run.next_number >= 1,
            "run {name} has inconsistent numbers"
        );
        let mut previous = 0;
        for (position, iteration) in run.iterations.iter().enumerate() {
            ensure!(
                iteration.number > previous && iteration.number < run.next_number,
                "run {name}: iteration {} out of order",
                iteration.number
            );
            previous = iteration.number;
            if iteration.status == IterationStatus::Running {
                ensure!(
                    position + 1 == run.iterations.len() && run.runner.is_some(),
                    "run {name}: iteration {} runs without being the newest of a held run",
                    iteration.number
                );
            }
        }
    }
    Ok(())
}

fn check_mailboxes(machine: &StateMachine) -> Result<(), String> {
    for (recipient, mailbox) in &machine.mailboxes {
        ensure!(
            mailbox.messages.len() <= MAILBOX_CAPACITY,
            "mailbox {recipient:?} holds {} messages (capacity {MAILBOX_CAPACITY})",
            mailbox.messages.len()
        );
        if let Recipient::Agent(agent_id) = recipient {
            ensure!(
                machine.agents.get(*agent_id).is_some(),
                "mailbox of unknown agent {agent_id}"
            );
        }
        let mut previous = 0;
        for message in &mailbox.messages {
            ensure!(
                message.to == *recipient,
                "message {} is in the wrong mailbox",
                message.id
            );
            ensure!(
                message.id > previous && message.id <= machine.revision,
                "mailbox {recipient:?} has message ids out of order"
            );
            previous = message.id;
        }
    }
    Ok(())
}

fn check_sessions(machine: &StateMachine) -> Result<(), String> {
    let sessions = &machine.sessions;
    ensure!(
        sessions.len() <= MAX_SESSIONS,
        "{} sessions (at most {MAX_SESSIONS})",
        sessions.len()
    );
    let mut activity = BTreeSet::new();
    for session in sessions.iter() {
        let client = session.client_id;
        ensure!(
            session.responses.len() <= MAX_SESSION_INFLIGHT,
            "session {client} keeps {} responses",
            session.responses.len()
        );
        ensure!(
            session
                .responses
                .keys()
                .next()
                .is_none_or(|&seq| seq >= session.acked_below),
            "session {client} keeps an acknowledged response"
        );
        activity.insert((session.last_active_ms, session.last_active_revision, client));
    }
    ensure!(
        *sessions.activity_index() == activity,
        "the session activity index is out of date"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_small_state_is_checked_after_every_apply() {
        for entities in [
            0,
            1,
            CHECKED_ENTITIES_PER_APPLY,
            2 * CHECKED_ENTITIES_PER_APPLY - 1,
        ] {
            assert!((1..=1_000).all(|revision| full_check_due(revision, entities)));
        }
    }

    #[test]
    fn a_large_state_is_checked_every_stride_with_bounded_work_per_apply() {
        let entities = 100 * CHECKED_ENTITIES_PER_APPLY;
        // The stride is the power of two at or above 100.
        assert!(full_check_due(128, entities) && full_check_due(256, entities));
        assert!(!full_check_due(129, entities) && !full_check_due(64, entities));
        for entities in [1_000, 20_000, 1_000_000] {
            let applies = 1u64 << 20;
            let checks = (1..=applies)
                .filter(|&revision| full_check_due(revision, entities))
                .count() as u64;
            let walked_per_apply = checks * entities as u64 / applies;
            assert!(
                checks >= 1 && walked_per_apply <= 2 * CHECKED_ENTITIES_PER_APPLY as u64,
                "{entities} entities: {checks} checks in {applies} applies"
            );
        }
    }

    /// As the state grows the stride only grows, and a revision checked at a larger stride is
    /// checked at every smaller one: the checked revisions thin out but never shift.
    #[test]
    fn strides_nest_as_the_state_grows() {
        let sizes = [10, 200, 5_000, 90_000, 3_000_000];
        for pair in sizes.windows(2) {
            for revision in 1..=1u64 << 16 {
                if full_check_due(revision, pair[1]) {
                    assert!(full_check_due(revision, pair[0]), "{revision} {pair:?}");
                }
            }
        }
    }
}
