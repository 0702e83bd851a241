//! `/v1/config`: the replicated key-value config (`percy.v1.ConfigService`): list, get, put.
//! Values are bytes: JSON carries them as text (`value`, null when not UTF-8) and always as
//! hex (`value_hex`), so no value is altered on the way out; `put` takes text.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::Json;
use percy_proto::v1 as pb;
use percy_proto::v1::config_service_server::ConfigService;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::call::{grpc, Credential};
use super::error::{ApiError, ErrorBody};
use super::json::JsonBody;
use crate::api::config::ConfigApi;
use crate::context::NodeContext;

#[derive(Debug, Serialize, ToSchema)]
pub struct EntryJson {
    pub key: String,
    /// The value as text; null when it is not UTF-8.
    pub value: Option<String>,
    pub value_hex: String,
    pub create_revision: u64,
    pub revision: u64,
    pub version: u64,
}

fn entry(e: pb::ConfigEntry) -> EntryJson {
    EntryJson {
        value_hex: hex::encode(&e.value),
        value: String::from_utf8(e.value).ok(),
        key: e.key,
        create_revision: e.create_revision,
        revision: e.revision,
        version: e.version,
    }
}

/// One key: `entry` is null when the key is absent.
#[derive(Debug, Serialize, ToSchema)]
pub struct EntryAnswer {
    pub entry: Option<EntryJson>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EntryList {
    pub entries: Vec<EntryJson>,
    /// Set when the page was full: pass it as `page_token` for the next one.
    pub next_page_token: String,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only keys starting with this.
    pub prefix: Option<String>,
    /// Page size: absent = 1000; at most 10000.
    pub limit: Option<u32>,
    /// The previous page's `next_page_token`.
    pub page_token: Option<String>,
}

/// A value to store (admin only).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Put {
    pub value: String,
    /// Store only if the key is still at this revision (0: only if absent).
    #[serde(default)]
    pub expected_revision: Option<u64>,
}

#[utoipa::path(get, path = "/v1/config", tag = "config", params(ListQuery),
    responses((status = 200, body = EntryList), (status = "4XX", body = ErrorBody)))]
pub async fn list(
    State(ctx): State<Arc<NodeContext>>,
    credential: Credential,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<EntryList>, ApiError> {
    let Query(query) = query?;
    let api = ConfigApi { ctx: ctx.clone() };
    let request = pb::ListConfigRequest {
        header: None,
        prefix: query.prefix.unwrap_or_default(),
        limit: query.limit.unwrap_or(0),
        page_token: query.page_token.unwrap_or_default(),
    };
    let answer = grpc(
        &ctx,
        credential,
        "/percy.v1.ConfigService/List",
        request,
        |r| api.list(r),
    )
    .await?;
    Ok(Json(EntryList {
        entries: answer.entries.into_iter().map(entry).collect(),
        next_page_token: answer.next_page_token,
    }))
}

#[utoipa::path(get, path = "/v1/config/{key}", tag = "config",
    params(("key" = String, Path, description = "config key")),
    responses((status = 200, body = EntryAnswer), (status = "4XX", body = ErrorBody)))]
pub async fn get(
    State(ctx): State<Arc<NodeContext>>,
    credential: Credential,
    Path(key): Path<String>,
) -> Result<Json<EntryAnswer>, ApiError> {
    let api = ConfigApi { ctx: ctx.clone() };
    let request = pb::GetConfigRequest { header: None, key };
    let answer = grpc(
        &ctx,
        credential,
        "/percy.v1.ConfigService/Get",
        request,
        |r| api.get(r),
    )
    .await?;
    Ok(Json(EntryAnswer {
        entry: answer.entry.map(entry),
    }))
}

#[utoipa::path(put, path = "/v1/config/{key}", tag = "config", request_body = Put,
    params(("key" = String, Path, description = "config key")),
    responses((status = 200, body = EntryAnswer), (status = "4XX", body = ErrorBody)))]
pub async fn put(
    State(ctx): State<Arc<NodeContext>>,
    credential: Credential,
    Path(key): Path<String>,
    body: JsonBody<Put>,
) -> Result<Json<EntryAnswer>, ApiError> {
    let api = ConfigApi { ctx: ctx.clone() };
    let request = pb::PutConfigRequest {
        header: None,
        key,
        value: body.0.value.into_bytes(),
        expected_revision: body.0.expected_revision,
    };
    let answer = grpc(
        &ctx,
        credential,
        "/percy.v1.ConfigService/Put",
        request,
        |r| api.put(r),
    )
    .await?;
    Ok(Json(EntryAnswer {
        entry: answer.entry.map(entry),
    }))
}
