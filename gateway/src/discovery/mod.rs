//! Service discovery: an editor asks for a scan of the organisation's clouds; anyone in the
//! organisation reads the graph it built: services by kind, provider or tag, one service with
//! its neighbours and the evidence of each dependency, and a service's blast radius (what
//! depends on it, grouped by distance), from the `graph_nodes` and `graph_edges` read models.

use aurora_domain::discovery::{DiscoveryCommand, Estate};
use aurora_events::discovery::DiscoveryEvent;
use aurora_events::identity::Role::{Editor, Viewer};
use aurora_events::EventPayload;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::routes;
use uuid::Uuid;

use crate::auth::Access::Member;
use crate::auth::Caller;
use crate::commands::command_meta;
use crate::extract::{Path, Query};
use crate::problem::{ApiError, Problem};
use crate::routes::Routes;
use crate::AppState;

/// Registers the discovery routes.
pub fn register(routes: &mut Routes) {
    routes.add(Member(Editor), routes!(request_scan));
    routes.add(Member(Viewer), routes!(list_scans));
    routes.add(Member(Viewer), routes!(get_scan));
    routes.add(Member(Viewer), routes!(list_services));
    routes.add(Member(Viewer), routes!(get_service));
    routes.add(Member(Viewer), routes!(blast_radius));
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ScanAccepted {
    pub scan_id: Uuid,
}

/// Asks for a scan of every connected cloud now. One scan of an organisation runs at a time: `409`
/// while one runs.
#[utoipa::path(
    post, path = "/v1/discovery/scans", tag = "discovery",
    responses((status = 202, body = ScanAccepted), (status = 409, body = Problem), (status = 422, body = Problem))
)]
pub async fn request_scan(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
) -> Result<(StatusCode, axum::Json<ScanAccepted>), ApiError> {
    let org = caller.org_id().0;
    let meta = command_meta(&state, &caller, &headers, "discovery.scan", &org).await?;
    let scan_id = Uuid::new_v5(&meta.command_id, b"scan");
    state.commands.handle::<Estate>(&DiscoveryEvent::stream_of(org), DiscoveryCommand::Request { scan_id }, &meta, None).await?;
    aurora_adapters::wakeup::announce_appended(&state.pool).await;
    Ok((StatusCode::ACCEPTED, axum::Json(ScanAccepted { scan_id })))
}

#[derive(Debug, Serialize, Deserialize, ToSchema, sqlx::FromRow)]
pub struct ScanView {
    pub scan_id: Uuid,
    /// `requested`, `running`, `completed` or `failed`.
    pub status: String,
    pub requested_by: String,
    pub providers: Vec<String>,
    /// Resources and dependencies listed; discovered, changed and gone since the scan before.
    #[schema(value_type = Option<Object>)]
    pub counts: Option<sqlx::types::Json<serde_json::Value>>,
    /// Providers that could not be listed, and why.
    #[schema(value_type = Vec<Object>)]
    pub failures: sqlx::types::Json<serde_json::Value>,
    pub requested_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
}

const SCAN_COLUMNS: &str = "scan_id, status, requested_by, providers, counts, failures, requested_at, started_at, finished_at";

/// The organisation's latest 50 scans, newest first.
#[utoipa::path(get, path = "/v1/discovery/scans", tag = "discovery", responses((status = 200, body = Vec<ScanView>), (status = 401, body = Problem)))]
pub async fn list_scans(State(state): State<AppState>, caller: Caller) -> Result<axum::Json<Vec<ScanView>>, ApiError> {
    let scans = sqlx::query_as(&format!("SELECT {SCAN_COLUMNS} FROM discovery_scans WHERE org_id = $1 ORDER BY requested_at DESC LIMIT 50"))
        .bind(caller.org_id().0)
        .fetch_all(&mut *caller.read_models(&state.pool).await?)
        .await?;
    Ok(axum::Json(scans))
}

/// One scan.
#[utoipa::path(
    get, path = "/v1/discovery/scans/{scan_id}", tag = "discovery", params(("scan_id" = Uuid, Path)),
    responses((status = 200, body = ScanView), (status = 401, body = Problem), (status = 404, body = Problem))
)]
pub async fn get_scan(State(state): State<AppState>, caller: Caller, Path(scan_id): Path<Uuid>) -> Result<axum::Json<ScanView>, ApiError> {
    let scan = sqlx::query_as(&format!("SELECT {SCAN_COLUMNS} FROM discovery_scans WHERE org_id = $1 AND scan_id = $2"))
        .bind(caller.org_id().0)
        .bind(scan_id)
        .fetch_optional(&mut *caller.read_models(&state.pool).await?)
        .await?
        .ok_or_else(|| ApiError::NotFound("scan".into()))?;
    Ok(axum::Json(scan))
}

#[derive(Debug, Serialize, Deserialize, ToSchema, sqlx::FromRow)]
pub struct ServiceView {
    pub node_id: Uuid,
    /// The provider's own id, qualified (`aws:<account>:<region>:instance/i-0abc`).
    pub resource_id: String,
    pub provider: String,
    /// `vm`, `kubernetes_cluster`, `database`, `serverless_function`, `load_balancer`, `queue`,
    /// `bucket`, `network`, `subnet`, `firewall`.
    pub kind: String,
    pub provider_type: String,
    pub name: String,
    pub region: Option<String>,
    pub account: Option<String>,
    #[schema(value_type = Object)]
    pub tags: sqlx::types::Json<serde_json::Value>,
    pub endpoint: Option<String>,
    pub first_seen: DateTime<Utc>,
    pub last_changed: DateTime<Utc>,
}

const SERVICE_COLUMNS: &str =
    "node_id, resource_id, provider, kind, provider_type, name, region, account, tags, endpoint, first_seen, last_changed";

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ServicesQuery {
    pub kind: Option<String>,
    pub provider: Option<String>,
    /// `key=value`: only services with that tag.
    pub tag: Option<String>,
    /// 1 to 1000, default 200.
    pub limit: Option<i64>,
}

/// The organisation's services (resources not gone), by kind and name.
#[utoipa::path(
    get, path = "/v1/discovery/services", tag = "discovery", params(ServicesQuery),
    responses((status = 200, body = Vec<ServiceView>), (status = 400, body = Problem), (status = 401, body = Problem))
)]
pub async fn list_services(
    State(state): State<AppState>,
    caller: Caller,
    Query(query): Query<ServicesQuery>,
) -> Result<axum::Json<Vec<ServiceView>>, ApiError> {
    let limit = query.limit.unwrap_or(200);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::BadRequest { detail: "limit must be 1 to 1000".into(), field: Some("limit".into()) });
    }
    let tag = match query.tag.as_deref() {
        None => None,
        Some(tag) => {
            let (key, value) = tag.split_once('=').ok_or_else(|| ApiError::BadRequest {
                detail: "tag must be key=value".into(),
                field: Some("tag".into()),
            })?;
            Some(serde_json::json!({ key: value }))
        }
    };
    for (field, value) in [("kind", &query.kind), ("provider", &query.provider)] {
        if value.as_ref().is_some_and(|value| value.chars().count() > 100) {
            return Err(ApiError::BadRequest { detail: format!("{field} must be at most 100 characters"), field: Some(field.into()) });
        }
    }
    let services = sqlx::query_as(&format!(
        "SELECT {SERVICE_COLUMNS} FROM graph_nodes WHERE org_id = $1 AND gone_at IS NULL \
         AND ($2::text IS NULL OR kind = $2) AND ($3::text IS NULL OR provider = $3) AND ($4::jsonb IS NULL OR tags @> $4) \
         ORDER BY kind, name, node_id LIMIT $5"
    ))
    .bind(caller.org_id().0)
    .bind(&query.kind)
    .bind(&query.provider)
    .bind(tag)
    .bind(limit)
    .fetch_all(&mut *caller.read_models(&state.pool).await?)
    .await?;
    Ok(axum::Json(services))
}

#[derive(Debug, Serialize, Deserialize, ToSchema, sqlx::FromRow)]
pub struct Neighbour {
    pub node_id: Uuid,
    pub name: String,
    pub kind: String,
    /// `reaches`, `member_of`, `protected_by`, `targets`, `triggers`, `uses`.
    pub dependency: String,
    pub evidence: String,
    pub confidence: f64,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ServiceDetail {
    #[serde(flatten)]
    pub service: ServiceView,
    /// What this service depends on (its edges out).
    pub depends_on: Vec<Neighbour>,
    /// What depends on it (edges in).
    pub depended_on_by: Vec<Neighbour>,
}

async fn service(state: &AppState, caller: &Caller, node_id: Uuid) -> Result<ServiceView, ApiError> {
    sqlx::query_as(&format!("SELECT {SERVICE_COLUMNS} FROM graph_nodes WHERE org_id = $1 AND node_id = $2 AND gone_at IS NULL"))
        .bind(caller.org_id().0)
        .bind(node_id)
        .fetch_optional(&mut *caller.read_models(&state.pool).await?)
        .await?
        .ok_or_else(|| ApiError::NotFound("service".into()))
}

/// One service with its neighbours and the evidence of each dependency.
#[utoipa::path(
    get, path = "/v1/discovery/services/{node_id}", tag = "discovery", params(("node_id" = Uuid, Path)),
    responses((status = 200, body = ServiceDetail), (status = 401, body = Problem), (status = 404, body = Problem))
)]
pub async fn get_service(State(state): State<AppState>, caller: Caller, Path(node_id): Path<Uuid>) -> Result<axum::Json<ServiceDetail>, ApiError> {
    let service = service(&state, &caller, node_id).await?;
    let neighbours = |near: &str, far: &str| {
        format!(
            "SELECT n.node_id, n.name, n.kind, e.kind AS dependency, e.evidence, e.confidence FROM graph_edges e \
             JOIN graph_nodes n ON n.node_id = e.{far} AND n.gone_at IS NULL \
             WHERE e.org_id = $1 AND e.{near} = $2 AND e.gone_at IS NULL ORDER BY e.kind, n.name"
        )
    };
    let mut read = caller.read_models(&state.pool).await?;
    let depends_on =
        sqlx::query_as(&neighbours("from_node", "to_node")).bind(caller.org_id().0).bind(node_id).fetch_all(&mut *read).await?;
    let depended_on_by =
        sqlx::query_as(&neighbours("to_node", "from_node")).bind(caller.org_id().0).bind(node_id).fetch_all(&mut *read).await?;
    Ok(axum::Json(ServiceDetail { service, depends_on, depended_on_by }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct BlastQuery {
    /// How far to follow dependencies, 1 to 10 (default 5).
    pub depth: Option<i32>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema, sqlx::FromRow)]
pub struct Affected {
    pub node_id: Uuid,
    pub name: String,
    pub kind: String,
    /// Dependencies between it and the service.
    pub distance: i32,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct BlastRadius {
    pub node_id: Uuid,
    /// Everything that depends on the service, directly or not, nearest first.
    pub affected: Vec<Affected>,
}

/// What breaks when the service does: everything that depends on it, grouped by distance.
#[utoipa::path(
    get, path = "/v1/discovery/services/{node_id}/blast-radius", tag = "discovery", params(("node_id" = Uuid, Path), BlastQuery),
    responses((status = 200, body = BlastRadius), (status = 400, body = Problem), (status = 401, body = Problem), (status = 404, body = Problem))
)]
pub async fn blast_radius(
    State(state): State<AppState>,
    caller: Caller,
    Path(node_id): Path<Uuid>,
    Query(query): Query<BlastQuery>,
) -> Result<axum::Json<BlastRadius>, ApiError> {
    let depth = query.depth.unwrap_or(5);
    if !(1..=10).contains(&depth) {
        return Err(ApiError::BadRequest { detail: "depth must be 1 to 10".into(), field: Some("depth".into()) });
    }
    service(&state, &caller, node_id).await?;
    let affected = sqlx::query_as(
        "WITH RECURSIVE reached(node_id, distance, path) AS ( \
             SELECT e.from_node, 1, ARRAY[$2::uuid, e.from_node] FROM graph_edges e \
             WHERE e.org_id = $1 AND e.to_node = $2 AND e.gone_at IS NULL \
             UNION ALL \
             SELECT e.from_node, r.distance + 1, r.path || e.from_node FROM graph_edges e JOIN reached r ON e.to_node = r.node_id \
             WHERE e.org_id = $1 AND e.gone_at IS NULL AND r.distance < $3 AND NOT e.from_node = ANY(r.path) \
         ) \
         SELECT n.node_id, n.name, n.kind, min(r.distance) AS distance FROM reached r \
         JOIN graph_nodes n ON n.node_id = r.node_id AND n.gone_at IS NULL \
         GROUP BY n.node_id, n.name, n.kind ORDER BY distance, n.name",
    )
    .bind(caller.org_id().0)
    .bind(node_id)
    .bind(depth)
    .fetch_all(&mut *caller.read_models(&state.pool).await?)
    .await?;
    Ok(axum::Json(BlastRadius { node_id, affected }))
}
