//! Tools over the organisation's discovered service graph (the graph port), offered when the
//! organisation has one: list services, one service with its dependencies and their evidence,
//! what a service depends on and what depends on it to a depth, its blast radius, and the chain
//! of dependencies between two services.

use async_trait::async_trait;
use aurora_adapters::graph::{AsOf, Direction, ServiceFilter, ServiceView};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{json, Value};
use uuid::Uuid;

use super::{argument, listing, Registry, Tool, ToolContext, ToolError};

/// The graph as it is, or as it was at `at` (RFC 3339), which must not be in the future.
fn as_of(at: Option<&str>) -> Result<AsOf, ToolError> {
    let Some(at) = at else { return Ok(AsOf::Now) };
    let at = chrono::DateTime::parse_from_rfc3339(argument("at", at, 40)?)
        .map_err(|_| ToolError::Refused(format!("`at` must be an RFC 3339 time such as 2026-12-01T09:00:00Z, not `{at}`")))?
        .with_timezone(&chrono::Utc);
    if at > chrono::Utc::now() {
        return Err(ToolError::Refused("`at` is in the future; the graph is known only up to now".into()));
    }
    Ok(AsOf::At(at))
}

/// Registers the discovery tools.
pub fn register(tools: &mut Registry) {
    tools.add(ListServices);
    tools.add(GetService);
    tools.add(ServiceDependencies);
    tools.add(BlastRadius);
    tools.add(DependencyPathTool);
}

/// The service the model names: its node id, or its name (exactly, else the only one containing it).
async fn resolve(context: &ToolContext, named: &str) -> Result<ServiceView, ToolError> {
    let named = argument("service", named, 500)?;
    let mut read = context.read_models().await?;
    if let Ok(node_id) = Uuid::parse_str(named) {
        return context.graph.reader(&mut read).service(context.org_id.0, node_id, AsOf::Now)
            .await?
            .ok_or_else(|| ToolError::Refused(format!("there is no service {node_id}")));
    }
    let filter = ServiceFilter { name: Some(named.to_owned()), limit: 20, ..ServiceFilter::default() };
    let mut candidates = context.graph.reader(&mut read).services(context.org_id.0, &filter, AsOf::Now).await?;
    if let Some(exact) = candidates.iter().position(|service| service.name.eq_ignore_ascii_case(named)) {
        return Ok(candidates.swap_remove(exact));
    }
    match candidates.len() {
        0 => Err(ToolError::Refused(format!("no discovered service is named like `{named}`; list_services shows them"))),
        1 => Ok(candidates.remove(0)),
        _ => Err(ToolError::Refused(format!(
            "several services are named like `{named}`: {}; name one exactly or give its node_id",
            candidates.iter().map(|service| format!("{} ({})", service.name, service.node_id)).collect::<Vec<_>>().join(", ")
        ))),
    }
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListArgs {
    /// vm, kubernetes_cluster, database, serverless_function, load_balancer, queue, bucket, network, subnet, firewall.
    #[serde(default)]
    pub kind: Option<String>,
    /// aws, gcp, azure.
    #[serde(default)]
    pub provider: Option<String>,
    /// Names containing this.
    #[serde(default)]
    pub name: Option<String>,
    /// At most this many (1 to 200, default 50).
    #[serde(default)]
    pub limit: Option<usize>,
}

/// Lists the discovered services.
pub struct ListServices;

#[async_trait]
impl Tool for ListServices {
    type Args = ListArgs;
    const NAME: &'static str = "list_services";
    const DESCRIPTION: &'static str = "List the services and resources discovery found in the organisation's clouds (by kind, provider or name).";
    const NEEDS_GRAPH: bool = true;

    async fn run(&self, context: &ToolContext, args: ListArgs) -> Result<Value, ToolError> {
        let limit = args.limit.unwrap_or(50).clamp(1, 200);
        let bounded = |field, value: Option<String>| value.map(|value| argument(field, &value, 200).map(str::to_owned)).transpose();
        let filter = ServiceFilter {
            kind: bounded("kind", args.kind)?,
            provider: bounded("provider", args.provider)?,
            name: bounded("name", args.name)?,
            tag: None,
            limit: 1000,
        };
        let services = context.graph.reader(&mut *context.read_models().await?).services(context.org_id.0, &filter, AsOf::Now).await?;
        let items = services
            .into_iter()
            .map(|service| {
                json!({
                    "node_id": service.node_id, "name": service.name, "kind": service.kind, "type": service.provider_type,
                    "region": service.region, "endpoint": service.endpoint,
                })
            })
            .collect();
        Ok(listing(items, limit, "kind, provider or name"))
    }
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ServiceArgs {
    /// The service's name or node_id.
    pub service: String,
    /// Read the graph as it was at this RFC 3339 time (say, when the alert fired); now if absent.
    #[serde(default)]
    pub at: Option<String>,
}

/// One service with what it depends on and what depends on it.
pub struct GetService;

#[async_trait]
impl Tool for GetService {
    type Args = ServiceArgs;
    const NAME: &'static str = "get_service";
    const DESCRIPTION: &'static str = "One discovered service: what it is, what it depends on and what depends on it, with the evidence of each dependency.";
    const NEEDS_GRAPH: bool = true;

    async fn run(&self, context: &ToolContext, args: ServiceArgs) -> Result<Value, ToolError> {
        let (service, as_of) = (resolve(context, &args.service).await?, as_of(args.at.as_deref())?);
        let (depends_on, depended_on_by) = context.graph.reader(&mut *context.read_models().await?).neighbours(context.org_id.0, service.node_id, as_of).await?;
        Ok(json!({ "service": service, "depends_on": depends_on, "depended_on_by": depended_on_by }))
    }
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BlastArgs {
    /// The service's name or node_id.
    pub service: String,
    /// How far to follow dependencies, 1 to 10 (default 5 for the blast radius, 3 for dependencies).
    #[serde(default)]
    pub depth: Option<i32>,
    /// Read the graph as it was at this RFC 3339 time (say, when the alert fired); now if absent.
    #[serde(default)]
    pub at: Option<String>,
}

/// What a service depends on and what depends on it, to a depth.
pub struct ServiceDependencies;

#[async_trait]
impl Tool for ServiceDependencies {
    type Args = BlastArgs;
    const NAME: &'static str = "service_dependencies";
    const DESCRIPTION: &'static str = "What a discovered service depends on (upstream) and what depends on it (downstream), directly or not, to a depth, nearest first.";
    const NEEDS_GRAPH: bool = true;

    async fn run(&self, context: &ToolContext, args: BlastArgs) -> Result<Value, ToolError> {
        let (service, as_of) = (resolve(context, &args.service).await?, as_of(args.at.as_deref())?);
        let depth = args.depth.unwrap_or(3).clamp(1, 10);
        let mut read = context.read_models().await?;
        let upstream = context.graph.reader(&mut read).reach(context.org_id.0, service.node_id, Direction::Upstream, depth, as_of).await?;
        let downstream = context.graph.reader(&mut read).reach(context.org_id.0, service.node_id, Direction::Downstream, depth, as_of).await?;
        Ok(json!({ "service": service.name, "node_id": service.node_id, "depth": depth, "upstream": upstream, "downstream": downstream }))
    }
}

/// What breaks when a service does.
pub struct BlastRadius;

#[async_trait]
impl Tool for BlastRadius {
    type Args = BlastArgs;
    const NAME: &'static str = "blast_radius";
    const DESCRIPTION: &'static str = "What depends on a discovered service, directly or not, nearest first: what breaks when it does.";
    const NEEDS_GRAPH: bool = true;

    async fn run(&self, context: &ToolContext, args: BlastArgs) -> Result<Value, ToolError> {
        let (service, as_of) = (resolve(context, &args.service).await?, as_of(args.at.as_deref())?);
        let depth = args.depth.unwrap_or(5).clamp(1, 10);
        let affected = context.graph.reader(&mut *context.read_models().await?).reach(context.org_id.0, service.node_id, Direction::Downstream, depth, as_of).await?;
        Ok(json!({ "service": service.name, "node_id": service.node_id, "depth": depth, "affected": affected }))
    }
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PathArgs {
    /// One service's name or node_id.
    pub from: String,
    /// The other service's name or node_id.
    pub to: String,
    /// Longest chain followed, 1 to 8 dependencies (default 6).
    #[serde(default)]
    pub depth: Option<i32>,
    /// Read the graph as it was at this RFC 3339 time (say, when the alert fired); now if absent.
    #[serde(default)]
    pub at: Option<String>,
}

/// The shortest chain of dependencies between two services, whichever depends on the other.
pub struct DependencyPathTool;

#[async_trait]
impl Tool for DependencyPathTool {
    type Args = PathArgs;
    const NAME: &'static str = "dependency_path";
    const DESCRIPTION: &'static str =
        "The shortest chain of dependencies between two discovered services, in whichever direction one depends on the other.";
    const NEEDS_GRAPH: bool = true;

    async fn run(&self, context: &ToolContext, args: PathArgs) -> Result<Value, ToolError> {
        let (from, to) = (resolve(context, &args.from).await?, resolve(context, &args.to).await?);
        let (depth, as_of) = (args.depth.unwrap_or(6).clamp(1, 8), as_of(args.at.as_deref())?);
        match context.graph.reader(&mut *context.read_models().await?).link(context.org_id.0, from.node_id, to.node_id, depth, as_of).await? {
            Some(path) => Ok(json!({ "path": path.describe(), "services": path.services, "dependencies": path.dependencies })),
            None => Ok(json!({ "path": null, "note": format!("neither {} nor {} depends on the other within {depth} dependencies", from.name, to.name) })),
        }
    }
}
