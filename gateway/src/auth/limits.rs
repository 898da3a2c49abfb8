//! Rate limits on login and registration, counted in Redis so that every gateway instance shares
//! them: a fixed window per client address and per email address. Over the limit the answer is
//! `429` with `Retry-After`. If Redis cannot be asked, the attempt is refused with `503`: an
//! unlimited password oracle is worse than a login that waits for Redis.

use std::net::{IpAddr, SocketAddr};

use axum::extract::ConnectInfo;
use axum::http::request::Parts;
use aurora_adapters::redis::Redis;

use crate::auth::secret::hex_digest;
use crate::problem::ApiError;
use aurora_adapters::Config;

/// Counts one attempt and answers the count so far in this window and the window's remaining time.
const COUNT_ATTEMPT: &str = r"
local count = redis.call('INCR', KEYS[1])
if count == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
  ttl = tonumber(ARGV[1])
end
return {count, ttl}
";

#[derive(Clone)]
pub struct RateLimiter {
    redis: Redis,
    script: redis::Script,
    prefix: String,
    per_ip: u32,
    per_account: u32,
    window_ms: u64,
    trust_forwarded_for: bool,
}

impl RateLimiter {
    pub fn new(redis: Redis, config: &Config) -> Self {
        Self {
            redis,
            script: redis::Script::new(COUNT_ATTEMPT),
            prefix: config.redis_prefix.clone(),
            per_ip: config.auth_rate_limit_per_ip,
            per_account: config.auth_rate_limit_per_account,
            window_ms: config.auth_rate_window.as_millis() as u64,
            trust_forwarded_for: config.trust_forwarded_for,
        }
    }

    /// Counts an attempt at `action` from `client` for `account` (an email address), and refuses
    /// it when either has used up its window.
    pub async fn check(&self, action: &str, client: IpAddr, account: &str) -> Result<(), ApiError> {
        let keys = [
            (format!("{}ratelimit:{action}:ip:{client}", self.prefix), self.per_ip),
            (format!("{}ratelimit:{action}:account:{}", self.prefix, hex_digest(account)), self.per_account),
        ];
        let mut retry_after_ms = 0u64;
        for (key, limit) in keys {
            let mut invocation = self.script.key(&key);
            invocation.arg(self.window_ms);
            let run = self.redis.run(|mut connection| async move { invocation.invoke_async(&mut connection).await });
            let (count, ttl_ms): (u64, u64) = run.await.map_err(|error| {
                    tracing::warn!(%error, "rate limiter unavailable");
                    ApiError::Unavailable("the rate limiter is unavailable; try again shortly".into())
                })?;
            if count > u64::from(limit) {
                retry_after_ms = retry_after_ms.max(ttl_ms);
            }
        }
        if retry_after_ms > 0 {
            tracing::info!(action, %client, "attempt refused by rate limit");
            return Err(ApiError::TooManyRequests { retry_after_secs: retry_after_ms.div_ceil(1000).max(1) });
        }
        Ok(())
    }

    /// The client's address: the socket's peer, or behind a trusted proxy the last address the
    /// proxy appended to `X-Forwarded-For`.
    pub fn client_address(&self, parts: &Parts) -> IpAddr {
        if self.trust_forwarded_for {
            let forwarded = parts
                .headers
                .get_all("x-forwarded-for")
                .iter()
                .filter_map(|value| value.to_str().ok())
                .flat_map(|value| value.split(','))
                .filter_map(|entry| entry.trim().parse::<IpAddr>().ok())
                .next_back();
            if let Some(address) = forwarded {
                return address;
            }
        }
        parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(address)| address.ip())
            .unwrap_or(IpAddr::from([0, 0, 0, 0]))
    }
}
