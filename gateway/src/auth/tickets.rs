//! Tickets for the WebSocket and the change streams. A browser cannot put a cookie-independent
//! credential on a WebSocket handshake or an `EventSource`, and a long-lived token in a URL ends up
//! in logs; so a client asks for a ticket over authenticated HTTP and presents it once, within
//! seconds, on the handshake or as the stream's `?ticket=`. Tickets live in
//! Redis under their digest and are taken with `GETDEL`, which makes them single-use across every
//! gateway instance.

use std::time::Duration;

use aurora_adapters::redis::{Redis, RedisUnavailable};
use aurora_events::identity::Role;
use aurora_events::OrgId;
use redis::AsyncCommands;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::auth::secret::{hex_digest, Secret};
use crate::problem::ApiError;

/// Who a ticket was issued to, with what role and on which credential. The socket it opens acts
/// with this role at most, and lives only as long as the credential and the membership do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TicketHolder {
    pub user_id: Uuid,
    pub org_id: OrgId,
    /// The effective role of the credential when the ticket was issued (a viewer token of an
    /// admin gives a viewer socket).
    pub role: Role,
    pub credential: TicketCredential,
}

/// The credential a ticket was asked for with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum TicketCredential {
    Session { session_hash: Vec<u8> },
    ApiToken { token_id: Uuid },
}

#[derive(Clone)]
pub struct Tickets {
    redis: Redis,
    prefix: String,
    ttl: Duration,
}

fn unavailable(error: RedisUnavailable) -> ApiError {
    tracing::warn!(%error, "ticket store unavailable");
    ApiError::Unavailable("the ticket store is unavailable; try again shortly".into())
}

impl Tickets {
    pub fn new(redis: Redis, prefix: &str, ttl: Duration) -> Self {
        Self { redis, prefix: prefix.to_owned(), ttl }
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    fn key(&self, ticket: &str) -> String {
        format!("{}ws-ticket:{}", self.prefix, hex_digest(ticket))
    }

    pub async fn issue(&self, holder: TicketHolder) -> Result<Secret, ApiError> {
        let ticket = Secret::generate("auw_");
        let value = serde_json::to_string(&holder).map_err(anyhow::Error::from)?;
        let (key, ttl_ms) = (self.key(ticket.expose()), self.ttl.as_millis() as u64);
        self.redis
            .run(|mut connection| async move { connection.pset_ex::<_, _, ()>(key, value, ttl_ms).await })
            .await
            .map_err(unavailable)?;
        Ok(ticket)
    }

    /// The holder of `ticket`, if it exists and has not been used or expired. Using it ends it.
    pub async fn redeem(&self, ticket: &str) -> Result<Option<TicketHolder>, ApiError> {
        let key = self.key(ticket);
        let value: Option<String> =
            self.redis.run(|mut connection| async move { connection.get_del(key).await }).await.map_err(unavailable)?;
        value.map(|value| serde_json::from_str(&value).map_err(|error| ApiError::Unexpected(error.into()))).transpose()
    }
}
