//! Every route of the gateway, in one table, each with the rule for who may call it. The router
//! and the API description are both made from this table, so a route cannot be served without a
//! rule or described with a different one.

pub mod audit;
pub mod auth;
pub mod chat;
pub mod health;
pub mod metrics;
pub mod org;
pub mod tokens;
pub mod ws;

use aurora_events::identity::Role::{Admin, Editor, Viewer};
use axum::http::Method;
use axum::routing::{delete, get, patch, post, MethodRouter};
use axum::Router;

use crate::auth::Access::{self, Member, Public, Ticket};
use crate::auth::{guard, Guarded};
use crate::AppState;

/// One route: method, path and who may call it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteSpec {
    pub method: Method,
    pub path: &'static str,
    pub access: Access,
}

fn table() -> Vec<(RouteSpec, MethodRouter<AppState>)> {
    let route =
        |method: Method, path: &'static str, access: Access, handler: MethodRouter<AppState>| (RouteSpec { method, path, access }, handler);
    vec![
        route(Method::GET, "/healthz", Public, get(health::healthz)),
        route(Method::GET, "/readyz", Public, get(health::readyz)),
        route(Method::GET, "/metrics", Public, get(metrics::metrics_text)),
        route(Method::GET, "/openapi.json", Public, get(crate::openapi::openapi_json)),
        route(Method::POST, "/v1/auth/register", Public, post(auth::register)),
        route(Method::POST, "/v1/auth/login", Public, post(auth::login)),
        route(Method::POST, "/v1/auth/logout", Member(Viewer), post(auth::logout)),
        route(Method::POST, "/v1/auth/password", Member(Viewer), post(auth::change_password)),
        route(Method::GET, "/v1/auth/me", Member(Viewer), get(auth::me)),
        route(Method::POST, "/v1/auth/ws-ticket", Member(Viewer), post(auth::ws_ticket)),
        route(Method::GET, "/ws", Ticket, get(ws::open)),
        route(Method::GET, "/v1/org/members", Member(Viewer), get(org::list_members)),
        route(Method::PATCH, "/v1/org/members/{user_id}", Member(Admin), patch(org::change_role)),
        route(Method::DELETE, "/v1/org/members/{user_id}", Member(Admin), delete(org::remove_member)),
        route(Method::POST, "/v1/org/invitations", Member(Admin), post(org::invite)),
        route(Method::GET, "/v1/org/invitations", Member(Admin), get(org::list_invitations)),
        route(Method::DELETE, "/v1/org/invitations/{invitation_id}", Member(Admin), delete(org::revoke_invitation)),
        route(Method::POST, "/v1/tokens", Member(Viewer), post(tokens::create_token)),
        route(Method::GET, "/v1/tokens", Member(Viewer), get(tokens::list_tokens)),
        route(Method::DELETE, "/v1/tokens/{token_id}", Member(Viewer), delete(tokens::revoke_token)),
        route(Method::POST, "/v1/chat/sessions", Member(Editor), post(chat::create_session)),
        route(Method::GET, "/v1/chat/sessions", Member(Viewer), get(chat::list_sessions)),
        route(Method::GET, "/v1/chat/sessions/{session_id}", Member(Viewer), get(chat::get_session)),
        route(Method::PATCH, "/v1/chat/sessions/{session_id}", Member(Editor), patch(chat::rename_session)),
        route(Method::DELETE, "/v1/chat/sessions/{session_id}", Member(Editor), delete(chat::delete_session)),
        route(Method::POST, "/v1/chat/sessions/{session_id}/archive", Member(Editor), post(chat::archive_session)),
        route(Method::GET, "/v1/chat/sessions/{session_id}/messages", Member(Viewer), get(chat::list_messages)),
        route(Method::GET, "/v1/chat/sessions/{session_id}/tool-calls/{tool_call_id}", Member(Viewer), get(chat::tool_result)),
        route(Method::GET, "/v1/audit", Member(Viewer), get(audit::query_audit_log)),
    ]
}

/// Every route with its rule, for the API description and for tests.
pub fn specs() -> Vec<RouteSpec> {
    table().into_iter().map(|(spec, _)| spec).collect()
}

/// The routes, each behind the guard that enforces its rule.
pub fn router(state: &AppState) -> Router<AppState> {
    table().into_iter().fold(Router::new(), |router, (spec, handler)| {
        let guarded = Guarded { state: state.clone(), access: spec.access };
        router.route(spec.path, handler.route_layer(axum::middleware::from_fn_with_state(guarded, guard)))
    })
}
