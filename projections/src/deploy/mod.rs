//! The deploy feature's read model: `deployments`, one row per saved plan and what became of it
//! (who asked, in which session, what the plan changes, who approved, when, the result, the
//! state version it left). Each row remembers the stream version it reflects, so a redelivered
//! event changes nothing.

use std::sync::Arc;

use async_trait::async_trait;
use aurora_events::deploy::DeployEvent;
use aurora_events::{Envelope, EventPayload};
use serde_json::json;
use sqlx::PgConnection;

use crate::{Projection, Projections, TableNames};

pub struct Deployments;

/// Registers the deployments read model.
pub fn register(projections: &mut Projections) {
    projections.add(Arc::new(Deployments));
}

fn decode_error(error: impl std::error::Error + Send + Sync + 'static) -> sqlx::Error {
    sqlx::Error::Decode(Box::new(error))
}

#[async_trait]
impl Projection for Deployments {
    fn name(&self) -> &'static str {
        "deployments"
    }

    fn categories(&self) -> Vec<&'static str> {
        vec![DeployEvent::CATEGORY]
    }

    fn tables(&self) -> &'static [&'static str] {
        &["deployments"]
    }

    async fn apply(&self, connection: &mut PgConnection, tables: &TableNames, events: &[Envelope]) -> Result<(), sqlx::Error> {
        let table = tables.get("deployments");
        for envelope in events {
            let event = DeployEvent::decode(&envelope.event_type, envelope.schema_version, envelope.payload.clone()).map_err(decode_error)?;
            let version = envelope.stream_version as i64;
            let at = envelope.occurred_at;
            let update = |set: &str| {
                format!("UPDATE {table} SET {set}, stream_version = $2 WHERE deployment_id = $1 AND stream_version < $2")
            };
            match event {
                DeployEvent::Planned(planned) => {
                    let changes = &planned.changes;
                    let resources = match changes.counts {
                        Some(counts) => counts.create + counts.change + counts.replace + counts.destroy,
                        None => (changes.create.len() + changes.change.len() + changes.replace.len() + changes.destroy.len()) as u32,
                    };
                    sqlx::query(&format!(
                        "INSERT INTO {table} (deployment_id, org_id, session_id, status, destroy, requested_by, files, changes, resources, \
                             plan_prefix, planned_at, stream_version) \
                         VALUES ($1, $3, $4, 'planned', $5, $6, $7, $8, $9, $10, $11, $2) ON CONFLICT (deployment_id) DO NOTHING"
                    ))
                    .bind(planned.deployment_id)
                    .bind(version)
                    .bind(envelope.org_id.0)
                    .bind(planned.session_id)
                    .bind(planned.destroy)
                    .bind(envelope.actor.to_string())
                    .bind(json!(planned.files))
                    .bind(json!(planned.changes))
                    .bind(resources as i32)
                    .bind(&planned.plan_prefix)
                    .bind(at)
                    .execute(&mut *connection)
                    .await?;
                }
                DeployEvent::ApplyStarted(started) => {
                    sqlx::query(&update("status = 'applying', approved_by = $3, started_at = $4"))
                        .bind(started.deployment_id)
                        .bind(version)
                        .bind(started.approved_by.map(|actor| actor.to_string()))
                        .bind(at)
                        .execute(&mut *connection)
                        .await?;
                }
                DeployEvent::Applied(applied) => {
                    sqlx::query(&update(
                        "status = 'applied', state_version = $3, outputs = $4, output_key = $5, duration_ms = $6, finished_at = $7",
                    ))
                    .bind(applied.deployment_id)
                    .bind(version)
                    .bind(applied.state_version.map(|version| version as i32))
                    .bind(&applied.outputs)
                    .bind(&applied.output_key)
                    .bind(applied.duration_ms as i64)
                    .bind(at)
                    .execute(&mut *connection)
                    .await?;
                }
                DeployEvent::Failed(failed) => {
                    let stage = serde_json::to_value(failed.stage).ok().and_then(|stage| stage.as_str().map(str::to_owned));
                    sqlx::query(&update(
                        "status = 'failed', failure_stage = $3, failure_reason = $4, output_key = $5, state_version = $6, \
                         duration_ms = $7, finished_at = $8",
                    ))
                    .bind(failed.deployment_id)
                    .bind(version)
                    .bind(stage)
                    .bind(&failed.reason)
                    .bind(&failed.output_key)
                    .bind(failed.state_version.map(|version| version as i32))
                    .bind(failed.duration_ms as i64)
                    .bind(at)
                    .execute(&mut *connection)
                    .await?;
                }
                DeployEvent::OutcomeUnknown(unknown) => {
                    sqlx::query(&update("status = 'outcome_unknown', lost_lock = $3, state_version = $4, finished_at = $5"))
                        .bind(unknown.deployment_id)
                        .bind(version)
                        .bind(&unknown.lock)
                        .bind(unknown.state_version.map(|version| version as i32))
                        .bind(at)
                        .execute(&mut *connection)
                        .await?;
                }
            }
        }
        Ok(())
    }
}
