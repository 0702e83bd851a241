//! Outgoing node-to-node traffic: openraft's `RaftNetworkFactory` over the internal tonic
//! client, plus the shared per-peer channel cache that forwarding (writes, read-index,
//! heartbeats) reuses. One HTTP/2 channel per peer, created lazily and kept; every call on it
//! carries this node's cluster id (`cluster_identity`). Also the
//! leader's commit gate ([`CommitGate`]): the one field of an outgoing request it changes.
//! This module never interprets replies beyond decoding them.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::BasicNode;
use percy_proto::internal::raft_service_client::RaftServiceClient;
use percy_proto::internal::RaftBytes;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic::{Code, Request};

use crate::cluster_identity::ClusterStamp;
use crate::removal::Removal;
use crate::storage::DurableLog;
use crate::tagged_stream::{AppendEntriesStream, ForwardStream, StreamCallError, TaggedStreams};
use crate::tls::Dialer;
use crate::types::{LogId, NodeId, Raft, TypeConfig};
use crate::wire;

/// How long dialing a peer may take before the attempt counts as "unreachable".
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// HTTP/2 keep-alive so a silently dead peer is noticed between Raft heartbeats.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(5);
/// Peers are trusted: internal messages may be as large as a batch of big entries.
pub const INTERNAL_MAX_MESSAGE_BYTES: usize = 512 * 1024 * 1024;

/// The internal client of one peer: every call carries this node's cluster id.
pub type PeerClient = RaftServiceClient<InterceptedService<Channel, ClusterStamp>>;

/// Channels to peers by id, shared by Raft replication and request forwarding.
#[derive(Clone, Default)]
pub struct PeerClients {
    channels: Arc<Mutex<HashMap<NodeId, (String, Channel)>>>,
    /// This node's own `--peers` addresses. They win over the address stored in the Raft
    /// membership, because how *this* node reaches a peer is local knowledge: behind NAT, a
    /// proxy, or the fault-injection suite's per-link proxies, each node dials another by a
    /// different address while the membership holds one address per node.
    local_addresses: Arc<BTreeMap<NodeId, String>>,
    stamp: ClusterStamp,
    /// Plaintext or TLS, for every call to another node.
    pub dialer: Dialer,
    /// Streams of AppendEntries and of forwarded writes to the peers, over the same channels.
    pub append_streams: TaggedStreams<AppendEntriesStream>,
    pub forward_streams: TaggedStreams<ForwardStream>,
}

impl PeerClients {
    pub fn new(
        local_addresses: BTreeMap<NodeId, String>,
        stamp: ClusterStamp,
        dialer: Dialer,
    ) -> Self {
        Self {
            dialer,
            channels: Arc::default(),
            local_addresses: Arc::new(local_addresses),
            stamp,
            append_streams: TaggedStreams::default(),
            forward_streams: TaggedStreams::default(),
        }
    }

    /// The address this node dials `id` at: its own `--peers` address for it if it has one,
    /// else `membership_addr`.
    pub fn dialed_addr<'a>(&'a self, id: NodeId, membership_addr: &'a str) -> &'a str {
        self.local_addresses
            .get(&id)
            .map_or(membership_addr, String::as_str)
    }

    /// The internal client for `id`, dialled at [`PeerClients::dialed_addr`]; the channel is
    /// reused unless the address changed.
    pub fn client(&self, id: NodeId, membership_addr: &str) -> Result<PeerClient, String> {
        let addr = self.dialed_addr(id, membership_addr);
        let mut channels = self
            .channels
            .lock()
            .map_err(|_| "peer channel table poisoned".to_string())?;
        let channel = match channels.get(&id) {
            Some((known, channel)) if known == addr => channel.clone(),
            _ => {
                let channel = self
                    .dialer
                    .endpoint(addr)
                    .map_err(|e| format!("node {id}: {e}"))?
                    .connect_timeout(CONNECT_TIMEOUT)
                    .tcp_nodelay(true)
                    .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
                    .keep_alive_while_idle(true)
                    .connect_lazy();
                channels.insert(id, (addr.to_string(), channel.clone()));
                channel
            }
        };
        Ok(
            RaftServiceClient::with_interceptor(channel, self.stamp.clone())
                .max_decoding_message_size(INTERNAL_MAX_MESSAGE_BYTES)
                .max_encoding_message_size(INTERNAL_MAX_MESSAGE_BYTES),
        )
    }
}

/// The leader's commit gate (one of the gates in `storage::durable_log`): openraft may count
/// the leader's own copy of an entry before it is durable, so the commit index it sends is
/// clamped to the leader's durable watermark — a follower never applies an entry that only a
/// minority holds durably. When a commit index was held back, [`CommitGate::announce`] sends
/// a heartbeat as soon as the watermark passes it, so followers learn it then rather than
/// with the next write or the next regular heartbeat.
#[derive(Clone)]
pub struct CommitGate {
    durable: DurableLog,
    /// The highest commit index held back and not yet announced; 0 when none is.
    withheld_through: Arc<AtomicU64>,
}

impl CommitGate {
    pub fn new(durable: DurableLog) -> Self {
        Self {
            durable,
            withheld_through: Arc::default(),
        }
    }

    /// The commit index a follower may be told: `commit`, or less when this node's log is not
    /// durable that far yet.
    fn clamp(&self, commit: Option<LogId>) -> Option<LogId> {
        let wanted = commit?;
        let reaches = |durable: Option<LogId>| durable.is_some_and(|d| d.index >= wanted.index);
        let durable = self.durable.watermark().durable;
        if reaches(durable) {
            return commit;
        }
        self.withheld_through
            .fetch_max(wanted.index, Ordering::SeqCst);
        // Look again after recording it: if the watermark moved in between, `announce` may
        // have checked before the record, so use the new watermark now.
        let durable = self.durable.watermark().durable;
        if reaches(durable) {
            commit
        } else {
            durable
        }
    }

    /// Runs until the log closes: after each move of the watermark that passes the withheld
    /// commit index, a heartbeat carries it to the followers.
    pub async fn announce(self, raft: Raft) {
        let mut watermarks = self.durable.subscribe();
        while watermarks.changed().await.is_ok() {
            let durable = watermarks
                .borrow_and_update()
                .durable
                .map_or(0, |d| d.index);
            let withheld = self.withheld_through.load(Ordering::SeqCst);
            if withheld == 0 || durable < withheld {
                continue;
            }
            let announced = self.withheld_through.compare_exchange(
                withheld,
                0,
                Ordering::SeqCst,
                Ordering::SeqCst,
            );
            // Lost the exchange: a higher index was withheld meanwhile; announce that one.
            if announced.is_ok() && raft.trigger().heartbeat().await.is_err() {
                return;
            }
        }
    }
}

/// openraft's factory: one [`PeerConnection`] per replication target.
pub struct NetworkFactory {
    pub peers: PeerClients,
    pub commit_gate: CommitGate,
    /// Hears a peer's refusal of this node as a non-member.
    pub removal: Removal,
}

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = PeerConnection;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> Self::Network {
        PeerConnection {
            target,
            addr: self.peers.dialed_addr(target, &node.addr).to_string(),
            client: self.peers.client(target, &node.addr),
            commit_gate: self.commit_gate.clone(),
            streams: self.peers.append_streams.clone(),
            removal: self.removal.clone(),
        }
    }
}

/// The client side of one peer. A bad address is reported on every call rather than at
/// construction, because openraft's factory cannot fail.
pub struct PeerConnection {
    target: NodeId,
    /// Where `client` dials, which is also what its streams are kept under.
    addr: String,
    client: Result<PeerClient, String>,
    commit_gate: CommitGate,
    streams: TaggedStreams<AppendEntriesStream>,
    removal: Removal,
}

type RpcResult<T, E> = Result<T, RPCError<NodeId, BasicNode, RaftError<NodeId, E>>>;

impl PeerConnection {
    /// Sends one openraft request and decodes `Result<Resp, RaftError<E>>` from the reply.
    async fn call<Req, Resp, E>(
        &mut self,
        method: Method,
        rpc: &Req,
        option: &RPCOption,
    ) -> RpcResult<Resp, E>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let client = self
            .client
            .as_mut()
            .map_err(|e| RPCError::Unreachable(Unreachable::new(&AnyMessage(e.clone()))))?;
        let data = wire::encode(rpc).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let mut request = Request::new(RaftBytes { data });
        request.set_timeout(option.hard_ttl());
        let reply = match method {
            Method::AppendEntries => client.append_entries(request).await,
            Method::Vote => client.vote(request).await,
            Method::InstallSnapshot => client.install_snapshot(request).await,
        }
        .map_err(|status| {
            self.removal.hear(&status);
            // Connection refused / reset: back off (openraft retries after `backoff()`).
            if status.code() == Code::Unavailable {
                RPCError::Unreachable(Unreachable::new(&status))
            } else {
                RPCError::Network(NetworkError::new(&status))
            }
        })?;
        let result: Result<Resp, RaftError<NodeId, E>> = wire::decode(&reply.into_inner().data)
            .map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        result.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

enum Method {
    AppendEntries,
    Vote,
    InstallSnapshot,
}

/// A plain message as an `std::error::Error`, for openraft's error constructors.
#[derive(Debug)]
struct AnyMessage(String);

impl std::fmt::Display for AnyMessage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for AnyMessage {}

impl RaftNetwork<TypeConfig> for PeerConnection {
    async fn append_entries(
        &mut self,
        mut rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<NodeId>, openraft::error::Infallible> {
        rpc.leader_commit = self.commit_gate.clamp(rpc.leader_commit);
        let unreachable = |why: String| RPCError::Unreachable(Unreachable::new(&AnyMessage(why)));
        let client = self.client.as_ref().map_err(|e| unreachable(e.clone()))?;
        let streamed = self
            .streams
            .call(&self.addr, client, &rpc, option.hard_ttl())
            .await;
        match streamed {
            Ok(Ok(answer)) => {
                answer.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
            }
            // The follower did not acknowledge (its log was truncated meanwhile): retry soon.
            Ok(Err(why)) => Err(RPCError::Network(NetworkError::new(&AnyMessage(why)))),
            Err(StreamCallError::Unsupported) => {
                self.call(Method::AppendEntries, &rpc, &option).await
            }
            Err(StreamCallError::Broken(why)) => Err(unreachable(why)),
            Err(StreamCallError::TimedOut) => Err(RPCError::Network(NetworkError::new(
                &AnyMessage(format!("no answer within {:?}", option.hard_ttl())),
            ))),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<NodeId>, InstallSnapshotError> {
        self.call(Method::InstallSnapshot, &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> RpcResult<VoteResponse<NodeId>, openraft::error::Infallible> {
        self.call(Method::Vote, &rpc, &option).await
    }
}
