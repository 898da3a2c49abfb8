//! `/openapi.json`, generated from the route annotations and types in the code.

use axum::Json;
use utoipa::OpenApi;

use crate::routes::{audit, chat, health, metrics};

#[derive(OpenApi)]
#[openapi(
    info(title = "Aurora API", description = "Aurora's gateway. Errors are application/problem+json (RFC 9457)."),
    paths(
        health::healthz, health::readyz, metrics::metrics,
        chat::create_session, chat::list_sessions, chat::get_session, chat::rename_session, chat::archive_session,
        audit::query_audit_log,
    ),
    components(schemas(crate::problem::Problem))
)]
pub struct ApiDoc;

/// This API's OpenAPI 3.1 description.
pub async fn openapi_json() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
