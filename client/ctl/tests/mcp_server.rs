//! `percyctl mcp` driven by a real MCP client (rmcp's) over stdio, against an in-process
//! Percy cluster: the binary is spawned exactly as `claude mcp add percy -- percyctl mcp
//! --agent NAME` would spawn it.

// Logging notifications (how the server announces messages) are deprecated only from MCP
// 2026-07-28 on, which the server does not speak.
#![allow(deprecated)]

#[path = "../../tests/support/mod.rs"]
mod support;

use std::io::{BufRead, BufReader, Write};
use std::process::Stdio;
use std::time::Duration;

use percy_client::proto::AgentStatus;
use percy_client::{Client, Consistency, TaskStatus};
use rmcp::model::{
    CallToolRequestParams, CallToolResult, LoggingLevel, LoggingMessageNotificationParam,
    SetLevelRequestParams,
};
use rmcp::service::{NotificationContext, RunningService};
use rmcp::transport::TokioChildProcess;
use rmcp::{ClientHandler, RoleClient, ServiceExt};
use serde_json::{json, Value};
use support::TestCluster;
use tokio::sync::mpsc;

/// percyctl's retry deadline, generous for a loaded CI box.
const CTL_TIMEOUT: &str = "30s";
/// How long a notification or an exit may take on a loaded 2-core machine.
const PATIENCE: Duration = Duration::from_secs(30);
/// How long a notification the client muted is waited for (it must not come).
const MUTED_WINDOW: Duration = Duration::from_secs(5);

const TOOLS: [&str; 12] = [
    "acquire_locks",
    "claim_task",
    "cluster_status",
    "complete_task",
    "fail_task",
    "list_tasks",
    "read_inbox",
    "register_agent",
    "release_locks",
    "send_message",
    "start_task",
    "submit_task",
];

/// The client side: records the logging notifications the server sends.
#[derive(Clone)]
struct Recorder {
    notifications: mpsc::UnboundedSender<LoggingMessageNotificationParam>,
}

impl ClientHandler for Recorder {
    async fn on_logging_message(
        &self,
        params: LoggingMessageNotificationParam,
        _context: NotificationContext<RoleClient>,
    ) {
        let _ = self.notifications.send(params);
    }
}

struct Session {
    service: RunningService<RoleClient, Recorder>,
    notifications: mpsc::UnboundedReceiver<LoggingMessageNotificationParam>,
}

fn mcp_command(endpoints: &str, agent: &str, ttl: &str) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_percyctl"));
    command
        .args([
            "--timeout",
            CTL_TIMEOUT,
            "mcp",
            "--agent",
            agent,
            "--ttl",
            ttl,
        ])
        .env("PERCY_ENDPOINTS", endpoints)
        .env_remove("RUST_LOG");
    command
}

async fn start(endpoints: &str, agent: &str) -> Session {
    start_with_ttl(endpoints, agent, "1m").await
}

async fn start_with_ttl(endpoints: &str, agent: &str, ttl: &str) -> Session {
    let (transport, _stderr) = TokioChildProcess::builder(mcp_command(endpoints, agent, ttl))
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn percyctl mcp");
    let (tx, notifications) = mpsc::unbounded_channel();
    let service = Recorder { notifications: tx }
        .serve(transport)
        .await
        .expect("MCP handshake with percyctl mcp");
    Session {
        service,
        notifications,
    }
}

impl Session {
    async fn call(&self, tool: &str, arguments: Value) -> CallToolResult {
        let Value::Object(arguments) = arguments else {
            panic!("arguments must be an object");
        };
        self.service
            .call_tool(CallToolRequestParams::new(tool.to_owned()).with_arguments(arguments))
            .await
            .unwrap_or_else(|e| panic!("{tool}: protocol error {e}"))
    }

    /// Calls a tool that must succeed and returns its JSON result.
    async fn ok(&self, tool: &str, arguments: Value) -> Value {
        let result = self.call(tool, arguments).await;
        assert_ne!(
            result.is_error,
            Some(true),
            "{tool} failed: {}",
            text(&result)
        );
        serde_json::from_str(&text(&result))
            .unwrap_or_else(|e| panic!("{tool} result is not JSON ({e}): {}", text(&result)))
    }

    /// Calls a tool that must fail and returns the error text.
    async fn refused(&self, tool: &str, arguments: Value) -> String {
        let result = self.call(tool, arguments).await;
        assert_eq!(
            result.is_error,
            Some(true),
            "{tool} succeeded: {}",
            text(&result)
        );
        text(&result)
    }

    async fn stop(self) {
        self.service.cancel().await.expect("close the session");
    }
}

fn text(result: &CallToolResult) -> String {
    result
        .content
        .iter()
        .filter_map(|c| c.as_text().map(|t| t.text.clone()))
        .collect::<Vec<_>>()
        .join("\n")
}

async fn client(cluster: &TestCluster) -> Client {
    Client::connect(&cluster.endpoints())
        .await
        .expect("connect")
}

#[tokio::test]
async fn every_tool_is_listed_with_a_schema() {
    let cluster = TestCluster::start(1);
    let session = start(&cluster.endpoints_arg(), "lister").await;
    let tools = session.service.list_all_tools().await.expect("list tools");
    let mut names: Vec<String> = tools.iter().map(|t| t.name.to_string()).collect();
    names.sort();
    assert_eq!(names, TOOLS);
    for tool in &tools {
        assert!(
            tool.description.as_deref().is_some_and(|d| !d.is_empty()),
            "{} has no description",
            tool.name
        );
        assert_eq!(tool.input_schema.get("type"), Some(&json!("object")));
    }
    let acquire = tools
        .iter()
        .find(|t| t.name == "acquire_locks")
        .expect("acquire_locks");
    assert_eq!(
        acquire.input_schema.get("required"),
        Some(&json!(["paths"]))
    );
    session.stop().await;
}

#[tokio::test]
async fn a_task_goes_from_submit_to_complete_with_the_session_keeping_the_tokens() {
    let cluster = TestCluster::start(1);
    let percy = client(&cluster).await;
    let session = start(&cluster.endpoints_arg(), "coder").await;

    let submitted = session
        .ok(
            "submit_task",
            json!({"id": "t1", "title": "fix the parser"}),
        )
        .await;
    assert_eq!(submitted["task"]["status"], "ready");
    let claimed = session.ok("claim_task", json!({})).await;
    assert_eq!(claimed["task"]["id"], "t1");
    assert_eq!(claimed["claimed"], true);
    session.ok("start_task", json!({"task_id": "t1"})).await;

    let locked = session
        .ok(
            "acquire_locks",
            json!({"paths": ["src/parser"], "task_id": "t1"}),
        )
        .await;
    let fence = locked["grants"][0]["fencing_token"]
        .as_u64()
        .expect("fencing token");
    assert!(fence > 0, "{locked}");
    let status = session.ok("cluster_status", json!({})).await;
    assert_eq!(status["session"]["locks"]["src/parser"], fence, "{status}");
    assert_eq!(
        status["session"]["claimed_tasks"],
        json!(["t1"]),
        "{status}"
    );

    // Neither call names a token: the session supplies them.
    let completed = session
        .ok(
            "complete_task",
            json!({"task_id": "t1", "summary": "parser fixed"}),
        )
        .await;
    assert_eq!(completed["task"]["status"], "completed");
    let released = session.ok("release_locks", json!({})).await;
    assert_eq!(released["released"], json!(["src/parser"]));

    let task = percy
        .get_task("t1", Consistency::Linearizable)
        .await
        .expect("get t1")
        .task
        .expect("t1");
    assert_eq!(task.status, TaskStatus::Completed as i32);
    assert_eq!(task.result.expect("result").summary, "parser fixed");
    let locks = percy
        .list_locks("", Consistency::Linearizable)
        .await
        .expect("locks");
    assert!(locks.locks.is_empty(), "{:?}", locks.locks);

    let nothing = session.ok("claim_task", json!({})).await;
    assert_eq!(nothing["claimed"], false);
    assert_eq!(nothing["task"], Value::Null);
    session.stop().await;
}

#[tokio::test]
async fn another_agents_lock_is_refused_until_released() {
    let cluster = TestCluster::start(1);
    let ep = cluster.endpoints_arg();
    let alice = start(&ep, "alice").await;
    let bob = start(&ep, "bob").await;

    alice
        .ok("acquire_locks", json!({"paths": ["src/api"]}))
        .await;
    let refusal = bob
        .refused("acquire_locks", json!({"paths": ["src/api/users.rs"]}))
        .await;
    assert!(
        refusal.starts_with("acquire locks on src/api/users.rs"),
        "{refusal}"
    );
    assert!(refusal.contains("FAILED_PRECONDITION"), "{refusal}");

    alice
        .ok("release_locks", json!({"paths": ["src/api"]}))
        .await;
    let granted = bob
        .ok(
            "acquire_locks",
            json!({"paths": ["src/api/users.rs"], "wait_seconds": 10}),
        )
        .await;
    assert_eq!(granted["grants"][0]["path"], "src/api/users.rs");
    alice.stop().await;
    bob.stop().await;
}

#[tokio::test]
async fn bad_arguments_are_tool_errors_that_say_what_is_wrong() {
    let cluster = TestCluster::start(1);
    let percy = client(&cluster).await;
    let session = start(&cluster.endpoints_arg(), "clumsy").await;

    let wrong_mode = session
        .refused("acquire_locks", json!({"paths": ["a"], "mode": "sideways"}))
        .await;
    assert!(wrong_mode.contains("sideways"), "{wrong_mode}");
    let missing = session
        .refused("acquire_locks", json!({"mode": "shared"}))
        .await;
    assert!(missing.contains("paths"), "{missing}");
    let negative = session
        .refused("acquire_locks", json!({"paths": ["a"], "wait_seconds": -1}))
        .await;
    assert!(negative.contains("wait_seconds"), "{negative}");
    let no_paths = session.refused("acquire_locks", json!({"paths": []})).await;
    assert!(no_paths.contains("INVALID_ARGUMENT"), "{no_paths}");
    let status = session
        .refused("list_tasks", json!({"status": "sleeping"}))
        .await;
    assert!(status.contains("unknown status"), "{status}");
    let unclaimed = session
        .refused("start_task", json!({"task_id": "t9"}))
        .await;
    assert!(unclaimed.contains("no claim on task t9"), "{unclaimed}");
    let stranger = session
        .refused("send_message", json!({"to": "nobody-here", "body": "hi"}))
        .await;
    assert!(stranger.contains("nobody-here"), "{stranger}");

    // Nothing was changed by the refused calls.
    let locks = percy
        .list_locks("", Consistency::Linearizable)
        .await
        .expect("locks");
    assert!(locks.locks.is_empty(), "{:?}", locks.locks);
    session.stop().await;
}

#[tokio::test]
async fn messages_are_announced_as_they_arrive_and_read_once() {
    let cluster = TestCluster::start(1);
    let percy = client(&cluster).await;
    let mut session = start(&cluster.endpoints_arg(), "listener").await;
    let agent = percy
        .get_agent_by_name("listener", Consistency::Linearizable)
        .await
        .expect("the session registered its agent")
        .agent
        .expect("agent");

    percy
        .send_message("operator", agent.id, "rebase on main first")
        .await
        .expect("send");
    let announced = tokio::time::timeout(PATIENCE, session.notifications.recv())
        .await
        .expect("a notification within the patience")
        .expect("notification channel open");
    assert_eq!(announced.logger.as_deref(), Some("percy.inbox"));
    assert_eq!(
        announced.data["message"]["body"], "rebase on main first",
        "{:?}",
        announced.data
    );
    assert_eq!(announced.data["message"]["from"], "operator");

    let inbox = session.ok("read_inbox", json!({})).await;
    let bodies: Vec<&str> = inbox["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .filter_map(|m| m["body"].as_str())
        .collect();
    assert_eq!(bodies, ["rebase on main first"]);
    let again = session.ok("read_inbox", json!({})).await;
    assert_eq!(again["messages"], json!([]));

    // A message sent from the session reaches the other agent by name.
    let sent = session
        .ok(
            "send_message",
            json!({"to": "listener", "body": "note to self"}),
        )
        .await;
    assert_eq!(sent["message"]["to_agent"], agent.id);
    session.stop().await;
}

#[tokio::test]
async fn announcements_respect_the_level_the_client_sets() {
    let cluster = TestCluster::start(1);
    let percy = client(&cluster).await;
    let mut session = start(&cluster.endpoints_arg(), "quiet").await;
    let agent = percy
        .get_agent_by_name("quiet", Consistency::Linearizable)
        .await
        .expect("registered")
        .agent
        .expect("agent");

    let level = |level| SetLevelRequestParams::new(level);
    session
        .service
        .set_level(level(LoggingLevel::Error))
        .await
        .expect("logging/setLevel");
    percy
        .send_message("operator", agent.id, "muted")
        .await
        .expect("send");
    // Time for the announcer to see "muted" (and drop it) before the level goes back down;
    // it takes milliseconds, this allows for a loaded machine.
    let early = tokio::time::timeout(MUTED_WINDOW, session.notifications.recv()).await;
    assert!(early.is_err(), "announced below the level: {early:?}");
    session
        .service
        .set_level(level(LoggingLevel::Notice))
        .await
        .expect("logging/setLevel");
    percy
        .send_message("operator", agent.id, "heard")
        .await
        .expect("send");
    let announced = tokio::time::timeout(PATIENCE, session.notifications.recv())
        .await
        .expect("a notification within the patience")
        .expect("notification channel open");
    assert_eq!(
        announced.data["message"]["body"], "heard",
        "{:?}",
        announced.data
    );
    // The muted message is still in the inbox.
    let inbox = session.ok("read_inbox", json!({})).await;
    assert_eq!(
        inbox["messages"].as_array().map(Vec::len),
        Some(2),
        "{inbox}"
    );
    session.stop().await;
}

#[tokio::test]
async fn heartbeats_keep_the_agent_alive_and_a_lost_agent_is_registered_again() {
    let cluster = TestCluster::start(1);
    let percy = client(&cluster).await;
    // A TTL far shorter than the wait below: only heartbeats keep the agent active.
    let mut session = start_with_ttl(&cluster.endpoints_arg(), "beater", "2s").await;
    let first = percy
        .get_agent_by_name("beater", Consistency::Linearizable)
        .await
        .expect("registered")
        .agent
        .expect("agent");
    tokio::time::sleep(Duration::from_secs(6)).await;
    let alive = percy
        .get_agent(first.id, Consistency::Linearizable)
        .await
        .expect("get agent")
        .agent
        .expect("agent");
    assert_eq!(alive.status, AgentStatus::Active as i32, "{alive:?}");

    // Lost behind the session's back: it registers again and says so.
    percy.deregister_agent(first.id).await.expect("deregister");
    let warning = tokio::time::timeout(PATIENCE, session.notifications.recv())
        .await
        .expect("a warning within the patience")
        .expect("notification channel open");
    assert_eq!(
        warning.logger.as_deref(),
        Some("percy.session"),
        "{warning:?}"
    );
    let status = session.ok("cluster_status", json!({})).await;
    let new_id = status["session"]["agent_id"].as_u64().expect("agent id");
    assert_ne!(new_id, first.id, "{status}");
    let again = percy
        .get_agent(new_id, Consistency::Linearizable)
        .await
        .expect("get agent")
        .agent
        .expect("agent");
    assert_eq!(
        (again.name.as_str(), again.status),
        ("beater", AgentStatus::Active as i32)
    );
    session.stop().await;
}

#[test]
fn the_server_exits_when_stdin_closes_and_deregisters_the_agent_it_created() {
    let cluster = TestCluster::start(1);
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_percyctl"))
        .args(["--timeout", CTL_TIMEOUT, "mcp", "--agent", "brief"])
        .env("PERCY_ENDPOINTS", cluster.endpoints_arg())
        .env_remove("RUST_LOG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn percyctl mcp");
    let mut stdin = child.stdin.take().expect("stdin");
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
    let initialize = json!({
        "jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {
            "protocolVersion": "2025-06-18",
            "capabilities": {},
            "clientInfo": {"name": "test", "version": "0"}
        }
    });
    writeln!(stdin, "{initialize}").expect("write initialize");
    let mut line = String::new();
    stdout
        .read_line(&mut line)
        .expect("read the initialize result");
    let reply: Value = serde_json::from_str(&line).expect("JSON-RPC reply");
    assert_eq!(reply["result"]["protocolVersion"], "2025-06-18", "{reply}");
    assert_eq!(reply["result"]["serverInfo"]["name"], "percy", "{reply}");
    writeln!(
        stdin,
        r#"{{"jsonrpc":"2.0","method":"notifications/initialized"}}"#
    )
    .expect("write initialized");

    drop(stdin);
    let started = std::time::Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if started.elapsed() > PATIENCE {
            let _ = child.kill();
            let _ = child.wait();
            panic!("percyctl mcp still running {PATIENCE:?} after stdin closed");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status:?}");

    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let agent = runtime.block_on(async {
        let percy = Client::connect(&cluster.endpoints())
            .await
            .expect("connect");
        percy
            .list_agents(true, Consistency::Linearizable)
            .await
            .expect("list agents")
            .agents
            .into_iter()
            .find(|a| a.name == "brief")
            .expect("the agent")
    });
    assert_eq!(agent.status, AgentStatus::Deregistered as i32, "{agent:?}");
}
