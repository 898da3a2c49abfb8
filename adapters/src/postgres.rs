//! Postgres connections. A database that is down for a moment at start-up is waited for, with
//! backoff, rather than failing the process.

use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::ConnectOptions;

use crate::config::Config;

pub async fn connect(config: &Config) -> anyhow::Result<PgPool> {
    connect_url(&config.database_url, config.database_pool_size).await
}

pub async fn connect_url(url: &str, pool_size: u32) -> anyhow::Result<PgPool> {
    let options: PgConnectOptions = url
        .parse::<PgConnectOptions>()
        .map_err(|error| anyhow::anyhow!("database url is not valid: {error}"))?
        .log_statements(log::LevelFilter::Trace)
        .log_slow_statements(log::LevelFilter::Warn, Duration::from_secs(2));
    let mut delay = Duration::from_millis(100);
    let mut attempts = 0;
    loop {
        let pool = PgPoolOptions::new()
            .max_connections(pool_size)
            // A ping before every checkout doubles the round trips of a one-statement command; a
            // broken connection shows on use instead, and callers retry transient errors.
            .test_before_acquire(false)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options.clone())
            .await;
        match pool {
            Ok(pool) => return Ok(pool),
            Err(error) if attempts < 20 && is_transient(&error) => {
                attempts += 1;
                tracing::warn!(%error, attempt = attempts, "postgres not reachable yet, retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(2));
            }
            Err(error) => return Err(anyhow::Error::new(error).context("connecting to postgres")),
        }
    }
}

/// Errors worth retrying: the server or the connection went away, or it is starting up.
pub fn is_transient(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Protocol(_) => true,
        sqlx::Error::Database(database_error) => {
            let code = database_error.code().unwrap_or_default();
            // 08: connection exception, 57P: operator intervention (shutdown, cannot connect now),
            // 40001/40P01: serialization failure and deadlock, 53: insufficient resources.
            code.starts_with("08") || code.starts_with("57P") || code == "40001" || code == "40P01" || code.starts_with("53")
        }
        _ => false,
    }
}
