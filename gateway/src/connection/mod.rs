//! Connections: teams connect their clouds and tools here. Key connections are checked against
//! the provider, then their credentials are written to the secret store, and only then is
//! `connection.established` appended, carrying the secret's reference. OAuth connections (Google
//! Cloud, GitHub) start with the provider's authorization URL and a single-use `state` kept in
//! Redis, and end at the callback, which exchanges the code (PKCE) and does the same. Only admins
//! connect, rotate and remove; viewers see status. No answer of these routes holds a secret.

pub mod oauth;

use aurora_adapters::clouds::{self, ProviderError, Verified};
use aurora_adapters::secrets::{SecretError, SecretPath};
use aurora_commands::CommandMeta;
use aurora_domain::connection::{Connection, ConnectionCommand};
use aurora_events::connection::{AuthMethod, ConnectionEstablished, ConnectionEvent, ConnectionRotated, InventoryItem, Provider};
use aurora_events::identity::Role::{Admin, Viewer};
use aurora_events::EventPayload;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::auth::Access::Member;
use crate::auth::Caller;
use crate::commands::command_meta;
use crate::extract::{Json, Path};
use crate::problem::{ApiError, Problem};
use crate::routes::Routes;
use crate::AppState;

/// Registers the connection routes.
pub fn register(routes: &mut Routes) {
    routes.add(Member(Viewer), routes!(list_connections));
    routes.add(Member(Viewer), routes!(get_connection));
    routes.add(Member(Admin), routes!(connect));
    routes.add(Member(Admin), routes!(rotate));
    routes.add(Member(Admin), routes!(disconnect));
    routes.add(Member(Admin), routes!(aws_external_id));
    oauth::register(routes);
}

/// Largest credentials object accepted, in bytes of JSON.
const MAX_CREDENTIALS_BYTES: usize = 16 * 1024;

#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConnectRequest {
    /// `aws`, `azure`, `datadog`, `grafana`, `splunk` or `pagerduty` (Google Cloud and GitHub connect through OAuth).
    pub provider: String,
    /// What to call it (1 to 100 characters; the provider's name by default).
    #[serde(default)]
    pub name: Option<String>,
    /// The provider's credentials. AWS: `role_arn` (recommended; the role must trust Aurora and
    /// require the organisation's external id) or `access_key_id` and `secret_access_key`. Azure:
    /// `tenant_id`, `client_id`, `client_secret`. Datadog: `api_key`, `application_key`, `site`.
    /// Grafana: `url`, `token` (a service account token). Splunk: `url`, `token`. PagerDuty:
    /// `api_token`.
    #[schema(value_type = Object)]
    pub credentials: Value,
}

#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RotateRequest {
    /// New credentials of the same provider, in the same form as when connecting.
    #[schema(value_type = Object)]
    pub credentials: Value,
}

/// A connection as its organisation sees it: never a credential, only where it is kept.
#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct ConnectionView {
    pub connection_id: Uuid,
    pub provider: String,
    /// `oauth` or `key`.
    pub method: String,
    pub name: String,
    /// Who the credentials act as.
    pub account: String,
    /// `connected`, `failed` (an admin must reconnect it) or `removed`.
    pub status: String,
    pub needs_reconnect: bool,
    /// Where the credentials are kept (a reference, not a value).
    pub secret_ref: String,
    pub secret_version: i64,
    pub scopes: Vec<String>,
    pub last_error: Option<String>,
    pub last_error_stage: Option<String>,
    pub last_error_at: Option<DateTime<Utc>>,
    pub expires_at: Option<DateTime<Utc>>,
    pub refreshed_at: Option<DateTime<Utc>>,
    /// What it reaches: projects, accounts and regions, subscriptions, repositories.
    #[schema(value_type = Vec<Object>)]
    pub inventory: sqlx::types::Json<Vec<InventoryItem>>,
    pub inventory_omitted: i64,
    pub inventory_at: Option<DateTime<Utc>>,
    pub established_by: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// What a connection command did.
#[derive(Debug, Serialize, ToSchema)]
pub struct ConnectionAccepted {
    pub connection_id: Uuid,
    pub provider: String,
    pub account: String,
    pub secret_version: u64,
    /// The connection's stream version after the command.
    pub stream_version: u64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ExternalId {
    /// The external id the role's trust policy must require (`sts:ExternalId`); the same for
    /// every role of this organisation, and never another organisation's.
    pub external_id: String,
}

const COLUMNS: &str = "connection_id, provider, method, name, account, status, needs_reconnect, secret_ref, secret_version, scopes, \
     last_error, last_error_stage, last_error_at, expires_at, refreshed_at, inventory, inventory_omitted, inventory_at, established_by, created_at, updated_at";

/// The organisation's connections (removed ones are not listed).
#[utoipa::path(
    get, path = "/v1/connections", tag = "connections",
    responses((status = 200, body = Vec<ConnectionView>), (status = 401, body = Problem))
)]
pub async fn list_connections(State(state): State<AppState>, caller: Caller) -> Result<axum::Json<Vec<ConnectionView>>, ApiError> {
    let connections = sqlx::query_as(&format!("SELECT {COLUMNS} FROM connections WHERE org_id = $1 AND status <> 'removed' ORDER BY created_at"))
        .bind(caller.org_id().0)
        .fetch_all(&mut *caller.read_models(&state.pool).await?)
        .await?;
    Ok(axum::Json(connections))
}

/// One connection, with what it reaches.
#[utoipa::path(
    get, path = "/v1/connections/{connection_id}", tag = "connections", params(("connection_id" = Uuid, Path)),
    responses((status = 200, body = ConnectionView), (status = 404, body = Problem))
)]
pub async fn get_connection(State(state): State<AppState>, caller: Caller, Path(connection_id): Path<Uuid>) -> Result<axum::Json<ConnectionView>, ApiError> {
    sqlx::query_as(&format!("SELECT {COLUMNS} FROM connections WHERE org_id = $1 AND connection_id = $2"))
        .bind(caller.org_id().0)
        .bind(connection_id)
        .fetch_optional(&mut *caller.read_models(&state.pool).await?)
        .await?
        .map(axum::Json)
        .ok_or_else(|| ApiError::NotFound("connection".into()))
}

/// Connect a provider with keys or a token, checked against the provider before they are kept.
#[utoipa::path(
    post, path = "/v1/connections", tag = "connections", request_body = ConnectRequest,
    responses(
        (status = 201, body = ConnectionAccepted), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 413, body = Problem), (status = 415, body = Problem),
        (status = 422, body = Problem, description = "The provider refused the credentials; nothing was kept"),
        (status = 503, body = Problem, description = "The provider or the secret store is unavailable; nothing was kept")
    )
)]
pub async fn connect(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Json(request): Json<ConnectRequest>,
) -> Result<(StatusCode, axum::Json<ConnectionAccepted>), ApiError> {
    let provider: Provider = request.provider.parse().map_err(|reason: String| ApiError::BadRequest { detail: reason, field: Some("provider".into()) })?;
    if provider.method() == AuthMethod::Oauth {
        return Err(ApiError::BadRequest {
            detail: format!("{} connects through OAuth: POST /v1/connections/oauth/{provider}", provider.title()),
            field: Some("provider".into()),
        });
    }
    check_credentials_shape(&request.credentials)?;
    let verified = verify(&state, caller.org_id().0, provider, &request.credentials).await?;
    let method = if request.credentials.get("role_arn").is_some() { AuthMethod::Role } else { AuthMethod::Key };
    let meta = command_meta(&state, &caller, &headers, "connect", &(&request.provider, &request.name)).await?;
    let connection_id = meta.command_id;
    let name = request.name.unwrap_or_default();
    establish(&state, &meta, connection_id, provider, method, name, verified).await.map(|accepted| (StatusCode::CREATED, axum::Json(accepted)))
}

/// Writes the verified credentials to the secret store, then records the connection.
pub(crate) async fn establish(
    state: &AppState,
    meta: &CommandMeta,
    connection_id: Uuid,
    provider: Provider,
    method: AuthMethod,
    name: String,
    verified: Verified,
) -> Result<ConnectionAccepted, ApiError> {
    let path = SecretPath::connection(meta.org_id.0, connection_id);
    let secret_version = state.secrets.put(&path, &verified.secret).await.map_err(secret_store_error)?;
    let established = ConnectionEstablished {
        connection_id,
        provider,
        method,
        name,
        account: verified.account.clone(),
        secret_ref: state.secrets.reference(&path).0,
        secret_version,
        scopes: verified.scopes,
        expires_at: verified.expires_at,
    };
    let stream = ConnectionEvent::stream_of(connection_id);
    let handled = match state.commands.handle::<Connection>(&stream, ConnectionCommand::Establish(established), meta, None).await {
        Ok(handled) => handled,
        Err(error) => {
            // Nothing points at the secret now: take it back rather than leave it behind.
            if let Err(cleanup) = state.secrets.destroy(&path).await {
                tracing::warn!(%connection_id, error = %cleanup, "could not delete the secret of a connection that was not recorded");
            }
            return Err(error.into());
        }
    };
    aurora_commands::relay::wake(&state.pool).await;
    tracing::info!(%connection_id, %provider, "connection established");
    Ok(ConnectionAccepted { connection_id, provider: provider.as_str().into(), account: verified.account, secret_version, stream_version: handled.stream_version })
}

/// Replace a connection's credentials; the next use reads the new version.
#[utoipa::path(
    put, path = "/v1/connections/{connection_id}/credentials", tag = "connections", request_body = RotateRequest,
    params(("connection_id" = Uuid, Path)),
    responses(
        (status = 200, body = ConnectionAccepted), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 404, body = Problem), (status = 409, body = Problem), (status = 413, body = Problem),
        (status = 415, body = Problem), (status = 422, body = Problem), (status = 503, body = Problem)
    )
)]
pub async fn rotate(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Path(connection_id): Path<Uuid>,
    Json(request): Json<RotateRequest>,
) -> Result<axum::Json<ConnectionAccepted>, ApiError> {
    let stream = ConnectionEvent::stream_of(connection_id);
    let (connection, _) = state.commands.load::<Connection>(&stream, caller.org_id()).await.map_err(ApiError::from)?;
    let (Some(established), false) = (connection.established.as_ref(), connection.removed) else { return Err(ApiError::NotFound("connection".into())) };
    if established.provider.method() == AuthMethod::Oauth {
        return Err(ApiError::Conflict {
            detail: format!("an OAuth connection is renewed by connecting {} again", established.provider.title()),
            current_version: None,
        });
    }
    check_credentials_shape(&request.credentials)?;
    let verified = verify(&state, caller.org_id().0, established.provider, &request.credentials).await?;
    let path = SecretPath::connection(caller.org_id().0, connection_id);
    let secret_version = state.secrets.put(&path, &verified.secret).await.map_err(secret_store_error)?;
    let meta = command_meta(&state, &caller, &headers, "rotate_connection", &connection_id).await?;
    let rotated = ConnectionRotated { secret_version, account: verified.account.clone() };
    let handled = state.commands.handle::<Connection>(&stream, ConnectionCommand::Rotate(rotated), &meta, None).await?;
    aurora_commands::relay::wake(&state.pool).await;
    Ok(axum::Json(ConnectionAccepted {
        connection_id,
        provider: established.provider.as_str().into(),
        account: verified.account,
        secret_version,
        stream_version: handled.stream_version,
    }))
}

/// Disconnect: every version of the credentials is deleted, then `connection.removed` recorded.
#[utoipa::path(
    delete, path = "/v1/connections/{connection_id}", tag = "connections", params(("connection_id" = Uuid, Path)),
    responses(
        (status = 204), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem),
        (status = 409, body = Problem), (status = 503, body = Problem)
    )
)]
pub async fn disconnect(State(state): State<AppState>, caller: Caller, headers: HeaderMap, Path(connection_id): Path<Uuid>) -> Result<StatusCode, ApiError> {
    let stream = ConnectionEvent::stream_of(connection_id);
    let (connection, _) = state.commands.load::<Connection>(&stream, caller.org_id()).await.map_err(ApiError::from)?;
    if connection.established.is_none() || connection.removed {
        return Err(ApiError::NotFound("connection".into()));
    }
    state.secrets.destroy(&SecretPath::connection(caller.org_id().0, connection_id)).await.map_err(secret_store_error)?;
    let meta = command_meta(&state, &caller, &headers, "disconnect", &connection_id).await?;
    state.commands.handle::<Connection>(&stream, ConnectionCommand::Remove, &meta, None).await?;
    aurora_commands::relay::wake(&state.pool).await;
    tracing::info!(%connection_id, "connection removed");
    Ok(StatusCode::NO_CONTENT)
}

/// The external id an AWS role must require before Aurora assumes it for this organisation.
#[utoipa::path(
    get, path = "/v1/connections/aws/external-id", tag = "connections",
    responses((status = 200, body = ExternalId), (status = 401, body = Problem), (status = 403, body = Problem))
)]
pub async fn aws_external_id(caller: Caller) -> axum::Json<ExternalId> {
    axum::Json(ExternalId { external_id: clouds::aws::external_id(caller.org_id().0) })
}

/// Credentials are an object of short strings.
fn check_credentials_shape(credentials: &Value) -> Result<(), ApiError> {
    let bad = |detail: &str| ApiError::BadRequest { detail: detail.into(), field: Some("credentials".into()) };
    let object = credentials.as_object().ok_or_else(|| bad("`credentials` must be an object"))?;
    if serde_json::to_vec(credentials).map(|bytes| bytes.len()).unwrap_or(usize::MAX) > MAX_CREDENTIALS_BYTES {
        return Err(bad("`credentials` may be at most 16 KiB"));
    }
    for value in object.values() {
        match value {
            Value::String(text) if !text.chars().any(|character| character.is_control()) => {}
            _ => return Err(bad("every credential must be a string without control characters")),
        }
    }
    Ok(())
}

/// Checks `credentials` against the provider; a refusal says why, with no credential in it.
async fn verify(state: &AppState, org_id: Uuid, provider: Provider, credentials: &Value) -> Result<Verified, ApiError> {
    let config = &state.config.connections;
    let verified = match provider {
        Provider::Aws => clouds::aws::verify(config, org_id, credentials).await,
        Provider::Azure => clouds::azure::verify(config, credentials).await,
        Provider::Datadog => clouds::datadog::verify(config, credentials).await,
        Provider::Grafana => clouds::grafana::verify(config, credentials).await,
        Provider::Splunk => clouds::splunk::verify(config, credentials).await,
        Provider::Pagerduty => clouds::pagerduty::verify(config, credentials).await,
        Provider::Gcp | Provider::Github => return Err(ApiError::BadRequest { detail: "this provider connects through OAuth".into(), field: Some("provider".into()) }),
    };
    verified.map_err(|error| provider_error(provider, error, credentials))
}

/// A provider's refusal as an answer: what it said, with every credential value taken out.
pub(crate) fn provider_error(provider: Provider, error: ProviderError, credentials: &Value) -> ApiError {
    let mut detail = error.to_string();
    for value in credentials.as_object().into_iter().flat_map(|object| object.values()).filter_map(Value::as_str).filter(|value| value.len() >= 4) {
        detail = detail.replace(value, "***");
    }
    tracing::info!(%provider, %detail, "provider refused a connection");
    match error {
        ProviderError::Timeout { .. } | ProviderError::Unavailable { .. } | ProviderError::RateLimited { .. } => {
            ApiError::Unavailable(format!("{detail}; nothing was kept"))
        }
        _ => ApiError::Unprocessable(format!("{detail}; nothing was kept")),
    }
}

pub(crate) fn secret_store_error(error: SecretError) -> ApiError {
    tracing::warn!(%error, "secret store error");
    ApiError::Unavailable(format!("{error}; nothing was changed"))
}
