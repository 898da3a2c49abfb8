//! PagerDuty's REST API v2 with an API token (`Authorization: Token token=...`), checked by
//! `GET /abilities` before it is kept.

use serde_json::Value;

use super::{http_client, json_detail, send_json, ProviderError, Verified};
use crate::config::ConnectionsConfig;
use crate::secrets::Secret;

pub const NAME: &str = "PagerDuty";

pub async fn verify(config: &ConnectionsConfig, input: &Value) -> Result<Verified, ProviderError> {
    let token = super::required_field(input, "api_token")?;
    let request = http_client(config)
        .get(format!("{}/abilities", config.pagerduty_api_url))
        .header("authorization", format!("Token token={token}"))
        .header("accept", "application/vnd.pagerduty+json;version=2");
    let answer = send_json(NAME, config.provider_timeout, request, json_detail).await?;
    let abilities = answer["abilities"].as_array().map(Vec::len).unwrap_or_default();
    Ok(Verified {
        account: format!("PagerDuty account ({abilities} abilities)"),
        secret: Secret::new().with("api_token", token),
        expires_at: None,
        scopes: Vec::new(),
    })
}
