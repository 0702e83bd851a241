//! Which vote requests reach openraft. Two kinds are refused before the Raft core sees them:
//!
//! - **from a non-member**: a node that is neither a voter nor a learner of this node's
//!   membership (a removed node still campaigning, a stray process) must not make anyone
//!   step down. It gets FAILED_PRECONDITION naming the members (see `removal`), so it learns
//!   it was removed.
//! - **while a leader is known to be alive** (Raft thesis §4.2.3, what PreVote gives): a
//!   leader that a quorum acknowledged within the minimum election timeout, or a follower
//!   that heard from its leader within it, answers "not granted" with its own vote. Without
//!   this a single vote of a higher term — a node back from a partition, or anyone reaching
//!   the port — deposed a healthy leader, and ten a second kept writes failing. openraft's
//!   own lease check covers followers but not a leader.
//!
//! The decision is a pure function of what this node knows ([`VoteView`]), tested below
//! without a network or a clock; `raft_service` gathers the view and applies the verdict.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

/// What this node knows when a vote request arrives.
#[derive(Debug, Clone, Copy)]
pub struct VoteView {
    /// The candidate is a voter or learner of this node's effective membership.
    pub candidate_is_member: bool,
    /// The candidate's term is above this node's.
    pub candidate_term_is_higher: bool,
    /// This node leads and a quorum acknowledged it this recently.
    pub since_quorum_ack: Option<Duration>,
    /// This node follows a leader it heard from this recently.
    pub since_leader_contact: Option<Duration>,
    /// Within this, a leader counts as alive (the minimum election timeout).
    pub leader_alive_within: Duration,
}

/// What to do with a vote request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VoteVerdict {
    /// Hand it to openraft, which applies Raft's own rules.
    Consider,
    /// The candidate is not a member: refuse with the member list.
    NotAMember,
    /// A leader is known to be alive: answer "not granted" without changing anything.
    LeaderAlive,
}

/// Decides what happens to a vote request.
pub fn judge(view: &VoteView) -> VoteVerdict {
    if !view.candidate_is_member {
        return VoteVerdict::NotAMember;
    }
    let recent = |since: Option<Duration>| since.is_some_and(|d| d < view.leader_alive_within);
    if view.candidate_term_is_higher
        && (recent(view.since_quorum_ack) || recent(view.since_leader_contact))
    {
        return VoteVerdict::LeaderAlive;
    }
    VoteVerdict::Consider
}

/// When this node last accepted entries or a heartbeat from a leader.
#[derive(Debug)]
pub struct LeaderContact {
    epoch: Instant,
    /// Milliseconds since `epoch` + 1 of the last contact; 0 = never.
    last_ms_plus_one: AtomicU64,
}

impl Default for LeaderContact {
    fn default() -> Self {
        Self {
            epoch: Instant::now(),
            last_ms_plus_one: AtomicU64::new(0),
        }
    }
}

impl LeaderContact {
    /// Records a successful AppendEntries from the current leader.
    pub fn heard(&self) {
        let ms = self.epoch.elapsed().as_millis() as u64;
        self.last_ms_plus_one.fetch_max(ms + 1, Ordering::Relaxed);
    }

    /// How long ago the last contact was, if there was one.
    pub fn since(&self) -> Option<Duration> {
        match self.last_ms_plus_one.load(Ordering::Relaxed) {
            0 => None,
            at => {
                let now = self.epoch.elapsed().as_millis() as u64;
                Some(Duration::from_millis(now.saturating_sub(at - 1)))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALIVE: Duration = Duration::from_millis(500);

    fn view() -> VoteView {
        VoteView {
            candidate_is_member: true,
            candidate_term_is_higher: true,
            since_quorum_ack: None,
            since_leader_contact: None,
            leader_alive_within: ALIVE,
        }
    }

    #[test]
    fn a_member_candidate_is_considered_when_no_leader_is_known_alive() {
        assert_eq!(judge(&view()), VoteVerdict::Consider);
        let stale = VoteView {
            since_quorum_ack: Some(ALIVE),
            since_leader_contact: Some(ALIVE * 3),
            ..view()
        };
        assert_eq!(judge(&stale), VoteVerdict::Consider);
    }

    #[test]
    fn a_non_member_is_refused_whatever_its_term() {
        for higher in [true, false] {
            let v = VoteView {
                candidate_is_member: false,
                candidate_term_is_higher: higher,
                ..view()
            };
            assert_eq!(judge(&v), VoteVerdict::NotAMember);
        }
    }

    #[test]
    fn a_higher_term_does_not_depose_a_leader_acknowledged_by_a_quorum() {
        let v = VoteView {
            since_quorum_ack: Some(Duration::from_millis(40)),
            ..view()
        };
        assert_eq!(judge(&v), VoteVerdict::LeaderAlive);
    }

    #[test]
    fn a_follower_that_just_heard_its_leader_refuses_a_higher_term() {
        let v = VoteView {
            since_leader_contact: Some(Duration::from_millis(10)),
            ..view()
        };
        assert_eq!(judge(&v), VoteVerdict::LeaderAlive);
    }

    #[test]
    fn votes_of_the_same_or_a_lower_term_go_to_openraft() {
        let v = VoteView {
            candidate_term_is_higher: false,
            since_quorum_ack: Some(Duration::from_millis(1)),
            ..view()
        };
        assert_eq!(judge(&v), VoteVerdict::Consider);
    }

    #[test]
    fn leader_contact_reports_how_long_ago() {
        let contact = LeaderContact::default();
        assert_eq!(contact.since(), None);
        contact.heard();
        assert!(contact.since().is_some_and(|d| d < Duration::from_secs(5)));
    }
}
