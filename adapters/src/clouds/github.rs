//! GitHub's REST API (`application/vnd.github+json`, version 2022-11-28) with an OAuth token:
//! who the token is, its repositories, and the read-only calls of the agent's tools.

use aurora_events::connection::{InventoryItem, MAX_INVENTORY_ITEMS};
use serde_json::{json, Value};

use super::{http_client, json_detail, send_json, ProviderError};
use crate::config::ConnectionsConfig;
use crate::secrets::Secret;

pub const NAME: &str = "GitHub";
pub const SCOPES: &[&str] = &["repo", "read:org", "read:user"];

pub struct GitHub {
    http: reqwest::Client,
    api: String,
    token: String,
    timeout: std::time::Duration,
}

impl GitHub {
    pub fn new(config: &ConnectionsConfig, secret: &Secret) -> Result<Self, ProviderError> {
        let token = secret.get("access_token").ok_or_else(|| ProviderError::invalid("the GitHub connection has no access token"))?;
        Ok(Self {
            http: http_client(config),
            api: config.github_api_url.clone(),
            token: token.to_owned(),
            timeout: config.provider_timeout,
        })
    }

    pub async fn get(&self, path: &str, query: &[(&str, String)]) -> Result<Value, ProviderError> {
        let request = self
            .http
            .get(format!("{}{path}", self.api))
            .query(query)
            .bearer_auth(&self.token)
            .header("accept", "application/vnd.github+json")
            .header("x-github-api-version", "2022-11-28");
        send_json(NAME, self.timeout, request, json_detail).await
    }

    /// The login the token acts as.
    pub async fn login(&self) -> Result<String, ProviderError> {
        Ok(self.get("/user", &[]).await?["login"].as_str().unwrap_or_default().to_owned())
    }

    pub async fn commits(
        &self,
        repository: &str,
        since: Option<&str>,
        until: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Value>, ProviderError> {
        let mut query = vec![("per_page", limit.clamp(1, 100).to_string())];
        query.extend(since.map(|since| ("since", since.to_owned())));
        query.extend(until.map(|until| ("until", until.to_owned())));
        let commits = self.get(&format!("/repos/{repository}/commits"), &query).await?;
        Ok(commits
            .as_array()
            .into_iter()
            .flatten()
            .map(|commit| {
                json!({
                    "sha": commit["sha"], "author": commit["commit"]["author"]["name"], "date": commit["commit"]["author"]["date"],
                    "message": commit["commit"]["message"], "url": commit["html_url"],
                })
            })
            .collect())
    }

    pub async fn deployments(&self, repository: &str, environment: Option<&str>, limit: usize) -> Result<Vec<Value>, ProviderError> {
        let mut query = vec![("per_page", limit.clamp(1, 100).to_string())];
        query.extend(environment.map(|environment| ("environment", environment.to_owned())));
        let deployments = self.get(&format!("/repos/{repository}/deployments"), &query).await?;
        Ok(deployments
            .as_array()
            .into_iter()
            .flatten()
            .map(|deployment| {
                json!({
                    "id": deployment["id"], "sha": deployment["sha"], "ref": deployment["ref"], "environment": deployment["environment"],
                    "creator": deployment["creator"]["login"], "created_at": deployment["created_at"], "description": deployment["description"],
                })
            })
            .collect())
    }

    /// A commit with its files and their patches.
    pub async fn commit_diff(&self, repository: &str, sha: &str) -> Result<Value, ProviderError> {
        let commit = self.get(&format!("/repos/{repository}/commits/{sha}"), &[]).await?;
        let files: Vec<Value> = commit["files"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|file| json!({ "filename": file["filename"], "status": file["status"], "additions": file["additions"], "deletions": file["deletions"], "patch": file["patch"] }))
            .collect();
        Ok(json!({
            "sha": commit["sha"], "message": commit["commit"]["message"], "author": commit["commit"]["author"]["name"],
            "date": commit["commit"]["author"]["date"], "stats": commit["stats"], "files": files,
        }))
    }

    pub async fn search_code(&self, query: &str, limit: usize) -> Result<Value, ProviderError> {
        let found = self.get("/search/code", &[("q", query.to_owned()), ("per_page", limit.clamp(1, 100).to_string())]).await?;
        let items: Vec<Value> = found["items"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|item| json!({ "repository": item["repository"]["full_name"], "path": item["path"], "url": item["html_url"] }))
            .collect();
        Ok(json!({ "total_count": found["total_count"], "items": items }))
    }
}

/// The repositories the token reaches, most recently updated first.
pub async fn inventory(config: &ConnectionsConfig, secret: &Secret) -> Result<Vec<InventoryItem>, ProviderError> {
    let github = GitHub::new(config, secret)?;
    let mut items = Vec::new();
    for page in 1..=5 {
        let repositories =
            github.get("/user/repos", &[("per_page", "100".into()), ("sort", "updated".into()), ("page", page.to_string())]).await?;
        let listed = repositories.as_array().cloned().unwrap_or_default();
        for repository in &listed {
            if let Some(full_name) = repository["full_name"].as_str() {
                items.push(InventoryItem {
                    kind: "repository".into(),
                    id: full_name.to_owned(),
                    name: repository["description"].as_str().map(str::to_owned),
                });
            }
        }
        if listed.len() < 100 || items.len() >= MAX_INVENTORY_ITEMS {
            break;
        }
    }
    items.truncate(MAX_INVENTORY_ITEMS);
    Ok(items)
}
