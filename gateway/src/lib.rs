//! The gateway: axum routes for commands and read-model queries, accounts and tenancy, the
//! WebSocket, health and readiness, Prometheus metrics and the OpenAPI description. Errors leave
//! as `application/problem+json` (RFC 9457) from one place, [`problem::ApiError`]; who may call
//! what is decided in one place, [`auth`].

pub mod auth;
pub mod change_stream;
pub mod commands;
pub mod extract;
pub mod openapi;
pub mod page;
pub mod problem;
pub mod routes;

aurora_events::features!(routes::Routes: audit, chat, connection, deploy, discovery, identity, incident, knowledge);

use std::net::SocketAddr;
use std::sync::Arc;

use aurora_adapters::wakeup::LogSignals;
use aurora_adapters::Config;
use aurora_commands::postgres::PostgresEventStore;
use aurora_commands::CommandHandler;
use axum::extract::DefaultBodyLimit;
use axum::http::Request;
use axum::Router;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use tower_http::trace::TraceLayer;

use crate::auth::limits::RateLimiter;
use crate::auth::store::IdentityStore;
use crate::auth::tickets::Tickets;

#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub pool: PgPool,
    pub commands: CommandHandler,
    pub kafka: Arc<rdkafka::consumer::BaseConsumer>,
    pub identities: IdentityStore,
    pub limiter: RateLimiter,
    pub tickets: Tickets,
    pub redis: aurora_adapters::redis::Redis,
    pub chat_hub: Arc<chat::hub::ChatHub>,
    /// Where connections' credentials are kept.
    pub secrets: Arc<dyn aurora_adapters::secrets::SecretStore>,
    /// Where uploaded files are kept.
    pub objects: aurora_adapters::objects::Objects,
    /// The organisations' searchable knowledge.
    pub knowledge: aurora_adapters::vectors::search::KnowledgeIndex,
    /// Where the discovered graph is read.
    pub graph: aurora_adapters::graph::GraphStore,
    /// What this process hears on the log channel (status streams wait on it).
    pub signals: LogSignals,
    /// What webhook deliveries are checked against (`incident::webhooks`).
    pub webhooks: Arc<incident::webhooks::WebhookCache>,
    /// Cancelled when the gateway stops: streams that never end on their own end then.
    pub shutdown: CancellationToken,
}

impl AppState {
    /// The gateway's state; the chat hub follows the topics until `shutdown`, woken by `signals`.
    pub async fn new(config: Config, pool: PgPool, signals: &LogSignals, shutdown: CancellationToken) -> anyhow::Result<Self> {
        let kafka = aurora_adapters::kafka::standalone_consumer(&config)?;
        let redis = aurora_adapters::redis::Redis::connect(&config).await?;
        let config = Arc::new(config);
        let kafka = Arc::new(kafka);
        routes::metrics::spawn_sampler(config.clone(), pool.clone(), kafka.clone(), shutdown.clone());
        Ok(Self {
            commands: CommandHandler::new(Arc::new(PostgresEventStore::new(pool.clone()))),
            identities: IdentityStore::new(pool.clone()),
            limiter: RateLimiter::new(redis.clone(), &config),
            tickets: Tickets::new(redis.clone(), &config.redis.prefix, config.auth.ws_ticket_ttl),
            redis,
            secrets: Arc::new(aurora_adapters::secrets::vault::VaultStore::new(&config.vault)?),
            objects: aurora_adapters::objects::Objects::from_config(&config.objects)?,
            knowledge: aurora_adapters::vectors::search::KnowledgeIndex::from_config(
                &config.knowledge,
                aurora_adapters::embeddings::Embedder::shared(&config.embedding),
                pool.clone(),
            ),
            graph: aurora_adapters::graph::GraphStore::from_config(&config.discovery),
            signals: signals.clone(),
            webhooks: incident::webhooks::WebhookCache::start(signals, shutdown.clone()),
            shutdown: shutdown.clone(),
            chat_hub: chat::hub::ChatHub::start(&config, signals, shutdown).await,
            config,
            pool,
            kafka,
        })
    }
}

pub fn router(state: AppState) -> Router {
    let body_limit = state.config.http.max_body_bytes;
    // Spans name the path only: a query string can carry a WebSocket ticket.
    let trace = TraceLayer::new_for_http()
        .make_span_with(|request: &Request<_>| tracing::debug_span!("request", method = %request.method(), path = %request.uri().path()));
    routes::router(&state)
        .with_state(state)
        .fallback(|| async { problem::ApiError::RouteNotFound })
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(trace)
}

/// Serves until `shutdown`, then lets requests in flight finish.
pub async fn serve(state: AppState, listener: tokio::net::TcpListener, shutdown: CancellationToken) -> anyhow::Result<()> {
    tracing::info!(addr = %listener.local_addr()?, "gateway listening");
    // Small WebSocket frames (a token delta) must leave at once, not wait for the client's
    // delayed ACK of the previous frame, as Nagle's algorithm would have them.
    let listener = axum::serve::ListenerExt::tap_io(listener, |stream: &mut tokio::net::TcpStream| {
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%error, "could not set TCP_NODELAY");
        }
    });
    let service = router(state).into_make_service_with_connect_info::<SocketAddr>();
    axum::serve(listener, service).with_graceful_shutdown(shutdown.cancelled_owned()).await?;
    Ok(())
}
