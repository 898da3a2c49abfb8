//! The graph in the read-model database: `graph_nodes` and `graph_edges` as the discovery
//! projection keeps them, their versions (`graph_node_versions`, `graph_edge_versions`) for the
//! past, and `graph_summaries`, queried with recursive SQL. Every query runs in the caller's tenant
//! transaction and names the organisation too.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use super::{Affected, AsOf, Direction, GraphSummary, Neighbour, ServiceFilter, ServiceView};

/// The services of this graph, as a `FROM` item with the columns of `graph_nodes`.
fn nodes(as_of: AsOf) -> String {
    match as_of {
        AsOf::Now => "(SELECT * FROM graph_nodes WHERE gone_at IS NULL)".into(),
        AsOf::At(at) => format!(
            "(SELECT node_id, org_id, resource_id, provider, kind, provider_type, name, region, account, tags, endpoint, first_seen, \
                 valid_from AS last_changed, 'present'::text AS status, NULL::timestamptz AS last_seen \
             FROM graph_node_versions WHERE {})",
            valid_at(at)
        ),
    }
}

/// The dependencies of this graph, as a `FROM` item.
fn edges(as_of: AsOf) -> String {
    let columns = "org_id, from_node, to_node, kind, evidence, confidence";
    match as_of {
        AsOf::Now => format!("(SELECT {columns} FROM graph_edges WHERE gone_at IS NULL)"),
        AsOf::At(at) => format!("(SELECT {columns} FROM graph_edge_versions WHERE {})", valid_at(at)),
    }
}

/// The versions valid at `at`. The time is written into the statement from the typed value,
/// never from text a caller sent, so that one `FROM` item serves every query's parameters.
fn valid_at(at: DateTime<Utc>) -> String {
    let at = at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    format!("valid_from <= '{at}'::timestamptz AND (valid_to IS NULL OR valid_to > '{at}'::timestamptz)")
}

const SERVICE_COLUMNS: &str =
    "node_id, resource_id, provider, kind, provider_type, name, region, account, tags, endpoint, first_seen, last_changed, status, last_seen";

/// The organisation's services (resources not gone), by kind and name; with a name, those named
/// exactly so (whatever the case) first.
pub async fn services(
    connection: &mut PgConnection,
    org_id: Uuid,
    filter: &ServiceFilter,
    as_of: AsOf,
) -> Result<Vec<ServiceView>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {SERVICE_COLUMNS} FROM {} AS n WHERE org_id = $1 \
         AND ($2::text IS NULL OR kind = $2) AND ($3::text IS NULL OR provider = $3) AND ($4::jsonb IS NULL OR tags @> $4) \
         AND ($5::text IS NULL OR strpos(lower(name), lower($5)) > 0) \
         ORDER BY lower(name) = lower($5) IS TRUE DESC, kind, name, node_id LIMIT $6",
        nodes(as_of)
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

/// One service, unless it is gone (or was not there at `as_of`).
pub async fn service(connection: &mut PgConnection, org_id: Uuid, node_id: Uuid, as_of: AsOf) -> Result<Option<ServiceView>, sqlx::Error> {
    sqlx::query_as(&format!("SELECT {SERVICE_COLUMNS} FROM {} AS n WHERE org_id = $1 AND node_id = $2", nodes(as_of)))
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
    as_of: AsOf,
) -> Result<(Vec<Neighbour>, Vec<Neighbour>), sqlx::Error> {
    let query = |near: &str, far: &str| {
        format!(
            "SELECT n.node_id, n.name, n.kind, e.kind AS dependency, e.evidence, e.confidence FROM {} e \
             JOIN {} n ON n.node_id = e.{far} WHERE e.org_id = $1 AND e.{near} = $2 ORDER BY e.kind, n.name",
            edges(as_of),
            nodes(as_of)
        )
    };
    let out = sqlx::query_as(&query("from_node", "to_node")).bind(org_id).bind(node_id).fetch_all(&mut *connection).await?;
    let inward = sqlx::query_as(&query("to_node", "from_node")).bind(org_id).bind(node_id).fetch_all(&mut *connection).await?;
    Ok((out, inward))
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
    as_of: AsOf,
) -> Result<Vec<Affected>, sqlx::Error> {
    let (edges, nodes) = (edges(as_of), nodes(as_of));
    let (near, far) = match direction {
        Direction::Upstream => ("from_node", "to_node"),
        Direction::Downstream => ("to_node", "from_node"),
    };
    sqlx::query_as(&format!(
        "WITH RECURSIVE reached(node_id, distance) AS ( \
             SELECT e.{far}, 1 FROM {edges} e WHERE e.org_id = $1 AND e.{near} = $2 \
             UNION \
             SELECT e.{far}, r.distance + 1 FROM reached r JOIN {edges} e ON e.{near} = r.node_id \
             WHERE e.org_id = $1 AND r.distance < $3 \
         ) \
         SELECT n.node_id, n.name, n.kind, min(r.distance) AS distance FROM reached r \
         JOIN {nodes} n ON n.node_id = r.node_id AND n.org_id = $1 \
         WHERE r.node_id <> $2 \
         GROUP BY n.node_id, n.name, n.kind ORDER BY distance, n.name"
    ))
    .bind(org_id)
    .bind(node_id)
    .bind(depth)
    .fetch_all(connection)
    .await
}

/// Of the dependencies into `to` from one of `nearer`, the one a path takes back: the most
/// confident, then by kind and service id.
pub async fn step_back(
    connection: &mut PgConnection,
    org_id: Uuid,
    to: Uuid,
    nearer: &[Uuid],
    as_of: AsOf,
) -> Result<Option<(Uuid, String)>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT from_node, kind FROM {} AS e WHERE org_id = $1 AND to_node = $2 AND from_node = ANY($3) \
         ORDER BY confidence DESC, kind, from_node LIMIT 1",
        edges(as_of)
    ))
    .bind(org_id)
    .bind(to)
    .bind(nearer)
    .fetch_optional(connection)
    .await
}

/// The summary the latest completed scan left, if one has completed.
pub async fn summary(connection: &mut PgConnection, org_id: Uuid) -> Result<Option<GraphSummary>, sqlx::Error> {
    let found: Option<sqlx::types::Json<GraphSummary>> =
        sqlx::query_scalar("SELECT summary FROM graph_summaries WHERE org_id = $1").bind(org_id).fetch_optional(connection).await?;
    Ok(found.map(|summary| summary.0))
}
