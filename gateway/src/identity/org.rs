//! The organisation's members and invitations. Reading the member list takes any role; changing
//! it takes an admin.

use aurora_domain::identity::normalise_email;
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

pub const MAX_INVITATION_HOURS: i64 = 30 * 24;

/// The columns of an `accounts` row as a [`Member`].
const MEMBER_COLUMNS: &str = "user_id, email, display_name, role, created_at AS joined_at";

#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct Member {
    pub user_id: Uuid,
    pub email: String,
    pub display_name: String,
    #[sqlx(try_from = "String")]
    #[schema(value_type = RoleSchema)]
    pub role: RoleName,
    pub joined_at: DateTime<Utc>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangeRole {
    #[schema(value_type = RoleSchema)]
    pub role: Role,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InviteRequest {
    pub email: String,
    #[schema(value_type = RoleSchema)]
    pub role: Role,
    /// How long the invitation stays valid, 1 to 720 hours (default from `AURORA_INVITATION_TTL_SECS`).
    #[serde(default)]
    pub expires_in_hours: Option<i64>,
}

/// An invitation just made. The token is shown here once; pass it to the invitee, who registers
/// with it.
#[derive(Debug, Serialize, ToSchema)]
pub struct InvitationCreated {
    pub invitation_id: Uuid,
    pub email: String,
    #[schema(value_type = RoleSchema)]
    pub role: Role,
    pub expires_at: DateTime<Utc>,
    pub token: String,
}

#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct Invitation {
    pub invitation_id: Uuid,
    pub email: String,
    #[sqlx(try_from = "String")]
    #[schema(value_type = RoleSchema)]
    pub role: RoleName,
    pub invited_by: Uuid,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    /// `pending`, `accepted`, `revoked` or `expired`.
    pub status: String,
}

/// The organisation's members.
#[utoipa::path(get, path = "/v1/org/members", tag = "org", responses((status = 200, body = Vec<Member>), (status = 401, body = Problem)))]
pub async fn list_members(State(state): State<AppState>, caller: Caller) -> Result<axum::Json<Vec<Member>>, ApiError> {
    let mut read = caller.read_models(&state.pool).await?;
    let members =
        sqlx::query_as(&format!("SELECT {MEMBER_COLUMNS} FROM accounts WHERE org_id = $1 AND removed_at IS NULL ORDER BY created_at"))
            .bind(caller.org_id().0)
            .fetch_all(&mut *read)
            .await?;
    Ok(axum::Json(members))
}

/// Change a member's role. Takes effect on the member's next request.
#[utoipa::path(
    patch, path = "/v1/org/members/{user_id}", tag = "org", request_body = ChangeRole, params(("user_id" = Uuid, Path)),
    responses(
        (status = 200, body = Member), (status = 403, body = Problem), (status = 404, body = Problem),
        (status = 422, body = Problem, description = "The organisation's last admin")
    )
)]
pub async fn change_role(
    State(state): State<AppState>,
    caller: Caller,
    Path(user_id): Path<Uuid>,
    Json(request): Json<ChangeRole>,
) -> Result<axum::Json<Member>, ApiError> {
    state.identities.change_role(&caller.identity, user_id, request.role).await?;
    let mut read = caller.read_models(&state.pool).await?;
    let member = sqlx::query_as(&format!("SELECT {MEMBER_COLUMNS} FROM accounts WHERE org_id = $1 AND user_id = $2"))
        .bind(caller.org_id().0)
        .bind(user_id)
        .fetch_one(&mut *read)
        .await?;
    Ok(axum::Json(member))
}

/// Remove a member: their account, sessions and API tokens stop working at once.
#[utoipa::path(
    delete, path = "/v1/org/members/{user_id}", tag = "org", params(("user_id" = Uuid, Path)),
    responses((status = 204), (status = 403, body = Problem), (status = 404, body = Problem), (status = 422, body = Problem))
)]
pub async fn remove_member(State(state): State<AppState>, caller: Caller, Path(user_id): Path<Uuid>) -> Result<StatusCode, ApiError> {
    state.identities.remove_member(&caller.identity, user_id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Invite an email address to join with a role.
#[utoipa::path(
    post, path = "/v1/org/invitations", tag = "org", request_body = InviteRequest,
    responses(
        (status = 201, body = InvitationCreated), (status = 400, body = Problem), (status = 403, body = Problem),
        (status = 409, body = Problem, description = "The address already has an account")
    )
)]
pub async fn invite(
    State(state): State<AppState>,
    caller: Caller,
    Json(request): Json<InviteRequest>,
) -> Result<(StatusCode, axum::Json<InvitationCreated>), ApiError> {
    let email = normalise_email(&request.email)?;
    let lifetime = match request.expires_in_hours {
        None => chrono::Duration::from_std(state.config.auth.invitation_ttl).map_err(anyhow::Error::from)?,
        Some(hours) if (1..=MAX_INVITATION_HOURS).contains(&hours) => chrono::Duration::hours(hours),
        Some(_) => {
            return Err(ApiError::BadRequest {
                detail: format!("expires_in_hours must be between 1 and {MAX_INVITATION_HOURS}"),
                field: Some("expires_in_hours".into()),
            })
        }
    };
    let expires_at = Utc::now() + lifetime;
    let (invitation_id, token) = state.identities.invite(&caller.identity, email.clone(), request.role, expires_at).await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(InvitationCreated { invitation_id, email, role: request.role, expires_at, token: token.into_exposed() }),
    ))
}

/// The organisation's invitations, newest first.
#[utoipa::path(get, path = "/v1/org/invitations", tag = "org", responses((status = 200, body = Vec<Invitation>), (status = 403, body = Problem)))]
pub async fn list_invitations(State(state): State<AppState>, caller: Caller) -> Result<axum::Json<Vec<Invitation>>, ApiError> {
    let mut read = caller.read_models(&state.pool).await?;
    let invitations = sqlx::query_as(
        "SELECT invitation_id, email, role, invited_by, created_at, expires_at, \
                CASE WHEN accepted_at IS NOT NULL THEN 'accepted' WHEN revoked_at IS NOT NULL THEN 'revoked' \
                     WHEN expires_at <= now() THEN 'expired' ELSE 'pending' END AS status \
         FROM invitations WHERE org_id = $1 ORDER BY created_at DESC LIMIT 500",
    )
    .bind(caller.org_id().0)
    .fetch_all(&mut *read)
    .await?;
    Ok(axum::Json(invitations))
}

/// Withdraw an invitation that has not been used.
#[utoipa::path(
    delete, path = "/v1/org/invitations/{invitation_id}", tag = "org", params(("invitation_id" = Uuid, Path)),
    responses((status = 204), (status = 403, body = Problem), (status = 404, body = Problem), (status = 422, body = Problem))
)]
pub async fn revoke_invitation(
    State(state): State<AppState>,
    caller: Caller,
    Path(invitation_id): Path<Uuid>,
) -> Result<StatusCode, ApiError> {
    state.identities.revoke_invitation(&caller.identity, invitation_id).await?;
    Ok(StatusCode::NO_CONTENT)
}
