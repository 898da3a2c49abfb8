//! Deployments: every saved plan of a chat session's Terraform workspace and what became of it,
//! from the `deployments` read model. Viewers list and read them; the CLI's output (plan and
//! apply, secrets redacted when it was kept) is for editors; a state version, which holds every
//! attribute of what it manages, sensitive ones too, is for admins.

use aurora_adapters::objects::{ObjectError, ObjectKey};
use aurora_events::identity::Role::{Admin, Editor, Viewer};
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::routes;
use uuid::Uuid;

use crate::auth::Access::Member;
use crate::auth::Caller;
use crate::extract::{Path, Query};
use crate::page::{list_of, next_time_cursor, time_cursor};
use crate::problem::{ApiError, Problem};
use crate::routes::Routes;
use crate::AppState;

/// Registers the deployment routes.
pub fn register(routes: &mut Routes) {
    routes.add(Member(Viewer), routes!(list_deployments));
    routes.add(Member(Viewer), routes!(get_deployment));
    routes.add(Member(Editor), routes!(deployment_plan_output));
    routes.add(Member(Editor), routes!(deployment_apply_output));
    routes.add(Member(Admin), routes!(deployment_state));
}

/// A deployment as its organisation sees it.
#[derive(Debug, Serialize, Deserialize, ToSchema, sqlx::FromRow)]
pub struct DeploymentView {
    /// The plan's id (`plan_id` in the chat).
    pub deployment_id: Uuid,
    /// The chat session whose workspace it is.
    pub session_id: Uuid,
    /// `planned`, `applying`, `applied`, `failed` or `outcome_unknown`.
    pub status: String,
    pub destroy: bool,
    /// Who asked for the plan.
    pub requested_by: String,
    /// Who approved the apply.
    pub approved_by: Option<String>,
    /// The workspace's files as planned: name and SHA-256.
    #[schema(value_type = Vec<Object>)]
    pub files: sqlx::types::Json<serde_json::Value>,
    /// Addresses to create, change, replace and destroy.
    #[schema(value_type = Object)]
    pub changes: sqlx::types::Json<serde_json::Value>,
    /// How many resources the plan touches.
    pub resources: i32,
    /// The state version the apply left.
    pub state_version: Option<i32>,
    /// The root module's outputs, sensitive ones withheld.
    #[schema(value_type = Option<Object>)]
    pub outputs: Option<sqlx::types::Json<serde_json::Value>>,
    /// `stale`, `locked`, `init`, `apply`, `timeout` or `cancelled`.
    pub failure_stage: Option<String>,
    pub failure_reason: Option<String>,
    /// The state lock a lost apply held, as the CLI described it.
    #[schema(value_type = Option<Object>)]
    pub lost_lock: Option<sqlx::types::Json<serde_json::Value>>,
    pub planned_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub duration_ms: Option<i64>,
    pub stream_version: i64,
}

const COLUMNS: &str = "deployment_id, session_id, status, destroy, requested_by, approved_by, files, changes, resources, state_version, \
     outputs, failure_stage, failure_reason, lost_lock, planned_at, started_at, finished_at, duration_ms, stream_version";

/// One deployment and where its parts are.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DeploymentDetail {
    #[serde(flatten)]
    pub deployment: DeploymentView,
    pub links: DeploymentLinks,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DeploymentLinks {
    /// The plan's whole output.
    pub plan: String,
    /// The apply's whole output, once it ran.
    pub output: Option<String>,
    /// The state version the apply left.
    pub state: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Only this chat session's deployments.
    pub session_id: Option<Uuid>,
    /// `planned`, `applying`, `applied`, `failed`, `outcome_unknown`; comma-separated for several.
    pub status: Option<String>,
    /// 1 to 200, default 50.
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DeploymentPage {
    pub deployments: Vec<DeploymentView>,
    /// Pass as `cursor` for the next page; none on the last.
    pub next_cursor: Option<String>,
}

const STATUSES: &[&str] = &["planned", "applying", "applied", "failed", "outcome_unknown"];

/// The organisation's deployments, newest plan first, a page at a time.
#[utoipa::path(
    get, path = "/v1/deployments", tag = "deployments", params(ListQuery),
    responses((status = 200, body = DeploymentPage), (status = 400, body = Problem), (status = 401, body = Problem))
)]
pub async fn list_deployments(
    State(state): State<AppState>,
    caller: Caller,
    Query(query): Query<ListQuery>,
) -> Result<axum::Json<DeploymentPage>, ApiError> {
    let statuses = list_of("status", &query.status, STATUSES)?;
    let limit = query.limit.unwrap_or(50);
    if !(1..=200).contains(&limit) {
        return Err(ApiError::BadRequest { detail: "limit must be 1 to 200".into(), field: Some("limit".into()) });
    }
    let cursor = time_cursor(&query.cursor)?;
    let mut deployments: Vec<DeploymentView> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM deployments WHERE org_id = $1 \
         AND ($2::uuid IS NULL OR session_id = $2) AND ($3::text[] IS NULL OR status = ANY($3)) \
         AND ($4::timestamptz IS NULL OR (planned_at, deployment_id) < ($4, $5)) \
         ORDER BY planned_at DESC, deployment_id DESC LIMIT $6"
    ))
    .bind(caller.org_id().0)
    .bind(query.session_id)
    .bind(statuses)
    .bind(cursor.map(|(at, _)| at))
    .bind(cursor.map(|(_, id)| id).unwrap_or_default())
    .bind(limit + 1)
    .fetch_all(&mut *caller.read_models(&state.pool).await?)
    .await?;
    let next_cursor = if deployments.len() as i64 > limit {
        deployments.truncate(limit as usize);
        deployments.last().map(|last| next_time_cursor(last.planned_at, last.deployment_id))
    } else {
        None
    };
    Ok(axum::Json(DeploymentPage { deployments, next_cursor }))
}

async fn deployment(state: &AppState, caller: &Caller, deployment_id: Uuid) -> Result<DeploymentView, ApiError> {
    sqlx::query_as(&format!("SELECT {COLUMNS} FROM deployments WHERE org_id = $1 AND deployment_id = $2"))
        .bind(caller.org_id().0)
        .bind(deployment_id)
        .fetch_optional(&mut *caller.read_models(&state.pool).await?)
        .await?
        .ok_or_else(|| ApiError::NotFound("deployment".into()))
}

/// One deployment, with links to its plan, output and state.
#[utoipa::path(
    get, path = "/v1/deployments/{deployment_id}", tag = "deployments", params(("deployment_id" = Uuid, Path)),
    responses((status = 200, body = DeploymentDetail), (status = 401, body = Problem), (status = 404, body = Problem))
)]
pub async fn get_deployment(
    State(state): State<AppState>,
    caller: Caller,
    Path(deployment_id): Path<Uuid>,
) -> Result<axum::Json<DeploymentDetail>, ApiError> {
    let deployment = deployment(&state, &caller, deployment_id).await?;
    let base = format!("/v1/deployments/{deployment_id}");
    let ran = matches!(deployment.status.as_str(), "applied" | "failed") && deployment.started_at.is_some();
    let links = DeploymentLinks {
        plan: format!("{base}/plan"),
        output: ran.then(|| format!("{base}/output")),
        state: deployment.state_version.map(|_| format!("{base}/state")),
    };
    Ok(axum::Json(DeploymentDetail { deployment, links }))
}

/// The object at `key`, served as `content_type`; `what` names it when it is missing.
async fn object_of(state: &AppState, key: ObjectKey, content_type: &'static str, what: &str) -> Result<impl IntoResponse, ApiError> {
    match state.objects.get(&key).await {
        Ok(bytes) => Ok(([(header::CONTENT_TYPE, content_type)], bytes)),
        Err(ObjectError::NotFound(_)) => Err(ApiError::NotFound(what.into())),
        Err(error) => Err(ApiError::Unavailable(error.to_string())),
    }
}

const TEXT: &str = "text/plain; charset=utf-8";

/// The plan's whole output, as the CLI printed it.
#[utoipa::path(
    get, path = "/v1/deployments/{deployment_id}/plan", tag = "deployments", params(("deployment_id" = Uuid, Path)),
    responses(
        (status = 200, description = "The plan's output", content_type = "text/plain", body = String),
        (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem), (status = 503, body = Problem)
    )
)]
pub async fn deployment_plan_output(
    State(state): State<AppState>,
    caller: Caller,
    Path(deployment_id): Path<Uuid>,
) -> Result<impl IntoResponse, ApiError> {
    let deployment = deployment(&state, &caller, deployment_id).await?;
    let key = ObjectKey::deployment(caller.org_id().0, deployment.session_id, deployment_id, "output.txt");
    object_of(&state, key, TEXT, "plan output").await
}

/// The apply's whole output, secrets redacted.
#[utoipa::path(
    get, path = "/v1/deployments/{deployment_id}/output", tag = "deployments", params(("deployment_id" = Uuid, Path)),
    responses(
        (status = 200, description = "The apply's output", content_type = "text/plain", body = String),
        (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem), (status = 503, body = Problem)
    )
)]
pub async fn deployment_apply_output(
    State(state): State<AppState>,
    caller: Caller,
    Path(deployment_id): Path<Uuid>,
) -> Result<impl IntoResponse, ApiError> {
    let deployment = deployment(&state, &caller, deployment_id).await?;
    let key = ObjectKey::deployment(caller.org_id().0, deployment.session_id, deployment_id, "apply.txt");
    object_of(&state, key, TEXT, "apply output").await
}

/// The state version the deployment left.
#[utoipa::path(
    get, path = "/v1/deployments/{deployment_id}/state", tag = "deployments", params(("deployment_id" = Uuid, Path)),
    responses(
        (status = 200, description = "The Terraform state", content_type = "application/json", body = Object),
        (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem), (status = 503, body = Problem)
    )
)]
pub async fn deployment_state(
    State(state): State<AppState>,
    caller: Caller,
    Path(deployment_id): Path<Uuid>,
) -> Result<impl IntoResponse, ApiError> {
    let deployment = deployment(&state, &caller, deployment_id).await?;
    let version = deployment.state_version.ok_or_else(|| ApiError::NotFound("state".into()))?;
    let key = ObjectKey::workspace_state(caller.org_id().0, deployment.session_id, version as u32);
    object_of(&state, key, "application/json", "state").await
}
