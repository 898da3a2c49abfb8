//! The discovery graph in a Bolt server (`AURORA_DISCOVERY_GRAPH=bolt`): the same events the
//! Postgres projection folds, written with Cypher, `MERGE` on the stable node ids. The model is
//! described in [`aurora_adapters::graph::bolt`].
//!
//! A batch is one Bolt transaction, and every write is guarded by the stream version it reflects,
//! as the Postgres rows are: the batch's offsets are stored in Postgres after the Bolt commit, so a
//! batch redelivered after a crash between the two changes nothing.

use async_trait::async_trait;
use aurora_adapters::graph::bolt::{params, BoltGraph, Params, ToBolt, Transaction};
use aurora_adapters::graph::{GraphError, GraphSummary, Hub, KindCount};
use aurora_events::discovery::{Dependency, DiscoveryEvent, Resource, ResourceMissed};
use aurora_events::{Envelope, EventPayload};
use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use tokio::sync::OnceCell;
use uuid::Uuid;

use super::node_id;
use crate::{Projection, TableNames};

pub struct BoltProjection {
    graph: BoltGraph,
    indexed: OnceCell<()>,
}

impl BoltProjection {
    pub fn new(graph: BoltGraph) -> Self {
        Self { graph, indexed: OnceCell::new() }
    }
}

/// What the lookups by id need, in Neo4j's syntax and then in Memgraph's; a server that takes
/// neither still answers, by scanning.
const INDEXES: [(&str, &str); 3] = [
    ("CREATE INDEX aurora_service IF NOT EXISTS FOR (n:Service) ON (n.node_id)", "CREATE INDEX ON :Service(node_id)"),
    (
        "CREATE INDEX aurora_service_version IF NOT EXISTS FOR (n:ServiceVersion) ON (n.node_id)",
        "CREATE INDEX ON :ServiceVersion(node_id)",
    ),
    ("CREATE INDEX aurora_estate IF NOT EXISTS FOR (n:Estate) ON (n.org_id)", "CREATE INDEX ON :Estate(org_id)"),
];

fn io(error: GraphError) -> sqlx::Error {
    sqlx::Error::Io(std::io::Error::other(error.to_string()))
}

#[async_trait]
impl Projection for BoltProjection {
    fn name(&self) -> &'static str {
        "graph_bolt"
    }

    fn categories(&self) -> Vec<&'static str> {
        vec![DiscoveryEvent::CATEGORY]
    }

    /// None in Postgres: its offsets only.
    fn tables(&self) -> &'static [&'static str] {
        &[]
    }

    async fn apply(&self, _: &mut PgConnection, _: &TableNames, events: &[Envelope]) -> Result<(), sqlx::Error> {
        self.indexed
            .get_or_init(|| async {
                for (neo4j, memgraph) in INDEXES {
                    if let Err(error) = self.graph.query(neo4j, Params::new()).await {
                        if let Err(again) = self.graph.query(memgraph, Params::new()).await {
                            tracing::warn!(%error, %again, "the Bolt server took no index on the graph's ids");
                        }
                    }
                }
            })
            .await;
        let mut transaction = self.graph.begin().await.map_err(io)?;
        for envelope in events {
            let event = DiscoveryEvent::decode(&envelope.event_type, envelope.schema_version, envelope.payload.clone())
                .map_err(|error| sqlx::Error::Decode(Box::new(error)))?;
            let change = Change { org: envelope.org_id.0, version: envelope.stream_version as i64, at: envelope.occurred_at };
            change.apply(&mut transaction, event).await.map_err(io)?;
        }
        transaction.commit().await.map_err(io)
    }
}

/// One event's place: its organisation, stream version and time.
struct Change {
    org: Uuid,
    version: i64,
    at: DateTime<Utc>,
}

impl Change {
    fn params<const N: usize>(&self, more: [(&str, aurora_adapters::graph::bolt::BoltValue); N]) -> Params {
        let mut bound = params([("org", self.org.to_bolt()), ("v", self.version.to_bolt()), ("at", self.at.to_bolt())]);
        bound.extend(params(more));
        bound
    }

    async fn apply(&self, tx: &mut Transaction<'_>, event: DiscoveryEvent) -> Result<(), GraphError> {
        match event {
            DiscoveryEvent::ResourceDiscovered(seen) | DiscoveryEvent::ResourceChanged(seen) | DiscoveryEvent::ResourceReturned(seen) => {
                self.seen(tx, &seen.resource).await
            }
            DiscoveryEvent::ResourceGone(gone) => {
                let node = node_id(self.org, &gone.resource_id);
                let applied = tx
                    .run(
                        "MATCH (n:Service {node_id: $node}) WHERE n.org_id = $org AND n.stream_version < $v \
                         SET n.gone_at = $at, n.stream_version = $v RETURN n.node_id",
                        self.params([("node", node.to_bolt())]),
                    )
                    .await?;
                if !applied.is_empty() {
                    self.close_node(tx, node).await?;
                }
                Ok(())
            }
            DiscoveryEvent::ResourceMissed(missed) => self.mark(tx, &missed, "missing").await,
            DiscoveryEvent::ResourceStale(stale) => self.mark(tx, &stale, "stale").await,
            DiscoveryEvent::DependencyDiscovered(discovered) => self.depends(tx, &discovered.dependency).await,
            DiscoveryEvent::DependencyGone(gone) => {
                let (from, to) = (node_id(self.org, &gone.from), node_id(self.org, &gone.to));
                let applied = tx
                    .run(
                        "MATCH (a:Service {node_id: $from})-[r:DEPENDS_ON {kind: $kind}]->(b:Service {node_id: $to}) \
                         WHERE r.org_id = $org AND r.stream_version < $v SET r.gone_at = $at, r.stream_version = $v RETURN r.kind",
                        self.params([("from", from.to_bolt()), ("to", to.to_bolt()), ("kind", gone.kind.as_str().to_bolt())]),
                    )
                    .await?;
                if !applied.is_empty() {
                    self.close_edge(tx, from, to, gone.kind.as_str()).await?;
                }
                Ok(())
            }
            DiscoveryEvent::ScanCompleted(_) => self.summarise(tx).await,
            DiscoveryEvent::ScanRequested(_)
            | DiscoveryEvent::ScanStarted(_)
            | DiscoveryEvent::ScanFailed(_)
            | DiscoveryEvent::ScheduleChanged(_) => Ok(()),
        }
    }
}

/// A resource's properties, as both its node and its versions hold them.
const RESOURCE: &str = "node_id: $node, org_id: $org, resource_id: $resource_id, provider: $provider, kind: $kind, \
                        provider_type: $provider_type, name: $name, region: $region, account: $account, tags: $tags, endpoint: $endpoint";

/// Services the summary names as the most depended on, as in Postgres.
const SUMMARY_HUBS: i64 = 10;

impl Change {
    /// A resource listed as new, changed or back: its node as it is now, and a new version.
    async fn seen(&self, tx: &mut Transaction<'_>, resource: &Resource) -> Result<(), GraphError> {
        let node = node_id(self.org, &resource.resource_id);
        let tags = serde_json::to_string(&resource.tags).unwrap_or_else(|_| "{}".into());
        let bound = self.params([
            ("node", node.to_bolt()),
            ("resource_id", resource.resource_id.to_bolt()),
            ("provider", resource.provider.to_bolt()),
            ("kind", resource.kind.as_str().to_bolt()),
            ("provider_type", resource.provider_type.to_bolt()),
            ("name", resource.name.to_bolt()),
            ("region", resource.region.to_bolt()),
            ("account", resource.account.to_bolt()),
            ("tags", tags.to_bolt()),
            ("endpoint", resource.endpoint.to_bolt()),
        ]);
        let applied = tx
            .run(
                "MERGE (n:Service {node_id: $node}) ON CREATE SET n.stream_version = -1 \
                 WITH n WHERE n.stream_version < $v \
                 SET n.org_id = $org, n.resource_id = $resource_id, n.provider = $provider, n.kind = $kind, \
                     n.provider_type = $provider_type, n.name = $name, n.region = $region, n.account = $account, n.tags = $tags, \
                     n.endpoint = $endpoint, n.first_seen = coalesce(n.first_seen, $at), n.last_changed = $at, n.gone_at = null, \
                     n.status = 'present', n.last_seen = null, n.stream_version = $v \
                 RETURN n.first_seen",
                bound.clone(),
            )
            .await?;
        let Some(row) = applied.first() else { return Ok(()) };
        let mut bound = bound;
        bound.insert("first_seen".into(), row.integer(0)?.to_bolt());
        self.close_node(tx, node).await?;
        tx.run(
            &format!(
                "CREATE (:ServiceVersion {{{RESOURCE}, first_seen: $first_seen, last_changed: $at, status: 'present', \
                 valid_from: $at, from_version: $v}})"
            ),
            bound,
        )
        .await?;
        Ok(())
    }

    /// Ends the open version of a resource at this event, unless this event or a later one made it.
    async fn close_node(&self, tx: &mut Transaction<'_>, node: Uuid) -> Result<(), GraphError> {
        tx.run(
            "MATCH (x:ServiceVersion {node_id: $node}) WHERE x.org_id = $org AND x.valid_to IS NULL AND x.from_version < $v \
             SET x.valid_to = $at",
            self.params([("node", node.to_bolt())]),
        )
        .await?;
        Ok(())
    }

    /// A resource its provider no longer lists: `status` and when it was last seen.
    async fn mark(&self, tx: &mut Transaction<'_>, missed: &ResourceMissed, status: &str) -> Result<(), GraphError> {
        tx.run(
            "MATCH (n:Service {node_id: $node}) WHERE n.org_id = $org AND n.stream_version < $v \
             SET n.status = $status, n.last_seen = $last_seen, n.stream_version = $v",
            self.params([
                ("node", node_id(self.org, &missed.resource_id).to_bolt()),
                ("status", status.to_bolt()),
                ("last_seen", missed.last_seen.to_bolt()),
            ]),
        )
        .await?;
        Ok(())
    }

    /// A dependency inferred anew or with new evidence: the relationship as it is now, merged on
    /// its ends and kind, and a new version. Its ends were recorded before it in the estate's
    /// stream.
    async fn depends(&self, tx: &mut Transaction<'_>, dependency: &Dependency) -> Result<(), GraphError> {
        let (from, to) = (node_id(self.org, &dependency.from), node_id(self.org, &dependency.to));
        let bound = self.params([
            ("from", from.to_bolt()),
            ("to", to.to_bolt()),
            ("kind", dependency.kind.as_str().to_bolt()),
            ("evidence", dependency.evidence.to_bolt()),
            ("confidence", dependency.confidence.to_bolt()),
        ]);
        let applied = tx
            .run(
                "MATCH (a:Service {node_id: $from}), (b:Service {node_id: $to}) WHERE a.org_id = $org AND b.org_id = $org \
                 MERGE (a)-[r:DEPENDS_ON {kind: $kind}]->(b) ON CREATE SET r.stream_version = -1 \
                 WITH r WHERE r.stream_version < $v \
                 SET r.org_id = $org, r.evidence = $evidence, r.confidence = $confidence, r.first_seen = coalesce(r.first_seen, $at), \
                     r.last_changed = $at, r.gone_at = null, r.stream_version = $v \
                 RETURN r.kind",
                bound.clone(),
            )
            .await?;
        if applied.is_empty() {
            return Ok(());
        }
        self.close_edge(tx, from, to, dependency.kind.as_str()).await?;
        tx.run(
            "MATCH (a:Service {node_id: $from}), (b:Service {node_id: $to}) WHERE a.org_id = $org AND b.org_id = $org \
             CREATE (a)-[:DEPENDED_ON {kind: $kind, org_id: $org, evidence: $evidence, confidence: $confidence, \
                 valid_from: $at, from_version: $v}]->(b)",
            bound,
        )
        .await?;
        Ok(())
    }

    /// Ends the open version of a dependency at this event, unless this event or a later one made it.
    async fn close_edge(&self, tx: &mut Transaction<'_>, from: Uuid, to: Uuid, kind: &str) -> Result<(), GraphError> {
        tx.run(
            "MATCH (a:Service {node_id: $from})-[h:DEPENDED_ON {kind: $kind}]->(b:Service {node_id: $to}) \
             WHERE h.org_id = $org AND h.valid_to IS NULL AND h.from_version < $v SET h.valid_to = $at",
            self.params([("from", from.to_bolt()), ("to", to.to_bolt()), ("kind", kind.to_bolt())]),
        )
        .await?;
        Ok(())
    }

    /// Folds the organisation's graph as it stands after a completed scan into its summary, as
    /// the Postgres projection does.
    async fn summarise(&self, tx: &mut Transaction<'_>) -> Result<(), GraphError> {
        let bound = || self.params([]);
        let present = "MATCH (n:Service) WHERE n.org_id = $org AND n.gone_at IS NULL";
        let counts = tx
            .run(&format!("{present} RETURN count(n), sum(CASE WHEN n.status <> 'present' THEN 1 ELSE 0 END)"), bound())
            .await?;
        let dependencies =
            tx.run("MATCH (:Service)-[r:DEPENDS_ON]->(:Service) WHERE r.org_id = $org AND r.gone_at IS NULL RETURN count(r)", bound()).await?;
        let kinds = tx
            .run(&format!("{present} RETURN n.provider, n.kind, count(*) AS total ORDER BY total DESC, n.provider, n.kind"), bound())
            .await?;
        let regions =
            tx.run(&format!("{present} AND n.region IS NOT NULL RETURN DISTINCT n.region AS region ORDER BY region"), bound()).await?;
        let hubs = tx
            .run(
                "MATCH (a:Service)-[r:DEPENDS_ON]->(n:Service) \
                 WHERE r.org_id = $org AND r.gone_at IS NULL AND n.gone_at IS NULL AND NOT r.kind IN ['member_of', 'protected_by'] \
                 RETURN n.node_id, n.name, n.kind, count(DISTINCT a) AS dependents ORDER BY dependents DESC, n.name LIMIT $hubs",
                self.params([("hubs", SUMMARY_HUBS.to_bolt())]),
            )
            .await?;
        let first = |rows: &[aurora_adapters::graph::bolt::Row], column: usize| rows.first().map_or(Ok(0), |row| row.integer(column));
        let summary = GraphSummary {
            services: first(&counts, 0)?,
            not_present: first(&counts, 1)?,
            dependencies: first(&dependencies, 0)?,
            kinds: kinds
                .iter()
                .map(|row| Ok(KindCount { provider: row.text(0)?, kind: row.text(1)?, count: row.integer(2)? }))
                .collect::<Result<_, GraphError>>()?,
            regions: regions.iter().map(|row| row.text(0)).collect::<Result<_, _>>()?,
            most_depended_on: hubs
                .iter()
                .map(|row| Ok(Hub { node_id: row.uuid(0)?, name: row.text(1)?, kind: row.text(2)?, dependents: row.integer(3)? }))
                .collect::<Result<_, GraphError>>()?,
            scanned_at: Some(self.at),
        };
        let summary = serde_json::to_string(&summary).map_err(|error| GraphError::Unavailable(error.to_string()))?;
        tx.run(
            "MERGE (e:Estate {org_id: $org}) ON CREATE SET e.stream_version = -1 \
             WITH e WHERE e.stream_version < $v SET e.summary = $summary, e.stream_version = $v",
            self.params([("summary", summary.to_bolt())]),
        )
        .await?;
        Ok(())
    }
}
