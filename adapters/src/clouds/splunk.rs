//! Splunk's REST API with an authentication token: who it is
//! (`/services/authentication/current-context`) and searches exported as JSON
//! (`/services/search/jobs/export`).

use serde_json::{json, Value};

use super::{check_user_url, cut, json_detail, send, send_json, ProviderError, TokenService, Verified};
use crate::config::ConnectionsConfig;
use crate::secrets::Secret;

pub const NAME: &str = "Splunk";

pub struct Splunk {
    service: TokenService,
}

/// Splunk's error bodies: `{"messages":[{"type":"ERROR","text":"..."}]}`.
fn splunk_detail(body: &str) -> Option<String> {
    let value: Value = serde_json::from_str(body).ok()?;
    value["messages"][0]["text"].as_str().map(str::to_owned).or_else(|| json_detail(body))
}

impl Splunk {
    pub async fn new(config: &ConnectionsConfig, secret: &Secret) -> Result<Self, ProviderError> {
        Ok(Self { service: TokenService::from_secret(config, secret, NAME).await? })
    }

    pub async fn username(&self) -> Result<String, ProviderError> {
        let request = self
            .service
            .http
            .get(format!("{}/services/authentication/current-context", self.service.url))
            .query(&[("output_mode", "json")])
            .bearer_auth(&self.service.token);
        let answer = send_json(NAME, self.service.timeout, request, splunk_detail).await?;
        Ok(answer["entry"][0]["content"]["username"].as_str().unwrap_or_default().to_owned())
    }

    /// Runs `query` (SPL, `search` added when it does not start with a command) over the window.
    pub async fn search(&self, query: &str, earliest: &str, latest: &str, limit: usize) -> Result<Vec<Value>, ProviderError> {
        let trimmed = query.trim();
        let search =
            if trimmed.starts_with("search ") || trimmed.starts_with('|') { trimmed.to_owned() } else { format!("search {trimmed}") };
        let search = format!("{search} | head {}", limit.clamp(1, 1000));
        let form = [("search", search.as_str()), ("earliest_time", earliest), ("latest_time", latest), ("output_mode", "json")];
        let request = self
            .service
            .http
            .post(format!("{}/services/search/jobs/export", self.service.url))
            .bearer_auth(&self.service.token)
            .form(&form);
        let body = send(NAME, self.service.timeout, request, splunk_detail).await?;
        // One JSON object per line, each `{"result": {...}}` (or a message).
        let mut results = Vec::new();
        for line in body.lines().filter(|line| !line.trim().is_empty()) {
            let value: Value = serde_json::from_str(line).map_err(|error| ProviderError::Unavailable {
                provider: NAME,
                detail: format!("an export line that is not JSON: {error}: {}", cut(line, 80)),
            })?;
            if let Some(result) = value.get("result") {
                results.push(json!({ "time": result["_time"], "host": result["host"], "source": result["source"], "sourcetype": result["sourcetype"], "raw": result["_raw"] }));
            }
        }
        Ok(results)
    }
}

pub async fn verify(config: &ConnectionsConfig, input: &Value) -> Result<Verified, ProviderError> {
    let field = |name: &str| super::required_field(input, name);
    let url = check_user_url(field("url")?, config.allow_private_urls).await?;
    let secret = Secret::new().with("url", url.as_str()).with("token", field("token")?);
    let username = Splunk::new(config, &secret).await?.username().await?;
    Ok(Verified { account: format!("{username} at {}", url.as_str().trim_end_matches('/')), secret, expires_at: None, scopes: Vec::new() })
}
