//! The clouds port: clients of the providers a team connects (AWS, Google Cloud, Azure, GitHub,
//! Datadog, Grafana, Splunk, PagerDuty), one module each. Each module checks credentials before
//! they are kept (`verify`), lists what a connection reaches (`inventory`) and holds the read-only
//! calls the agent's tools make. Every call has a timeout and turns the provider's refusals into a
//! [`ProviderError`] that says what to do about it; no error carries a credential.
//!
//! Credentials come in as a [`Secret`] read from the secret store at the moment of use and are
//! dropped with the call.

pub mod aws;
pub mod azure;
pub mod datadog;
pub mod gcp;
pub mod github;
pub mod grafana;
pub mod oauth;
pub mod pagerduty;
pub mod splunk;

use std::net::IpAddr;
use std::time::Duration;

use aurora_events::connection::{InventoryItem, Provider};
use serde_json::Value;

use crate::config::ConnectionsConfig;
use crate::secrets::Secret;

/// Why a provider call did not give an answer, in words a person or the model can act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProviderError {
    /// The credentials are not (or no longer) valid.
    #[error("{provider} refused the credentials: {detail}. Reconnect {provider} with valid credentials")]
    Unauthorized { provider: &'static str, detail: String },
    /// Valid credentials without the permission the call needs.
    #[error("{provider} denied the permission this needs: {detail}. Grant it to the connected identity, or ask about something else")]
    Forbidden { provider: &'static str, detail: String },
    #[error("{provider} is rate limiting Aurora{}; wait and try again", .retry_after_secs.map(|secs| format!(" (retry after {secs} s)")).unwrap_or_default())]
    RateLimited { provider: &'static str, retry_after_secs: Option<u64> },
    /// The thing asked about does not exist there (or is not offered in that region).
    #[error("{provider}: {detail}")]
    NotFound { provider: &'static str, detail: String },
    #[error("{provider} did not answer within {secs} s; try again, or narrow the request")]
    Timeout { provider: &'static str, secs: u64 },
    #[error("{provider} is unavailable ({detail}); try again later")]
    Unavailable { provider: &'static str, detail: String },
    /// What was given cannot work (a malformed URL, a missing field, a refused address).
    #[error("{0}")]
    Invalid(String),
}

impl ProviderError {
    pub fn invalid(detail: impl Into<String>) -> Self {
        ProviderError::Invalid(detail.into())
    }
}

/// What a successful check of credentials learnt: who they are (no secret), and the fields to
/// keep in the secret store.
#[derive(Debug, Clone)]
pub struct Verified {
    /// The identity the credentials act as: an AWS account and ARN, a GitHub login, a Datadog site.
    pub account: String,
    pub secret: Secret,
    /// When the access token expires (OAuth), for the refresh timer.
    pub expires_at: Option<chrono::DateTime<chrono::Utc>>,
    pub scopes: Vec<String>,
}

/// The HTTP client every provider module uses: the timeout of the configuration, no proxy from
/// the environment, no redirects (a redirect could carry a credential header elsewhere).
pub fn http_client(config: &ConnectionsConfig) -> reqwest::Client {
    crate::llm::install_tls_provider();
    reqwest::Client::builder()
        .timeout(config.provider_timeout)
        .connect_timeout(Duration::from_secs(5).min(config.provider_timeout))
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .user_agent(concat!("aurora/", env!("CARGO_PKG_VERSION")))
        .build()
        .expect("an HTTP client with these settings builds")
}

/// Sends `request` and returns the body of a successful answer, or the provider's refusal as a
/// [`ProviderError`]. `detail_of` digs the provider's own message out of an error body.
pub async fn send(
    provider: &'static str,
    timeout: Duration,
    request: reqwest::RequestBuilder,
    detail_of: fn(&str) -> Option<String>,
) -> Result<String, ProviderError> {
    let response = request.send().await.map_err(|error| transport_error(provider, timeout, &error))?;
    let status = response.status();
    let retry_after =
        response.headers().get("retry-after").and_then(|value| value.to_str().ok()).and_then(|value| value.trim().parse().ok());
    let body = response.text().await.map_err(|error| transport_error(provider, timeout, &error))?;
    if status.is_success() {
        return Ok(body);
    }
    let detail = detail_of(&body).map(|detail| cut(&detail, 300).to_owned()).unwrap_or_else(|| format!("HTTP {}", status.as_u16()));
    Err(match status.as_u16() {
        401 => ProviderError::Unauthorized { provider, detail },
        403 => ProviderError::Forbidden { provider, detail },
        404 => ProviderError::NotFound { provider, detail },
        429 => ProviderError::RateLimited { provider, retry_after_secs: retry_after },
        code if code >= 500 => ProviderError::Unavailable { provider, detail: format!("HTTP {code}: {detail}") },
        code => ProviderError::Invalid(format!("{provider} refused the request (HTTP {code}): {detail}")),
    })
}

/// [`send`], parsing the answer as JSON.
pub async fn send_json(
    provider: &'static str,
    timeout: Duration,
    request: reqwest::RequestBuilder,
    detail_of: fn(&str) -> Option<String>,
) -> Result<Value, ProviderError> {
    let body = send(provider, timeout, request, detail_of).await?;
    serde_json::from_str(&body)
        .map_err(|error| ProviderError::Unavailable { provider, detail: format!("an answer that is not JSON: {error}") })
}

/// A request that got no answer: timed out, or refused on the way (without the URL, which could carry a query).
pub(crate) fn transport_error(provider: &'static str, timeout: Duration, error: &reqwest::Error) -> ProviderError {
    if error.is_timeout() {
        return ProviderError::Timeout { provider, secs: timeout.as_secs().max(1) };
    }
    // The innermost cause (connection refused, DNS) without the URL, which could carry a query.
    let mut cause: &dyn std::error::Error = error;
    while let Some(source) = cause.source() {
        cause = source;
    }
    ProviderError::Unavailable { provider, detail: cause.to_string() }
}

/// The `message` (or `error`, `errors[0]`, `error_description`) of a JSON error body.
pub fn json_detail(body: &str) -> Option<String> {
    let value: Value = serde_json::from_str(body).ok()?;
    let text = |value: &Value| -> Option<String> {
        match value {
            Value::String(text) => Some(text.clone()),
            Value::Object(object) => object.get("message").and_then(Value::as_str).map(str::to_owned),
            _ => None,
        }
    };
    for key in ["error_description", "message", "error", "errors"] {
        let found = match value.get(key) {
            Some(Value::Array(items)) => items.first().and_then(text),
            Some(other) => text(other),
            None => None,
        };
        if found.is_some() {
            return found;
        }
    }
    None
}

/// A service at a URL the team gave, called with a bearer token (Grafana, Splunk).
pub struct TokenService {
    pub http: reqwest::Client,
    /// The checked URL, without a trailing slash.
    pub url: String,
    pub token: String,
    pub timeout: Duration,
}

impl TokenService {
    /// The service of a stored connection's `url` and `token`, the URL checked again at each use.
    pub async fn from_secret(config: &ConnectionsConfig, secret: &Secret, provider: &str) -> Result<Self, ProviderError> {
        let url = secret.get("url").ok_or_else(|| ProviderError::invalid(format!("the {provider} connection has no URL")))?;
        let url = check_user_url(url, config.allow_private_urls).await?;
        let token = secret.get("token").ok_or_else(|| ProviderError::invalid(format!("the {provider} connection has no token")))?;
        Ok(Self {
            http: http_client(config),
            url: url.as_str().trim_end_matches('/').to_owned(),
            token: token.to_owned(),
            timeout: config.provider_timeout,
        })
    }
}

/// A credential field a person gave, trimmed; `None` when absent or empty.
pub fn optional_field<'a>(input: &'a Value, name: &str) -> Option<&'a str> {
    input.get(name).and_then(Value::as_str).map(str::trim).filter(|value| !value.is_empty())
}

/// A credential field the provider cannot do without.
pub fn required_field<'a>(input: &'a Value, name: &str) -> Result<&'a str, ProviderError> {
    optional_field(input, name).ok_or_else(|| ProviderError::invalid(format!("`{name}` is required")))
}

/// At most `cap` bytes of `text`, cut on a character boundary.
pub fn cut(text: &str, cap: usize) -> &str {
    let mut end = cap.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// Checks a URL a user gave for a provider (Grafana, Splunk): http or https, a host, and unless
/// `allow_private` (tests, or an installation inside the team's network) not an address of this
/// machine or a private network, so that a connection cannot make Aurora probe its own
/// neighbourhood.
pub async fn check_user_url(raw: &str, allow_private: bool) -> Result<reqwest::Url, ProviderError> {
    let url = reqwest::Url::parse(raw.trim()).map_err(|error| ProviderError::invalid(format!("`url` is not a URL: {error}")))?;
    if !matches!(url.scheme(), "https" | "http") {
        return Err(ProviderError::invalid("`url` must be an http or https URL"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(ProviderError::invalid("`url` must not carry credentials; give the token in its own field"));
    }
    let host = url.host_str().ok_or_else(|| ProviderError::invalid("`url` has no host"))?.to_owned();
    if allow_private {
        return Ok(url);
    }
    let port = url.port_or_known_default().unwrap_or(443);
    let addresses = tokio::net::lookup_host((host.trim_matches(['[', ']']), port))
        .await
        .map_err(|error| ProviderError::invalid(format!("`url`'s host cannot be resolved: {error}")))?;
    for address in addresses {
        if is_private(address.ip()) {
            return Err(ProviderError::invalid(
                "`url` points at a loopback, private or link-local address; Aurora does not call those for a connection",
            ));
        }
    }
    Ok(url)
}

fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(ip) => {
            ip.is_loopback()
                || ip.is_private()
                || ip.is_link_local()
                || ip.is_unspecified()
                || ip.is_broadcast()
                || ip.octets()[0] == 100 && (ip.octets()[1] & 0xc0) == 64
        }
        IpAddr::V6(ip) => {
            ip.is_loopback()
                || ip.is_unspecified()
                || (ip.segments()[0] & 0xfe00) == 0xfc00
                || (ip.segments()[0] & 0xffc0) == 0xfe80
                || ip.to_ipv4_mapped().is_some_and(|mapped| is_private(IpAddr::V4(mapped)))
        }
    }
}

/// Lists what a connection reaches, for the UI and the agent's prompt (at most
/// [`aurora_events::connection::MAX_INVENTORY_ITEMS`]).
pub async fn inventory(config: &ConnectionsConfig, provider: Provider, secret: &Secret) -> Result<Vec<InventoryItem>, ProviderError> {
    match provider {
        Provider::Aws => aws::inventory(config, secret).await,
        Provider::Gcp => gcp::inventory(config, secret).await,
        Provider::Azure => azure::inventory(config, secret).await,
        Provider::Github => github::inventory(config, secret).await,
        Provider::Datadog | Provider::Grafana | Provider::Splunk | Provider::Pagerduty => Ok(Vec::new()),
    }
}

/// What a child process (the Terraform CLI and its providers) needs of a connection's
/// credentials: environment variables, and the values among them that must never be shown.
#[derive(Default)]
pub struct RunEnvironment {
    pub vars: Vec<(&'static str, String)>,
    pub secrets: Vec<String>,
}
