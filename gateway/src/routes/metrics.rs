//! Prometheus metrics. Every figure is read from the shared state (Postgres and the broker) when
//! scraped, so any gateway instance reports the whole installation, whichever process appended,
//! relayed or projected.

use std::time::Duration;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use prometheus::{Encoder, IntCounter, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder};

use crate::problem::ApiError;
use crate::AppState;

/// Metrics in the Prometheus text format.
#[utoipa::path(get, path = "/metrics", tag = "health", responses((status = 200, content_type = "text/plain", body = String)))]
pub async fn metrics(State(state): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    let registry = Registry::new();
    let gauge = |name: &str, help: &str, value: i64| -> anyhow::Result<()> {
        let metric = IntGauge::new(name, help)?;
        metric.set(value);
        registry.register(Box::new(metric))?;
        Ok(())
    };

    let counter = |name: &str, help: &str, value: i64| -> anyhow::Result<()> {
        let metric = IntCounter::new(name, help)?;
        metric.inc_by(value.max(0) as u64);
        registry.register(Box::new(metric))?;
        Ok(())
    };

    let appended: i64 = sqlx::query_scalar("SELECT count(*) FROM events").fetch_one(&state.pool).await?;
    // `rate(aurora_events_appended_total[1m])` is the append rate.
    counter("aurora_events_appended_total", "Events appended to the event store", appended)?;
    let backlog = aurora_commands::relay::backlog(&state.pool).await?;
    gauge("aurora_relay_backlog", "Events appended but not yet published to Kafka", backlog)?;

    let offsets: Vec<(String, String, i32, i64)> =
        sqlx::query_as("SELECT projection, topic, partition, next_offset FROM projection_offsets")
            .fetch_all(&state.pool)
            .await?;
    let mut topics: Vec<String> = aurora_events::topics::all_event_topics(&state.config.topic_prefix);
    let dead_letter_topic = aurora_events::topics::dead_letter_topic(&state.config.topic_prefix);
    topics.push(dead_letter_topic.clone());
    let kafka = state.kafka.clone();
    let watermarks = tokio::task::spawn_blocking(move || {
        topics
            .into_iter()
            .map(|topic| {
                let marks = aurora_adapters::kafka::partition_watermarks(kafka.as_ref(), &topic, Duration::from_secs(2)).unwrap_or_default();
                (topic, marks)
            })
            .collect::<Vec<_>>()
    })
    .await
    .map_err(anyhow::Error::from)?;

    let lag = IntGaugeVec::new(
        Opts::new("aurora_projection_consumer_lag", "Records on the log not yet applied by each projection"),
        &["projection"],
    )
    .map_err(anyhow::Error::from)?;
    for projection in aurora_projections::all_projections() {
        let mut total = 0i64;
        for topic in projection.topics(&state.config.topic_prefix) {
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
        lag.with_label_values(&[projection.name()]).set(total);
    }
    registry.register(Box::new(lag)).map_err(anyhow::Error::from)?;

    let dead_letters: i64 = watermarks
        .iter()
        .filter(|(topic, _)| *topic == dead_letter_topic)
        .flat_map(|(_, marks)| marks.iter().map(|(_, low, high)| high - low))
        .sum();
    counter("aurora_dead_letters_total", "Records on the dead-letter topic", dead_letters)?;

    let mut body = Vec::new();
    TextEncoder::new().encode(&registry.gather(), &mut body).map_err(anyhow::Error::from)?;
    Ok(([(header::CONTENT_TYPE, prometheus::TEXT_FORMAT)], body))
}
