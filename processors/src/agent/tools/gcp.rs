//! Read-only Google Cloud tools, run with the organisation's Google Cloud connection: projects,
//! GKE clusters, and Cloud Logging over a time window.

use async_trait::async_trait;
use aurora_adapters::clouds::gcp::Gcp;
use aurora_events::connection::Provider;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::Value;

use super::{argument, listing, listing_in_window, Registry, Tool, ToolContext, ToolError, Window};

/// Registers the Google Cloud tools.
pub fn register(tools: &mut Registry) {
    tools.add(ListGcpProjects);
    tools.add(ListGkeClusters);
    tools.add(QueryCloudLogging);
}

async fn client(context: &ToolContext, connection: Option<&str>) -> Result<Gcp, ToolError> {
    let (_, secret) = context.credentials(Provider::Gcp, connection).await?;
    Ok(Gcp::new(&context.providers, &secret)?)
}

fn project_id(project: &str) -> Result<&str, ToolError> {
    let project = argument("project", project, 64)?;
    if !project.chars().all(|character| character.is_ascii_lowercase() || character.is_ascii_digit() || matches!(character, '-' | ':' | '.')) {
        return Err(ToolError::Refused("`project` must be a project id such as my-project-123".into()));
    }
    Ok(project)
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ProjectsArgs {
    /// At most this many (1 to 200, default 50).
    #[serde(default)]
    pub limit: Option<usize>,
    /// Which Google Cloud connection, when the organisation has several (its name).
    #[serde(default)]
    pub connection: Option<String>,
}

pub struct ListGcpProjects;

#[async_trait]
impl Tool for ListGcpProjects {
    type Args = ProjectsArgs;
    const NAME: &'static str = "gcp_projects";
    const DESCRIPTION: &'static str = "List the Google Cloud projects the connection reaches.";
    const PROVIDER: Option<Provider> = Some(Provider::Gcp);

    async fn run(&self, context: &ToolContext, args: ProjectsArgs) -> Result<Value, ToolError> {
        let projects = client(context, args.connection.as_deref()).await?.projects().await?;
        Ok(listing(projects, args.limit.unwrap_or(50).clamp(1, 200), "connection"))
    }
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GkeArgs {
    /// The project id.
    pub project: String,
    /// A region or zone (default: every location).
    #[serde(default)]
    pub location: Option<String>,
    /// Which Google Cloud connection, when the organisation has several (its name).
    #[serde(default)]
    pub connection: Option<String>,
}

pub struct ListGkeClusters;

#[async_trait]
impl Tool for ListGkeClusters {
    type Args = GkeArgs;
    const NAME: &'static str = "gcp_gke_clusters";
    const DESCRIPTION: &'static str = "List the GKE clusters of a project: location, status, version, node count, endpoint, node pools.";
    const PROVIDER: Option<Provider> = Some(Provider::Gcp);

    async fn run(&self, context: &ToolContext, args: GkeArgs) -> Result<Value, ToolError> {
        let project = project_id(&args.project)?;
        let location = args.location.as_deref().map(|location| argument("location", location, 40)).transpose()?;
        if location.is_some_and(|location| !location.chars().all(|character| character.is_ascii_alphanumeric() || character == '-')) {
            return Err(ToolError::Refused("`location` must be a region or zone such as europe-west1".into()));
        }
        let clusters = client(context, args.connection.as_deref()).await?.gke_clusters(project, location).await?;
        Ok(listing(clusters, 100, "location"))
    }
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct LoggingArgs {
    /// The project id.
    pub project: String,
    /// A Cloud Logging filter, e.g. severity>=ERROR AND resource.type="k8s_container".
    #[serde(default)]
    pub filter: Option<String>,
    #[serde(flatten)]
    pub window: Window,
    /// At most this many entries (1 to 200, default 50).
    #[serde(default)]
    pub limit: Option<usize>,
    /// Which Google Cloud connection, when the organisation has several (its name).
    #[serde(default)]
    pub connection: Option<String>,
}

pub struct QueryCloudLogging;

#[async_trait]
impl Tool for QueryCloudLogging {
    type Args = LoggingArgs;
    const NAME: &'static str = "gcp_logs";
    const DESCRIPTION: &'static str = "Read Cloud Logging entries of a project in a time window, newest first, optionally matching a filter.";
    const PROVIDER: Option<Provider> = Some(Provider::Gcp);

    async fn run(&self, context: &ToolContext, args: LoggingArgs) -> Result<Value, ToolError> {
        let project = project_id(&args.project)?;
        let filter = args.filter.as_deref().map(|filter| argument("filter", filter, 2000)).transpose()?;
        let (start, end) = args.window.resolve()?;
        let limit = args.limit.unwrap_or(50).clamp(1, 200);
        let entries = client(context, args.connection.as_deref()).await?.log_entries(project, filter, &start.to_rfc3339(), &end.to_rfc3339(), limit + 1).await?;
        Ok(listing_in_window(entries, limit, "filter, a shorter window", (start, end)))
    }
}
