//! Starting, bootstrapping and stopping one node: binds the port, opens storage (refusing a
//! data dir of another node), creates the Raft instance, initialises the cluster when this
//! node is the lowest-id peer and the log is empty (and gives it its cluster id), serves every
//! gRPC service plus reflection, health and `/metrics` on the one port, starts the background
//! tasks (watch feed, liveness monitor), and asks the peers whether they belong to this
//! node's cluster ([`NodeHandle::serving`] fails if one does not). [`NodeHandle::shutdown`]
//! undoes it in order. This is the library API tests and tools use to run nodes in-process.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use openraft::{BasicNode, ServerState, SnapshotPolicy};
use percy_proto::internal::raft_service_server::RaftServiceServer;
use percy_proto::v1::agent_service_server::AgentServiceServer;
use percy_proto::v1::cluster_service_server::ClusterServiceServer;
use percy_proto::v1::config_service_server::ConfigServiceServer;
use percy_proto::v1::definition_run_service_server::DefinitionRunServiceServer;
use percy_proto::v1::definition_service_server::DefinitionServiceServer;
use percy_proto::v1::exec_service_server::ExecServiceServer;
use percy_proto::v1::lock_service_server::LockServiceServer;
use percy_proto::v1::message_service_server::MessageServiceServer;
use percy_proto::v1::plan_service_server::PlanServiceServer;
use percy_proto::v1::task_service_server::TaskServiceServer;
use percy_proto::v1::token_service_server::TokenServiceServer;
use percy_proto::v1::watch_service_server::WatchServiceServer;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic::service::interceptor::InterceptedService;
use tonic::service::Routes;
use tonic::transport::server::TcpIncoming;

use crate::api;
use crate::auth::{self, Authenticated};
use crate::batcher::Batcher;
use crate::cluster_identity::{check_peers, ClusterGuard, ClusterStamp, ForeignPeer, Stamped};
use crate::config::{ConfigError, NodeConfig};
use crate::context::NodeContext;
use crate::liveness::{run_monitor, Liveness};
use crate::metrics::{Metrics, MetricsError};
use crate::network::{CommitGate, NetworkFactory, PeerClients, INTERNAL_MAX_MESSAGE_BYTES};
use crate::raft_service::RaftRpc;
use crate::removal::{self, ConfigView, MembershipChange, MembershipTracker, Removal};
use crate::snapshot_policy;
use crate::state::StateView;
use crate::storage::{self, ClusterId, DataDirIdentity, DurableLog, StorageError};
use crate::tls::{Dialer, NodeTls, PeerCertGuard, TlsError};
use crate::types::{NodeId, Raft};
use crate::vote_guard::LeaderContact;
use crate::watch::{run_pump, HistoryLimits, WatchHub};

/// Largest public request or response. Above the state machine's own limits (1 MiB payloads,
/// plans of many tasks) so that an oversized field gets the state machine's clear
/// INVALID_ARGUMENT instead of a transport error; beyond it tonic answers RESOURCE_EXHAUSTED.
pub const PUBLIC_MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;
/// Entries per AppendEntries: openraft times each one out after one heartbeat interval,
/// so batches of large entries must stay small.
const MAX_PAYLOAD_ENTRIES: u64 = 32;
/// Snapshot chunk size (well inside the internal message limit).
const SNAPSHOT_CHUNK_BYTES: u64 = 1024 * 1024;
/// Timeout of one snapshot chunk RPC.
const INSTALL_SNAPSHOT_TIMEOUT_MS: u64 = 10_000;
/// Log entries kept behind a snapshot, so a briefly lagging follower catches up from the log
/// (at most one snapshot interval's worth).
const LOGS_KEPT_AFTER_SNAPSHOT: u64 = 1_000;
/// How long in-flight requests get to finish after shutdown starts.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot listen on {addr} (port {port}): {source}")]
    Bind {
        addr: SocketAddr,
        port: u16,
        source: std::io::Error,
    },
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("raft: {0}")]
    Raft(String),
    #[error(transparent)]
    Metrics(#[from] MetricsError),
    #[error("data dir {data_dir} belongs to cluster {ours}, but peer {peer} at {addr} belongs to cluster {theirs}: the data dir is another cluster's, or --peers names another cluster's nodes")]
    OtherCluster {
        data_dir: PathBuf,
        ours: ClusterId,
        peer: NodeId,
        addr: String,
        theirs: ClusterId,
    },
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("TLS: {0}")]
    TlsSetup(String),
    #[error("server stopped: {0}")]
    Stopped(String),
}

/// Entry point: `Node::start(config)`.
pub struct Node;

impl Node {
    /// Binds `config.listen` and starts the node.
    pub async fn start(config: NodeConfig) -> Result<NodeHandle, NodeError> {
        config.validate()?;
        let listener =
            TcpListener::bind(config.listen)
                .await
                .map_err(|source| NodeError::Bind {
                    addr: config.listen,
                    port: config.listen.port(),
                    source,
                })?;
        let bound = listener.local_addr().map_err(|source| NodeError::Bind {
            addr: config.listen,
            port: config.listen.port(),
            source,
        })?;
        Self::start_with_listener(config.bound_at(bound), listener).await
    }

    /// Starts the node on an already bound listener (tests bind port 0 first, so the port is
    /// theirs before any node starts). `config.listen` is ignored in favour of the listener.
    pub async fn start_with_listener(
        config: NodeConfig,
        listener: TcpListener,
    ) -> Result<NodeHandle, NodeError> {
        config.validate()?;
        let addr = listener.local_addr().map_err(|source| NodeError::Bind {
            addr: config.listen,
            port: config.listen.port(),
            source,
        })?;
        let (log_store, sm_store, identity) = storage::open_node(&config.data_dir, config.node_id)?;
        if log_store.forget_restored_leadership(config.node_id)? {
            tracing::info!("this node led before it stopped: it leads again only if re-elected");
        }
        // The bootstrapping node names the cluster, before it can call anyone; every other
        // node learns the name from the first call it gets (`cluster_identity`).
        if config.is_bootstrapper() {
            identity.establish_cluster_id()?;
        }
        let state = StateView::new(
            sm_store.state(),
            sm_store.applied_revision(),
            sm_store.lock_wakeups(),
        );
        let snapshot_point = sm_store.snapshot_point();
        let applied_entries = sm_store.applied_entries();
        let durable = log_store.durable_log();
        let commit_gate = CommitGate::new(durable.clone());
        // Raft::new takes the store; this handle subscribes to its changes afterwards.
        let change_feed = sm_store.clone();

        let tls = config.tls.as_ref().map(NodeTls::load).transpose()?;
        let dialer = Dialer::new(tls.as_ref());
        let peers = PeerClients::new(
            config.peers.clone(),
            ClusterStamp::new(identity.clone()),
            dialer.clone(),
        );
        let removal = Removal::default();
        let raft = Raft::new(
            config.node_id,
            Arc::new(raft_config(&config)?),
            NetworkFactory {
                peers: peers.clone(),
                commit_gate: commit_gate.clone(),
                removal: removal.clone(),
            },
            log_store,
            sm_store,
        )
        .await
        .map_err(|e| NodeError::Raft(e.to_string()))?;
        // Raft::new has replayed the log after the snapshot. Subscribing only now means the
        // replay's events are dropped as they are made instead of piling up in the channel
        // (a million tasks' worth after a big load, which made a restart allocate twice the
        // state); watchers see history from here on, as after a snapshot install.
        // Subscribe before reading the revision: no change can fall between the two.
        let changes = change_feed.subscribe();
        drop(change_feed);
        let floor = state.read(|sm| sm.revision()) + 1;

        if config.is_bootstrapper()
            && !raft
                .is_initialized()
                .await
                .map_err(|e| NodeError::Raft(e.to_string()))?
        {
            let members: BTreeMap<NodeId, BasicNode> = config
                .peers
                .iter()
                .map(|(id, addr)| (*id, BasicNode::new(addr)))
                .collect();
            tracing::info!(?members, "empty log: initialising the cluster");
            raft.initialize(members)
                .await
                .map_err(|e| NodeError::Raft(format!("initialising the cluster: {e}")))?;
        }

        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let metrics = Metrics::new(applied_entries)?;
        let (batcher, batching) = Batcher::start(raft.clone(), metrics.clone());
        let ctx = Arc::new(NodeContext {
            node_id: config.node_id,
            watch: WatchHub::new(
                HistoryLimits {
                    revisions: config.watch_history,
                    events: config.watch_history_events,
                },
                floor,
                shutdown_rx.clone(),
            ),
            config,
            raft,
            batcher,
            state,
            durable,
            peers,
            liveness: Liveness::default(),
            metrics,
            removal,
            leader_contact: LeaderContact::default(),
        });

        let mut tasks = vec![
            batching,
            tokio::spawn(run_pump(ctx.clone(), changes)),
            tokio::spawn(run_monitor(ctx.clone(), shutdown_rx.clone())),
            tokio::spawn(commit_gate.announce(ctx.raft.clone())),
            tokio::spawn(follow_membership(ctx.clone())),
            tokio::spawn(snapshot_policy::run(
                ctx.raft.clone(),
                ctx.state.clone(),
                snapshot_point,
                ctx.config.snapshot_every,
                shutdown_rx.clone(),
            )),
        ];
        if ctx.config.auth && ctx.config.is_bootstrapper() {
            tasks.push(tokio::spawn(auth::bootstrap::run(ctx.clone())));
        }
        let server_tls = tls.as_ref().map(NodeTls::server_config);
        let builder = match server_tls {
            Some(tls) => tonic::transport::Server::builder()
                .tls_config(tls)
                .map_err(|e| NodeError::TlsSetup(e.to_string()))?,
            None => tonic::transport::Server::builder(),
        };
        let server = tokio::spawn(serve(
            ctx.clone(),
            identity.clone(),
            builder,
            listener,
            shutdown_rx,
        ));
        let peer_check = tokio::spawn(check_peers(
            identity.clone(),
            ctx.config.peers.clone(),
            dialer,
        ));
        tracing::info!(
            node_id = ctx.node_id,
            %addr,
            cluster_id = ?identity.cluster_id(),
            "percyd serving"
        );
        Ok(NodeHandle {
            ctx,
            addr,
            identity,
            shutdown_tx,
            server,
            peer_check: Some(peer_check),
            tasks,
        })
    }
}

/// Stops campaigning and serving once this node learns it was removed, and starts again once
/// it is added back (see `removal`).
async fn follow_membership(ctx: Arc<NodeContext>) {
    let mut metrics = ctx.raft.metrics();
    let mut refusals = ctx.removal.refusals();
    let mut tracker = MembershipTracker::default();
    loop {
        // Only a refusal heard since the last round is news.
        let refused = match refusals.has_changed() {
            Ok(true) => refusals.borrow_and_update().clone(),
            _ => None,
        };
        let (config, members) = {
            let m = metrics.borrow_and_update();
            let stored = &m.membership_config;
            let membership = stored.membership();
            let config = ConfigView {
                index: stored.log_id().map(|id| id.index),
                includes_me: membership.get_node(&ctx.node_id).is_some(),
                has_voters: membership.voter_ids().next().is_some(),
            };
            (config, removal::describe(membership))
        };
        match tracker.observe(config, refused.as_ref()) {
            MembershipChange::Unchanged => {}
            MembershipChange::Dropped => {
                ctx.removal.mark(members);
                ctx.raft.runtime_config().elect(false);
            }
            MembershipChange::Refused(named_by_peer) => {
                ctx.removal.mark(named_by_peer);
                ctx.raft.runtime_config().elect(false);
            }
            MembershipChange::Rejoined => {
                ctx.removal.clear();
                ctx.raft.runtime_config().elect(true);
            }
        }
        tokio::select! {
            changed = metrics.changed() => if changed.is_err() { return },
            changed = refusals.changed() => if changed.is_err() { return },
        }
    }
}

fn raft_config(config: &NodeConfig) -> Result<openraft::Config, NodeError> {
    let raft_config = openraft::Config {
        cluster_name: "percy".into(),
        heartbeat_interval: config.heartbeat.as_millis() as u64,
        election_timeout_min: config.election_timeout_min.as_millis() as u64,
        election_timeout_max: config.election_timeout_max.as_millis() as u64,
        snapshot_policy: SnapshotPolicy::LogsSinceLast(config.snapshot_every),
        max_in_snapshot_log_to_keep: LOGS_KEPT_AFTER_SNAPSHOT.min(config.snapshot_every),
        max_payload_entries: MAX_PAYLOAD_ENTRIES,
        snapshot_max_chunk_size: SNAPSHOT_CHUNK_BYTES,
        install_snapshot_timeout: INSTALL_SNAPSHOT_TIMEOUT_MS,
        ..Default::default()
    };
    raft_config
        .validate()
        .map_err(|e| NodeError::Raft(format!("configuration: {e}")))
}

/// Every service on one port, until `shutdown` fires.
async fn serve(
    ctx: Arc<NodeContext>,
    identity: DataDirIdentity,
    builder: tonic::transport::Server,
    listener: TcpListener,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), tonic::transport::Error> {
    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_service_status("", tonic_health::ServingStatus::Serving)
        .await;
    let routes = routes(&ctx, &identity, health_service);
    // The builder's `tcp_nodelay` is ignored for a caller-supplied listener; set it on the
    // incoming stream instead. Without it, Nagle's algorithm and delayed ACKs hold small
    // responses back for up to 40 ms.
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    builder
        .accept_http1(true) // for GET /metrics
        .add_routes(routes)
        .serve_with_incoming_shutdown(incoming, async move {
            let _ = shutdown.wait_for(|stop| *stop).await;
            // Health watchers on open connections learn that this node is going away while
            // in-flight calls drain.
            health
                .set_service_status("", tonic_health::ServingStatus::NotServing)
                .await;
        })
        .await
}

/// A public service: size limits, and the token check of `--auth` in front (`auth::layer`).
macro_rules! public {
    ($server:ident, $api:expr, $ctx:expr) => {
        Authenticated::new(
            $server::new($api)
                .max_decoding_message_size(PUBLIC_MAX_MESSAGE_BYTES)
                .max_encoding_message_size(PUBLIC_MAX_MESSAGE_BYTES),
            $ctx,
        )
    };
}

fn routes(
    ctx: &Arc<NodeContext>,
    identity: &DataDirIdentity,
    health: tonic_health::pb::health_server::HealthServer<
        impl tonic_health::pb::health_server::Health,
    >,
) -> Routes {
    let c = || ctx.clone();
    let mut builder = Routes::builder();
    builder
        .add_service(public!(
            AgentServiceServer,
            api::agent::AgentApi { ctx: c() },
            c()
        ))
        .add_service(public!(
            TaskServiceServer,
            api::task::TaskApi { ctx: c() },
            c()
        ))
        .add_service(public!(
            PlanServiceServer,
            api::plan::PlanApi { ctx: c() },
            c()
        ))
        .add_service(public!(
            LockServiceServer,
            api::lock::LockApi { ctx: c() },
            c()
        ))
        .add_service(public!(
            ConfigServiceServer,
            api::config::ConfigApi { ctx: c() },
            c()
        ))
        .add_service(public!(
            DefinitionServiceServer,
            api::definition::DefinitionApi { ctx: c() },
            c()
        ))
        .add_service(public!(
            DefinitionRunServiceServer,
            api::definition_run::DefinitionRunApi { ctx: c() },
            c()
        ))
        .add_service(public!(
            MessageServiceServer,
            api::message::MessageApi { ctx: c() },
            c()
        ))
        .add_service(public!(
            WatchServiceServer,
            api::watch::WatchApi { ctx: c() },
            c()
        ))
        .add_service(public!(
            TokenServiceServer,
            api::token::TokenApi { ctx: c() },
            c()
        ))
        .add_service(public!(
            ExecServiceServer,
            api::exec::ExecApi {
                ctx: c(),
                relay: crate::exec_relay::ExecRelay::default(),
            },
            c()
        ))
        .add_service(public!(
            ClusterServiceServer,
            api::cluster::ClusterApi {
                ctx: c(),
                identity: identity.clone(),
            },
            c()
        ))
        .add_service(InterceptedService::new(
            InterceptedService::new(
                RaftServiceServer::new(RaftRpc { ctx: c() })
                    .max_decoding_message_size(INTERNAL_MAX_MESSAGE_BYTES)
                    .max_encoding_message_size(INTERNAL_MAX_MESSAGE_BYTES),
                ClusterGuard::new(identity.clone()),
            ),
            PeerCertGuard {
                required: ctx.config.tls.is_some(),
                metrics: ctx.raft.metrics(),
            },
        ))
        // Peers ask the health service which cluster this node belongs to.
        .add_service(Stamped::new(health, ClusterStamp::new(identity.clone())));
    if let Some(reflection) = crate::reflection::v1() {
        builder.add_service(reflection);
    }
    if let Some(reflection) = crate::reflection::v1alpha() {
        builder.add_service(reflection);
    }
    let mut routes = builder.routes();
    let metrics_ctx = ctx.clone();
    *routes.axum_router_mut() = std::mem::take(routes.axum_router_mut())
        .merge(crate::http::router(ctx.clone(), identity.clone()))
        .route(
            "/metrics",
            axum::routing::get(move || {
                let ctx = metrics_ctx.clone();
                async move {
                    ctx.metrics
                        .tracked_agents
                        .set(ctx.liveness.tracked() as i64);
                    ctx.metrics.render(&ctx.raft)
                }
            }),
        );
    routes
}

/// A running node.
pub struct NodeHandle {
    ctx: Arc<NodeContext>,
    addr: SocketAddr,
    identity: DataDirIdentity,
    shutdown_tx: watch::Sender<bool>,
    server: JoinHandle<Result<(), tonic::transport::Error>>,
    /// Asking the peers which cluster they belong to; `None` once it ended well.
    peer_check: Option<JoinHandle<Result<(), ForeignPeer>>>,
    tasks: Vec<JoinHandle<()>>,
}

impl NodeHandle {
    pub fn node_id(&self) -> NodeId {
        self.ctx.node_id
    }

    /// The address the node actually listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR` (`https://` with TLS), for tonic clients.
    pub fn endpoint(&self) -> String {
        let scheme = if self.ctx.config.tls.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{}", self.addr)
    }

    /// The Raft instance (metrics, membership), for tests and tools.
    pub fn raft(&self) -> &Raft {
        &self.ctx.raft
    }

    /// The cluster this node belongs to, once it knows (see `cluster_identity`).
    pub fn cluster_id(&self) -> Option<ClusterId> {
        self.identity.cluster_id()
    }

    /// The leader as this node knows it.
    pub fn leader(&self) -> Option<NodeId> {
        self.ctx.leader()
    }

    /// Everything the node's handlers share, for the server's own unit tests.
    #[cfg(test)]
    pub(crate) fn context(&self) -> &NodeContext {
        &self.ctx
    }

    /// How far this node's log is durable (see `storage::durable_log`).
    pub fn durable_log(&self) -> &DurableLog {
        &self.ctx.durable
    }

    pub fn is_leader(&self) -> bool {
        self.ctx.raft.metrics().borrow().state == ServerState::Leader
    }

    /// Waits up to `timeout` until some leader is known.
    pub async fn wait_for_leader(&self, timeout: Duration) -> Option<NodeId> {
        self.ctx.wait_for_leader(timeout).await
    }

    /// Graceful stop: stop accepting, let in-flight calls finish (bounded), end watch streams
    /// and background tasks, then shut Raft down (which closes and flushes storage).
    pub async fn shutdown(mut self) {
        tracing::info!(node_id = self.ctx.node_id, "shutting down");
        let _ = self.shutdown_tx.send(true);
        match tokio::time::timeout(DRAIN_TIMEOUT, &mut self.server).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => tracing::warn!(error = %e, "server stopped with an error"),
            Ok(Err(e)) => tracing::warn!(error = %e, "server task failed"),
            Err(_) => {
                // Long waits (queued lock acquires) are cut off; their clients retry.
                tracing::warn!("in-flight requests did not finish in time; closing them");
                self.server.abort();
            }
        }
        if let Err(e) = self.ctx.raft.shutdown().await {
            tracing::warn!(error = %e, "raft shutdown");
        }
        for task in self.tasks {
            task.abort();
        }
        if let Some(peer_check) = self.peer_check {
            peer_check.abort();
        }
    }

    /// Waits until the node cannot go on: the server stopped on its own (it does only on a
    /// fatal transport error), or a peer turned out to belong to another cluster.
    pub async fn serving(&mut self) -> Result<(), NodeError> {
        if let Some(peer_check) = self.peer_check.as_mut() {
            tokio::select! {
                stopped = &mut self.server => return server_stopped(stopped),
                checked = peer_check => {
                    self.peer_check = None;
                    if let Ok(Err(foreign)) = checked {
                        tracing::error!(?foreign, "a peer belongs to another cluster");
                        return Err(NodeError::OtherCluster {
                            data_dir: self.ctx.config.data_dir.clone(),
                            ours: foreign.ours,
                            peer: foreign.peer,
                            addr: foreign.addr,
                            theirs: foreign.theirs,
                        });
                    }
                }
            }
        }
        server_stopped((&mut self.server).await)
    }
}

fn server_stopped(
    stopped: Result<Result<(), tonic::transport::Error>, tokio::task::JoinError>,
) -> Result<(), NodeError> {
    match stopped {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(NodeError::Stopped(e.to_string())),
        Err(e) => Err(NodeError::Stopped(e.to_string())),
    }
}
