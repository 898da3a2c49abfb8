//! Read-only log and metric tools over the organisation's observability connections: Datadog
//! log search, Splunk search, and Grafana (Loki or Prometheus through the data source proxy).

use async_trait::async_trait;
use aurora_adapters::clouds::{datadog::Datadog, grafana::Grafana, splunk::Splunk};
use aurora_events::connection::Provider;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{argument, listing, listing_in_window, Registry, Tool, ToolContext, ToolError, Window};

/// Registers the observability tools.
pub fn register(tools: &mut Registry) {
    tools.add(DatadogLogs);
    tools.add(SplunkSearch);
    tools.add(GrafanaDatasources);
    tools.add(GrafanaQuery);
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct SearchArgs {
    /// The query in the provider's own language (Datadog log search syntax; Splunk SPL).
    pub query: String,
    #[serde(flatten)]
    pub window: Window,
    /// At most this many results (1 to 200, default 50).
    #[serde(default)]
    pub limit: Option<usize>,
    /// Which connection, when the organisation has several of the provider (its name).
    #[serde(default)]
    pub connection: Option<String>,
}

pub struct DatadogLogs;

#[async_trait]
impl Tool for DatadogLogs {
    type Args = SearchArgs;
    const NAME: &'static str = "datadog_logs";
    const DESCRIPTION: &'static str = "Search Datadog logs in a time window with Datadog's log search syntax, e.g. service:checkout status:error.";
    const PROVIDER: Option<Provider> = Some(Provider::Datadog);

    async fn run(&self, context: &ToolContext, args: SearchArgs) -> Result<Value, ToolError> {
        let query = argument("query", &args.query, 2000)?;
        let (start, end) = args.window.resolve()?;
        let limit = args.limit.unwrap_or(50).clamp(1, 200);
        let (_, secret) = context.credentials(Provider::Datadog, args.connection.as_deref()).await?;
        let logs = Datadog::new(&context.providers, &secret)?.search_logs(query, &start.to_rfc3339(), &end.to_rfc3339(), limit + 1).await?;
        Ok(listing_in_window(logs, limit, "query, a shorter window", (start, end)))
    }
}

pub struct SplunkSearch;

#[async_trait]
impl Tool for SplunkSearch {
    type Args = SearchArgs;
    const NAME: &'static str = "splunk_search";
    const DESCRIPTION: &'static str = "Run a Splunk search (SPL) over a time window, e.g. index=web status=500.";
    const PROVIDER: Option<Provider> = Some(Provider::Splunk);

    async fn run(&self, context: &ToolContext, args: SearchArgs) -> Result<Value, ToolError> {
        let query = argument("query", &args.query, 2000)?;
        let (start, end) = args.window.resolve()?;
        let limit = args.limit.unwrap_or(50).clamp(1, 200);
        let (_, secret) = context.credentials(Provider::Splunk, args.connection.as_deref()).await?;
        let splunk = Splunk::new(&context.providers, &secret).await?;
        let results = splunk.search(query, &start.to_rfc3339(), &end.to_rfc3339(), limit + 1).await?;
        Ok(listing_in_window(results, limit, "query, a shorter window", (start, end)))
    }
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DatasourcesArgs {
    /// Which Grafana connection, when the organisation has several (its name).
    #[serde(default)]
    pub connection: Option<String>,
}

pub struct GrafanaDatasources;

#[async_trait]
impl Tool for GrafanaDatasources {
    type Args = DatasourcesArgs;
    const NAME: &'static str = "grafana_datasources";
    const DESCRIPTION: &'static str = "List Grafana's data sources (uid, name, type), to choose one for grafana_query.";
    const PROVIDER: Option<Provider> = Some(Provider::Grafana);

    async fn run(&self, context: &ToolContext, args: DatasourcesArgs) -> Result<Value, ToolError> {
        let (_, secret) = context.credentials(Provider::Grafana, args.connection.as_deref()).await?;
        Ok(listing(Grafana::new(&context.providers, &secret).await?.datasources().await?, 100, "connection"))
    }
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct GrafanaQueryArgs {
    /// The data source's uid (from grafana_datasources).
    pub datasource_uid: String,
    /// LogQL for a Loki data source, PromQL for a Prometheus one.
    pub query: String,
    #[serde(flatten)]
    pub window: Window,
    /// At most this many log lines (1 to 500, default 100).
    #[serde(default)]
    pub limit: Option<usize>,
    /// Which Grafana connection, when the organisation has several (its name).
    #[serde(default)]
    pub connection: Option<String>,
}

pub struct GrafanaQuery;

#[async_trait]
impl Tool for GrafanaQuery {
    type Args = GrafanaQueryArgs;
    const NAME: &'static str = "grafana_query";
    const DESCRIPTION: &'static str = "Query a Loki (LogQL) or Prometheus (PromQL) data source through Grafana over a time window.";
    const PROVIDER: Option<Provider> = Some(Provider::Grafana);

    async fn run(&self, context: &ToolContext, args: GrafanaQueryArgs) -> Result<Value, ToolError> {
        let uid = argument("datasource_uid", &args.datasource_uid, 64)?;
        let query = argument("query", &args.query, 2000)?;
        let (start, end) = args.window.resolve()?;
        let (_, secret) = context.credentials(Provider::Grafana, args.connection.as_deref()).await?;
        let grafana = Grafana::new(&context.providers, &secret).await?;
        let mut answer = grafana.query(uid, query, &start.to_rfc3339(), &end.to_rfc3339(), args.limit.unwrap_or(100).clamp(1, 500)).await?;
        answer["window"] = json!({ "start": start, "end": end });
        Ok(answer)
    }
}
