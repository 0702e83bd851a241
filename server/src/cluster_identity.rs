//! A cluster's identity on the wire (the id itself is recorded by `storage::identity`).
//!
//! - Every internal call carries the sender's cluster id in [`CLUSTER_ID_HEADER`]
//!   ([`ClusterStamp`], on every channel `network::PeerClients` makes).
//! - The internal service admits a call only if it carries this node's cluster id, or none (a
//!   new node that has not heard it yet, or a build before this one); a node without an id
//!   records the first one it is called with: that is how a node joins ([`ClusterGuard`]).
//! - The health service's answers carry the id too ([`Stamped`]), so a starting node asks each
//!   peer which cluster it belongs to ([`check_peers`]) and stops with one clear line when a
//!   peer belongs to another one: its data dir is another cluster's, or its `--peers` name
//!   another cluster's nodes. The check runs beside the node, not before it, because peers
//!   may well not be up yet (every node of a cluster starts at once); it gives up on a peer
//!   that does not answer within [`PEER_CHECK_WINDOW`], and the guard still refuses that
//!   peer's calls if it turns out to be foreign.
//!
//! Owns: the header and the three checks that use it. Must not: decide membership (a call
//! from the right cluster is not thereby from a member).

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::time::Duration;

use futures::future::BoxFuture;
use tonic::codegen::{http, Service};
use tonic::metadata::MetadataValue;
use tonic::server::NamedService;
use tonic::service::Interceptor;
use tonic::{Request, Status};
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

use crate::storage::{ClusterId, DataDirIdentity, LearnError};
use crate::tls::Dialer;
use crate::types::NodeId;

/// Metadata key of the sender's cluster id on internal calls, and of the node's on health
/// answers.
pub const CLUSTER_ID_HEADER: &str = "percy-cluster-id";
/// How long a starting node keeps asking a peer that does not answer yet.
pub const PEER_CHECK_WINDOW: Duration = Duration::from_secs(60);
/// Between two questions to a peer that did not answer.
const PEER_CHECK_INTERVAL: Duration = Duration::from_millis(500);
/// One question: connecting and the health call.
const PEER_CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// Adds this node's cluster id, once it has one, to outgoing internal calls.
#[derive(Clone, Default)]
pub struct ClusterStamp {
    identity: Option<DataDirIdentity>,
}

impl ClusterStamp {
    pub fn new(identity: DataDirIdentity) -> Self {
        Self {
            identity: Some(identity),
        }
    }

    fn cluster_id(&self) -> Option<ClusterId> {
        self.identity.as_ref()?.cluster_id()
    }
}

impl Interceptor for ClusterStamp {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        // Hex digits always make a valid header value.
        if let Some(value) = self
            .cluster_id()
            .and_then(|id| MetadataValue::try_from(id.to_string()).ok())
        {
            request.metadata_mut().insert(CLUSTER_ID_HEADER, value);
        }
        Ok(request)
    }
}

/// Admits an internal call by the cluster id it carries (see the module docs).
#[derive(Clone)]
pub struct ClusterGuard {
    identity: DataDirIdentity,
}

impl ClusterGuard {
    pub fn new(identity: DataDirIdentity) -> Self {
        Self { identity }
    }
}

impl Interceptor for ClusterGuard {
    /// Recording a newly learned id flushes sled on this thread: once in a node's life.
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        let Some(value) = request.metadata().get(CLUSTER_ID_HEADER) else {
            return Ok(request);
        };
        let theirs: ClusterId = value
            .to_str()
            .map_err(|_| Status::invalid_argument(format!("{CLUSTER_ID_HEADER} is not text")))?
            .parse()
            .map_err(|e| Status::invalid_argument(format!("{CLUSTER_ID_HEADER}: {e}")))?;
        match self.identity.learn_cluster_id(theirs) {
            Ok(()) => Ok(request),
            Err(e @ LearnError::OtherCluster { .. }) => Err(Status::failed_precondition(format!(
                "node {} refuses a call from another cluster: {e}",
                self.identity.node_id()
            ))),
            Err(LearnError::Storage(e)) => Err(Status::unavailable(format!(
                "node {} cannot record its cluster id: {e}",
                self.identity.node_id()
            ))),
        }
    }
}

/// A service whose answers carry this node's cluster id (the health service, which
/// [`check_peers`] asks).
#[derive(Clone)]
pub struct Stamped<S> {
    inner: S,
    stamp: ClusterStamp,
}

impl<S> Stamped<S> {
    pub fn new(inner: S, stamp: ClusterStamp) -> Self {
        Self { inner, stamp }
    }
}

impl<S: NamedService> NamedService for Stamped<S> {
    const NAME: &'static str = S::NAME;
}

impl<S, Req, Body> Service<http::Request<Req>> for Stamped<S>
where
    S: Service<http::Request<Req>, Response = http::Response<Body>, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Self::Response, Infallible>>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Req>) -> Self::Future {
        let header = self
            .stamp
            .cluster_id()
            .and_then(|id| http::HeaderValue::try_from(id.to_string()).ok());
        let answer = self.inner.call(request);
        Box::pin(async move {
            let mut response = answer.await?;
            if let Some(header) = header {
                response.headers_mut().insert(CLUSTER_ID_HEADER, header);
            }
            Ok(response)
        })
    }
}

/// A peer that belongs to another cluster than this node's data dir.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForeignPeer {
    pub ours: ClusterId,
    pub peer: NodeId,
    pub addr: String,
    pub theirs: ClusterId,
}

/// Asks every peer but this node which cluster it belongs to, each until it answers or
/// [`PEER_CHECK_WINDOW`] passes. Ends with the first peer of another cluster, or once every
/// peer answered or was given up on.
pub async fn check_peers(
    identity: DataDirIdentity,
    peers: BTreeMap<NodeId, String>,
    dialer: Dialer,
) -> Result<(), ForeignPeer> {
    let checks = peers
        .into_iter()
        .filter(|(id, _)| *id != identity.node_id())
        .map(|(id, addr)| check_peer(identity.clone(), id, addr, dialer.clone()));
    futures::future::try_join_all(checks).await.map(drop)
}

async fn check_peer(
    identity: DataDirIdentity,
    peer: NodeId,
    addr: String,
    dialer: Dialer,
) -> Result<(), ForeignPeer> {
    let deadline = tokio::time::Instant::now() + PEER_CHECK_WINDOW;
    loop {
        match tokio::time::timeout(PEER_CHECK_TIMEOUT, ask(&addr, &dialer)).await {
            // A node that has no id yet is new (or from an older build): nothing to compare.
            Ok(Ok(theirs)) => {
                return match (identity.cluster_id(), theirs) {
                    (Some(ours), Some(theirs)) if ours != theirs => Err(ForeignPeer {
                        ours,
                        peer,
                        addr,
                        theirs,
                    }),
                    _ => Ok(()),
                };
            }
            Ok(Err(why)) => tracing::debug!(peer, %addr, why, "cluster check: no answer yet"),
            Err(_) => tracing::debug!(peer, %addr, "cluster check: no answer in time"),
        }
        if tokio::time::Instant::now() + PEER_CHECK_INTERVAL >= deadline {
            tracing::info!(peer, %addr, "cluster check: the peer never answered; not checked");
            return Ok(());
        }
        tokio::time::sleep(PEER_CHECK_INTERVAL).await;
    }
}

/// The cluster id `addr`'s health answer carries (`None`: the peer has none).
async fn ask(addr: &str, dialer: &Dialer) -> Result<Option<ClusterId>, String> {
    let channel = dialer
        .endpoint(addr)?
        .connect_timeout(PEER_CHECK_TIMEOUT)
        .connect()
        .await
        .map_err(|e| e.to_string())?;
    let answer = HealthClient::new(channel)
        .check(HealthCheckRequest::default())
        .await
        .map_err(|e| e.to_string())?;
    match answer.metadata().get(CLUSTER_ID_HEADER) {
        None => Ok(None),
        Some(value) => value
            .to_str()
            .map_err(|e| e.to_string())?
            .parse()
            .map(Some)
            .map_err(|e: crate::storage::BadClusterId| e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use percy_proto::internal::raft_service_client::RaftServiceClient;
    use percy_proto::internal::RaftBytes;
    use tonic::Code;

    use super::*;
    use crate::storage;
    use crate::test_cluster::{Cluster, SETTLE};
    use crate::NodeHandle;

    /// A data dir of its own, as node `node_id`, with a cluster id if `named`.
    fn identity(node_id: NodeId, named: bool) -> (tempfile::TempDir, DataDirIdentity) {
        let dir = tempfile::tempdir().expect("tempdir");
        let (_log, _sm, identity) = storage::open_node(dir.path(), node_id).expect("open");
        if named {
            identity.establish_cluster_id().expect("cluster id");
        }
        (dir, identity)
    }

    fn call_carrying(id: &str) -> Request<()> {
        let mut request = Request::new(());
        request
            .metadata_mut()
            .insert(CLUSTER_ID_HEADER, id.parse().expect("ascii"));
        request
    }

    #[test]
    fn the_guard_learns_the_first_cluster_id_and_refuses_others() {
        let (_dir, identity) = identity(2, false);
        let mut guard = ClusterGuard::new(identity.clone());
        let (ours, theirs) = (ClusterId::random(), ClusterId::random());
        // A peer that has no id yet (or an older build) is let in, and teaches nothing.
        assert!(guard.call(Request::new(())).is_ok());
        assert_eq!(identity.cluster_id(), None);
        assert!(guard.call(call_carrying(&ours.to_string())).is_ok());
        assert_eq!(identity.cluster_id(), Some(ours));
        let refused = guard
            .call(call_carrying(&theirs.to_string()))
            .expect_err("another cluster");
        assert_eq!(refused.code(), Code::FailedPrecondition);
        assert!(refused.message().contains(&theirs.to_string()), "{refused}");
        let malformed = guard.call(call_carrying("cluster-7")).expect_err("junk");
        assert_eq!(malformed.code(), Code::InvalidArgument);
        assert_eq!(identity.cluster_id(), Some(ours), "unchanged");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_cluster_shares_one_id_and_refuses_calls_and_peers_of_another() {
        let cluster = Cluster::start().await;
        let deadline = tokio::time::Instant::now() + SETTLE;
        let id = loop {
            let ids: Vec<_> = cluster.nodes.iter().map(NodeHandle::cluster_id).collect();
            if ids[0].is_some() && ids.iter().all(|id| *id == ids[0]) {
                break ids[0];
            }
            assert!(tokio::time::Instant::now() < deadline, "ids: {ids:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let peers: BTreeMap<NodeId, String> = cluster
            .nodes
            .iter()
            .map(|n| (n.node_id(), n.addr().to_string()))
            .collect();

        // A node of another cluster: its internal calls are refused before they are read.
        let (_dir, foreign) = identity(9, true);
        let channel = tonic::transport::Endpoint::from_shared(cluster.nodes[1].endpoint())
            .expect("endpoint")
            .connect_lazy();
        let refused =
            RaftServiceClient::with_interceptor(channel, ClusterStamp::new(foreign.clone()))
                .vote(RaftBytes::default())
                .await
                .expect_err("a vote from another cluster");
        assert_eq!(refused.code(), Code::FailedPrecondition, "{refused}");

        // Asked at its start, the cluster's nodes tell it that it is not one of them.
        let found = check_peers(foreign.clone(), peers.clone(), Dialer::default())
            .await
            .expect_err("a foreign data dir");
        assert_eq!(
            (found.ours, Some(found.theirs)),
            (foreign.cluster_id().expect("id"), id)
        );
        // A new node has nothing to compare.
        let (_dir, new) = identity(9, false);
        check_peers(new, peers, Dialer::default())
            .await
            .expect("a new node");
        cluster.stop().await;
    }
}
