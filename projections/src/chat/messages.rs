//! A session's conversation as the web UI pages through it: one row per event worth showing, keyed
//! by the event id (so a redelivered event changes nothing) and ordered by stream version.

use async_trait::async_trait;
use aurora_events::chat::ChatSessionEvent;
use aurora_events::{Envelope, EventPayload};
use serde_json::{json, Value};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::{Projection, TableNames};

pub struct ChatMessages;

/// What one event shows: its kind, turn, text and details; `None` for events not shown.
fn shown(event: &ChatSessionEvent) -> Option<(&'static str, Uuid, String, Value)> {
    use ChatSessionEvent as E;
    Some(match event {
        E::MessageSubmitted(submitted) => ("user", submitted.turn_id, submitted.text.clone(), json!({ "mode": submitted.mode })),
        E::AssistantMessageCompleted(answer) => (
            "assistant",
            answer.turn_id,
            answer.text.clone(),
            json!({
                "llm_calls": answer.llm_calls, "tool_calls": answer.tool_calls,
                "prompt_tokens": answer.prompt_tokens, "completion_tokens": answer.completion_tokens,
            }),
        ),
        E::ToolCallRequested(call) => (
            "tool_call",
            call.turn_id,
            call.name.clone(),
            json!({ "tool_call_id": call.tool_call_id, "arguments": call.arguments, "destructive": call.destructive }),
        ),
        E::ToolCallCompleted(done) => (
            "tool_result",
            done.turn_id,
            String::new(),
            json!({ "tool_call_id": done.tool_call_id, "result": done.result, "truncated": done.truncated, "status": "completed" }),
        ),
        E::ToolCallFailed(failed) => {
            ("tool_result", failed.turn_id, failed.error.clone(), json!({ "tool_call_id": failed.tool_call_id, "status": "failed" }))
        }
        E::ConfirmationRequested(requested) => (
            "confirmation",
            requested.turn_id,
            requested.tool.clone(),
            json!({
                "confirmation_id": requested.confirmation_id, "tool_call_id": requested.tool_call_id,
                "arguments": requested.arguments, "expires_at": requested.expires_at,
            }),
        ),
        E::TurnFailed(failed) => ("notice", failed.turn_id, failed.message.clone(), json!({ "reason": failed.reason })),
        E::TurnCancelled(cancelled) => ("notice", cancelled.turn_id, "the turn was cancelled".into(), json!({ "reason": "cancelled" })),
        _ => return None,
    })
}

#[async_trait]
impl Projection for ChatMessages {
    fn name(&self) -> &'static str {
        "chat_messages"
    }

    fn categories(&self) -> Vec<&'static str> {
        vec![ChatSessionEvent::CATEGORY]
    }

    fn tables(&self) -> &'static [&'static str] {
        &["chat_messages"]
    }

    async fn apply(&self, connection: &mut PgConnection, tables: &TableNames, events: &[Envelope]) -> Result<(), sqlx::Error> {
        let table = tables.get("chat_messages");
        for envelope in events {
            let event = ChatSessionEvent::decode(&envelope.event_type, envelope.schema_version, envelope.payload.clone())
                .map_err(|error| sqlx::Error::Decode(Box::new(error)))?;
            let Some((kind, turn_id, text, data)) = shown(&event) else { continue };
            let session_id = Uuid::parse_str(envelope.stream.id()).map_err(|error| sqlx::Error::Decode(Box::new(error)))?;
            sqlx::query(&format!(
                "INSERT INTO {table} (event_id, org_id, session_id, turn_id, position, kind, text, data, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (event_id) DO NOTHING"
            ))
            .bind(envelope.id)
            .bind(envelope.org_id.0)
            .bind(session_id)
            .bind(turn_id)
            .bind(envelope.stream_version as i64)
            .bind(kind)
            .bind(text)
            .bind(data)
            .bind(envelope.occurred_at)
            .execute(&mut *connection)
            .await?;
        }
        Ok(())
    }
}
