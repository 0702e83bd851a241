//! A node that was removed from the cluster, and knows it.
//!
//! A removed node may never see the configuration that removed it (the leader stops
//! replicating to it once that configuration commits), so on its own it times out, campaigns
//! with a rising term, and requests sent to it hang until "cluster unavailable". It learns
//! of its removal in two ways: its peers refuse its votes and read-index requests as a
//! non-member, naming the members in the refusal's metadata ([`not_a_member`]); or it applies
//! a configuration without itself after having been in one. Either way [`Removal::mark`]
//! records the members it was told of; the node then stops campaigning and answers every
//! public request at once with FAILED_PRECONDITION naming them (`api::edge::observe`).

use std::sync::Arc;

use tokio::sync::watch;
use tonic::metadata::MetadataValue;
use tonic::Status;

use crate::types::NodeId;

/// Metadata key of a refusal because the caller is not a member; its value lists the members
/// as `id=addr,…`.
pub const NOT_A_MEMBER: &str = "percy-not-a-member";

/// Shared by the network layer (which hears refusals) and the node (which acts on them).
#[derive(Debug, Clone)]
pub struct Removal {
    members: Arc<watch::Sender<Option<String>>>,
}

impl Default for Removal {
    fn default() -> Self {
        Self {
            members: Arc::new(watch::channel(None).0),
        }
    }
}

impl Removal {
    /// Records that this node is no longer a member; `members` are the current ones. The
    /// first report wins (a later one says the same thing, or less).
    pub fn mark(&self, members: String) {
        self.members.send_if_modified(|known| {
            if known.is_some() {
                return false;
            }
            tracing::error!(
                %members,
                "this node was removed from the cluster: it no longer campaigns or serves"
            );
            *known = Some(members);
            true
        });
    }

    /// Records a removal if `status` is a peer's refusal of a non-member.
    pub fn hear(&self, status: &Status) {
        if let Some(members) = status
            .metadata()
            .get(NOT_A_MEMBER)
            .and_then(|v| v.to_str().ok())
        {
            self.mark(members.to_string());
        }
    }

    /// The members this node was told of, once it knows it was removed.
    pub fn members(&self) -> Option<String> {
        self.members.borrow().clone()
    }

    /// The answer to every public request once removed.
    pub fn refusal(&self, me: NodeId) -> Option<Status> {
        self.members().map(|members| {
            Status::failed_precondition(format!(
                "node {me} was removed from the cluster; its members are {members}"
            ))
        })
    }

    /// Resolves once this node knows it was removed.
    pub async fn removed(&self) {
        let mut seen = self.members.subscribe();
        // An error means the sender is gone, i.e. the node is shutting down: never resolve.
        if seen.wait_for(Option::is_some).await.is_err() {
            std::future::pending::<()>().await;
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

/// The refusal a member sends a non-member `caller`, listing `members` in the metadata so the
/// caller can [`Removal::hear`] it.
pub fn not_a_member(caller: NodeId, members: &str) -> Status {
    let mut status = Status::failed_precondition(format!(
        "node {caller} is not a member of this cluster; its members are {members}"
    ));
    if let Ok(value) = MetadataValue::try_from(members) {
        status.metadata_mut().insert(NOT_A_MEMBER, value);
    }
    status
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_of_a_non_member_marks_the_removal_with_the_members() {
        let removal = Removal::default();
        assert!(removal.refusal(4).is_none());
        removal.hear(&Status::failed_precondition("something else"));
        assert!(
            removal.members().is_none(),
            "only a non-member refusal counts"
        );
        removal.hear(&not_a_member(4, "1=a:1,2=b:2"));
        assert_eq!(removal.members().as_deref(), Some("1=a:1,2=b:2"));
        let refusal = removal.refusal(4).expect("removed");
        assert_eq!(refusal.code(), tonic::Code::FailedPrecondition);
        assert!(
            refusal.message().contains("1=a:1,2=b:2"),
            "{}",
            refusal.message()
        );
        removal.mark("3=c:3".into());
        assert_eq!(
            removal.members().as_deref(),
            Some("1=a:1,2=b:2"),
            "first wins"
        );
    }
}
