//! The HTTP/JSON API and health endpoints, driven with curl (a real HTTP client) against real
//! nodes on the gRPC port: probes, a submit → claim → start → complete flow, errors as JSON with
//! matching statuses, tokens required with --auth, the OpenAPI document, and the GitHub webhook
//! (signed deliveries → tasks, idempotent, unsigned refused).

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{config, eventually, peers_of, slots, Slot, SETTLE};
use hmac::{Hmac, Mac};
use percy_server::config::{
    parse_label_capabilities, GithubWebhook, DEFAULT_GITHUB_LABEL_CAPABILITIES,
};
use percy_server::{admin_token_path, Node, NodeConfig, NodeHandle};
use serde_json::{json, Value};
use sha2::Sha256;

const SECRET: &str = "webhook secret for the test";

/// One answer: HTTP status and body as JSON (`Value::Null` when the body is not JSON).
#[derive(Debug)]
struct Answer {
    status: u16,
    body: Value,
}

/// `curl` with `args` against `http://addr` + `path`; the status comes from `-w`.
async fn curl(addr: &str, method: &str, path: &str, args: &[&str]) -> Answer {
    let url = format!("http://{addr}{path}");
    let output = tokio::process::Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "30",
            "-X",
            method,
            "-w",
            "\n%{http_code}",
        ])
        .args(args)
        .arg(&url)
        .output()
        .await
        .expect("curl runs (install it: apt-get install curl)");
    assert!(
        output.status.success(),
        "curl {method} {url} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8(output.stdout).expect("utf-8 answer");
    let (body, status) = text.rsplit_once('\n').expect("status line");
    Answer {
        status: status.trim().parse().expect("numeric status"),
        body: serde_json::from_str(body).unwrap_or(Value::Null),
    }
}

async fn get(addr: &str, path: &str) -> Answer {
    curl(addr, "GET", path, &[]).await
}

async fn post(addr: &str, path: &str, body: &Value) -> Answer {
    let body = body.to_string();
    curl(
        addr,
        "POST",
        path,
        &[
            "-H",
            "content-type: application/json",
            "--data-binary",
            &body,
        ],
    )
    .await
}

/// Asserts an error answer: `status`, and the JSON `code` naming the gRPC code.
fn assert_error(answer: &Answer, status: u16, code: &str) {
    assert_eq!(answer.status, status, "{answer:?}");
    assert_eq!(answer.body["code"], code, "{answer:?}");
    assert!(
        answer.body["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{answer:?}"
    );
}

fn webhook_settings() -> GithubWebhook {
    GithubWebhook {
        secret: SECRET.as_bytes().to_vec(),
        trigger_label: "percy".into(),
        label_capabilities: parse_label_capabilities(DEFAULT_GITHUB_LABEL_CAPABILITIES)
            .expect("default mapping"),
    }
}

async fn start_single(slot: &mut Slot, adjust: impl FnOnce(&mut NodeConfig)) -> NodeHandle {
    let peers: BTreeMap<u64, String> = peers_of(std::slice::from_ref(slot));
    let mut config = config(slot, &peers);
    adjust(&mut config);
    let listener = slot.listener.take().expect("fresh slot");
    Node::start_with_listener(config, listener)
        .await
        .expect("node starts")
}

async fn wait_ready(addr: &str) {
    eventually("/readyz to answer 200", SETTLE, || async {
        (get(addr, "/readyz").await.status == 200).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_then_submit_claim_start_complete_with_json_errors() {
    let mut s = slots(&[1]).await;
    let node = start_single(&mut s[0], |_| {}).await;
    let addr = s[0].addr.clone();

    let live = get(&addr, "/livez").await;
    assert_eq!(live.status, 200, "{live:?}");
    assert_eq!(live.body["status"], "ok");
    wait_ready(&addr).await;
    let ready = get(&addr, "/readyz").await;
    assert_eq!(ready.body["leader_id"], 1, "{ready:?}");

    let status = get(&addr, "/v1/cluster/status").await;
    assert_eq!(status.status, 200, "{status:?}");
    assert_eq!(status.body["state"], "Leader");
    assert_eq!(status.body["members"][0]["id"], 1);

    // Register an agent that can do backend work, submit a task for it.
    let registered = post(
        &addr,
        "/v1/agents",
        &json!({"name": "builder", "capabilities": ["backend"], "max_concurrent": 2, "ttl_ms": 3_600_000}),
    )
    .await;
    assert_eq!(registered.status, 200, "{registered:?}");
    assert_eq!(registered.body["created"], true);
    let agent_id = registered.body["agent"]["id"].as_u64().expect("agent id");
    let agents = get(&addr, "/v1/agents").await;
    assert_eq!(agents.body["agents"][0]["name"], "builder", "{agents:?}");
    // Agents page like gRPC's listing: a full page names the next one.
    post(
        &addr,
        "/v1/agents",
        &json!({"name": "tester", "ttl_ms": 3_600_000}),
    )
    .await;
    let first = get(&addr, "/v1/agents?limit=1").await;
    assert_eq!(first.body["agents"][0]["name"], "builder", "{first:?}");
    let token = first.body["next_page_token"].as_str().expect("token");
    assert!(!token.is_empty(), "{first:?}");
    let second = get(&addr, &format!("/v1/agents?limit=1&page_token={token}")).await;
    assert_eq!(second.body["agents"][0]["name"], "tester", "{second:?}");

    let submitted = post(
        &addr,
        "/v1/tasks",
        &json!({"id": "t1", "title": "Add the endpoint", "description": "details", "requires": ["backend"]}),
    )
    .await;
    assert_eq!(submitted.status, 201, "{submitted:?}");
    assert_eq!(submitted.body["task"]["status"], "ready");
    // The same id again: the state machine's refusal, as JSON with the matching status.
    let again = post(&addr, "/v1/tasks", &json!({"id": "t1", "title": "again"})).await;
    assert_error(&again, 409, "ALREADY_EXISTS");

    let claimed = post(&addr, "/v1/tasks/claim", &json!({"agent_id": agent_id})).await;
    assert_eq!(claimed.status, 200, "{claimed:?}");
    assert_eq!(claimed.body["task"]["id"], "t1");
    assert_eq!(claimed.body["task"]["status"], "claimed");
    let claim_token = claimed.body["task"]["claim_token"].as_u64().expect("token");
    // Nothing else to claim: a null task, not an error.
    let none = post(&addr, "/v1/tasks/claim", &json!({"agent_id": agent_id})).await;
    assert_eq!(none.status, 200, "{none:?}");
    assert_eq!(none.body["task"], Value::Null);

    // A wrong claim token is refused, and the task stays claimed.
    let wrong = post(
        &addr,
        "/v1/tasks/t1/start",
        &json!({"agent_id": agent_id, "claim_token": claim_token + 1}),
    )
    .await;
    assert!(wrong.status >= 400 && wrong.status < 500, "{wrong:?}");
    assert!(wrong.body["code"].is_string(), "{wrong:?}");
    assert_eq!(
        get(&addr, "/v1/tasks/t1").await.body["task"]["status"],
        "claimed"
    );

    let started = post(
        &addr,
        "/v1/tasks/t1/start",
        &json!({"agent_id": agent_id, "claim_token": claim_token}),
    )
    .await;
    assert_eq!(started.status, 200, "{started:?}");
    assert_eq!(started.body["task"]["status"], "working");
    let completed = post(
        &addr,
        "/v1/tasks/t1/complete",
        &json!({"agent_id": agent_id, "claim_token": claim_token, "summary": "done", "branch": "percy/t1"}),
    )
    .await;
    assert_eq!(completed.status, 200, "{completed:?}");
    let task = get(&addr, "/v1/tasks/t1").await;
    assert_eq!(task.body["task"]["status"], "completed", "{task:?}");
    assert_eq!(task.body["task"]["result"]["summary"], "done");

    // Listing with filters and pages.
    post(&addr, "/v1/tasks", &json!({"id": "t2", "title": "second"})).await;
    post(&addr, "/v1/tasks", &json!({"id": "t3", "title": "third"})).await;
    let done = get(&addr, "/v1/tasks?status=completed").await;
    let ids: Vec<&str> = done.body["tasks"]
        .as_array()
        .expect("tasks")
        .iter()
        .filter_map(|t| t["id"].as_str())
        .collect();
    assert_eq!(ids, ["t1"], "{done:?}");
    let page = get(&addr, "/v1/tasks?status=ready&limit=1").await;
    assert_eq!(
        page.body["tasks"].as_array().map(Vec::len),
        Some(1),
        "{page:?}"
    );
    let token = page.body["next_page_token"]
        .as_str()
        .expect("token")
        .to_owned();
    assert!(!token.is_empty(), "{page:?}");
    let next = get(
        &addr,
        &format!("/v1/tasks?status=ready&limit=1&page_token={token}"),
    )
    .await;
    assert_eq!(next.status, 200, "{next:?}");
    assert_ne!(next.body["tasks"][0]["id"], page.body["tasks"][0]["id"]);

    // Errors: JSON bodies, statuses matching the gRPC codes, state unchanged.
    assert_error(&get(&addr, "/v1/tasks/nope").await, 404, "NOT_FOUND");
    assert_error(
        &get(&addr, "/v1/tasks?status=bogus").await,
        400,
        "INVALID_ARGUMENT",
    );
    assert_error(
        &get(&addr, "/v1/tasks?limit=20000").await,
        400,
        "INVALID_ARGUMENT",
    );
    assert_error(
        &post(&addr, "/v1/tasks", &json!({"title": 5})).await,
        400,
        "INVALID_ARGUMENT",
    );
    let not_json = curl(
        &addr,
        "POST",
        "/v1/tasks",
        &[
            "-H",
            "content-type: application/json",
            "--data-binary",
            "{not json",
        ],
    )
    .await;
    assert_error(&not_json, 400, "INVALID_ARGUMENT");
    // The state machine's validation, as over gRPC: an id with a control character.
    let bad_id = post(&addr, "/v1/tasks", &json!({"id": "t\u{1}4", "title": "x"})).await;
    assert_error(&bad_id, 400, "INVALID_ARGUMENT");
    assert_eq!(
        get(&addr, "/v1/tasks").await.body["tasks"]
            .as_array()
            .map(Vec::len),
        Some(3)
    );
    assert_error(&get(&addr, "/v1/nothing-here").await, 404, "NOT_FOUND");
    let failed = post(
        &addr,
        "/v1/tasks/t1/fail",
        &json!({"agent_id": agent_id, "claim_token": claim_token, "error": "late"}),
    )
    .await;
    assert!(
        failed.status >= 400,
        "a completed task cannot fail: {failed:?}"
    );
    assert_eq!(
        get(&addr, "/v1/tasks/t1").await.body["task"]["status"],
        "completed"
    );

    // The OpenAPI document parses and lists the endpoints.
    let doc = get(&addr, "/v1/openapi.json").await;
    assert_eq!(doc.status, 200);
    let paths = doc.body["paths"].as_object().expect("paths");
    for path in [
        "/livez",
        "/readyz",
        "/v1/cluster/status",
        "/v1/agents",
        "/v1/tasks",
        "/v1/tasks/{id}",
        "/v1/tasks/claim",
        "/v1/tasks/{id}/claim",
        "/v1/tasks/{id}/start",
        "/v1/tasks/{id}/complete",
        "/v1/tasks/{id}/fail",
        "/v1/webhooks/github",
        "/v1/plans",
        "/v1/plans/{id}",
        "/v1/locks",
        "/v1/locks/acquire",
        "/v1/locks/release",
        "/v1/config",
        "/v1/config/{key}",
        "/v1/messages",
    ] {
        assert!(
            paths.contains_key(path),
            "{path} missing from {:?}",
            paths.keys()
        );
    }

    // gRPC still answers on the same port.
    let mut client =
        percy_proto::v1::task_service_client::TaskServiceClient::new(common::channel(&addr).await);
    let t1 = client
        .get(percy_proto::v1::GetTaskRequest {
            header: None,
            task_id: "t1".into(),
        })
        .await
        .expect("gRPC Get");
    assert_eq!(
        t1.into_inner().task.map(|t| t.title).as_deref(),
        Some("Add the endpoint")
    );
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_is_503_with_a_reason_without_a_leader() {
    // One node of a three-node cluster whose peers never start: no quorum, no leader.
    let mut s = slots(&[1, 2, 3]).await;
    let peers = peers_of(&s);
    let mut config = config(&s[0], &peers);
    config.election_timeout_min = Duration::from_millis(600);
    let listener = s[0].listener.take().expect("fresh slot");
    let node = Node::start_with_listener(config, listener)
        .await
        .expect("starts");
    let addr = s[0].addr.clone();
    assert_eq!(get(&addr, "/livez").await.status, 200);
    let ready = get(&addr, "/readyz").await;
    assert_eq!(ready.status, 503, "{ready:?}");
    assert_eq!(ready.body["status"], "unavailable");
    assert!(
        ready.body["reason"]
            .as_str()
            .is_some_and(|r| r.contains("leader")),
        "{ready:?}"
    );
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_auth_a_call_needs_a_token_of_the_rpcs_role() {
    let mut s = slots(&[1]).await;
    let node = start_single(&mut s[0], |c| c.auth = true).await;
    let addr = s[0].addr.clone();
    wait_ready(&addr).await; // probes stay open
    let token_path = admin_token_path(s[0].dir.path());
    let admin = eventually("the admin token file", SETTLE, || async {
        std::fs::read_to_string(&token_path)
            .ok()
            .map(|t| t.trim().to_owned())
            .filter(|t| !t.is_empty())
    })
    .await;

    let body = json!({"id": "t1", "title": "guarded"}).to_string();
    let json_body = [
        "-H",
        "content-type: application/json",
        "--data-binary",
        &body,
    ];
    let refused = curl(&addr, "POST", "/v1/tasks", &json_body).await;
    assert_error(&refused, 401, "UNAUTHENTICATED");
    let bad = curl(
        &addr,
        "POST",
        "/v1/tasks",
        &[&json_body[..], &["-H", "authorization: Bearer not-a-token"]].concat(),
    )
    .await;
    assert_error(&bad, 401, "UNAUTHENTICATED");
    assert_error(&get(&addr, "/v1/tasks/t1").await, 401, "UNAUTHENTICATED");

    let auth = format!("authorization: Bearer {admin}");
    let ok = curl(
        &addr,
        "POST",
        "/v1/tasks",
        &[&json_body[..], &["-H", &auth]].concat(),
    )
    .await;
    assert_eq!(ok.status, 201, "{ok:?}");
    let read = curl(&addr, "GET", "/v1/tasks/t1", &["-H", &auth]).await;
    assert_eq!(read.body["task"]["title"], "guarded", "{read:?}");

    // A reader token may read but not submit: the role of the RPC behind the endpoint.
    let mut tokens = percy_proto::v1::token_service_client::TokenServiceClient::new(
        common::channel(&addr).await,
    );
    let mut request = tonic::Request::new(percy_proto::v1::CreateTokenRequest {
        name: "watcher".into(),
        role: percy_proto::v1::Role::Reader.into(),
        ..Default::default()
    });
    request
        .metadata_mut()
        .insert("authorization", auth[15..].parse().expect("ascii"));
    let reader = tokens
        .create(request)
        .await
        .expect("token")
        .into_inner()
        .secret;
    let reader_auth = format!("authorization: Bearer {reader}");
    let read = curl(&addr, "GET", "/v1/tasks/t1", &["-H", &reader_auth]).await;
    assert_eq!(read.status, 200, "{read:?}");
    let denied = curl(
        &addr,
        "POST",
        "/v1/tasks",
        &[&json_body[..], &["-H", &reader_auth]].concat(),
    )
    .await;
    assert_error(&denied, 403, "PERMISSION_DENIED");
    node.shutdown().await;
}

fn signature(body: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).expect("any key");
    mac.update(body.as_bytes());
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// A webhook delivery: `event`, `body`, signed with `sig` (none when `None`).
async fn deliver(addr: &str, event: &str, delivery: &str, body: &str, sig: Option<&str>) -> Answer {
    let event = format!("x-github-event: {event}");
    let delivery = format!("x-github-delivery: {delivery}");
    let mut args = vec![
        "-H",
        "content-type: application/json",
        "-H",
        &event,
        "-H",
        &delivery,
        "--data-binary",
        body,
    ];
    let header;
    if let Some(sig) = sig {
        header = format!("x-hub-signature-256: {sig}");
        args.extend(["-H", header.as_str()]);
    }
    curl(addr, "POST", "/v1/webhooks/github", &args).await
}

fn issue_event(action: &str, number: u64, labels: &[&str]) -> String {
    let labels: Vec<Value> = labels.iter().map(|l| json!({"name": l})).collect();
    json!({
        "action": action,
        "issue": {
            "number": number,
            "title": format!("Issue {number}"),
            "body": "Steps to reproduce: ...",
            "labels": labels,
            "html_url": format!("https://github.com/acme/app/issues/{number}"),
        },
        "label": {"name": "percy"},
        "repository": {"name": "app", "owner": {"login": "acme"}},
    })
    .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn github_webhook_turns_signed_labelled_issues_into_tasks_once() {
    let mut s = slots(&[1]).await;
    let node = start_single(&mut s[0], |c| c.github = Some(webhook_settings())).await;
    let addr = s[0].addr.clone();
    wait_ready(&addr).await;

    let ping = r#"{"zen":"Keep it logically awesome.","hook_id":1}"#;
    assert_error(
        &deliver(&addr, "ping", "d0", ping, None).await,
        401,
        "UNAUTHENTICATED",
    );
    let pong = deliver(&addr, "ping", "d0", ping, Some(&signature(ping))).await;
    assert_eq!(pong.status, 200, "{pong:?}");

    // Unsigned, or signed with another secret: refused, nothing created.
    let opened = issue_event("opened", 7, &["percy", "backend", "bug"]);
    assert_error(
        &deliver(&addr, "issues", "d1", &opened, None).await,
        401,
        "UNAUTHENTICATED",
    );
    let mut forged = signature(&opened);
    let last = forged.pop();
    forged.push(if last == Some('0') { '1' } else { '0' });
    assert_error(
        &deliver(&addr, "issues", "d1", &opened, Some(&forged)).await,
        401,
        "UNAUTHENTICATED",
    );
    let other = signature(&issue_event("opened", 8, &["percy"]));
    assert_error(
        &deliver(&addr, "issues", "d1", &opened, Some(&other)).await,
        401,
        "UNAUTHENTICATED",
    );
    assert_error(
        &get(&addr, "/v1/tasks/gh-acme-app-7").await,
        404,
        "NOT_FOUND",
    );

    let created = deliver(&addr, "issues", "d1", &opened, Some(&signature(&opened))).await;
    assert_eq!(created.status, 202, "{created:?}");
    assert_eq!(created.body["task_id"], "gh-acme-app-7");
    let task = get(&addr, "/v1/tasks/gh-acme-app-7").await;
    assert_eq!(task.body["task"]["title"], "Issue 7", "{task:?}");
    assert!(task.body["task"]["description"]
        .as_str()
        .is_some_and(|d| d.starts_with("Steps to reproduce")));
    assert_eq!(task.body["task"]["requires"], json!(["backend"]));
    let revision = task.body["task"]["revision"].clone();

    // Redelivery, and a later label event on the same issue: 200, nothing new.
    let again = deliver(&addr, "issues", "d1", &opened, Some(&signature(&opened))).await;
    assert_eq!(again.status, 200, "{again:?}");
    assert_eq!(again.body["status"], "exists");
    let labeled = issue_event("labeled", 7, &["percy", "backend", "frontend"]);
    let relabel = deliver(&addr, "issues", "d2", &labeled, Some(&signature(&labeled))).await;
    assert_eq!(relabel.status, 200, "{relabel:?}");
    let task = get(&addr, "/v1/tasks/gh-acme-app-7").await;
    assert_eq!(
        task.body["task"]["revision"], revision,
        "unchanged: {task:?}"
    );

    // Without the trigger label, or another action: ignored.
    let unlabelled = issue_event("opened", 9, &["backend"]);
    let ignored = deliver(
        &addr,
        "issues",
        "d3",
        &unlabelled,
        Some(&signature(&unlabelled)),
    )
    .await;
    assert_eq!(ignored.status, 200, "{ignored:?}");
    assert_eq!(ignored.body["status"], "ignored");
    let closed = issue_event("closed", 10, &["percy"]);
    let ignored = deliver(&addr, "issues", "d4", &closed, Some(&signature(&closed))).await;
    assert_eq!(ignored.body["status"], "ignored", "{ignored:?}");
    let all = get(&addr, "/v1/tasks").await;
    assert_eq!(
        all.body["tasks"].as_array().map(Vec::len),
        Some(1),
        "{all:?}"
    );
    node.shutdown().await;
}

async fn put(addr: &str, path: &str, body: &Value) -> Answer {
    let body = body.to_string();
    curl(
        addr,
        "PUT",
        path,
        &[
            "-H",
            "content-type: application/json",
            "--data-binary",
            &body,
        ],
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plans_locks_config_and_messages_over_json() {
    let mut s = slots(&[1]).await;
    let node = start_single(&mut s[0], |_| {}).await;
    let addr = s[0].addr.clone();
    wait_ready(&addr).await;

    // Plans: a DAG submitted whole; a cycle refused whole.
    let plan = post(
        &addr,
        "/v1/plans",
        &json!({"plan_id": "p1", "tasks": [
            {"id": "build", "title": "build"},
            {"id": "test", "title": "test", "depends_on": ["build"]}]}),
    )
    .await;
    assert_eq!(plan.status, 201, "{plan:?}");
    let got = get(&addr, "/v1/plans/p1").await;
    let statuses: Vec<(&str, &str)> = got.body["tasks"]
        .as_array()
        .expect("tasks")
        .iter()
        .map(|t| {
            (
                t["id"].as_str().unwrap_or(""),
                t["status"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert!(statuses.contains(&("test", "blocked")), "{got:?}");
    assert!(statuses.contains(&("build", "ready")), "{got:?}");
    let cycle = post(
        &addr,
        "/v1/plans",
        &json!({"plan_id": "p2", "tasks": [
            {"id": "x", "title": "x", "depends_on": ["y"]},
            {"id": "y", "title": "y", "depends_on": ["x"]}]}),
    )
    .await;
    assert!(cycle.status >= 400 && cycle.status < 500, "{cycle:?}");
    assert!(cycle.body["code"].is_string(), "{cycle:?}");
    assert_eq!(get(&addr, "/v1/plans/p2").await.status, 404);

    // Locks: a grant with a fencing token, another agent refused, release.
    let a = post(
        &addr,
        "/v1/agents",
        &json!({"name": "a", "ttl_ms": 3_600_000}),
    )
    .await;
    let b = post(
        &addr,
        "/v1/agents",
        &json!({"name": "b", "ttl_ms": 3_600_000}),
    )
    .await;
    let (a, b) = (
        a.body["agent"]["id"].as_u64().expect("a"),
        b.body["agent"]["id"].as_u64().expect("b"),
    );
    let granted = post(
        &addr,
        "/v1/locks/acquire",
        &json!({"agent_id": a, "paths": ["src/x"]}),
    )
    .await;
    assert_eq!(granted.status, 200, "{granted:?}");
    assert!(
        granted.body["grants"][0]["fencing_token"].as_u64() > Some(0),
        "{granted:?}"
    );
    assert_eq!(granted.body["grants"][0]["mode"], "exclusive");
    let refused = post(
        &addr,
        "/v1/locks/acquire",
        &json!({"agent_id": b, "paths": ["src/x"]}),
    )
    .await;
    assert!(refused.status >= 400, "{refused:?}");
    assert!(refused.body["code"].is_string(), "{refused:?}");
    let bad_mode = post(
        &addr,
        "/v1/locks/acquire",
        &json!({"agent_id": b, "paths": ["src/y"], "mode": "sideways"}),
    )
    .await;
    assert_error(&bad_mode, 400, "INVALID_ARGUMENT");
    let locks = get(&addr, "/v1/locks?prefix=src/").await;
    assert_eq!(
        locks.body["locks"][0]["holders"][0]["agent_id"], a,
        "{locks:?}"
    );
    let released = post(&addr, "/v1/locks/release", &json!({"agent_id": a})).await;
    assert_eq!(released.body["released"], json!(["src/x"]), "{released:?}");
    assert_eq!(get(&addr, "/v1/locks").await.body["locks"], json!([]));

    // Config.
    let stored = put(&addr, "/v1/config/team.lead", &json!({"value": "alice"})).await;
    assert_eq!(stored.status, 200, "{stored:?}");
    let entry = get(&addr, "/v1/config/team.lead").await;
    assert_eq!(entry.body["entry"]["value"], "alice", "{entry:?}");
    assert_eq!(entry.body["entry"]["value_hex"], hex::encode("alice"));
    let stale = put(
        &addr,
        "/v1/config/team.lead",
        &json!({"value": "bob", "expected_revision": 1}),
    )
    .await;
    assert!(stale.status >= 400, "{stale:?}");
    assert_eq!(
        get(&addr, "/v1/config/team.lead").await.body["entry"]["value"],
        "alice"
    );
    assert_eq!(
        get(&addr, "/v1/config/absent").await.body["entry"],
        Value::Null
    );
    let listed = get(&addr, "/v1/config?prefix=team.").await;
    assert_eq!(listed.body["entries"][0]["key"], "team.lead", "{listed:?}");

    // Messages.
    let sent = post(
        &addr,
        "/v1/messages",
        &json!({"from": "operator", "to_agent": a, "body": "please rebase"}),
    )
    .await;
    assert_eq!(sent.status, 200, "{sent:?}");
    let inbox = get(&addr, &format!("/v1/messages?agent_id={a}")).await;
    assert_eq!(
        inbox.body["messages"][0]["body"], "please rebase",
        "{inbox:?}"
    );
    assert_eq!(inbox.body["messages"][0]["from"], "operator");
    node.shutdown().await;
}
