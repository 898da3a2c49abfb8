//! Every route of the gateway, in one table.

pub mod audit;
pub mod chat;
pub mod health;
pub mod metrics;

use axum::routing::{get, post};
use axum::Router;

use crate::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(metrics::metrics))
        .route("/openapi.json", get(crate::openapi::openapi_json))
        .route("/v1/chat/sessions", post(chat::create_session).get(chat::list_sessions))
        .route("/v1/chat/sessions/{session_id}", get(chat::get_session).patch(chat::rename_session))
        .route("/v1/chat/sessions/{session_id}/archive", post(chat::archive_session))
        .route("/v1/audit", get(audit::query_audit_log))
}
