//! Durable timers: work due at a time that must happen once across every instance, even if the
//! process that set it is gone (a confirmation's expiry, an OAuth token's refresh). A timer is a
//! row of `timers`; the owner of a kind's work fires each due one through [`run`], which sleeps
//! until the next due time (or until told a timer was set), fences each round by its leadership,
//! and marks a timer fired only after its work succeeded. Work that failed is tried again five
//! seconds later. Firing must be idempotent per timer id: a timer fired by an instance that lost
//! its lock halfway is fired again by the next.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::consumer::fence_leader;
use crate::postgres::{Leadership, LeadershipLost};

/// A timer whose time has come.
#[derive(Debug, Clone)]
pub struct DueTimer {
    pub timer_id: Uuid,
    pub org_id: Uuid,
    pub stream: String,
    pub payload: Value,
}

/// Sets a timer of `kind`; setting the same `timer_id` again changes nothing.
pub async fn set(
    pool: &PgPool,
    timer_id: Uuid,
    kind: &str,
    org_id: Uuid,
    stream: &str,
    payload: &Value,
    due_at: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO timers (timer_id, kind, org_id, stream, payload, due_at) VALUES ($1, $2, $3, $4, $5, $6) \
         ON CONFLICT (timer_id) DO NOTHING",
    )
    .bind(timer_id)
    .bind(kind)
    .bind(org_id)
    .bind(stream)
    .bind(payload)
    .bind(due_at)
    .execute(pool)
    .await?;
    Ok(())
}

/// When the earliest timer of `kind` on `stream` that has not fired is due, if one waits.
pub async fn pending(pool: &PgPool, kind: &str, stream: &str) -> Result<Option<DateTime<Utc>>, sqlx::Error> {
    sqlx::query_scalar("SELECT min(due_at) FROM timers WHERE kind = $1 AND stream = $2 AND fired_at IS NULL")
        .bind(kind)
        .bind(stream)
        .fetch_one(pool)
        .await
}

/// Cancels the timers of `kind` on `stream` that have not fired.
pub async fn cancel(pool: &PgPool, kind: &str, stream: &str) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM timers WHERE kind = $1 AND stream = $2 AND fired_at IS NULL").bind(kind).bind(stream).execute(pool).await?;
    Ok(())
}

/// Fires the due timers of `kind` with `fire` until `stop`, as long as `leadership` (when given)
/// holds (`Err` once it is lost). `changed` wakes it when a timer was set in this process.
pub async fn run<F, Fut>(
    kind: &str,
    pool: &PgPool,
    leadership: Option<Arc<Leadership>>,
    changed: Arc<tokio::sync::Notify>,
    stop: CancellationToken,
    fire: F,
) -> Result<(), LeadershipLost>
where
    F: Fn(DueTimer) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    loop {
        fence_leader(leadership.as_ref()).await?;
        let due: Result<Vec<(Uuid, Uuid, String, Value)>, sqlx::Error> = sqlx::query_as(
            "SELECT timer_id, org_id, stream, payload FROM timers WHERE kind = $1 AND fired_at IS NULL AND due_at <= now() ORDER BY due_at LIMIT 100",
        )
        .bind(kind)
        .fetch_all(pool)
        .await;
        match due {
            Ok(due) => {
                for (timer_id, org_id, stream, payload) in due {
                    let outcome = fire(DueTimer { timer_id, org_id, stream, payload }).await;
                    let marked = match outcome {
                        Ok(()) => sqlx::query("UPDATE timers SET fired_at = now() WHERE timer_id = $1").bind(timer_id).execute(pool).await,
                        Err(error) => {
                            tracing::warn!(%timer_id, kind, error = %format!("{error:#}"), "firing a timer failed; it is tried again in 5 s");
                            sqlx::query("UPDATE timers SET due_at = now() + interval '5 seconds' WHERE timer_id = $1")
                                .bind(timer_id)
                                .execute(pool)
                                .await
                        }
                    };
                    if let Err(error) = marked {
                        tracing::warn!(%timer_id, kind, %error, "recording a timer's outcome failed");
                    }
                }
            }
            Err(error) => tracing::warn!(kind, %error, "reading due timers failed"),
        }
        let next_due: Option<DateTime<Utc>> = sqlx::query_scalar("SELECT min(due_at) FROM timers WHERE kind = $1 AND fired_at IS NULL")
            .bind(kind)
            .fetch_one(pool)
            .await
            .unwrap_or(None);
        let wait = next_due
            .map(|due| (due - Utc::now()).to_std().unwrap_or_default())
            .unwrap_or(Duration::from_secs(60))
            .clamp(Duration::from_millis(20), Duration::from_secs(60));
        tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            _ = changed.notified() => {}
            _ = tokio::time::sleep(wait) => {}
        }
    }
}
