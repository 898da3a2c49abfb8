//! The agent's tools, and the one place a new tool is added: implement [`Tool`] (its arguments
//! are a Rust type whose JSON Schema is what the model sees) and list it in [`Registry::standard`].
//! A tool says whether it only reads or changes something: a destructive tool is never offered in
//! `ask` mode and never runs without a person's yes. Every tool runs as the user who asked, in
//! that user's organisation, reading through the same row-level security as the gateway.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aurora_commands::{CommandHandler, CommandMeta};
use aurora_domain::chat_session::{ChatSession, ChatSessionCommand};
use aurora_events::chat::ChatMode;
use aurora_events::identity::Role;
use aurora_events::{Actor, OrgId, StreamId};
use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};
use sqlx::PgPool;
use uuid::Uuid;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    ReadOnly,
    /// Changes state: offered only in `agent` mode, run only after `confirmation.granted`.
    Destructive,
}

/// Who a tool runs for, and with what.
#[derive(Clone)]
pub struct ToolContext {
    pub org_id: OrgId,
    pub user_id: Uuid,
    pub role: Role,
    /// The tool call, so that a command a tool issues is idempotent per call.
    pub tool_call_key: Uuid,
    pub pool: PgPool,
    pub commands: CommandHandler,
}

impl ToolContext {
    /// A read-only transaction that sees the user's organisation only.
    async fn read_models(&self) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, ToolError> {
        Ok(aurora_adapters::postgres::tenant_transaction(&self.pool, self.org_id.0).await?)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    /// Something the model can fix by asking differently.
    #[error("{0}")]
    Refused(String),
    #[error("the tool could not reach its data: {0}")]
    Unavailable(String),
}

impl From<sqlx::Error> for ToolError {
    fn from(error: sqlx::Error) -> Self {
        ToolError::Unavailable(error.to_string())
    }
}

/// A tool the agent can call.
#[async_trait]
pub trait Tool: Send + Sync + 'static {
    type Args: DeserializeOwned + JsonSchema + Send;
    const NAME: &'static str;
    const DESCRIPTION: &'static str;
    const EFFECT: Effect = Effect::ReadOnly;
    const TIMEOUT: Duration = Duration::from_secs(30);
    /// Largest result kept in the `tool_call.completed` event and sent to the model, in bytes of JSON.
    const OUTPUT_CAP: usize = 16 * 1024;

    /// Whether the organisation can use the tool (connectors add tools that need a connected provider).
    fn available(&self, _org_id: OrgId) -> bool {
        true
    }

    async fn run(&self, context: &ToolContext, args: Self::Args) -> Result<Value, ToolError>;
}

/// What the runtime needs of any tool, whatever its argument type.
#[async_trait]
pub trait AnyTool: Send + Sync {
    fn name(&self) -> &'static str;
    fn description(&self) -> &'static str;
    fn parameters(&self) -> Value;
    fn effect(&self) -> Effect;
    fn timeout(&self) -> Duration;
    fn output_cap(&self) -> usize;
    fn available(&self, org_id: OrgId) -> bool;
    /// Parses `arguments` (the model's JSON text) and runs the tool.
    async fn call(&self, context: &ToolContext, arguments: &Value) -> Result<Value, ToolError>;
}

#[async_trait]
impl<T: Tool> AnyTool for T {
    fn name(&self) -> &'static str {
        T::NAME
    }

    fn description(&self) -> &'static str {
        T::DESCRIPTION
    }

    fn parameters(&self) -> Value {
        let mut schema = serde_json::to_value(schemars::schema_for!(T::Args)).expect("schemas serialize");
        if let Some(object) = schema.as_object_mut() {
            object.remove("$schema");
            object.remove("title");
        }
        schema
    }

    fn effect(&self) -> Effect {
        T::EFFECT
    }

    fn timeout(&self) -> Duration {
        T::TIMEOUT
    }

    fn output_cap(&self) -> usize {
        T::OUTPUT_CAP
    }

    fn available(&self, org_id: OrgId) -> bool {
        Tool::available(self, org_id)
    }

    async fn call(&self, context: &ToolContext, arguments: &Value) -> Result<Value, ToolError> {
        let args: T::Args = serde_json::from_value(arguments.clone())
            .map_err(|error| ToolError::Refused(format!("the arguments do not fit {}: {error}", T::NAME)))?;
        match tokio::time::timeout(T::TIMEOUT, self.run(context, args)).await {
            Ok(result) => result,
            Err(_) => Err(ToolError::Unavailable(format!("{} did not finish within {:?}", T::NAME, T::TIMEOUT))),
        }
    }
}

/// The tools this build has.
#[derive(Clone)]
pub struct Registry {
    tools: Vec<Arc<dyn AnyTool>>,
}

impl Registry {
    pub fn standard() -> Self {
        Self { tools: vec![Arc::new(ListChatSessions), Arc::new(ReadChatSession), Arc::new(ReadAuditLog), Arc::new(ArchiveChatSession)] }
    }

    /// The tools offered to a turn of `org_id` in `mode`: no destructive tool in `ask` mode.
    pub fn offered(&self, org_id: OrgId, mode: ChatMode) -> Vec<Arc<dyn AnyTool>> {
        self.tools
            .iter()
            .filter(|tool| tool.available(org_id))
            .filter(|tool| mode == ChatMode::Agent || tool.effect() == Effect::ReadOnly)
            .cloned()
            .collect()
    }
}

fn chat_stream(session_id: Uuid) -> StreamId {
    StreamId::new("chat", session_id.to_string()).expect("uuids are valid stream ids")
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
        let meta = CommandMeta::idempotent(context.org_id, Actor::user(context.user_id.to_string()), context.tool_call_key);
        let command = ChatSessionCommand::Archive { reason: args.reason };
        match context.commands.handle::<ChatSession>(&chat_stream(args.session_id), command, &meta, None).await {
            Ok(handled) => Ok(json!({ "session_id": args.session_id, "archived": true, "stream_version": handled.stream_version })),
            Err(aurora_commands::HandleError::Domain(error)) => Err(ToolError::Refused(error.to_string())),
            Err(error) => Err(ToolError::Unavailable(error.to_string())),
        }
    }
}
