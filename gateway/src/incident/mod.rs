//! Incidents: the webhook endpoint that opens them (`webhooks`), the list and the detail (alerts
//! and why each was grouped, the investigations with their thoughts, tool calls and cited RCA,
//! the postmortem's versions, the payloads as received), a server-sent-events stream of every
//! change (resumable with `Last-Event-ID`), the times to acknowledge, to RCA and to resolve, and
//! what engineers do: acknowledge, resolve, reopen, change severity, merge, split, ask for a new
//! investigation, open a follow-up chat, edit and restore the postmortem.

pub mod postmortem;
pub mod webhooks;

use std::convert::Infallible;
use std::time::Duration;

use aurora_commands::CommandMeta;
use aurora_domain::chat::{ChatSession, ChatSessionCommand};
use aurora_domain::incident::{Incident, IncidentCommand, InvestigationStatus};
use aurora_domain::Aggregate;
use aurora_events::chat::ChatSessionEvent;
use aurora_events::identity::Role::{Editor, Viewer};
use aurora_events::incident::{AlertSource, Grouping, GroupingRule, IncidentEvent, InvestigationFailure, InvestigationTrigger, Severity};
use aurora_events::{EventPayload, StreamId};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use chrono::{DateTime, Utc};
use futures::Stream;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::routes;
use uuid::Uuid;

use crate::auth::Access::{ChangeStream, Member};
use crate::auth::Caller;
use crate::change_stream::Follow;
use crate::commands::command_meta;
use crate::extract::{Json, Path, Query};
use crate::page::{list_of, next_time_cursor, time_cursor};
use crate::problem::{ApiError, Problem};
use crate::routes::Routes;
use crate::AppState;

/// Registers the incident routes.
pub fn register(routes: &mut Routes) {
    webhooks::register(routes);
    routes.add(Member(Viewer), routes!(list_incidents));
    routes.add(Member(Viewer), routes!(incident_metrics));
    routes.add(ChangeStream(Viewer), routes!(incident_events));
    routes.add(Member(Viewer), routes!(get_incident));
    routes.add(Member(Viewer), routes!(get_tool_call));
    routes.add(Member(Editor), routes!(acknowledge));
    routes.add(Member(Editor), routes!(resolve));
    routes.add(Member(Editor), routes!(reopen));
    routes.add(Member(Editor), routes!(change_severity));
    routes.add(Member(Editor), routes!(merge));
    routes.add(Member(Editor), routes!(split));
    routes.add(Member(Editor), routes!(investigate));
    routes.add(Member(Editor), routes!(cancel_investigation));
    routes.add(Member(Editor), routes!(follow_up_chat));
    postmortem::register(routes);
}

pub fn incident_stream(incident_id: Uuid) -> StreamId {
    IncidentEvent::stream_of(incident_id)
}

/// One incident as the list shows it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, sqlx::FromRow)]
pub struct IncidentView {
    pub incident_id: Uuid,
    pub title: String,
    /// `open`, `acknowledged`, `resolved`, `merged`.
    pub status: String,
    /// `info`, `warning`, `high`, `critical`.
    pub severity: String,
    pub source: String,
    pub service: Option<String>,
    pub environment: Option<String>,
    #[schema(value_type = Object)]
    pub labels: sqlx::types::Json<serde_json::Value>,
    pub alert_count: i32,
    pub firing_count: i32,
    pub opened_at: DateTime<Utc>,
    pub acknowledged_at: Option<DateTime<Utc>>,
    pub acknowledged_by: Option<String>,
    pub first_rca_at: Option<DateTime<Utc>>,
    pub resolved_at: Option<DateTime<Utc>>,
    /// `alerts_resolved` or `manual`.
    pub resolution: Option<String>,
    pub duration_secs: Option<i64>,
    pub merged_into: Option<Uuid>,
    pub split_from: Option<Uuid>,
    pub investigation_id: Option<Uuid>,
    /// `queued`, `running`, `completed`, `failed`.
    pub investigation_status: Option<String>,
    /// The latest RCA's confidence: `confirmed`, `likely`, `inconclusive`.
    pub confidence: Option<String>,
    pub rca_summary: Option<String>,
    pub postmortem_version: Option<i32>,
    /// Seconds from opening to the first acknowledgement, the first RCA, the resolution.
    pub time_to_acknowledge_secs: Option<f64>,
    pub time_to_rca_secs: Option<f64>,
    pub time_to_resolve_secs: Option<f64>,
    pub updated_at: DateTime<Utc>,
    pub stream_version: i64,
}

const COLUMNS: &str = "incident_id, title, status, severity, source, service, environment, labels, alert_count, firing_count, opened_at, \
     acknowledged_at, acknowledged_by, first_rca_at, resolved_at, resolution, duration_secs, merged_into, split_from, investigation_id, \
     investigation_status, confidence, rca_summary, postmortem_version, \
     extract(epoch FROM acknowledged_at - opened_at)::float8 AS time_to_acknowledge_secs, \
     extract(epoch FROM first_rca_at - opened_at)::float8 AS time_to_rca_secs, \
     extract(epoch FROM resolved_at - opened_at)::float8 AS time_to_resolve_secs, updated_at, stream_version";

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// `open`, `acknowledged`, `resolved`, `merged`; comma-separated for several.
    pub status: Option<String>,
    pub severity: Option<String>,
    pub source: Option<String>,
    pub service: Option<String>,
    /// Opened at or after (RFC 3339).
    pub since: Option<DateTime<Utc>>,
    /// Opened before (RFC 3339).
    pub until: Option<DateTime<Utc>>,
    /// 1 to 200, default 50.
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct IncidentPage {
    pub incidents: Vec<IncidentView>,
    /// Pass as `cursor` for the next page; none on the last.
    pub next_cursor: Option<String>,
}

/// The organisation's incidents, newest first, filtered, a page at a time.
#[utoipa::path(
    get, path = "/v1/incidents", tag = "incidents", params(ListQuery),
    responses((status = 200, body = IncidentPage), (status = 400, body = Problem), (status = 401, body = Problem))
)]
pub async fn list_incidents(State(state): State<AppState>, caller: Caller, Query(query): Query<ListQuery>) -> Result<axum::Json<IncidentPage>, ApiError> {
    let statuses = list_of("status", &query.status, &["open", "acknowledged", "resolved", "merged"])?;
    let severities = list_of("severity", &query.severity, &["info", "warning", "high", "critical"])?;
    let source_names: Vec<&str> = AlertSource::ALL.iter().map(|source| source.as_str()).collect();
    let sources = list_of("source", &query.source, &source_names)?;
    let limit = query.limit.unwrap_or(50);
    if !(1..=200).contains(&limit) {
        return Err(ApiError::BadRequest { detail: "limit must be 1 to 200".into(), field: Some("limit".into()) });
    }
    if query.service.as_ref().is_some_and(|service| service.chars().count() > 1_024) {
        return Err(ApiError::BadRequest { detail: "service must be at most 1024 characters".into(), field: Some("service".into()) });
    }
    let cursor = time_cursor(&query.cursor)?;
    let rows: Vec<IncidentView> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM incidents WHERE org_id = $1 \
         AND ($2::text[] IS NULL OR status = ANY($2)) AND ($3::text[] IS NULL OR severity = ANY($3)) AND ($4::text[] IS NULL OR source = ANY($4)) \
         AND ($5::text IS NULL OR service = $5) AND ($6::timestamptz IS NULL OR opened_at >= $6) AND ($7::timestamptz IS NULL OR opened_at < $7) \
         AND ($8::timestamptz IS NULL OR (opened_at, incident_id) < ($8, $9)) \
         ORDER BY opened_at DESC, incident_id DESC LIMIT $10"
    ))
    .bind(caller.org_id().0)
    .bind(statuses)
    .bind(severities)
    .bind(sources)
    .bind(&query.service)
    .bind(query.since)
    .bind(query.until)
    .bind(cursor.map(|(at, _)| at))
    .bind(cursor.map(|(_, id)| id).unwrap_or_default())
    .bind(limit + 1)
    .fetch_all(&mut *caller.read_models(&state.pool).await?)
    .await?;
    let mut incidents = rows;
    let next_cursor = if incidents.len() as i64 > limit {
        incidents.truncate(limit as usize);
        incidents.last().map(|last| next_time_cursor(last.opened_at, last.incident_id))
    } else {
        None
    };
    Ok(axum::Json(IncidentPage { incidents, next_cursor }))
}

#[derive(Debug, Serialize, Deserialize, ToSchema, sqlx::FromRow)]
pub struct IncidentMetrics {
    pub incidents: i64,
    pub open: i64,
    /// Medians over the organisation's incidents, in seconds.
    pub median_time_to_acknowledge_secs: Option<f64>,
    pub median_time_to_rca_secs: Option<f64>,
    pub median_time_to_resolve_secs: Option<f64>,
}

/// Medians of the times to acknowledge, to RCA and to resolve.
#[utoipa::path(
    get, path = "/v1/incidents/metrics", tag = "incidents",
    responses((status = 200, body = IncidentMetrics), (status = 401, body = Problem))
)]
pub async fn incident_metrics(State(state): State<AppState>, caller: Caller) -> Result<axum::Json<IncidentMetrics>, ApiError> {
    let metrics = sqlx::query_as(
        "SELECT count(*) AS incidents, count(*) FILTER (WHERE status IN ('open', 'acknowledged')) AS open, \
         percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM acknowledged_at - opened_at)) AS median_time_to_acknowledge_secs, \
         percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM first_rca_at - opened_at)) AS median_time_to_rca_secs, \
         percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM resolved_at - opened_at)) AS median_time_to_resolve_secs \
         FROM incidents WHERE org_id = $1 AND status <> 'merged'",
    )
    .bind(caller.org_id().0)
    .fetch_one(&mut *caller.read_models(&state.pool).await?)
    .await?;
    Ok(axum::Json(metrics))
}

#[derive(Debug, Serialize, Deserialize, ToSchema, sqlx::FromRow)]
pub struct AlertView {
    pub source: String,
    pub fingerprint: String,
    /// `firing` or `resolved`.
    pub status: String,
    pub title: String,
    pub severity: Option<String>,
    pub service: Option<String>,
    pub environment: Option<String>,
    #[schema(value_type = Object)]
    pub labels: sqlx::types::Json<serde_json::Value>,
    #[schema(value_type = Object)]
    pub annotations: sqlx::types::Json<serde_json::Value>,
    #[schema(value_type = Object)]
    pub links: sqlx::types::Json<serde_json::Value>,
    pub starts_at: Option<DateTime<Utc>>,
    pub firings: i32,
    /// Why it joined: `opened`, `same_service`, `matching_labels`, `merged`, `split`.
    pub grouping_rule: String,
    pub grouping_score: f64,
    pub grouping_reason: String,
    pub delivery_id: Option<Uuid>,
    pub attached_at: DateTime<Utc>,
    pub last_fired_at: DateTime<Utc>,
    pub resolved_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema, sqlx::FromRow)]
pub struct InvestigationView {
    pub investigation_id: Uuid,
    /// `queued`, `running`, `completed`, `failed`.
    pub status: String,
    /// `opened` or `requested`.
    pub trigger: String,
    pub session_id: Option<Uuid>,
    pub requested_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub ended_at: Option<DateTime<Utc>>,
    #[schema(value_type = Option<Object>)]
    pub limits: Option<sqlx::types::Json<serde_json::Value>>,
    pub thoughts: i32,
    /// The RCA: summary, root cause with confidence, evidence citing tool calls, impact, timeline,
    /// what was ruled out and not checked, next steps.
    #[schema(value_type = Option<Object>)]
    pub rca: Option<sqlx::types::Json<serde_json::Value>>,
    pub confidence: Option<String>,
    pub failure_reason: Option<String>,
    pub failure_message: Option<String>,
    pub tool_calls: Option<i32>,
    pub tokens: Option<i32>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema, sqlx::FromRow)]
pub struct TimelineEntry {
    /// The position in the organisation's change stream.
    pub position: i64,
    pub incident_id: Uuid,
    pub stream_version: i64,
    pub event_type: String,
    pub actor: String,
    pub occurred_at: DateTime<Utc>,
    #[schema(value_type = Object)]
    pub data: sqlx::types::Json<serde_json::Value>,
}

/// A tool call an investigation made.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ToolCallView {
    pub investigation_id: Uuid,
    pub tool_call_id: String,
    pub tool: String,
    #[schema(value_type = Object)]
    pub arguments: serde_json::Value,
    /// `completed`, `failed` or `pending`.
    pub status: String,
    pub error: Option<String>,
    /// Where its whole output is.
    pub output_url: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema, sqlx::FromRow)]
pub struct DeliveryView {
    pub delivery_id: Uuid,
    pub source: String,
    pub received_at: DateTime<Utc>,
    pub body_sha256: String,
    /// The payload as the vendor sent it.
    #[schema(value_type = Object)]
    pub payload: sqlx::types::Json<serde_json::Value>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema, sqlx::FromRow)]
pub struct PostmortemVersionView {
    pub version: i32,
    /// `drafted`, `edited`, `restored`.
    pub origin: String,
    pub restored_from: Option<i32>,
    pub saved_by: String,
    pub saved_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct IncidentDetail {
    pub incident: IncidentView,
    pub alerts: Vec<AlertView>,
    pub investigations: Vec<InvestigationView>,
    /// The agent's reasoning as it worked, oldest first.
    pub thoughts: Vec<TimelineEntry>,
    pub tool_calls: Vec<ToolCallView>,
    /// Every change, oldest first (thoughts included).
    pub timeline: Vec<TimelineEntry>,
    pub postmortem_versions: Vec<PostmortemVersionView>,
    /// The payloads that brought its alerts, as received.
    pub deliveries: Vec<DeliveryView>,
}

async fn incident_view(state: &AppState, caller: &Caller, incident_id: Uuid) -> Result<IncidentView, ApiError> {
    sqlx::query_as(&format!("SELECT {COLUMNS} FROM incidents WHERE org_id = $1 AND incident_id = $2"))
        .bind(caller.org_id().0)
        .bind(incident_id)
        .fetch_optional(&mut *caller.read_models(&state.pool).await?)
        .await?
        .ok_or_else(|| ApiError::NotFound("incident".into()))
}

/// The tool calls of `sessions`, from the event store (the record itself, not a projection).
async fn tool_calls_of(state: &AppState, caller: &Caller, incident_id: Uuid, sessions: &[(Uuid, Uuid)]) -> Result<Vec<ToolCallView>, ApiError> {
    let mut calls = Vec::new();
    for (investigation_id, session_id) in sessions {
        let events = state.commands.store().load_stream(&ChatSessionEvent::stream_of(*session_id), 0).await?;
        for stored in events.into_iter().filter(|stored| stored.org_id == caller.org_id()) {
            let Ok(event) = ChatSessionEvent::decode(&stored.event_type, stored.schema_version, stored.payload) else { continue };
            match event {
                ChatSessionEvent::ToolCallRequested(requested) => calls.push(ToolCallView {
                    investigation_id: *investigation_id,
                    output_url: format!("/v1/incidents/{incident_id}/tool-calls/{}", requested.tool_call_id),
                    tool_call_id: requested.tool_call_id,
                    tool: requested.name,
                    arguments: requested.arguments,
                    status: "pending".into(),
                    error: None,
                }),
                ChatSessionEvent::ToolCallCompleted(completed) => {
                    if let Some(call) = calls.iter_mut().find(|call| call.tool_call_id == completed.tool_call_id) {
                        call.status = "completed".into();
                    }
                }
                ChatSessionEvent::ToolCallFailed(failed) => {
                    if let Some(call) = calls.iter_mut().find(|call| call.tool_call_id == failed.tool_call_id) {
                        call.status = "failed".into();
                        call.error = Some(failed.error);
                    }
                }
                _ => {}
            }
        }
    }
    Ok(calls)
}

/// One incident with everything recorded about it.
#[utoipa::path(
    get, path = "/v1/incidents/{incident_id}", tag = "incidents", params(("incident_id" = Uuid, Path)),
    responses((status = 200, body = IncidentDetail), (status = 400, body = Problem), (status = 401, body = Problem), (status = 404, body = Problem))
)]
pub async fn get_incident(State(state): State<AppState>, caller: Caller, Path(incident_id): Path<Uuid>) -> Result<axum::Json<IncidentDetail>, ApiError> {
    let incident = incident_view(&state, &caller, incident_id).await?;
    let mut read = caller.read_models(&state.pool).await?;
    let org_id = caller.org_id().0;
    let alerts: Vec<AlertView> = sqlx::query_as(
        "SELECT source, fingerprint, status, title, severity, service, environment, labels, annotations, links, starts_at, firings, grouping_rule, \
         grouping_score, grouping_reason, delivery_id, attached_at, last_fired_at, resolved_at FROM incident_alerts \
         WHERE org_id = $1 AND incident_id = $2 ORDER BY attached_at, fingerprint",
    )
    .bind(org_id)
    .bind(incident_id)
    .fetch_all(&mut *read)
    .await?;
    let investigations: Vec<InvestigationView> = sqlx::query_as(
        "SELECT investigation_id, status, trigger, session_id, requested_at, started_at, ended_at, limits, thoughts, rca, confidence, failure_reason, \
         failure_message, tool_calls, tokens FROM incident_investigations WHERE org_id = $1 AND incident_id = $2 ORDER BY requested_at",
    )
    .bind(org_id)
    .bind(incident_id)
    .fetch_all(&mut *read)
    .await?;
    let timeline: Vec<TimelineEntry> = sqlx::query_as(
        "SELECT position, incident_id, stream_version, event_type, actor, occurred_at, data FROM incident_timeline \
         WHERE org_id = $1 AND incident_id = $2 ORDER BY stream_version LIMIT 5000",
    )
    .bind(org_id)
    .bind(incident_id)
    .fetch_all(&mut *read)
    .await?;
    let postmortem_versions: Vec<PostmortemVersionView> = sqlx::query_as(
        "SELECT version, origin, restored_from, saved_by, saved_at FROM incident_postmortems WHERE org_id = $1 AND incident_id = $2 ORDER BY version",
    )
    .bind(org_id)
    .bind(incident_id)
    .fetch_all(&mut *read)
    .await?;
    let delivery_ids: Vec<Uuid> = alerts.iter().filter_map(|alert| alert.delivery_id).collect();
    let deliveries: Vec<DeliveryView> = sqlx::query_as(
        "SELECT delivery_id, source, received_at, body_sha256, payload FROM webhook_deliveries WHERE org_id = $1 AND delivery_id = ANY($2) \
         ORDER BY received_at LIMIT 100",
    )
    .bind(org_id)
    .bind(&delivery_ids)
    .fetch_all(&mut *read)
    .await?;
    drop(read);
    let sessions: Vec<(Uuid, Uuid)> =
        investigations.iter().filter_map(|investigation| investigation.session_id.map(|session| (investigation.investigation_id, session))).collect();
    let tool_calls = tool_calls_of(&state, &caller, incident_id, &sessions).await?;
    let thoughts = timeline.iter().filter(|entry| entry.event_type == "investigation.thought_recorded").map(clone_entry).collect();
    Ok(axum::Json(IncidentDetail { incident, alerts, investigations, thoughts, tool_calls, timeline, postmortem_versions, deliveries }))
}

fn clone_entry(entry: &TimelineEntry) -> TimelineEntry {
    TimelineEntry {
        position: entry.position,
        incident_id: entry.incident_id,
        stream_version: entry.stream_version,
        event_type: entry.event_type.clone(),
        actor: entry.actor.clone(),
        occurred_at: entry.occurred_at,
        data: sqlx::types::Json(entry.data.0.clone()),
    }
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ToolOutput {
    pub tool_call_id: String,
    /// The tool's whole output.
    #[schema(value_type = Object)]
    pub result: serde_json::Value,
}

/// The whole output of a tool call an investigation of this incident made (what `[n]` cites).
#[utoipa::path(
    get, path = "/v1/incidents/{incident_id}/tool-calls/{tool_call_id}", tag = "incidents",
    params(("incident_id" = Uuid, Path), ("tool_call_id" = String, Path)),
    responses((status = 200, body = ToolOutput), (status = 400, body = Problem), (status = 401, body = Problem), (status = 404, body = Problem))
)]
pub async fn get_tool_call(
    State(state): State<AppState>,
    caller: Caller,
    Path((incident_id, tool_call_id)): Path<(Uuid, String)>,
) -> Result<axum::Json<ToolOutput>, ApiError> {
    let result: Option<serde_json::Value> = sqlx::query_scalar(
        "SELECT result FROM tool_results WHERE org_id = $1 AND tool_call_id = $3 AND session_id IN \
         (SELECT session_id FROM incident_investigations WHERE org_id = $1 AND incident_id = $2 AND session_id IS NOT NULL)",
    )
    .bind(caller.org_id().0)
    .bind(incident_id)
    .bind(&tool_call_id)
    .fetch_optional(&mut *caller.read_models(&state.pool).await?)
    .await?;
    let result = result.ok_or_else(|| ApiError::NotFound("tool call".into()))?;
    Ok(axum::Json(ToolOutput { tool_call_id, result }))
}

/// What an incident command did.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct IncidentAccepted {
    pub incident_id: Uuid,
    /// The incident's stream version after the command.
    pub stream_version: u64,
}

async fn change(
    state: &AppState,
    caller: &Caller,
    headers: &HeaderMap,
    route: &str,
    incident_id: Uuid,
    request: &impl Serialize,
    command: IncidentCommand,
) -> Result<axum::Json<IncidentAccepted>, ApiError> {
    let meta = command_meta(state, caller, headers, route, &(incident_id, request)).await?;
    let handled = state.commands.handle::<Incident>(&incident_stream(incident_id), command, &meta, None).await?;
    aurora_adapters::wakeup::announce_appended(&state.pool).await;
    Ok(axum::Json(IncidentAccepted { incident_id, stream_version: handled.stream_version }))
}

/// Someone is on it.
#[utoipa::path(
    post, path = "/v1/incidents/{incident_id}/acknowledge", tag = "incidents", params(("incident_id" = Uuid, Path)),
    responses((status = 200, body = IncidentAccepted), (status = 404, body = Problem), (status = 422, body = Problem))
)]
pub async fn acknowledge(State(state): State<AppState>, caller: Caller, headers: HeaderMap, Path(incident_id): Path<Uuid>) -> Result<axum::Json<IncidentAccepted>, ApiError> {
    change(&state, &caller, &headers, "incidents.acknowledge", incident_id, &(), IncidentCommand::Acknowledge { at: Utc::now() }).await
}

/// Resolves the incident by hand; its postmortem draft follows.
#[utoipa::path(
    post, path = "/v1/incidents/{incident_id}/resolve", tag = "incidents", params(("incident_id" = Uuid, Path)),
    responses((status = 200, body = IncidentAccepted), (status = 404, body = Problem), (status = 422, body = Problem))
)]
pub async fn resolve(State(state): State<AppState>, caller: Caller, headers: HeaderMap, Path(incident_id): Path<Uuid>) -> Result<axum::Json<IncidentAccepted>, ApiError> {
    change(&state, &caller, &headers, "incidents.resolve", incident_id, &(), IncidentCommand::Resolve { at: Utc::now() }).await
}

/// Reopens a resolved incident.
#[utoipa::path(
    post, path = "/v1/incidents/{incident_id}/reopen", tag = "incidents", params(("incident_id" = Uuid, Path)),
    responses((status = 200, body = IncidentAccepted), (status = 404, body = Problem), (status = 422, body = Problem))
)]
pub async fn reopen(State(state): State<AppState>, caller: Caller, headers: HeaderMap, Path(incident_id): Path<Uuid>) -> Result<axum::Json<IncidentAccepted>, ApiError> {
    change(&state, &caller, &headers, "incidents.reopen", incident_id, &(), IncidentCommand::Reopen { at: Utc::now() }).await
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SeverityRequest {
    /// `info`, `warning`, `high` or `critical`.
    pub severity: String,
}

/// Changes the incident's severity.
#[utoipa::path(
    post, path = "/v1/incidents/{incident_id}/severity", tag = "incidents", params(("incident_id" = Uuid, Path)), request_body = SeverityRequest,
    responses((status = 200, body = IncidentAccepted), (status = 400, body = Problem), (status = 404, body = Problem), (status = 422, body = Problem))
)]
pub async fn change_severity(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Path(incident_id): Path<Uuid>,
    Json(request): Json<SeverityRequest>,
) -> Result<axum::Json<IncidentAccepted>, ApiError> {
    let to = Severity::parse(&request.severity)
        .ok_or_else(|| ApiError::BadRequest { detail: "severity must be info, warning, high or critical".into(), field: Some("severity".into()) })?;
    change(&state, &caller, &headers, "incidents.severity", incident_id, &request, IncidentCommand::ChangeSeverity { to }).await
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MergeRequest {
    /// The open incident of the same organisation that takes this one's alerts.
    pub into: Uuid,
}

/// Merges this incident into another: it closes, and its alerts move there.
#[utoipa::path(
    post, path = "/v1/incidents/{incident_id}/merge", tag = "incidents", params(("incident_id" = Uuid, Path)), request_body = MergeRequest,
    responses((status = 200, body = IncidentAccepted), (status = 400, body = Problem), (status = 404, body = Problem), (status = 422, body = Problem))
)]
pub async fn merge(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Path(incident_id): Path<Uuid>,
    Json(request): Json<MergeRequest>,
) -> Result<axum::Json<IncidentAccepted>, ApiError> {
    let (target, _) = state.commands.load::<Incident>(&incident_stream(request.into), caller.org_id()).await?;
    if !target.exists() {
        return Err(ApiError::NotFound("incident to merge into".into()));
    }
    if !target.is_open() {
        return Err(ApiError::Unprocessable("the incident to merge into is resolved or merged; reopen it first".into()));
    }
    change(&state, &caller, &headers, "incidents.merge", incident_id, &request, IncidentCommand::Merge { into: request.into, at: Utc::now() }).await
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AlertRef {
    pub source: String,
    pub fingerprint: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SplitRequest {
    /// The alerts that leave for a new incident (1 to 49; at least one stays).
    pub alerts: Vec<AlertRef>,
}

/// Splits alerts off into a new incident (undoing a grouping).
#[utoipa::path(
    post, path = "/v1/incidents/{incident_id}/split", tag = "incidents", params(("incident_id" = Uuid, Path)), request_body = SplitRequest,
    responses((status = 201, body = IncidentAccepted), (status = 400, body = Problem), (status = 404, body = Problem), (status = 422, body = Problem))
)]
pub async fn split(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Path(incident_id): Path<Uuid>,
    Json(request): Json<SplitRequest>,
) -> Result<(StatusCode, axum::Json<IncidentAccepted>), ApiError> {
    if request.alerts.is_empty() || request.alerts.len() >= aurora_domain::incident::MAX_ALERTS {
        return Err(ApiError::BadRequest { detail: "alerts must name 1 to 49 alerts".into(), field: Some("alerts".into()) });
    }
    let (incident, _) = state.commands.load::<Incident>(&incident_stream(incident_id), caller.org_id()).await?;
    if !incident.exists() {
        return Err(ApiError::NotFound("incident".into()));
    }
    let mut moving = Vec::new();
    for wanted in &request.alerts {
        let source = AlertSource::parse(&wanted.source)
            .ok_or_else(|| ApiError::BadRequest { detail: "source must be grafana, alertmanager, datadog or pagerduty".into(), field: Some("alerts".into()) })?;
        let attached = incident.alert(source, &wanted.fingerprint).ok_or_else(|| ApiError::NotFound(format!("alert {}", aurora_domain::incident::sources::clip_line(&wanted.fingerprint, 80))))?;
        moving.push(attached.clone());
    }
    if moving.len() >= incident.alerts.len() {
        return Err(ApiError::Unprocessable("a split leaves at least one alert on the incident".into()));
    }
    let meta = command_meta(&state, &caller, &headers, "incidents.split", &(incident_id, &request)).await?;
    let new_id = Uuid::new_v5(&meta.command_id, b"split");
    let step = |what: String| {
        let mut step = CommandMeta::idempotent(caller.org_id(), caller.actor(), Uuid::new_v5(&meta.command_id, what.as_bytes()));
        step.correlation_id = meta.command_id;
        step
    };
    let now = Utc::now();
    let mut alerts = moving.into_iter();
    let first = alerts.next().expect("at least one alert");
    let open = IncidentCommand::Open { incident_id: new_id, alert: first.alert.clone(), delivery_id: None, at: now, split_from: Some(incident_id), investigation_id: None };
    let mut moved = vec![first];
    state.commands.handle::<Incident>(&incident_stream(new_id), open, &step("open".into()), None).await?;
    for attached in alerts {
        let grouping = Grouping { rule: GroupingRule::Split, score: 1.0, reason: format!("split off incident {incident_id} by a person") };
        let attach = IncidentCommand::Attach { alert: attached.alert.clone(), grouping, delivery_id: None, at: now };
        state.commands.handle::<Incident>(&incident_stream(new_id), attach, &step(format!("attach {}", attached.alert.fingerprint)), None).await?;
        moved.push(attached);
    }
    for attached in &moved {
        if !attached.firing {
            let resolve = IncidentCommand::ResolveAlert { source: attached.alert.source, fingerprint: attached.alert.fingerprint.clone(), delivery_id: None, at: now };
            state.commands.handle::<Incident>(&incident_stream(new_id), resolve, &step(format!("resolved {}", attached.alert.fingerprint)), None).await?;
        }
        let detach = IncidentCommand::Detach { source: attached.alert.source, fingerprint: attached.alert.fingerprint.clone(), to_incident: new_id };
        state.commands.handle::<Incident>(&incident_stream(incident_id), detach, &step(format!("detach {}", attached.alert.fingerprint)), None).await?;
    }
    aurora_adapters::wakeup::announce_appended(&state.pool).await;
    let (_, version) = state.commands.load::<Incident>(&incident_stream(new_id), caller.org_id()).await?;
    Ok((StatusCode::CREATED, axum::Json(IncidentAccepted { incident_id: new_id, stream_version: version })))
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct InvestigationAccepted {
    pub incident_id: Uuid,
    pub investigation_id: Uuid,
}

/// Asks for a new investigation (queued behind the organisation's running ones).
#[utoipa::path(
    post, path = "/v1/incidents/{incident_id}/investigations", tag = "incidents", params(("incident_id" = Uuid, Path)),
    responses((status = 202, body = InvestigationAccepted), (status = 404, body = Problem), (status = 422, body = Problem))
)]
pub async fn investigate(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Path(incident_id): Path<Uuid>,
) -> Result<(StatusCode, axum::Json<InvestigationAccepted>), ApiError> {
    let meta = command_meta(&state, &caller, &headers, "incidents.investigate", &incident_id).await?;
    let investigation_id = Uuid::new_v5(&meta.command_id, b"investigation");
    let command = IncidentCommand::RequestInvestigation { investigation_id, trigger: InvestigationTrigger::Requested, at: Utc::now() };
    state.commands.handle::<Incident>(&incident_stream(incident_id), command, &meta, None).await?;
    aurora_adapters::wakeup::announce_appended(&state.pool).await;
    Ok((StatusCode::ACCEPTED, axum::Json(InvestigationAccepted { incident_id, investigation_id })))
}

/// Cancels a queued or running investigation: it fails as `cancelled` at once, keeping its
/// thoughts, its slot goes to the next in the queue, and a running agent turn stops at its next
/// step. An investigation that has ended is a conflict.
#[utoipa::path(
    post, path = "/v1/incidents/{incident_id}/investigations/{investigation_id}/cancel", tag = "incidents",
    params(("incident_id" = Uuid, Path), ("investigation_id" = Uuid, Path)),
    responses((status = 200, body = IncidentAccepted), (status = 404, body = Problem), (status = 409, body = Problem))
)]
pub async fn cancel_investigation(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Path((incident_id, investigation_id)): Path<(Uuid, Uuid)>,
) -> Result<axum::Json<IncidentAccepted>, ApiError> {
    let (incident, _) = state.commands.load::<Incident>(&incident_stream(incident_id), caller.org_id()).await?;
    let investigation = incident.investigation(investigation_id).ok_or_else(|| ApiError::NotFound("investigation".into()))?;
    if !matches!(investigation.status, InvestigationStatus::Queued | InvestigationStatus::Running) {
        return Err(ApiError::Conflict { detail: "the investigation has already ended".into(), current_version: None });
    }
    let session_id = investigation.session_id;
    let message = format!("Cancelled by {}.", caller.actor());
    let command = IncidentCommand::FailInvestigation { investigation_id, reason: InvestigationFailure::Cancelled, message, at: Utc::now() };
    let accepted = change(&state, &caller, &headers, "incidents.investigation.cancel", incident_id, &investigation_id, command).await?;
    // The agent stops spending on it: its turn is asked to stop (it may just have ended).
    if let Some(session_id) = session_id {
        let (session, _) = state.commands.load::<ChatSession>(&ChatSessionEvent::stream_of(session_id), caller.org_id()).await?;
        if let Some(turn) = session.running_turn() {
            let cancel = ChatSessionCommand::RequestCancel { turn_id: turn.turn_id };
            let meta = CommandMeta::new(caller.org_id(), caller.actor());
            if let Err(error) = state.commands.handle::<ChatSession>(&ChatSessionEvent::stream_of(session_id), cancel, &meta, None).await {
                tracing::info!(%investigation_id, %error, "the investigation's turn was not asked to stop");
            }
            aurora_commands::relay::wake(&state.pool).await;
        }
    }
    Ok(accepted)
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct FollowUpChat {
    pub session_id: Uuid,
}

/// Opens a chat session about the incident: the agent is told the incident and its latest RCA.
#[utoipa::path(
    post, path = "/v1/incidents/{incident_id}/chat", tag = "incidents", params(("incident_id" = Uuid, Path)),
    responses((status = 201, body = FollowUpChat), (status = 404, body = Problem))
)]
pub async fn follow_up_chat(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Path(incident_id): Path<Uuid>,
) -> Result<(StatusCode, axum::Json<FollowUpChat>), ApiError> {
    let (incident, _) = state.commands.load::<Incident>(&incident_stream(incident_id), caller.org_id()).await?;
    if !incident.exists() {
        return Err(ApiError::NotFound("incident".into()));
    }
    let meta = command_meta(&state, &caller, &headers, "incidents.chat", &incident_id).await?;
    let session_id = Uuid::new_v5(&meta.command_id, b"follow-up");
    let title: String = format!("Incident: {}", incident.title).chars().take(200).collect();
    let command = ChatSessionCommand::Create { session_id, title, owner: caller.actor(), context: Some(seed(incident_id, &incident)) };
    state.commands.handle::<ChatSession>(&ChatSessionEvent::stream_of(session_id), command, &meta, None).await?;
    aurora_adapters::wakeup::announce_appended(&state.pool).await;
    Ok((StatusCode::CREATED, axum::Json(FollowUpChat { session_id })))
}

/// What a follow-up chat's agent is told: the incident, its alerts and its latest RCA.
fn seed(incident_id: Uuid, incident: &Incident) -> String {
    let mut text = format!(
        "Incident {incident_id}: {} (severity {}, service {}, status {}).\nAlerts:\n",
        incident.title,
        incident.severity.map(|severity| severity.as_str()).unwrap_or("warning"),
        incident.service.as_deref().unwrap_or("unknown"),
        incident.status.map(|status| status.as_str()).unwrap_or("open"),
    );
    for attached in incident.alerts.iter().take(50) {
        text.push_str(&format!("- {} ({}, {})\n", attached.alert.title, attached.alert.source, if attached.firing { "firing" } else { "resolved" }));
    }
    let rca = incident.investigations.iter().rev().find_map(|investigation| investigation.rca.as_ref());
    match rca {
        Some(rca) => {
            let rca_json = serde_json::to_string_pretty(rca).unwrap_or_default();
            text.push_str("The latest root-cause analysis (its evidence cites tool calls of the investigation):\n");
            text.push_str(&rca_json);
        }
        None => text.push_str("No investigation of it has completed yet."),
    }
    text.chars().take(aurora_domain::chat::MAX_CONTEXT_CHARS).collect()
}

const EVENTS_BATCH: i64 = 500;

/// Every change to the organisation's incidents as server-sent events: `event` is the event
/// type, `id` its position, `data` a TimelineEntry. With `Last-Event-ID` it resumes after that
/// position; without, it starts with what happens next. Opened with a cookie, a token or a
/// single-use `?ticket=`; it ends when the caller's membership or credential does.
#[utoipa::path(
    get, path = "/v1/incidents/events", tag = "incidents",
    params(("Last-Event-ID" = Option<i64>, Header, description = "The `id` of the last event received")),
    responses(
        (status = 200, description = "`text/event-stream` of incident changes, each a TimelineEntry", content_type = "text/event-stream", body = String),
        (status = 400, body = Problem), (status = 401, body = Problem)
    )
)]
pub async fn incident_events(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let resume = match headers.get("last-event-id") {
        Some(value) => Some(value.to_str().ok().and_then(|text| text.trim().parse::<i64>().ok()).ok_or_else(|| ApiError::BadRequest {
            detail: "Last-Event-ID must be the id of an event this stream sent".into(),
            field: Some("Last-Event-ID".into()),
        })?),
        None => None,
    };
    let since = match resume {
        Some(position) => position,
        None => sqlx::query_scalar::<_, Option<i64>>("SELECT max(position) FROM incident_timeline WHERE org_id = $1")
            .bind(caller.org_id().0)
            .fetch_one(&mut *caller.read_models(&state.pool).await?)
            .await?
            .unwrap_or(0),
    };
    let follow = Follow::new(&state, &caller, Viewer, aurora_projections::incident::READ_MODEL);
    let watch = (state, caller, follow, since, Vec::<TimelineEntry>::new());
    let stream = futures::stream::unfold(watch, move |(state, caller, mut follow, mut since, mut pending)| async move {
        loop {
            if let Some(entry) = pending.pop() {
                let event = Event::default()
                    .event(entry.event_type.clone())
                    .id(entry.position.to_string())
                    .json_data(&entry)
                    .unwrap_or_else(|_| Event::default().comment("unencodable"));
                return Some((Ok(event), (state, caller, follow, since, pending)));
            }
            if !follow.allowed().await {
                return None;
            }
            let read = async {
                let mut read = caller.read_models(&state.pool).await?;
                let rows: Vec<TimelineEntry> = sqlx::query_as(
                    "SELECT position, incident_id, stream_version, event_type, actor, occurred_at, data FROM incident_timeline \
                     WHERE org_id = $1 AND position > $2 ORDER BY position LIMIT $3",
                )
                .bind(caller.org_id().0)
                .bind(since)
                .bind(EVENTS_BATCH)
                .fetch_all(&mut *read)
                .await?;
                Ok::<_, ApiError>(rows)
            };
            match read.await {
                Ok(rows) if !rows.is_empty() => {
                    since = rows.last().map(|row| row.position).unwrap_or(since);
                    pending = rows.into_iter().rev().collect();
                    continue;
                }
                Ok(_) => {}
                Err(error) => tracing::debug!(%error, "an incident change stream could not read; it tries again"),
            }
            if !follow.changed().await {
                return None;
            }
        }
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}
