//! The audit log: every event of the caller's organisation, filtered and paginated by a keyset
//! cursor over the position at which each row reached the log's read model. Rows arrive in
//! projection order, not in `occurred_at` order (a transaction that began earlier may commit
//! later), and the position only grows, so a client paging forward never skips a late row.

use aurora_events::identity::Role::Viewer;
use axum::extract::State;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{Postgres, QueryBuilder};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::routes;
use uuid::Uuid;

use crate::auth::Access::Member;
use crate::auth::Caller;
use crate::extract::Query;
use crate::problem::{ApiError, Problem};
use crate::routes::Routes;
use crate::AppState;

pub const MAX_PAGE: i64 = 1000;

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct AuditParams {
    /// Only this stream, e.g. `chat-0193...`.
    pub stream: Option<String>,
    /// Only this event type, e.g. `chat.session_renamed`.
    #[serde(rename = "type")]
    pub event_type: Option<String>,
    /// Only this actor, e.g. `user:ana`.
    pub actor: Option<String>,
    /// Events at or after this instant (RFC 3339).
    pub from: Option<DateTime<Utc>>,
    /// Events before this instant (RFC 3339).
    pub to: Option<DateTime<Utc>>,
    /// Page size, 1 to 1000 (default 100).
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct AuditEntry {
    /// Where the entry stands in the organisation's audit log; only grows.
    pub position: i64,
    pub event_id: Uuid,
    pub stream: String,
    pub stream_version: i64,
    #[serde(rename = "type")]
    pub event_type: String,
    pub schema_version: i32,
    pub actor: String,
    pub occurred_at: DateTime<Utc>,
    pub correlation_id: Uuid,
    pub causation_id: Option<Uuid>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AuditPage {
    pub items: Vec<AuditEntry>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

fn encode_cursor(entry: &AuditEntry) -> String {
    format!("p{}", entry.position)
}

fn decode_cursor(cursor: &str) -> Result<i64, ApiError> {
    let bad = || ApiError::BadRequest { detail: "cursor is not one this API returned".into(), field: Some("cursor".into()) };
    cursor.strip_prefix('p').and_then(|position| position.parse().ok()).ok_or_else(bad)
}

/// The audit log of the caller's organisation, in the order it was recorded.
#[utoipa::path(
    get, path = "/v1/audit", tag = "audit", params(AuditParams),
    responses((status = 200, body = AuditPage), (status = 400, body = Problem), (status = 401, body = Problem))
)]
pub async fn query_audit_log(
    State(state): State<AppState>,
    caller: Caller,
    Query(params): Query<AuditParams>,
) -> Result<axum::Json<AuditPage>, ApiError> {
    let limit = params.limit.unwrap_or(100);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::BadRequest { detail: format!("limit must be between 1 and {MAX_PAGE}"), field: Some("limit".into()) });
    }
    let mut query: QueryBuilder<'_, Postgres> = QueryBuilder::new(
        "SELECT position, event_id, stream, stream_version, event_type, schema_version, actor, occurred_at, correlation_id, causation_id \
         FROM audit_log WHERE org_id = ",
    );
    query.push_bind(caller.org_id().0);
    if let Some(stream) = &params.stream {
        query.push(" AND stream = ").push_bind(stream.clone());
    }
    if let Some(event_type) = &params.event_type {
        query.push(" AND event_type = ").push_bind(event_type.clone());
    }
    if let Some(actor) = &params.actor {
        query.push(" AND actor = ").push_bind(actor.clone());
    }
    if let Some(from) = params.from {
        query.push(" AND occurred_at >= ").push_bind(from);
    }
    if let Some(to) = params.to {
        query.push(" AND occurred_at < ").push_bind(to);
    }
    if let Some(cursor) = &params.cursor {
        query.push(" AND position > ").push_bind(decode_cursor(cursor)?);
    }
    query.push(" ORDER BY position LIMIT ").push_bind(limit + 1);
    let mut items: Vec<AuditEntry> = query.build_query_as().fetch_all(&mut *caller.read_models(&state.pool).await?).await?;
    let next_cursor = if items.len() as i64 > limit {
        items.truncate(limit as usize);
        items.last().map(encode_cursor)
    } else {
        None
    };
    Ok(axum::Json(AuditPage { items, next_cursor }))
}

/// Registers the audit route.
pub fn register(routes: &mut Routes) {
    routes.add(Member(Viewer), routes!(query_audit_log));
}
