//! The agent's tools, one file per family (`chat`, `audit`, and the connections, knowledge,
//! incidents, deploys and discovery to come). A tool implements [`Tool`] (its arguments are a
//! Rust type whose JSON Schema is what the model sees) and its family's `register` adds it; a new
//! family is one file and one name in the `features!` line below.
//! A tool says whether it only reads or changes something: a destructive tool is never offered in
//! `ask` mode and never runs without a person's yes. Every tool runs as the user who asked, in
//! that user's organisation, reading through the same row-level security as the gateway.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aurora_adapters::clouds::ProviderError;
use aurora_adapters::config::ConnectionsConfig;
use aurora_adapters::secrets::{Secret, SecretError, SecretPath, SecretStore};
use aurora_commands::CommandHandler;
use aurora_events::chat::ChatMode;
use aurora_events::connection::{InventoryItem, Provider};
use aurora_events::identity::Role;
use aurora_events::{Actor, OrgId};
use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde_json::Value;
use sqlx::PgPool;
use uuid::Uuid;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    ReadOnly,
    /// Changes only the chat session's own drafts (its infrastructure workspace): offered only
    /// in `agent` mode, run without a confirmation.
    Drafts,
    /// Changes state: offered only in `agent` mode, run only after `confirmation.granted`.
    Destructive,
}

/// Who a tool runs for, and with what.
#[derive(Clone)]
pub struct ToolContext {
    pub org_id: OrgId,
    /// Who the tool runs for: the user who asked, or the investigator (with a viewer's reach).
    pub actor: Actor,
    pub role: Role,
    /// The person whose yes let a destructive tool run.
    pub approved_by: Option<Actor>,
    /// The model's id of the tool call.
    pub tool_call_id: String,
    /// The tool call, so that a command a tool issues is idempotent per call.
    pub tool_call_key: Uuid,
    pub pool: PgPool,
    pub commands: CommandHandler,
    pub secrets: Arc<dyn SecretStore>,
    pub providers: Arc<ConnectionsConfig>,
    /// The organisation's searchable runbooks and past conversations.
    pub knowledge: aurora_adapters::vectors::search::KnowledgeIndex,
    /// Where the discovered graph is read.
    pub graph: aurora_adapters::graph::GraphStore,
    /// The organisation's live connections, as the turn's step saw them.
    pub connected: Arc<Connected>,
    /// The chat session the tool runs in: its infrastructure workspace.
    pub session_id: Uuid,
    pub objects: aurora_adapters::objects::Objects,
    pub deploy: Arc<aurora_adapters::config::DeployConfig>,
    /// Cancelled when the turn is asked to stop: a long tool stops its work (and its children).
    pub cancel: tokio_util::sync::CancellationToken,
    /// Where a long tool streams what it prints, for the person watching.
    pub output: OutputStream,
}

/// What a running tool prints, streamed to the chat as it comes (a lost piece costs a flicker;
/// the whole is kept where the tool's result says). The default streams nowhere.
#[derive(Clone, Default)]
pub struct OutputStream(Option<Arc<Sink>>);

type Sink = dyn Fn(&str) + Send + Sync;

impl OutputStream {
    pub fn new(send: impl Fn(&str) + Send + Sync + 'static) -> Self {
        Self(Some(Arc::new(send)))
    }

    pub fn send(&self, text: &str) {
        if let Some(send) = &self.0 {
            send(text);
        }
    }
}

impl ToolContext {
    /// A read-only transaction that sees the user's organisation only.
    async fn read_models(&self) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, ToolError> {
        Ok(aurora_adapters::postgres::tenant_transaction(&self.pool, self.org_id.0).await?)
    }

    /// The credentials of the organisation's `provider` connection (the one named `name`, or the
    /// first), read from the secret store now; the caller drops them after its call.
    pub async fn credentials(&self, provider: Provider, name: Option<&str>) -> Result<(&LiveConnection, Secret), ToolError> {
        let connection = self.connected.find(provider, name)?;
        let secret =
            self.secrets.get(&SecretPath::connection(self.org_id.0, connection.connection_id)).await.map_err(|error| match error {
                SecretError::NotFound(_) => ToolError::Refused(format!(
                    "the {} connection `{}` has no stored credentials; an admin must reconnect it",
                    provider.title(),
                    connection.name
                )),
                other => ToolError::Unavailable(other.to_string()),
            })?;
        Ok((connection, secret))
    }
}

/// One of the organisation's live connections, without its credentials.
#[derive(Debug, Clone)]
pub struct LiveConnection {
    pub connection_id: Uuid,
    pub provider: Provider,
    pub name: String,
    pub account: String,
    pub inventory: Vec<InventoryItem>,
    pub inventory_omitted: i64,
}

/// The organisation's live connections: which providers its tools may use, and what the prompt
/// tells the model it can look at; and the memory its admins keep for the agent.
#[derive(Debug, Clone, Default)]
pub struct Connected {
    pub connections: Vec<LiveConnection>,
    pub memory: Option<String>,
    /// Whether discovery found any service of the organisation's.
    pub has_graph: bool,
    /// The estate in brief, once a scan has completed.
    pub graph: Option<aurora_adapters::graph::GraphSummary>,
}

impl Connected {
    /// The organisation's connections that are not removed and need no reconnection, read
    /// through row-level security; with `graph`, the estate's summary from it too, in the same
    /// transaction when the graph is in Postgres (a Bolt store that cannot be read is logged, not
    /// an error: without the summary the prompt is shorter).
    pub async fn load(pool: &PgPool, org_id: OrgId, graph: Option<&aurora_adapters::graph::GraphStore>) -> Result<Self, sqlx::Error> {
        let mut read = aurora_adapters::postgres::tenant_transaction(pool, org_id.0).await?;
        let rows: Vec<(Uuid, String, String, String, serde_json::Value, i64)> = sqlx::query_as(
            "SELECT connection_id, provider, name, account, inventory, inventory_omitted FROM connections \
             WHERE org_id = $1 AND status = 'connected' ORDER BY created_at",
        )
        .bind(org_id.0)
        .fetch_all(&mut *read)
        .await?;
        let connections = rows
            .into_iter()
            .filter_map(|(connection_id, provider, name, account, inventory, inventory_omitted)| {
                Some(LiveConnection {
                    connection_id,
                    provider: provider.parse().ok()?,
                    name,
                    account,
                    inventory: serde_json::from_value(inventory).unwrap_or_default(),
                    inventory_omitted,
                })
            })
            .collect();
        let memory =
            sqlx::query_scalar("SELECT text FROM knowledge_memory WHERE org_id = $1").bind(org_id.0).fetch_optional(&mut *read).await?;
        let has_graph = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM graph_nodes WHERE org_id = $1 AND gone_at IS NULL)")
            .bind(org_id.0)
            .fetch_one(&mut *read)
            .await?;
        let summary = match graph.filter(|_| has_graph) {
            Some(graph) => match graph.reader(&mut read).summary(org_id.0).await {
                Ok(summary) => summary,
                Err(aurora_adapters::graph::GraphError::Database(error)) => return Err(error),
                Err(unavailable) => {
                    tracing::warn!(error = %unavailable, "the estate's summary could not be read");
                    None
                }
            },
            None => None,
        };
        Ok(Self { connections, memory, has_graph, graph: summary })
    }

    pub fn has(&self, provider: Provider) -> bool {
        self.connections.iter().any(|connection| connection.provider == provider)
    }

    /// The `provider` connection named `name` (or whose id it is), or the first one.
    pub fn find(&self, provider: Provider, name: Option<&str>) -> Result<&LiveConnection, ToolError> {
        let mut candidates = self.connections.iter().filter(|connection| connection.provider == provider);
        let found = match name.map(str::trim).filter(|name| !name.is_empty()) {
            Some(name) => {
                candidates.find(|connection| connection.name.eq_ignore_ascii_case(name) || connection.connection_id.to_string() == name)
            }
            None => candidates.next(),
        };
        found.ok_or_else(|| {
            ToolError::Refused(format!(
                "the organisation has no {} connection{}",
                provider.title(),
                name.map(|name| format!(" named `{name}`")).unwrap_or_default()
            ))
        })
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

/// The graph store's own words (its address among them) go to the log, not to the model or the
/// tool call's recorded output, which the organisation's people read.
impl From<aurora_adapters::graph::GraphError> for ToolError {
    fn from(error: aurora_adapters::graph::GraphError) -> Self {
        match error {
            aurora_adapters::graph::GraphError::Database(error) => error.into(),
            unavailable => {
                tracing::warn!(error = %unavailable, "graph store unavailable to a tool");
                ToolError::Unavailable("the service graph cannot be read right now; try again shortly".into())
            }
        }
    }
}

/// A provider's refusal is something the model (or the person) can act on: reconnect, grant a
/// permission, wait, narrow the request. Its message says which.
impl From<ProviderError> for ToolError {
    fn from(error: ProviderError) -> Self {
        match error {
            ProviderError::Timeout { .. } | ProviderError::Unavailable { .. } | ProviderError::RateLimited { .. } => {
                ToolError::Unavailable(error.to_string())
            }
            _ => ToolError::Refused(error.to_string()),
        }
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

    /// The provider whose connection the tool needs; it is offered only when one is connected.
    const PROVIDER: Option<Provider> = None;

    /// Offered only when discovery found services of the organisation's.
    const NEEDS_GRAPH: bool = false;

    async fn run(&self, context: &ToolContext, args: Self::Args) -> Result<Value, ToolError>;

    /// What a destructive tool shows the person asked to confirm it, read when it is requested;
    /// a refusal here fails the call without asking anyone.
    async fn preview(&self, _context: &ToolContext, _args: &Self::Args) -> Result<Option<Value>, ToolError> {
        Ok(None)
    }

    /// A destructive call started, and the processor stopped before its outcome was recorded:
    /// the tool records what it can tell of the lost run, and what the person should do next.
    async fn abandoned(&self, _context: &ToolContext, _args: Self::Args) -> Result<Option<String>, ToolError> {
        Ok(None)
    }
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
    /// The provider the tool needs connected, if any.
    fn provider(&self) -> Option<Provider>;
    fn needs_graph(&self) -> bool;
    /// Parses `arguments` (the model's JSON text) and runs the tool.
    async fn call(&self, context: &ToolContext, arguments: &Value) -> Result<Value, ToolError>;
    /// [`Tool::preview`] of `arguments`.
    async fn preview(&self, context: &ToolContext, arguments: &Value) -> Result<Option<Value>, ToolError>;
    /// [`Tool::abandoned`] of `arguments`.
    async fn abandoned(&self, context: &ToolContext, arguments: &Value) -> Result<Option<String>, ToolError>;
}

fn parse<T: Tool>(arguments: &Value) -> Result<T::Args, ToolError> {
    serde_json::from_value(arguments.clone()).map_err(|error| ToolError::Refused(format!("the arguments do not fit {}: {error}", T::NAME)))
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

    fn provider(&self) -> Option<Provider> {
        T::PROVIDER
    }

    fn needs_graph(&self) -> bool {
        T::NEEDS_GRAPH
    }

    async fn call(&self, context: &ToolContext, arguments: &Value) -> Result<Value, ToolError> {
        let args = parse::<T>(arguments)?;
        match tokio::time::timeout(T::TIMEOUT, self.run(context, args)).await {
            Ok(result) => result,
            Err(_) => Err(ToolError::Unavailable(format!("{} did not finish within {:?}", T::NAME, T::TIMEOUT))),
        }
    }

    async fn preview(&self, context: &ToolContext, arguments: &Value) -> Result<Option<Value>, ToolError> {
        let args = parse::<T>(arguments)?;
        Tool::preview(self, context, &args).await
    }

    async fn abandoned(&self, context: &ToolContext, arguments: &Value) -> Result<Option<String>, ToolError> {
        Tool::abandoned(self, context, parse::<T>(arguments)?).await
    }
}

aurora_events::features!(Registry: audit, aws, azure, chat, deploy, discovery, gcp, github, knowledge, observability);

/// The tools this build has.
#[derive(Clone)]
pub struct Registry {
    tools: Vec<Arc<dyn AnyTool>>,
}

impl Registry {
    /// Every tool of this build, as the families register them.
    pub fn standard() -> Self {
        let mut registry = Self { tools: Vec::new() };
        register_features(&mut registry);
        registry
    }

    /// Registers `tool`; its name must be new.
    pub fn add<T: Tool>(&mut self, tool: T) {
        assert!(!self.tools.iter().any(|known| known.name() == T::NAME), "two tools are named `{}`", T::NAME);
        self.tools.push(Arc::new(tool));
    }

    /// The names of every tool, offered or not.
    pub fn names(&self) -> Vec<&'static str> {
        self.tools.iter().map(|tool| tool.name()).collect()
    }

    /// The tools offered to a turn in `mode` of an organisation with `connected`: a provider's
    /// tools only when it is connected, the graph's only when there is one, no destructive tool
    /// in `ask` mode.
    pub fn offered(&self, connected: &Connected, mode: ChatMode) -> Vec<Arc<dyn AnyTool>> {
        self.tools
            .iter()
            .filter(|tool| tool.provider().is_none_or(|provider| connected.has(provider)))
            .filter(|tool| !tool.needs_graph() || connected.has_graph)
            .filter(|tool| mode == ChatMode::Agent || tool.effect() == Effect::ReadOnly)
            .cloned()
            .collect()
    }
}

/// A time window of a logs tool: the last `since_minutes`, or `start` to `end` (RFC 3339).
#[derive(Debug, Default, serde::Deserialize, JsonSchema)]
pub struct Window {
    /// Minutes before now (default 60, at most 10080, a week). Ignored when `start` is given.
    #[serde(default)]
    pub since_minutes: Option<i64>,
    /// Start of the window, RFC 3339 (e.g. 2026-12-01T10:00:00Z).
    #[serde(default)]
    pub start: Option<String>,
    /// End of the window, RFC 3339 (default now).
    #[serde(default)]
    pub end: Option<String>,
}

impl Window {
    /// The window's bounds, refused when malformed, reversed or longer than a week.
    pub fn resolve(&self) -> Result<(chrono::DateTime<chrono::Utc>, chrono::DateTime<chrono::Utc>), ToolError> {
        let parse = |field: &str, text: &str| {
            chrono::DateTime::parse_from_rfc3339(text.trim())
                .map(|time| time.with_timezone(&chrono::Utc))
                .map_err(|error| ToolError::Refused(format!("`{field}` is not an RFC 3339 time: {error}")))
        };
        let end = match &self.end {
            Some(end) => parse("end", end)?,
            None => chrono::Utc::now(),
        };
        let start = match &self.start {
            Some(start) => parse("start", start)?,
            None => {
                let minutes = self.since_minutes.unwrap_or(60);
                if !(1..=10_080).contains(&minutes) {
                    return Err(ToolError::Refused("`since_minutes` must be between 1 and 10080".into()));
                }
                end - chrono::Duration::minutes(minutes)
            }
        };
        if start >= end {
            return Err(ToolError::Refused("the window's `start` must be before its `end`".into()));
        }
        if end - start > chrono::Duration::days(7) {
            return Err(ToolError::Refused("the window may span at most 7 days; narrow it".into()));
        }
        Ok((start, end))
    }
}

/// A list as the model sees it: at most `limit` items, and when there were more, how many and
/// how to narrow the request.
pub fn listing(items: Vec<Value>, limit: usize, narrow_by: &str) -> Value {
    let total = items.len();
    let shown: Vec<Value> = items.into_iter().take(limit).collect();
    let mut answer = serde_json::json!({ "items": shown, "total": total });
    if total > limit {
        answer["note"] = Value::String(format!("showing {limit} of {total}; narrow the request ({narrow_by}) to see the rest"));
    }
    answer
}

/// [`listing`] of what a window held, with the window it covered.
pub fn listing_in_window(
    items: Vec<Value>,
    limit: usize,
    narrow_by: &str,
    (start, end): (chrono::DateTime<chrono::Utc>, chrono::DateTime<chrono::Utc>),
) -> Value {
    let mut answer = listing(items, limit, narrow_by);
    answer["window"] = serde_json::json!({ "start": start, "end": end });
    answer
}

/// A string argument that must be short and free of control characters.
pub fn argument<'a>(field: &str, value: &'a str, max: usize) -> Result<&'a str, ToolError> {
    let value = value.trim();
    if value.is_empty() || value.chars().count() > max || value.chars().any(char::is_control) {
        return Err(ToolError::Refused(format!("`{field}` must be 1 to {max} characters without control characters")));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_family_is_registered() {
        let names = Registry::standard().names();
        assert!(names.contains(&"list_chat_sessions") && names.contains(&"read_audit_log"), "{names:?}");
    }

    #[test]
    #[should_panic(expected = "two tools are named `read_audit_log`")]
    fn a_second_tool_of_a_known_name_is_refused() {
        Registry::standard().add(audit::ReadAuditLog);
    }
}
