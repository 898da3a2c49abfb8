//! Who is calling and what they may do, decided in one place.
//!
//! Every route is registered in [`crate::routes::Routes`] with an [`Access`] rule, and the
//! router wraps each one in [`guard`]: a route cannot exist without a rule. The guard
//! authenticates the request (a session cookie, or an API token as `Authorization: Bearer`; on a
//! change stream also a single-use ticket as `?ticket=`), checks the CSRF token on
//! state-changing requests made with a cookie, checks the caller's current role against the
//! route's, and hands the handler a [`Caller`]. Handlers reach the read models only through
//! [`Caller::read_models`], a transaction in which Postgres row-level security shows the caller's
//! organisation and nothing else.

pub mod limits;
pub mod password;
pub mod secret;
pub mod store;
pub mod tickets;

use aurora_events::identity::Role;
use aurora_events::{Actor, OrgId};
use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, Method};
use axum::middleware::Next;
use axum::response::Response;
use sqlx::{PgPool, Postgres, Transaction};
use uuid::Uuid;

use crate::problem::ApiError;
use crate::AppState;
pub use store::{Credential, Identity};
use tickets::TicketHolder;

pub const SESSION_COOKIE: &str = "aurora_session";
pub const CSRF_COOKIE: &str = "aurora_csrf";
pub const CSRF_HEADER: &str = "x-csrf-token";

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone: health, metrics, the API description, login and registration.
    Public,
    /// The WebSocket handshake, which authenticates with a single-use ticket instead.
    Ticket,
    /// A member of the organisation with at least this role.
    Member(Role),
    /// A member with at least this role, on a change stream (server-sent events): besides the
    /// cookie and the token, a single-use ticket from `POST /v1/auth/ws-ticket` as `?ticket=`,
    /// since a browser's `EventSource` can send no header. The stream ends once the caller's
    /// membership or credential does ([`crate::change_stream`]).
    ChangeStream(Role),
}

impl Access {
    /// How the API description names the rule.
    pub fn describe(self) -> &'static str {
        match self {
            Access::Public => "public",
            Access::Ticket => "ticket",
            Access::Member(role) | Access::ChangeStream(role) => role.as_str(),
        }
    }

    /// The role a caller needs, on a guarded route.
    pub fn role(self) -> Option<Role> {
        match self {
            Access::Public | Access::Ticket => None,
            Access::Member(role) | Access::ChangeStream(role) => Some(role),
        }
    }
}

/// The authenticated caller of a guarded route.
#[derive(Debug, Clone)]
pub struct Caller {
    pub identity: Identity,
}

impl Caller {
    pub fn org_id(&self) -> OrgId {
        self.identity.org_id
    }

    pub fn user_id(&self) -> Uuid {
        self.identity.user_id
    }

    pub fn role(&self) -> Role {
        self.identity.role
    }

    pub fn actor(&self) -> Actor {
        Actor::user(self.identity.user_id)
    }

    /// A read-only transaction on the read models that sees only the caller's organisation:
    /// it runs as `aurora_tenant` with `aurora.org_id` set, and row-level security filters every
    /// table by it (migrations/0005). A query that forgets its `WHERE org_id` still sees no other
    /// organisation's rows.
    pub async fn read_models(&self, pool: &PgPool) -> Result<Transaction<'static, Postgres>, ApiError> {
        Ok(aurora_adapters::postgres::tenant_transaction(pool, self.identity.org_id.0).await?)
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        // Only the guard puts a caller here; a handler that asks for one on a public route is a
        // mistake in the route table, not the client's.
        parts
            .extensions
            .get::<Caller>()
            .cloned()
            .ok_or_else(|| ApiError::Unexpected(anyhow::anyhow!("route {} takes a Caller but is not guarded by a role", parts.uri.path())))
    }
}

/// The state the guard of one route needs.
#[derive(Clone)]
pub struct Guarded {
    pub state: AppState,
    pub access: Access,
}

/// Authenticates and authorises a request for a route whose rule is `guarded.access`.
pub async fn guard(State(guarded): State<Guarded>, mut request: Request, next: Next) -> Result<Response, ApiError> {
    let Some(required) = guarded.access.role() else { return Ok(next.run(request).await) };
    let ticket = match guarded.access {
        Access::ChangeStream(_) => axum::extract::Query::<TicketQuery>::try_from_uri(request.uri()).ok().and_then(|query| query.0.ticket),
        _ => None,
    };
    let identity = match ticket {
        Some(ticket) => {
            let (holder, role) = redeem_ticket(&guarded.state, &ticket).await?;
            Identity { user_id: holder.user_id, org_id: holder.org_id, role, credential: Credential::Ticket(holder.credential) }
        }
        None => authenticate(&guarded.state, request.headers()).await?,
    };
    if let Credential::Session { csrf_hash, .. } = &identity.credential {
        let safe = matches!(*request.method(), Method::GET | Method::HEAD | Method::OPTIONS);
        if !safe {
            let presented = request.headers().get(CSRF_HEADER).and_then(|value| value.to_str().ok());
            if presented.map(secret::digest).as_ref() != Some(csrf_hash) {
                return Err(ApiError::Forbidden(format!(
                    "a request that changes something with a session cookie must carry the session's CSRF token in {CSRF_HEADER}"
                )));
            }
        }
    }
    if identity.role < required {
        return Err(ApiError::Forbidden(format!("this needs the {required} role; you have {}", identity.role)));
    }
    request.extensions_mut().insert(Caller { identity });
    Ok(next.run(request).await)
}

/// The query of a change stream opened with a ticket.
#[derive(serde::Deserialize)]
struct TicketQuery {
    ticket: Option<String>,
}

/// Who holds `ticket`, and the role they have now (never more than the ticket's). Using it ends it.
pub async fn redeem_ticket(state: &AppState, ticket: &str) -> Result<(TicketHolder, Role), ApiError> {
    let refused = || ApiError::Unauthenticated("the ticket is unknown, used or expired; ask for a new one".into());
    let ticket = ticket.trim();
    if ticket.is_empty() || ticket.len() > 200 {
        return Err(refused());
    }
    let holder = state.tickets.redeem(ticket).await?.ok_or_else(refused)?;
    // The account may have been removed since the ticket was issued, its credential ended, its role changed.
    let role = state.identities.ticket_role(&holder).await?.ok_or_else(refused)?;
    Ok((holder, role))
}

async fn authenticate(state: &AppState, headers: &HeaderMap) -> Result<Identity, ApiError> {
    if let Some(authorization) = headers.get(header::AUTHORIZATION) {
        let token = authorization
            .to_str()
            .ok()
            .and_then(|value| value.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|token| !token.is_empty() && token.len() <= 200)
            .ok_or_else(|| ApiError::Unauthenticated("Authorization must be `Bearer <API token>`".into()))?;
        return state
            .identities
            .by_api_token(token)
            .await?
            .ok_or_else(|| ApiError::Unauthenticated("the API token is not valid: unknown, revoked or expired".into()));
    }
    if let Some(session) = cookie(headers, SESSION_COOKIE).filter(|value| value.len() <= 200) {
        return state
            .identities
            .by_session(session)
            .await?
            .ok_or_else(|| ApiError::Unauthenticated("the session has ended or expired; log in again".into()));
    }
    Err(ApiError::Unauthenticated("log in, or send an API token as `Authorization: Bearer <token>`".into()))
}

/// The value of cookie `name` in the request's `Cookie` headers.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value)
}

/// `Set-Cookie` values for a session: the session id out of scripts' reach, the CSRF token
/// readable by the web UI so it can echo it in `X-CSRF-Token`. `max_age_secs` 0 clears both.
pub fn session_cookies(session: &str, csrf: &str, max_age_secs: u64, secure: bool) -> [HeaderValue; 2] {
    let secure = if secure { "; Secure" } else { "" };
    let session = format!("{SESSION_COOKIE}={session}; Path=/; Max-Age={max_age_secs}; HttpOnly; SameSite=Lax{secure}");
    let csrf = format!("{CSRF_COOKIE}={csrf}; Path=/; Max-Age={max_age_secs}; SameSite=Lax{secure}");
    [
        HeaderValue::from_str(&session).expect("cookie values are base64url"),
        HeaderValue::from_str(&csrf).expect("cookie values are base64url"),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_are_found_among_others_and_set_with_their_attributes() {
        let mut headers = HeaderMap::new();
        headers.insert(header::COOKIE, HeaderValue::from_static("theme=dark; aurora_session=abc; aurora_csrf=def"));
        assert_eq!(cookie(&headers, SESSION_COOKIE), Some("abc"));
        assert_eq!(cookie(&headers, "missing"), None);
        let [session, csrf] = session_cookies("s", "c", 60, true);
        let session = session.to_str().unwrap();
        assert!(session.contains("HttpOnly") && session.contains("SameSite=Lax") && session.contains("Secure"), "{session}");
        assert!(!csrf.to_str().unwrap().contains("HttpOnly"));
        let [plain, _] = session_cookies("s", "c", 60, false);
        assert!(!plain.to_str().unwrap().contains("Secure"));
    }
}
