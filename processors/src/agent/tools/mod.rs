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
use aurora_commands::CommandHandler;
use aurora_events::chat::ChatMode;
use aurora_events::identity::Role;
use aurora_events::OrgId;
use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde_json::Value;
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

aurora_events::features!(Registry: audit, chat);

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
