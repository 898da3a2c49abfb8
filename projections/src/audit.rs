//! The audit log: one row per event (who, what, when, which stream, which correlation), for every
//! event on every topic.

use async_trait::async_trait;
use aurora_events::Envelope;
use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::{Projection, TableNames};

pub struct AuditLog;

#[async_trait]
impl Projection for AuditLog {
    fn name(&self) -> &'static str {
        "audit_log"
    }

    fn categories(&self) -> Vec<&'static str> {
        let mut categories: Vec<&'static str> = aurora_events::catalog::all_event_types().iter().map(|info| info.category).collect();
        categories.sort_unstable();
        categories.dedup();
        categories
    }

    fn tables(&self) -> &'static [&'static str] {
        &["audit_log"]
    }

    async fn apply(&self, connection: &mut PgConnection, tables: &TableNames, events: &[Envelope]) -> Result<(), sqlx::Error> {
        let count = events.len();
        let mut event_ids = Vec::with_capacity(count);
        let mut org_ids = Vec::with_capacity(count);
        let mut streams = Vec::with_capacity(count);
        let mut stream_versions = Vec::with_capacity(count);
        let mut event_types = Vec::with_capacity(count);
        let mut schema_versions = Vec::with_capacity(count);
        let mut actors = Vec::with_capacity(count);
        let mut occurred_ats: Vec<DateTime<Utc>> = Vec::with_capacity(count);
        let mut correlation_ids = Vec::with_capacity(count);
        let mut causation_ids: Vec<Option<Uuid>> = Vec::with_capacity(count);
        for event in events {
            event_ids.push(event.id);
            org_ids.push(event.org_id.0);
            streams.push(event.stream.to_string());
            stream_versions.push(event.stream_version as i64);
            event_types.push(event.event_type.as_str());
            schema_versions.push(event.schema_version as i32);
            actors.push(event.actor.to_string());
            occurred_ats.push(event.occurred_at);
            correlation_ids.push(event.correlation_id);
            causation_ids.push(event.causation_id);
        }
        sqlx::query(&format!(
            "INSERT INTO {} (event_id, org_id, stream, stream_version, event_type, schema_version, actor, \
             occurred_at, correlation_id, causation_id) \
             SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::bigint[], $5::text[], $6::int[], \
             $7::text[], $8::timestamptz[], $9::uuid[], $10::uuid[]) \
             ON CONFLICT (event_id) DO NOTHING",
            tables.get("audit_log")
        ))
        .bind(&event_ids)
        .bind(&org_ids)
        .bind(&streams)
        .bind(&stream_versions)
        .bind(&event_types)
        .bind(&schema_versions)
        .bind(&actors)
        .bind(&occurred_ats)
        .bind(&correlation_ids)
        .bind(&causation_ids)
        .execute(connection)
        .await?;
        Ok(())
    }
}

/// Registers the audit log.
pub fn register(projections: &mut crate::Projections) {
    projections.add(std::sync::Arc::new(AuditLog));
}
