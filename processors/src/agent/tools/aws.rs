//! Read-only AWS tools, run with the calling organisation's AWS connection (its keys, or its
//! role assumed for the call): EC2 instances, EKS clusters, RDS instances, Lambda functions, and
//! CloudWatch Logs over a time window.

use async_trait::async_trait;
use aurora_adapters::clouds::aws::Aws;
use aurora_events::connection::Provider;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::Value;

use super::{argument, listing, listing_in_window, Registry, Tool, ToolContext, ToolError, Window};

/// Registers the AWS tools.
pub fn register(tools: &mut Registry) {
    tools.add(ListEc2Instances);
    tools.add(ListEksClusters);
    tools.add(ListRdsInstances);
    tools.add(ListLambdaFunctions);
    tools.add(QueryCloudWatchLogs);
}

/// The client of the organisation's AWS connection, and the region to ask.
async fn client(context: &ToolContext, connection: Option<&str>, region: Option<&str>) -> Result<(Aws, String), ToolError> {
    let (_, secret) = context.credentials(Provider::Aws, connection).await?;
    let aws = Aws::for_connection(&context.providers, &secret).await?;
    let region = match region {
        Some(region) => argument("region", region, 30)?.to_owned(),
        None => aws.default_region.clone(),
    };
    if !region.chars().all(|character| character.is_ascii_lowercase() || character.is_ascii_digit() || character == '-') {
        return Err(ToolError::Refused("`region` must be an AWS region name such as eu-west-1".into()));
    }
    Ok((aws, region))
}

fn limit(limit: Option<usize>) -> usize {
    limit.unwrap_or(50).clamp(1, 200)
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Ec2Args {
    /// The AWS region, e.g. eu-west-1 (default: the installation's default region).
    #[serde(default)]
    pub region: Option<String>,
    /// Describe only these instances.
    #[serde(default)]
    pub instance_ids: Vec<String>,
    /// Only instances in this state: pending, running, stopping, stopped, terminated.
    #[serde(default)]
    pub state: Option<String>,
    /// At most this many (1 to 200, default 50).
    #[serde(default)]
    pub limit: Option<usize>,
    /// Which AWS connection, when the organisation has several (its name).
    #[serde(default)]
    pub connection: Option<String>,
}

pub struct ListEc2Instances;

#[async_trait]
impl Tool for ListEc2Instances {
    type Args = Ec2Args;
    const NAME: &'static str = "aws_ec2_instances";
    const DESCRIPTION: &'static str = "List or describe EC2 instances in a region: id, type, state, addresses, VPC, subnet, tags.";
    const PROVIDER: Option<Provider> = Some(Provider::Aws);

    async fn run(&self, context: &ToolContext, args: Ec2Args) -> Result<Value, ToolError> {
        if args.instance_ids.len() > 100 || args.instance_ids.iter().any(|id| !id.starts_with("i-") || id.len() > 30) {
            return Err(ToolError::Refused("`instance_ids` must be at most 100 ids of the form i-0123456789abcdef0".into()));
        }
        let state = args.state.as_deref().map(|state| argument("state", state, 20)).transpose()?;
        let (aws, region) = client(context, args.connection.as_deref(), args.region.as_deref()).await?;
        let instances = aws.ec2_instances(&region, &args.instance_ids, state).await?;
        Ok(listing(instances, limit(args.limit), "state, instance_ids"))
    }
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RegionArgs {
    /// The AWS region (default: the installation's default region).
    #[serde(default)]
    pub region: Option<String>,
    /// Describe only the one with this name or identifier.
    #[serde(default)]
    pub name: Option<String>,
    /// At most this many (1 to 200, default 50).
    #[serde(default)]
    pub limit: Option<usize>,
    /// Which AWS connection, when the organisation has several (its name).
    #[serde(default)]
    pub connection: Option<String>,
}

impl RegionArgs {
    fn name(&self) -> Result<Option<&str>, ToolError> {
        let name = self.name.as_deref().map(|name| argument("name", name, 255)).transpose()?;
        if name.is_some_and(|name| name.contains(['/', '?', '#', '%'])) {
            return Err(ToolError::Refused("`name` must be a plain name or identifier".into()));
        }
        Ok(name)
    }
}

pub struct ListEksClusters;

#[async_trait]
impl Tool for ListEksClusters {
    type Args = RegionArgs;
    const NAME: &'static str = "aws_eks_clusters";
    const DESCRIPTION: &'static str = "List or describe EKS clusters in a region: status, Kubernetes version, endpoint, VPC and subnets.";
    const PROVIDER: Option<Provider> = Some(Provider::Aws);

    async fn run(&self, context: &ToolContext, args: RegionArgs) -> Result<Value, ToolError> {
        let name = args.name()?;
        let (aws, region) = client(context, args.connection.as_deref(), args.region.as_deref()).await?;
        let clusters = aws.eks_clusters(&region, name, limit(args.limit) + 1).await?;
        Ok(listing(clusters, limit(args.limit), "name"))
    }
}

pub struct ListRdsInstances;

#[async_trait]
impl Tool for ListRdsInstances {
    type Args = RegionArgs;
    const NAME: &'static str = "aws_rds_instances";
    const DESCRIPTION: &'static str = "List or describe RDS database instances in a region: engine, class, status, endpoint, Multi-AZ.";
    const PROVIDER: Option<Provider> = Some(Provider::Aws);

    async fn run(&self, context: &ToolContext, args: RegionArgs) -> Result<Value, ToolError> {
        let name = args.name()?;
        let (aws, region) = client(context, args.connection.as_deref(), args.region.as_deref()).await?;
        let instances = aws.rds_instances(&region, name).await?;
        Ok(listing(instances, limit(args.limit), "name"))
    }
}

pub struct ListLambdaFunctions;

#[async_trait]
impl Tool for ListLambdaFunctions {
    type Args = RegionArgs;
    const NAME: &'static str = "aws_lambda_functions";
    const DESCRIPTION: &'static str =
        "List or describe Lambda functions in a region: runtime, handler, memory, timeout, role, the names of its environment variables.";
    const PROVIDER: Option<Provider> = Some(Provider::Aws);

    async fn run(&self, context: &ToolContext, args: RegionArgs) -> Result<Value, ToolError> {
        let name = args.name()?;
        let (aws, region) = client(context, args.connection.as_deref(), args.region.as_deref()).await?;
        let functions = aws.lambda_functions(&region, name).await?;
        Ok(listing(functions, limit(args.limit), "name"))
    }
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct LogsArgs {
    /// The log group, e.g. /aws/lambda/checkout.
    pub log_group: String,
    /// A CloudWatch Logs filter pattern, e.g. "ERROR" or "{ $.status = 500 }".
    #[serde(default)]
    pub filter_pattern: Option<String>,
    #[serde(flatten)]
    pub window: Window,
    /// The AWS region (default: the installation's default region).
    #[serde(default)]
    pub region: Option<String>,
    /// At most this many events (1 to 200, default 50).
    #[serde(default)]
    pub limit: Option<usize>,
    /// Which AWS connection, when the organisation has several (its name).
    #[serde(default)]
    pub connection: Option<String>,
}

pub struct QueryCloudWatchLogs;

#[async_trait]
impl Tool for QueryCloudWatchLogs {
    type Args = LogsArgs;
    const NAME: &'static str = "aws_cloudwatch_logs";
    const DESCRIPTION: &'static str = "Search a CloudWatch Logs group for events in a time window, optionally matching a filter pattern.";
    const PROVIDER: Option<Provider> = Some(Provider::Aws);

    async fn run(&self, context: &ToolContext, args: LogsArgs) -> Result<Value, ToolError> {
        let log_group = argument("log_group", &args.log_group, 512)?;
        let pattern = args.filter_pattern.as_deref().map(|pattern| argument("filter_pattern", pattern, 1024)).transpose()?;
        let (start, end) = args.window.resolve()?;
        let (aws, region) = client(context, args.connection.as_deref(), args.region.as_deref()).await?;
        let limit = limit(args.limit);
        let events = aws.log_events(&region, log_group, pattern, start.timestamp_millis(), end.timestamp_millis(), limit + 1).await?;
        Ok(listing_in_window(events, limit, "filter_pattern, a shorter window", (start, end)))
    }
}
