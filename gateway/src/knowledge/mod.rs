//! The knowledge base: teams upload runbooks and postmortems (PDF, DOCX, Markdown, text), watch
//! them being indexed over server-sent events, search them, delete them; admins keep the
//! organisation's memory, a note included in every agent prompt.
//!
//! An upload streams to the object store as it arrives, never whole in memory: its type is read
//! from its first bytes (and must agree with its name), its size and the organisation's quota
//! are enforced while it streams, and anything refused or cut off midway leaves nothing stored.
//! Only a file stored whole is recorded (`document.uploaded`); a name the organisation already
//! has becomes that document's next version.

pub mod upload;

use std::collections::HashMap;
use std::convert::Infallible;
use std::time::Duration;

use aurora_adapters::vectors::search::{SearchError, SearchHit, SearchMode, MAX_QUERY_CHARS};
use aurora_adapters::vectors::SourceKind;
use aurora_commands::CommandMeta;
use aurora_domain::knowledge::{KnowledgeCommand, Library};
use aurora_events::identity::Role::{Admin, Editor, Viewer};
use aurora_events::knowledge::KnowledgeEvent;
use aurora_events::EventPayload;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use chrono::{DateTime, Utc};
use futures::Stream;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::auth::Access::{ChangeStream, Member};
use crate::auth::Caller;
use crate::change_stream::Follow;
use crate::commands::command_meta;
use crate::extract::{Json, Path};
use crate::problem::{ApiError, Problem};
use crate::routes::Routes;
use crate::AppState;

/// Registers the knowledge routes.
pub fn register(routes: &mut Routes) {
    let (schemas, paths, handler) = routes!(upload::upload_document);
    // The upload enforces its own limit while it streams, in place of the gateway's body limit.
    routes.add(Member(Editor), (schemas, paths, handler.layer(axum::extract::DefaultBodyLimit::disable())));
    routes.add(Member(Viewer), routes!(list_documents));
    routes.add(Member(Viewer), routes!(get_document));
    routes.add(Member(Editor), routes!(delete_document));
    routes.add(ChangeStream(Viewer), routes!(document_events));
    routes.add(Member(Viewer), routes!(search));
    routes.add(Member(Viewer), routes!(get_memory));
    routes.add(Member(Admin), routes!(set_memory));
}

/// The stream of an organisation's knowledge base.
pub fn library_stream(caller: &Caller) -> aurora_events::StreamId {
    KnowledgeEvent::stream_of(caller.org_id().0)
}

/// A document as its organisation sees it.
#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
pub struct DocumentView {
    pub document_id: Uuid,
    pub name: String,
    /// `pdf`, `docx`, `markdown` or `text`.
    pub kind: String,
    /// The current version (1 for the first upload).
    pub version: i32,
    /// `processing`, `ready`, `failed` or `deleted`.
    pub status: String,
    /// Bytes of the current version.
    pub bytes: i64,
    /// Bytes of every version kept.
    pub total_bytes: i64,
    pub sha256: String,
    pub chunks: Option<i32>,
    pub pages: Option<i32>,
    pub characters: Option<i64>,
    pub tokens: Option<i64>,
    /// Why it failed: `encrypted`, `no_text_layer`, `corrupt`, `empty`, `unsafe`, `too_large`.
    pub failure_code: Option<String>,
    /// What to do about it.
    pub failure_reason: Option<String>,
    /// Every version: number, bytes, digest, who uploaded it and when.
    #[schema(value_type = Vec<Object>)]
    pub versions: sqlx::types::Json<serde_json::Value>,
    pub uploaded_by: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub processing_started_at: Option<DateTime<Utc>>,
    pub indexed_at: Option<DateTime<Utc>>,
    /// The position in the organisation's knowledge stream this view reflects.
    pub stream_version: i64,
}

const COLUMNS: &str = "document_id, name, kind, version, status, bytes, total_bytes, sha256, chunks, pages, characters, tokens, \
     failure_code, failure_reason, versions, uploaded_by, created_at, updated_at, processing_started_at, indexed_at, stream_version";

/// The organisation's documents (deleted ones are not listed), most recently changed first.
#[utoipa::path(
    get, path = "/v1/knowledge/documents", tag = "knowledge",
    responses((status = 200, body = Vec<DocumentView>), (status = 401, body = Problem))
)]
pub async fn list_documents(State(state): State<AppState>, caller: Caller) -> Result<axum::Json<Vec<DocumentView>>, ApiError> {
    let documents = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM documents WHERE org_id = $1 AND status <> 'deleted' ORDER BY updated_at DESC LIMIT 1000"
    ))
    .bind(caller.org_id().0)
    .fetch_all(&mut *caller.read_models(&state.pool).await?)
    .await?;
    Ok(axum::Json(documents))
}

async fn document(state: &AppState, caller: &Caller, document_id: Uuid) -> Result<DocumentView, ApiError> {
    sqlx::query_as(&format!("SELECT {COLUMNS} FROM documents WHERE org_id = $1 AND document_id = $2 AND status <> 'deleted'"))
        .bind(caller.org_id().0)
        .bind(document_id)
        .fetch_optional(&mut *caller.read_models(&state.pool).await?)
        .await?
        .ok_or_else(|| ApiError::NotFound("document".into()))
}

/// One document, with its versions and status.
#[utoipa::path(
    get, path = "/v1/knowledge/documents/{document_id}", tag = "knowledge",
    params(("document_id" = Uuid, Path)),
    responses((status = 200, body = DocumentView), (status = 400, body = Problem), (status = 401, body = Problem), (status = 404, body = Problem))
)]
pub async fn get_document(State(state): State<AppState>, caller: Caller, Path(document_id): Path<Uuid>) -> Result<axum::Json<DocumentView>, ApiError> {
    Ok(axum::Json(document(&state, &caller, document_id).await?))
}

/// What a knowledge-base command did.
#[derive(Debug, Serialize, ToSchema)]
pub struct KnowledgeAccepted {
    /// The organisation's knowledge stream version after the command.
    pub stream_version: u64,
}

/// Deletes a document: every version's file, its chunks and vectors go (by the indexer, at once).
#[utoipa::path(
    delete, path = "/v1/knowledge/documents/{document_id}", tag = "knowledge",
    params(("document_id" = Uuid, Path)),
    responses(
        (status = 202, body = KnowledgeAccepted), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 404, body = Problem), (status = 503, body = Problem)
    )
)]
pub async fn delete_document(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Path(document_id): Path<Uuid>,
) -> Result<(axum::http::StatusCode, axum::Json<KnowledgeAccepted>), ApiError> {
    let meta = command_meta(&state, &caller, &headers, "knowledge.delete", &document_id).await?;
    let handled = state.commands.handle::<Library>(&library_stream(&caller), KnowledgeCommand::Delete { document_id }, &meta, None).await?;
    aurora_adapters::wakeup::announce_appended(&state.pool).await;
    Ok((axum::http::StatusCode::ACCEPTED, axum::Json(KnowledgeAccepted { stream_version: handled.stream_version })))
}

/// Documents the first message of a status stream lists at most.
const EVENTS_SNAPSHOT: i64 = 1_000;

/// The organisation's documents' status as it changes, as server-sent events: first every
/// document, then each change (`event: document`, the document as JSON; `deleted` when it goes).
/// Opened with a cookie, a token or a single-use `?ticket=`; it ends when the caller's membership
/// or credential does.
#[utoipa::path(
    get, path = "/v1/knowledge/events", tag = "knowledge",
    responses(
        (status = 200, description = "`text/event-stream` of `document` events, each a DocumentView", content_type = "text/event-stream", body = String),
        (status = 401, body = Problem)
    )
)]
pub async fn document_events(State(state): State<AppState>, caller: Caller) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let follow = Follow::new(&state, &caller, Viewer, "documents");
    let watch = Watch { state, caller, follow, seen: HashMap::new(), since: None, pending: Vec::new() };
    let stream = futures::stream::unfold(watch, move |mut watch| async move {
        loop {
            if let Some(document) = watch.pending.pop() {
                let id = format!("{}:{}", document.document_id, document.stream_version);
                let event = Event::default().event("document").id(id).json_data(&document).unwrap_or_else(|_| Event::default().comment("unencodable"));
                return Some((Ok(event), watch));
            }
            // Wait for a change of this organisation's documents, or look again after a while.
            let going_on = watch.since.is_none() || watch.follow.changed().await;
            if !going_on || !watch.follow.allowed().await {
                return None;
            }
            match watch.changes().await {
                Ok(mut changed) => {
                    changed.reverse();
                    watch.pending = changed;
                }
                Err(error) => {
                    tracing::debug!(%error, "a document status stream could not read; it tries again");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

struct Watch {
    state: AppState,
    caller: Caller,
    follow: Follow,
    /// The stream version last sent of each document.
    seen: HashMap<Uuid, i64>,
    /// The latest change sent; `None` before the first message.
    since: Option<DateTime<Utc>>,
    pending: Vec<DocumentView>,
}

impl Watch {
    /// Documents changed since the last look (all of them the first time), oldest change first.
    async fn changes(&mut self) -> Result<Vec<DocumentView>, ApiError> {
        let mut read = self.caller.read_models(&self.state.pool).await?;
        let rows: Vec<DocumentView> = match self.since {
            None => {
                sqlx::query_as(&format!(
                    "SELECT {COLUMNS} FROM (SELECT {COLUMNS} FROM documents WHERE org_id = $1 AND status <> 'deleted' \
                     ORDER BY updated_at DESC LIMIT $2) latest ORDER BY updated_at"
                ))
                .bind(self.caller.org_id().0)
                .bind(EVENTS_SNAPSHOT)
                .fetch_all(&mut *read)
                .await?
            }
            // Changes stamped a moment before the latest one sent may have committed after it.
            Some(since) => {
                sqlx::query_as(&format!("SELECT {COLUMNS} FROM documents WHERE org_id = $1 AND updated_at >= $2 ORDER BY updated_at LIMIT $3"))
                    .bind(self.caller.org_id().0)
                    .bind(since - chrono::Duration::seconds(5))
                    .bind(EVENTS_SNAPSHOT)
                    .fetch_all(&mut *read)
                    .await?
            }
        };
        let since = rows.iter().map(|row| row.updated_at).max().or(self.since).unwrap_or_else(Utc::now);
        self.since = Some(since);
        let fresh: Vec<DocumentView> =
            rows.into_iter().filter(|row| self.seen.get(&row.document_id).is_none_or(|seen| *seen < row.stream_version)).collect();
        for row in &fresh {
            self.seen.insert(row.document_id, row.stream_version);
        }
        Ok(fresh)
    }
}

#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SearchRequest {
    /// What to look for, in words (1 to 1000 characters).
    pub query: String,
    /// Results wanted, 1 to 50 (default 10).
    #[serde(default)]
    pub limit: Option<usize>,
    /// What to search: `document` (default), `conversation`, `investigation`.
    #[serde(default)]
    pub kinds: Option<Vec<String>>,
    /// `hybrid` (default: meaning and words, fused) or `vector` (meaning alone).
    #[serde(default)]
    pub mode: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SearchResult {
    pub chunk_id: Uuid,
    /// `document`, `conversation`, `investigation`.
    pub kind: String,
    /// The document (or chat session) it comes from.
    pub source_id: Uuid,
    pub version: u32,
    /// The document's name (or the session's title).
    pub title: String,
    pub text: String,
    pub heading_path: Vec<String>,
    pub page: Option<u32>,
    pub score: f64,
    pub similarity: Option<f32>,
    pub text_rank: Option<u32>,
}

impl From<SearchHit> for SearchResult {
    fn from(hit: SearchHit) -> Self {
        Self {
            chunk_id: hit.chunk_id,
            kind: hit.kind.to_owned(),
            source_id: hit.source_id,
            version: hit.version,
            title: hit.title,
            text: hit.content,
            heading_path: hit.heading_path,
            page: hit.page,
            score: hit.score,
            similarity: hit.similarity,
            text_rank: hit.text_rank,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SearchResults {
    pub results: Vec<SearchResult>,
}

impl From<SearchError> for ApiError {
    fn from(error: SearchError) -> Self {
        match error {
            SearchError::InvalidQuery(reason) => ApiError::BadRequest { detail: reason, field: Some("query".into()) },
            SearchError::Embedding(error) => ApiError::Unavailable(error.to_string()),
            SearchError::Vectors(error) => ApiError::Unavailable(error.to_string()),
            SearchError::Database(error) => ApiError::from(error),
        }
    }
}

/// Searches the organisation's knowledge: vector similarity fused with full-text ranking.
#[utoipa::path(
    post, path = "/v1/knowledge/search", tag = "knowledge", request_body = SearchRequest,
    responses(
        (status = 200, body = SearchResults), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 415, body = Problem), (status = 503, body = Problem)
    )
)]
pub async fn search(State(state): State<AppState>, caller: Caller, Json(request): Json<SearchRequest>) -> Result<axum::Json<SearchResults>, ApiError> {
    if request.query.chars().count() > MAX_QUERY_CHARS {
        return Err(ApiError::BadRequest { detail: format!("query must be at most {MAX_QUERY_CHARS} characters"), field: Some("query".into()) });
    }
    let mode = match request.mode.as_deref() {
        None | Some("hybrid") => SearchMode::Hybrid,
        Some("vector") => SearchMode::Vector,
        Some(other) => {
            return Err(ApiError::BadRequest { detail: format!("mode `{other}` is not hybrid or vector"), field: Some("mode".into()) })
        }
    };
    let kinds = match &request.kinds {
        None => vec![SourceKind::Document],
        Some(kinds) if kinds.is_empty() => vec![SourceKind::Document],
        Some(kinds) => kinds
            .iter()
            .map(|kind| {
                SourceKind::parse(kind).ok_or_else(|| ApiError::BadRequest {
                    detail: format!("kind `{}` is not document, conversation or investigation", kind.chars().take(40).collect::<String>()),
                    field: Some("kinds".into()),
                })
            })
            .collect::<Result<_, _>>()?,
    };
    let limit = request.limit.unwrap_or(10);
    let hits = state.knowledge.search(caller.org_id().0, &request.query, &kinds, limit, mode).await?;
    Ok(axum::Json(SearchResults { results: hits.into_iter().map(SearchResult::from).collect() }))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MemoryView {
    /// The note, at most 5,000 characters; empty when none was written.
    pub text: String,
    pub updated_by: Option<String>,
    pub updated_at: Option<DateTime<Utc>>,
}

/// The organisation's memory: what every agent prompt includes.
#[utoipa::path(
    get, path = "/v1/knowledge/memory", tag = "knowledge",
    responses((status = 200, body = MemoryView), (status = 401, body = Problem))
)]
pub async fn get_memory(State(state): State<AppState>, caller: Caller) -> Result<axum::Json<MemoryView>, ApiError> {
    let row: Option<(String, String, DateTime<Utc>)> =
        sqlx::query_as("SELECT text, updated_by, updated_at FROM knowledge_memory WHERE org_id = $1")
            .bind(caller.org_id().0)
            .fetch_optional(&mut *caller.read_models(&state.pool).await?)
            .await?;
    Ok(axum::Json(match row {
        Some((text, updated_by, updated_at)) => MemoryView { text, updated_by: Some(updated_by), updated_at: Some(updated_at) },
        None => MemoryView { text: String::new(), updated_by: None, updated_at: None },
    }))
}

#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MemoryRequest {
    /// The whole note, at most 5,000 characters (line breaks allowed); empty clears it.
    pub text: String,
}

/// Replaces the organisation's memory (admins).
#[utoipa::path(
    put, path = "/v1/knowledge/memory", tag = "knowledge", request_body = MemoryRequest,
    responses(
        (status = 200, body = KnowledgeAccepted), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 415, body = Problem), (status = 503, body = Problem)
    )
)]
pub async fn set_memory(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Json(request): Json<MemoryRequest>,
) -> Result<axum::Json<KnowledgeAccepted>, ApiError> {
    let meta: CommandMeta = command_meta(&state, &caller, &headers, "knowledge.memory", &request).await?;
    let handled =
        state.commands.handle::<Library>(&library_stream(&caller), KnowledgeCommand::SetMemory { text: request.text }, &meta, None).await?;
    aurora_adapters::wakeup::announce_appended(&state.pool).await;
    Ok(axum::Json(KnowledgeAccepted { stream_version: handled.stream_version }))
}
