//! `/v1/messages`: send a message, read a mailbox (`percy.v1.MessageService`).

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::Json;
use percy_proto::v1 as pb;
use percy_proto::v1::message_service_server::MessageService;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::call::{grpc, Credential};
use super::error::{ApiError, ErrorBody};
use super::json::JsonBody;
use crate::api::message::MessageApi;
use crate::context::NodeContext;

/// A message to an agent, or to everyone.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Send {
    /// The sender's name; with --auth, empty or the token's own name.
    #[serde(default)]
    pub from: String,
    /// The agent id; 0 or absent: broadcast.
    #[serde(default)]
    pub to_agent: u64,
    pub body: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MessageJson {
    pub id: u64,
    pub from: String,
    /// 0: broadcast.
    pub to_agent: u64,
    pub body: String,
    pub sent_at_ms: u64,
}

fn message(m: pb::Message) -> MessageJson {
    MessageJson {
        id: m.id,
        from: m.from,
        to_agent: m.to_agent,
        body: m.body,
        sent_at_ms: m.sent_at_ms,
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Sent {
    pub message: Option<MessageJson>,
    /// Old messages the mailbox dropped to make room.
    pub dropped: u64,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct HistoryQuery {
    /// The agent's mailbox; 0 or absent: the broadcast one.
    pub agent_id: Option<u64>,
    /// Only messages after this id.
    pub after_id: Option<u64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct History {
    pub messages: Vec<MessageJson>,
    pub dropped: u64,
}

#[utoipa::path(post, path = "/v1/messages", tag = "messages", request_body = Send,
    responses((status = 200, body = Sent), (status = "4XX", body = ErrorBody)))]
pub async fn send(
    State(ctx): State<Arc<NodeContext>>,
    credential: Credential,
    body: JsonBody<Send>,
) -> Result<Json<Sent>, ApiError> {
    let api = MessageApi { ctx: ctx.clone() };
    let request = pb::SendMessageRequest {
        header: None,
        from: body.0.from,
        to_agent: body.0.to_agent,
        body: body.0.body,
    };
    let answer = grpc(
        &ctx,
        credential,
        "/percy.v1.MessageService/Send",
        request,
        |r| api.send(r),
    )
    .await?;
    Ok(Json(Sent {
        message: answer.message.map(message),
        dropped: answer.dropped,
    }))
}

#[utoipa::path(get, path = "/v1/messages", tag = "messages", params(HistoryQuery),
    responses((status = 200, body = History), (status = "4XX", body = ErrorBody)))]
pub async fn history(
    State(ctx): State<Arc<NodeContext>>,
    credential: Credential,
    query: Result<Query<HistoryQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<History>, ApiError> {
    let Query(query) = query?;
    let api = MessageApi { ctx: ctx.clone() };
    let request = pb::MessageHistoryRequest {
        header: None,
        agent_id: query.agent_id.unwrap_or(0),
        after_id: query.after_id.unwrap_or(0),
    };
    let answer = grpc(
        &ctx,
        credential,
        "/percy.v1.MessageService/History",
        request,
        |r| api.history(r),
    )
    .await?;
    Ok(Json(History {
        messages: answer.messages.into_iter().map(message).collect(),
        dropped: answer.dropped,
    }))
}
