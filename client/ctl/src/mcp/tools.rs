//! The MCP tools: each is one Percy call (or two) on behalf of the session's agent, with the
//! session supplying the agent id, claim tokens and fencing tokens. Results are JSON text in
//! the shapes of `percyctl -o json`; a refusal is a tool error (`isError: true`) whose text
//! says what was refused and why, so the model can correct itself. Arguments that do not fit
//! a tool's schema are tool errors too (rmcp reports the failing field).

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use percy_client::proto::{TaskResult, TaskSpec};
use percy_client::{
    Client, ClientError, Consistency, LockMode, LockRequest, TaskFilter, BROADCAST,
};
use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{
    CallToolResult, ContentBlock, Implementation, ProtocolVersion, ServerCapabilities, ServerConfig,
};
// SetLevelRequestParams is deprecated only from MCP 2026-07-28 on (see `set_level`).
#[allow(deprecated)]
use rmcp::model::SetLevelRequestParams;
use rmcp::service::RequestContext;
use rmcp::{tool, tool_handler, tool_router, ErrorData, RoleServer, ServerHandler};
use serde::Serialize;
use serde_json::json;

use super::announce;
use super::params::{self, Mode};
use super::session::{Registration, Session};
use crate::args;
use crate::views::{AgentView, GrantView, HeaderView, MemberView, MessageView, TaskView};

/// The newest MCP version served: the last with the `initialize` handshake, whose logging
/// notifications announce messages (see `announce`).
pub const SUPPORTED_UP_TO: ProtocolVersion = ProtocolVersion::V_2025_11_25;

/// Recipient names that mean "every agent" in `send_message`.
const EVERYONE: [&str; 3] = ["*", "all", "everyone"];

/// What the server tells the client about itself, shown to the model.
const INSTRUCTIONS: &str = "Percy coordinates coding agents. This session is one Percy agent. \
Typical flow: claim_task, start_task, acquire_locks on the files you will edit, do the work, \
complete_task (or fail_task), release_locks. The session keeps claim and fencing tokens for you. \
Messages for you are announced as notifications (logger percy.inbox); read them with read_inbox.";

type ToolResult = Result<CallToolResult, ErrorData>;

/// The MCP server of one session.
#[derive(Debug, Clone)]
pub struct PercyMcp {
    client: Client,
    session: Arc<Session>,
    tool_router: ToolRouter<Self>,
}

impl PercyMcp {
    pub fn new(client: Client, session: Arc<Session>) -> Self {
        Self {
            client,
            session,
            tool_router: Self::tool_router(),
        }
    }
}

#[tool_router]
impl PercyMcp {
    #[tool(
        description = "Register this session's agent again with new capabilities, labels or concurrency (its name is fixed by the session). Returns the agent."
    )]
    async fn register_agent(&self, Parameters(p): Parameters<params::RegisterAgent>) -> ToolResult {
        let mut registration: Registration = self.session.registration().await;
        if let Some(capabilities) = p.capabilities {
            registration.capabilities = capabilities;
        }
        if let Some(labels) = p.labels {
            registration.labels = labels;
        }
        if let Some(max_concurrent) = p.max_concurrent {
            registration.max_concurrent = max_concurrent;
        }
        match self.session.reregister(Some(registration)).await {
            Ok(_) => {}
            Err(err) => return refused("register agent", &err),
        }
        let id = self.session.agent_id().await;
        match self.client.get_agent(id, Consistency::Linearizable).await {
            Ok(response) => success(&json!({
                "agent": response.agent.as_ref().map(AgentView::from),
            })),
            Err(err) => refused("read the registered agent", &err),
        }
    }

    #[tool(
        description = "Claim a task for this agent: the given task_id, or else the best ready task it can run. The claim token is kept by the session. Returns the task, or task null when nothing is claimable."
    )]
    async fn claim_task(&self, Parameters(p): Parameters<params::ClaimTask>) -> ToolResult {
        let agent = self.session.agent_id().await;
        let response = match &p.task_id {
            Some(id) => self.client.claim_task(agent, id, None).await,
            None => self.client.claim_next(agent).await,
        };
        let response = match response {
            Ok(response) => response,
            Err(err) => return refused(&claim_what(&p.task_id), &err),
        };
        match response.task {
            Some(task) => {
                self.session
                    .remember_claim(&task.id, task.claim_token)
                    .await;
                success(&json!({"claimed": true, "task": TaskView::from(&task)}))
            }
            None => success(&json!({
                "claimed": false,
                "task": null,
                "reason": "no ready task matches this agent's capabilities and labels",
            })),
        }
    }

    #[tool(description = "Mark a task this session claimed as being worked on.")]
    async fn start_task(&self, Parameters(p): Parameters<params::TaskId>) -> ToolResult {
        let Some(token) = self.session.claim_token(&p.task_id).await else {
            return not_claimed(&p.task_id);
        };
        let agent = self.session.agent_id().await;
        match self.client.start_task(&p.task_id, agent, token).await {
            Ok(response) => success(&json!({"task": response.task.as_ref().map(TaskView::from)})),
            Err(err) => refused(&format!("start task {}", p.task_id), &err),
        }
    }

    #[tool(description = "Complete a task this session claimed, with a summary of what was done.")]
    async fn complete_task(&self, Parameters(p): Parameters<params::CompleteTask>) -> ToolResult {
        let Some(token) = self.session.claim_token(&p.task_id).await else {
            return not_claimed(&p.task_id);
        };
        let agent = self.session.agent_id().await;
        let result = TaskResult {
            summary: p.summary,
            branch: p.branch.unwrap_or_default(),
            exit_code: None,
            output_tail: String::new(),
        };
        match self
            .client
            .complete_task(&p.task_id, agent, token, result)
            .await
        {
            Ok(response) => {
                self.session.forget_claim(&p.task_id).await;
                success(&json!({"task": response.task.as_ref().map(TaskView::from)}))
            }
            Err(err) => refused(&format!("complete task {}", p.task_id), &err),
        }
    }

    #[tool(
        description = "Fail the current attempt at a task this session claimed; it is retried while attempts remain."
    )]
    async fn fail_task(&self, Parameters(p): Parameters<params::FailTask>) -> ToolResult {
        let Some(token) = self.session.claim_token(&p.task_id).await else {
            return not_claimed(&p.task_id);
        };
        let agent = self.session.agent_id().await;
        match self
            .client
            .fail_task(&p.task_id, agent, token, &p.error)
            .await
        {
            Ok(response) => {
                self.session.forget_claim(&p.task_id).await;
                success(&json!({"task": response.task.as_ref().map(TaskView::from)}))
            }
            Err(err) => refused(&format!("fail task {}", p.task_id), &err),
        }
    }

    #[tool(
        description = "Submit a new task (for any agent whose capabilities and labels match). Returns the task."
    )]
    async fn submit_task(&self, Parameters(p): Parameters<params::SubmitTask>) -> ToolResult {
        let spec = TaskSpec {
            id: p.id.unwrap_or_default(),
            title: p.title,
            description: p.description.unwrap_or_default(),
            payload: Vec::new(),
            requires: p.requires.unwrap_or_default(),
            selector: p.selector.unwrap_or_default(),
            priority: p.priority.unwrap_or_default(),
            depends_on: p.depends_on.unwrap_or_default(),
            max_attempts: p.max_attempts.unwrap_or_default(),
            timeout_ms: 0,
        };
        match self.client.submit_task(spec).await {
            Ok(response) => success(&json!({"task": response.task.as_ref().map(TaskView::from)})),
            Err(err) => refused("submit task", &err),
        }
    }

    #[tool(description = "List tasks, optionally by status, plan, or only this agent's.")]
    async fn list_tasks(&self, Parameters(p): Parameters<params::ListTasks>) -> ToolResult {
        let status = match p.status.as_deref().map(args::task_status).transpose() {
            Ok(status) => status,
            Err(why) => return tool_error(format!("list tasks: {why}")),
        };
        let assignee = if p.mine.unwrap_or(false) {
            Some(self.session.agent_id().await)
        } else {
            None
        };
        let filter = TaskFilter {
            status,
            plan_id: p.plan_id,
            assignee,
            limit: p.limit.unwrap_or(0),
        };
        match self
            .client
            .list_tasks(&filter, Consistency::Linearizable)
            .await
        {
            Ok(response) => {
                let tasks: Vec<TaskView> = response.tasks.iter().map(TaskView::from).collect();
                success(&json!({"tasks": tasks}))
            }
            Err(err) => refused("list tasks", &err),
        }
    }

    #[tool(
        description = "Lock paths before editing them (all or none). A path conflicts with paths under and above it. Without wait_seconds a conflict fails at once. Returns each path's fencing token; the session keeps them."
    )]
    async fn acquire_locks(&self, Parameters(p): Parameters<params::AcquireLocks>) -> ToolResult {
        let wait = match seconds("wait_seconds", p.wait_seconds) {
            Ok(wait) => wait,
            Err(why) => return tool_error(format!("acquire locks: {why}")),
        };
        let ttl = match seconds("ttl_seconds", p.ttl_seconds) {
            Ok(ttl) => ttl,
            Err(why) => return tool_error(format!("acquire locks: {why}")),
        };
        let request = LockRequest {
            agent_id: self.session.agent_id().await,
            paths: p.paths,
            mode: match p.mode.unwrap_or_default() {
                Mode::Exclusive => LockMode::Exclusive,
                Mode::Shared => LockMode::Shared,
            },
            task_id: p.task_id,
            ttl,
            wait,
        };
        match self.client.acquire_locks(&request).await {
            Ok(response) => {
                for grant in &response.grants {
                    self.session
                        .remember_fence(&grant.path, grant.fencing_token)
                        .await;
                }
                let grants: Vec<GrantView> = response.grants.iter().map(GrantView::from).collect();
                success(&json!({"grants": grants}))
            }
            Err(err) => refused(
                &format!("acquire locks on {}", request.paths.join(", ")),
                &err,
            ),
        }
    }

    #[tool(description = "Release locks this agent holds: the given paths, or all of them.")]
    async fn release_locks(&self, Parameters(p): Parameters<params::ReleaseLocks>) -> ToolResult {
        let paths = p.paths.unwrap_or_default();
        let agent = self.session.agent_id().await;
        match self.client.release_locks(agent, &paths).await {
            Ok(response) => {
                self.session.forget_fences(&paths).await;
                success(&json!({"released": response.released}))
            }
            Err(err) => refused("release locks", &err),
        }
    }

    #[tool(
        description = "Send a message to another agent (by name or id) or to every agent (\"*\")."
    )]
    async fn send_message(&self, Parameters(p): Parameters<params::SendMessage>) -> ToolResult {
        let to = match self.recipient(&p.to).await {
            Ok(to) => to,
            Err(err) => return refused(&format!("find agent {}", p.to), &err),
        };
        let from = self.session.name().await;
        match self.client.send_message(&from, to, &p.body).await {
            Ok(response) => success(&json!({
                "message": response.message.as_ref().map(MessageView::from),
            })),
            Err(err) => refused(&format!("send a message to {}", p.to), &err),
        }
    }

    #[tool(
        description = "Read the messages for this agent (and to everyone) that arrived since the last read_inbox; all=true shows the whole mailbox."
    )]
    async fn read_inbox(&self, Parameters(p): Parameters<params::ReadInbox>) -> ToolResult {
        let (direct_after, broadcast_after) = if p.all.unwrap_or(false) {
            (0, 0)
        } else {
            self.session.read_positions().await
        };
        let agent = self.session.agent_id().await;
        let direct = self
            .client
            .message_history(agent, direct_after, Consistency::Linearizable)
            .await;
        let broadcast = self
            .client
            .message_history(BROADCAST, broadcast_after, Consistency::Linearizable)
            .await;
        let (direct, broadcast) = match (direct, broadcast) {
            (Ok(direct), Ok(broadcast)) => (direct, broadcast),
            (Err(err), _) | (_, Err(err)) => return refused("read the inbox", &err),
        };
        let last = |messages: &[percy_client::proto::Message], after: u64| {
            messages.iter().map(|m| m.id).max().unwrap_or(after)
        };
        self.session
            .mark_read(
                last(&direct.messages, direct_after),
                last(&broadcast.messages, broadcast_after),
            )
            .await;
        let mut messages: Vec<MessageView> = direct
            .messages
            .iter()
            .chain(broadcast.messages.iter())
            .map(MessageView::from)
            .collect();
        messages.sort_by_key(|m| m.id);
        success(&json!({
            "messages": messages,
            "dropped": direct.dropped + broadcast.dropped,
        }))
    }

    #[tool(
        description = "Cluster health (leader, term, indexes, members) and what this session holds (agent id, claimed tasks, locked paths with fencing tokens)."
    )]
    async fn cluster_status(&self) -> ToolResult {
        let status = match self.client.cluster_status(Consistency::Linearizable).await {
            Ok(status) => status,
            Err(err) => return refused("cluster status", &err),
        };
        let (claims, fences) = self.session.held().await;
        let members: Vec<MemberView> = status.members.iter().map(MemberView::from).collect();
        success(&json!({
            "header": HeaderView::from(status.header),
            "node_id": status.node_id,
            "leader_id": status.leader_id,
            "term": status.term,
            "state": status.state,
            "commit_index": status.commit_index,
            "applied_index": status.applied_index,
            "members": members,
            "session": {
                "agent": self.session.name().await,
                "agent_id": self.session.agent_id().await,
                "claimed_tasks": claims.keys().collect::<Vec<_>>(),
                "locks": fences,
            },
        }))
    }
}

impl PercyMcp {
    /// `send_message`'s recipient: every agent, an id, or a name.
    async fn recipient(&self, to: &str) -> Result<u64, ClientError> {
        let to = to.trim();
        if EVERYONE.contains(&to) {
            return Ok(BROADCAST);
        }
        if let Ok(id) = to.parse::<u64>() {
            return Ok(id);
        }
        let response = self
            .client
            .get_agent_by_name(to, Consistency::Linearizable)
            .await?;
        // Never 0: that would turn a message for a missing agent into a broadcast.
        response
            .agent
            .map(|a| a.id)
            .filter(|id| *id != BROADCAST)
            .ok_or_else(|| tonic::Status::not_found(format!("no agent named {to}")).into())
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for PercyMcp {
    // Logging is deprecated only from MCP 2026-07-28 on, which this server does not speak yet;
    // its notifications are how messages are announced (see `announce`).
    #[allow(deprecated)]
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(
            ServerCapabilities::builder()
                .enable_tools()
                .enable_logging()
                .build(),
        )
        .with_server_info(Implementation::new("percy", env!("CARGO_PKG_VERSION")))
        .with_instructions(INSTRUCTIONS)
    }

    fn supported_protocol_versions(&self) -> Cow<'static, [ProtocolVersion]> {
        Cow::Borrowed(ProtocolVersion::known_up_to(&SUPPORTED_UP_TO))
    }

    // `logging/setLevel`: announcements below the level are no longer sent. (Deprecated only
    // from MCP 2026-07-28 on, which this server does not speak.)
    #[allow(deprecated)]
    async fn set_level(
        &self,
        request: SetLevelRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        self.session.set_log_level(announce::rank(request.level));
        Ok(())
    }
}

fn claim_what(task_id: &Option<String>) -> String {
    match task_id {
        Some(id) => format!("claim task {id}"),
        None => "claim the next task".to_owned(),
    }
}

/// A duration argument in seconds: finite and not negative.
fn seconds(name: &str, value: Option<f64>) -> Result<Option<Duration>, String> {
    value
        .map(|s| {
            Duration::try_from_secs_f64(s)
                .map_err(|_| format!("{name} must be a non-negative number of seconds, not {s}"))
        })
        .transpose()
}

fn success(value: &impl Serialize) -> ToolResult {
    let text = serde_json::to_string_pretty(value)
        .map_err(|e| ErrorData::internal_error(format!("encode the result: {e}"), None))?;
    Ok(CallToolResult::success(vec![ContentBlock::text(text)]))
}

fn tool_error(text: String) -> ToolResult {
    Ok(CallToolResult::error(vec![ContentBlock::text(text)]))
}

/// A refusal (or an unreachable cluster) as a tool error: what was attempted, then why.
fn refused(what: &str, err: &ClientError) -> ToolResult {
    tool_error(format!("{what}: {err}"))
}

fn not_claimed(task_id: &str) -> ToolResult {
    tool_error(format!(
        "this session holds no claim on task {task_id}: claim it first with claim_task"
    ))
}
