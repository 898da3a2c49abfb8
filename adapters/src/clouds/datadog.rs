//! Datadog with an API key and an application key, on the organisation's site: keys checked by
//! `GET /api/v1/validate`, logs searched with `POST /api/v2/logs/events/search`.

use serde_json::{json, Value};

use super::{http_client, json_detail, send_json, ProviderError, Verified};
use crate::config::ConnectionsConfig;
use crate::secrets::Secret;

pub const NAME: &str = "Datadog";
/// Datadog's sites; a connection names one.
pub const SITES: &[&str] =
    &["datadoghq.com", "us3.datadoghq.com", "us5.datadoghq.com", "datadoghq.eu", "ap1.datadoghq.com", "ap2.datadoghq.com", "ddog-gov.com"];

pub struct Datadog {
    http: reqwest::Client,
    api: String,
    api_key: String,
    application_key: String,
    timeout: std::time::Duration,
}

impl Datadog {
    pub fn new(config: &ConnectionsConfig, secret: &Secret) -> Result<Self, ProviderError> {
        let site = secret.get("site").unwrap_or("datadoghq.com");
        let api = config.datadog_api_url.clone().unwrap_or_else(|| format!("https://api.{site}"));
        Ok(Self {
            http: http_client(config),
            api,
            api_key: secret.get("api_key").ok_or_else(|| ProviderError::invalid("the Datadog connection has no API key"))?.to_owned(),
            application_key: secret
                .get("application_key")
                .ok_or_else(|| ProviderError::invalid("the Datadog connection has no application key"))?
                .to_owned(),
            timeout: config.provider_timeout,
        })
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.api))
            .header("dd-api-key", &self.api_key)
            .header("dd-application-key", &self.application_key)
    }

    pub async fn validate(&self) -> Result<(), ProviderError> {
        let answer = send_json(NAME, self.timeout, self.request(reqwest::Method::GET, "/api/v1/validate"), json_detail).await?;
        if answer["valid"].as_bool() == Some(true) {
            Ok(())
        } else {
            Err(ProviderError::Unauthorized { provider: NAME, detail: "the API key is not valid".into() })
        }
    }

    pub async fn search_logs(&self, query: &str, from: &str, to: &str, limit: usize) -> Result<Vec<Value>, ProviderError> {
        let body = json!({ "filter": { "query": query, "from": from, "to": to }, "sort": "-timestamp", "page": { "limit": limit.clamp(1, 1000) } });
        let answer =
            send_json(NAME, self.timeout, self.request(reqwest::Method::POST, "/api/v2/logs/events/search").json(&body), json_detail)
                .await?;
        Ok(answer["data"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|log| {
                let attributes = &log["attributes"];
                json!({ "timestamp": attributes["timestamp"], "status": attributes["status"], "service": attributes["service"], "host": attributes["host"], "message": attributes["message"], "tags": attributes["tags"] })
            })
            .collect())
    }
}

pub async fn verify(config: &ConnectionsConfig, input: &Value) -> Result<Verified, ProviderError> {
    let site = super::optional_field(input, "site").unwrap_or("datadoghq.com");
    if !SITES.contains(&site) {
        return Err(ProviderError::invalid(format!("`site` must be one of {}", SITES.join(", "))));
    }
    let secret = Secret::new()
        .with("api_key", super::required_field(input, "api_key")?)
        .with("application_key", super::required_field(input, "application_key")?)
        .with("site", site);
    Datadog::new(config, &secret)?.validate().await?;
    Ok(Verified { account: format!("Datadog {site}"), secret, expires_at: None, scopes: Vec::new() })
}
