//! What every command route does with its request before the command: its metadata (who, on
//! whose behalf, idempotency, trace).

use axum::http::HeaderMap;
use serde::Serialize;
use uuid::Uuid;

use aurora_adapters::telemetry::{SpanKind, Trace};
use aurora_commands::CommandMeta;

use crate::auth::Caller;
use crate::problem::ApiError;
use crate::AppState;

/// The command metadata of a request. An `Idempotency-Key` (a UUID) makes the command id: the
/// same key on the same route of the same organisation names the same command, bound to the
/// request it first came with (`route` and `request`, hashed); another organisation's key is
/// another command, and the key again with a different request is refused with 422.
pub async fn command_meta(
    state: &AppState,
    caller: &Caller,
    headers: &HeaderMap,
    route: &str,
    request: &impl Serialize,
) -> Result<CommandMeta, ApiError> {
    let mut meta = CommandMeta::new(caller.org_id(), caller.actor());
    if let Some(key) = headers.get("idempotency-key") {
        let key = key.to_str().ok().and_then(|text| Uuid::parse_str(text.trim()).ok()).ok_or_else(|| ApiError::BadRequest {
            detail: "Idempotency-Key must be a UUID".into(),
            field: Some("Idempotency-Key".into()),
        })?;
        let request_hash = {
            use sha2::Digest;
            let body = serde_json::to_vec(request).map_err(anyhow::Error::from)?;
            sha2::Sha256::new().chain_update(route.as_bytes()).chain_update([0]).chain_update(&body).finalize().to_vec()
        };
        let first_hash: Option<Vec<u8>> = sqlx::query_scalar(
            "WITH inserted AS (INSERT INTO idempotency_keys (org_id, route, key, request_hash) VALUES ($1, $2, $3, $4) \
             ON CONFLICT DO NOTHING RETURNING request_hash) \
             SELECT request_hash FROM inserted UNION ALL \
             SELECT request_hash FROM idempotency_keys WHERE org_id = $1 AND route = $2 AND key = $3 LIMIT 1",
        )
        .bind(caller.org_id().0)
        .bind(route)
        .bind(key)
        .bind(&request_hash)
        .fetch_optional(&state.pool)
        .await?;
        // A concurrent first use committed after this statement's snapshot: read what it stored.
        let first_hash = match first_hash {
            Some(hash) => hash,
            None => {
                sqlx::query_scalar("SELECT request_hash FROM idempotency_keys WHERE org_id = $1 AND route = $2 AND key = $3")
                    .bind(caller.org_id().0)
                    .bind(route)
                    .bind(key)
                    .fetch_one(&state.pool)
                    .await?
            }
        };
        if first_hash != request_hash {
            return Err(ApiError::Unprocessable("this Idempotency-Key was used with a different request; use a new key".into()));
        }
        let scoped = format!("{}/{route}/{key}", caller.org_id().0);
        meta.command_id = Uuid::new_v5(&IDEMPOTENCY_NAMESPACE, scoped.as_bytes());
        meta.correlation_id = meta.command_id;
        meta.idempotent = true;
    }
    // The command continues the caller's trace, if it sent one, in a span of the gateway's own.
    let parent = headers.get("traceparent").and_then(|value| value.to_str().ok());
    meta.traceparent = Trace::start("http.command", SpanKind::Server, parent).traceparent();
    Ok(meta)
}

/// The namespace of command ids made from idempotency keys.
const IDEMPOTENCY_NAMESPACE: Uuid = Uuid::from_u128(0x6b1e_2f9c_4d3a_4c1e_9a57_0f3e_8d21_c4b7);
