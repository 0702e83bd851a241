//! A node that was removed from the cluster, and knows it.
//!
//! A removed node may never see the configuration that removed it (the leader stops
//! replicating to it once that configuration commits), so on its own it times out, campaigns
//! with a rising term, and requests sent to it hang until "cluster unavailable". It learns
//! of its removal in two ways: its peers refuse its votes and read-index requests as a
//! non-member, naming the members and the index of their configuration in the refusal's
//! metadata ([`not_a_member`]); or it applies a configuration without itself after having been
//! in one. [`MembershipTracker`] turns both into one verdict; the node then stops campaigning
//! and answers every public request at once with FAILED_PRECONDITION naming the members
//! (`api::edge::observe`).
//!
//! Removal is not forever: adding the node back makes the leader replicate to it again, and
//! once it holds a configuration newer than the one it was removed under that includes it, it
//! serves and campaigns again.

use std::sync::Arc;

use tokio::sync::watch;
use tonic::metadata::MetadataValue;
use tonic::Status;

use crate::types::NodeId;

/// Metadata key of a refusal because the caller is not a member; its value lists the members
/// as `id=addr,…`.
pub const NOT_A_MEMBER: &str = "percy-not-a-member";
/// Metadata key of the same refusal: the log index of the refusing node's configuration, so a
/// node holding a newer one that includes itself can tell the refusal is stale.
pub const CONFIG_INDEX: &str = "percy-config-index";

/// A peer's word that this node is not a member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    /// The members the peer named, `id=addr,…`.
    pub members: String,
    /// The log index of the peer's configuration (`None`: the initial one).
    pub config_index: Option<u64>,
}

/// Shared by the network layer (which hears refusals) and the node (which judges them with a
/// [`MembershipTracker`] and acts).
#[derive(Debug, Clone)]
pub struct Removal {
    /// Set while this node counts itself removed: the members it knows of.
    removed: Arc<watch::Sender<Option<String>>>,
    /// The latest refusal heard from a peer, not yet judged.
    refused: Arc<watch::Sender<Option<Refused>>>,
}

impl Default for Removal {
    fn default() -> Self {
        Self {
            removed: Arc::new(watch::channel(None).0),
            refused: Arc::new(watch::channel(None).0),
        }
    }
}

impl Removal {
    /// Records that this node is no longer a member; `members` are the current ones.
    pub fn mark(&self, members: String) {
        tracing::error!(
            %members,
            "this node was removed from the cluster: it no longer campaigns or serves"
        );
        self.removed.send_replace(Some(members));
    }

    /// Records that this node was added back.
    pub fn clear(&self) {
        if self.removed.send_replace(None).is_some() {
            tracing::info!("this node was added back to the cluster: it serves again");
        }
    }

    /// Passes `status` on for judging if it is a peer's refusal of a non-member.
    pub fn hear(&self, status: &Status) {
        let metadata = status.metadata();
        let Some(members) = metadata.get(NOT_A_MEMBER).and_then(|v| v.to_str().ok()) else {
            return;
        };
        let config_index = metadata
            .get(CONFIG_INDEX)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        self.refused.send_replace(Some(Refused {
            members: members.to_string(),
            config_index,
        }));
    }

    /// Subscribes to the refusals [`Removal::hear`] passes on.
    pub fn refusals(&self) -> watch::Receiver<Option<Refused>> {
        self.refused.subscribe()
    }

    /// The members this node knows of while it counts itself removed.
    pub fn members(&self) -> Option<String> {
        self.removed.borrow().clone()
    }

    /// The answer to every public request while removed: UNAVAILABLE, as from a node that is
    /// down, because the request never reached any state and another node can serve it. (A
    /// definite refusal here made a client stop retrying a write whose earlier attempt, timed
    /// out on another node, had committed: the soak's queue run under membership changes.)
    pub fn refusal(&self, me: NodeId) -> Option<Status> {
        self.members().map(|members| {
            Status::unavailable(format!(
                "node {me} was removed from the cluster; its members are {members}"
            ))
        })
    }
}

/// The configuration a node holds, as [`MembershipTracker`] needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConfigView {
    /// Log index of the configuration (`None`: the initial, empty one).
    pub index: Option<u64>,
    /// Whether it names this node, as voter or learner.
    pub includes_me: bool,
    /// Whether it has any voter (a node that has not joined yet holds none).
    pub has_voters: bool,
}

/// What the node must do after [`MembershipTracker::observe`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MembershipChange {
    /// Nothing.
    Unchanged,
    /// Stop campaigning and serving: the configuration held now no longer names this node.
    Dropped,
    /// Stop campaigning and serving: a peer refused this node, naming these members.
    Refused(String),
    /// Campaign and serve again.
    Rejoined,
}

/// Decides, from the configurations a node applies and the refusals it hears, whether it was
/// removed or added back. Pure: the node feeds it and acts on the verdict.
#[derive(Debug, Default)]
pub struct MembershipTracker {
    /// Whether any configuration so far named this node. A node being added sees older
    /// configurations without itself first, so only "named, then not named" is a removal.
    was_member: bool,
    /// While removed: the index of the configuration held when the removal was noticed. Only
    /// a newer configuration naming this node adds it back.
    removed_under: Option<Option<u64>>,
}

impl MembershipTracker {
    /// Judges the configuration held now, and a refusal heard since the last call, if any.
    pub fn observe(&mut self, config: ConfigView, refused: Option<&Refused>) -> MembershipChange {
        if let Some(under) = self.removed_under {
            if config.includes_me && config.index > under {
                self.removed_under = None;
                self.was_member = true;
                return MembershipChange::Rejoined;
            }
            return MembershipChange::Unchanged;
        }
        let dropped = self.was_member && !config.includes_me && config.has_voters;
        self.was_member |= config.includes_me;
        // A refusal from a peer whose configuration is older than one naming this node only
        // says the peer lags.
        let refusal = refused.filter(|r| !(config.includes_me && config.index > r.config_index));
        if dropped {
            self.removed_under = Some(config.index);
            return MembershipChange::Dropped;
        }
        match refusal {
            Some(r) => {
                self.removed_under = Some(config.index);
                MembershipChange::Refused(r.members.clone())
            }
            None => MembershipChange::Unchanged,
        }
    }
}

/// Whether `caller` counts as a member of `membership`, voter or learner. A node that knows no
/// configuration yet (a new cluster before its first entry reaches it) cannot judge, and lets
/// every caller count.
pub fn is_member(
    membership: &openraft::Membership<NodeId, openraft::BasicNode>,
    caller: NodeId,
) -> bool {
    membership.voter_ids().next().is_none() || membership.get_node(&caller).is_some()
}

/// `id=addr,…` of every node in `membership`, voters and learners.
pub fn describe(membership: &openraft::Membership<NodeId, openraft::BasicNode>) -> String {
    membership
        .nodes()
        .map(|(id, node)| format!("{id}={}", node.addr))
        .collect::<Vec<_>>()
        .join(",")
}

/// The refusal a member sends a non-member `caller`, listing `members` (of the configuration
/// at `config_index`) in the metadata so the caller can [`Removal::hear`] it.
pub fn not_a_member(caller: NodeId, members: &str, config_index: Option<u64>) -> Status {
    let mut status = Status::failed_precondition(format!(
        "node {caller} is not a member of this cluster; its members are {members}"
    ));
    if let Ok(value) = MetadataValue::try_from(members) {
        status.metadata_mut().insert(NOT_A_MEMBER, value);
    }
    if let Some(index) = config_index {
        status
            .metadata_mut()
            .insert(CONFIG_INDEX, MetadataValue::from(index));
    }
    status
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(index: u64, includes_me: bool) -> ConfigView {
        ConfigView {
            index: Some(index),
            includes_me,
            has_voters: true,
        }
    }

    fn refused(config_index: u64) -> Refused {
        Refused {
            members: "1=a:1,3=c:3".into(),
            config_index: Some(config_index),
        }
    }

    #[test]
    fn a_refusal_is_passed_on_with_the_members_and_the_config_index() {
        let removal = Removal::default();
        let mut heard = removal.refusals();
        removal.hear(&Status::failed_precondition("something else"));
        assert!(
            !heard.has_changed().unwrap(),
            "only a non-member refusal counts"
        );
        removal.hear(&not_a_member(2, "1=a:1,3=c:3", Some(7)));
        assert_eq!(heard.borrow_and_update().clone(), Some(refused(7)));
        assert!(removal.refusal(2).is_none(), "hearing is not judging");
    }

    #[test]
    fn the_refusal_names_the_members_until_cleared() {
        let removal = Removal::default();
        assert!(removal.refusal(2).is_none());
        removal.mark("1=a:1,3=c:3".into());
        let refusal = removal.refusal(2).expect("removed");
        assert_eq!(refusal.code(), tonic::Code::Unavailable);
        assert!(
            refusal.message().contains("1=a:1,3=c:3"),
            "{}",
            refusal.message()
        );
        removal.clear();
        assert!(removal.refusal(2).is_none());
    }

    #[test]
    fn a_node_being_added_is_not_removed_by_the_configurations_before_it() {
        let mut tracker = MembershipTracker::default();
        let empty = ConfigView {
            index: None,
            includes_me: false,
            has_voters: false,
        };
        assert_eq!(tracker.observe(empty, None), MembershipChange::Unchanged);
        assert_eq!(
            tracker.observe(config(3, false), None),
            MembershipChange::Unchanged
        );
        assert_eq!(
            tracker.observe(config(9, true), None),
            MembershipChange::Unchanged
        );
    }

    #[test]
    fn a_configuration_without_this_node_after_one_with_it_removes_it_until_a_newer_one_names_it() {
        let mut tracker = MembershipTracker::default();
        tracker.observe(config(1, true), None);
        assert_eq!(
            tracker.observe(config(5, false), None),
            MembershipChange::Dropped
        );
        assert_eq!(
            tracker.observe(config(5, false), None),
            MembershipChange::Unchanged
        );
        assert_eq!(
            tracker.observe(config(8, true), None),
            MembershipChange::Rejoined
        );
        assert_eq!(
            tracker.observe(config(8, true), None),
            MembershipChange::Unchanged
        );
    }

    #[test]
    fn a_refusal_removes_a_node_whose_configuration_still_names_it() {
        // The removed node never saw the configuration that removed it.
        let mut tracker = MembershipTracker::default();
        tracker.observe(config(1, true), None);
        assert_eq!(
            tracker.observe(config(1, true), Some(&refused(5))),
            MembershipChange::Refused("1=a:1,3=c:3".into())
        );
        // Replication resumes: first the configuration that removed it, then the one that
        // adds it back.
        assert_eq!(
            tracker.observe(config(5, false), None),
            MembershipChange::Unchanged
        );
        assert_eq!(
            tracker.observe(config(8, true), None),
            MembershipChange::Rejoined
        );
    }

    #[test]
    fn a_refusal_from_a_peer_with_an_older_configuration_is_ignored() {
        let mut tracker = MembershipTracker::default();
        tracker.observe(config(8, true), None);
        assert_eq!(
            tracker.observe(config(8, true), Some(&refused(5))),
            MembershipChange::Unchanged
        );
        assert_eq!(
            tracker.observe(config(8, true), Some(&refused(8))),
            MembershipChange::Refused("1=a:1,3=c:3".into()),
            "a peer at the same configuration without this node is right"
        );
    }
}
