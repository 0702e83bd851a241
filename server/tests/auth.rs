//! `percyd --auth` on a three-node cluster, called through a follower: every public RPC refuses
//! a missing, unknown or revoked token (UNAUTHENTICATED), a role that may not call it, and an
//! agent token acting for another agent (PERMISSION_DENIED), and the state is unchanged after
//! all of them. Also: the bootstrap admin token file, revocation reaching every node, health
//! and /metrics without a token.

mod common;

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use common::*;
use percy_proto::v1::agent_service_client::AgentServiceClient;
use percy_proto::v1::cluster_service_client::ClusterServiceClient;
use percy_proto::v1::config_service_client::ConfigServiceClient;
use percy_proto::v1::definition_run_service_client::DefinitionRunServiceClient;
use percy_proto::v1::definition_service_client::DefinitionServiceClient;
use percy_proto::v1::exec_service_client::ExecServiceClient;
use percy_proto::v1::lock_service_client::LockServiceClient;
use percy_proto::v1::message_service_client::MessageServiceClient;
use percy_proto::v1::plan_service_client::PlanServiceClient;
use percy_proto::v1::task_service_client::TaskServiceClient;
use percy_proto::v1::token_service_client::TokenServiceClient;
use percy_proto::v1::watch_service_client::WatchServiceClient;
use percy_proto::v1::*;
use percy_server::{admin_token_path, Node, NodeHandle};
use tonic::transport::Channel;
use tonic::{Code, Request, Status};

/// Agent TTL long enough that nobody expires during the test (expiry would change the state).
const LONG_TTL_MS: u64 = 3_600_000;
/// A revocation must be refused by every node within this long (the bound).
const REVOCATION_BOUND: Duration = Duration::from_secs(1);

type CallFuture = Pin<Box<dyn Future<Output = Result<(), Status>> + Send>>;
type Call = Box<dyn Fn(Channel, Option<String>) -> CallFuture>;

fn req<T>(message: T, token: Option<&str>) -> Request<T> {
    let mut request = Request::new(message);
    if let Some(token) = token {
        request.metadata_mut().insert(
            "authorization",
            format!("Bearer {token}").parse().expect("ascii token"),
        );
    }
    request
}

/// `rpc!(Client, method, request expression)`: a [`Call`] that sends the request with the
/// token it is given and reports only whether the call was refused.
macro_rules! rpc {
    ($client:ident, $method:ident, $message:expr) => {{
        let call: Call = Box::new(move |channel: Channel, token: Option<String>| {
            let message = $message;
            Box::pin(async move {
                $client::new(channel)
                    .$method(req(message, token.as_deref()))
                    .await
                    .map(|_| ())
            })
        });
        call
    }};
}

/// Who may call a method, as the test sees the access model.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Read,
    Operate,
    ActAsAgent,
    Message,
    Admin,
}

struct Row {
    method: &'static str,
    kind: Kind,
    /// A valid request (naming the builder agent where one is named).
    call: Call,
    /// The same request naming the other agent, for methods that name one.
    for_other: Option<Call>,
}

struct Tokens {
    admin: String,
    operator: String,
    reader: String,
    builder: String,
    other: String,
    revoked: String,
}

struct Ids {
    builder: u64,
    other: u64,
    claim_token: u64,
    token_to_revoke: u64,
}

async fn start_auth_cluster(slots: &mut [Slot]) -> Vec<NodeHandle> {
    let peers = peers_of(slots);
    let mut nodes = Vec::new();
    for slot in slots.iter_mut() {
        let mut config = config(slot, &peers);
        config.auth = true;
        let listener = slot.listener.take().unwrap();
        nodes.push(Node::start_with_listener(config, listener).await.unwrap());
    }
    nodes
}

async fn create_token(channel: &Channel, admin: &str, role: Role, agent: &str) -> (u64, String) {
    let created = TokenServiceClient::new(channel.clone())
        .create(req(
            CreateTokenRequest {
                header: None,
                role: role.into(),
                agent: agent.into(),
                name: String::new(),
            },
            Some(admin),
        ))
        .await
        .expect("admin creates a token")
        .into_inner();
    (created.token.unwrap().id, created.secret)
}

async fn register(channel: &Channel, token: &str, name: &str) -> u64 {
    AgentServiceClient::new(channel.clone())
        .register(req(
            RegisterAgentRequest {
                name: name.into(),
                ttl_ms: LONG_TTL_MS,
                ..Default::default()
            },
            Some(token),
        ))
        .await
        .expect("an agent registers as itself")
        .into_inner()
        .agent
        .unwrap()
        .id
}

/// Tokens, two agents, a task the builder holds, a lock the other agent holds, a config key.
async fn populate(channel: &Channel, admin: String) -> (Tokens, Ids) {
    let (_, operator) = create_token(channel, &admin, Role::Operator, "").await;
    let (_, reader) = create_token(channel, &admin, Role::Reader, "").await;
    let (_, builder) = create_token(channel, &admin, Role::Agent, "builder").await;
    let (_, other) = create_token(channel, &admin, Role::Agent, "other").await;
    let (revoked_id, revoked) = create_token(channel, &admin, Role::Agent, "builder").await;
    let (token_to_revoke, _) = create_token(channel, &admin, Role::Reader, "").await;
    TokenServiceClient::new(channel.clone())
        .revoke(req(
            RevokeTokenRequest {
                header: None,
                id: revoked_id,
            },
            Some(&admin),
        ))
        .await
        .unwrap();
    let builder_id = register(channel, &builder, "builder").await;
    let other_id = register(channel, &other, "other").await;
    for task in ["t1", "t2"] {
        TaskServiceClient::new(channel.clone())
            .submit(req(
                SubmitTaskRequest {
                    header: None,
                    task: Some(TaskSpec {
                        id: task.into(),
                        title: task.into(),
                        ..Default::default()
                    }),
                },
                Some(&operator),
            ))
            .await
            .expect("an operator submits");
    }
    let claimed = TaskServiceClient::new(channel.clone())
        .claim(req(
            ClaimTaskRequest {
                header: None,
                agent_id: builder_id,
                task_id: "t1".into(),
                expected_revision: None,
                start: false,
            },
            Some(&builder),
        ))
        .await
        .expect("the builder claims t1")
        .into_inner()
        .task
        .unwrap();
    LockServiceClient::new(channel.clone())
        .acquire(req(
            AcquireLocksRequest {
                agent_id: other_id,
                paths: vec!["src/other".into()],
                ..Default::default()
            },
            Some(&other),
        ))
        .await
        .expect("the other agent locks its path");
    ConfigServiceClient::new(channel.clone())
        .put(req(
            PutConfigRequest {
                key: "k".into(),
                value: b"v".to_vec(),
                ..Default::default()
            },
            Some(&admin),
        ))
        .await
        .expect("the admin writes config");
    let tokens = Tokens {
        admin,
        operator,
        reader,
        builder,
        other,
        revoked,
    };
    let ids = Ids {
        builder: builder_id,
        other: other_id,
        claim_token: claimed.claim_token,
        token_to_revoke,
    };
    (tokens, ids)
}

/// One row per public RPC. `every_public_rpc_is_in_the_table` checks the list is complete.
fn table(ids: &Ids) -> Vec<Row> {
    let (builder, other, claim) = (ids.builder, ids.other, ids.claim_token);
    let victim = ids.token_to_revoke;
    let row = |method, kind, call, for_other| Row {
        method,
        kind,
        call,
        for_other,
    };
    use Kind::*;
    vec![
        row(
            "AgentService/Register",
            ActAsAgent,
            rpc!(
                AgentServiceClient,
                register,
                RegisterAgentRequest {
                    name: "builder".into(),
                    ttl_ms: LONG_TTL_MS,
                    ..Default::default()
                }
            ),
            Some(rpc!(
                AgentServiceClient,
                register,
                RegisterAgentRequest {
                    name: "other".into(),
                    ttl_ms: LONG_TTL_MS,
                    ..Default::default()
                }
            )),
        ),
        row(
            "AgentService/Heartbeat",
            ActAsAgent,
            rpc!(
                AgentServiceClient,
                heartbeat,
                HeartbeatRequest {
                    header: None,
                    agent_id: builder,
                    load: None,
                }
            ),
            Some(rpc!(
                AgentServiceClient,
                heartbeat,
                HeartbeatRequest {
                    header: None,
                    agent_id: other,
                    load: None,
                }
            )),
        ),
        row(
            "AgentService/KeepAlive",
            ActAsAgent,
            keep_alive(builder),
            Some(keep_alive(other)),
        ),
        row(
            "AgentService/Deregister",
            ActAsAgent,
            rpc!(
                AgentServiceClient,
                deregister,
                DeregisterAgentRequest {
                    header: None,
                    agent_id: builder,
                }
            ),
            Some(rpc!(
                AgentServiceClient,
                deregister,
                DeregisterAgentRequest {
                    header: None,
                    agent_id: other,
                }
            )),
        ),
        row(
            "AgentService/Get",
            Read,
            rpc!(
                AgentServiceClient,
                get,
                GetAgentRequest {
                    header: None,
                    agent_id: builder,
                    name: String::new()
                }
            ),
            None,
        ),
        row(
            "AgentService/List",
            Read,
            rpc!(AgentServiceClient, list, ListAgentsRequest::default()),
            None,
        ),
        row(
            "TaskService/Submit",
            Operate,
            rpc!(
                TaskServiceClient,
                submit,
                SubmitTaskRequest {
                    header: None,
                    task: Some(TaskSpec {
                        id: "t-new".into(),
                        title: "new".into(),
                        ..Default::default()
                    })
                }
            ),
            None,
        ),
        row(
            "TaskService/Claim",
            ActAsAgent,
            rpc!(
                TaskServiceClient,
                claim,
                ClaimTaskRequest {
                    header: None,
                    agent_id: builder,
                    task_id: "t2".into(),
                    expected_revision: None,
                    start: false,
                }
            ),
            Some(rpc!(
                TaskServiceClient,
                claim,
                ClaimTaskRequest {
                    header: None,
                    agent_id: other,
                    task_id: "t2".into(),
                    expected_revision: None,
                    start: false,
                }
            )),
        ),
        row(
            "TaskService/Start",
            ActAsAgent,
            rpc!(
                TaskServiceClient,
                start,
                StartTaskRequest {
                    header: None,
                    task_id: "t1".into(),
                    agent_id: builder,
                    claim_token: claim
                }
            ),
            // The other agent holding the builder's claim token: not enough any more.
            Some(rpc!(
                TaskServiceClient,
                start,
                StartTaskRequest {
                    header: None,
                    task_id: "t1".into(),
                    agent_id: other,
                    claim_token: claim
                }
            )),
        ),
        row(
            "TaskService/Complete",
            ActAsAgent,
            rpc!(
                TaskServiceClient,
                complete,
                CompleteTaskRequest {
                    header: None,
                    task_id: "t1".into(),
                    agent_id: builder,
                    claim_token: claim,
                    result: None,
                    claim_next: false,
                }
            ),
            None,
        ),
        row(
            "TaskService/Fail",
            ActAsAgent,
            rpc!(
                TaskServiceClient,
                fail,
                FailTaskRequest {
                    header: None,
                    task_id: "t1".into(),
                    agent_id: builder,
                    claim_token: claim,
                    error: "x".into()
                }
            ),
            None,
        ),
        row(
            "TaskService/Cancel",
            Admin,
            rpc!(
                TaskServiceClient,
                cancel,
                CancelTaskRequest {
                    header: None,
                    task_id: "t1".into(),
                    reason: "x".into()
                }
            ),
            None,
        ),
        row(
            "TaskService/Requeue",
            Admin,
            rpc!(
                TaskServiceClient,
                requeue,
                RequeueTaskRequest {
                    header: None,
                    task_id: "t1".into(),
                    reason: "x".into()
                }
            ),
            None,
        ),
        row(
            "TaskService/Get",
            Read,
            rpc!(
                TaskServiceClient,
                get,
                GetTaskRequest {
                    header: None,
                    task_id: "t1".into()
                }
            ),
            None,
        ),
        row(
            "TaskService/List",
            Read,
            rpc!(TaskServiceClient, list, ListTasksRequest::default()),
            None,
        ),
        row(
            "PlanService/Submit",
            Operate,
            rpc!(
                PlanServiceClient,
                submit,
                SubmitPlanRequest {
                    header: None,
                    plan_id: "p".into(),
                    tasks: vec![TaskSpec {
                        id: "p1".into(),
                        title: "p1".into(),
                        ..Default::default()
                    }]
                }
            ),
            None,
        ),
        row(
            "PlanService/Get",
            Read,
            rpc!(
                PlanServiceClient,
                get,
                GetPlanRequest {
                    header: None,
                    plan_id: "p".into()
                }
            ),
            None,
        ),
        row(
            "LockService/Acquire",
            ActAsAgent,
            rpc!(
                LockServiceClient,
                acquire,
                AcquireLocksRequest {
                    agent_id: builder,
                    paths: vec!["src/builder".into()],
                    ..Default::default()
                }
            ),
            Some(rpc!(
                LockServiceClient,
                acquire,
                AcquireLocksRequest {
                    agent_id: other,
                    paths: vec!["src/elsewhere".into()],
                    ..Default::default()
                }
            )),
        ),
        row(
            "LockService/Release",
            ActAsAgent,
            rpc!(
                LockServiceClient,
                release,
                ReleaseLocksRequest {
                    header: None,
                    agent_id: builder,
                    paths: vec![]
                }
            ),
            // Releasing another agent's lock (all of them).
            Some(rpc!(
                LockServiceClient,
                release,
                ReleaseLocksRequest {
                    header: None,
                    agent_id: other,
                    paths: vec![]
                }
            )),
        ),
        row(
            "LockService/List",
            Read,
            rpc!(LockServiceClient, list, ListLocksRequest::default()),
            None,
        ),
        row(
            "ConfigService/Get",
            Read,
            rpc!(
                ConfigServiceClient,
                get,
                GetConfigRequest {
                    header: None,
                    key: "k".into()
                }
            ),
            None,
        ),
        row(
            "ConfigService/Put",
            Admin,
            rpc!(
                ConfigServiceClient,
                put,
                PutConfigRequest {
                    key: "k2".into(),
                    value: b"v".to_vec(),
                    ..Default::default()
                }
            ),
            None,
        ),
        row(
            "ConfigService/Delete",
            Admin,
            rpc!(
                ConfigServiceClient,
                delete,
                DeleteConfigRequest {
                    header: None,
                    key: "k".into(),
                    expected_revision: None
                }
            ),
            None,
        ),
        row(
            "ConfigService/List",
            Read,
            rpc!(ConfigServiceClient, list, ListConfigRequest::default()),
            None,
        ),
        row(
            "DefinitionService/Apply",
            Admin,
            rpc!(
                DefinitionServiceClient,
                apply,
                ApplyDefinitionsRequest {
                    header: None,
                    definitions: vec![DefinitionSpec {
                        name: "d".into(),
                        spec_json: "{}".into(),
                        desired: DesiredState::Running.into()
                    }]
                }
            ),
            None,
        ),
        row(
            "DefinitionService/SetState",
            Admin,
            rpc!(
                DefinitionServiceClient,
                set_state,
                SetDefinitionStateRequest {
                    header: None,
                    name: "d".into(),
                    desired: DesiredState::Stopped.into()
                }
            ),
            None,
        ),
        row(
            "DefinitionService/Get",
            Read,
            rpc!(
                DefinitionServiceClient,
                get,
                GetDefinitionRequest {
                    header: None,
                    name: "d".into()
                }
            ),
            None,
        ),
        row(
            "DefinitionService/List",
            Read,
            rpc!(
                DefinitionServiceClient,
                list,
                ListDefinitionsRequest::default()
            ),
            None,
        ),
        row(
            "DefinitionRunService/Claim",
            ActAsAgent,
            rpc!(
                DefinitionRunServiceClient,
                claim,
                ClaimRunRequest {
                    header: None,
                    name: "d".into(),
                    agent_id: builder
                }
            ),
            Some(rpc!(
                DefinitionRunServiceClient,
                claim,
                ClaimRunRequest {
                    header: None,
                    name: "d".into(),
                    agent_id: other
                }
            )),
        ),
        row(
            "DefinitionRunService/StartIteration",
            ActAsAgent,
            rpc!(
                DefinitionRunServiceClient,
                start_iteration,
                RunTokenRequest {
                    header: None,
                    name: "d".into(),
                    agent_id: builder,
                    run_token: 1
                }
            ),
            Some(rpc!(
                DefinitionRunServiceClient,
                start_iteration,
                RunTokenRequest {
                    header: None,
                    name: "d".into(),
                    agent_id: other,
                    run_token: 1
                }
            )),
        ),
        row(
            "DefinitionRunService/FinishIteration",
            ActAsAgent,
            rpc!(
                DefinitionRunServiceClient,
                finish_iteration,
                FinishIterationRequest {
                    header: None,
                    name: "d".into(),
                    agent_id: builder,
                    run_token: 1,
                    number: 1,
                    report: None
                }
            ),
            Some(rpc!(
                DefinitionRunServiceClient,
                finish_iteration,
                FinishIterationRequest {
                    header: None,
                    name: "d".into(),
                    agent_id: other,
                    run_token: 1,
                    number: 1,
                    report: None
                }
            )),
        ),
        row(
            "DefinitionRunService/Release",
            ActAsAgent,
            rpc!(
                DefinitionRunServiceClient,
                release,
                RunTokenRequest {
                    header: None,
                    name: "d".into(),
                    agent_id: builder,
                    run_token: 1
                }
            ),
            Some(rpc!(
                DefinitionRunServiceClient,
                release,
                RunTokenRequest {
                    header: None,
                    name: "d".into(),
                    agent_id: other,
                    run_token: 1
                }
            )),
        ),
        row(
            "DefinitionRunService/Steer",
            Message,
            rpc!(
                DefinitionRunServiceClient,
                steer,
                SteerRequest {
                    header: None,
                    name: "d".into(),
                    from: "builder".into(),
                    body: "hi".into()
                }
            ),
            Some(rpc!(
                DefinitionRunServiceClient,
                steer,
                SteerRequest {
                    header: None,
                    name: "d".into(),
                    from: "other".into(),
                    body: "hi".into()
                }
            )),
        ),
        row(
            "DefinitionRunService/Get",
            Read,
            rpc!(
                DefinitionRunServiceClient,
                get,
                GetRunRequest {
                    header: None,
                    name: "d".into()
                }
            ),
            None,
        ),
        row(
            "DefinitionRunService/List",
            Read,
            rpc!(DefinitionRunServiceClient, list, ListRunsRequest::default()),
            None,
        ),
        row(
            "MessageService/Send",
            Message,
            rpc!(
                MessageServiceClient,
                send,
                SendMessageRequest {
                    header: None,
                    from: "builder".into(),
                    to_agent: other,
                    body: "hi".into()
                }
            ),
            Some(rpc!(
                MessageServiceClient,
                send,
                SendMessageRequest {
                    header: None,
                    from: "other".into(),
                    to_agent: builder,
                    body: "hi".into()
                }
            )),
        ),
        row(
            "MessageService/History",
            Read,
            rpc!(
                MessageServiceClient,
                history,
                MessageHistoryRequest {
                    header: None,
                    agent_id: builder,
                    after_id: 0
                }
            ),
            Some(rpc!(
                MessageServiceClient,
                history,
                MessageHistoryRequest {
                    header: None,
                    agent_id: other,
                    after_id: 0
                }
            )),
        ),
        row(
            "WatchService/Watch",
            Read,
            rpc!(WatchServiceClient, watch, WatchRequest::default()),
            None,
        ),
        row(
            "ClusterService/Status",
            Read,
            rpc!(
                ClusterServiceClient,
                status,
                ClusterStatusRequest::default()
            ),
            None,
        ),
        row(
            "ClusterService/AddNode",
            Admin,
            rpc!(
                ClusterServiceClient,
                add_node,
                AddNodeRequest {
                    header: None,
                    node_id: 9,
                    addr: "127.0.0.1:1".into()
                }
            ),
            None,
        ),
        row(
            "ClusterService/RemoveNode",
            Admin,
            rpc!(
                ClusterServiceClient,
                remove_node,
                RemoveNodeRequest {
                    header: None,
                    node_id: 3
                }
            ),
            None,
        ),
        row(
            "ClusterService/Snapshot",
            Admin,
            rpc!(ClusterServiceClient, snapshot, SnapshotRequest::default()),
            None,
        ),
        row(
            "TokenService/Create",
            Admin,
            rpc!(
                TokenServiceClient,
                create,
                CreateTokenRequest {
                    header: None,
                    role: Role::Admin.into(),
                    agent: String::new(),
                    name: String::new()
                }
            ),
            None,
        ),
        row(
            "TokenService/List",
            Admin,
            rpc!(TokenServiceClient, list, ListTokensRequest::default()),
            None,
        ),
        row(
            "TokenService/Revoke",
            Admin,
            rpc!(
                TokenServiceClient,
                revoke,
                RevokeTokenRequest {
                    header: None,
                    id: victim
                }
            ),
            None,
        ),
        row(
            "ExecService/Publish",
            ActAsAgent,
            rpc!(
                ExecServiceClient,
                publish,
                futures::stream::iter([ExecChunk {
                    exec_id: "t2".into(),
                    fd: 1,
                    data: b"x".to_vec(),
                    eof: true,
                }])
            ),
            None,
        ),
        row(
            "ExecService/Attach",
            Operate,
            rpc!(
                ExecServiceClient,
                attach,
                AttachExecRequest {
                    header: None,
                    exec_id: "t2".into()
                }
            ),
            None,
        ),
        row(
            "ExecService/Cancel",
            Operate,
            rpc!(
                ExecServiceClient,
                cancel,
                CancelExecRequest {
                    header: None,
                    exec_id: "t2".into(),
                    reason: String::new()
                }
            ),
            None,
        ),
    ]
}

/// A keep-alive stream with one message for `agent_id`: refused at the open (no or a bad
/// token) or at that message (someone else's agent).
fn keep_alive(agent_id: u64) -> Call {
    Box::new(move |channel: Channel, token: Option<String>| {
        Box::pin(async move {
            let outbound = futures::stream::iter([KeepAliveRequest {
                agent_id,
                load: None,
            }]);
            let mut replies = AgentServiceClient::new(channel)
                .keep_alive(req(outbound, token.as_deref()))
                .await?
                .into_inner();
            match replies.message().await? {
                Some(_) => Ok(()),
                None => Err(Status::internal(
                    "keep-alive stream ended without an answer",
                )),
            }
        })
    })
}

/// A token of a role `kind` does not admit (None for methods every role may call).
fn wrong_role(kind: Kind, t: &Tokens) -> Option<&str> {
    match kind {
        Kind::Read => None,
        Kind::Operate => Some(&t.reader),
        Kind::ActAsAgent => Some(&t.operator),
        Kind::Message => Some(&t.reader),
        Kind::Admin => Some(&t.operator),
    }
}

/// The state as the admin reads it, without fields that move on their own (heartbeat
/// times, revisions of reads).
async fn digest(channel: &Channel, admin: &str) -> String {
    let a = Some(admin);
    let agents = AgentServiceClient::new(channel.clone())
        .list(req(
            ListAgentsRequest {
                include_inactive: true,
                ..Default::default()
            },
            a,
        ))
        .await
        .unwrap()
        .into_inner()
        .agents;
    let tasks = TaskServiceClient::new(channel.clone())
        .list(req(ListTasksRequest::default(), a))
        .await
        .unwrap()
        .into_inner()
        .tasks;
    let locks = LockServiceClient::new(channel.clone())
        .list(req(ListLocksRequest::default(), a))
        .await
        .unwrap()
        .into_inner();
    let config = ConfigServiceClient::new(channel.clone())
        .list(req(ListConfigRequest::default(), a))
        .await
        .unwrap()
        .into_inner()
        .entries;
    let definitions = DefinitionServiceClient::new(channel.clone())
        .list(req(ListDefinitionsRequest::default(), a))
        .await
        .unwrap()
        .into_inner()
        .definitions;
    let tokens = TokenServiceClient::new(channel.clone())
        .list(req(ListTokensRequest::default(), a))
        .await
        .unwrap()
        .into_inner()
        .tokens;
    let status = ClusterServiceClient::new(channel.clone())
        .status(req(ClusterStatusRequest::default(), a))
        .await
        .unwrap()
        .into_inner();
    let mut inboxes = Vec::new();
    for agent in &agents {
        let history = MessageServiceClient::new(channel.clone())
            .history(req(
                MessageHistoryRequest {
                    header: None,
                    agent_id: agent.id,
                    after_id: 0,
                },
                a,
            ))
            .await
            .unwrap()
            .into_inner();
        inboxes.push(history.messages.len());
    }
    let agents: Vec<_> = agents.iter().map(|a| (a.id, &a.name, a.status)).collect();
    let tasks: Vec<_> = tasks
        .iter()
        .map(|t| (&t.id, t.status, t.assignee, t.claim_token, t.attempts))
        .collect();
    let config: Vec<_> = config.iter().map(|e| (&e.key, e.revision)).collect();
    let definitions: Vec<_> = definitions.iter().map(|d| &d.name).collect();
    let tokens: Vec<_> = tokens.iter().map(|t| t.id).collect();
    let members: Vec<_> = status.members.iter().map(|m| m.id).collect();
    format!(
        "{agents:?}\n{tasks:?}\n{:?}\n{:?}\n{config:?}\n{definitions:?}\n{tokens:?}\n\
         {members:?}\n{inboxes:?}",
        locks.locks, locks.waiters
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_public_rpc_refuses_callers_without_the_right_credential() {
    let mut slots = slots(&[1, 2, 3]).await;
    let nodes = start_auth_cluster(&mut slots).await;
    let leader_id = agreed_leader(&nodes.iter().collect::<Vec<_>>()).await;
    let follower = nodes.iter().find(|n| n.node_id() != leader_id).unwrap();
    let token_file = admin_token_path(slots[0].dir.path());
    let admin = eventually("the bootstrap admin token", SETTLE, || async {
        std::fs::read_to_string(&token_file).ok()
    })
    .await
    .trim()
    .to_owned();
    let mode = std::fs::metadata(&token_file).unwrap().permissions();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
        0o600
    );
    // Every call goes through a follower: what it refuses is never forwarded.
    let channel = channel(&follower.addr().to_string()).await;
    let admin_works = eventually("the admin token to work", SETTLE, || async {
        let listed = TokenServiceClient::new(channel.clone())
            .list(req(ListTokensRequest::default(), Some(&admin)))
            .await;
        listed.is_ok().then_some(())
    });
    admin_works.await;
    let (tokens, ids) = populate(&channel, admin.clone()).await;
    let rows = table(&ids);
    let before = digest(&channel, &tokens.admin).await;

    let mut failures = Vec::new();
    let mut check = |method: &str, case: &str, result: Result<(), Status>, want: Code| match result
    {
        Err(status) if status.code() == want => {}
        other => failures.push(format!(
            "{method} with {case}: want {want:?}, got {other:?}"
        )),
    };
    for row in &rows {
        let call = |token: Option<&str>| (row.call)(channel.clone(), token.map(str::to_owned));
        check(
            row.method,
            "no token",
            call(None).await,
            Code::Unauthenticated,
        );
        check(
            row.method,
            "a bad token",
            call(Some("percy_0123456789abcdef")).await,
            Code::Unauthenticated,
        );
        check(
            row.method,
            "a revoked token",
            call(Some(&tokens.revoked)).await,
            Code::Unauthenticated,
        );
        if let Some(token) = wrong_role(row.kind, &tokens) {
            check(
                row.method,
                "a wrong role",
                call(Some(token)).await,
                Code::PermissionDenied,
            );
        }
        if let Some(for_other) = &row.for_other {
            let result = for_other(channel.clone(), Some(tokens.builder.clone())).await;
            check(
                row.method,
                "the builder's token acting for another agent",
                result,
                Code::PermissionDenied,
            );
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    let after = digest(&channel, &tokens.admin).await;
    assert_eq!(before, after, "a refused call changed the state");

    // The right credential still works: the builder completes its own task, and the other
    // agent's token cannot.
    let complete = |agent_id, token: &str| {
        let request = CompleteTaskRequest {
            header: None,
            task_id: "t1".into(),
            agent_id,
            claim_token: ids.claim_token,
            result: None,
            claim_next: false,
        };
        let mut client = TaskServiceClient::new(channel.clone());
        let request = req(request, Some(token));
        async move { client.complete(request).await }
    };
    let refused = complete(ids.builder, &tokens.other).await.unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied);
    complete(ids.builder, &tokens.builder)
        .await
        .expect("the builder completes its own task");
    let _ = tokens.reader;
    for node in nodes {
        node.shutdown().await;
    }
}

#[test]
fn every_public_rpc_is_in_the_table() {
    use prost::Message;
    let set =
        prost_types::FileDescriptorSet::decode(percy_proto::PUBLIC_FILE_DESCRIPTOR_SET).unwrap();
    let ids = Ids {
        builder: 1,
        other: 2,
        claim_token: 3,
        token_to_revoke: 4,
    };
    let rows = table(&ids);
    let listed: Vec<&str> = rows.iter().map(|r| r.method).collect();
    let mut all = Vec::new();
    for file in set.file {
        for service in file.service {
            for method in &service.method {
                all.push(format!("{}/{}", service.name(), method.name()));
            }
        }
    }
    for method in &all {
        assert!(
            listed.contains(&method.as_str()),
            "{method} is missing from the table"
        );
    }
    assert_eq!(listed.len(), all.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_token_is_refused_by_every_node_within_a_second_and_health_stays_open() {
    let mut slots = slots(&[1, 2, 3]).await;
    let nodes = start_auth_cluster(&mut slots).await;
    let leader_id = agreed_leader(&nodes.iter().collect::<Vec<_>>()).await;
    let token_file = admin_token_path(slots[0].dir.path());
    let admin = eventually("the bootstrap admin token", SETTLE, || async {
        std::fs::read_to_string(&token_file).ok()
    })
    .await
    .trim()
    .to_owned();
    let leader = nodes.iter().find(|n| n.node_id() == leader_id).unwrap();
    let leader_channel = channel(&leader.addr().to_string()).await;
    eventually("the admin token to work", SETTLE, || async {
        let listed = TokenServiceClient::new(leader_channel.clone())
            .list(req(ListTokensRequest::default(), Some(&admin)))
            .await;
        listed.is_ok().then_some(())
    })
    .await;
    let (id, reader) = create_token(&leader_channel, &admin, Role::Reader, "").await;
    let channels: BTreeMap<u64, Channel> = futures::future::join_all(
        nodes
            .iter()
            .map(|n| async { (n.node_id(), channel(&n.addr().to_string()).await) }),
    )
    .await
    .into_iter()
    .collect();
    let status = |channel: Channel, token: String| async move {
        ClusterServiceClient::new(channel)
            .status(req(ClusterStatusRequest::default(), Some(&token)))
            .await
    };
    for channel in channels.values() {
        status(channel.clone(), reader.clone())
            .await
            .expect("a new token works on every node at once");
    }
    TokenServiceClient::new(leader_channel.clone())
        .revoke(req(RevokeTokenRequest { header: None, id }, Some(&admin)))
        .await
        .unwrap();
    let revoked_at = tokio::time::Instant::now();
    for (node, channel) in &channels {
        loop {
            match status(channel.clone(), reader.clone()).await {
                Err(s) if s.code() == Code::Unauthenticated => break,
                other => assert!(
                    revoked_at.elapsed() < REVOCATION_BOUND,
                    "node {node} still accepts a revoked token: {other:?}"
                ),
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    // Health and metrics need no token.
    let mut health =
        tonic_health::pb::health_client::HealthClient::new(channels[&leader_id].clone());
    health
        .check(tonic_health::pb::HealthCheckRequest::default())
        .await
        .expect("health without a token");
    assert!(metric(&leader.addr().to_string(), "percy_raft_term").await >= 1.0);
    for node in nodes {
        node.shutdown().await;
    }
}

/// One publish stream of `chunks` for exec `id` with `token`.
async fn publish(
    channel: &Channel,
    token: &str,
    id: &str,
    chunks: &[&[u8]],
) -> Result<PublishExecResponse, Status> {
    let mut messages: Vec<ExecChunk> = chunks
        .iter()
        .map(|data| ExecChunk {
            exec_id: id.into(),
            fd: 1,
            data: data.to_vec(),
            eof: false,
        })
        .collect();
    messages.push(ExecChunk {
        exec_id: id.into(),
        fd: 1,
        data: Vec::new(),
        eof: true,
    });
    ExecServiceClient::new(channel.clone())
        .publish(req(futures::stream::iter(messages), Some(token)))
        .await
        .map(|r| r.into_inner())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_executor_holding_an_exec_may_publish_its_output() {
    let mut slots = slots(&[1, 2, 3]).await;
    let nodes = start_auth_cluster(&mut slots).await;
    let leader_id = agreed_leader(&nodes.iter().collect::<Vec<_>>()).await;
    let follower = nodes.iter().find(|n| n.node_id() != leader_id).unwrap();
    let token_file = admin_token_path(slots[0].dir.path());
    let admin = eventually("the bootstrap admin token", SETTLE, || async {
        std::fs::read_to_string(&token_file).ok()
    })
    .await
    .trim()
    .to_owned();
    // Everything through a follower, where a claim may not have been applied yet when its
    // executor starts publishing.
    let channel = channel(&follower.addr().to_string()).await;
    eventually("the admin token to work", SETTLE, || async {
        TokenServiceClient::new(channel.clone())
            .list(req(ListTokensRequest::default(), Some(&admin)))
            .await
            .is_ok()
            .then_some(())
    })
    .await;
    let (_, operator) = create_token(&channel, &admin, Role::Operator, "").await;
    let (_, exec_a) = create_token(&channel, &admin, Role::Agent, "exec-a").await;
    let (_, exec_b) = create_token(&channel, &admin, Role::Agent, "exec-b").await;
    let mut executor_ids = Vec::new();
    for (name, token) in [("exec-a", &exec_a), ("exec-b", &exec_b)] {
        let id = AgentServiceClient::new(channel.clone())
            .register(req(
                RegisterAgentRequest {
                    name: name.into(),
                    capabilities: vec!["percy.exec".into()],
                    ttl_ms: LONG_TTL_MS,
                    ..Default::default()
                },
                Some(token),
            ))
            .await
            .unwrap()
            .into_inner()
            .agent
            .unwrap()
            .id;
        executor_ids.push(id);
    }
    for (id, requires) in [("e1", "percy.exec"), ("e2", "percy.exec"), ("plain", "")] {
        TaskServiceClient::new(channel.clone())
            .submit(req(
                SubmitTaskRequest {
                    header: None,
                    task: Some(TaskSpec {
                        id: id.into(),
                        title: id.into(),
                        requires: [requires]
                            .into_iter()
                            .filter(|r| !r.is_empty())
                            .map(str::to_owned)
                            .collect(),
                        ..Default::default()
                    }),
                },
                Some(&operator),
            ))
            .await
            .unwrap();
    }
    // The caller attaches (on this node) before the executor claims, as `percyctl exec` does.
    let mut attached = ExecServiceClient::new(channel.clone())
        .attach(req(
            AttachExecRequest {
                header: None,
                exec_id: "e1".into(),
            },
            Some(&operator),
        ))
        .await
        .unwrap()
        .into_inner();
    TaskServiceClient::new(channel.clone())
        .claim(req(
            ClaimTaskRequest {
                header: None,
                agent_id: executor_ids[0],
                task_id: "e1".into(),
                expected_revision: None,
                start: false,
            },
            Some(&exec_a),
        ))
        .await
        .unwrap();

    // Another agent: refused, and nothing reaches the caller.
    let refused = publish(&channel, &exec_b, "e1", &[b"forged"])
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    // Not held, not an exec, unknown.
    let refused = publish(&channel, &exec_a, "e2", &[b"x"]).await.unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    let refused = publish(&channel, &exec_a, "plain", &[b"x"])
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    let refused = publish(&channel, &exec_a, "nope", &[b"x"])
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::NotFound, "{refused:?}");

    // The executor holding it: relayed, and the forged chunk never arrived before it.
    let sent = publish(&channel, &exec_a, "e1", &[b"genuine"])
        .await
        .unwrap();
    assert_eq!(sent.relayed, 2, "{sent:?}");
    let first = tokio::time::timeout(SETTLE, attached.message())
        .await
        .expect("the caller gets the output")
        .unwrap()
        .expect("a chunk");
    assert_eq!(first.data, b"genuine");
    for node in nodes {
        node.shutdown().await;
    }
}
