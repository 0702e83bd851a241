//! `percy.v1.ClusterService`: status of this node, and membership changes at run time
//! (learner first, then voter; removal). Membership changes run on the leader; a follower
//! relays the public call to the leader's public endpoint (same port) and says so.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use std::pin::Pin;

use futures::Stream;
use openraft::error::{ClientWriteError, RaftError};
use openraft::{BasicNode, ChangeMembers, ServerState};
use percy_proto::auth::AUTHORIZATION;
use percy_proto::backup;
use percy_proto::v1::cluster_service_client::ClusterServiceClient;
use percy_proto::v1::cluster_service_server::ClusterService;
use percy_proto::v1::*;
use percy_statemachine::{StateMachine, TaskFilter};
use tonic::metadata::{Ascii, MetadataValue};
use tonic::{Request, Response, Status};

use super::{observe, required_id};
use crate::context::NodeContext;
use crate::storage::DataDirIdentity;
use crate::types::{NodeId, TypeConfig};

type ClientWriteResponse = openraft::raft::ClientWriteResponse<TypeConfig>;

pub struct ClusterApi {
    pub ctx: Arc<NodeContext>,
    /// Whose cluster id a backup names.
    pub identity: DataDirIdentity,
}

/// Bytes per streamed chunk of a backup file, well inside the public message limit.
const SNAPSHOT_CHUNK_BYTES: usize = 1024 * 1024;

type SnapshotStream = Pin<Box<dyn Stream<Item = Result<SnapshotChunk, Status>> + Send>>;

fn counts(sm: &StateMachine) -> SnapshotCounts {
    let n = |len: usize| len as u64;
    SnapshotCounts {
        agents: n(sm.agents().len()),
        tasks: n(sm.tasks(&TaskFilter::default()).len()),
        locks: n(sm.locks().len()),
        lock_waiters: n(sm.lock_waiters().len()),
        config_keys: n(sm.config_range("").len()),
        definitions: n(sm.definitions().len()),
        tokens: n(sm.tokens().len()),
    }
}

/// The backup file of this node's state after a linearizable read barrier: it holds every
/// write acknowledged before the call. The image is encoded under the state's read lock (as
/// a Raft snapshot is), so it is one revision's state; writes queue meanwhile and go on after.
async fn backup_file(
    ctx: &NodeContext,
    identity: &DataDirIdentity,
) -> Result<(Vec<u8>, Option<ResponseHeader>), Status> {
    let fence = crate::read::linearizable(ctx).await?;
    let cluster_id = identity.cluster_id().ok_or_else(|| {
        Status::unavailable("this node has not learned its cluster id yet; retry")
    })?;
    let (image, revision, counts) = ctx
        .state
        .read(|sm| (sm.snapshot(), sm.revision(), counts(sm)));
    let created_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let header = SnapshotFileHeader {
        cluster_id: cluster_id.to_string(),
        revision,
        node_id: ctx.node_id,
        created_ms,
        counts: Some(counts),
    };
    Ok((
        backup::encode(&header, &image),
        ctx.header(revision, fence.forwarded),
    ))
}

/// How long a new node may take to catch up as a learner before the add is abandoned.
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the node being added may take to answer who it is.
const IDENTITY_TIMEOUT: Duration = Duration::from_secs(5);
/// How often the leader logs a catching-up learner's progress.
const CATCH_UP_REPORT_EVERY: Duration = Duration::from_secs(2);
/// How long the membership change itself may take to commit.
const MEMBERSHIP_TIMEOUT: Duration = Duration::from_secs(15);
/// How long to wait for a leader before UNAVAILABLE.
const LEADER_WAIT: Duration = Duration::from_secs(5);

fn members(ctx: &NodeContext) -> Vec<Member> {
    let metrics = ctx.raft.metrics();
    let m = metrics.borrow();
    let membership = m.membership_config.membership();
    let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
    membership
        .nodes()
        .map(|(id, node)| Member {
            id: *id,
            addr: node.addr.clone(),
            voter: voters.contains(id),
        })
        .collect()
}

fn membership_error(e: RaftError<NodeId, ClientWriteError<NodeId, BasicNode>>) -> Status {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(_)) => {
            Status::unavailable("leadership moved during the membership change; retry")
        }
        RaftError::APIError(ClientWriteError::ChangeMembershipError(e)) => {
            Status::failed_precondition(e.to_string())
        }
        RaftError::Fatal(e) => Status::unavailable(e.to_string()),
    }
}

async fn with_timeout(
    what: &str,
    timeout: Duration,
    fut: impl std::future::Future<
        Output = Result<
            ClientWriteResponse,
            RaftError<NodeId, ClientWriteError<NodeId, BasicNode>>,
        >,
    >,
) -> Result<ClientWriteResponse, Status> {
    tokio::time::timeout(timeout, fut)
        .await
        .map_err(|_| {
            Status::deadline_exceeded(format!("{what} did not finish within {timeout:?}"))
        })?
        .map_err(membership_error)
}

/// `Some(client)` when another node leads and the call must be relayed there.
async fn leader_client(
    ctx: &NodeContext,
) -> Result<Option<ClusterServiceClient<tonic::transport::Channel>>, Status> {
    let leader = ctx
        .wait_for_leader(LEADER_WAIT)
        .await
        .ok_or_else(|| Status::unavailable("no leader; retry"))?;
    if leader == ctx.node_id {
        return Ok(None);
    }
    let addr = ctx
        .addr_of(leader)
        .ok_or_else(|| Status::unavailable(format!("leader {leader} has no address")))?;
    let channel = ctx
        .peers
        .dialer
        .endpoint(&addr)
        .map_err(Status::internal)?
        .connect()
        .await
        .map_err(|e| Status::unavailable(format!("leader {leader} at {addr}: {e}")))?;
    Ok(Some(ClusterServiceClient::new(channel)))
}

/// The leader to relay a membership call to, or `None` when this node leads.
///
/// A relayed call carries the caller's own token, which the leader checks again (with
/// `--auth`). A caller who authenticated by its admin client certificate has no token to pass
/// on, and the leader would see this node's certificate instead, which is not an admin's; so
/// such a call is not relayed: this node answers UNAVAILABLE, with the leader in the routing
/// metadata every answer carries, and the client library's next attempt goes to the leader.
async fn leader_to_relay_to(
    ctx: &NodeContext,
    credential: Option<&MetadataValue<Ascii>>,
) -> Result<Option<ClusterServiceClient<tonic::transport::Channel>>, Status> {
    let leader = leader_client(ctx).await?;
    if leader.is_some() && ctx.config.auth && credential.is_none() {
        return Err(Status::unavailable(format!(
            "node {} is not the leader ({}), and a caller authenticated by client certificate \
             cannot be relayed to it: send membership changes to the leader",
            ctx.node_id,
            ctx.leader()
                .map_or_else(|| "unknown".to_owned(), |id| format!("node {id}")),
        )));
    }
    Ok(leader)
}

/// A membership call relayed to the leader's public service, with the caller's own token.
fn relay<T>(message: T, credential: Option<MetadataValue<Ascii>>) -> Request<T> {
    let mut request = Request::new(message);
    if let Some(credential) = credential {
        request.metadata_mut().insert(AUTHORIZATION, credential);
    }
    request
}

fn mark_forwarded(mut response: MembershipResponse) -> MembershipResponse {
    if let Some(h) = response.header.as_mut() {
        h.forwarded = true;
    }
    response
}

async fn add_node(
    ctx: &NodeContext,
    id: NodeId,
    addr: String,
) -> Result<MembershipResponse, Status> {
    let current = members(ctx);
    if let Some(m) = current.iter().find(|m| m.id == id) {
        if m.addr != addr {
            return Err(Status::already_exists(format!(
                "node {id} is already a member at {}",
                m.addr
            )));
        }
    }
    if !current.iter().any(|m| m.id == id && m.voter) {
        confirm_identity(ctx, id, &addr).await?;
        tracing::info!(id, %addr, "adding node as learner");
        let added = with_timeout(
            "adding the learner",
            MEMBERSHIP_TIMEOUT,
            ctx.raft.add_learner(id, BasicNode::new(&addr), false),
        )
        .await?;
        if let Err(why) = catch_up(ctx, id, added.log_id.index).await {
            // Leave the membership as it was: a learner that never caught up is taken out.
            let _ = with_timeout(
                "removing the learner again",
                MEMBERSHIP_TIMEOUT,
                ctx.raft
                    .change_membership(ChangeMembers::RemoveNodes(BTreeSet::from([id])), false),
            )
            .await;
            return Err(why);
        }
        tracing::info!(id, "promoting node to voter");
        with_timeout(
            "the membership change",
            MEMBERSHIP_TIMEOUT,
            ctx.raft
                .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), false),
        )
        .await?;
    }
    let revision = ctx.state.read(|sm| sm.revision());
    Ok(MembershipResponse {
        header: ctx.header(revision, false),
        members: members(ctx),
    })
}

/// Asks the node at `addr` who it is, so that a typo in the address (nothing listening, or
/// another node) is refused before the membership changes.
async fn confirm_identity(ctx: &NodeContext, id: NodeId, addr: &str) -> Result<(), Status> {
    let refuse = |why: String| {
        Status::failed_precondition(format!(
            "node {id} at {addr} {why}; start it first (percyd --node-id {id} --listen {addr} …) \
             — the membership is unchanged"
        ))
    };
    let endpoint = ctx
        .peers
        .dialer
        .endpoint(addr)
        .map_err(Status::invalid_argument)?
        .connect_timeout(IDENTITY_TIMEOUT)
        .timeout(IDENTITY_TIMEOUT);
    let channel = endpoint
        .connect()
        .await
        .map_err(|e| refuse(format!("does not answer ({e})")))?;
    // A node removed earlier refuses the call, but still says who it is: every answer,
    // refusals included, names the node that gave it (`percy_proto::routing`).
    let answered_as = match ClusterServiceClient::new(channel)
        .status(ClusterStatusRequest::default())
        .await
    {
        Ok(status) => status.into_inner().node_id,
        Err(refusal) => refusal
            .metadata()
            .get(percy_proto::routing::NODE_ID)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<NodeId>().ok())
            .ok_or_else(|| refuse(format!("does not answer ({})", refusal.message())))?,
    };
    if answered_as != id {
        return Err(refuse(format!("answers as node {answered_as}")));
    }
    Ok(())
}

/// Waits until the learner `id` holds the log up to `target` (the entry that added it),
/// logging its progress, for at most [`CATCH_UP_TIMEOUT`].
///
/// openraft's own "blocking" add counts a learner as caught up while it lags by less than
/// `replication_lag_threshold` (5,000 entries) — including one that never answered at all,
/// so a small cluster promoted an unreachable node at once and lost its quorum.
async fn catch_up(ctx: &NodeContext, id: NodeId, target: u64) -> Result<(), Status> {
    let deadline = tokio::time::Instant::now() + CATCH_UP_TIMEOUT;
    let mut metrics = ctx.raft.metrics();
    let mut last_report = tokio::time::Instant::now();
    loop {
        let matched = {
            let m = metrics.borrow_and_update();
            if m.state != ServerState::Leader {
                return Err(Status::unavailable(
                    "leadership moved while the new node caught up; retry",
                ));
            }
            m.replication
                .as_ref()
                .and_then(|r| r.get(&id).cloned().flatten())
                .map(|log_id| log_id.index)
        };
        if matched.is_some_and(|index| index >= target) {
            return Ok(());
        }
        let now = tokio::time::Instant::now();
        if now >= deadline {
            return Err(Status::deadline_exceeded(format!(
                "node {id} did not catch up within {CATCH_UP_TIMEOUT:?} (it holds the log up to \
                 {}, needs {target}); it was not added",
                matched.map_or("nothing".to_string(), |i| i.to_string())
            )));
        }
        if now.duration_since(last_report) >= CATCH_UP_REPORT_EVERY {
            tracing::info!(id, ?matched, target, "new node catching up");
            last_report = now;
        }
        let _ = tokio::time::timeout_at(deadline, metrics.changed()).await;
    }
}

async fn remove_node(ctx: &NodeContext, id: NodeId) -> Result<MembershipResponse, Status> {
    let current = members(ctx);
    let Some(member) = current.iter().find(|m| m.id == id) else {
        return Err(Status::not_found(format!("node {id} is not a member")));
    };
    let change = if member.voter {
        if current.iter().filter(|m| m.voter).count() == 1 {
            return Err(Status::failed_precondition(format!(
                "node {id} is the last voter; a cluster cannot remove its last voter"
            )));
        }
        ChangeMembers::RemoveVoters(BTreeSet::from([id]))
    } else {
        ChangeMembers::RemoveNodes(BTreeSet::from([id]))
    };
    tracing::info!(id, "removing node");
    with_timeout(
        "the membership change",
        MEMBERSHIP_TIMEOUT,
        ctx.raft.change_membership(change, false),
    )
    .await?;
    let revision = ctx.state.read(|sm| sm.revision());
    Ok(MembershipResponse {
        header: ctx.header(revision, false),
        members: members(ctx),
    })
}

#[tonic::async_trait]
impl ClusterService for ClusterApi {
    type SnapshotStream = SnapshotStream;

    async fn snapshot(
        &self,
        _request: Request<SnapshotRequest>,
    ) -> Result<Response<SnapshotStream>, Status> {
        let ctx = &self.ctx;
        observe(ctx, "ClusterService/Snapshot", async {
            let (file, header) = backup_file(ctx, &self.identity).await?;
            let chunks: Vec<Result<SnapshotChunk, Status>> = file
                .chunks(SNAPSHOT_CHUNK_BYTES)
                .enumerate()
                .map(|(i, data)| {
                    Ok(SnapshotChunk {
                        header: if i == 0 { header } else { None },
                        data: data.to_vec(),
                    })
                })
                .collect();
            Ok(Box::pin(futures::stream::iter(chunks)) as SnapshotStream)
        })
        .await
    }

    async fn status(
        &self,
        _request: Request<ClusterStatusRequest>,
    ) -> Result<Response<ClusterStatusResponse>, Status> {
        let ctx = &self.ctx;
        observe(ctx, "ClusterService/Status", async {
            let m = ctx.raft.metrics().borrow().clone();
            let applied = m.last_applied.map(|l| l.index).unwrap_or(0);
            let state = match m.state {
                ServerState::Leader => "Leader",
                ServerState::Follower => "Follower",
                ServerState::Candidate => "Candidate",
                ServerState::Learner => "Learner",
                ServerState::Shutdown => "Shutdown",
            };
            let revision = ctx.state.read(|sm| sm.revision());
            Ok(ClusterStatusResponse {
                header: ctx.header(revision, false),
                node_id: ctx.node_id,
                leader_id: m.current_leader.unwrap_or(0),
                term: m.current_term,
                last_log_index: m.last_log_index.unwrap_or(0),
                commit_index: crate::metrics::commit_index(&m),
                applied_index: applied,
                members: members(ctx),
                state: state.to_string(),
            })
        })
        .await
    }

    async fn add_node(
        &self,
        request: Request<AddNodeRequest>,
    ) -> Result<Response<MembershipResponse>, Status> {
        let ctx = &self.ctx;
        observe(ctx, "ClusterService/AddNode", async {
            let credential = request.metadata().get(AUTHORIZATION).cloned();
            let r = request.into_inner();
            let id = required_id(r.node_id, "node_id")?;
            if r.addr.is_empty() || !r.addr.contains(':') {
                return Err(Status::invalid_argument("addr must be HOST:PORT"));
            }
            match leader_to_relay_to(ctx, credential.as_ref()).await? {
                Some(mut leader) => {
                    let relayed = relay(r, credential);
                    Ok(mark_forwarded(leader.add_node(relayed).await?.into_inner()))
                }
                None => add_node(ctx, id, r.addr).await,
            }
        })
        .await
    }

    async fn remove_node(
        &self,
        request: Request<RemoveNodeRequest>,
    ) -> Result<Response<MembershipResponse>, Status> {
        let ctx = &self.ctx;
        observe(ctx, "ClusterService/RemoveNode", async {
            let credential = request.metadata().get(AUTHORIZATION).cloned();
            let r = request.into_inner();
            let id = required_id(r.node_id, "node_id")?;
            match leader_to_relay_to(ctx, credential.as_ref()).await? {
                Some(mut leader) => {
                    let relayed = relay(r, credential);
                    Ok(mark_forwarded(
                        leader.remove_node(relayed).await?.into_inner(),
                    ))
                }
                None => remove_node(ctx, id).await,
            }
        })
        .await
    }
}
