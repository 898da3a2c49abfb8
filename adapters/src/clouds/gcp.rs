//! Google Cloud with an OAuth token (scopes `cloud-platform`, `openid`, `userinfo.email`): the
//! account's email, its projects (Resource Manager v1), GKE clusters (Container v1), Compute
//! Engine instances, networks and firewall rules (Compute v1), Cloud SQL instances (Cloud SQL
//! Admin v1) and Cloud Logging entries (v2 `entries:list`).

use aurora_events::connection::{InventoryItem, MAX_INVENTORY_ITEMS};
use serde_json::{json, Value};

use super::{http_client, json_detail, send_json, ProviderError, RunEnvironment};
use crate::config::ConnectionsConfig;
use crate::secrets::Secret;

pub const NAME: &str = "Google Cloud";
pub const SCOPES: &[&str] = &["https://www.googleapis.com/auth/cloud-platform", "openid", "https://www.googleapis.com/auth/userinfo.email"];
/// Asks for a refresh token (offline access) and for consent again, so one is always given.
pub const AUTHORIZE_EXTRA: &[(&str, &str)] = &[("access_type", "offline"), ("prompt", "consent")];

/// The environment that gives a child process (the Terraform CLI and its `google` provider) the
/// connection's OAuth access token, and `project` when one is known.
pub fn environment(secret: &Secret, project: Option<&str>) -> Result<RunEnvironment, ProviderError> {
    let token = secret.get("access_token").ok_or_else(|| ProviderError::invalid("the Google Cloud connection has no access token"))?;
    let mut env = vec![("GOOGLE_OAUTH_ACCESS_TOKEN", token.to_owned())];
    env.extend(project.map(|project| ("GOOGLE_PROJECT", project.to_owned())));
    Ok(RunEnvironment { vars: env, secrets: vec![token.to_owned()] })
}

pub struct Gcp {
    http: reqwest::Client,
    base: Option<String>,
    token: String,
    timeout: std::time::Duration,
}

impl Gcp {
    pub fn new(config: &ConnectionsConfig, secret: &Secret) -> Result<Self, ProviderError> {
        let token = secret.get("access_token").ok_or_else(|| ProviderError::invalid("the Google Cloud connection has no access token"))?;
        Ok(Self { http: http_client(config), base: config.gcp_api_url.clone(), token: token.to_owned(), timeout: config.provider_timeout })
    }

    fn url(&self, service: &str, path: &str) -> String {
        match &self.base {
            Some(base) => format!("{base}/{service}{path}"),
            None => format!("https://{service}.googleapis.com{path}"),
        }
    }

    async fn get(&self, service: &str, path: &str, query: &[(&str, String)]) -> Result<Value, ProviderError> {
        let request = self.http.get(self.url(service, path)).query(query).bearer_auth(&self.token);
        send_json(NAME, self.timeout, request, json_detail).await
    }

    /// The email of the account the token belongs to.
    pub async fn email(&self) -> Result<String, ProviderError> {
        Ok(self.get("openidconnect", "/v1/userinfo", &[]).await?["email"].as_str().unwrap_or_default().to_owned())
    }

    pub async fn projects(&self) -> Result<Vec<Value>, ProviderError> {
        let mut projects = Vec::new();
        let mut page_token: Option<String> = None;
        loop {
            let mut query = vec![("pageSize", "500".to_owned())];
            query.extend(page_token.clone().map(|token| ("pageToken", token)));
            let page = self.get("cloudresourcemanager", "/v1/projects", &query).await?;
            for project in page["projects"].as_array().into_iter().flatten() {
                projects.push(json!({
                    "project_id": project["projectId"], "name": project["name"], "number": project["projectNumber"], "state": project["lifecycleState"],
                }));
            }
            page_token = page["nextPageToken"].as_str().filter(|token| !token.is_empty()).map(str::to_owned);
            if page_token.is_none() || projects.len() >= MAX_INVENTORY_ITEMS {
                return Ok(projects);
            }
        }
    }

    pub async fn gke_clusters(&self, project: &str, location: Option<&str>) -> Result<Vec<Value>, ProviderError> {
        let location = location.unwrap_or("-");
        let listed = self.get("container", &format!("/v1/projects/{project}/locations/{location}/clusters"), &[]).await?;
        Ok(listed["clusters"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|cluster| {
                json!({
                    "name": cluster["name"], "location": cluster["location"], "status": cluster["status"],
                    "version": cluster["currentMasterVersion"], "nodes": cluster["currentNodeCount"], "endpoint": cluster["endpoint"],
                    "network": cluster["network"], "subnetwork": cluster["subnetwork"], "labels": cluster["resourceLabels"], "node_pools": cluster["nodePools"].as_array().map(|pools| pools.iter().map(|pool| pool["name"].clone()).collect::<Vec<_>>()),
                })
            })
            .collect())
    }

    /// Every item of a paged list (`items` and `nextPageToken`, as Compute and Cloud SQL page),
    /// up to [`MAX_INVENTORY_ITEMS`]. An aggregated list's items are a map of zones or regions,
    /// each with its `key` list (or a warning that it has none).
    async fn items(&self, service: &str, path: &str, aggregated: Option<&str>) -> Result<Vec<Value>, ProviderError> {
        let mut items = Vec::new();
        let mut page_token: Option<String> = None;
        loop {
            let mut query = vec![("maxResults", "500".to_owned())];
            query.extend(page_token.clone().map(|token| ("pageToken", token)));
            let page = self.get(service, path, &query).await?;
            match aggregated {
                Some(key) => {
                    for scoped in page["items"].as_object().into_iter().flat_map(|scopes| scopes.values()) {
                        items.extend(scoped[key].as_array().into_iter().flatten().cloned());
                    }
                }
                None => items.extend(page["items"].as_array().into_iter().flatten().cloned()),
            }
            page_token = page["nextPageToken"].as_str().filter(|token| !token.is_empty()).map(str::to_owned);
            if page_token.is_none() || items.len() >= MAX_INVENTORY_ITEMS {
                return Ok(items);
            }
        }
    }

    /// A project's Compute Engine instances in every zone, as the API gives them.
    pub async fn compute_instances(&self, project: &str) -> Result<Vec<Value>, ProviderError> {
        self.items("compute", &format!("/compute/v1/projects/{project}/aggregated/instances"), Some("instances")).await
    }

    /// A project's VPC networks.
    pub async fn networks(&self, project: &str) -> Result<Vec<Value>, ProviderError> {
        self.items("compute", &format!("/compute/v1/projects/{project}/global/networks"), None).await
    }

    /// A project's VPC firewall rules.
    pub async fn firewalls(&self, project: &str) -> Result<Vec<Value>, ProviderError> {
        self.items("compute", &format!("/compute/v1/projects/{project}/global/firewalls"), None).await
    }

    /// A project's Cloud SQL instances.
    pub async fn sql_instances(&self, project: &str) -> Result<Vec<Value>, ProviderError> {
        self.items("sqladmin", &format!("/v1/projects/{project}/instances"), None).await
    }

    /// Log entries of a project matching `filter` in a window, newest first.
    pub async fn log_entries(
        &self,
        project: &str,
        filter: Option<&str>,
        start: &str,
        end: &str,
        limit: usize,
    ) -> Result<Vec<Value>, ProviderError> {
        let mut full_filter = format!("timestamp >= \"{start}\" AND timestamp <= \"{end}\"");
        if let Some(filter) = filter.filter(|filter| !filter.trim().is_empty()) {
            full_filter = format!("({filter}) AND {full_filter}");
        }
        let body = json!({ "resourceNames": [format!("projects/{project}")], "filter": full_filter, "orderBy": "timestamp desc", "pageSize": limit.clamp(1, 1000) });
        let request = self.http.post(self.url("logging", "/v2/entries:list")).bearer_auth(&self.token).json(&body);
        let answer = send_json(NAME, self.timeout, request, json_detail).await?;
        Ok(answer["entries"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|entry| {
                let message = entry.get("textPayload").cloned().or_else(|| entry.get("jsonPayload").cloned()).unwrap_or(Value::Null);
                json!({ "timestamp": entry["timestamp"], "severity": entry["severity"], "log": entry["logName"], "resource": entry["resource"]["type"], "message": message })
            })
            .collect())
    }
}

/// The projects the account reaches.
pub async fn inventory(config: &ConnectionsConfig, secret: &Secret) -> Result<Vec<InventoryItem>, ProviderError> {
    let gcp = Gcp::new(config, secret)?;
    Ok(gcp
        .projects()
        .await?
        .into_iter()
        .take(MAX_INVENTORY_ITEMS)
        .filter_map(|project| {
            Some(InventoryItem {
                kind: "project".into(),
                id: project["project_id"].as_str()?.to_owned(),
                name: project["name"].as_str().map(str::to_owned),
            })
        })
        .collect())
}
