//! Read-only Azure tools, run with the organisation's service principal: virtual machines and
//! AKS clusters of a subscription.

use async_trait::async_trait;
use aurora_adapters::clouds::azure::Azure;
use aurora_events::connection::Provider;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::Value;

use super::{listing, Registry, Tool, ToolContext, ToolError};

/// Registers the Azure tools.
pub fn register(tools: &mut Registry) {
    tools.add(ListAzureVms);
    tools.add(ListAksClusters);
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SubscriptionArgs {
    /// The subscription id (default: every subscription the connection reaches).
    #[serde(default)]
    pub subscription_id: Option<uuid::Uuid>,
    /// At most this many (1 to 200, default 50).
    #[serde(default)]
    pub limit: Option<usize>,
    /// Which Azure connection, when the organisation has several (its name).
    #[serde(default)]
    pub connection: Option<String>,
}

/// The signed-in client and the subscriptions to ask.
async fn client(context: &ToolContext, args: &SubscriptionArgs) -> Result<(Azure, Vec<String>), ToolError> {
    let (_, secret) = context.credentials(Provider::Azure, args.connection.as_deref()).await?;
    let azure = Azure::sign_in(&context.providers, &secret).await?;
    let subscriptions = match args.subscription_id {
        Some(id) => vec![id.to_string()],
        None => azure.subscriptions().await?.iter().filter_map(|subscription| subscription["subscription_id"].as_str().map(str::to_owned)).take(20).collect(),
    };
    Ok((azure, subscriptions))
}

pub struct ListAzureVms;

#[async_trait]
impl Tool for ListAzureVms {
    type Args = SubscriptionArgs;
    const NAME: &'static str = "azure_virtual_machines";
    const DESCRIPTION: &'static str = "List Azure virtual machines: name, location, size, OS, provisioning state, tags.";
    const PROVIDER: Option<Provider> = Some(Provider::Azure);

    async fn run(&self, context: &ToolContext, args: SubscriptionArgs) -> Result<Value, ToolError> {
        let (azure, subscriptions) = client(context, &args).await?;
        let mut machines = Vec::new();
        for subscription in &subscriptions {
            machines.extend(azure.virtual_machines(subscription).await?);
        }
        Ok(listing(machines, args.limit.unwrap_or(50).clamp(1, 200), "subscription_id"))
    }
}

pub struct ListAksClusters;

#[async_trait]
impl Tool for ListAksClusters {
    type Args = SubscriptionArgs;
    const NAME: &'static str = "azure_aks_clusters";
    const DESCRIPTION: &'static str = "List AKS clusters: location, Kubernetes version, provisioning and power state, node pools.";
    const PROVIDER: Option<Provider> = Some(Provider::Azure);

    async fn run(&self, context: &ToolContext, args: SubscriptionArgs) -> Result<Value, ToolError> {
        let (azure, subscriptions) = client(context, &args).await?;
        let mut clusters = Vec::new();
        for subscription in &subscriptions {
            clusters.extend(azure.aks_clusters(subscription).await?);
        }
        Ok(listing(clusters, args.limit.unwrap_or(50).clamp(1, 200), "subscription_id"))
    }
}
