//! An incident's postmortem: Aurora's draft when the incident resolves, then people's edits;
//! every version kept (`postmortem.saved`), any version restorable as the newest, and the latest
//! exportable as Markdown.

use aurora_domain::incident::IncidentCommand;
use aurora_events::identity::Role::{Editor, Viewer};
use aurora_events::incident::PostmortemOrigin;
use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::response::IntoResponse;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::routes;
use uuid::Uuid;

use super::{change, IncidentAccepted};
use crate::auth::Access::Member;
use crate::auth::Caller;
use crate::extract::{Json, Path};
use crate::problem::{ApiError, Problem};
use crate::routes::Routes;
use crate::AppState;

pub fn register(routes: &mut Routes) {
    routes.add(Member(Viewer), routes!(get_postmortem));
    routes.add(Member(Viewer), routes!(get_postmortem_version));
    routes.add(Member(Viewer), routes!(export_postmortem));
    routes.add(Member(Editor), routes!(edit_postmortem));
    routes.add(Member(Editor), routes!(restore_postmortem));
}

#[derive(Debug, Serialize, Deserialize, ToSchema, sqlx::FromRow)]
pub struct PostmortemView {
    pub version: i32,
    pub markdown: String,
    /// `drafted`, `edited`, `restored`.
    pub origin: String,
    pub restored_from: Option<i32>,
    pub saved_by: String,
    pub saved_at: DateTime<Utc>,
}

async fn version_of(state: &AppState, caller: &Caller, incident_id: Uuid, version: Option<i32>) -> Result<PostmortemView, ApiError> {
    sqlx::query_as(
        "SELECT version, markdown, origin, restored_from, saved_by, saved_at FROM incident_postmortems \
         WHERE org_id = $1 AND incident_id = $2 AND ($3::int IS NULL OR version = $3) ORDER BY version DESC LIMIT 1",
    )
    .bind(caller.org_id().0)
    .bind(incident_id)
    .bind(version)
    .fetch_optional(&mut *caller.read_models(&state.pool).await?)
    .await?
    .ok_or_else(|| ApiError::NotFound(match version {
        Some(version) => format!("postmortem version {version}"),
        None => "postmortem (it is drafted when the incident resolves)".into(),
    }))
}

/// The latest version of the postmortem.
#[utoipa::path(
    get, path = "/v1/incidents/{incident_id}/postmortem", tag = "incidents", params(("incident_id" = Uuid, Path)),
    responses((status = 200, body = PostmortemView), (status = 401, body = Problem), (status = 404, body = Problem))
)]
pub async fn get_postmortem(State(state): State<AppState>, caller: Caller, Path(incident_id): Path<Uuid>) -> Result<axum::Json<PostmortemView>, ApiError> {
    Ok(axum::Json(version_of(&state, &caller, incident_id, None).await?))
}

/// One version of the postmortem.
#[utoipa::path(
    get, path = "/v1/incidents/{incident_id}/postmortem/versions/{version}", tag = "incidents",
    params(("incident_id" = Uuid, Path), ("version" = i32, Path)),
    responses((status = 200, body = PostmortemView), (status = 401, body = Problem), (status = 404, body = Problem))
)]
pub async fn get_postmortem_version(
    State(state): State<AppState>,
    caller: Caller,
    Path((incident_id, version)): Path<(Uuid, i32)>,
) -> Result<axum::Json<PostmortemView>, ApiError> {
    Ok(axum::Json(version_of(&state, &caller, incident_id, Some(version)).await?))
}

/// The latest version as a Markdown file.
#[utoipa::path(
    get, path = "/v1/incidents/{incident_id}/postmortem/export", tag = "incidents", params(("incident_id" = Uuid, Path)),
    responses((status = 200, description = "The postmortem", content_type = "text/markdown", body = String), (status = 401, body = Problem), (status = 404, body = Problem))
)]
pub async fn export_postmortem(State(state): State<AppState>, caller: Caller, Path(incident_id): Path<Uuid>) -> Result<impl IntoResponse, ApiError> {
    let latest = version_of(&state, &caller, incident_id, None).await?;
    let disposition = format!("attachment; filename=\"postmortem-{incident_id}-v{}.md\"", latest.version);
    Ok(([(header::CONTENT_TYPE, "text/markdown; charset=utf-8".to_owned()), (header::CONTENT_DISPOSITION, disposition)], latest.markdown))
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EditRequest {
    /// The whole postmortem, Markdown, at most 100 000 characters.
    pub markdown: String,
}

/// Saves an edited postmortem as a new version.
#[utoipa::path(
    put, path = "/v1/incidents/{incident_id}/postmortem", tag = "incidents", params(("incident_id" = Uuid, Path)), request_body = EditRequest,
    responses((status = 200, body = IncidentAccepted), (status = 400, body = Problem), (status = 404, body = Problem), (status = 422, body = Problem))
)]
pub async fn edit_postmortem(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Path(incident_id): Path<Uuid>,
    Json(request): Json<EditRequest>,
) -> Result<axum::Json<IncidentAccepted>, ApiError> {
    let command = IncidentCommand::SavePostmortem { markdown: request.markdown.clone(), origin: PostmortemOrigin::Edited };
    change(&state, &caller, &headers, "incidents.postmortem.edit", incident_id, &request, command).await
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RestoreRequest {
    pub version: u32,
}

/// Makes an earlier version the newest again (a new version, the old ones kept).
#[utoipa::path(
    post, path = "/v1/incidents/{incident_id}/postmortem/restore", tag = "incidents", params(("incident_id" = Uuid, Path)), request_body = RestoreRequest,
    responses((status = 200, body = IncidentAccepted), (status = 400, body = Problem), (status = 404, body = Problem))
)]
pub async fn restore_postmortem(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Path(incident_id): Path<Uuid>,
    Json(request): Json<RestoreRequest>,
) -> Result<axum::Json<IncidentAccepted>, ApiError> {
    change(&state, &caller, &headers, "incidents.postmortem.restore", incident_id, &request, IncidentCommand::RestorePostmortem { version: request.version }).await
}
