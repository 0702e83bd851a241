//! Lock commands: acquire (all-or-nothing, optionally queued), release, and the FIFO grant of
//! queued requests when locks are freed.
//!
//! Decisions:
//! - **Fencing tokens.** Every grant (one acquire request, or one queued request granted later)
//!   gets one token, shared by all its paths: `max(revision, last_token + 1)`. It is the log
//!   index of the grant unless several grants happen in one apply (a release that frees several
//!   waiters), which then get the next numbers up. Tokens are strictly increasing across all
//!   grants of all locks, and never smaller than the revision that granted them.
//! - **Re-acquire.** An agent acquiring a path it already holds gets a fresh grant: a new
//!   fencing token, a new TTL. Same mode is a refresh, exclusive → shared a downgrade (always
//!   allowed), shared → exclusive an upgrade (allowed only when no one else holds it and no
//!   earlier request waits for it).
//! - **Own conflicts.** A request for a path under or above one the agent already holds (e.g. it
//!   holds `src` and asks for `src/api`) is refused at once, even with `wait_ms`: it could only
//!   ever wait for itself.
//! - **Fairness.** Strict FIFO among conflicting requests: a new request that conflicts with a
//!   queued request of another agent is blocked by it (it queues behind it, or fails without
//!   `wait_ms`), and a queued request is granted only when no earlier queued request conflicts
//!   with it. Non-conflicting requests proceed independently.
//! - **Time.** A holder is expired once `now_ms >= expires_at_ms`, a queued request once
//!   `now_ms >= wait_deadline_ms`. Expired holders are removed by `Tick`, and in the meantime
//!   count as gone: an acquire may be granted over them (they are removed by that grant).
//!   `wait_ms: Some(0)` means "do not wait".

use crate::agent::AgentId;
use crate::error::CommandError;
use crate::limits::MAX_LOCK_WAITERS;
use crate::lock::{LockGrant, LockHolder, LockMode, LockWaiter};
use crate::response::{Outcome, Response};
use crate::task::TaskId;
use crate::validate::{normalize_acquire_paths, normalize_release_paths};

use super::ctx::Ctx;
use super::lock_table::{holder_expired, waiter_expired, Blocker};
use super::StateMachine;

/// The fields of an `AcquireLocks` command.
pub(crate) struct AcquireRequest {
    pub agent_id: AgentId,
    pub paths: Vec<String>,
    pub mode: LockMode,
    pub task_id: Option<TaskId>,
    pub ttl_ms: Option<u64>,
    pub wait_ms: Option<u64>,
}

impl StateMachine {
    pub(super) fn acquire_locks(&mut self, ctx: &mut Ctx, request: AcquireRequest) -> Response {
        let AcquireRequest {
            agent_id,
            paths,
            mode,
            task_id,
            ttl_ms,
            wait_ms,
        } = request;
        self.active_agent(agent_id)?;
        let paths = normalize_acquire_paths(&paths)?;
        let now_ms = ctx.now_ms;
        let Some((path, blocker)) = self.first_blocker(agent_id, &paths, mode, now_ms) else {
            let (grants, freed) = self.grant(ctx, agent_id, &paths, mode, task_id, ttl_ms);
            if freed {
                self.grant_waiters(ctx);
            }
            return Ok(Outcome::LocksAcquired(grants));
        };
        let wait_ms = wait_ms.filter(|&ms| ms > 0);
        match (&blocker, wait_ms) {
            (Blocker::OwnLock { path: own }, _) => Err(CommandError::precondition(format!(
                "lock path {path} overlaps {own}, which agent {agent_id} already holds"
            ))),
            (_, None) => Err(CommandError::precondition(describe_conflict(
                path, &blocker,
            ))),
            (_, Some(wait_ms)) => {
                if self.locks.waiter_count() >= MAX_LOCK_WAITERS {
                    return Err(CommandError::exhausted(format!(
                        "the lock wait queue is full ({MAX_LOCK_WAITERS} requests); {}",
                        describe_conflict(path, &blocker)
                    )));
                }
                self.locks.add_waiter(LockWaiter {
                    queued_revision: ctx.revision,
                    agent_id,
                    paths,
                    mode,
                    task_id,
                    ttl_ms,
                    wait_deadline_ms: now_ms.saturating_add(wait_ms),
                });
                Ok(Outcome::LockQueued {
                    position: u32::try_from(self.locks.waiter_count()).unwrap_or(u32::MAX),
                    queued_revision: ctx.revision,
                })
            }
        }
    }

    /// Whether an `AcquireLocks` of these canonical `paths` by `agent_id` would wait in the
    /// queue, behind another agent's hold or an earlier request, if it were applied at `now_ms`
    /// to the state as it is. A hint for the leader's batching (such a request can ride with the
    /// next entry: it waits anyway); apply decides afresh, with the same check.
    pub fn acquire_would_queue(
        &self,
        agent_id: AgentId,
        paths: &[String],
        mode: LockMode,
        now_ms: u64,
    ) -> bool {
        self.active_agent(agent_id).is_ok()
            && matches!(
                self.first_blocker(agent_id, paths, mode, now_ms),
                Some((_, Blocker::Holder { .. } | Blocker::Waiter { .. }))
            )
    }

    /// The first of `paths` that `agent_id` cannot be granted in `mode` at `now_ms`, and what
    /// stops it (its own queued requests never do).
    fn first_blocker<'p>(
        &self,
        agent_id: AgentId,
        paths: &'p [String],
        mode: LockMode,
        now_ms: u64,
    ) -> Option<(&'p String, Blocker)> {
        paths.iter().find_map(|path| {
            self.locks
                .path_blocker(agent_id, path, mode, now_ms, |w| w.agent_id != agent_id)
                .map(|blocker| (path, blocker))
        })
    }

    /// Releases the agent's hold on these paths (paths it does not hold are ignored, so a
    /// retried release succeeds) and drops its queued requests naming any of them.
    pub(super) fn release_locks(
        &mut self,
        ctx: &mut Ctx,
        agent_id: AgentId,
        paths: &[String],
    ) -> Response {
        if self.agents.get(agent_id).is_none() {
            return Err(CommandError::not_found(format!(
                "agent {agent_id} not found"
            )));
        }
        let paths = normalize_release_paths(paths)?;
        let mut released = Vec::new();
        for path in &paths {
            if self
                .locks
                .remove_holder(path, agent_id, ctx.revision)
                .is_some()
            {
                ctx.lock_touched(path);
                released.push(path.clone());
            }
        }
        let dropped = self
            .locks
            .drop_waiters_of(agent_id, |w| w.paths.iter().any(|p| paths.contains(p)));
        let any_dropped = !dropped.is_empty();
        ctx.waiters_resolved(dropped);
        let granted = if released.is_empty() && !any_dropped {
            Vec::new()
        } else {
            self.grant_waiters(ctx)
        };
        Ok(Outcome::LocksReleased { released, granted })
    }

    pub(super) fn release_all_locks(&mut self, ctx: &mut Ctx, agent_id: AgentId) -> Response {
        if self.agents.get(agent_id).is_none() {
            return Err(CommandError::not_found(format!(
                "agent {agent_id} not found"
            )));
        }
        let released = self.release_all_holds(ctx, agent_id);
        let dropped = self.locks.drop_waiters_of(agent_id, |_| true);
        let any_dropped = !dropped.is_empty();
        ctx.waiters_resolved(dropped);
        let granted = if released.is_empty() && !any_dropped {
            Vec::new()
        } else {
            self.grant_waiters(ctx)
        };
        Ok(Outcome::LocksReleased { released, granted })
    }

    /// Removes every hold of the agent (without granting waiters); returns the paths.
    pub(super) fn release_all_holds(&mut self, ctx: &mut Ctx, agent_id: AgentId) -> Vec<String> {
        let paths = self.locks.paths_held_by(agent_id);
        for path in &paths {
            self.locks.remove_holder(path, agent_id, ctx.revision);
            ctx.lock_touched(path);
        }
        paths
    }

    /// Removes holders whose TTL has run out (without granting waiters); returns how many.
    pub(super) fn expire_lock_holders(&mut self, ctx: &mut Ctx) -> u32 {
        let mut expired = 0;
        for (path, agent_id) in self.locks.holders_due(ctx.now_ms) {
            if self
                .locks
                .remove_holder(&path, agent_id, ctx.revision)
                .is_some()
            {
                ctx.lock_touched(&path);
                expired += 1;
            }
        }
        expired
    }

    /// Grants queued requests in FIFO order: each one whose paths are all free of incompatible
    /// holders and of incompatible earlier queued requests. Requests past their deadline are
    /// skipped (`Tick` drops them).
    pub(super) fn grant_waiters(&mut self, ctx: &mut Ctx) -> Vec<LockGrant> {
        let mut granted = Vec::new();
        for queued_revision in self.locks.waiter_ids() {
            let Some(waiter) = self.locks.waiter(queued_revision) else {
                continue;
            };
            if waiter_expired(waiter, ctx.now_ms) {
                continue;
            }
            let blocked = waiter.paths.iter().any(|path| {
                self.locks
                    .path_blocker(waiter.agent_id, path, waiter.mode, ctx.now_ms, |earlier| {
                        earlier.queued_revision < queued_revision
                    })
                    .is_some()
            });
            if blocked {
                continue;
            }
            if let Some(waiter) = self.locks.remove_waiter(queued_revision) {
                ctx.waiters_resolved([queued_revision]);
                let (grants, _) = self.grant(
                    ctx,
                    waiter.agent_id,
                    &waiter.paths,
                    waiter.mode,
                    waiter.task_id,
                    waiter.ttl_ms,
                );
                granted.extend(grants);
            }
        }
        granted
    }

    /// Grants `paths` to the agent under one new fencing token. The caller has checked that
    /// nothing blocks it. Expired holders in the way are removed, and the agent's own previous
    /// hold on a path is replaced. Returns the grants and whether anything was freed that
    /// queued requests might now get (an expired holder removed, or a downgrade).
    fn grant(
        &mut self,
        ctx: &mut Ctx,
        agent_id: AgentId,
        paths: &[String],
        mode: LockMode,
        task_id: Option<TaskId>,
        ttl_ms: Option<u64>,
    ) -> (Vec<LockGrant>, bool) {
        let fencing_token = self.locks.next_fencing_token(ctx.revision);
        let expires_at_ms = ttl_ms.map(|ttl| ctx.now_ms.saturating_add(ttl));
        let mut freed = false;
        let mut grants = Vec::with_capacity(paths.len());
        for path in paths {
            let stale: Vec<(String, AgentId)> = self
                .locks
                .conflicting_locks(path)
                .into_iter()
                .flat_map(|lock| {
                    lock.holders
                        .iter()
                        .filter(|h| holder_expired(h, ctx.now_ms))
                        .map(|h| (lock.path.clone(), h.agent_id))
                })
                .collect();
            for (stale_path, holder) in stale {
                self.locks.remove_holder(&stale_path, holder, ctx.revision);
                ctx.lock_touched(&stale_path);
                freed = true;
            }
            if let Some((LockMode::Exclusive, _)) =
                self.locks.remove_holder(path, agent_id, ctx.revision)
            {
                freed |= mode == LockMode::Shared;
            }
            self.locks.insert_holder(
                path,
                mode,
                LockHolder {
                    agent_id,
                    fencing_token,
                    task_id: task_id.clone(),
                    acquired_at_ms: ctx.now_ms,
                    expires_at_ms,
                },
                ctx.revision,
            );
            ctx.lock_touched(path);
            grants.push(LockGrant {
                path: path.clone(),
                mode,
                agent_id,
                fencing_token,
                expires_at_ms,
            });
        }
        (grants, freed)
    }
}

fn describe_conflict(path: &str, blocker: &Blocker) -> String {
    match blocker {
        Blocker::OwnLock { path: own } => {
            format!("lock path {path} overlaps {own}, which the agent already holds")
        }
        Blocker::Holder {
            path: held,
            agent_id,
            mode,
        } => format!(
            "lock path {path} conflicts with the {} lock on {held} held by agent {agent_id}",
            mode_word(*mode)
        ),
        Blocker::Waiter {
            path: wanted,
            agent_id,
            queued_revision,
        } => format!(
            "lock path {path} conflicts with the request of agent {agent_id} for {wanted}, queued earlier (at revision {queued_revision})"
        ),
    }
}

fn mode_word(mode: LockMode) -> &'static str {
    match mode {
        LockMode::Exclusive => "exclusive",
        LockMode::Shared => "shared",
    }
}
