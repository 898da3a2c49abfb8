//! The skeleton of a processor that reacts to events one at a time: it owns its topics'
//! partitions through [`aurora_adapters::consumer::own`] (one leader, or a consumer group), reads
//! them from the offsets stored under its name in `projection_offsets`, hands each event to its
//! [`Reactor`], and stores the next offset only after the reaction succeeded. A reaction that
//! fails is retried with backoff (the database or the secret store is away for a moment); a
//! record that is no Aurora event goes to the dead-letter topic. Reactions must be idempotent:
//! after a crash the last events are delivered again, so whatever a reaction records goes through
//! commands keyed by the event.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aurora_adapters::consumer::{fence_leader, own, LiveConsumer};
use aurora_adapters::kafka::{consumer_config, dead_letter_record, ensure_topics, envelope_of, producer_config, Producer};
use aurora_adapters::metrics::metrics;
use aurora_adapters::postgres::Leadership;
use aurora_events::Envelope;
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::{Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;

use crate::Context;

/// What a processor does with each event of its topics.
#[async_trait]
pub trait Reactor: Send + Sync + 'static {
    /// Stable name: the lock, the consumer group and the key of its stored offsets.
    fn name(&self) -> &'static str;

    /// Topics it reads under `prefix`.
    fn topics(&self, prefix: &str) -> Vec<String>;

    /// Reacts to one event. Must be idempotent. An error means "try again later".
    async fn react(&self, envelope: &Envelope) -> anyhow::Result<()>;
}

/// Runs `reactor` until `shutdown`.
pub async fn run(reactor: Arc<dyn Reactor>, context: Context, shutdown: CancellationToken) -> anyhow::Result<()> {
    let name = reactor.name();
    let (worker, lock) = (format!("processor {name}"), format!("aurora-processor:{name}"));
    own(&worker, context.config.kafka.ownership, &context.pool, &lock, &shutdown, |leadership| {
        consume(reactor.as_ref(), &context, leadership, &shutdown)
    })
    .await;
    Ok(())
}

/// The name its offsets are stored under.
fn offsets_name(reactor: &dyn Reactor) -> String {
    format!("processor:{}", reactor.name())
}

async fn consume(
    reactor: &dyn Reactor,
    context: &Context,
    leadership: Option<Arc<Leadership>>,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    let config = &context.config;
    let topics = reactor.topics(&config.kafka.topic_prefix);
    let mut all_topics = topics.clone();
    all_topics.push(aurora_events::topics::dead_letter_topic(&config.kafka.topic_prefix));
    ensure_topics(config, &all_topics).await?;
    let name = offsets_name(reactor);
    let settings = consumer_config(config, &format!("{}aurora-{name}", config.kafka.topic_prefix));
    let mut consumer =
        LiveConsumer::for_owner(leadership.as_ref(), &name, settings, &topics, context.pool.clone(), &context.signals).await?;
    let dead_letters: tokio::sync::OnceCell<Producer> = tokio::sync::OnceCell::new();
    tracing::info!(processor = reactor.name(), ?topics, "processor consuming");
    let mut lock_check = tokio::time::interval(Duration::from_secs(5));
    loop {
        let received = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = lock_check.tick() => {
                fence_leader(leadership.as_ref()).await?;
                continue;
            }
            received = consumer.recv() => received,
        };
        let message = match received {
            Ok(message) => message,
            Err(error) => {
                tracing::warn!(processor = reactor.name(), %error, "kafka consume error");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        match envelope_of(&message) {
            Ok(envelope) => {
                if !react_with_retry(reactor, &envelope, leadership.as_ref(), shutdown).await? {
                    return Ok(());
                }
            }
            Err(error) => {
                dead_letter(reactor, context, &dead_letters, &message, &format!("record is not an Aurora CloudEvent: {error}")).await?
            }
        }
        store_offset(context, &name, &message).await?;
        let mut committed = TopicPartitionList::new();
        committed.add_partition_offset(message.topic(), message.partition(), Offset::Offset(message.offset() + 1))?;
        consumer.commit(&committed);
    }
}

/// Reacts until it succeeds; `false` when shutdown came first.
async fn react_with_retry(
    reactor: &dyn Reactor,
    envelope: &Envelope,
    leadership: Option<&Arc<Leadership>>,
    shutdown: &CancellationToken,
) -> anyhow::Result<bool> {
    let mut backoff = Duration::from_millis(100);
    loop {
        fence_leader(leadership).await?;
        match reactor.react(envelope).await {
            Ok(()) => return Ok(true),
            Err(error) => {
                tracing::warn!(
                    processor = reactor.name(),
                    event_id = %envelope.id,
                    event_type = %envelope.event_type,
                    error = %format!("{error:#}"),
                    retry_in_ms = backoff.as_millis() as u64,
                    "reaction failed, retrying"
                );
                tokio::select! {
                    _ = shutdown.cancelled() => return Ok(false),
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        }
    }
}

async fn dead_letter(
    reactor: &dyn Reactor,
    context: &Context,
    producer: &tokio::sync::OnceCell<Producer>,
    message: &OwnedMessage,
    error: &str,
) -> anyhow::Result<()> {
    let name = offsets_name(reactor);
    let record = dead_letter_record(&context.config.kafka.topic_prefix, &name, message, error);
    let producer = producer.get_or_try_init(|| async { Producer::create(&producer_config(&context.config)) }).await?;
    producer.deliver(&record, Duration::from_secs(30)).await.map_err(|error| anyhow::anyhow!("dead-lettering failed: {error}"))?;
    metrics().consumer_dead_letters.with_label_values(&[name.as_str()]).inc();
    tracing::error!(
        processor = reactor.name(),
        topic = message.topic(),
        partition = message.partition(),
        offset = message.offset(),
        error,
        "record sent to the dead-letter topic"
    );
    Ok(())
}

async fn store_offset(context: &Context, name: &str, message: &OwnedMessage) -> anyhow::Result<()> {
    sqlx::query(
        "INSERT INTO projection_offsets (projection, topic, partition, next_offset) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (projection, topic, partition) DO UPDATE SET next_offset = GREATEST(projection_offsets.next_offset, EXCLUDED.next_offset), updated_at = now()",
    )
    .bind(name)
    .bind(message.topic())
    .bind(message.partition())
    .bind(message.offset() + 1)
    .execute(&context.pool)
    .await?;
    Ok(())
}
