//! The relay publishes appended events to Kafka, at least once and in stream order.
//!
//! Events are read in `(transaction_id, position)` order and only from transactions older than
//! the oldest one still running (`pg_snapshot_xmin`). A `position` is taken when a row is inserted,
//! not when its transaction commits, so reading by position alone could pass over an event whose
//! transaction commits after a later position was published; reading behind the snapshot horizon
//! never does. The checkpoint moves only after Kafka acknowledged every record of a batch, so a
//! relay that dies mid-batch republishes that batch: duplicates, never gaps. Consumers deduplicate
//! by event id or stream version.
//!
//! Only one relay publishes at a time: the leader holds a Postgres advisory lock on the session it
//! reads and writes its checkpoint through; the others wait for the lock.
//!
//! No single event can stop the relay: a record the client or the broker refuses for what it is
//! (too large, malformed, against a policy) goes to the dead-letter topic with its event id and
//! the reason, is counted in `aurora_relay_dead_letters_total`, and the relay moves on. Only
//! failures that may pass (the broker away, a timeout) hold it back and are retried.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aurora_adapters::consumer::lead;
use aurora_adapters::kafka::{ensure_topics, producer_config, Delivery, OutgoingRecord, Producer};
use aurora_adapters::metrics::metrics;
use aurora_adapters::postgres::Leadership;
use aurora_adapters::wakeup::{announce_appended, Announcer, LogSignals};
use aurora_adapters::Config;
use futures::future::join_all;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use sqlx::postgres::PgRow;
use sqlx::{PgPool, Row};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::postgres::envelope_from_row;
use crate::StoreError;

/// The envelope columns with the payload as text, sent as the record value as it is stored.
const RELAY_COLUMNS: &str = "event_id, event_type, schema_version, stream, stream_version, org_id, actor, occurred_at, \
     correlation_id, causation_id, traceparent, 'null'::jsonb AS payload, payload::text AS payload_text";

/// The longest the relay waits between polls when nothing was appended for a while (it starts at
/// `relay_idle_wait` and doubles while polls find nothing).
const RELAY_REST: Duration = Duration::from_millis(100);

/// After a wake-up the relay polls at `relay_idle_wait` until it publishes, for at most this long.
const ANNOUNCED_FAST_POLLING: Duration = Duration::from_secs(1);

/// Batches enqueued but not yet acknowledged, at most.
const MAX_BATCHES_IN_FLIGHT: usize = 4;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Checkpoint {
    transaction_id: u64,
    position: i64,
}

pub struct Relay {
    config: Config,
    pool: PgPool,
    signals: LogSignals,
    announcer: Announcer,
    producer: Producer,
    topic_prefix: String,
    name: String,
    batch_size: i64,
    idle_wait: Duration,
}

impl Relay {
    pub fn new(config: &Config, pool: PgPool, signals: LogSignals) -> anyhow::Result<Self> {
        Ok(Self {
            config: config.clone(),
            announcer: Announcer::new(pool.clone()),
            pool,
            signals,
            producer: Producer::create(&producer_config(config))?,
            topic_prefix: config.kafka.topic_prefix.clone(),
            name: "kafka".into(),
            batch_size: config.log.relay_batch,
            idle_wait: config.log.relay_idle_wait,
        })
    }

    /// Publishes until `shutdown`, as the one relay of the deployment; transient failures of
    /// Postgres or Kafka are retried with backoff.
    pub async fn run(&self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let lock = format!("aurora-relay:{}", self.name);
        lead("relay", &self.pool, &lock, &shutdown, |leadership| self.publish_loop(leadership, &shutdown)).await;
        Ok(())
    }

    async fn publish_loop(&self, leadership: Arc<Leadership>, shutdown: &CancellationToken) -> anyhow::Result<()> {
        let leadership = leadership.as_ref();
        let mut checkpoint = self.load_checkpoint(&mut *leadership.connection().await?).await?;
        // Topics are created before the first record goes to them: a broker without automatic
        // topic creation would otherwise hold the records until they time out.
        let mut known_topics: HashSet<String> = aurora_events::topics::all_event_topics(&self.topic_prefix).into_iter().collect();
        ensure_topics(&self.config, &known_topics.iter().cloned().collect::<Vec<_>>()).await?;
        // Batches in flight: the next batch is read and enqueued while Kafka acknowledges the
        // earlier ones; the checkpoint only ever moves past batches that were acknowledged.
        let mut in_flight: VecDeque<(Checkpoint, Vec<Enqueued>)> = VecDeque::new();
        let mut read_after = checkpoint;
        // A writer that wants its events out at once wakes the relay ([`wake`]); everything else
        // is found at the next poll, which comes sooner while events keep coming.
        let mut appended = self.signals.subscribe();
        let mut idle_wait = self.idle_wait;
        let mut woken_at: Option<Instant> = None;
        while !shutdown.is_cancelled() {
            if in_flight.len() >= MAX_BATCHES_IN_FLIGHT {
                checkpoint = self.settle_oldest(leadership, &mut in_flight).await?.unwrap_or(checkpoint);
            }
            let rows = sqlx::query(&format!(
                "SELECT {RELAY_COLUMNS}, transaction_id::text::bigint AS txid, position FROM events \
                 WHERE (transaction_id, position) > ($1::text::xid8, $2) \
                   AND transaction_id < pg_snapshot_xmin(pg_current_snapshot()) \
                 ORDER BY transaction_id, position LIMIT $3"
            ))
            .bind(read_after.transaction_id.to_string())
            .bind(read_after.position)
            .bind(self.batch_size)
            .fetch_all(&mut *leadership.connection().await?)
            .await?;
            let Some(last) = rows.last() else {
                if !in_flight.is_empty() {
                    checkpoint = self.settle_oldest(leadership, &mut in_flight).await?.unwrap_or(checkpoint);
                    continue;
                }
                tokio::select! {
                    _ = shutdown.cancelled() => {}
                    _ = appended.recv() => {
                        woken_at = Some(Instant::now());
                        idle_wait = self.idle_wait;
                    }
                    _ = tokio::time::sleep(idle_wait) => {
                        // Announced events that are not visible yet (a transaction that began
                        // earlier, anywhere in the cluster, still runs) are polled for at the fast rate.
                        let announced_lately = woken_at.is_some_and(|at| at.elapsed() < ANNOUNCED_FAST_POLLING);
                        idle_wait = if announced_lately { self.idle_wait } else { (idle_wait * 2).min(RELAY_REST) };
                    }
                }
                // One poll answers every wake-up that came while the relay was busy.
                while matches!(appended.try_recv(), Ok(_) | Err(tokio::sync::broadcast::error::TryRecvError::Lagged(_))) {}
                continue;
            };
            idle_wait = self.idle_wait;
            woken_at = None;
            let batch_end = Checkpoint { transaction_id: last.try_get::<i64, _>("txid")? as u64, position: last.try_get("position")? };
            let records = rows.iter().map(|row| self.record_of(row)).collect::<Result<Vec<_>, _>>()?;
            let new_topics: Vec<String> = records
                .iter()
                .filter_map(|record| record.as_ref().ok())
                .map(|record| record.topic.clone())
                .filter(|topic| !known_topics.contains(topic))
                .collect();
            if !new_topics.is_empty() {
                ensure_topics(&self.config, &new_topics).await?;
                known_topics.extend(new_topics);
            }
            in_flight.push_back((batch_end, self.enqueue(records).await?));
            read_after = batch_end;
        }
        // Finish what is in hand before stopping.
        while !in_flight.is_empty() {
            self.settle_oldest(leadership, &mut in_flight).await?;
        }
        tracing::debug!(position = checkpoint.position, "relay stopped");
        Ok(())
    }

    /// Waits for Kafka to acknowledge the oldest batch in flight, dead-letters what it refused
    /// for good, then records the batch as published.
    async fn settle_oldest(
        &self,
        leadership: &Leadership,
        in_flight: &mut VecDeque<(Checkpoint, Vec<Enqueued>)>,
    ) -> anyhow::Result<Option<Checkpoint>> {
        let Some((batch_end, enqueued)) = in_flight.pop_front() else { return Ok(None) };
        let published = enqueued.len();
        let mut topics: Vec<String> = Vec::new();
        for enqueued in &enqueued {
            let (Enqueued::Sent(record, _) | Enqueued::Refused(record, _)) = enqueued;
            if !topics.contains(&record.topic) {
                topics.push(record.topic.clone());
            }
        }
        let mut refused = Vec::new();
        let (records, deliveries): (Vec<_>, Vec<_>) = enqueued
            .into_iter()
            .filter_map(|enqueued| match enqueued {
                Enqueued::Sent(record, delivery) => Some((record, delivery)),
                Enqueued::Refused(record, reason) => {
                    refused.push((record, reason));
                    None
                }
            })
            .unzip();
        for (record, outcome) in records.into_iter().zip(join_all(deliveries).await) {
            match outcome {
                Ok(Ok(())) => {}
                Ok(Err(error)) if is_refusal(&error) => refused.push((record, error.to_string())),
                Ok(Err(error)) => anyhow::bail!("kafka did not take a record: {error}"),
                Err(_) => anyhow::bail!("the producer dropped a record before delivering it"),
            }
        }
        for (record, reason) in &refused {
            self.dead_letter(record, reason).await?;
        }
        // Written through the session that holds the lock: a relay that lost it cannot move the checkpoint.
        sqlx::query(
            "INSERT INTO relay_checkpoints (relay, transaction_id, position) VALUES ($1, $2::text::xid8, $3) \
             ON CONFLICT (relay) DO UPDATE SET transaction_id = EXCLUDED.transaction_id, \
             position = EXCLUDED.position, updated_at = now()",
        )
        .bind(&self.name)
        .bind(batch_end.transaction_id.to_string())
        .bind(batch_end.position)
        .execute(&mut *leadership.connection().await?)
        .await?;
        metrics().relay_published.inc_by((published - refused.len()) as u64);
        // Consumers resting on these topics wake up for what is now on them.
        self.announcer.published(topics.iter().map(String::as_str)).await;
        tracing::trace!(published, position = batch_end.position, "relay batch published");
        Ok(Some(batch_end))
    }

    /// Sends the headers of a refused record (its event id among them) and the reason to the
    /// dead-letter topic. The value goes along only when it is small: it may be why it was refused.
    async fn dead_letter(&self, record: &OutgoingRecord, reason: &str) -> anyhow::Result<()> {
        let event_id = record.header(aurora_events::cloudevents::H_ID).unwrap_or_default().to_owned();
        let letter = record.dead_letter(&self.topic_prefix, "relay", reason, MAX_DEAD_LETTER_VALUE);
        let delivery = self.producer.deliver(&letter, Duration::from_secs(30)).await;
        delivery.map_err(|error| anyhow::anyhow!("dead-lettering event {event_id} failed: {error}"))?;
        metrics().relay_dead_letters.inc();
        tracing::error!(%event_id, topic = %record.topic, %reason, "event could not be published; sent to the dead-letter topic");
        Ok(())
    }

    async fn load_checkpoint(&self, connection: &mut sqlx::PgConnection) -> anyhow::Result<Checkpoint> {
        let row = sqlx::query("SELECT transaction_id::text::bigint AS txid, position FROM relay_checkpoints WHERE relay = $1")
            .bind(&self.name)
            .fetch_optional(&mut *connection)
            .await?;
        Ok(match row {
            Some(row) => Checkpoint { transaction_id: row.try_get::<i64, _>("txid")? as u64, position: row.try_get("position")? },
            None => Checkpoint { transaction_id: 0, position: 0 },
        })
    }

    /// The record of an `events` row; a row that is not a readable event (its stream, actor or
    /// type malformed) is no record, but the copy to dead-letter with the reason, so that it
    /// cannot stop the relay.
    fn record_of(&self, row: &PgRow) -> anyhow::Result<Result<OutgoingRecord, (OutgoingRecord, String)>> {
        let payload: String = row.try_get("payload_text")?;
        match envelope_from_row(row) {
            Ok(envelope) => Ok(Ok(OutgoingRecord::with_value(&self.topic_prefix, &envelope, payload.into_bytes()))),
            Err(StoreError::Malformed(reason)) => {
                let event_id: Uuid = row.try_get("event_id")?;
                let stream: String = row.try_get("stream")?;
                let category = stream.split_once('-').map_or(stream.as_str(), |(category, _)| category);
                let headers = OwnedHeaders::new()
                    .insert(Header { key: aurora_events::cloudevents::H_ID, value: Some(event_id.to_string().as_bytes()) });
                let topic = aurora_events::topics::topic_for_category(&self.topic_prefix, category);
                let record = OutgoingRecord { topic, key: stream, headers, value: payload.into_bytes() };
                Ok(Err((record, format!("stored event is malformed: {reason}"))))
            }
            Err(other) => Err(other.into()),
        }
    }

    /// Hands every record to the producer, in order. A record the client refuses outright (larger
    /// than `message.max.bytes`, say), or a row that was no readable event, is kept aside for the
    /// dead-letter topic.
    async fn enqueue(&self, records: Vec<Result<OutgoingRecord, (OutgoingRecord, String)>>) -> anyhow::Result<Vec<Enqueued>> {
        let mut enqueued = Vec::with_capacity(records.len());
        for record in records {
            let record = match record {
                Ok(record) => record,
                Err((record, reason)) => {
                    enqueued.push(Enqueued::Refused(record, reason));
                    continue;
                }
            };
            match self.producer.enqueue(&record, None).await {
                Ok(delivery) => enqueued.push(Enqueued::Sent(record, delivery)),
                Err(error) if is_refusal(&error) => {
                    let reason = error.to_string();
                    enqueued.push(Enqueued::Refused(record, reason));
                }
                Err(error) => anyhow::bail!("enqueueing record for {}: {error}", record.topic),
            }
        }
        Ok(enqueued)
    }
}

/// A record handed to the producer, or refused by it before it was sent.
enum Enqueued {
    Sent(OutgoingRecord, Delivery),
    Refused(OutgoingRecord, String),
}

/// A dead-lettered record keeps its value up to this size.
const MAX_DEAD_LETTER_VALUE: usize = 64 * 1024;

/// Whether Kafka refused the record for what it is, so that sending it again cannot succeed.
fn is_refusal(error: &KafkaError) -> bool {
    let code = match error {
        KafkaError::MessageProduction(code) => *code,
        _ => return false,
    };
    matches!(
        code,
        RDKafkaErrorCode::MessageSizeTooLarge
            | RDKafkaErrorCode::InvalidMessageSize
            | RDKafkaErrorCode::InvalidMessage
            | RDKafkaErrorCode::InvalidRecord
            | RDKafkaErrorCode::MessageBatchTooLarge
            | RDKafkaErrorCode::InvalidTimestamp
            | RDKafkaErrorCode::PolicyViolation
    )
}

/// Events appended but not yet published by the relay.
pub async fn backlog(pool: &PgPool) -> anyhow::Result<i64> {
    let checkpoint: Option<(String, i64)> =
        sqlx::query_as("SELECT transaction_id::text, position FROM relay_checkpoints WHERE relay = 'kafka'").fetch_optional(pool).await?;
    let (transaction_id, position) = checkpoint.unwrap_or_else(|| ("0".to_owned(), 0));
    let backlog: i64 = sqlx::query_scalar("SELECT count(*) FROM events WHERE (transaction_id, position) > ($1::text::xid8, $2)")
        .bind(transaction_id)
        .bind(position)
        .fetch_one(pool)
        .await?;
    Ok(backlog)
}

/// Wakes the relay now rather than at its next poll, for events a person is waiting on (a chat
/// question). Not done on every append: a NOTIFY serialises committing transactions across the
/// cluster, which costs bulk appends more than the poll it saves.
pub async fn wake(pool: &PgPool) {
    announce_appended(pool).await;
}
