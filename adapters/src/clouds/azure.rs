//! Azure with a service principal: a client-credentials token from Microsoft Entra ID
//! (`/{tenant}/oauth2/v2.0/token`, scope `https://management.azure.com/.default`) for each use,
//! then Azure Resource Manager: subscriptions, virtual machines, AKS clusters, SQL servers and
//! their databases, and App Service apps with their settings.

use aurora_events::connection::{InventoryItem, MAX_INVENTORY_ITEMS};
use serde_json::{json, Value};

use super::{http_client, json_detail, send_json, ProviderError, RunEnvironment, Verified};
use crate::config::ConnectionsConfig;
use crate::secrets::Secret;

pub const NAME: &str = "Azure";

pub struct Azure {
    http: reqwest::Client,
    management: String,
    token: String,
    timeout: std::time::Duration,
}

/// The environment that gives a child process (the Terraform CLI and its `azurerm` provider)
/// the connection's service principal, and `subscription` when one is known.
pub fn environment(secret: &Secret, subscription: Option<&str>) -> Result<RunEnvironment, ProviderError> {
    let field = |name: &str| {
        secret.get(name).map(str::to_owned).ok_or_else(|| ProviderError::invalid(format!("the Azure connection has no {name}")))
    };
    let client_secret = field("client_secret")?;
    let mut env =
        vec![("ARM_TENANT_ID", field("tenant_id")?), ("ARM_CLIENT_ID", field("client_id")?), ("ARM_CLIENT_SECRET", client_secret.clone())];
    env.extend(subscription.map(|subscription| ("ARM_SUBSCRIPTION_ID", subscription.to_owned())));
    Ok(RunEnvironment { vars: env, secrets: vec![client_secret] })
}

impl Azure {
    /// Signs in as the connection's service principal.
    pub async fn sign_in(config: &ConnectionsConfig, secret: &Secret) -> Result<Self, ProviderError> {
        let tenant = secret.get("tenant_id").ok_or_else(|| ProviderError::invalid("the Azure connection has no tenant id"))?;
        let client_id = secret.get("client_id").ok_or_else(|| ProviderError::invalid("the Azure connection has no client id"))?;
        let client_secret =
            secret.get("client_secret").ok_or_else(|| ProviderError::invalid("the Azure connection has no client secret"))?;
        if !tenant.chars().all(|character| character.is_ascii_alphanumeric() || matches!(character, '-' | '.')) {
            return Err(ProviderError::invalid("`tenant_id` must be a tenant id or domain"));
        }
        let http = http_client(config);
        let scope = format!("{}/.default", "https://management.azure.com");
        let form =
            [("grant_type", "client_credentials"), ("client_id", client_id), ("client_secret", client_secret), ("scope", scope.as_str())];
        let request = http.post(format!("{}/{tenant}/oauth2/v2.0/token", config.azure_login_url)).form(&form);
        let answer = send_json(NAME, config.provider_timeout, request, json_detail).await.map_err(|error| match error {
            // Entra ID answers a wrong secret or an unknown client with 400/401 `invalid_client`.
            ProviderError::Invalid(detail) => ProviderError::Unauthorized { provider: NAME, detail },
            other => other,
        })?;
        let token = answer["access_token"]
            .as_str()
            .ok_or_else(|| ProviderError::Unavailable { provider: NAME, detail: "a token answer without an access token".into() })?;
        Ok(Self { http, management: config.azure_management_url.clone(), token: token.to_owned(), timeout: config.provider_timeout })
    }

    async fn list(&self, path: &str, api_version: &str) -> Result<Vec<Value>, ProviderError> {
        let mut items = Vec::new();
        let mut url = format!("{}{path}?api-version={api_version}", self.management);
        loop {
            let request = self.http.get(&url).bearer_auth(&self.token);
            let page = send_json(NAME, self.timeout, request, json_detail).await?;
            items.extend(page["value"].as_array().cloned().unwrap_or_default());
            // The next page is on the same management host, or it is not followed.
            match page["nextLink"].as_str() {
                Some(next) if next.starts_with(&self.management) && items.len() < MAX_INVENTORY_ITEMS => url = next.to_owned(),
                _ => return Ok(items),
            }
        }
    }

    pub async fn subscriptions(&self) -> Result<Vec<Value>, ProviderError> {
        Ok(self
            .list("/subscriptions", "2022-12-01")
            .await?
            .iter()
            .map(|subscription| json!({ "subscription_id": subscription["subscriptionId"], "name": subscription["displayName"], "state": subscription["state"] }))
            .collect())
    }

    pub async fn virtual_machines(&self, subscription: &str) -> Result<Vec<Value>, ProviderError> {
        Ok(self
            .list(&format!("/subscriptions/{subscription}/providers/Microsoft.Compute/virtualMachines"), "2024-07-01")
            .await?
            .iter()
            .map(|vm| {
                json!({
                    "name": vm["name"], "id": vm["id"], "location": vm["location"], "size": vm["properties"]["hardwareProfile"]["vmSize"],
                    "os": vm["properties"]["storageProfile"]["osDisk"]["osType"], "provisioning_state": vm["properties"]["provisioningState"], "tags": vm["tags"],
                })
            })
            .collect())
    }

    pub async fn aks_clusters(&self, subscription: &str) -> Result<Vec<Value>, ProviderError> {
        Ok(self
            .list(&format!("/subscriptions/{subscription}/providers/Microsoft.ContainerService/managedClusters"), "2024-09-01")
            .await?
            .iter()
            .map(|cluster| {
                let properties = &cluster["properties"];
                json!({
                    "name": cluster["name"], "id": cluster["id"], "location": cluster["location"], "tags": cluster["tags"], "kubernetes_version": properties["kubernetesVersion"],
                    "provisioning_state": properties["provisioningState"], "power_state": properties["powerState"]["code"], "fqdn": properties["fqdn"],
                    "node_pools": properties["agentPoolProfiles"].as_array().map(|pools| pools.iter().map(|pool| json!({ "name": pool["name"], "count": pool["count"], "vm_size": pool["vmSize"] })).collect::<Vec<_>>()),
                })
            })
            .collect())
    }

    /// A subscription's SQL servers, as Resource Manager gives them.
    pub async fn sql_servers(&self, subscription: &str) -> Result<Vec<Value>, ProviderError> {
        self.list(&format!("/subscriptions/{subscription}/providers/Microsoft.Sql/servers"), "2023-08-01").await
    }

    /// The databases of the SQL server whose resource id is `server`.
    pub async fn sql_databases(&self, server: &str) -> Result<Vec<Value>, ProviderError> {
        self.list(&format!("{}/databases", resource_path(server)?), "2023-08-01").await
    }

    /// A subscription's App Service apps (web apps and function apps).
    pub async fn web_apps(&self, subscription: &str) -> Result<Vec<Value>, ProviderError> {
        self.list(&format!("/subscriptions/{subscription}/providers/Microsoft.Web/sites"), "2023-12-01").await
    }

    /// An app's settings and connection strings, by name. Their values can be secrets: a caller
    /// keeps them only as long as it needs them.
    pub async fn app_configuration(&self, site: &str) -> Result<Vec<(String, String)>, ProviderError> {
        let site = resource_path(site)?;
        let mut entries = Vec::new();
        for (list, value_of) in [("appsettings", None), ("connectionstrings", Some("value"))] {
            let url = format!("{}{site}/config/{list}/list?api-version=2023-12-01", self.management);
            let request = self.http.post(url).bearer_auth(&self.token).header(reqwest::header::CONTENT_LENGTH, 0);
            let answer = send_json(NAME, self.timeout, request, json_detail).await?;
            for (name, value) in answer["properties"].as_object().into_iter().flatten() {
                let value = match value_of {
                    Some(field) => &value[field],
                    None => value,
                };
                entries.extend(value.as_str().map(|value| (name.clone(), value.to_owned())));
            }
        }
        Ok(entries)
    }
}

/// A Resource Manager id as a path on the management host: it starts at a subscription, and
/// nothing in it can climb out of it or add a query.
fn resource_path(id: &str) -> Result<&str, ProviderError> {
    let plain = id.starts_with("/subscriptions/")
        && id.split('/').all(|segment| segment != ".." && segment != ".")
        && id.chars().all(|character| character.is_ascii_alphanumeric() || matches!(character, '/' | '-' | '_' | '.' | '(' | ')'));
    if plain {
        Ok(id)
    } else {
        Err(ProviderError::Unavailable { provider: NAME, detail: "a resource id that is not a Resource Manager path".into() })
    }
}

/// Checks a service principal by a token request and a subscription listing.
pub async fn verify(config: &ConnectionsConfig, input: &Value) -> Result<Verified, ProviderError> {
    let field = |name: &str| super::required_field(input, name);
    let secret = Secret::new()
        .with("tenant_id", field("tenant_id")?)
        .with("client_id", field("client_id")?)
        .with("client_secret", field("client_secret")?);
    let azure = Azure::sign_in(config, &secret).await?;
    let subscriptions = azure.subscriptions().await?;
    let account = format!("tenant {} as {} ({} subscriptions)", field("tenant_id")?, field("client_id")?, subscriptions.len());
    Ok(Verified { account, secret, expires_at: None, scopes: Vec::new() })
}

pub async fn inventory(config: &ConnectionsConfig, secret: &Secret) -> Result<Vec<InventoryItem>, ProviderError> {
    let azure = Azure::sign_in(config, secret).await?;
    Ok(azure
        .subscriptions()
        .await?
        .into_iter()
        .take(MAX_INVENTORY_ITEMS)
        .filter_map(|subscription| {
            Some(InventoryItem {
                kind: "subscription".into(),
                id: subscription["subscription_id"].as_str()?.to_owned(),
                name: subscription["name"].as_str().map(str::to_owned),
            })
        })
        .collect())
}
