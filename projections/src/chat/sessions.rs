//! Chat sessions as the gateway lists them. Each row remembers the stream version it reflects, so
//! a redelivered event changes nothing.

use async_trait::async_trait;
use aurora_events::chat::ChatSessionEvent;
use aurora_events::{Envelope, EventPayload};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::{Projection, TableNames};

pub struct ChatSessions;

#[async_trait]
impl Projection for ChatSessions {
    fn name(&self) -> &'static str {
        "chat_sessions"
    }

    fn categories(&self) -> Vec<&'static str> {
        vec![ChatSessionEvent::CATEGORY]
    }

    fn tables(&self) -> &'static [&'static str] {
        &["chat_sessions"]
    }

    async fn apply(&self, connection: &mut PgConnection, tables: &TableNames, events: &[Envelope]) -> Result<(), sqlx::Error> {
        let table = tables.get("chat_sessions");
        for envelope in events {
            let event = ChatSessionEvent::decode(&envelope.event_type, envelope.schema_version, envelope.payload.clone())
                .map_err(|error| sqlx::Error::Decode(Box::new(error)))?;
            let session_id = Uuid::parse_str(envelope.stream.id()).map_err(|error| sqlx::Error::Decode(Box::new(error)))?;
            let version = envelope.stream_version as i64;
            match event {
                ChatSessionEvent::Created(created) => {
                    sqlx::query(&format!(
                        "INSERT INTO {table} (session_id, org_id, title, owner, archived, version, created_at, updated_at) \
                         VALUES ($1, $2, $3, $4, false, $5, $6, $6) ON CONFLICT (session_id) DO NOTHING"
                    ))
                    .bind(session_id)
                    .bind(envelope.org_id.0)
                    .bind(&created.title)
                    .bind(created.owner.to_string())
                    .bind(version)
                    .bind(envelope.occurred_at)
                    .execute(&mut *connection)
                    .await?;
                }
                ChatSessionEvent::Renamed(renamed) => {
                    sqlx::query(&format!(
                        "UPDATE {table} SET title = $2, version = $3, updated_at = $4 WHERE session_id = $1 AND version < $3"
                    ))
                    .bind(session_id)
                    .bind(&renamed.title)
                    .bind(version)
                    .bind(envelope.occurred_at)
                    .execute(&mut *connection)
                    .await?;
                }
                ChatSessionEvent::Archived(_) => {
                    sqlx::query(&format!(
                        "UPDATE {table} SET archived = true, version = $2, updated_at = $3 WHERE session_id = $1 AND version < $2"
                    ))
                    .bind(session_id)
                    .bind(version)
                    .bind(envelope.occurred_at)
                    .execute(&mut *connection)
                    .await?;
                }
                ChatSessionEvent::Deleted(_) => {
                    sqlx::query(&format!(
                        "UPDATE {table} SET deleted = true, version = $2, updated_at = $3 WHERE session_id = $1 AND version < $2"
                    ))
                    .bind(session_id)
                    .bind(version)
                    .bind(envelope.occurred_at)
                    .execute(&mut *connection)
                    .await?;
                }
                // Every turn event moves the session's version (the one `If-Match` compares) and
                // its last activity.
                _ => {
                    sqlx::query(&format!("UPDATE {table} SET version = $2, updated_at = $3 WHERE session_id = $1 AND version < $2"))
                        .bind(session_id)
                        .bind(version)
                        .bind(envelope.occurred_at)
                        .execute(&mut *connection)
                        .await?;
                }
            }
        }
        Ok(())
    }
}
