//! The lock table: held locks by path, the FIFO of waiting requests, their indexes, and the
//! conflict queries.
//!
//! Conflicts are found by looking up the path itself, each of its ancestors (at most
//! `MAX_LOCK_PATH_DEPTH` lookups) and the key range of its descendants, in maps sorted by
//! path, never by scanning every lock.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;

use crate::agent::AgentId;
use crate::lock::{Lock, LockHolder, LockMode, LockWaiter};
use crate::path::{descendant_range, proper_ancestors};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct LockTable {
    locks: BTreeMap<String, Lock>,
    held_by: BTreeMap<AgentId, BTreeSet<String>>,
    /// (expires_at_ms, path, agent) of every holder with a TTL.
    holder_expiries: BTreeSet<(u64, String, AgentId)>,
    /// Waiting requests by queued revision: iteration order is FIFO order.
    waiters: BTreeMap<u64, LockWaiter>,
    /// Path → waiting requests that name it.
    waiting_paths: BTreeMap<String, BTreeSet<u64>>,
    waiters_by_agent: BTreeMap<AgentId, BTreeSet<u64>>,
    /// (wait_deadline_ms, queued revision).
    waiter_deadlines: BTreeSet<(u64, u64)>,
    /// The highest fencing token ever granted.
    last_fencing_token: u64,
}

/// Why a path cannot be granted to a request right now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Blocker {
    /// The requesting agent itself holds a lock on an ancestor or descendant of the path.
    OwnLock { path: String },
    /// Another agent holds an incompatible lock on the path, an ancestor or a descendant.
    Holder {
        path: String,
        agent_id: AgentId,
        mode: LockMode,
    },
    /// An earlier request in the queue wants an incompatible lock on a conflicting path, and
    /// must not be overtaken.
    Waiter {
        path: String,
        agent_id: AgentId,
        queued_revision: u64,
    },
}

pub(crate) fn holder_expired(holder: &LockHolder, now_ms: u64) -> bool {
    holder.expires_at_ms.is_some_and(|at| now_ms >= at)
}

pub(crate) fn waiter_expired(waiter: &LockWaiter, now_ms: u64) -> bool {
    now_ms >= waiter.wait_deadline_ms
}

fn compatible(a: LockMode, b: LockMode) -> bool {
    a == LockMode::Shared && b == LockMode::Shared
}

impl LockTable {
    pub fn get(&self, path: &str) -> Option<&Lock> {
        self.locks.get(path)
    }

    pub fn locks(&self) -> impl Iterator<Item = &Lock> {
        self.locks.values()
    }

    /// In path order, from `from` on.
    pub fn locks_from<'a>(&'a self, from: Bound<&'a str>) -> impl Iterator<Item = &'a Lock> {
        self.locks
            .range::<str, _>((from, Bound::Unbounded))
            .map(|(_, lock)| lock)
    }

    pub fn waiters(&self) -> impl Iterator<Item = &LockWaiter> {
        self.waiters.values()
    }

    pub fn waiter(&self, queued_revision: u64) -> Option<&LockWaiter> {
        self.waiters.get(&queued_revision)
    }

    /// Paths locked now.
    pub fn lock_count(&self) -> usize {
        self.locks.len()
    }

    pub fn waiter_count(&self) -> usize {
        self.waiters.len()
    }

    pub fn last_fencing_token(&self) -> u64 {
        self.last_fencing_token
    }

    /// A fencing token greater than every one granted before. It is the grant's revision
    /// unless an earlier grant already used that number or a higher one (several grants in
    /// one apply), in which case it is the next number up.
    pub fn next_fencing_token(&mut self, revision: u64) -> u64 {
        let token = revision.max(self.last_fencing_token.saturating_add(1));
        self.last_fencing_token = token;
        token
    }

    /// Restores the counter from a snapshot.
    pub fn set_last_fencing_token(&mut self, token: u64) {
        self.last_fencing_token = token;
    }

    pub fn held_mode(&self, path: &str, agent_id: AgentId) -> Option<LockMode> {
        let lock = self.locks.get(path)?;
        lock.holders
            .iter()
            .any(|h| h.agent_id == agent_id)
            .then_some(lock.mode)
    }

    pub fn paths_held_by(&self, agent_id: AgentId) -> Vec<String> {
        self.held_by
            .get(&agent_id)
            .map(|paths| paths.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Locks on `path`, its ancestors and its descendants.
    pub fn conflicting_locks(&self, path: &str) -> Vec<&Lock> {
        let mut found: Vec<&Lock> = proper_ancestors(path)
            .chain(std::iter::once(path))
            .filter_map(|p| self.locks.get(p))
            .collect();
        let (low, high) = descendant_range(path);
        found.extend(self.locks.range(low..high).map(|(_, lock)| lock));
        found
    }

    /// Queued requests naming `path`, an ancestor or a descendant.
    fn conflicting_waiters<'a>(
        &'a self,
        path: &'a str,
    ) -> impl Iterator<Item = (&'a str, &'a LockWaiter)> + 'a {
        let (low, high) = descendant_range(path);
        proper_ancestors(path)
            .chain(std::iter::once(path))
            .filter_map(|p| self.waiting_paths.get_key_value(p))
            .chain(self.waiting_paths.range(low..high))
            .flat_map(move |(p, queued)| {
                queued
                    .iter()
                    .filter_map(move |q| self.waiters.get(q).map(|w| (p.as_str(), w)))
            })
    }

    /// What stops `agent_id` from being granted `path` in `mode` at `now_ms`, if anything.
    ///
    /// A path the agent already holds at least as strongly (same mode, or it holds it
    /// exclusively) is a refresh or a downgrade and is never blocked. Holders past their TTL
    /// count as gone. Queued requests block only if `queued_may_block` says they come first
    /// and they have not passed their deadline.
    pub fn path_blocker(
        &self,
        agent_id: AgentId,
        path: &str,
        mode: LockMode,
        now_ms: u64,
        queued_may_block: impl Fn(&LockWaiter) -> bool,
    ) -> Option<Blocker> {
        if let Some(held) = self.held_mode(path, agent_id) {
            if mode == LockMode::Shared || held == LockMode::Exclusive {
                return None;
            }
        }
        let mut other_holder = None;
        for lock in self.conflicting_locks(path) {
            for holder in &lock.holders {
                if holder_expired(holder, now_ms) {
                    continue;
                }
                if holder.agent_id == agent_id {
                    // Its own lock on this very path is replaced by the new grant.
                    if lock.path != path {
                        return Some(Blocker::OwnLock {
                            path: lock.path.clone(),
                        });
                    }
                } else if !compatible(mode, lock.mode) && other_holder.is_none() {
                    other_holder = Some(Blocker::Holder {
                        path: lock.path.clone(),
                        agent_id: holder.agent_id,
                        mode: lock.mode,
                    });
                }
            }
        }
        if other_holder.is_some() {
            return other_holder;
        }
        self.conflicting_waiters(path)
            .find(|(_, waiter)| {
                !waiter_expired(waiter, now_ms)
                    && !compatible(mode, waiter.mode)
                    && queued_may_block(waiter)
            })
            .map(|(waiting_path, waiter)| Blocker::Waiter {
                path: waiting_path.to_string(),
                agent_id: waiter.agent_id,
                queued_revision: waiter.queued_revision,
            })
    }

    /// Adds a holder to the lock on `path` (creating it), which takes `mode`: any holders
    /// already there are compatible shared ones.
    pub fn insert_holder(&mut self, path: &str, mode: LockMode, holder: LockHolder, revision: u64) {
        self.held_by
            .entry(holder.agent_id)
            .or_default()
            .insert(path.to_string());
        if let Some(at) = holder.expires_at_ms {
            self.holder_expiries
                .insert((at, path.to_string(), holder.agent_id));
        }
        let lock = self.locks.entry(path.to_string()).or_insert_with(|| Lock {
            path: path.to_string(),
            mode,
            holders: Vec::new(),
            revision,
        });
        lock.mode = mode;
        lock.holders.push(holder);
        lock.revision = revision;
    }

    /// Removes the agent's hold on `path`; the lock disappears with its last holder. Returns
    /// the mode it was held in and the holder.
    pub fn remove_holder(
        &mut self,
        path: &str,
        agent_id: AgentId,
        revision: u64,
    ) -> Option<(LockMode, LockHolder)> {
        let lock = self.locks.get_mut(path)?;
        let at = lock.holders.iter().position(|h| h.agent_id == agent_id)?;
        let holder = lock.holders.remove(at);
        let mode = lock.mode;
        lock.revision = revision;
        if lock.holders.is_empty() {
            self.locks.remove(path);
        }
        if let Some(paths) = self.held_by.get_mut(&agent_id) {
            paths.remove(path);
            if paths.is_empty() {
                self.held_by.remove(&agent_id);
            }
        }
        if let Some(at) = holder.expires_at_ms {
            self.holder_expiries
                .remove(&(at, path.to_string(), agent_id));
        }
        Some((mode, holder))
    }

    /// Holders whose TTL has run out at `now_ms`, as (path, agent).
    pub fn holders_due(&self, now_ms: u64) -> Vec<(String, AgentId)> {
        self.holder_expiries
            .iter()
            .take_while(|(at, _, _)| *at <= now_ms)
            .map(|(_, path, agent)| (path.clone(), *agent))
            .collect()
    }

    pub fn next_holder_expiry(&self) -> Option<u64> {
        self.holder_expiries.first().map(|(at, _, _)| *at)
    }

    pub fn add_waiter(&mut self, waiter: LockWaiter) {
        let q = waiter.queued_revision;
        for path in &waiter.paths {
            self.waiting_paths
                .entry(path.clone())
                .or_default()
                .insert(q);
        }
        self.waiters_by_agent
            .entry(waiter.agent_id)
            .or_default()
            .insert(q);
        self.waiter_deadlines.insert((waiter.wait_deadline_ms, q));
        self.waiters.insert(q, waiter);
    }

    pub fn remove_waiter(&mut self, queued_revision: u64) -> Option<LockWaiter> {
        let waiter = self.waiters.remove(&queued_revision)?;
        for path in &waiter.paths {
            if let Some(queued) = self.waiting_paths.get_mut(path) {
                queued.remove(&queued_revision);
                if queued.is_empty() {
                    self.waiting_paths.remove(path);
                }
            }
        }
        if let Some(queued) = self.waiters_by_agent.get_mut(&waiter.agent_id) {
            queued.remove(&queued_revision);
            if queued.is_empty() {
                self.waiters_by_agent.remove(&waiter.agent_id);
            }
        }
        self.waiter_deadlines
            .remove(&(waiter.wait_deadline_ms, queued_revision));
        Some(waiter)
    }

    /// Queued revisions in FIFO order.
    pub fn waiter_ids(&self) -> Vec<u64> {
        self.waiters.keys().copied().collect()
    }

    /// Drops the agent's queued requests that `which` selects; returns their queued revisions.
    pub fn drop_waiters_of(
        &mut self,
        agent_id: AgentId,
        which: impl Fn(&LockWaiter) -> bool,
    ) -> Vec<u64> {
        let doomed: Vec<u64> = self
            .waiters_by_agent
            .get(&agent_id)
            .into_iter()
            .flatten()
            .filter(|q| self.waiters.get(q).is_some_and(&which))
            .copied()
            .collect();
        self.remove_waiters(doomed)
    }

    /// Drops queued requests whose wait deadline has come; returns their queued revisions.
    pub fn drop_waiters_due(&mut self, now_ms: u64) -> Vec<u64> {
        let due: Vec<u64> = self
            .waiter_deadlines
            .iter()
            .take_while(|(deadline, _)| *deadline <= now_ms)
            .map(|(_, q)| *q)
            .collect();
        self.remove_waiters(due)
    }

    /// Removes the given queued requests; returns the ones that were there.
    fn remove_waiters(&mut self, queued_revisions: Vec<u64>) -> Vec<u64> {
        queued_revisions
            .into_iter()
            .filter(|&q| self.remove_waiter(q).is_some())
            .collect()
    }

    pub fn next_waiter_deadline(&self) -> Option<u64> {
        self.waiter_deadlines.first().map(|(deadline, _)| *deadline)
    }

    // Index views for the invariant check.

    pub fn held_index(&self) -> &BTreeMap<AgentId, BTreeSet<String>> {
        &self.held_by
    }

    pub fn expiry_index(&self) -> &BTreeSet<(u64, String, AgentId)> {
        &self.holder_expiries
    }

    pub fn waiting_path_index(&self) -> &BTreeMap<String, BTreeSet<u64>> {
        &self.waiting_paths
    }

    pub fn waiters_by_agent_index(&self) -> &BTreeMap<AgentId, BTreeSet<u64>> {
        &self.waiters_by_agent
    }

    pub fn deadline_index(&self) -> &BTreeSet<(u64, u64)> {
        &self.waiter_deadlines
    }
}
