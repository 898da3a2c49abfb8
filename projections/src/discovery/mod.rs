//! The discovery feature's read models: `graph_nodes` and `graph_edges` (the organisation's
//! estate as a graph; a node's id is a UUIDv5 of its organisation and resource id) and
//! `discovery_scans`. Each row remembers the stream version it reflects, so a redelivered event
//! changes nothing; a missed resource is marked `missing` or `stale` with when it was last
//! seen, and a gone resource or dependency keeps its row with `gone_at`.

use std::sync::Arc;

use async_trait::async_trait;
use aurora_events::discovery::{DiscoveryEvent, ResourceMissed};
use aurora_events::{Envelope, EventPayload};
use serde_json::json;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::{Projection, Projections, TableNames};

pub mod bolt;

pub struct Graph;

/// Registers the discovery read models: in Postgres always, and in the Bolt server when the
/// graph is read from one.
pub fn register(projections: &mut Projections) {
    projections.add(Arc::new(Graph));
    let discovery = &projections.config().discovery;
    if discovery.graph == aurora_adapters::config::GraphBackend::Bolt {
        let graph = aurora_adapters::graph::bolt::BoltGraph::new(&discovery.bolt);
        projections.add(Arc::new(bolt::BoltProjection::new(graph)));
    }
}

/// The node id of `resource_id` in `org_id`'s graph.
pub fn node_id(org_id: Uuid, resource_id: &str) -> Uuid {
    Uuid::new_v5(&org_id, resource_id.as_bytes())
}

#[async_trait]
impl Projection for Graph {
    fn name(&self) -> &'static str {
        "graph"
    }

    fn categories(&self) -> Vec<&'static str> {
        vec![DiscoveryEvent::CATEGORY]
    }

    fn tables(&self) -> &'static [&'static str] {
        &["graph_nodes", "graph_edges", "discovery_scans", "graph_summaries", "graph_node_versions", "graph_edge_versions", "discovery_schedules"]
    }

    async fn apply(&self, connection: &mut PgConnection, tables: &TableNames, events: &[Envelope]) -> Result<(), sqlx::Error> {
        let (nodes, edges, scans) = (tables.get("graph_nodes"), tables.get("graph_edges"), tables.get("discovery_scans"));
        let summaries = tables.get("graph_summaries");
        let (node_versions, edge_versions) = (tables.get("graph_node_versions"), tables.get("graph_edge_versions"));
        for envelope in events {
            let event = DiscoveryEvent::decode(&envelope.event_type, envelope.schema_version, envelope.payload.clone())
                .map_err(|error| sqlx::Error::Decode(Box::new(error)))?;
            let (org, version, at) = (envelope.org_id.0, envelope.stream_version as i64, envelope.occurred_at);
            let scan_update = |set: &str| format!("UPDATE {scans} SET {set}, stream_version = $2 WHERE scan_id = $1 AND stream_version < $2");
            match event {
                DiscoveryEvent::ScanRequested(requested) => {
                    sqlx::query(&format!(
                        "INSERT INTO {scans} (scan_id, org_id, status, requested_by, requested_at, stream_version) \
                         VALUES ($1, $2, 'requested', $3, $4, $5) ON CONFLICT (scan_id) DO NOTHING"
                    ))
                    .bind(requested.scan_id)
                    .bind(org)
                    .bind(envelope.actor.to_string())
                    .bind(at)
                    .bind(version)
                    .execute(&mut *connection)
                    .await?;
                }
                DiscoveryEvent::ScanStarted(started) => {
                    sqlx::query(&scan_update("status = 'running', providers = $3, started_at = $4"))
                        .bind(started.scan_id)
                        .bind(version)
                        .bind(&started.providers)
                        .bind(at)
                        .execute(&mut *connection)
                        .await?;
                }
                DiscoveryEvent::ScanCompleted(completed) => {
                    let counts = json!({
                        "resources": completed.resources, "dependencies": completed.dependencies, "discovered": completed.discovered,
                        "changed": completed.changed, "gone": completed.gone, "missed": completed.missed, "stale": completed.stale,
                        "returned": completed.returned,
                    });
                    sqlx::query(&scan_update("status = 'completed', counts = $3, failures = $4, finished_at = $5"))
                        .bind(completed.scan_id)
                        .bind(version)
                        .bind(counts)
                        .bind(json!(completed.failures))
                        .bind(at)
                        .execute(&mut *connection)
                        .await?;
                    summarise(&mut *connection, (nodes, edges, summaries), org, version, at).await?;
                }
                DiscoveryEvent::ScheduleChanged(changed) => {
                    let schedules = tables.get("discovery_schedules");
                    sqlx::query(&format!(
                        "INSERT INTO {schedules} (org_id, interval_minutes, changed_by, changed_at, stream_version) VALUES ($1, $2, $3, $4, $5) \
                         ON CONFLICT (org_id) DO UPDATE SET interval_minutes = EXCLUDED.interval_minutes, changed_by = EXCLUDED.changed_by, \
                         changed_at = EXCLUDED.changed_at, stream_version = EXCLUDED.stream_version \
                         WHERE {schedules}.stream_version < EXCLUDED.stream_version"
                    ))
                    .bind(org)
                    .bind(changed.interval_minutes.map(|minutes| minutes as i32))
                    .bind(envelope.actor.to_string())
                    .bind(at)
                    .bind(version)
                    .execute(&mut *connection)
                    .await?;
                }
                DiscoveryEvent::ScanFailed(failed) => {
                    sqlx::query(&scan_update("status = 'failed', failures = $3, finished_at = $4"))
                        .bind(failed.scan_id)
                        .bind(version)
                        .bind(json!(failed.failures))
                        .bind(at)
                        .execute(&mut *connection)
                        .await?;
                }
                DiscoveryEvent::ResourceDiscovered(seen) | DiscoveryEvent::ResourceChanged(seen) | DiscoveryEvent::ResourceReturned(seen) => {
                    let resource = seen.resource;
                    sqlx::query(&format!(
                        "INSERT INTO {nodes} (node_id, org_id, resource_id, provider, kind, provider_type, name, region, account, tags, endpoint, \
                             first_seen, last_changed, stream_version) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $12, $13) \
                         ON CONFLICT (node_id) DO UPDATE SET provider = EXCLUDED.provider, kind = EXCLUDED.kind, \
                             provider_type = EXCLUDED.provider_type, name = EXCLUDED.name, region = EXCLUDED.region, account = EXCLUDED.account, \
                             tags = EXCLUDED.tags, endpoint = EXCLUDED.endpoint, last_changed = EXCLUDED.last_changed, gone_at = NULL, \
                             status = 'present', last_seen = NULL, stream_version = EXCLUDED.stream_version \
                         WHERE {nodes}.stream_version < EXCLUDED.stream_version"
                    ))
                    .bind(node_id(org, &resource.resource_id))
                    .bind(org)
                    .bind(&resource.resource_id)
                    .bind(&resource.provider)
                    .bind(resource.kind.as_str())
                    .bind(&resource.provider_type)
                    .bind(&resource.name)
                    .bind(&resource.region)
                    .bind(&resource.account)
                    .bind(json!(resource.tags))
                    .bind(&resource.endpoint)
                    .bind(at)
                    .bind(version)
                    .execute(&mut *connection)
                    .await?;
                    let node = node_id(org, &resource.resource_id);
                    close(&mut *connection, node_versions, Versions::Node(node), version, at).await?;
                    sqlx::query(&format!(
                        "INSERT INTO {node_versions} (node_id, org_id, resource_id, provider, kind, provider_type, name, region, account, tags, \
                             endpoint, first_seen, valid_from, from_version) \
                         SELECT node_id, org_id, resource_id, provider, kind, provider_type, name, region, account, tags, endpoint, first_seen, $3, $2 \
                         FROM {nodes} WHERE node_id = $1 AND stream_version = $2 ON CONFLICT DO NOTHING"
                    ))
                    .bind(node)
                    .bind(version)
                    .bind(at)
                    .execute(&mut *connection)
                    .await?;
                }
                DiscoveryEvent::ResourceGone(gone) => {
                    let node = node_id(org, &gone.resource_id);
                    sqlx::query(&format!(
                        "UPDATE {nodes} SET gone_at = $3, stream_version = $2 WHERE node_id = $1 AND stream_version < $2"
                    ))
                    .bind(node)
                    .bind(version)
                    .bind(at)
                    .execute(&mut *connection)
                    .await?;
                    close(&mut *connection, node_versions, Versions::Node(node), version, at).await?;
                }
                DiscoveryEvent::ResourceMissed(missed) => mark(connection, nodes, org, version, &missed, "missing").await?,
                DiscoveryEvent::ResourceStale(stale) => mark(connection, nodes, org, version, &stale, "stale").await?,
                DiscoveryEvent::DependencyDiscovered(discovered) => {
                    let dependency = discovered.dependency;
                    sqlx::query(&format!(
                        "INSERT INTO {edges} (org_id, from_node, to_node, kind, evidence, confidence, first_seen, last_changed, stream_version) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $7, $8) \
                         ON CONFLICT (from_node, to_node, kind) DO UPDATE SET evidence = EXCLUDED.evidence, confidence = EXCLUDED.confidence, \
                             last_changed = EXCLUDED.last_changed, gone_at = NULL, stream_version = EXCLUDED.stream_version \
                         WHERE {edges}.stream_version < EXCLUDED.stream_version"
                    ))
                    .bind(org)
                    .bind(node_id(org, &dependency.from))
                    .bind(node_id(org, &dependency.to))
                    .bind(dependency.kind.as_str())
                    .bind(&dependency.evidence)
                    .bind(dependency.confidence)
                    .bind(at)
                    .bind(version)
                    .execute(&mut *connection)
                    .await?;
                    let (from, to) = (node_id(org, &dependency.from), node_id(org, &dependency.to));
                    close(&mut *connection, edge_versions, Versions::Edge { from, to, kind: dependency.kind.as_str() }, version, at).await?;
                    sqlx::query(&format!(
                        "INSERT INTO {edge_versions} (org_id, from_node, to_node, kind, evidence, confidence, valid_from, from_version) \
                         SELECT org_id, from_node, to_node, kind, evidence, confidence, $4, $5 FROM {edges} \
                         WHERE from_node = $1 AND to_node = $2 AND kind = $3 AND stream_version = $5 ON CONFLICT DO NOTHING"
                    ))
                    .bind(from)
                    .bind(to)
                    .bind(dependency.kind.as_str())
                    .bind(at)
                    .bind(version)
                    .execute(&mut *connection)
                    .await?;
                }
                DiscoveryEvent::DependencyGone(gone) => {
                    sqlx::query(&format!(
                        "UPDATE {edges} SET gone_at = $4, stream_version = $5 \
                         WHERE from_node = $1 AND to_node = $2 AND kind = $3 AND stream_version < $5"
                    ))
                    .bind(node_id(org, &gone.from))
                    .bind(node_id(org, &gone.to))
                    .bind(gone.kind.as_str())
                    .bind(at)
                    .bind(version)
                    .execute(&mut *connection)
                    .await?;
                    let (from, to) = (node_id(org, &gone.from), node_id(org, &gone.to));
                    close(&mut *connection, edge_versions, Versions::Edge { from, to, kind: gone.kind.as_str() }, version, at).await?;
                }
            }
        }
        Ok(())
    }
}

/// The condition naming one resource's versions, or one dependency's.
enum Versions<'a> {
    Node(Uuid),
    Edge { from: Uuid, to: Uuid, kind: &'a str },
}

/// Ends the open version of a resource or a dependency in `table` at `at`, unless the event at
/// `version` or a later one made it.
async fn close(connection: &mut PgConnection, table: &str, of: Versions<'_>, version: i64, at: chrono::DateTime<chrono::Utc>) -> Result<(), sqlx::Error> {
    let open = "valid_to IS NULL AND from_version < $1";
    match of {
        Versions::Node(node) => {
            let statement = format!("UPDATE {table} SET valid_to = $2 WHERE node_id = $3 AND {open}");
            sqlx::query(&statement).bind(version).bind(at).bind(node).execute(connection).await?;
        }
        Versions::Edge { from, to, kind } => {
            let statement = format!("UPDATE {table} SET valid_to = $2 WHERE from_node = $3 AND to_node = $4 AND kind = $5 AND {open}");
            sqlx::query(&statement).bind(version).bind(at).bind(from).bind(to).bind(kind).execute(connection).await?;
        }
    }
    Ok(())
}

/// Services the summary names as the most depended on.
const SUMMARY_HUBS: i64 = 10;

/// Folds `org`'s graph as it stands after a completed scan into its summary row.
async fn summarise(
    connection: &mut PgConnection,
    (nodes, edges, summaries): (&str, &str, &str),
    org: Uuid,
    version: i64,
    at: chrono::DateTime<chrono::Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query(&format!(
        "INSERT INTO {summaries} (org_id, summary, stream_version) \
         SELECT $1, jsonb_build_object( \
             'services', (SELECT count(*) FROM {nodes} WHERE org_id = $1 AND gone_at IS NULL), \
             'not_present', (SELECT count(*) FROM {nodes} WHERE org_id = $1 AND gone_at IS NULL AND status <> 'present'), \
             'dependencies', (SELECT count(*) FROM {edges} WHERE org_id = $1 AND gone_at IS NULL), \
             'kinds', coalesce((SELECT jsonb_agg(jsonb_build_object('provider', provider, 'kind', kind, 'count', total) \
                                 ORDER BY total DESC, provider, kind) \
                 FROM (SELECT provider, kind, count(*) AS total FROM {nodes} WHERE org_id = $1 AND gone_at IS NULL \
                       GROUP BY provider, kind) AS kinds), '[]'), \
             'regions', coalesce((SELECT jsonb_agg(region ORDER BY region) \
                 FROM (SELECT DISTINCT region FROM {nodes} WHERE org_id = $1 AND gone_at IS NULL AND region IS NOT NULL) AS regions), '[]'), \
             'most_depended_on', coalesce((SELECT jsonb_agg(jsonb_build_object('node_id', node_id, 'name', name, 'kind', kind, \
                                 'dependents', dependents) ORDER BY dependents DESC, name) \
                 FROM (SELECT n.node_id, n.name, n.kind, count(DISTINCT e.from_node) AS dependents FROM {edges} e \
                       JOIN {nodes} n ON n.node_id = e.to_node AND n.gone_at IS NULL \
                       WHERE e.org_id = $1 AND e.gone_at IS NULL AND e.kind NOT IN ('member_of', 'protected_by') \
                       GROUP BY n.node_id, n.name, n.kind ORDER BY dependents DESC, n.name LIMIT $4) AS hubs), '[]'), \
             'scanned_at', $3::timestamptz), $2 \
         ON CONFLICT (org_id) DO UPDATE SET summary = EXCLUDED.summary, stream_version = EXCLUDED.stream_version \
         WHERE {summaries}.stream_version < EXCLUDED.stream_version"
    ))
    .bind(org)
    .bind(version)
    .bind(at)
    .bind(SUMMARY_HUBS)
    .execute(connection)
    .await?;
    Ok(())
}

/// A resource its provider no longer lists: `status` (`missing`, `stale`) and when it was last seen.
async fn mark(
    connection: &mut PgConnection,
    nodes: &str,
    org: Uuid,
    version: i64,
    missed: &ResourceMissed,
    status: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(&format!("UPDATE {nodes} SET status = $3, last_seen = $4, stream_version = $2 WHERE node_id = $1 AND stream_version < $2"))
        .bind(node_id(org, &missed.resource_id))
        .bind(version)
        .bind(status)
        .bind(missed.last_seen)
        .execute(connection)
        .await?;
    Ok(())
}
