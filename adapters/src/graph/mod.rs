//! The graph port: the organisation's discovered estate as the discovery projection keeps it in
//! Postgres (`graph_nodes`, `graph_edges`), and the queries the gateway and the agent's tools
//! ask of it: services by kind, provider or tag, one service's neighbours with the evidence of
//! each dependency, and the services upstream or downstream of one (its blast radius) by
//! recursive SQL. Every query runs in the caller's tenant transaction and names the
//! organisation too.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use utoipa::ToSchema;
use uuid::Uuid;

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
    /// `present` (listed by the latest scan of its provider), `missing` (not listed since
    /// `last_seen`) or `stale` (not listed for the stale threshold, 7 days by default).
    pub status: String,
    /// When a scan last listed it, while it is missing or stale.
    pub last_seen: Option<DateTime<Utc>>,
}

const SERVICE_COLUMNS: &str =
    "node_id, resource_id, provider, kind, provider_type, name, region, account, tags, endpoint, first_seen, last_changed, status, last_seen";

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

#[derive(Debug, Serialize, Deserialize, ToSchema, sqlx::FromRow)]
pub struct Affected {
    pub node_id: Uuid,
    pub name: String,
    pub kind: String,
    /// Dependencies between it and the service.
    pub distance: i32,
}

/// What a service depends on and what depends on it, to a depth.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Dependencies {
    pub node_id: Uuid,
    pub depth: i32,
    /// What it depends on, directly or not, nearest first.
    pub upstream: Vec<Affected>,
    /// What depends on it, directly or not, nearest first.
    pub downstream: Vec<Affected>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct BlastRadius {
    pub node_id: Uuid,
    /// Everything that depends on the service, directly or not, nearest first.
    pub affected: Vec<Affected>,
}

/// Which services to list.
#[derive(Debug, Clone, Default)]
pub struct ServiceFilter {
    pub kind: Option<String>,
    pub provider: Option<String>,
    /// `{key: value}`: only services with that tag.
    pub tag: Option<serde_json::Value>,
    /// Names containing this, case-insensitively.
    pub name: Option<String>,
    pub limit: i64,
}

/// The organisation's services (resources not gone), by kind and name; with a name, those named
/// exactly so (whatever the case) first.
pub async fn services(connection: &mut PgConnection, org_id: Uuid, filter: &ServiceFilter) -> Result<Vec<ServiceView>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {SERVICE_COLUMNS} FROM graph_nodes WHERE org_id = $1 AND gone_at IS NULL \
         AND ($2::text IS NULL OR kind = $2) AND ($3::text IS NULL OR provider = $3) AND ($4::jsonb IS NULL OR tags @> $4) \
         AND ($5::text IS NULL OR strpos(lower(name), lower($5)) > 0) \
         ORDER BY lower(name) = lower($5) IS TRUE DESC, kind, name, node_id LIMIT $6"
    ))
    .bind(org_id)
    .bind(&filter.kind)
    .bind(&filter.provider)
    .bind(&filter.tag)
    .bind(&filter.name)
    .bind(filter.limit)
    .fetch_all(connection)
    .await
}

/// One service, unless it is gone.
pub async fn service(connection: &mut PgConnection, org_id: Uuid, node_id: Uuid) -> Result<Option<ServiceView>, sqlx::Error> {
    sqlx::query_as(&format!("SELECT {SERVICE_COLUMNS} FROM graph_nodes WHERE org_id = $1 AND node_id = $2 AND gone_at IS NULL"))
        .bind(org_id)
        .bind(node_id)
        .fetch_optional(connection)
        .await
}

/// What the service depends on (its edges out) and what depends on it (its edges in).
pub async fn neighbours(
    connection: &mut PgConnection,
    org_id: Uuid,
    node_id: Uuid,
) -> Result<(Vec<Neighbour>, Vec<Neighbour>), sqlx::Error> {
    let query = |near: &str, far: &str| {
        format!(
            "SELECT n.node_id, n.name, n.kind, e.kind AS dependency, e.evidence, e.confidence FROM graph_edges e \
             JOIN graph_nodes n ON n.node_id = e.{far} AND n.gone_at IS NULL \
             WHERE e.org_id = $1 AND e.{near} = $2 AND e.gone_at IS NULL ORDER BY e.kind, n.name"
        )
    };
    let out = sqlx::query_as(&query("from_node", "to_node")).bind(org_id).bind(node_id).fetch_all(&mut *connection).await?;
    let inward = sqlx::query_as(&query("to_node", "from_node")).bind(org_id).bind(node_id).fetch_all(&mut *connection).await?;
    Ok((out, inward))
}

/// Which way dependencies are followed from a service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// What the service depends on, and what that depends on (its edges out).
    Upstream,
    /// What depends on the service, directly or not (its edges in): what breaks when it does,
    /// its blast radius.
    Downstream,
}

/// The services `depth` dependencies or fewer from `node_id` in `direction`, nearest first, each
/// at its shortest distance. A breadth-first walk over (service, distance) pairs that `UNION`
/// keeps unique, so it stays linear in the graph's size however many paths join; no path is
/// carried.
pub async fn reach(
    connection: &mut PgConnection,
    org_id: Uuid,
    node_id: Uuid,
    direction: Direction,
    depth: i32,
) -> Result<Vec<Affected>, sqlx::Error> {
    let (near, far) = match direction {
        Direction::Upstream => ("from_node", "to_node"),
        Direction::Downstream => ("to_node", "from_node"),
    };
    sqlx::query_as(&format!(
        "WITH RECURSIVE reached(node_id, distance) AS ( \
             SELECT e.{far}, 1 FROM graph_edges e WHERE e.org_id = $1 AND e.{near} = $2 AND e.gone_at IS NULL \
             UNION \
             SELECT e.{far}, r.distance + 1 FROM reached r JOIN graph_edges e ON e.{near} = r.node_id \
             WHERE e.org_id = $1 AND e.gone_at IS NULL AND r.distance < $3 \
         ) \
         SELECT n.node_id, n.name, n.kind, min(r.distance) AS distance FROM reached r \
         JOIN graph_nodes n ON n.node_id = r.node_id AND n.org_id = $1 AND n.gone_at IS NULL \
         WHERE r.node_id <> $2 \
         GROUP BY n.node_id, n.name, n.kind ORDER BY distance, n.name"
    ))
    .bind(org_id)
    .bind(node_id)
    .bind(depth)
    .fetch_all(connection)
    .await
}

/// One service on a path.
#[derive(Debug, Serialize, Deserialize, ToSchema, sqlx::FromRow)]
pub struct PathStep {
    pub node_id: Uuid,
    pub name: String,
    pub kind: String,
}

/// The shortest chain of dependencies from one service to another.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DependencyPath {
    /// The services from the first to the last.
    pub services: Vec<PathStep>,
    /// The kind of each dependency between consecutive services.
    pub dependencies: Vec<String>,
}

/// The shortest path of dependencies from `from` to `to`, at most `depth` long, if there is one.
pub async fn path(
    connection: &mut PgConnection,
    org_id: Uuid,
    from: Uuid,
    to: Uuid,
    depth: i32,
) -> Result<Option<DependencyPath>, sqlx::Error> {
    let found: Option<(Vec<Uuid>, Vec<String>)> = sqlx::query_as(
        "WITH RECURSIVE walk(node_id, path, kinds, depth) AS ( \
             SELECT $2::uuid, ARRAY[$2::uuid], ARRAY[]::text[], 0 \
             UNION ALL \
             SELECT e.to_node, w.path || e.to_node, w.kinds || e.kind, w.depth + 1 FROM graph_edges e JOIN walk w ON e.from_node = w.node_id \
             WHERE e.org_id = $1 AND e.gone_at IS NULL AND w.depth < $4 AND w.node_id <> $3 AND NOT e.to_node = ANY(w.path) \
         ) \
         SELECT path, kinds FROM walk WHERE node_id = $3 AND depth > 0 ORDER BY depth LIMIT 1",
    )
    .bind(org_id)
    .bind(from)
    .bind(to)
    .bind(depth)
    .fetch_optional(&mut *connection)
    .await?;
    let Some((nodes, dependencies)) = found else { return Ok(None) };
    let named: Vec<PathStep> = sqlx::query_as("SELECT node_id, name, kind FROM graph_nodes WHERE org_id = $1 AND node_id = ANY($2)")
        .bind(org_id)
        .bind(&nodes)
        .fetch_all(&mut *connection)
        .await?;
    let mut services = Vec::new();
    for node in nodes {
        match named.iter().find(|step| step.node_id == node) {
            Some(step) => services.push(PathStep { node_id: step.node_id, name: step.name.clone(), kind: step.kind.clone() }),
            // A dependency on a resource no scan listed (another account's): no path through it.
            None => return Ok(None),
        }
    }
    Ok(Some(DependencyPath { services, dependencies }))
}
