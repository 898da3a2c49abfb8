//! The knowledge feature's read models: `documents` (one row per document, its current version,
//! status and every version's facts) and `knowledge_memory` (the organisation's note for the
//! agent). Each document row remembers the stream version it reflects, so a redelivered event
//! changes nothing. A change to a document is announced on the log channel (`projected:documents:<org>`)
//! so that the gateway's status streams send it at once.

use std::sync::Arc;

use async_trait::async_trait;
use aurora_events::knowledge::KnowledgeEvent;
use aurora_events::{Envelope, EventPayload};
use serde_json::json;
use sqlx::PgConnection;

use crate::{Projection, Projections, TableNames};

pub struct Knowledge;

/// Registers the knowledge read models.
pub fn register(projections: &mut Projections) {
    projections.add(Arc::new(Knowledge));
}

#[async_trait]
impl Projection for Knowledge {
    fn name(&self) -> &'static str {
        "knowledge"
    }

    fn categories(&self) -> Vec<&'static str> {
        vec![KnowledgeEvent::CATEGORY]
    }

    fn tables(&self) -> &'static [&'static str] {
        &["documents", "knowledge_memory"]
    }

    async fn apply(&self, connection: &mut PgConnection, tables: &TableNames, events: &[Envelope]) -> Result<(), sqlx::Error> {
        let documents = tables.get("documents");
        let memory = tables.get("knowledge_memory");
        let mut changed_orgs = Vec::new();
        for envelope in events {
            let event = KnowledgeEvent::decode(&envelope.event_type, envelope.schema_version, envelope.payload.clone())
                .map_err(|error| sqlx::Error::Decode(Box::new(error)))?;
            let version = envelope.stream_version as i64;
            let at = envelope.occurred_at;
            let update = |set: &str| {
                format!("UPDATE {documents} SET {set}, stream_version = $2, updated_at = $3 WHERE document_id = $1 AND stream_version < $2")
            };
            match event {
                KnowledgeEvent::DocumentUploaded(uploaded) => {
                    let entry = json!([{
                        "version": uploaded.version, "bytes": uploaded.bytes, "sha256": uploaded.sha256,
                        "uploaded_by": envelope.actor.to_string(), "uploaded_at": at,
                    }]);
                    sqlx::query(&format!(
                        "INSERT INTO {documents} (document_id, org_id, name, kind, version, status, bytes, total_bytes, sha256, versions, \
                             uploaded_by, created_at, updated_at, stream_version) \
                         VALUES ($1, $4, $5, $6, $7, 'processing', $8, $8, $9, $10, $11, $3, $3, $2) \
                         ON CONFLICT (document_id) DO UPDATE SET name = EXCLUDED.name, kind = EXCLUDED.kind, version = EXCLUDED.version, \
                             status = 'processing', bytes = EXCLUDED.bytes, total_bytes = {documents}.total_bytes + EXCLUDED.bytes, \
                             sha256 = EXCLUDED.sha256, versions = {documents}.versions || EXCLUDED.versions, uploaded_by = EXCLUDED.uploaded_by, \
                             chunks = NULL, pages = NULL, characters = NULL, tokens = NULL, failure_code = NULL, failure_reason = NULL, \
                             processing_started_at = NULL, indexed_at = NULL, updated_at = EXCLUDED.updated_at, stream_version = EXCLUDED.stream_version \
                         WHERE {documents}.stream_version < EXCLUDED.stream_version"
                    ))
                    .bind(uploaded.document_id)
                    .bind(version)
                    .bind(at)
                    .bind(envelope.org_id.0)
                    .bind(&uploaded.name)
                    .bind(uploaded.kind.as_str())
                    .bind(uploaded.version as i32)
                    .bind(uploaded.bytes as i64)
                    .bind(&uploaded.sha256)
                    .bind(entry)
                    .bind(envelope.actor.to_string())
                    .execute(&mut *connection)
                    .await?;
                }
                KnowledgeEvent::ProcessingStarted(started) => {
                    sqlx::query(&(update("processing_started_at = $3") + " AND version = $4"))
                        .bind(started.document_id)
                        .bind(version)
                        .bind(at)
                        .bind(started.version as i32)
                        .execute(&mut *connection)
                        .await?;
                }
                KnowledgeEvent::DocumentIndexed(indexed) => {
                    sqlx::query(&(update("status = 'ready', chunks = $5, pages = $6, characters = $7, tokens = $8, indexed_at = $3") + " AND version = $4"))
                        .bind(indexed.document_id)
                        .bind(version)
                        .bind(at)
                        .bind(indexed.version as i32)
                        .bind(indexed.chunks as i32)
                        .bind(indexed.pages.map(|pages| pages as i32))
                        .bind(indexed.characters as i64)
                        .bind(indexed.tokens as i64)
                        .execute(&mut *connection)
                        .await?;
                }
                KnowledgeEvent::DocumentFailed(failed) => {
                    let code = serde_json::to_value(failed.code).ok().and_then(|code| code.as_str().map(str::to_owned)).unwrap_or_default();
                    sqlx::query(&(update("status = 'failed', failure_code = $5, failure_reason = $6") + " AND version = $4"))
                        .bind(failed.document_id)
                        .bind(version)
                        .bind(at)
                        .bind(failed.version as i32)
                        .bind(code)
                        .bind(&failed.reason)
                        .execute(&mut *connection)
                        .await?;
                }
                KnowledgeEvent::DocumentDeleted(deleted) => {
                    sqlx::query(&update("status = 'deleted'"))
                        .bind(deleted.document_id)
                        .bind(version)
                        .bind(at)
                        .execute(&mut *connection)
                        .await?;
                }
                KnowledgeEvent::MemoryUpdated(updated) => {
                    sqlx::query(&format!(
                        "INSERT INTO {memory} (org_id, text, updated_by, updated_at) VALUES ($1, $2, $3, $4) \
                         ON CONFLICT (org_id) DO UPDATE SET text = EXCLUDED.text, updated_by = EXCLUDED.updated_by, updated_at = EXCLUDED.updated_at \
                         WHERE {memory}.updated_at <= EXCLUDED.updated_at"
                    ))
                    .bind(envelope.org_id.0)
                    .bind(&updated.text)
                    .bind(envelope.actor.to_string())
                    .bind(at)
                    .execute(&mut *connection)
                    .await?;
                    continue;
                }
            }
            if !changed_orgs.contains(&envelope.org_id.0) {
                changed_orgs.push(envelope.org_id.0);
            }
        }
        for org_id in changed_orgs {
            // Delivered when the batch commits, and only then.
            sqlx::query("SELECT pg_notify($1, $2)")
                .bind(aurora_adapters::wakeup::CHANNEL)
                .bind(aurora_adapters::wakeup::projected_payload("documents", org_id))
                .execute(&mut *connection)
                .await?;
        }
        Ok(())
    }
}
