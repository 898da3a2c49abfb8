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

/// Which graph a query reads: as it is, or as it was at a past time (from the versions the
/// projection keeps; a service read in the past is `present`, its status then not kept).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum AsOf {
    #[default]
    Now,
    At(DateTime<Utc>),
}

impl AsOf {
    /// The services of this graph, as a `FROM` item with the columns of `graph_nodes`.
    fn nodes(self) -> String {
        match self {
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
    fn edges(self) -> String {
        let columns = "org_id, from_node, to_node, kind, evidence, confidence";
        match self {
            AsOf::Now => format!("(SELECT {columns} FROM graph_edges WHERE gone_at IS NULL)"),
            AsOf::At(at) => format!("(SELECT {columns} FROM graph_edge_versions WHERE {})", valid_at(at)),
        }
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
        as_of.nodes()
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
    sqlx::query_as(&format!("SELECT {SERVICE_COLUMNS} FROM {} AS n WHERE org_id = $1 AND node_id = $2", as_of.nodes()))
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
            as_of.edges(),
            as_of.nodes()
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
    as_of: AsOf,
) -> Result<Vec<Affected>, sqlx::Error> {
    let (edges, nodes) = (as_of.edges(), as_of.nodes());
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
/// A breadth-first walk from `from` over (service, distance) pairs, as [`reach`] does, then one
/// step back at a time from `to` to a service one nearer: no path is carried while walking.
pub async fn path(
    connection: &mut PgConnection,
    org_id: Uuid,
    from: Uuid,
    to: Uuid,
    depth: i32,
    as_of: AsOf,
) -> Result<Option<DependencyPath>, sqlx::Error> {
    if from == to {
        return Ok(None);
    }
    let (edges, listed) = (as_of.edges(), as_of.nodes());
    let reached: Vec<(Uuid, i32)> = sqlx::query_as(&format!(
        "WITH RECURSIVE reached(node_id, distance) AS ( \
             SELECT $2::uuid, 0 \
             UNION \
             SELECT e.to_node, r.distance + 1 FROM reached r JOIN {edges} e ON e.from_node = r.node_id \
             WHERE e.org_id = $1 AND r.distance < $4 AND r.node_id <> $3 \
         ) \
         SELECT r.node_id, min(r.distance) FROM reached r \
         JOIN {listed} n ON n.node_id = r.node_id AND n.org_id = $1 GROUP BY r.node_id"
    ))
    .bind(org_id)
    .bind(from)
    .bind(to)
    .bind(depth)
    .fetch_all(&mut *connection)
    .await?;
    let distance_of = |node: Uuid| reached.iter().find(|(reached, _)| *reached == node).map(|(_, distance)| *distance);
    let Some(length) = distance_of(to) else { return Ok(None) };
    let (mut nodes, mut dependencies) = (vec![to], Vec::new());
    for distance in (0..length).rev() {
        let nearer: Vec<Uuid> = reached.iter().filter(|(_, at)| *at == distance).map(|(node, _)| *node).collect();
        let step: Option<(Uuid, String)> = sqlx::query_as(&format!(
            "SELECT from_node, kind FROM {edges} AS e WHERE org_id = $1 AND to_node = $2 AND from_node = ANY($3) \
             ORDER BY confidence DESC, kind, from_node LIMIT 1"
        ))
        .bind(org_id)
        .bind(nodes[nodes.len() - 1])
        .bind(&nearer)
        .fetch_optional(&mut *connection)
        .await?;
        let Some((node, kind)) = step else { return Ok(None) };
        nodes.push(node);
        dependencies.push(kind);
    }
    nodes.reverse();
    dependencies.reverse();
    let named: Vec<PathStep> =
        sqlx::query_as(&format!("SELECT node_id, name, kind FROM {listed} AS n WHERE org_id = $1 AND node_id = ANY($2)"))
            .bind(org_id)
            .bind(&nodes)
            .fetch_all(&mut *connection)
            .await?;
    let services = nodes
        .iter()
        .map(|node| {
            named.iter().find(|step| step.node_id == *node).map(|step| PathStep {
                node_id: step.node_id,
                name: step.name.clone(),
                kind: step.kind.clone(),
            })
        })
        .collect::<Option<Vec<_>>>();
    Ok(services.map(|services| DependencyPath { services, dependencies }))
}

impl DependencyPath {
    /// The path in words: `checkout-api -uses-> orders-db`.
    pub fn describe(&self) -> String {
        let mut text = self.services.first().map(|step| step.name.clone()).unwrap_or_default();
        for (dependency, step) in self.dependencies.iter().zip(self.services.iter().skip(1)) {
            text.push_str(&format!(" -{dependency}-> {}", step.name));
        }
        text
    }
}

/// The service named `name` exactly (whatever the case), if discovery found one.
pub async fn named(connection: &mut PgConnection, org_id: Uuid, name: &str) -> Result<Option<ServiceView>, sqlx::Error> {
    let filter = ServiceFilter { name: Some(name.to_owned()), limit: 1, ..ServiceFilter::default() };
    let mut found = services(connection, org_id, &filter, AsOf::Now).await?;
    Ok(found.pop().filter(|service| service.name.eq_ignore_ascii_case(name)))
}

/// The shortest chain of dependencies between two services, whichever depends on the other.
pub async fn link(
    connection: &mut PgConnection,
    org_id: Uuid,
    one: Uuid,
    other: Uuid,
    depth: i32,
    as_of: AsOf,
) -> Result<Option<DependencyPath>, sqlx::Error> {
    let forward = path(&mut *connection, org_id, one, other, depth, as_of).await?;
    let backward = path(&mut *connection, org_id, other, one, depth, as_of).await?;
    Ok(match (forward, backward) {
        (Some(forward), Some(backward)) if backward.dependencies.len() < forward.dependencies.len() => Some(backward),
        (Some(forward), _) => Some(forward),
        (None, backward) => backward,
    })
}

/// How many services of one provider and kind.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct KindCount {
    pub provider: String,
    pub kind: String,
    pub count: i64,
}

/// A service others depend on, by how many.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Hub {
    pub node_id: Uuid,
    pub name: String,
    pub kind: String,
    /// Services depending on it directly (membership of a network or a security group not counted).
    pub dependents: i64,
}

/// The organisation's estate in brief, as the latest completed scan left it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct GraphSummary {
    /// Services not gone.
    pub services: i64,
    /// Of those, the ones the latest scans did not list (`missing` or `stale`).
    pub not_present: i64,
    pub dependencies: i64,
    /// Most numerous first.
    pub kinds: Vec<KindCount>,
    pub regions: Vec<String>,
    /// The ten services most depended on.
    pub most_depended_on: Vec<Hub>,
    /// When the scan that left it so completed; none before the first.
    pub scanned_at: Option<DateTime<Utc>>,
}

/// The summary the latest completed scan left, if one has completed.
pub async fn summary(connection: &mut PgConnection, org_id: Uuid) -> Result<Option<GraphSummary>, sqlx::Error> {
    let found: Option<sqlx::types::Json<GraphSummary>> =
        sqlx::query_scalar("SELECT summary FROM graph_summaries WHERE org_id = $1").bind(org_id).fetch_optional(connection).await?;
    Ok(found.map(|summary| summary.0))
}

impl GraphSummary {
    /// The summary in a few lines, for the agent's prompt.
    pub fn describe(&self) -> String {
        let kinds: Vec<String> = self.kinds.iter().map(|kind| format!("{} {} {}", kind.count, kind.provider, kind.kind)).collect();
        let mut text = format!("{} services and {} dependencies: {}", self.services, self.dependencies, kinds.join(", "));
        if !self.regions.is_empty() {
            text.push_str(&format!("; regions {}", self.regions.join(", ")));
        }
        if let Some(at) = self.scanned_at {
            text.push_str(&format!("; scanned {}", at.format("%Y-%m-%d %H:%M UTC")));
        }
        text.push_str(".\n");
        if self.not_present > 0 {
            text.push_str(&format!("{} of them were not listed by the latest scans (missing or stale).\n", self.not_present));
        }
        if !self.most_depended_on.is_empty() {
            let hubs: Vec<String> =
                self.most_depended_on.iter().map(|hub| format!("{} ({}, {} dependents)", hub.name, hub.kind, hub.dependents)).collect();
            text.push_str(&format!("Most depended on: {}.\n", hubs.join(", ")));
        }
        text
    }
}
