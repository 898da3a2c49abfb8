//! The connection feature's read model: one row per connection, its status and what it reaches.
//! Each row remembers the stream version it reflects, so a redelivered event changes nothing.

use std::sync::Arc;

use async_trait::async_trait;
use aurora_events::connection::{AuthMethod, ConnectionEvent};
use aurora_events::{Envelope, EventPayload};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::{Projection, Projections, TableNames};

pub struct Connections;

fn method_name(method: AuthMethod) -> &'static str {
    match method {
        AuthMethod::Oauth => "oauth",
        AuthMethod::Key => "key",
        AuthMethod::Role => "role",
    }
}

#[async_trait]
impl Projection for Connections {
    fn name(&self) -> &'static str {
        "connections"
    }

    fn categories(&self) -> Vec<&'static str> {
        vec![ConnectionEvent::CATEGORY]
    }

    fn tables(&self) -> &'static [&'static str] {
        &["connections"]
    }

    async fn apply(&self, connection: &mut PgConnection, tables: &TableNames, events: &[Envelope]) -> Result<(), sqlx::Error> {
        let table = tables.get("connections");
        for envelope in events {
            let event = ConnectionEvent::decode(&envelope.event_type, envelope.schema_version, envelope.payload.clone())
                .map_err(|error| sqlx::Error::Decode(Box::new(error)))?;
            let connection_id = Uuid::parse_str(envelope.stream.id()).map_err(|error| sqlx::Error::Decode(Box::new(error)))?;
            let version = envelope.stream_version as i64;
            let at = envelope.occurred_at;
            let update = |set: &str| format!("UPDATE {table} SET {set}, version = $2, updated_at = $3 WHERE connection_id = $1 AND version < $2");
            match event {
                ConnectionEvent::Established(established) => {
                    sqlx::query(&format!(
                        "INSERT INTO {table} (connection_id, org_id, provider, method, name, account, secret_ref, secret_version, scopes, \
                         status, expires_at, established_by, created_at, updated_at, version) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 'connected', $10, $11, $12, $12, $13) ON CONFLICT (connection_id) DO NOTHING"
                    ))
                    .bind(connection_id)
                    .bind(envelope.org_id.0)
                    .bind(established.provider.as_str())
                    .bind(method_name(established.method))
                    .bind(&established.name)
                    .bind(&established.account)
                    .bind(&established.secret_ref)
                    .bind(established.secret_version as i64)
                    .bind(&established.scopes)
                    .bind(established.expires_at)
                    .bind(envelope.actor.to_string())
                    .bind(at)
                    .bind(version)
                    .execute(&mut *connection)
                    .await?;
                }
                ConnectionEvent::Refreshed(refreshed) => {
                    sqlx::query(&update(
                        "secret_version = $4, expires_at = $5, refreshed_at = $3, status = 'connected', needs_reconnect = false",
                    ))
                    .bind(connection_id)
                    .bind(version)
                    .bind(at)
                    .bind(refreshed.secret_version as i64)
                    .bind(refreshed.expires_at)
                    .execute(&mut *connection)
                    .await?;
                }
                ConnectionEvent::Rotated(rotated) => {
                    sqlx::query(&update("secret_version = $4, account = $5, status = 'connected', needs_reconnect = false, last_error = NULL"))
                        .bind(connection_id)
                        .bind(version)
                        .bind(at)
                        .bind(rotated.secret_version as i64)
                        .bind(&rotated.account)
                        .execute(&mut *connection)
                        .await?;
                }
                ConnectionEvent::Failed(failed) => {
                    let stage = serde_json::to_value(failed.stage).ok().and_then(|stage| stage.as_str().map(str::to_owned));
                    sqlx::query(&update(
                        "last_error = $4, last_error_stage = $5, last_error_at = $3, needs_reconnect = needs_reconnect OR $6, \
                         status = CASE WHEN $6 THEN 'failed' ELSE status END",
                    ))
                    .bind(connection_id)
                    .bind(version)
                    .bind(at)
                    .bind(&failed.reason)
                    .bind(stage)
                    .bind(failed.needs_reconnect)
                    .execute(&mut *connection)
                    .await?;
                }
                ConnectionEvent::InventoryRecorded(recorded) => {
                    let items = serde_json::to_value(&recorded.items).map_err(|error| sqlx::Error::Decode(Box::new(error)))?;
                    sqlx::query(&update("inventory = $4, inventory_omitted = $5, inventory_at = $3"))
                        .bind(connection_id)
                        .bind(version)
                        .bind(at)
                        .bind(items)
                        .bind(recorded.omitted as i64)
                        .execute(&mut *connection)
                        .await?;
                }
                ConnectionEvent::Removed(_) => {
                    sqlx::query(&update("status = 'removed', expires_at = NULL"))
                        .bind(connection_id)
                        .bind(version)
                        .bind(at)
                        .execute(&mut *connection)
                        .await?;
                }
            }
        }
        Ok(())
    }
}

/// Registers the connections read model.
pub fn register(projections: &mut Projections) {
    projections.add(Arc::new(Connections));
}
