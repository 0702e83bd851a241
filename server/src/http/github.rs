//! `POST /v1/webhooks/github`: GitHub issues become tasks. A delivery is trusted only with a
//! valid `X-Hub-Signature-256` (the webhook's secret, `--github-webhook-secret-file`); then
//! `ping` answers 200 and an `issues` event (`opened` or `labeled`) whose issue carries the
//! trigger label submits the task `gh-<owner>-<repo>-<number>`. That id makes deliveries
//! idempotent: a redelivery, or the next label event on the same issue, finds the task there
//! and creates nothing (answered 200, so GitHub does not mark the delivery failed).

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use percy_proto::v1 as pb;
use percy_proto::v1::task_service_server::TaskService;
use percy_statemachine::limits::{MAX_DESCRIPTION_LEN, MAX_NAME_LEN};
use percy_statemachine::Role;
use serde::{Deserialize, Serialize};
use tonic::{Code, Request, Status};
use utoipa::ToSchema;

use super::error::{ApiError, ErrorBody};
use super::signature::verify;
use crate::api::task::TaskApi;
use crate::auth::layer::run_as_caller;
use crate::auth::Caller;
use crate::config::GithubWebhook;
use crate::context::NodeContext;

/// The name tasks submitted by the webhook carry as their submitter (with `--auth`).
const WEBHOOK_CALLER: &str = "github-webhook";

/// What the webhook did with a delivery.
#[derive(Debug, Serialize, ToSchema)]
pub struct Delivery {
    /// `pong`, `created`, `exists` or `ignored`.
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub task_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl Delivery {
    fn new(status: &str, task_id: Option<String>, reason: Option<String>) -> Self {
        Self {
            status: status.to_owned(),
            task_id,
            reason,
        }
    }
}

/// The parts of an `issues` event the webhook reads.
#[derive(Debug, Deserialize)]
struct IssuesEvent {
    action: String,
    issue: Issue,
    repository: Repository,
}

#[derive(Debug, Deserialize)]
struct Issue {
    number: u64,
    title: String,
    #[serde(default)]
    body: Option<String>,
    #[serde(default)]
    labels: Vec<Label>,
    #[serde(default)]
    html_url: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Label {
    name: String,
}

#[derive(Debug, Deserialize)]
struct Repository {
    name: String,
    owner: Owner,
}

#[derive(Debug, Deserialize)]
struct Owner {
    login: String,
}

#[utoipa::path(post, path = "/v1/webhooks/github", tag = "github",
    description = "A GitHub webhook delivery (JSON content type), signed with the secret of --github-webhook-secret-file.",
    request_body(content = String, content_type = "application/json"),
    params(
        ("X-Hub-Signature-256" = String, Header, description = "sha256=<HMAC-SHA256 of the body>"),
        ("X-GitHub-Event" = String, Header, description = "ping or issues"),
        ("X-GitHub-Delivery" = Option<String>, Header, description = "the delivery's id"),
    ),
    responses((status = 200, body = Delivery), (status = 202, body = Delivery),
        (status = 401, body = ErrorBody), (status = "4XX", body = ErrorBody)))]
pub async fn webhook(
    State(ctx): State<Arc<NodeContext>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, Json<Delivery>), ApiError> {
    let Some(settings) = ctx.config.github.clone() else {
        return Err(ApiError(Status::failed_precondition(
            "this node has no GitHub webhook: start percyd with --github-webhook-secret-file",
        )));
    };
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    // Nothing in an unsigned body is looked at, not even its event name.
    verify(&settings.secret, &body, header("x-hub-signature-256"))
        .map_err(|e| ApiError(Status::unauthenticated(e.to_string())))?;
    let delivery = header("x-github-delivery").unwrap_or("-").to_owned();
    let event = header("x-github-event").unwrap_or_default().to_owned();
    tracing::info!(%delivery, %event, "GitHub webhook delivery");
    match event.as_str() {
        "ping" => Ok((StatusCode::OK, Json(Delivery::new("pong", None, None)))),
        "issues" => {
            let event: IssuesEvent = serde_json::from_slice(&body)
                .map_err(|e| ApiError::invalid(format!("not an issues event: {e}")))?;
            issue_to_task(&ctx, &settings, event).await
        }
        other => Ok((
            StatusCode::OK,
            Json(Delivery::new(
                "ignored",
                None,
                Some(format!("event {other:?} is not handled")),
            )),
        )),
    }
}

async fn issue_to_task(
    ctx: &Arc<NodeContext>,
    settings: &GithubWebhook,
    event: IssuesEvent,
) -> Result<(StatusCode, Json<Delivery>), ApiError> {
    let ignored = |reason: String| {
        Ok((
            StatusCode::OK,
            Json(Delivery::new("ignored", None, Some(reason))),
        ))
    };
    if event.action != "opened" && event.action != "labeled" {
        return ignored(format!(
            "action {:?} is not opened or labeled",
            event.action
        ));
    }
    let labels: Vec<&str> = event.issue.labels.iter().map(|l| l.name.as_str()).collect();
    if !labels.contains(&settings.trigger_label.as_str()) {
        return ignored(format!(
            "the issue does not carry the label {:?}",
            settings.trigger_label
        ));
    }
    let spec = task_spec(&event, &labels, &settings.label_capabilities);
    let task_id = spec.id.clone();
    let api = TaskApi { ctx: ctx.clone() };
    // The signature authenticated the delivery; with --auth it submits as an operator would.
    let caller = Caller {
        token_id: 0,
        role: Role::Operator,
        agent: None,
        name: WEBHOOK_CALLER.to_owned(),
    };
    let request = Request::new(pb::SubmitTaskRequest {
        header: None,
        task: Some(spec),
    });
    match run_as_caller(ctx, caller, api.submit(request)).await {
        Ok(_) => Ok((
            StatusCode::ACCEPTED,
            Json(Delivery::new("created", Some(task_id), None)),
        )),
        Err(status) if status.code() == Code::AlreadyExists => Ok((
            StatusCode::OK,
            Json(Delivery::new(
                "exists",
                Some(task_id),
                Some("the issue's task was submitted by an earlier delivery".to_owned()),
            )),
        )),
        Err(status) => Err(ApiError(status)),
    }
}

/// What the webhook does with a verified `issues` body, without the submit: the task of an
/// opened or labeled issue carrying `trigger_label`, `Ok(None)` for one it ignores, an error
/// for a body that is not an issues event. The fuzz target `github_webhook` runs it on
/// arbitrary bytes (`http::fuzzing`).
#[cfg(feature = "fuzzing")]
pub(super) fn issue_task_spec(
    body: &[u8],
    trigger_label: &str,
    capabilities: &BTreeMap<String, String>,
) -> Result<Option<pb::TaskSpec>, serde_json::Error> {
    let event: IssuesEvent = serde_json::from_slice(body)?;
    if event.action != "opened" && event.action != "labeled" {
        return Ok(None);
    }
    let labels: Vec<&str> = event.issue.labels.iter().map(|l| l.name.as_str()).collect();
    if !labels.contains(&trigger_label) {
        return Ok(None);
    }
    Ok(Some(task_spec(&event, &labels, capabilities)))
}

/// The task of an issue: id `gh-<owner>-<repo>-<number>`, its title, its body (and a link
/// back) as description, and the capabilities its labels map to.
fn task_spec(
    event: &IssuesEvent,
    labels: &[&str],
    capabilities: &BTreeMap<String, String>,
) -> pb::TaskSpec {
    let id = format!(
        "gh-{}-{}-{}",
        event.repository.owner.login, event.repository.name, event.issue.number
    );
    let mut description = event.issue.body.clone().unwrap_or_default();
    if let Some(url) = &event.issue.html_url {
        description = format!("{description}\n\n{url}");
    }
    let mut requires: Vec<String> = labels
        .iter()
        .filter_map(|label| capabilities.get(*label).cloned())
        .collect();
    requires.sort();
    requires.dedup();
    pb::TaskSpec {
        id: truncate(id, MAX_NAME_LEN),
        // GitHub allows longer titles (in bytes) than a task has: keep the start.
        title: truncate(event.issue.title.clone(), MAX_NAME_LEN),
        description: truncate(description, MAX_DESCRIPTION_LEN),
        requires,
        ..Default::default()
    }
}

/// `s` cut to at most `max` bytes, on a character boundary.
fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(labels: &[&str], body: Option<&str>) -> IssuesEvent {
        IssuesEvent {
            action: "labeled".into(),
            issue: Issue {
                number: 42,
                title: "Fix the login page".into(),
                body: body.map(str::to_owned),
                labels: labels
                    .iter()
                    .map(|l| Label {
                        name: (*l).to_owned(),
                    })
                    .collect(),
                html_url: None,
            },
            repository: Repository {
                name: "app".into(),
                owner: Owner {
                    login: "acme".into(),
                },
            },
        }
    }

    #[test]
    fn an_issue_becomes_a_task_with_mapped_capabilities() {
        let labels = ["percy", "frontend", "bug", "testing"];
        let e = event(&labels, Some("The button does nothing."));
        let map = crate::config::parse_label_capabilities(
            crate::config::DEFAULT_GITHUB_LABEL_CAPABILITIES,
        )
        .unwrap_or_default();
        let spec = task_spec(&e, &labels, &map);
        assert_eq!(spec.id, "gh-acme-app-42");
        assert_eq!(spec.title, "Fix the login page");
        assert_eq!(spec.description, "The button does nothing.");
        assert_eq!(spec.requires, ["frontend", "testing"]);
    }

    #[test]
    fn long_text_is_cut_on_a_character_boundary() {
        assert_eq!(truncate("héllo".into(), 2), "h");
        assert_eq!(truncate("héllo".into(), 3), "hé");
        assert_eq!(truncate("abc".into(), 10), "abc");
    }
}
