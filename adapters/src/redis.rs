//! Redis, for short-lived shared state: rate-limit counters and single-use WebSocket tickets.
//! Nothing kept here needs to survive a Redis restart; losing it costs a retry, not data.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use crate::config::{redact_url, Config};

/// A connection that reconnects by itself. A Redis that is down for a moment at start-up is
/// waited for, with backoff, rather than failing the process.
pub async fn connect(config: &Config) -> anyhow::Result<ConnectionManager> {
    let client = redis::Client::open(config.redis_url.as_str())
        .map_err(|error| anyhow::anyhow!("redis url {} is not valid: {error}", redact_url(&config.redis_url)))?;
    let manager_config = ConnectionManagerConfig::new()
        .set_connection_timeout(Duration::from_secs(2))
        .set_response_timeout(Duration::from_secs(2))
        .set_number_of_retries(2);
    let mut delay = Duration::from_millis(100);
    let mut attempts = 0;
    loop {
        match ConnectionManager::new_with_config(client.clone(), manager_config.clone()).await {
            Ok(manager) => return Ok(manager),
            Err(error) if attempts < 20 && is_transient(&error) => {
                attempts += 1;
                tracing::warn!(%error, attempt = attempts, "redis not reachable yet, retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(2));
            }
            Err(error) => {
                return Err(anyhow::Error::new(error).context(format!("connecting to redis at {}", redact_url(&config.redis_url))))
            }
        }
    }
}

/// Errors worth retrying: the server or the connection went away, or it is loading.
pub fn is_transient(error: &redis::RedisError) -> bool {
    error.is_io_error() || error.is_timeout() || error.is_connection_dropped() || error.is_connection_refusal()
}
