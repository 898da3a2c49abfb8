//! Grafana with a service account token: the organisation it belongs to (`GET /api/org`), its
//! data sources, and queries through the data source proxy (Loki's `query_range`, Prometheus'
//! `query_range`).

use serde_json::{json, Value};

use super::{check_user_url, json_detail, send_json, ProviderError, TokenService, Verified};
use crate::config::ConnectionsConfig;
use crate::secrets::Secret;

pub const NAME: &str = "Grafana";

pub struct Grafana {
    service: TokenService,
}

impl Grafana {
    pub async fn new(config: &ConnectionsConfig, secret: &Secret) -> Result<Self, ProviderError> {
        Ok(Self { service: TokenService::from_secret(config, secret, NAME).await? })
    }

    async fn get(&self, path: &str, query: &[(&str, String)]) -> Result<Value, ProviderError> {
        let request = self.service.http.get(format!("{}{path}", self.service.url)).query(query).bearer_auth(&self.service.token);
        send_json(NAME, self.service.timeout, request, json_detail).await
    }

    pub async fn organisation(&self) -> Result<String, ProviderError> {
        Ok(self.get("/api/org", &[]).await?["name"].as_str().unwrap_or_default().to_owned())
    }

    pub async fn datasources(&self) -> Result<Vec<Value>, ProviderError> {
        Ok(self
            .get("/api/datasources", &[])
            .await?
            .as_array()
            .into_iter()
            .flatten()
            .map(|source| json!({ "uid": source["uid"], "name": source["name"], "type": source["type"], "default": source["isDefault"] }))
            .collect())
    }

    /// Runs `query` on a Loki or Prometheus data source over `[start, end]` (RFC 3339).
    pub async fn query(&self, datasource_uid: &str, query: &str, start: &str, end: &str, limit: usize) -> Result<Value, ProviderError> {
        if !datasource_uid.chars().all(|character| character.is_ascii_alphanumeric() || matches!(character, '-' | '_')) {
            return Err(ProviderError::invalid("`datasource_uid` is not a data source uid"));
        }
        let source = self.get(&format!("/api/datasources/uid/{datasource_uid}"), &[]).await?;
        let proxy = format!("/api/datasources/proxy/uid/{datasource_uid}");
        match source["type"].as_str().unwrap_or_default() {
            "loki" => {
                let answer = self
                    .get(
                        &format!("{proxy}/loki/api/v1/query_range"),
                        &[
                            ("query", query.into()),
                            ("start", start.into()),
                            ("end", end.into()),
                            ("limit", limit.to_string()),
                            ("direction", "backward".into()),
                        ],
                    )
                    .await?;
                let lines: Vec<Value> = answer["data"]["result"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .flat_map(|stream| {
                        let labels = stream["stream"].clone();
                        stream["values"]
                            .as_array()
                            .cloned()
                            .unwrap_or_default()
                            .into_iter()
                            .map(move |pair| json!({ "labels": labels, "timestamp_ns": pair[0], "line": pair[1] }))
                    })
                    .take(limit)
                    .collect();
                Ok(json!({ "datasource": source["name"], "type": "loki", "lines": lines }))
            }
            "prometheus" => {
                let seconds = |text: &str| chrono::DateTime::parse_from_rfc3339(text).map(|time| time.timestamp()).unwrap_or_default();
                let step = ((seconds(end) - seconds(start)) / 200).max(15);
                let answer = self
                    .get(
                        &format!("{proxy}/api/v1/query_range"),
                        &[("query", query.into()), ("start", start.into()), ("end", end.into()), ("step", step.to_string())],
                    )
                    .await?;
                Ok(json!({ "datasource": source["name"], "type": "prometheus", "result": answer["data"]["result"] }))
            }
            other => Err(ProviderError::invalid(format!(
                "data source type `{other}` cannot be queried here; use a Loki or Prometheus data source"
            ))),
        }
    }
}

pub async fn verify(config: &ConnectionsConfig, input: &Value) -> Result<Verified, ProviderError> {
    let field = |name: &str| super::required_field(input, name);
    let url = check_user_url(field("url")?, config.allow_private_urls).await?;
    let secret = Secret::new().with("url", url.as_str()).with("token", field("token")?);
    let organisation = Grafana::new(config, &secret).await?.organisation().await?;
    Ok(Verified {
        account: format!("{} ({organisation})", url.as_str().trim_end_matches('/')),
        secret,
        expires_at: None,
        scopes: Vec::new(),
    })
}
