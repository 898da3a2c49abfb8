//! The incident feature's read models: `incidents` (one row per incident: status, severity,
//! counts, the latest investigation, the times to acknowledge, to RCA and to resolve),
//! `incident_alerts` (each alert with why it was grouped), `incident_investigations` (each run
//! with its RCA or why it failed), `incident_timeline` (every event, in order: the detail's
//! timeline and thoughts, and the positions the change stream resumes from),
//! `incident_postmortems` (every version) and `webhook_deliveries` (each payload as received).
//!
//! An incident event is applied once: its timeline row, keyed by stream and version, goes in
//! first, and an event whose row is there already changes nothing. Changes are announced on the
//! log channel (`projected:incidents:<org>`) when the batch commits.

use std::sync::Arc;

use async_trait::async_trait;
use aurora_events::incident::{AlertStatus, IncidentEvent, WebhookEvent};
use aurora_events::{Envelope, EventPayload};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::{Projection, Projections, TableNames};

pub struct Incidents;

/// Registers the incident read models.
pub fn register(projections: &mut Projections) {
    projections.add(Arc::new(Incidents));
}

/// The read model name announcements carry.
pub const READ_MODEL: &str = "incidents";

fn text_of<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_value(value).ok().and_then(|value| value.as_str().map(str::to_owned)).unwrap_or_default()
}

#[async_trait]
impl Projection for Incidents {
    fn name(&self) -> &'static str {
        "incidents"
    }

    fn categories(&self) -> Vec<&'static str> {
        vec![IncidentEvent::CATEGORY, WebhookEvent::CATEGORY]
    }

    fn tables(&self) -> &'static [&'static str] {
        &["incidents", "incident_alerts", "incident_investigations", "incident_timeline", "incident_postmortems", "webhook_deliveries"]
    }

    async fn apply(&self, connection: &mut PgConnection, tables: &TableNames, events: &[Envelope]) -> Result<(), sqlx::Error> {
        let mut changed_orgs = Vec::new();
        for envelope in events {
            if envelope.stream.category() == WebhookEvent::CATEGORY {
                let event = WebhookEvent::decode(&envelope.event_type, envelope.schema_version, envelope.payload.clone())
                    .map_err(|error| sqlx::Error::Decode(Box::new(error)))?;
                if let WebhookEvent::Received(received) = event {
                    sqlx::query(&format!(
                        "INSERT INTO {} (delivery_id, org_id, source, received_at, body_sha256, payload) VALUES ($1, $2, $3, $4, $5, $6) \
                         ON CONFLICT (delivery_id) DO NOTHING",
                        tables.get("webhook_deliveries")
                    ))
                    .bind(received.delivery_id)
                    .bind(envelope.org_id.0)
                    .bind(received.source.as_str())
                    .bind(received.received_at)
                    .bind(&received.body_sha256)
                    .bind(&received.payload)
                    .execute(&mut *connection)
                    .await?;
                }
                continue;
            }
            let event = IncidentEvent::decode(&envelope.event_type, envelope.schema_version, envelope.payload.clone())
                .map_err(|error| sqlx::Error::Decode(Box::new(error)))?;
            let Ok(incident_id) = Uuid::parse_str(envelope.stream.id()) else { continue };
            let applied = sqlx::query(&format!(
                "INSERT INTO {} (org_id, incident_id, stream_version, event_type, actor, occurred_at, data) VALUES ($1, $2, $3, $4, $5, $6, $7) \
                 ON CONFLICT (incident_id, stream_version) DO NOTHING",
                tables.get("incident_timeline")
            ))
            .bind(envelope.org_id.0)
            .bind(incident_id)
            .bind(envelope.stream_version as i64)
            .bind(&envelope.event_type)
            .bind(envelope.actor.to_string())
            .bind(envelope.occurred_at)
            .bind(&envelope.payload)
            .execute(&mut *connection)
            .await?;
            if applied.rows_affected() == 0 {
                continue;
            }
            apply_incident_event(connection, tables, envelope, incident_id, event).await?;
            if !changed_orgs.contains(&envelope.org_id.0) {
                changed_orgs.push(envelope.org_id.0);
            }
        }
        for org_id in changed_orgs {
            sqlx::query("SELECT pg_notify($1, $2)")
                .bind(aurora_adapters::wakeup::CHANNEL)
                .bind(aurora_adapters::wakeup::projected_payload(READ_MODEL, org_id))
                .execute(&mut *connection)
                .await?;
        }
        Ok(())
    }
}

async fn apply_incident_event(
    connection: &mut PgConnection,
    tables: &TableNames,
    envelope: &Envelope,
    incident_id: Uuid,
    event: IncidentEvent,
) -> Result<(), sqlx::Error> {
    let incidents = tables.get("incidents");
    let alerts = tables.get("incident_alerts");
    let investigations = tables.get("incident_investigations");
    let version = envelope.stream_version as i64;
    let at = envelope.occurred_at;
    // Sets `set` on the incident ($1 the incident, $2 the version, $3 the time; more from $4).
    let update = |set: &str| format!("UPDATE {incidents} SET {set}, stream_version = $2, updated_at = $3 WHERE incident_id = $1");
    let recount = format!(
        "UPDATE {incidents} SET alert_count = (SELECT count(*) FROM {alerts} WHERE incident_id = $1), \
         firing_count = (SELECT count(*) FROM {alerts} WHERE incident_id = $1 AND status = 'firing'), stream_version = $2, updated_at = $3 \
         WHERE incident_id = $1"
    );
    match event {
        IncidentEvent::Opened(opened) => {
            sqlx::query(&format!(
                "INSERT INTO {incidents} (incident_id, org_id, title, status, severity, source, service, environment, labels, opened_at, \
                     split_from, updated_at, stream_version) \
                 VALUES ($1, $4, $5, 'open', $6, $7, $8, $9, $10, $11, $12, $3, $2) ON CONFLICT (incident_id) DO NOTHING"
            ))
            .bind(incident_id)
            .bind(version)
            .bind(at)
            .bind(envelope.org_id.0)
            .bind(&opened.title)
            .bind(opened.severity.as_str())
            .bind(opened.source.as_str())
            .bind(&opened.service)
            .bind(&opened.environment)
            .bind(sqlx::types::Json(&opened.labels))
            .bind(opened.opened_at)
            .bind(opened.split_from)
            .execute(&mut *connection)
            .await?;
        }
        IncidentEvent::AlertAttached(attached) => {
            let alert = &attached.alert;
            let status = if alert.status == AlertStatus::Firing { "firing" } else { "resolved" };
            sqlx::query(&format!(
                "INSERT INTO {alerts} (org_id, incident_id, source, fingerprint, status, title, severity, service, environment, labels, \
                     annotations, links, starts_at, grouping_rule, grouping_score, grouping_reason, delivery_id, attached_at, last_fired_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $18) \
                 ON CONFLICT (incident_id, source, fingerprint) DO NOTHING"
            ))
            .bind(envelope.org_id.0)
            .bind(incident_id)
            .bind(alert.source.as_str())
            .bind(&alert.fingerprint)
            .bind(status)
            .bind(&alert.title)
            .bind(alert.severity.map(|severity| severity.as_str()))
            .bind(&alert.service)
            .bind(&alert.environment)
            .bind(sqlx::types::Json(&alert.labels))
            .bind(sqlx::types::Json(&alert.annotations))
            .bind(sqlx::types::Json(&alert.links))
            .bind(alert.starts_at)
            .bind(text_of(&attached.grouping.rule))
            .bind(attached.grouping.score)
            .bind(&attached.grouping.reason)
            .bind(attached.delivery_id)
            .bind(attached.attached_at)
            .execute(&mut *connection)
            .await?;
            sqlx::query(&recount).bind(incident_id).bind(version).bind(at).execute(&mut *connection).await?;
        }
        IncidentEvent::AlertRefired(refired) => {
            sqlx::query(&format!(
                "UPDATE {alerts} SET status = 'firing', firings = $4, last_fired_at = $5, resolved_at = NULL \
                 WHERE incident_id = $1 AND source = $2 AND fingerprint = $3"
            ))
            .bind(incident_id)
            .bind(refired.source.as_str())
            .bind(&refired.fingerprint)
            .bind(refired.firings as i32)
            .bind(refired.at)
            .execute(&mut *connection)
            .await?;
            sqlx::query(&recount).bind(incident_id).bind(version).bind(at).execute(&mut *connection).await?;
        }
        IncidentEvent::AlertResolved(resolved) => {
            sqlx::query(&format!(
                "UPDATE {alerts} SET status = 'resolved', resolved_at = $4 WHERE incident_id = $1 AND source = $2 AND fingerprint = $3"
            ))
            .bind(incident_id)
            .bind(resolved.source.as_str())
            .bind(&resolved.fingerprint)
            .bind(resolved.resolved_at)
            .execute(&mut *connection)
            .await?;
            sqlx::query(&recount).bind(incident_id).bind(version).bind(at).execute(&mut *connection).await?;
        }
        IncidentEvent::AlertDetached(detached) => {
            sqlx::query(&format!("DELETE FROM {alerts} WHERE incident_id = $1 AND source = $2 AND fingerprint = $3"))
                .bind(incident_id)
                .bind(detached.source.as_str())
                .bind(&detached.fingerprint)
                .execute(&mut *connection)
                .await?;
            sqlx::query(&recount).bind(incident_id).bind(version).bind(at).execute(&mut *connection).await?;
        }
        IncidentEvent::Acknowledged(acknowledged) => {
            sqlx::query(&update("acknowledged_at = $4, acknowledged_by = $5, status = CASE WHEN status = 'open' THEN 'acknowledged' ELSE status END"))
                .bind(incident_id)
                .bind(version)
                .bind(at)
                .bind(acknowledged.at)
                .bind(envelope.actor.to_string())
                .execute(&mut *connection)
                .await?;
        }
        IncidentEvent::SeverityChanged(changed) => {
            sqlx::query(&update("severity = $4")).bind(incident_id).bind(version).bind(at).bind(changed.to.as_str()).execute(&mut *connection).await?;
        }
        IncidentEvent::InvestigationRequested(requested) => {
            sqlx::query(&format!(
                "INSERT INTO {investigations} (investigation_id, org_id, incident_id, status, trigger, requested_at) VALUES ($1, $2, $3, 'queued', $4, $5) \
                 ON CONFLICT (investigation_id) DO NOTHING"
            ))
            .bind(requested.investigation_id)
            .bind(envelope.org_id.0)
            .bind(incident_id)
            .bind(text_of(&requested.trigger))
            .bind(requested.requested_at)
            .execute(&mut *connection)
            .await?;
            sqlx::query(&update("investigation_id = $4, investigation_status = 'queued'"))
                .bind(incident_id)
                .bind(version)
                .bind(at)
                .bind(requested.investigation_id)
                .execute(&mut *connection)
                .await?;
        }
        IncidentEvent::InvestigationStarted(started) => {
            sqlx::query(&format!("UPDATE {investigations} SET status = 'running', session_id = $2, started_at = $3, limits = $4 WHERE investigation_id = $1"))
                .bind(started.investigation_id)
                .bind(started.session_id)
                .bind(started.started_at)
                .bind(sqlx::types::Json(&started.limits))
                .execute(&mut *connection)
                .await?;
            sqlx::query(&update("investigation_status = 'running'")).bind(incident_id).bind(version).bind(at).execute(&mut *connection).await?;
        }
        IncidentEvent::ThoughtRecorded(thought) => {
            sqlx::query(&format!("UPDATE {investigations} SET thoughts = GREATEST(thoughts, $2) WHERE investigation_id = $1"))
                .bind(thought.investigation_id)
                .bind(thought.seq as i32)
                .execute(&mut *connection)
                .await?;
            sqlx::query(&update("investigation_status = investigation_status")).bind(incident_id).bind(version).bind(at).execute(&mut *connection).await?;
        }
        IncidentEvent::InvestigationCompleted(completed) => {
            let confidence = text_of(&completed.rca.root_cause.confidence);
            sqlx::query(&format!(
                "UPDATE {investigations} SET status = 'completed', ended_at = $2, rca = $3, confidence = $4, tool_calls = $5, tokens = $6 \
                 WHERE investigation_id = $1"
            ))
            .bind(completed.investigation_id)
            .bind(completed.completed_at)
            .bind(sqlx::types::Json(&completed.rca))
            .bind(&confidence)
            .bind(completed.tool_calls as i32)
            .bind(completed.tokens as i32)
            .execute(&mut *connection)
            .await?;
            sqlx::query(&update("investigation_status = 'completed', confidence = $4, rca_summary = $5, first_rca_at = COALESCE(first_rca_at, $6)"))
                .bind(incident_id)
                .bind(version)
                .bind(at)
                .bind(&confidence)
                .bind(&completed.rca.summary)
                .bind(completed.completed_at)
                .execute(&mut *connection)
                .await?;
        }
        IncidentEvent::InvestigationFailed(failed) => {
            sqlx::query(&format!("UPDATE {investigations} SET status = 'failed', ended_at = $2, failure_reason = $3, failure_message = $4 WHERE investigation_id = $1"))
                .bind(failed.investigation_id)
                .bind(failed.failed_at)
                .bind(text_of(&failed.reason))
                .bind(&failed.message)
                .execute(&mut *connection)
                .await?;
            sqlx::query(&update("investigation_status = 'failed'")).bind(incident_id).bind(version).bind(at).execute(&mut *connection).await?;
        }
        IncidentEvent::Resolved(resolved) => {
            sqlx::query(&update("status = 'resolved', resolved_at = $4, resolution = $5, duration_secs = $6"))
                .bind(incident_id)
                .bind(version)
                .bind(at)
                .bind(resolved.resolved_at)
                .bind(text_of(&resolved.resolution))
                .bind(resolved.duration_secs as i64)
                .execute(&mut *connection)
                .await?;
        }
        IncidentEvent::Reopened(_) => {
            sqlx::query(&update(
                "status = CASE WHEN acknowledged_at IS NULL THEN 'open' ELSE 'acknowledged' END, resolved_at = NULL, resolution = NULL, duration_secs = NULL",
            ))
            .bind(incident_id)
            .bind(version)
            .bind(at)
            .execute(&mut *connection)
            .await?;
        }
        IncidentEvent::Merged(merged) => {
            sqlx::query(&update("status = 'merged', merged_into = $4")).bind(incident_id).bind(version).bind(at).bind(merged.into).execute(&mut *connection).await?;
        }
        IncidentEvent::PostmortemSaved(saved) => {
            sqlx::query(&format!(
                "INSERT INTO {} (org_id, incident_id, version, markdown, origin, restored_from, saved_by, saved_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
                 ON CONFLICT (incident_id, version) DO NOTHING",
                tables.get("incident_postmortems")
            ))
            .bind(envelope.org_id.0)
            .bind(incident_id)
            .bind(saved.version as i32)
            .bind(&saved.markdown)
            .bind(text_of(&saved.origin))
            .bind(saved.restored_from.map(|version| version as i32))
            .bind(envelope.actor.to_string())
            .bind(at)
            .execute(&mut *connection)
            .await?;
            sqlx::query(&update("postmortem_version = $4")).bind(incident_id).bind(version).bind(at).bind(saved.version as i32).execute(&mut *connection).await?;
        }
    }
    Ok(())
}
