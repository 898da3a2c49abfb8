//! OAuth 2.0 authorization code with PKCE (RFC 6749, RFC 7636), as Google and GitHub speak it:
//! the authorization URL with a `state` and an S256 code challenge, the code exchanged for tokens
//! with the verifier, and refresh-token grants. The endpoints come from the configuration, so a
//! test points them at a local authorization server speaking the same protocol.

use base64::Engine;
use chrono::{DateTime, Utc};
use secrecy::ExposeSecret;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::{http_client, ProviderError};
use crate::config::{ConnectionsConfig, OAuthProviderConfig};

/// A random URL-safe value of 32 bytes (a `state`, a PKCE code verifier).
pub fn random_token() -> String {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("the operating system gives random bytes");
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// The S256 challenge of a code verifier.
pub fn code_challenge(verifier: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

/// The provider's authorization URL for one attempt.
pub fn authorization_url(
    provider: &OAuthProviderConfig,
    redirect_uri: &str,
    scopes: &[&str],
    state: &str,
    verifier: &str,
    extra: &[(&str, &str)],
) -> Result<String, ProviderError> {
    let client_id =
        provider.client_id.as_deref().ok_or_else(|| ProviderError::invalid("this installation has no OAuth client for the provider"))?;
    let mut url = reqwest::Url::parse(&provider.authorize_url)
        .map_err(|error| ProviderError::invalid(format!("the authorization URL is not a URL: {error}")))?;
    url.query_pairs_mut()
        .append_pair("response_type", "code")
        .append_pair("client_id", client_id)
        .append_pair("redirect_uri", redirect_uri)
        .append_pair("scope", &scopes.join(" "))
        .append_pair("state", state)
        .append_pair("code_challenge", &code_challenge(verifier))
        .append_pair("code_challenge_method", "S256")
        .extend_pairs(extra.iter().copied());
    Ok(url.into())
}

/// A token endpoint's answer.
#[derive(Clone, Deserialize)]
pub struct Tokens {
    pub access_token: String,
    #[serde(default)]
    pub refresh_token: Option<String>,
    #[serde(default)]
    pub expires_in: Option<i64>,
    #[serde(default)]
    pub scope: Option<String>,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("Tokens").field("expires_in", &self.expires_in).field("scope", &self.scope).finish_non_exhaustive()
    }
}

impl Tokens {
    pub fn expires_at(&self) -> Option<DateTime<Utc>> {
        self.expires_in.map(|seconds| Utc::now() + chrono::Duration::seconds(seconds))
    }

    /// Scopes, split on spaces or commas (GitHub separates them with commas).
    pub fn scopes(&self) -> Vec<String> {
        self.scope.as_deref().unwrap_or_default().split([' ', ',']).filter(|scope| !scope.is_empty()).map(str::to_owned).collect()
    }
}

/// Exchanges an authorization code for tokens.
pub async fn exchange(
    config: &ConnectionsConfig,
    provider: &OAuthProviderConfig,
    name: &'static str,
    code: &str,
    redirect_uri: &str,
    verifier: &str,
) -> Result<Tokens, ProviderError> {
    token_request(
        config,
        provider,
        name,
        &[("grant_type", "authorization_code"), ("code", code), ("redirect_uri", redirect_uri), ("code_verifier", verifier)],
    )
    .await
}

/// Renews an access token with a refresh token.
pub async fn refresh(
    config: &ConnectionsConfig,
    provider: &OAuthProviderConfig,
    name: &'static str,
    refresh_token: &str,
) -> Result<Tokens, ProviderError> {
    token_request(config, provider, name, &[("grant_type", "refresh_token"), ("refresh_token", refresh_token)]).await
}

async fn token_request(
    config: &ConnectionsConfig,
    provider: &OAuthProviderConfig,
    name: &'static str,
    grant: &[(&str, &str)],
) -> Result<Tokens, ProviderError> {
    let client_id =
        provider.client_id.as_deref().ok_or_else(|| ProviderError::invalid("this installation has no OAuth client for the provider"))?;
    let mut form: Vec<(&str, &str)> = grant.to_vec();
    form.push(("client_id", client_id));
    if let Some(secret) = &provider.client_secret {
        form.push(("client_secret", secret.expose_secret()));
    }
    let request = http_client(config).post(&provider.token_url).header("accept", "application/json").form(&form);
    let body = super::send_json(name, config.provider_timeout, request, super::json_detail).await.map_err(|error| match error {
        // A refused grant is 400 `invalid_grant`: the code or refresh token is no good.
        ProviderError::Invalid(detail) => ProviderError::Unauthorized { provider: name, detail },
        other => other,
    })?;
    // GitHub answers a refused grant with 200 and an `error` field.
    if let Some(error) = body.get("error").and_then(|error| error.as_str()) {
        let description = body.get("error_description").and_then(|text| text.as_str()).unwrap_or(error);
        return Err(ProviderError::Unauthorized { provider: name, detail: super::cut(description, 300).to_owned() });
    }
    serde_json::from_value(body)
        .map_err(|error| ProviderError::Unavailable { provider: name, detail: format!("a token answer without an access token: {error}") })
}
