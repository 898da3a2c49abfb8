//! Tools over the audit log.


use async_trait::async_trait;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{Registry, Tool, ToolContext, ToolError};

/// Registers the audit tools.
pub fn register(tools: &mut Registry) {
    tools.add(ReadAuditLog);
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReadAuditArgs {
    /// The stream, e.g. `chat-<session id>` or `org-<organisation id>`.
    pub stream: String,
    /// At most this many entries, newest last, 1 to 100 (default 50).
    #[serde(default)]
    pub limit: Option<i64>,
}

/// Reads the audit log of one stream.
pub struct ReadAuditLog;

#[async_trait]
impl Tool for ReadAuditLog {
    type Args = ReadAuditArgs;
    const NAME: &'static str = "read_audit_log";
    const DESCRIPTION: &'static str = "Read who did what to one stream (a chat session, the organisation), in order.";

    async fn run(&self, context: &ToolContext, args: ReadAuditArgs) -> Result<Value, ToolError> {
        let limit = args.limit.unwrap_or(50).clamp(1, 100);
        let mut read = context.read_models().await?;
        let mut rows: Vec<(i64, String, String, chrono::DateTime<chrono::Utc>)> = sqlx::query_as(
            "SELECT stream_version, event_type, actor, occurred_at FROM audit_log WHERE org_id = $1 AND stream = $2 \
             ORDER BY stream_version DESC LIMIT $3",
        )
        .bind(context.org_id.0)
        .bind(&args.stream)
        .bind(limit)
        .fetch_all(&mut *read)
        .await?;
        rows.reverse();
        Ok(json!(rows
            .into_iter()
            .map(|(version, event_type, actor, occurred_at)| json!({
                "version": version, "type": event_type, "actor": actor, "occurred_at": occurred_at,
            }))
            .collect::<Vec<_>>()))
    }
}
