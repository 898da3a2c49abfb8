//! Liveness and readiness.

use std::time::Duration;

use axum::extract::State;
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

use crate::problem::ApiError;
use crate::AppState;

#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    pub status: &'static str,
}

/// The process is up.
#[utoipa::path(get, path = "/healthz", tag = "health", responses((status = 200, body = Health)))]
pub async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

/// Postgres, the broker and Redis are reachable.
#[utoipa::path(
    get, path = "/readyz", tag = "health",
    responses((status = 200, body = Health), (status = 503, body = crate::problem::Problem))
)]
pub async fn readyz(State(state): State<AppState>) -> Result<Json<Health>, ApiError> {
    let database = tokio::time::timeout(Duration::from_secs(2), sqlx::query("SELECT 1").execute(&state.pool)).await;
    if !matches!(database, Ok(Ok(_))) {
        return Err(ApiError::Unavailable("postgres is not reachable".into()));
    }
    let kafka = state.kafka.clone();
    let broker = tokio::task::spawn_blocking(move || {
        rdkafka::consumer::Consumer::fetch_metadata(kafka.as_ref(), None, Duration::from_secs(2)).map(|_| ())
    })
    .await;
    if !matches!(broker, Ok(Ok(()))) {
        return Err(ApiError::Unavailable("the kafka broker is not reachable".into()));
    }
    let ping = state.redis.run(|mut connection| async move { redis::cmd("PING").query_async::<String>(&mut connection).await }).await;
    if ping.is_err() {
        return Err(ApiError::Unavailable("redis is not reachable".into()));
    }
    Ok(Json(Health { status: "ready" }))
}
