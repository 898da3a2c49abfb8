//! The live consumer of one projection, on the consumer skeleton (`aurora_adapters::consumer`): it
//! applies batches of records and stores their offsets with the rows, retries a failed batch with
//! backoff, sends poison records to the dead-letter topic, and on shutdown finishes the batch in
//! hand before it exits.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use aurora_adapters::consumer::{fence_leader, own, LiveConsumer};
use aurora_adapters::kafka::{consumer_config, dead_letter_record, ensure_topics, producer_config, Producer};
use aurora_adapters::metrics::metrics;
use aurora_adapters::postgres::Leadership;
use aurora_adapters::wakeup::LogSignals;
use aurora_adapters::Config;
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::{Offset, TopicPartitionList};
use sqlx::{PgConnection, PgPool, Row};
use tokio_util::sync::CancellationToken;

use crate::apply::apply_records;
use crate::{Projection, TableNames};

pub struct ProjectionRunner {
    projection: Arc<dyn Projection>,
    pool: PgPool,
    config: Config,
    signals: LogSignals,
}

/// The consumer group of a projection.
pub fn group_id(config: &Config, projection: &str) -> String {
    format!("{}aurora-projection-{projection}", config.kafka.topic_prefix)
}

impl ProjectionRunner {
    pub fn new(projection: Arc<dyn Projection>, pool: PgPool, config: Config, signals: LogSignals) -> Self {
        Self { projection, pool, config, signals }
    }

    /// Consumes until `shutdown`. Several instances of one projection may run. By default
    /// (`AURORA_KAFKA_OWNERSHIP=lock`) one consumes every partition and the others wait to take
    /// over: ownership is decided in Postgres, because Tansu 0.6's group coordinator keeps a
    /// member that died without leaving as the group's leader, so a restarted consumer joins and
    /// is assigned nothing. With `AURORA_KAFKA_OWNERSHIP=group` the instances share the
    /// partitions as a Kafka consumer group. Either way the stored offsets, locked per batch, keep two instances that overlap
    /// for a moment (a rebalance, a lost lock) from applying a record twice.
    pub async fn run(&self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let name = self.projection.name();
        let (worker, lock) = (format!("projection {name}"), format!("aurora-projection:{name}"));
        own(&worker, self.config.kafka.ownership, &self.pool, &lock, &shutdown, |leadership| self.consume(leadership, &shutdown)).await;
        Ok(())
    }

    /// Consumes as the leader, fencing each batch, or as a member of the group.
    async fn consume(&self, leadership: Option<Arc<Leadership>>, shutdown: &CancellationToken) -> anyhow::Result<()> {
        let name = self.projection.name();
        let topics = self.projection.topics(&self.config.kafka.topic_prefix);
        let mut all_topics = topics.clone();
        all_topics.push(aurora_events::topics::dead_letter_topic(&self.config.kafka.topic_prefix));
        ensure_topics(&self.config, &all_topics).await?;
        let settings = consumer_config(&self.config, &group_id(&self.config, name));
        let mut consumer = LiveConsumer::for_owner(leadership.as_ref(), name, settings, &topics, self.pool.clone(), &self.signals).await?;
        // Created at the first poison record: most projections never need it.
        let dead_letters: tokio::sync::OnceCell<Producer> = tokio::sync::OnceCell::new();
        tracing::info!(projection = name, ?topics, partitions = consumer.partition_count(), "projection consuming");

        let mut lock_check = tokio::time::interval(Duration::from_secs(5));
        loop {
            let first = tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = lock_check.tick() => {
                    // The lock lives as long as its session: if that is gone, so is ownership.
                    fence_leader(leadership.as_ref()).await?;
                    continue;
                }
                received = consumer.recv() => received,
            };
            let first = match first {
                Ok(message) => message,
                Err(error) => {
                    tracing::warn!(projection = name, %error, "kafka consume error");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            };
            let mut batch = vec![first];
            while batch.len() < self.config.log.projection_batch {
                match consumer.try_recv() {
                    Some(Ok(message)) => batch.push(message),
                    Some(Err(error)) => {
                        tracing::warn!(projection = name, %error, "kafka consume error");
                        break;
                    }
                    None => break,
                }
            }
            // Finish the batch in hand even when shutdown is requested meanwhile, unless the
            // database stays away: then the batch is read again by whoever consumes next.
            fence_leader(leadership.as_ref()).await?;
            let Some(next_offsets) = self.apply_with_retry(&batch, &dead_letters, shutdown).await else {
                break;
            };
            let mut committed = TopicPartitionList::new();
            for ((topic, partition), next_offset) in next_offsets {
                committed.add_partition_offset(&topic, partition, Offset::Offset(next_offset))?;
            }
            // Postgres holds the truth; the group offsets only let Kafka tools show progress.
            consumer.commit(&committed);
        }
        Ok(())
    }

    async fn apply_with_retry(
        &self,
        batch: &[OwnedMessage],
        dead_letters: &tokio::sync::OnceCell<Producer>,
        shutdown: &CancellationToken,
    ) -> Option<BTreeMap<(String, i32), i64>> {
        let mut backoff = Duration::from_millis(50);
        loop {
            match self.apply_batch(batch, dead_letters).await {
                Ok(next_offsets) => return Some(next_offsets),
                Err(error) => {
                    tracing::warn!(
                        projection = self.projection.name(),
                        error = %format!("{error:#}"),
                        retry_in_ms = backoff.as_millis() as u64,
                        "applying batch failed, retrying"
                    );
                    tokio::select! {
                        _ = shutdown.cancelled() => return None,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    /// One transaction: lock the partitions' offsets, apply what is new, dead-letter the poison,
    /// move the offsets. Returns the next offset of each partition in the batch.
    async fn apply_batch(
        &self,
        batch: &[OwnedMessage],
        dead_letters: &tokio::sync::OnceCell<Producer>,
    ) -> anyhow::Result<BTreeMap<(String, i32), i64>> {
        let name = self.projection.name();
        let mut transaction = self.pool.begin().await?;
        let mut next_offsets = lock_offsets(&mut transaction, name, batch).await?;
        let fresh: Vec<&OwnedMessage> =
            batch.iter().filter(|message| message.offset() >= next_offsets[&(message.topic().to_owned(), message.partition())]).collect();
        let poison = apply_records(self.projection.as_ref(), &mut transaction, &TableNames::live(), &fresh).await?;
        if !poison.is_empty() {
            let records: Vec<_> = poison
                .iter()
                .map(|poison| dead_letter_record(&self.config.kafka.topic_prefix, name, poison.message, &poison.error))
                .collect();
            let producer = dead_letters.get_or_try_init(|| async { Producer::create(&producer_config(&self.config)) }).await?;
            let deliveries: Vec<_> = records.iter().map(|record| producer.deliver(record, Duration::from_secs(30))).collect();
            for delivery in futures::future::join_all(deliveries).await {
                delivery.map_err(|error| anyhow::anyhow!("dead-lettering failed: {error}"))?;
            }
            metrics().consumer_dead_letters.with_label_values(&[name]).inc_by(poison.len() as u64);
            for poison in &poison {
                tracing::error!(
                    projection = name,
                    topic = poison.message.topic(),
                    partition = poison.message.partition(),
                    offset = poison.message.offset(),
                    error = %poison.error,
                    "record sent to the dead-letter topic"
                );
            }
        }
        for message in &fresh {
            let next = next_offsets.entry((message.topic().to_owned(), message.partition())).or_insert(0);
            *next = (*next).max(message.offset() + 1);
        }
        store_offsets(&mut transaction, name, &next_offsets).await?;
        transaction.commit().await?;
        Ok(next_offsets)
    }
}

/// Locks (creating when missing) the offset rows of every partition in `batch`.
pub(crate) async fn lock_offsets(
    connection: &mut PgConnection,
    projection: &str,
    batch: &[OwnedMessage],
) -> Result<BTreeMap<(String, i32), i64>, sqlx::Error> {
    let mut partitions: Vec<(String, i32)> = batch.iter().map(|message| (message.topic().to_owned(), message.partition())).collect();
    partitions.sort_unstable();
    partitions.dedup();
    let (topics, numbers): (Vec<String>, Vec<i32>) = partitions.into_iter().unzip();
    sqlx::query(
        "INSERT INTO projection_offsets (projection, topic, partition, next_offset) \
         SELECT $1, t, p, 0 FROM unnest($2::text[], $3::int[]) AS u(t, p) ON CONFLICT DO NOTHING",
    )
    .bind(projection)
    .bind(&topics)
    .bind(&numbers)
    .execute(&mut *connection)
    .await?;
    let rows = sqlx::query(
        "SELECT topic, partition, next_offset FROM projection_offsets \
         WHERE projection = $1 AND (topic, partition) IN (SELECT * FROM unnest($2::text[], $3::int[])) \
         ORDER BY topic, partition FOR UPDATE",
    )
    .bind(projection)
    .bind(&topics)
    .bind(&numbers)
    .fetch_all(&mut *connection)
    .await?;
    rows.iter().map(|row| Ok(((row.try_get("topic")?, row.try_get("partition")?), row.try_get("next_offset")?))).collect()
}

pub(crate) async fn store_offsets(
    connection: &mut PgConnection,
    projection: &str,
    next_offsets: &BTreeMap<(String, i32), i64>,
) -> Result<(), sqlx::Error> {
    let topics: Vec<&str> = next_offsets.keys().map(|(topic, _)| topic.as_str()).collect();
    let partitions: Vec<i32> = next_offsets.keys().map(|(_, partition)| *partition).collect();
    let offsets: Vec<i64> = next_offsets.values().copied().collect();
    sqlx::query(
        "INSERT INTO projection_offsets (projection, topic, partition, next_offset) \
         SELECT $1, t, p, n FROM unnest($2::text[], $3::int[], $4::bigint[]) AS u(t, p, n) \
         ON CONFLICT (projection, topic, partition) DO UPDATE SET next_offset = EXCLUDED.next_offset, updated_at = now()",
    )
    .bind(projection)
    .bind(&topics)
    .bind(&partitions)
    .bind(&offsets)
    .execute(connection)
    .await?;
    Ok(())
}
