//! Tools over the organisation's chat sessions.


use async_trait::async_trait;
use aurora_commands::CommandMeta;
use aurora_domain::chat::{ChatSession, ChatSessionCommand};
use aurora_events::identity::Role;
use aurora_events::chat::ChatSessionEvent;
use aurora_events::EventPayload;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{json, Value};
use uuid::Uuid;

use super::{Effect, Registry, Tool, ToolContext, ToolError};

/// Registers the chat tools.
pub fn register(tools: &mut Registry) {
    tools.add(ListChatSessions);
    tools.add(ReadChatSession);
    tools.add(ArchiveChatSession);
}


#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListSessionsArgs {
    /// Include archived sessions.
    #[serde(default)]
    pub include_archived: bool,
    /// At most this many sessions, 1 to 50 (default 20).
    #[serde(default)]
    pub limit: Option<i64>,
}

/// Lists the organisation's chat sessions.
pub struct ListChatSessions;

#[async_trait]
impl Tool for ListChatSessions {
    type Args = ListSessionsArgs;
    const NAME: &'static str = "list_chat_sessions";
    const DESCRIPTION: &'static str = "List the organisation's chat sessions, most recently active first.";

    async fn run(&self, context: &ToolContext, args: ListSessionsArgs) -> Result<Value, ToolError> {
        let limit = args.limit.unwrap_or(20).clamp(1, 50);
        let mut read = context.read_models().await?;
        let rows: Vec<(Uuid, String, bool, chrono::DateTime<chrono::Utc>)> = sqlx::query_as(
            "SELECT session_id, title, archived, updated_at FROM chat_sessions \
             WHERE org_id = $1 AND NOT deleted AND ($2 OR NOT archived) ORDER BY updated_at DESC LIMIT $3",
        )
        .bind(context.org_id.0)
        .bind(args.include_archived)
        .bind(limit)
        .fetch_all(&mut *read)
        .await?;
        Ok(json!(rows
            .into_iter()
            .map(|(session_id, title, archived, updated_at)| json!({
                "session_id": session_id, "title": title, "archived": archived, "updated_at": updated_at,
            }))
            .collect::<Vec<_>>()))
    }
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReadSessionArgs {
    pub session_id: Uuid,
    /// The last this many messages, 1 to 50 (default 20).
    #[serde(default)]
    pub limit: Option<i64>,
}

/// Reads one chat session and its latest messages.
pub struct ReadChatSession;

#[async_trait]
impl Tool for ReadChatSession {
    type Args = ReadSessionArgs;
    const NAME: &'static str = "read_chat_session";
    const DESCRIPTION: &'static str = "Read a chat session of the organisation: its title, state and latest messages.";

    async fn run(&self, context: &ToolContext, args: ReadSessionArgs) -> Result<Value, ToolError> {
        let limit = args.limit.unwrap_or(20).clamp(1, 50);
        let mut read = context.read_models().await?;
        let session: Option<(String, bool)> =
            sqlx::query_as("SELECT title, archived FROM chat_sessions WHERE org_id = $1 AND session_id = $2 AND NOT deleted")
                .bind(context.org_id.0)
                .bind(args.session_id)
                .fetch_optional(&mut *read)
                .await?;
        let Some((title, archived)) = session else {
            return Err(ToolError::Refused(format!("there is no chat session {}", args.session_id)));
        };
        let mut messages: Vec<(String, String)> = sqlx::query_as(
            "SELECT kind, text FROM chat_messages WHERE org_id = $1 AND session_id = $2 AND kind IN ('user', 'assistant') \
             ORDER BY position DESC LIMIT $3",
        )
        .bind(context.org_id.0)
        .bind(args.session_id)
        .bind(limit)
        .fetch_all(&mut *read)
        .await?;
        messages.reverse();
        Ok(json!({
            "session_id": args.session_id, "title": title, "archived": archived,
            "messages": messages.into_iter().map(|(kind, text)| json!({ "role": kind, "text": text })).collect::<Vec<_>>(),
        }))
    }
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ArchiveSessionArgs {
    pub session_id: Uuid,
    /// Why, for the audit log.
    #[serde(default)]
    pub reason: Option<String>,
}

/// Archives a chat session: it stays readable but takes no new turns.
pub struct ArchiveChatSession;

#[async_trait]
impl Tool for ArchiveChatSession {
    type Args = ArchiveSessionArgs;
    const NAME: &'static str = "archive_chat_session";
    const DESCRIPTION: &'static str = "Archive a chat session of the organisation. Needs a person's confirmation.";
    const EFFECT: Effect = Effect::Destructive;

    async fn run(&self, context: &ToolContext, args: ArchiveSessionArgs) -> Result<Value, ToolError> {
        if context.role < Role::Editor {
            return Err(ToolError::Refused("archiving a session needs the editor role".into()));
        }
        // Idempotent per tool call: a second delivery of the same call appends nothing.
        let meta = CommandMeta::idempotent(context.org_id, context.actor.clone(), context.tool_call_key);
        let command = ChatSessionCommand::Archive { reason: args.reason };
        match context.commands.handle::<ChatSession>(&ChatSessionEvent::stream_of(args.session_id), command, &meta, None).await {
            Ok(handled) => Ok(json!({ "session_id": args.session_id, "archived": true, "stream_version": handled.stream_version })),
            Err(aurora_commands::HandleError::Domain(error)) => Err(ToolError::Refused(error.to_string())),
            Err(error) => Err(ToolError::Unavailable(error.to_string())),
        }
    }
}
