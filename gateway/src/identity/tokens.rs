//! API tokens for automation: created and revoked by their owner, shown once, stored hashed,
//! optionally expiring, never with a higher role than the owner's.

use aurora_domain::identity::{token_role, valid_name};
use aurora_events::identity::Role;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::auth::Caller;
use crate::extract::{Json, Path};
use crate::problem::{ApiError, Problem};
use crate::identity::auth::{RoleName, RoleSchema};
use crate::AppState;

pub const MAX_TOKEN_DAYS: i64 = 366;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateToken {
    /// What the token is for, 1 to 100 characters.
    pub name: String,
    /// At most the creator's role (the default).
    #[serde(default)]
    #[schema(value_type = Option<RoleSchema>)]
    pub role: Option<Role>,
    /// Days until the token stops working, 1 to 366; without it the token lasts until revoked.
    #[serde(default)]
    pub expires_in_days: Option<i64>,
}

/// A token just created. `token` is shown this once; send it as `Authorization: Bearer <token>`.
#[derive(Debug, Serialize, ToSchema)]
pub struct TokenCreated {
    pub token_id: Uuid,
    pub name: String,
    #[schema(value_type = RoleSchema)]
    pub role: Role,
    pub expires_at: Option<DateTime<Utc>>,
    pub token: String,
}

#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct TokenView {
    pub token_id: Uuid,
    pub name: String,
    #[sqlx(try_from = "String")]
    #[schema(value_type = RoleSchema)]
    pub role: RoleName,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub last_used_at: Option<DateTime<Utc>>,
}

/// Create an API token.
#[utoipa::path(
    post, path = "/v1/tokens", tag = "tokens", request_body = CreateToken,
    responses((status = 201, body = TokenCreated), (status = 400, body = Problem), (status = 401, body = Problem))
)]
pub async fn create_token(
    State(state): State<AppState>,
    caller: Caller,
    Json(request): Json<CreateToken>,
) -> Result<(StatusCode, axum::Json<TokenCreated>), ApiError> {
    let name = valid_name("name", &request.name)?;
    let role = token_role(request.role, caller.role())?;
    let expires_at = match request.expires_in_days {
        None => None,
        Some(days) if (1..=MAX_TOKEN_DAYS).contains(&days) => Some(Utc::now() + chrono::Duration::days(days)),
        Some(_) => {
            return Err(ApiError::BadRequest {
                detail: format!("expires_in_days must be between 1 and {MAX_TOKEN_DAYS}"),
                field: Some("expires_in_days".into()),
            })
        }
    };
    // A token made with a token never outlives its parent: without this, a short-lived token
    // could mint itself a permanent one.
    let expires_at = match state.identities.credential_expiry(&caller.identity).await? {
        Some(parent_expiry) => Some(expires_at.map_or(parent_expiry, |requested| requested.min(parent_expiry))),
        None => expires_at,
    };
    let (token_id, token) = state.identities.create_api_token(&caller.identity, name.clone(), role, expires_at).await?;
    Ok((StatusCode::CREATED, axum::Json(TokenCreated { token_id, name, role, expires_at, token: token.into_exposed() })))
}

/// The caller's own API tokens (never their values).
#[utoipa::path(get, path = "/v1/tokens", tag = "tokens", responses((status = 200, body = Vec<TokenView>), (status = 401, body = Problem)))]
pub async fn list_tokens(State(state): State<AppState>, caller: Caller) -> Result<axum::Json<Vec<TokenView>>, ApiError> {
    let mut read = caller.read_models(&state.pool).await?;
    let tokens = sqlx::query_as(
        "SELECT token_id, name, role, created_at, expires_at, revoked_at, last_used_at FROM api_tokens \
         WHERE org_id = $1 AND user_id = $2 ORDER BY created_at DESC",
    )
    .bind(caller.org_id().0)
    .bind(caller.user_id())
    .fetch_all(&mut *read)
    .await?;
    Ok(axum::Json(tokens))
}

/// Revoke one of the caller's API tokens; it is refused from the next request on.
#[utoipa::path(
    delete, path = "/v1/tokens/{token_id}", tag = "tokens", params(("token_id" = Uuid, Path)),
    responses((status = 204), (status = 401, body = Problem), (status = 404, body = Problem))
)]
pub async fn revoke_token(State(state): State<AppState>, caller: Caller, Path(token_id): Path<Uuid>) -> Result<StatusCode, ApiError> {
    state.identities.revoke_api_token(&caller.identity, token_id).await?;
    Ok(StatusCode::NO_CONTENT)
}
