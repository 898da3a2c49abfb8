//! Rate limits, counted in Redis so that every gateway instance shares them, each a fixed window.
//! Over a limit the answer is `429` with `Retry-After`.
//!
//! - Login and registration, per client address and per email address. If Redis cannot be
//!   asked, the attempt is refused with `503`: an unlimited password oracle is worse than a login
//!   that waits for Redis.
//! - Webhook deliveries, per organisation. If Redis cannot be asked, the delivery is let
//!   through: an alert lost to a rate limiter's outage is worse than a flood for a moment.

use std::net::{IpAddr, SocketAddr};

use aurora_adapters::redis::{Redis, RedisUnavailable};
use axum::extract::ConnectInfo;
use axum::http::request::Parts;

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
    webhooks_per_org: u32,
    webhook_window_ms: u64,
    trust_forwarded_for: bool,
}

impl RateLimiter {
    pub fn new(redis: Redis, config: &Config) -> Self {
        Self {
            redis,
            script: redis::Script::new(COUNT_ATTEMPT),
            prefix: config.redis.prefix.clone(),
            per_ip: config.auth.rate_limit_per_ip,
            per_account: config.auth.rate_limit_per_account,
            window_ms: config.auth.rate_window.as_millis() as u64,
            webhooks_per_org: config.incident.webhook_rate_limit,
            webhook_window_ms: config.incident.webhook_rate_window.as_millis() as u64,
            trust_forwarded_for: config.http.trust_forwarded_for,
        }
    }

    /// Counts an attempt at `action` from `client` for `account` (an email address), and refuses
    /// it when either has used up its window.
    pub async fn check(&self, action: &str, client: IpAddr, account: &str) -> Result<(), ApiError> {
        let keys = [
            (format!("{}ratelimit:{action}:ip:{}", self.prefix, address_bucket(client)), self.per_ip),
            (format!("{}ratelimit:{action}:account:{}", self.prefix, hex_digest(account)), self.per_account),
        ];
        let mut retry_after_ms = 0u64;
        for (key, limit) in keys {
            let (count, ttl_ms) = self.count(&key, self.window_ms).await.map_err(|error| {
                tracing::warn!(%error, "rate limiter unavailable");
                ApiError::Unavailable("the rate limiter is unavailable; try again shortly".into())
            })?;
            if count > u64::from(limit) {
                retry_after_ms = retry_after_ms.max(ttl_ms);
            }
        }
        if retry_after_ms > 0 {
            tracing::info!(action, %client, "attempt refused by rate limit");
            return Err(too_many(retry_after_ms));
        }
        Ok(())
    }

    /// Counts a webhook delivery to `org_id`, and refuses it when the organisation has used up its
    /// window (`AURORA_INCIDENT_WEBHOOK_RATE_LIMIT`).
    pub async fn check_webhook(&self, org_id: uuid::Uuid) -> Result<(), ApiError> {
        let key = format!("{}ratelimit:webhook:org:{org_id}", self.prefix);
        match self.count(&key, self.webhook_window_ms).await {
            Ok((count, ttl_ms)) if count > u64::from(self.webhooks_per_org) => {
                tracing::info!(%org_id, "webhook delivery refused by rate limit");
                Err(too_many(ttl_ms))
            }
            Ok(_) => Ok(()),
            Err(error) => {
                tracing::warn!(%error, %org_id, "rate limiter unavailable; webhook delivery let through");
                Ok(())
            }
        }
    }

    /// Counts one attempt under `key` in a window of `window_ms`: the count so far in the window,
    /// and the window's remaining milliseconds.
    async fn count(&self, key: &str, window_ms: u64) -> Result<(u64, u64), RedisUnavailable> {
        let mut invocation = self.script.key(key);
        invocation.arg(window_ms);
        self.redis.run(|mut connection| async move { invocation.invoke_async(&mut connection).await }).await
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
        parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|ConnectInfo(address)| address.ip()).unwrap_or(IpAddr::from([0, 0, 0, 0]))
    }
}

fn too_many(retry_after_ms: u64) -> ApiError {
    ApiError::TooManyRequests { retry_after_secs: retry_after_ms.div_ceil(1000).max(1) }
}

/// The bucket an address counts in: an IPv4 address alone; an IPv6 address by its /64, the
/// smallest network a single subscriber is usually given (one host can hold all of it).
pub fn address_bucket(address: IpAddr) -> String {
    match address {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let network = u128::from(v6) & !((1u128 << 64) - 1);
                format!("{}/64", std::net::Ipv6Addr::from(network))
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ipv6_client_counts_by_its_64_network() {
        let first: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let same_network: IpAddr = "2001:db8:1:2:ffff:1:2:3".parse().unwrap();
        let other_network: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(address_bucket(first), address_bucket(same_network));
        assert_ne!(address_bucket(first), address_bucket(other_network));
        assert_eq!(address_bucket("192.0.2.7".parse().unwrap()), "192.0.2.7");
        assert_eq!(address_bucket("::ffff:192.0.2.7".parse().unwrap()), "192.0.2.7");
    }
}
