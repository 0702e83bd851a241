//! Fencing of merges into a target branch.
//!
//! Merges into one target are serialised by a cluster lock on the target ref (the
//! worker locks `git/<repo-name>/refs/heads/<into>`); the lock's fencing token is the
//! revision of the grant (or the next number after the last token issued, when one apply grants
//! several), so it strictly increases from one holder to the next.
//! A holder can lose the lock without noticing (its process paused past the TTL), so
//! the lock alone cannot stop a late writer. Three checks together do:
//!
//! 1. every merge commit carries `Percy-Fence: <token>`, and a merge is refused when
//!    the target tip's token (the nearest one on its first-parent chain) is greater
//!    than ours — a newer holder already merged ([`GitError::Fenced`]);
//! 2. `MergeFence::still_held` is asked right before the ref moves
//!    ([`GitError::LockLost`]);
//! 3. the ref is moved by compare-and-swap on the tip the merge was computed from, so
//!    a write that slipped in between is never overwritten.
//!
//! Token [`UNFENCED_TOKEN`] (0) is what `percyctl merge` uses without a cluster: lock
//! tokens are revisions of applied commands and never 0, so 0 cannot belong to a stale lock holder. An
//! unfenced merge skips check 1 and writes no `Percy-Fence` trailer, but still goes
//! through the compare-and-swap, so it never loses anybody's commit either.

use git2::{Commit, Repository};

use crate::error::GitError;
use crate::trailer::{trailer_value, FENCE_TRAILER};

/// What `MergeFence::still_held` returns when it cannot find out (e.g. the cluster is
/// unreachable).
pub type FenceError = Box<dyn std::error::Error + Send + Sync>;

/// The fencing token of a manual merge made without a cluster lock.
pub const UNFENCED_TOKEN: u64 = 0;

/// How many first-parent commits back from the tip are searched for a `Percy-Fence`
/// trailer. Every fenced merge puts one on the tip, so it is found within a few
/// steps unless long unfenced history was added on top; the bound keeps a repository
/// that never saw a Percy merge from being walked to its root on every merge.
pub(crate) const MAX_FENCE_WALK: usize = 10_000;

/// The merge lock on a target branch, as seen by the merge that holds it.
///
/// The worker implements this with a cluster lock; it is called from the (blocking)
/// merge, so an async client must be driven with a runtime handle's `block_on` from
/// inside `spawn_blocking`.
pub trait MergeFence {
    /// The fencing token of the lock grant this merge runs under.
    fn token(&self) -> u64;

    /// Whether the lock is still held by us right now. Asked immediately before the
    /// target ref is moved; `Ok(false)` or an error means the ref is not moved.
    fn still_held(&self) -> Result<bool, FenceError>;
}

/// A fence that always holds, with a fixed token: for manual merges outside a
/// cluster (`percyctl merge` uses it with [`UNFENCED_TOKEN`]).
#[derive(Debug, Clone, Copy)]
pub struct StaticFence {
    token: u64,
}

impl StaticFence {
    pub fn new(token: u64) -> Self {
        StaticFence { token }
    }
}

impl MergeFence for StaticFence {
    fn token(&self) -> u64 {
        self.token
    }

    fn still_held(&self) -> Result<bool, FenceError> {
        Ok(true)
    }
}

/// The `Percy-Fence` token of `tip`: that of the nearest commit on its first-parent
/// chain carrying the trailer, or [`UNFENCED_TOKEN`] if none does (within
/// [`MAX_FENCE_WALK`] commits).
pub fn tip_fence_token(repo: &Repository, tip: &Commit<'_>) -> Result<u64, GitError> {
    let mut commit = tip.clone();
    for _ in 0..MAX_FENCE_WALK {
        // A message that is not UTF-8 was not written by Percy: no trailer in it.
        let token = commit
            .message()
            .ok()
            .and_then(|m| trailer_value(m, FENCE_TRAILER))
            .and_then(|v| v.parse::<u64>().ok());
        if let Some(token) = token {
            return Ok(token);
        }
        if commit.parent_count() == 0 {
            break;
        }
        commit = repo.find_commit(commit.parent_id(0)?)?;
    }
    Ok(UNFENCED_TOKEN)
}

/// Refuses a merge under `ours` onto a tip written under the newer token `tip`.
/// Equal tokens pass: one lock holder merges a whole queue under one grant.
pub(crate) fn check_not_superseded(ours: u64, tip: u64) -> Result<(), GitError> {
    if ours != UNFENCED_TOKEN && tip > ours {
        return Err(GitError::Fenced { ours, tip });
    }
    Ok(())
}

/// Asks the fence whether the lock is still ours; anything but `Ok(true)` refuses.
pub(crate) fn confirm_held(fence: &dyn MergeFence) -> Result<(), GitError> {
    match fence.still_held() {
        Ok(true) => Ok(()),
        Ok(false) => Err(GitError::LockLost),
        Err(e) => Err(GitError::FenceCheck(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn older_token_is_fenced_equal_or_newer_passes() {
        assert!(matches!(
            check_not_superseded(4, 5),
            Err(GitError::Fenced { ours: 4, tip: 5 })
        ));
        assert!(check_not_superseded(5, 5).is_ok());
        assert!(check_not_superseded(6, 5).is_ok());
    }

    #[test]
    fn unfenced_manual_merge_is_not_fenced_by_history() {
        assert!(check_not_superseded(UNFENCED_TOKEN, 99).is_ok());
    }
}
