//! Service discovery: an editor asks for a scan of the organisation's clouds; anyone in the
//! organisation reads the graph it built: services by kind, provider or tag, one service with
//! its neighbours and the evidence of each dependency, what it depends on and what depends on
//! it to a depth, and its blast radius (what depends on it, grouped by distance), from the `graph_nodes` and `graph_edges` read models.

use aurora_adapters::graph::{AsOf, BlastRadius, Dependencies, DependencyPath, Direction, GraphSummary, ServiceDetail, ServiceFilter, ServiceView};
use aurora_domain::discovery::{DiscoveryCommand, Estate};
use aurora_events::discovery::DiscoveryEvent;
use aurora_events::identity::Role::{Admin, Editor, Viewer};
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
use crate::extract::{Json, Path, Query};
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
    routes.add(Member(Viewer), routes!(dependencies));
    routes.add(Member(Viewer), routes!(dependency_path));
    routes.add(Member(Viewer), routes!(summary));
    routes.add(Member(Viewer), routes!(get_schedule));
    routes.add(Member(Admin), routes!(set_schedule));
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

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ServicesQuery {
    pub kind: Option<String>,
    pub provider: Option<String>,
    /// `key=value`: only services with that tag.
    pub tag: Option<String>,
    /// 1 to 1000, default 200.
    pub limit: Option<i64>,
    /// Read the graph as it was at this time (RFC 3339), instead of as it is.
    pub at: Option<DateTime<Utc>>,
}

/// The graph a query names with `at`: as it was then, or as it is.
fn as_of(at: Option<DateTime<Utc>>) -> AsOf {
    at.map_or(AsOf::Now, AsOf::At)
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct AtQuery {
    /// Read the graph as it was at this time (RFC 3339), instead of as it is.
    pub at: Option<DateTime<Utc>>,
}

/// The organisation's services (resources not gone), by kind and name.
#[utoipa::path(
    get, path = "/v1/discovery/services", tag = "discovery", params(ServicesQuery),
    responses((status = 200, body = Vec<ServiceView>), (status = 400, body = Problem), (status = 401, body = Problem), (status = 503, body = Problem))
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
    let filter = ServiceFilter { kind: query.kind, provider: query.provider, tag, name: None, limit };
    let services = state.graph.reader(&mut *caller.read_models(&state.pool).await?).services(caller.org_id().0, &filter, as_of(query.at)).await?;
    Ok(axum::Json(services))
}

async fn service(state: &AppState, caller: &Caller, node_id: Uuid, as_of: AsOf) -> Result<ServiceView, ApiError> {
    state.graph.reader(&mut *caller.read_models(&state.pool).await?).service(caller.org_id().0, node_id, as_of)
        .await?
        .ok_or_else(|| ApiError::NotFound("service".into()))
}

/// One service with its neighbours and the evidence of each dependency.
#[utoipa::path(
    get, path = "/v1/discovery/services/{node_id}", tag = "discovery", params(("node_id" = Uuid, Path), AtQuery),
    responses((status = 200, body = ServiceDetail), (status = 400, body = Problem), (status = 401, body = Problem), (status = 503, body = Problem), (status = 404, body = Problem))
)]
pub async fn get_service(
    State(state): State<AppState>,
    caller: Caller,
    Path(node_id): Path<Uuid>,
    Query(query): Query<AtQuery>,
) -> Result<axum::Json<ServiceDetail>, ApiError> {
    let as_of = as_of(query.at);
    let service = service(&state, &caller, node_id, as_of).await?;
    let (depends_on, depended_on_by) =
        state.graph.reader(&mut *caller.read_models(&state.pool).await?).neighbours(caller.org_id().0, node_id, as_of).await?;
    Ok(axum::Json(ServiceDetail { service, depends_on, depended_on_by }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct BlastQuery {
    /// How far to follow dependencies, 1 to 10 (default 5).
    pub depth: Option<i32>,
    /// Read the graph as it was at this time (RFC 3339), instead of as it is.
    pub at: Option<DateTime<Utc>>,
}

impl BlastQuery {
    fn depth(&self) -> Result<i32, ApiError> {
        let depth = self.depth.unwrap_or(5);
        if !(1..=10).contains(&depth) {
            return Err(ApiError::BadRequest { detail: "depth must be 1 to 10".into(), field: Some("depth".into()) });
        }
        Ok(depth)
    }
}

/// What breaks when the service does: everything that depends on it, grouped by distance.
#[utoipa::path(
    get, path = "/v1/discovery/services/{node_id}/blast-radius", tag = "discovery", params(("node_id" = Uuid, Path), BlastQuery),
    responses((status = 200, body = BlastRadius), (status = 400, body = Problem), (status = 401, body = Problem), (status = 503, body = Problem), (status = 404, body = Problem))
)]
pub async fn blast_radius(
    State(state): State<AppState>,
    caller: Caller,
    Path(node_id): Path<Uuid>,
    Query(query): Query<BlastQuery>,
) -> Result<axum::Json<BlastRadius>, ApiError> {
    let (depth, as_of) = (query.depth()?, as_of(query.at));
    service(&state, &caller, node_id, as_of).await?;
    let affected =
        state.graph.reader(&mut *caller.read_models(&state.pool).await?).reach(caller.org_id().0, node_id, Direction::Downstream, depth, as_of).await?;
    Ok(axum::Json(BlastRadius { node_id, affected }))
}

/// What the service depends on (upstream) and what depends on it (downstream), directly or
/// not, to a depth, each nearest first.
#[utoipa::path(
    get, path = "/v1/discovery/services/{node_id}/dependencies", tag = "discovery", params(("node_id" = Uuid, Path), BlastQuery),
    responses((status = 200, body = Dependencies), (status = 400, body = Problem), (status = 401, body = Problem), (status = 503, body = Problem), (status = 404, body = Problem))
)]
pub async fn dependencies(
    State(state): State<AppState>,
    caller: Caller,
    Path(node_id): Path<Uuid>,
    Query(query): Query<BlastQuery>,
) -> Result<axum::Json<Dependencies>, ApiError> {
    let (depth, as_of) = (query.depth()?, as_of(query.at));
    service(&state, &caller, node_id, as_of).await?;
    let mut read = caller.read_models(&state.pool).await?;
    let (mut graph, org) = (state.graph.reader(&mut read), caller.org_id().0);
    let upstream = graph.reach(org, node_id, Direction::Upstream, depth, as_of).await?;
    let downstream = graph.reach(org, node_id, Direction::Downstream, depth, as_of).await?;
    Ok(axum::Json(Dependencies { node_id, depth, upstream, downstream }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct PathQuery {
    /// The service the path starts at (node id).
    pub from: Uuid,
    /// The service it ends at (node id).
    pub to: Uuid,
    /// Longest path followed, 1 to 8 dependencies (default 6).
    pub depth: Option<i32>,
    /// Read the graph as it was at this time (RFC 3339), instead of as it is.
    pub at: Option<DateTime<Utc>>,
}

/// The shortest chain of dependencies from one service to another (`404` when there is none
/// within the depth).
#[utoipa::path(
    get, path = "/v1/discovery/path", tag = "discovery", params(PathQuery),
    responses((status = 200, body = DependencyPath), (status = 400, body = Problem), (status = 401, body = Problem), (status = 503, body = Problem), (status = 404, body = Problem))
)]
pub async fn dependency_path(
    State(state): State<AppState>,
    caller: Caller,
    Query(query): Query<PathQuery>,
) -> Result<axum::Json<DependencyPath>, ApiError> {
    let depth = query.depth.unwrap_or(6);
    if !(1..=8).contains(&depth) {
        return Err(ApiError::BadRequest { detail: "depth must be 1 to 8".into(), field: Some("depth".into()) });
    }
    let as_of = as_of(query.at);
    service(&state, &caller, query.from, as_of).await?;
    service(&state, &caller, query.to, as_of).await?;
    state.graph.reader(&mut *caller.read_models(&state.pool).await?).path(caller.org_id().0, query.from, query.to, depth, as_of)
        .await?
        .map(axum::Json)
        .ok_or_else(|| ApiError::NotFound("path".into()))
}

/// The estate in brief, as the latest completed scan left it: services by provider and kind,
/// regions, how many the latest scans missed, and the ten most depended on (all zero and empty
/// before a scan completes).
#[utoipa::path(
    get, path = "/v1/discovery/summary", tag = "discovery",
    responses((status = 200, body = GraphSummary), (status = 401, body = Problem), (status = 503, body = Problem))
)]
pub async fn summary(State(state): State<AppState>, caller: Caller) -> Result<axum::Json<GraphSummary>, ApiError> {
    let found = state.graph.reader(&mut *caller.read_models(&state.pool).await?).summary(caller.org_id().0).await?;
    Ok(axum::Json(found.unwrap_or_default()))
}

/// How often the organisation's clouds are scanned.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Schedule {
    /// Minutes from one scan's end to the next.
    pub interval_minutes: u32,
    /// Whether that is the deployment's default (no admin chose one).
    pub default: bool,
    /// When the next timed scan is due; none while a scan runs, or with no cloud connected.
    pub next_scan_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetSchedule {
    /// Minutes between scans, 15 to 10 080 (a week); `null` for the deployment's default.
    pub interval_minutes: Option<u32>,
}

fn default_minutes(state: &AppState) -> u32 {
    u32::try_from(state.config.discovery.interval.as_secs().div_ceil(60)).unwrap_or(u32::MAX)
}

/// How often the organisation's clouds are scanned, and when the next scan is due.
#[utoipa::path(
    get, path = "/v1/discovery/schedule", tag = "discovery",
    responses((status = 200, body = Schedule), (status = 401, body = Problem))
)]
pub async fn get_schedule(State(state): State<AppState>, caller: Caller) -> Result<axum::Json<Schedule>, ApiError> {
    let org = caller.org_id().0;
    let chosen: Option<Option<i32>> = sqlx::query_scalar("SELECT interval_minutes FROM discovery_schedules WHERE org_id = $1")
        .bind(org)
        .fetch_optional(&mut *caller.read_models(&state.pool).await?)
        .await?;
    let chosen = chosen.flatten().and_then(|minutes| u32::try_from(minutes).ok());
    let stream = DiscoveryEvent::stream_of(org).to_string();
    let next_scan_at = aurora_adapters::timers::pending(&state.pool, aurora_events::discovery::SCAN_TIMER, &stream).await?;
    Ok(axum::Json(Schedule { interval_minutes: chosen.unwrap_or_else(|| default_minutes(&state)), default: chosen.is_none(), next_scan_at }))
}

/// Sets how often the organisation's clouds are scanned. The scan that waits moves to the new
/// interval from now; `next_scan_at` shows it once the processor has moved it.
#[utoipa::path(
    put, path = "/v1/discovery/schedule", tag = "discovery", request_body = SetSchedule,
    responses(
        (status = 202, body = Schedule), (status = 400, body = Problem, description = "Malformed, or an interval outside 15 to 10 080 minutes"),
        (status = 403, body = Problem)
    )
)]
pub async fn set_schedule(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Json(request): Json<SetSchedule>,
) -> Result<(StatusCode, axum::Json<Schedule>), ApiError> {
    let org = caller.org_id().0;
    let meta = command_meta(&state, &caller, &headers, "discovery.schedule", &request.interval_minutes).await?;
    let command = DiscoveryCommand::Schedule { interval_minutes: request.interval_minutes };
    state.commands.handle::<Estate>(&DiscoveryEvent::stream_of(org), command, &meta, None).await?;
    aurora_adapters::wakeup::announce_appended(&state.pool).await;
    let schedule = Schedule {
        interval_minutes: request.interval_minutes.unwrap_or_else(|| default_minutes(&state)),
        default: request.interval_minutes.is_none(),
        next_scan_at: None,
    };
    Ok((StatusCode::ACCEPTED, axum::Json(schedule)))
}
