//! The graph port: the organisation's discovered estate as a projection of the discovery events
//! keeps it, and the queries the gateway, the agent's tools and the incident grouping ask of it:
//! services by kind, provider or tag, one service's neighbours with the evidence of each
//! dependency, the services upstream or downstream of one (its blast radius), the shortest path
//! between two, and a summary. Every query names the organisation, and any can read the graph as
//! it was at a past time ([`AsOf`]).
//!
//! Two stores keep it: [`postgres`], tables the discovery projection writes in the read-model
//! database and recursive SQL (the default), and [`bolt`], a Memgraph, Neo4j or other Bolt 5
//! server written with Cypher. [`GraphStore`] says which one this process reads; one contract
//! suite (`tests/tests/graph_contract.rs`) runs the same queries against both.

pub mod bolt;
pub mod postgres;

use std::sync::Arc;

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

/// Which way dependencies are followed from a service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// What the service depends on, and what that depends on (its edges out).
    Upstream,
    /// What depends on the service, directly or not (its edges in): what breaks when it does,
    /// its blast radius.
    Downstream,
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

/// A graph store failed.
#[derive(Debug, thiserror::Error)]
pub enum GraphError {
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    /// The Bolt server could not be reached, refused the statement or answered in a way this
    /// build does not read.
    #[error("the graph store is unavailable: {0}")]
    Unavailable(String),
}

/// Which store this process reads the graph from.
#[derive(Clone, Default)]
pub enum GraphStore {
    /// The discovery projection's tables in the read-model database.
    #[default]
    Postgres,
    /// A Bolt server the `graph_bolt` projection writes.
    Bolt(Arc<bolt::BoltGraph>),
}

impl GraphStore {
    /// The store `config` names (no connection is made until the first query).
    pub fn from_config(config: &crate::config::DiscoveryConfig) -> Self {
        match config.graph {
            crate::config::GraphBackend::Postgres => GraphStore::Postgres,
            crate::config::GraphBackend::Bolt => GraphStore::Bolt(Arc::new(bolt::BoltGraph::new(&config.bolt))),
        }
    }

    /// `postgres` or `bolt`.
    pub fn name(&self) -> &'static str {
        match self {
            GraphStore::Postgres => "postgres",
            GraphStore::Bolt(_) => "bolt",
        }
    }

    /// The queries, on `connection` (the caller's tenant transaction) when the graph is in
    /// Postgres.
    pub fn reader<'c>(&'c self, connection: &'c mut PgConnection) -> GraphReader<'c> {
        match self {
            GraphStore::Postgres => GraphReader::Postgres(connection),
            GraphStore::Bolt(graph) => GraphReader::Bolt(graph),
        }
    }
}

/// The graph's queries on one store.
pub enum GraphReader<'c> {
    Postgres(&'c mut PgConnection),
    Bolt(&'c bolt::BoltGraph),
}

impl GraphReader<'_> {
    /// The organisation's services (resources not gone), by kind and name; with a name, those
    /// named exactly so (whatever the case) first.
    pub async fn services(&mut self, org_id: Uuid, filter: &ServiceFilter, as_of: AsOf) -> Result<Vec<ServiceView>, GraphError> {
        match self {
            GraphReader::Postgres(connection) => Ok(postgres::services(connection, org_id, filter, as_of).await?),
            GraphReader::Bolt(graph) => graph.services(org_id, filter, as_of).await,
        }
    }

    /// One service, unless it is gone (or was not there at `as_of`).
    pub async fn service(&mut self, org_id: Uuid, node_id: Uuid, as_of: AsOf) -> Result<Option<ServiceView>, GraphError> {
        match self {
            GraphReader::Postgres(connection) => Ok(postgres::service(connection, org_id, node_id, as_of).await?),
            GraphReader::Bolt(graph) => graph.service(org_id, node_id, as_of).await,
        }
    }

    /// What the service depends on (its edges out) and what depends on it (its edges in).
    pub async fn neighbours(&mut self, org_id: Uuid, node_id: Uuid, as_of: AsOf) -> Result<(Vec<Neighbour>, Vec<Neighbour>), GraphError> {
        match self {
            GraphReader::Postgres(connection) => Ok(postgres::neighbours(connection, org_id, node_id, as_of).await?),
            GraphReader::Bolt(graph) => graph.neighbours(org_id, node_id, as_of).await,
        }
    }

    /// The services `depth` dependencies or fewer from `node_id` in `direction`, nearest first,
    /// each at its shortest distance, then by name.
    pub async fn reach(
        &mut self,
        org_id: Uuid,
        node_id: Uuid,
        direction: Direction,
        depth: i32,
        as_of: AsOf,
    ) -> Result<Vec<Affected>, GraphError> {
        match self {
            GraphReader::Postgres(connection) => Ok(postgres::reach(connection, org_id, node_id, direction, depth, as_of).await?),
            GraphReader::Bolt(graph) => graph.reach(org_id, node_id, direction, depth, as_of).await,
        }
    }

    /// Of the dependencies into `to` from one of `nearer`, the one a path takes back: the most
    /// confident, then by kind and service id.
    async fn step_back(&mut self, org_id: Uuid, to: Uuid, nearer: &[Uuid], as_of: AsOf) -> Result<Option<(Uuid, String)>, GraphError> {
        match self {
            GraphReader::Postgres(connection) => Ok(postgres::step_back(connection, org_id, to, nearer, as_of).await?),
            GraphReader::Bolt(graph) => graph.step_back(org_id, to, nearer, as_of).await,
        }
    }

    /// The summary the latest completed scan left, if one has completed.
    pub async fn summary(&mut self, org_id: Uuid) -> Result<Option<GraphSummary>, GraphError> {
        match self {
            GraphReader::Postgres(connection) => Ok(postgres::summary(connection, org_id).await?),
            GraphReader::Bolt(graph) => graph.summary(org_id).await,
        }
    }

    /// The shortest path of dependencies from `from` to `to`, at most `depth` long, if there is
    /// one. The services `from` depends on, each at its shortest distance ([`Self::reach`]), then
    /// one step back at a time from `to` to a service one nearer ([`Self::step_back`]), so that
    /// both stores choose the same path among equally short ones.
    pub async fn path(
        &mut self,
        org_id: Uuid,
        from: Uuid,
        to: Uuid,
        depth: i32,
        as_of: AsOf,
    ) -> Result<Option<DependencyPath>, GraphError> {
        if from == to {
            return Ok(None);
        }
        let Some(start) = self.service(org_id, from, as_of).await? else { return Ok(None) };
        let reached = self.reach(org_id, from, Direction::Upstream, depth, as_of).await?;
        let Some(end) = reached.iter().find(|affected| affected.node_id == to) else { return Ok(None) };
        let step = |affected: &Affected| PathStep { node_id: affected.node_id, name: affected.name.clone(), kind: affected.kind.clone() };
        let (mut services, mut dependencies) = (vec![step(end)], Vec::new());
        for distance in (0..end.distance).rev() {
            let nearer: Vec<Uuid> = if distance == 0 {
                vec![from]
            } else {
                reached.iter().filter(|affected| affected.distance == distance).map(|affected| affected.node_id).collect()
            };
            let here = services[services.len() - 1].node_id;
            let Some((node, kind)) = self.step_back(org_id, here, &nearer, as_of).await? else { return Ok(None) };
            let named = if node == from {
                PathStep { node_id: from, name: start.name.clone(), kind: start.kind.clone() }
            } else {
                match reached.iter().find(|affected| affected.node_id == node) {
                    Some(affected) => step(affected),
                    None => return Ok(None),
                }
            };
            services.push(named);
            dependencies.push(kind);
        }
        services.reverse();
        dependencies.reverse();
        Ok(Some(DependencyPath { services, dependencies }))
    }

    /// The shortest chain of dependencies between two services, whichever depends on the other.
    pub async fn link(
        &mut self,
        org_id: Uuid,
        one: Uuid,
        other: Uuid,
        depth: i32,
        as_of: AsOf,
    ) -> Result<Option<DependencyPath>, GraphError> {
        let forward = self.path(org_id, one, other, depth, as_of).await?;
        let backward = self.path(org_id, other, one, depth, as_of).await?;
        Ok(match (forward, backward) {
            (Some(forward), Some(backward)) if backward.dependencies.len() < forward.dependencies.len() => Some(backward),
            (Some(forward), _) => Some(forward),
            (None, backward) => backward,
        })
    }

    /// The service named `name` exactly (whatever the case), if discovery found one.
    pub async fn named(&mut self, org_id: Uuid, name: &str) -> Result<Option<ServiceView>, GraphError> {
        let filter = ServiceFilter { name: Some(name.to_owned()), limit: 1, ..ServiceFilter::default() };
        let mut found = self.services(org_id, &filter, AsOf::Now).await?;
        Ok(found.pop().filter(|service| service.name.eq_ignore_ascii_case(name)))
    }
}
