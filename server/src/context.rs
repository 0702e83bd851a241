//! [`NodeContext`]: everything a request handler or background task of one node needs, shared
//! behind an `Arc`. It owns no behaviour of its own beyond small accessors over Raft metrics.

use std::time::Duration;

use percy_proto::v1::ResponseHeader;

use crate::batcher::Batcher;
use crate::config::NodeConfig;
use crate::liveness::Liveness;
use crate::metrics::Metrics;
use crate::network::PeerClients;
use crate::removal::Removal;
use crate::state::StateView;
use crate::storage::DurableLog;
use crate::types::{NodeId, Raft};
use crate::vote_guard::LeaderContact;
use crate::watch::WatchHub;

pub struct NodeContext {
    pub node_id: NodeId,
    pub config: NodeConfig,
    pub raft: Raft,
    /// The leader's proposal queue (group commit); see `batcher`.
    pub batcher: Batcher,
    pub state: StateView,
    /// This node's log durability watermark (see `storage::durable_log`).
    pub durable: DurableLog,
    pub peers: PeerClients,
    pub liveness: Liveness,
    pub watch: WatchHub,
    pub metrics: Metrics,
    /// Set once this node learns it was removed from the cluster (see `removal`).
    pub removal: Removal,
    /// When this node last accepted entries from a leader (see `vote_guard`).
    pub leader_contact: LeaderContact,
}

impl NodeContext {
    /// The leader as this node currently knows it.
    pub fn leader(&self) -> Option<NodeId> {
        self.raft.metrics().borrow().current_leader
    }

    pub fn is_leader(&self) -> bool {
        self.leader() == Some(self.node_id)
    }

    /// The address of `id` in the current membership config.
    pub fn addr_of(&self, id: NodeId) -> Option<String> {
        let metrics = self.raft.metrics();
        let m = metrics.borrow();
        m.membership_config
            .membership()
            .get_node(&id)
            .map(|n| n.addr.clone())
    }

    /// Waits up to `timeout` for some leader to be known (an election may be running).
    pub async fn wait_for_leader(&self, timeout: Duration) -> Option<NodeId> {
        let mut rx = self.raft.metrics();
        let found = tokio::time::timeout(timeout, async {
            loop {
                if let Some(leader) = rx.borrow_and_update().current_leader {
                    return Some(leader);
                }
                if rx.changed().await.is_err() {
                    return None;
                }
            }
        })
        .await;
        found.ok().flatten()
    }

    /// The header of an answer that reflects `revision`.
    pub fn header(&self, revision: u64, forwarded: bool) -> Option<ResponseHeader> {
        Some(ResponseHeader {
            node_id: self.node_id,
            leader_id: self.leader().unwrap_or(0),
            revision,
            forwarded,
        })
    }
}
