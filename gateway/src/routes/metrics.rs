//! Prometheus metrics. A scrape renders what the process already holds: counters its code moves
//! as it works, and installation-wide gauges (relay backlog, projection lag, dead letters) that
//! one background task per gateway samples from Postgres and the broker every
//! `AURORA_METRICS_INTERVAL_SECS`. However often and by whomever `/metrics` is called, the load it
//! puts on Postgres and the broker stays that one sample per interval.

use std::sync::Arc;
use std::time::Duration;

use aurora_adapters::metrics::metrics;
use aurora_adapters::Config;
use axum::http::header;
use axum::response::IntoResponse;
use prometheus::{Encoder, TextEncoder};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::problem::ApiError;

/// Metrics in the Prometheus text format.
#[utoipa::path(get, path = "/metrics", tag = "health", responses((status = 200, content_type = "text/plain", body = String)))]
pub async fn metrics_text() -> Result<impl IntoResponse, ApiError> {
    let mut body = Vec::new();
    TextEncoder::new().encode(&metrics().registry.gather(), &mut body).map_err(anyhow::Error::from)?;
    Ok(([(header::CONTENT_TYPE, prometheus::TEXT_FORMAT)], body))
}

/// Samples the installation-wide gauges every `config.http.metrics_interval` until `shutdown`.
pub fn spawn_sampler(config: Arc<Config>, pool: PgPool, kafka: Arc<rdkafka::consumer::BaseConsumer>, shutdown: CancellationToken) {
    tokio::spawn(async move {
        loop {
            if let Err(error) = sample(&config, &pool, &kafka).await {
                tracing::debug!(error = %format!("{error:#}"), "sampling metrics failed; the last sample stays");
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(config.http.metrics_interval) => {}
            }
        }
    });
}

async fn sample(config: &Config, pool: &PgPool, kafka: &Arc<rdkafka::consumer::BaseConsumer>) -> anyhow::Result<()> {
    metrics().relay_backlog.set(aurora_commands::relay::backlog(pool).await?);
    let offsets: Vec<(String, String, i32, i64)> =
        sqlx::query_as("SELECT projection, topic, partition, next_offset FROM projection_offsets").fetch_all(pool).await?;
    let mut topics: Vec<String> = aurora_events::topics::all_event_topics(&config.kafka.topic_prefix);
    let dead_letter_topic = aurora_events::topics::dead_letter_topic(&config.kafka.topic_prefix);
    topics.push(dead_letter_topic.clone());
    let kafka = kafka.clone();
    let watermarks = tokio::task::spawn_blocking(move || {
        topics
            .into_iter()
            .map(|topic| {
                let marks =
                    aurora_adapters::kafka::partition_watermarks(kafka.as_ref(), &topic, Duration::from_secs(2)).unwrap_or_default();
                (topic, marks)
            })
            .collect::<Vec<_>>()
    })
    .await?;
    for projection in aurora_projections::all_projections(config) {
        let mut total = 0i64;
        for topic in projection.topics(&config.kafka.topic_prefix) {
            let Some((_, marks)) = watermarks.iter().find(|(name, _)| *name == topic) else { continue };
            for (partition, low, high) in marks {
                let next = offsets
                    .iter()
                    .find(|(name, offset_topic, offset_partition, _)| {
                        name == projection.name() && *offset_topic == topic && offset_partition == partition
                    })
                    .map(|(_, _, _, next)| *next)
                    .unwrap_or(*low);
                total += (high - next.max(*low)).max(0);
            }
        }
        metrics().projection_lag.with_label_values(&[projection.name()]).set(total);
    }
    let dead_letters: i64 = watermarks
        .iter()
        .filter(|(topic, _)| *topic == dead_letter_topic)
        .flat_map(|(_, marks)| marks.iter().map(|(_, low, high)| high - low))
        .sum();
    metrics().dead_letters_on_log.set(dead_letters);
    Ok(())
}
