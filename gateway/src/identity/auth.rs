//! Accounts and credentials: registration, login, logout, password change, who am I, and
//! WebSocket tickets.

use aurora_domain::identity::{check_password, normalise_email, valid_name};
use aurora_events::identity::Role;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::auth::secret::Password;
use crate::auth::store::{Joining, OpenedSession, Registration};
use crate::auth::{password, session_cookies, Caller, Credential};
use crate::extract::Json;
use crate::problem::{ApiError, Problem};
use crate::AppState;

/// Register an account. Without an invitation the account opens a new organisation and is its
/// admin; with one it joins the inviting organisation with the invited role.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterRequest {
    pub email: String,
    /// 12 to 256 characters.
    pub password: Password,
    /// 1 to 100 characters.
    pub display_name: String,
    /// The new organisation's name (when not joining by invitation).
    #[serde(default)]
    pub organisation_name: Option<String>,
    /// The token of an invitation to the address in `email`.
    #[serde(default)]
    pub invitation_token: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    pub email: String,
    pub password: Password,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangePasswordRequest {
    pub current_password: Password,
    /// 12 to 256 characters.
    pub new_password: Password,
}

/// A session just opened. The session id is in the `aurora_session` cookie (HTTP-only); the CSRF
/// token is here and in the `aurora_csrf` cookie, and must be sent in `X-CSRF-Token` with every
/// request that changes something.
#[derive(Debug, Serialize, ToSchema)]
pub struct SessionOpened {
    pub user_id: Uuid,
    pub org_id: Uuid,
    #[schema(value_type = RoleSchema)]
    pub role: Role,
    pub csrf_token: String,
    pub expires_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct Me {
    pub user_id: Uuid,
    pub org_id: Uuid,
    pub org_name: String,
    pub email: String,
    pub display_name: String,
    #[sqlx(try_from = "String")]
    #[schema(value_type = RoleSchema)]
    pub role: RoleName,
    /// `session` or `api_token` (`ticket` is how a change stream opened with one is held).
    #[sqlx(skip)]
    pub authenticated_with: String,
}

/// What a member may do: `viewer` reads; `editor` also chats, runs tools, uploads and triggers
/// investigations; `admin` also manages members, connections and policies.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
#[schema(as = Role)]
pub enum RoleSchema {
    Viewer,
    Editor,
    Admin,
}

/// A role read from a table, serialised as its name.
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(transparent)]
pub struct RoleName(pub Role);

impl TryFrom<String> for RoleName {
    type Error = aurora_events::identity::UnknownRole;
    fn try_from(text: String) -> Result<Self, Self::Error> {
        text.parse().map(RoleName)
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct WsTicket {
    /// Present once, within `expires_in_seconds`: as `GET /ws?ticket=...`, or on a change stream
    /// (`GET /v1/incidents/events?ticket=...`, `GET /v1/knowledge/events?ticket=...`).
    pub ticket: String,
    pub expires_in_seconds: u64,
}

fn opened(state: &AppState, session: OpenedSession, status: StatusCode) -> Response {
    let max_age = state.config.auth.session_ttl.as_secs();
    let cookies = session_cookies(session.session.expose(), session.csrf.expose(), max_age, state.config.auth.cookie_secure);
    let body = SessionOpened {
        user_id: session.user_id,
        org_id: session.org_id.0,
        role: session.role,
        csrf_token: session.csrf.into_exposed(),
        expires_at: session.expires_at,
    };
    let mut response = (status, axum::Json(body)).into_response();
    for cookie in cookies {
        response.headers_mut().append(header::SET_COOKIE, cookie);
    }
    response.headers_mut().insert(header::CACHE_CONTROL, header::HeaderValue::from_static("no-store"));
    response
}

/// Register an account (and log in).
#[utoipa::path(
    post, path = "/v1/auth/register", tag = "auth", request_body = RegisterRequest,
    responses(
        (status = 201, body = SessionOpened, description = "Registered and logged in; sets the session cookies"),
        (status = 400, body = Problem), (status = 404, body = Problem, description = "No such invitation"),
        (status = 409, body = Problem, description = "The email already has an account"),
        (status = 422, body = Problem, description = "The invitation expired, was used or was withdrawn"),
        (status = 429, body = Problem)
    )
)]
pub async fn register(
    State(state): State<AppState>,
    parts: axum::http::request::Parts,
    Json(request): Json<RegisterRequest>,
) -> Result<Response, ApiError> {
    let email = normalise_email(&request.email)?;
    state.limiter.check("register", state.limiter.client_address(&parts), &email).await?;
    check_password("password", request.password.expose())?;
    let display_name = valid_name("display_name", &request.display_name)?;
    let joins = match (request.organisation_name, request.invitation_token) {
        (Some(name), None) => Joining::NewOrganisation { name: valid_name("organisation_name", &name)? },
        (None, Some(token)) => Joining::Invitation { token },
        _ => {
            return Err(ApiError::BadRequest {
                detail: "give either organisation_name (to open an organisation) or invitation_token (to join one)".into(),
                field: Some("organisation_name".into()),
            })
        }
    };
    let password_hash = password::hash(request.password).await?;
    let (user_id, org_id, _role) = state.identities.register(Registration { email, display_name, password_hash, joins }).await?;
    tracing::info!(%user_id, org_id = %org_id.0, "account registered");
    let session = state.identities.open_session(user_id, org_id, state.config.auth.session_ttl).await?;
    Ok(opened(&state, session, StatusCode::CREATED))
}

/// Log in with email and password.
#[utoipa::path(
    post, path = "/v1/auth/login", tag = "auth", request_body = LoginRequest,
    responses(
        (status = 200, body = SessionOpened, description = "Logged in; sets the session cookies"),
        (status = 400, body = Problem), (status = 401, body = Problem), (status = 429, body = Problem)
    )
)]
pub async fn login(
    State(state): State<AppState>,
    parts: axum::http::request::Parts,
    Json(request): Json<LoginRequest>,
) -> Result<Response, ApiError> {
    let wrong = || ApiError::Unauthenticated("email or password is not right".into());
    // A malformed address is as wrong as an unknown one, and is rate limited the same way.
    let email = normalise_email(&request.email).unwrap_or_else(|_| request.email.trim().to_lowercase());
    state.limiter.check("login", state.limiter.client_address(&parts), &email).await?;
    if request.password.expose().chars().count() > aurora_domain::identity::MAX_PASSWORD_CHARS {
        return Err(wrong());
    }
    let account = state.identities.account_by_email(&email).await?;
    let stored_hash = account.as_ref().map(|(_, _, hash)| hash.clone());
    if !password::verify(request.password, stored_hash).await? {
        tracing::info!(user_id = ?account.as_ref().map(|(user_id, _, _)| *user_id), "login refused");
        return Err(wrong());
    }
    let (user_id, org_id, _) = account.expect("a verified password belongs to an account");
    let session = state.identities.open_session(user_id, org_id, state.config.auth.session_ttl).await?;
    Ok(opened(&state, session, StatusCode::OK))
}

/// End the current session.
#[utoipa::path(
    post, path = "/v1/auth/logout", tag = "auth",
    responses((status = 204, description = "Logged out; clears the session cookies"), (status = 400, body = Problem), (status = 401, body = Problem))
)]
pub async fn logout(State(state): State<AppState>, caller: Caller) -> Result<Response, ApiError> {
    let Credential::Session { session_hash, .. } = &caller.identity.credential else {
        return Err(ApiError::BadRequest {
            detail: "logging out ends a browser session; an API token is revoked with DELETE /v1/tokens/{token_id}".into(),
            field: None,
        });
    };
    state.identities.end_session(&caller.identity, session_hash).await?;
    let mut response = StatusCode::NO_CONTENT.into_response();
    for cookie in session_cookies("", "", 0, state.config.auth.cookie_secure) {
        response.headers_mut().append(header::SET_COOKIE, cookie);
    }
    Ok(response)
}

/// Change the password. Every other session of the account ends.
#[utoipa::path(
    post, path = "/v1/auth/password", tag = "auth", request_body = ChangePasswordRequest,
    responses(
        (status = 204), (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 429, body = Problem), (status = 503, body = Problem)
    )
)]
pub async fn change_password(
    State(state): State<AppState>,
    caller: Caller,
    parts: axum::http::request::Parts,
    Json(request): Json<ChangePasswordRequest>,
) -> Result<StatusCode, ApiError> {
    // A stolen session must not become an unlimited oracle for the account's password.
    state.limiter.check("password", state.limiter.client_address(&parts), &caller.user_id().to_string()).await?;
    check_password("new_password", request.new_password.expose())?;
    let stored = state.identities.password_hash(caller.user_id()).await?;
    if request.current_password.expose().chars().count() > aurora_domain::identity::MAX_PASSWORD_CHARS
        || !password::verify(request.current_password, Some(stored)).await?
    {
        return Err(ApiError::Forbidden("current_password is not right".into()));
    }
    let new_hash = password::hash(request.new_password).await?;
    state.identities.change_password(&caller.identity, new_hash).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The caller's account, organisation and role.
#[utoipa::path(get, path = "/v1/auth/me", tag = "auth", responses((status = 200, body = Me), (status = 401, body = Problem)))]
pub async fn me(State(state): State<AppState>, caller: Caller) -> Result<axum::Json<Me>, ApiError> {
    let mut read = caller.read_models(&state.pool).await?;
    let mut me: Me = sqlx::query_as(
        "SELECT a.user_id, a.org_id, o.name AS org_name, a.email, a.display_name, a.role \
         FROM accounts a JOIN organisations o USING (org_id) WHERE a.user_id = $1",
    )
    .bind(caller.user_id())
    .fetch_one(&mut *read)
    .await?;
    // The role in force for this request (a token may carry less than its owner).
    me.role = RoleName(caller.role());
    me.authenticated_with = match caller.identity.credential {
        Credential::Session { .. } => "session".into(),
        Credential::ApiToken { .. } => "api_token".into(),
        Credential::Ticket(_) => "ticket".into(),
    };
    Ok(axum::Json(me))
}

/// A single-use ticket for opening the WebSocket or a change stream.
#[utoipa::path(
    post, path = "/v1/auth/ws-ticket", tag = "auth",
    responses((status = 201, body = WsTicket), (status = 401, body = Problem), (status = 503, body = Problem))
)]
pub async fn ws_ticket(State(state): State<AppState>, caller: Caller) -> Result<(StatusCode, axum::Json<WsTicket>), ApiError> {
    let ticket = state.tickets.issue(caller.identity.holder()).await?;
    Ok((StatusCode::CREATED, axum::Json(WsTicket { ticket: ticket.into_exposed(), expires_in_seconds: state.tickets.ttl().as_secs() })))
}
