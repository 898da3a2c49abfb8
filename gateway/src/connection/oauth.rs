//! OAuth connections (Google Cloud, GitHub): authorization code with PKCE. Starting gives the
//! provider's authorization URL with a `state` of 256 random bits, kept in Redis (under its
//! digest, with the PKCE verifier, the organisation and the admin who started) for
//! `AURORA_OAUTH_STATE_TTL_SECS`; the callback takes the state with `GETDEL`, so it works once on
//! any gateway, exchanges the code with the verifier, learns who the token is, and records the
//! connection. A failed exchange is recorded as `connection.failed`.

use aurora_adapters::clouds::{self, oauth, Verified};
use aurora_adapters::config::OAuthProviderConfig;
use aurora_adapters::redis::RedisUnavailable;
use aurora_adapters::secrets::Secret;
use aurora_commands::CommandMeta;
use aurora_domain::connection::{Connection, ConnectionCommand};
use aurora_events::connection::{AuthMethod, ConnectionEvent, ConnectionFailed, FailureStage, Provider};
use aurora_events::identity::Role::Admin;
use aurora_events::{Actor, EventPayload, OrgId};
use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use redis::AsyncCommands;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::routes;
use uuid::Uuid;

use super::{establish, ConnectionAccepted};
use crate::auth::Access::{Member, Public};
use crate::auth::Caller;
use crate::auth::secret::hex_digest;
use crate::extract::{Json, Path, Query};
use crate::problem::{ApiError, Problem};
use crate::routes::Routes;
use crate::AppState;

pub fn register(routes: &mut Routes) {
    routes.add(Member(Admin), routes!(start));
    routes.add(Public, routes!(callback));
}

#[derive(Debug, Default, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StartRequest {
    /// What to call the connection (1 to 100 characters; the provider's name by default).
    #[serde(default)]
    pub name: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AuthorizationStarted {
    /// Send the browser here; the provider sends it back to the callback.
    pub authorization_url: String,
    pub connection_id: Uuid,
    /// The callback must come before this.
    pub expires_at: DateTime<Utc>,
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct CallbackParams {
    /// The `state` of the authorization URL.
    pub state: Option<String>,
    /// The authorization code.
    pub code: Option<String>,
    /// The provider's refusal (the user declined, a bad scope).
    pub error: Option<String>,
    pub error_description: Option<String>,
}

/// What a `state` stands for, kept in Redis until its callback.
#[derive(Serialize, Deserialize)]
struct Pending {
    org_id: Uuid,
    user_id: Uuid,
    provider: Provider,
    connection_id: Uuid,
    name: String,
    verifier: String,
}

/// A provider's OAuth client, the name it is known by, its scopes and extra authorization parameters.
type OAuthSpec<'a> = (&'a OAuthProviderConfig, &'static str, &'static [&'static str], &'static [(&'static str, &'static str)]);

fn oauth_provider(state: &AppState, provider: Provider) -> Result<OAuthSpec<'_>, ApiError> {
    let config = &state.config.connections;
    let chosen = match provider {
        Provider::Github => (&config.github, clouds::github::NAME, clouds::github::SCOPES, &[][..]),
        Provider::Gcp => (&config.google, clouds::gcp::NAME, clouds::gcp::SCOPES, clouds::gcp::AUTHORIZE_EXTRA),
        _ => {
            return Err(ApiError::BadRequest {
                detail: format!("{} connects with keys: POST /v1/connections", provider.title()),
                field: Some("provider".into()),
            })
        }
    };
    if chosen.0.client_id.is_none() {
        return Err(ApiError::Unavailable(format!(
            "this installation has no OAuth client for {}; an operator sets AURORA_{}_CLIENT_ID and AURORA_{}_CLIENT_SECRET",
            provider.title(),
            if provider == Provider::Github { "GITHUB" } else { "GOOGLE" },
            if provider == Provider::Github { "GITHUB" } else { "GOOGLE" },
        )));
    }
    Ok(chosen)
}

fn redirect_uri(state: &AppState) -> String {
    format!("{}/v1/connections/oauth/callback", state.config.connections.public_url)
}

fn state_key(state: &AppState, token: &str) -> String {
    format!("{}oauth-state:{}", state.config.redis.prefix, hex_digest(token))
}

fn unavailable(error: RedisUnavailable) -> ApiError {
    tracing::warn!(%error, "oauth state store unavailable");
    ApiError::Unavailable("the OAuth state store is unavailable; try again shortly".into())
}

/// Start connecting Google Cloud or GitHub: the provider's authorization URL.
#[utoipa::path(
    post, path = "/v1/connections/oauth/{provider}", tag = "connections", request_body = StartRequest,
    params(("provider" = String, Path, description = "`gcp` or `github`")),
    responses(
        (status = 201, body = AuthorizationStarted), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 404, body = Problem), (status = 413, body = Problem), (status = 415, body = Problem),
        (status = 503, body = Problem)
    )
)]
pub async fn start(
    State(state): State<AppState>,
    caller: Caller,
    Path(provider): Path<String>,
    Json(request): Json<StartRequest>,
) -> Result<(StatusCode, axum::Json<AuthorizationStarted>), ApiError> {
    let provider: Provider = provider.parse().map_err(|_| ApiError::NotFound(format!("OAuth provider `{provider}`")))?;
    let (config, _, scopes, extra) = oauth_provider(&state, provider)?;
    let name = aurora_domain::text::bounded("name", request.name.as_deref().unwrap_or_default(), aurora_domain::connection::MAX_NAME_CHARS, aurora_domain::text::Lines::One)?;
    let token = oauth::random_token();
    let verifier = oauth::random_token();
    let authorization_url = oauth::authorization_url(config, &redirect_uri(&state), scopes, &token, &verifier, extra).map_err(|error| ApiError::Unavailable(error.to_string()))?;
    let pending = Pending { org_id: caller.org_id().0, user_id: caller.user_id(), provider, connection_id: Uuid::now_v7(), name, verifier };
    let ttl = state.config.connections.oauth_state_ttl;
    let value = serde_json::to_string(&pending).map_err(anyhow::Error::from)?;
    let key = state_key(&state, &token);
    state.redis.run(|mut connection| async move { connection.set_ex::<_, _, ()>(key, value, ttl.as_secs()).await }).await.map_err(unavailable)?;
    let expires_at = Utc::now() + chrono::Duration::from_std(ttl).unwrap_or_default();
    Ok((StatusCode::CREATED, axum::Json(AuthorizationStarted { authorization_url, connection_id: pending.connection_id, expires_at })))
}

/// Where the provider sends the browser back: exchanges the code and records the connection.
#[utoipa::path(
    get, path = "/v1/connections/oauth/callback", tag = "connections", params(CallbackParams),
    responses(
        (status = 201, body = ConnectionAccepted),
        (status = 400, body = Problem, description = "The state is unknown, expired or used, or the provider refused"),
        (status = 422, body = Problem, description = "The code could not be exchanged; recorded as connection.failed"),
        (status = 503, body = Problem)
    )
)]
pub async fn callback(State(state): State<AppState>, Query(params): Query<CallbackParams>) -> Result<(StatusCode, axum::Json<ConnectionAccepted>), ApiError> {
    let bad_state = || ApiError::BadRequest { detail: "the OAuth state is unknown, expired or already used; start connecting again".into(), field: Some("state".into()) };
    let token = params.state.as_deref().filter(|token| !token.is_empty() && token.len() <= 128).ok_or_else(bad_state)?;
    let key = state_key(&state, token);
    let stored: Option<String> = state.redis.run(|mut connection| async move { connection.get_del(key).await }).await.map_err(unavailable)?;
    let pending: Pending = stored.and_then(|text| serde_json::from_str(&text).ok()).ok_or_else(bad_state)?;
    let (config, name, _, _) = oauth_provider(&state, pending.provider)?;
    let meta = CommandMeta::new(OrgId(pending.org_id), Actor::user(pending.user_id));
    if let Some(error) = params.error.as_deref() {
        let reason = format!("{name} refused the authorization: {}", params.error_description.as_deref().unwrap_or(error));
        record_failure(&state, &meta, &pending, &reason).await?;
        return Err(ApiError::BadRequest { detail: reason, field: None });
    }
    let code = params.code.as_deref().filter(|code| !code.is_empty() && code.len() <= 2048).ok_or_else(|| ApiError::BadRequest { detail: "the callback has no code".into(), field: Some("code".into()) })?;
    let verified = match exchange(&state, config, name, pending.provider, code, &pending.verifier).await {
        Ok(verified) => verified,
        Err(error) => {
            let reason = format!("connecting {name} failed: {error}");
            record_failure(&state, &meta, &pending, &reason).await?;
            return Err(match error {
                clouds::ProviderError::Timeout { .. } | clouds::ProviderError::Unavailable { .. } | clouds::ProviderError::RateLimited { .. } => ApiError::Unavailable(reason),
                _ => ApiError::Unprocessable(reason),
            });
        }
    };
    let accepted = establish(&state, &meta, pending.connection_id, pending.provider, AuthMethod::Oauth, pending.name, verified).await?;
    Ok((StatusCode::CREATED, axum::Json(accepted)))
}

/// The code for tokens, and who they are.
async fn exchange(state: &AppState, config: &OAuthProviderConfig, name: &'static str, provider: Provider, code: &str, verifier: &str) -> Result<Verified, clouds::ProviderError> {
    let connections = &state.config.connections;
    let tokens = oauth::exchange(connections, config, name, code, &redirect_uri(state), verifier).await?;
    let secret = Secret::new().with("access_token", tokens.access_token.clone()).with("refresh_token", tokens.refresh_token.clone().unwrap_or_default());
    let account = match provider {
        Provider::Github => clouds::github::GitHub::new(connections, &secret)?.login().await?,
        _ => clouds::gcp::Gcp::new(connections, &secret)?.email().await?,
    };
    Ok(Verified { account, secret, expires_at: tokens.expires_at(), scopes: tokens.scopes() })
}

async fn record_failure(state: &AppState, meta: &CommandMeta, pending: &Pending, reason: &str) -> Result<(), ApiError> {
    let failed = ConnectionFailed { stage: FailureStage::Exchange, reason: aurora_adapters::clouds::cut(reason, 900).to_owned(), needs_reconnect: true };
    state.commands.handle::<Connection>(&ConnectionEvent::stream_of(pending.connection_id), ConnectionCommand::Fail(failed), meta, None).await?;
    aurora_commands::relay::wake(&state.pool).await;
    Ok(())
}
