//! Events of connections (`connection-<connection id>`): a team connected a cloud or a tool to
//! Aurora, its tokens were refreshed or its keys rotated, a check of it failed, what it reaches
//! was listed, or it was removed. No event carries a credential: the secret store holds them, and
//! an event names where (`secret_ref`, `vault:kv/data/aurora/orgs/{org}/connections/{id}`).

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::event_family;

/// Most inventory items one event records; the rest are counted, not listed.
pub const MAX_INVENTORY_ITEMS: usize = 500;

/// A provider a team can connect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    Aws,
    Gcp,
    Azure,
    Github,
    Datadog,
    Grafana,
    Splunk,
    Pagerduty,
}

impl Provider {
    pub const ALL: [Provider; 8] = [
        Provider::Aws,
        Provider::Gcp,
        Provider::Azure,
        Provider::Github,
        Provider::Datadog,
        Provider::Grafana,
        Provider::Splunk,
        Provider::Pagerduty,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Provider::Aws => "aws",
            Provider::Gcp => "gcp",
            Provider::Azure => "azure",
            Provider::Github => "github",
            Provider::Datadog => "datadog",
            Provider::Grafana => "grafana",
            Provider::Splunk => "splunk",
            Provider::Pagerduty => "pagerduty",
        }
    }

    /// How a team connects it.
    pub fn method(self) -> AuthMethod {
        match self {
            Provider::Gcp | Provider::Github => AuthMethod::Oauth,
            _ => AuthMethod::Key,
        }
    }

    /// The name people know it by.
    pub fn title(self) -> &'static str {
        match self {
            Provider::Aws => "AWS",
            Provider::Gcp => "Google Cloud",
            Provider::Azure => "Azure",
            Provider::Github => "GitHub",
            Provider::Datadog => "Datadog",
            Provider::Grafana => "Grafana",
            Provider::Splunk => "Splunk",
            Provider::Pagerduty => "PagerDuty",
        }
    }
}

impl std::fmt::Display for Provider {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(self.as_str())
    }
}

impl std::str::FromStr for Provider {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Provider::ALL
            .into_iter()
            .find(|provider| provider.as_str() == text)
            .ok_or_else(|| format!("`{text}` is not a provider; providers are aws, gcp, azure, github, datadog, grafana, splunk and pagerduty"))
    }
}

/// How a connection was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum AuthMethod {
    /// OAuth 2.0 authorization code with PKCE; the access token is refreshed before it expires.
    Oauth,
    /// Keys or a token given by an admin, checked against the provider before they were kept.
    Key,
    /// An AWS role assumed through STS with the organisation's external id.
    Role,
}

/// One thing a connection reaches: a GCP project, an AWS account or region, an Azure
/// subscription, a GitHub repository.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct InventoryItem {
    /// `project`, `account`, `region`, `subscription`, `repository`.
    pub kind: String,
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// `connection.established`: an admin connected a provider; its credentials are in the secret store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ConnectionEstablished {
    pub connection_id: Uuid,
    pub provider: Provider,
    pub method: AuthMethod,
    /// What the admin called it.
    pub name: String,
    /// Who the credentials act as (an AWS account and ARN, a GitHub login, a Grafana URL); never a secret.
    pub account: String,
    /// Where the credentials are: `vault:<mount>/data/aurora/orgs/{org}/connections/{id}`.
    pub secret_ref: String,
    pub secret_version: u64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scopes: Vec<String>,
    /// When the access token expires (OAuth).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
}

/// `connection.refreshed`: an OAuth access token was renewed with the refresh token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ConnectionRefreshed {
    pub secret_version: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
}

/// `connection.rotated`: an admin replaced the credentials; the next use reads the new version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ConnectionRotated {
    pub secret_version: u64,
    pub account: String,
}

/// What a failure stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum FailureStage {
    /// An OAuth callback whose code could not be exchanged for tokens.
    Exchange,
    /// Renewing the access token.
    Refresh,
    /// Listing what the connection reaches.
    Inventory,
    /// Scanning it for discovery, scan after scan.
    Discovery,
}

/// `connection.failed`: something a connection needs did not work; `reason` says what to do.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ConnectionFailed {
    pub stage: FailureStage,
    pub reason: String,
    /// Whether the connection can no longer be used until an admin reconnects it.
    pub needs_reconnect: bool,
}

/// `connection.inventory_recorded`: what the connection reaches, listed after it was made.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct InventoryRecorded {
    pub items: Vec<InventoryItem>,
    /// Items found beyond [`MAX_INVENTORY_ITEMS`], counted but not listed.
    #[serde(default)]
    pub omitted: u64,
}

/// `connection.removed`: an admin disconnected it; every version of its secret was deleted first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ConnectionRemoved {}

event_family! {
    /// Everything that happens to one connection.
    pub enum ConnectionEvent in "connection", named by ConnectionEventType {
        Established(ConnectionEstablished) = ("connection.established", 1),
        Refreshed(ConnectionRefreshed) = ("connection.refreshed", 1),
        Rotated(ConnectionRotated) = ("connection.rotated", 1),
        Failed(ConnectionFailed) = ("connection.failed", 1),
        InventoryRecorded(InventoryRecorded) = ("connection.inventory_recorded", 1),
        Removed(ConnectionRemoved) = ("connection.removed", 1),
    }
}

/// Registers this feature's event family.
pub fn register(families: &mut crate::catalog::Families) {
    families.add::<ConnectionEvent>();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn providers_are_read_from_their_names() {
        for provider in Provider::ALL {
            assert_eq!(provider.as_str().parse::<Provider>(), Ok(provider));
        }
        assert!("heroku".parse::<Provider>().is_err());
        assert_eq!(serde_json::to_value(Provider::Pagerduty).unwrap(), serde_json::json!("pagerduty"));
    }
}
