//! Chat sessions: commands go through the chat session aggregate; reads come from the
//! `chat_sessions` read model, which trails the commands by the relay and projection delay.

use aurora_domain::chat::{ChatSession, ChatSessionCommand};
use aurora_events::chat::ChatSessionEvent;
use aurora_events::EventPayload;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use aurora_commands::Handled;

use crate::auth::Caller;
use crate::commands::command_meta;
use crate::extract::{Json, Path, Query};
use crate::problem::{ApiError, Problem};
use crate::AppState;

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSession {
    /// 1 to 200 characters.
    pub title: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RenameSession {
    pub title: String,
}

#[derive(Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ArchiveSession {
    /// Why, for the record: at most 1 000 characters.
    #[serde(default)]
    pub reason: Option<String>,
}

/// What a command did.
#[derive(Debug, Serialize, ToSchema)]
pub struct CommandAccepted {
    pub session_id: Uuid,
    /// The session's stream version after the command; send it back in `If-Match`.
    pub stream_version: u64,
    /// The events this command appended (empty when it changed nothing).
    pub event_ids: Vec<Uuid>,
    /// True when this `Idempotency-Key` was handled before and nothing new was appended.
    pub duplicate: bool,
}

#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct SessionView {
    pub session_id: Uuid,
    pub title: String,
    pub owner: String,
    pub archived: bool,
    pub version: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    /// Include archived sessions (default false).
    #[serde(default)]
    pub include_archived: bool,
    /// At most this many sessions (1 to 200, default 50).
    pub limit: Option<i64>,
}


/// `If-Match: "<version>"` (quotes optional): the version the client decided on.
fn expected_version(headers: &HeaderMap) -> Result<Option<u64>, ApiError> {
    let Some(value) = headers.get("if-match") else { return Ok(None) };
    value
        .to_str()
        .ok()
        .map(|text| text.trim().trim_matches('"'))
        .and_then(|text| text.parse().ok())
        .map(Some)
        .ok_or_else(|| ApiError::BadRequest { detail: "If-Match must be a stream version".into(), field: Some("If-Match".into()) })
}

fn accepted(session_id: Uuid, handled: Handled) -> CommandAccepted {
    CommandAccepted {
        session_id,
        stream_version: handled.stream_version,
        duplicate: handled.appended.as_ref().is_some_and(|appended| appended.duplicate),
        event_ids: handled.appended.map(|appended| appended.event_ids).unwrap_or_default(),
    }
}

/// Open a chat session.
#[utoipa::path(
    post, path = "/v1/chat/sessions", tag = "chat", request_body = CreateSession,
    params(("Idempotency-Key" = Option<Uuid>, Header, description = "Repeat a request safely: the same key yields the same result once")),
    responses(
        (status = 201, body = CommandAccepted), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 415, body = Problem), (status = 413, body = Problem)
    )
)]
pub async fn create_session(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Json(request): Json<CreateSession>,
) -> Result<(StatusCode, axum::Json<CommandAccepted>), ApiError> {
    let meta = command_meta(&state, &caller, &headers, "create_session", &request).await?;
    // The command id names the session, so a retried create addresses the same stream.
    let session_id = meta.command_id;
    let command = ChatSessionCommand::Create { session_id, title: request.title, owner: caller.actor(), context: None };
    let handled = state.commands.handle::<ChatSession>(&ChatSessionEvent::stream_of(session_id), command, &meta, None).await?;
    Ok((StatusCode::CREATED, axum::Json(accepted(session_id, handled))))
}

/// Rename a chat session.
#[utoipa::path(
    patch, path = "/v1/chat/sessions/{session_id}", tag = "chat", request_body = RenameSession,
    params(
        ("session_id" = Uuid, Path),
        ("If-Match" = Option<u64>, Header, description = "Refuse with 409 unless the session is at this version"),
        ("Idempotency-Key" = Option<Uuid>, Header)
    ),
    responses((status = 200, body = CommandAccepted), (status = 404, body = Problem), (status = 409, body = Problem), (status = 422, body = Problem))
)]
pub async fn rename_session(
    State(state): State<AppState>,
    caller: Caller,
    Path(session_id): Path<Uuid>,
    headers: HeaderMap,
    Json(request): Json<RenameSession>,
) -> Result<axum::Json<CommandAccepted>, ApiError> {
    let meta = command_meta(&state, &caller, &headers, "rename_session", &(session_id, &request)).await?;
    let expected = expected_version(&headers)?;
    let command = ChatSessionCommand::Rename { title: request.title };
    let handled = state.commands.handle::<ChatSession>(&ChatSessionEvent::stream_of(session_id), command, &meta, expected).await?;
    Ok(axum::Json(accepted(session_id, handled)))
}

/// Archive a chat session.
#[utoipa::path(
    post, path = "/v1/chat/sessions/{session_id}/archive", tag = "chat", request_body = ArchiveSession,
    params(("session_id" = Uuid, Path), ("If-Match" = Option<u64>, Header), ("Idempotency-Key" = Option<Uuid>, Header)),
    responses((status = 200, body = CommandAccepted), (status = 404, body = Problem), (status = 409, body = Problem))
)]
pub async fn archive_session(
    State(state): State<AppState>,
    caller: Caller,
    Path(session_id): Path<Uuid>,
    headers: HeaderMap,
    Json(request): Json<ArchiveSession>,
) -> Result<axum::Json<CommandAccepted>, ApiError> {
    let meta = command_meta(&state, &caller, &headers, "archive_session", &(session_id, &request)).await?;
    let expected = expected_version(&headers)?;
    let command = ChatSessionCommand::Archive { reason: request.reason };
    let handled = state.commands.handle::<ChatSession>(&ChatSessionEvent::stream_of(session_id), command, &meta, expected).await?;
    Ok(axum::Json(accepted(session_id, handled)))
}

/// The caller's organisation's chat sessions, most recently changed first.
#[utoipa::path(
    get, path = "/v1/chat/sessions", tag = "chat", params(ListParams),
    responses((status = 200, body = Vec<SessionView>), (status = 401, body = Problem))
)]
pub async fn list_sessions(
    State(state): State<AppState>,
    caller: Caller,
    Query(params): Query<ListParams>,
) -> Result<axum::Json<Vec<SessionView>>, ApiError> {
    let limit = params.limit.unwrap_or(50);
    if !(1..=200).contains(&limit) {
        return Err(ApiError::BadRequest { detail: "limit must be between 1 and 200".into(), field: Some("limit".into()) });
    }
    let sessions = sqlx::query_as::<_, SessionView>(
        "SELECT session_id, title, owner, archived, version, created_at, updated_at FROM chat_sessions \
         WHERE org_id = $1 AND NOT deleted AND ($2 OR NOT archived) AND owner NOT LIKE 'processor:%' \
         ORDER BY updated_at DESC, session_id LIMIT $3",
    )
    .bind(caller.org_id().0)
    .bind(params.include_archived)
    .bind(limit)
    .fetch_all(&mut *caller.read_models(&state.pool).await?)
    .await?;
    Ok(axum::Json(sessions))
}

/// One chat session.
#[utoipa::path(
    get, path = "/v1/chat/sessions/{session_id}", tag = "chat", params(("session_id" = Uuid, Path)),
    responses((status = 200, body = SessionView), (status = 404, body = Problem))
)]
pub async fn get_session(
    State(state): State<AppState>,
    caller: Caller,
    Path(session_id): Path<Uuid>,
) -> Result<axum::Json<SessionView>, ApiError> {
    sqlx::query_as::<_, SessionView>(
        "SELECT session_id, title, owner, archived, version, created_at, updated_at FROM chat_sessions \
         WHERE org_id = $1 AND session_id = $2 AND NOT deleted",
    )
    .bind(caller.org_id().0)
    .bind(session_id)
    .fetch_optional(&mut *caller.read_models(&state.pool).await?)
    .await?
    .map(axum::Json)
    .ok_or_else(|| ApiError::NotFound("chat session".into()))
}

/// Delete a chat session: it leaves every list and takes no more turns. Its events stay in the log.
#[utoipa::path(
    delete, path = "/v1/chat/sessions/{session_id}", tag = "chat",
    params(("session_id" = Uuid, Path), ("If-Match" = Option<u64>, Header), ("Idempotency-Key" = Option<Uuid>, Header)),
    responses((status = 200, body = CommandAccepted), (status = 404, body = Problem), (status = 409, body = Problem))
)]
pub async fn delete_session(
    State(state): State<AppState>,
    caller: Caller,
    Path(session_id): Path<Uuid>,
    headers: HeaderMap,
) -> Result<axum::Json<CommandAccepted>, ApiError> {
    let meta = command_meta(&state, &caller, &headers, "delete_session", &session_id).await?;
    let expected = expected_version(&headers)?;
    let handled = state.commands.handle::<ChatSession>(&ChatSessionEvent::stream_of(session_id), ChatSessionCommand::Delete, &meta, expected).await?;
    Ok(axum::Json(accepted(session_id, handled)))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct MessagesParams {
    /// Only entries after this position (the `position` of the last entry of the previous page).
    pub after: Option<i64>,
    /// At most this many entries, 1 to 200 (default 50).
    pub limit: Option<i64>,
}

/// One entry of a conversation: the question (`user`), the answer (`assistant`), a tool call
/// (`tool_call`) and its outcome (`tool_result`), a confirmation request (`confirmation`), or how
/// a turn ended without an answer (`notice`).
#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct MessageView {
    pub event_id: Uuid,
    pub turn_id: Uuid,
    pub position: i64,
    pub kind: String,
    pub text: String,
    pub data: serde_json::Value,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MessagePage {
    pub items: Vec<MessageView>,
    /// Pass as `after` for the next page; absent on the last page.
    pub next_after: Option<i64>,
}

/// A session's conversation, oldest first, a page at a time.
#[utoipa::path(
    get, path = "/v1/chat/sessions/{session_id}/messages", tag = "chat", params(("session_id" = Uuid, Path), MessagesParams),
    responses((status = 200, body = MessagePage), (status = 400, body = Problem), (status = 404, body = Problem))
)]
pub async fn list_messages(
    State(state): State<AppState>,
    caller: Caller,
    Path(session_id): Path<Uuid>,
    Query(params): Query<MessagesParams>,
) -> Result<axum::Json<MessagePage>, ApiError> {
    let limit = params.limit.unwrap_or(50);
    if !(1..=200).contains(&limit) {
        return Err(ApiError::BadRequest { detail: "limit must be between 1 and 200".into(), field: Some("limit".into()) });
    }
    let mut read = caller.read_models(&state.pool).await?;
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM chat_sessions WHERE org_id = $1 AND session_id = $2 AND NOT deleted)")
            .bind(caller.org_id().0)
            .bind(session_id)
            .fetch_one(&mut *read)
            .await?;
    if !exists {
        return Err(ApiError::NotFound("chat session".into()));
    }
    let mut items: Vec<MessageView> = sqlx::query_as(
        "SELECT event_id, turn_id, position, kind, text, data, created_at FROM chat_messages          WHERE org_id = $1 AND session_id = $2 AND position > $3 ORDER BY position LIMIT $4",
    )
    .bind(caller.org_id().0)
    .bind(session_id)
    .bind(params.after.unwrap_or(0))
    .bind(limit + 1)
    .fetch_all(&mut *read)
    .await?;
    let next_after = if items.len() as i64 > limit {
        items.truncate(limit as usize);
        items.last().map(|item| item.position)
    } else {
        None
    };
    Ok(axum::Json(MessagePage { items, next_after }))
}

/// A tool call's whole result (the events keep it cut to the tool's cap).
#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct ToolResultView {
    pub tool_call_id: String,
    pub turn_id: Uuid,
    pub result: serde_json::Value,
    pub created_at: DateTime<Utc>,
}

/// The whole result of one tool call.
#[utoipa::path(
    get, path = "/v1/chat/sessions/{session_id}/tool-calls/{tool_call_id}", tag = "chat",
    params(("session_id" = Uuid, Path), ("tool_call_id" = String, Path)),
    responses((status = 200, body = ToolResultView), (status = 404, body = Problem))
)]
pub async fn tool_result(
    State(state): State<AppState>,
    caller: Caller,
    Path((session_id, tool_call_id)): Path<(Uuid, String)>,
) -> Result<axum::Json<ToolResultView>, ApiError> {
    sqlx::query_as(
        "SELECT tool_call_id, turn_id, result, created_at FROM tool_results WHERE org_id = $1 AND session_id = $2 AND tool_call_id = $3",
    )
    .bind(caller.org_id().0)
    .bind(session_id)
    .bind(tool_call_id)
    .fetch_optional(&mut *caller.read_models(&state.pool).await?)
    .await?
    .map(axum::Json)
    .ok_or_else(|| ApiError::NotFound("tool result".into()))
}
