//! The gateway: axum routes for commands and read-model queries, health and readiness, Prometheus
//! metrics and the OpenAPI description. Errors leave as `application/problem+json` (RFC 9457) from
//! one place, [`problem::ApiError`].

pub mod extract;
pub mod identity;
pub mod openapi;
pub mod problem;
pub mod routes;

use std::sync::Arc;

use aurora_adapters::Config;
use aurora_commands::postgres::PostgresEventStore;
use aurora_commands::CommandHandler;
use axum::extract::DefaultBodyLimit;
use axum::Router;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use tower_http::trace::TraceLayer;

#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub pool: PgPool,
    pub commands: CommandHandler,
    pub kafka: Arc<rdkafka::consumer::BaseConsumer>,
}

impl AppState {
    pub fn new(config: Config, pool: PgPool) -> anyhow::Result<Self> {
        let kafka = aurora_adapters::kafka::standalone_consumer(&config)?;
        Ok(Self {
            commands: CommandHandler::new(Arc::new(PostgresEventStore::new(pool.clone()))),
            config: Arc::new(config),
            pool,
            kafka: Arc::new(kafka),
        })
    }
}

pub fn router(state: AppState) -> Router {
    let body_limit = state.config.max_body_bytes;
    routes::router()
        .with_state(state)
        .fallback(|| async { problem::ApiError::RouteNotFound })
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(TraceLayer::new_for_http())
}

/// Serves until `shutdown`, then lets requests in flight finish.
pub async fn serve(state: AppState, listener: tokio::net::TcpListener, shutdown: CancellationToken) -> anyhow::Result<()> {
    tracing::info!(addr = %listener.local_addr()?, "gateway listening");
    axum::serve(listener, router(state)).with_graceful_shutdown(shutdown.cancelled_owned()).await?;
    Ok(())
}
