//! Redis, for short-lived shared state: rate-limit counters and single-use WebSocket tickets.
//! Nothing kept here needs to survive a Redis restart; losing it costs a retry, not data.
//!
//! [`Redis`] keeps one multiplexed connection and replaces it after a connection-level failure or
//! a timeout, so every command answers within [`COMMAND_TIMEOUT`] while Redis is away and works
//! again as soon as it is back. (`redis::aio::ConnectionManager` 0.32 was tried first, each
//! command bounded by a timeout: in the Redis-outage test it had not recovered 30 s after the
//! server was back; its retry behaviour is discussed in redis-rs issue 1556.)

use secrecy::ExposeSecret;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::AsyncConnectionConfig;
use tokio::sync::Mutex;

use crate::config::{redact_url, Config};

/// How long one Redis command, or one attempt to connect, may take.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);

/// Why a Redis command gave no answer.
#[derive(Debug, thiserror::Error)]
pub enum RedisUnavailable {
    #[error(transparent)]
    Failed(#[from] redis::RedisError),
    #[error("redis did not answer within {0:?}")]
    TimedOut(Duration),
}

#[derive(Clone)]
pub struct Redis {
    client: redis::Client,
    connection: Arc<Mutex<Option<MultiplexedConnection>>>,
}

impl Redis {
    /// Connects, waiting with backoff for a Redis that is down for a moment at start-up.
    pub async fn connect(config: &Config) -> anyhow::Result<Self> {
        let client = redis::Client::open(config.redis.url.expose_secret())
            .map_err(|error| anyhow::anyhow!("redis url {} is not valid: {error}", redact_url(config.redis.url.expose_secret())))?;
        let redis = Self { client, connection: Arc::new(Mutex::new(None)) };
        let mut delay = Duration::from_millis(100);
        let mut attempts = 0;
        loop {
            match redis.connection().await {
                Ok(_) => return Ok(redis),
                Err(error) if attempts < 20 => {
                    attempts += 1;
                    tracing::warn!(%error, attempt = attempts, "redis not reachable yet, retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(2));
                }
                Err(error) => {
                    return Err(anyhow::Error::new(error)
                        .context(format!("connecting to redis at {}", redact_url(config.redis.url.expose_secret()))))
                }
            }
        }
    }

    async fn connection(&self) -> Result<MultiplexedConnection, RedisUnavailable> {
        let mut held = self.connection.lock().await;
        if let Some(connection) = held.as_ref() {
            return Ok(connection.clone());
        }
        let config = AsyncConnectionConfig::new().set_connection_timeout(COMMAND_TIMEOUT).set_response_timeout(COMMAND_TIMEOUT);
        let connection =
            match tokio::time::timeout(COMMAND_TIMEOUT, self.client.get_multiplexed_async_connection_with_config(&config)).await {
                Ok(connected) => connected?,
                Err(_) => return Err(RedisUnavailable::TimedOut(COMMAND_TIMEOUT)),
            };
        *held = Some(connection.clone());
        Ok(connection)
    }

    /// Runs `command` on the connection, within [`COMMAND_TIMEOUT`]. A failure of the connection
    /// itself drops it, and the next command connects afresh.
    pub async fn run<T, F, Fut>(&self, command: F) -> Result<T, RedisUnavailable>
    where
        F: FnOnce(MultiplexedConnection) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        let connection = self.connection().await?;
        match tokio::time::timeout(COMMAND_TIMEOUT, command(connection)).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(error)) => {
                if is_connection_failure(&error) {
                    self.connection.lock().await.take();
                }
                Err(error.into())
            }
            Err(_) => {
                self.connection.lock().await.take();
                Err(RedisUnavailable::TimedOut(COMMAND_TIMEOUT))
            }
        }
    }
}

/// Errors that say the connection, rather than the command, is broken.
pub fn is_connection_failure(error: &redis::RedisError) -> bool {
    error.is_io_error() || error.is_timeout() || error.is_connection_dropped() || error.is_connection_refusal()
}
