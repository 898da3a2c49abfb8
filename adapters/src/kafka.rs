//! The log port on Kafka (`rdkafka`, with the librdkafka the crate bundles): client settings,
//! the envelope ↔ record mapping of the CloudEvents binary binding, topic creation and watermarks.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aurora_events::cloudevents;
use aurora_events::Envelope;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{DeliveryResult, Header, Headers, Message, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer as _, ProducerContext};
use tokio::sync::oneshot;

use crate::config::Config;

/// Settings of the idempotent producer: acks from all replicas, ordered retries per partition.
pub fn producer_config(config: &Config) -> ClientConfig {
    let mut client = ClientConfig::new();
    client
        .set("bootstrap.servers", &config.kafka.brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "1")
        .set("batch.num.messages", "10000")
        .set("message.timeout.ms", "120000")
        .set("socket.keepalive.enable", "true");
    with_debug(&mut client, config);
    client
}

/// Turns on librdkafka's own debug contexts when configured (`AURORA_KAFKA_DEBUG`).
fn with_debug<'client>(client: &'client mut ClientConfig, config: &Config) -> &'client mut ClientConfig {
    if let Some(contexts) = &config.kafka.debug {
        client.set("debug", contexts);
    }
    client
}

/// Settings of a consumer in `group_id`. Offsets are committed by the application, never
/// automatically: a record counts as consumed once its effect is durable.
pub fn consumer_config(config: &Config, group_id: &str) -> ClientConfig {
    let mut client = ClientConfig::new();
    client
        .set("bootstrap.servers", &config.kafka.brokers)
        .set("group.id", group_id)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("fetch.max.bytes", "16777216")
        .set("max.partition.fetch.bytes", "4194304")
        .set("session.timeout.ms", "10000")
        // Bounds how long a rebalance waits for a member that died without leaving the group.
        .set("max.poll.interval.ms", "20000")
        .set("fetch.wait.max.ms", config.kafka.fetch_wait.as_millis().to_string())
        .set("socket.keepalive.enable", "true");
    with_debug(&mut client, config);
    client
}

/// The topic, key, headers and value of the record carrying `envelope`.
pub struct OutgoingRecord {
    pub topic: String,
    pub key: String,
    pub headers: OwnedHeaders,
    pub value: Vec<u8>,
}

impl OutgoingRecord {
    pub fn for_envelope(prefix: &str, envelope: &Envelope) -> Self {
        let (_, value) = cloudevents::to_binary(envelope);
        Self::with_value(prefix, envelope, value)
    }

    /// The record for `envelope` whose value is `value`, the payload already serialized (the
    /// relay reads it as text from Postgres rather than parsing and reserializing it).
    pub fn with_value(prefix: &str, envelope: &Envelope, value: Vec<u8>) -> Self {
        let header_pairs = cloudevents::headers_of(envelope);
        let mut headers = OwnedHeaders::new_with_capacity(header_pairs.len());
        for (name, text) in &header_pairs {
            headers = headers.insert(Header { key: name, value: Some(text.as_bytes()) });
        }
        Self {
            topic: aurora_events::topics::topic_for_category(prefix, envelope.stream.category()),
            key: envelope.stream.to_string(),
            headers,
            value,
        }
    }

    /// The value of header `name`, when present and UTF-8.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|header| header.key == name)
            .and_then(|header| header.value)
            .and_then(|value| std::str::from_utf8(value).ok())
    }

    /// The dead-letter copy of this record, which `consumer` could not get onto its topic: its
    /// key and headers, why, and its value when that is at most `max_value` bytes.
    pub fn dead_letter(&self, prefix: &str, consumer: &str, error: &str, max_value: usize) -> OutgoingRecord {
        let value = if self.value.len() <= max_value { self.value.clone() } else { Vec::new() };
        let headers = with_dead_letter_headers(self.headers.clone(), error, &self.topic, -1, -1, consumer);
        OutgoingRecord { topic: aurora_events::topics::dead_letter_topic(prefix), key: self.key.clone(), headers, value }
    }
}

/// How long the producer's polling thread waits for delivery reports at a time. rdkafka's own
/// `FutureProducer` polls every 100 ms and, rounding the last part of each wait down to 0 ms,
/// spins through it: about 1 % of a core per idle producer. One wait per second costs a tenth.
const DELIVERY_POLL: Duration = Duration::from_secs(1);

/// The outcome of sending one record: resolves when the broker acknowledged it, or it failed.
pub type Delivery = oneshot::Receiver<Result<(), KafkaError>>;

/// Hands each record's outcome to the [`Delivery`] its sender holds.
pub struct Deliveries;

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = Box<oneshot::Sender<Result<(), KafkaError>>>;

    fn delivery(&self, result: &DeliveryResult<'_>, sender: Self::DeliveryOpaque) {
        let outcome = result.as_ref().map(|_| ()).map_err(|(error, _)| error.clone());
        let _ = sender.send(outcome);
    }
}

/// A Kafka producer whose sends are awaited as [`Delivery`]s, served by one thread that waits for
/// delivery reports and costs nothing measurable while nothing is sent.
pub struct Producer {
    inner: Arc<BaseProducer<Deliveries>>,
    stop: Arc<AtomicBool>,
}

impl Producer {
    pub fn create(settings: &ClientConfig) -> Result<Self, KafkaError> {
        let inner: Arc<BaseProducer<Deliveries>> = Arc::new(settings.create_with_context(Deliveries)?);
        let stop = Arc::new(AtomicBool::new(false));
        let (polled, stopping) = (inner.clone(), stop.clone());
        std::thread::Builder::new()
            .name("kafka deliveries".into())
            .spawn(move || {
                while !stopping.load(Ordering::Relaxed) {
                    polled.poll(DELIVERY_POLL);
                }
                // Last reports of records still in flight, then the client goes with this thread.
                let _ = polled.flush(Duration::from_secs(5));
            })
            .map_err(|error| KafkaError::ClientCreation(error.to_string()))?;
        Ok(Self { inner, stop })
    }

    /// Enqueues `record`; a full local queue or a record the client refuses (too large, say) is
    /// an error now, anything later is the [`Delivery`]'s.
    pub fn send(&self, record: &OutgoingRecord) -> Result<Delivery, KafkaError> {
        let (sender, delivery) = oneshot::channel();
        let base = BaseRecord::with_opaque_to(&record.topic, Box::new(sender))
            .key(&record.key)
            .payload(&record.value)
            .headers(record.headers.clone());
        self.inner.send(base).map_err(|(error, _)| error)?;
        Ok(delivery)
    }

    /// Enqueues `record`, waiting out a full local queue (librdkafka drains it as the broker
    /// acknowledges) until `deadline`, or for as long as it takes without one.
    pub async fn enqueue(&self, record: &OutgoingRecord, deadline: Option<Instant>) -> Result<Delivery, KafkaError> {
        loop {
            match self.send(record) {
                Err(KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull)) if deadline.is_none_or(|at| Instant::now() < at) => {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                outcome => return outcome,
            }
        }
    }

    /// Sends `record` and waits for the broker's acknowledgement, waiting out a full local queue
    /// for at most `timeout`.
    pub async fn deliver(&self, record: &OutgoingRecord, timeout: Duration) -> Result<(), KafkaError> {
        let delivery = self.enqueue(record, Some(Instant::now() + timeout)).await?;
        delivery.await.unwrap_or(Err(KafkaError::Canceled))
    }
}

impl Drop for Producer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// The value of header `name` of `message`, when present and UTF-8.
pub fn header_str<'a>(message: &'a impl Message, name: &str) -> Option<&'a str> {
    let headers = message.headers()?;
    headers.iter().find(|header| header.key == name).and_then(|header| header.value).and_then(|value| std::str::from_utf8(value).ok())
}

/// Reads the envelope of a consumed record. The headers are read out of librdkafka once, not
/// once per attribute: this is the hot path of every consumer.
pub fn envelope_of(message: &impl Message) -> Result<Envelope, cloudevents::BindingError> {
    let mut headers: Vec<(&str, &str)> = Vec::with_capacity(16);
    if let Some(all) = message.headers() {
        for header in all.iter() {
            if let Some(text) = header.value.and_then(|value| std::str::from_utf8(value).ok()) {
                headers.push((header.key, text));
            }
        }
    }
    cloudevents::from_binary(|name| headers.iter().find(|(key, _)| *key == name).map(|(_, text)| *text), message.payload())
}

/// How long a topic keeps its records. Events live forever (DESIGN §2: anyone may replay the log
/// for audit), and so do dead letters; token deltas matter for seconds, and an hour covers any
/// reconnect.
///
/// Brokers read these settings differently, so each is spelled for all of them: Apache Kafka and
/// Redpanda delete by age unless `retention.ms` is `-1`. Tansu 0.6 deletes only from topics whose
/// own configuration names `cleanup.policy=delete`, and compares `retention.ms` as an age in
/// milliseconds, so `-1` together with `cleanup.policy=delete` would delete every record at the
/// next maintenance. Event topics therefore carry `retention.ms=-1` and no `cleanup.policy` (the
/// broker's default, `delete`, on Kafka; nothing on Tansu); the deltas topic names both.
fn topic_settings(prefix: &str, topic: &str) -> &'static [(&'static str, &'static str)] {
    if topic == aurora_events::topics::deltas_topic(prefix) {
        &[("cleanup.policy", "delete"), ("retention.ms", "3600000")]
    } else {
        &[("retention.ms", "-1"), ("retention.bytes", "-1")]
    }
}

/// Creates the topics that do not exist yet, with [`topic_settings`]. An existing topic is left as
/// it is: a topic created by an older build, or by hand, keeps the broker's default retention
/// until an operator changes it (`kafka-configs --alter --add-config retention.ms=-1`). (Checking
/// it here with DescribeConfigs was tried: Tansu 0.6's SQLite engine stopped answering requests
/// after a few hundred of them.)
pub async fn ensure_topics(config: &Config, topics: &[String]) -> anyhow::Result<()> {
    // Only what is missing is created: a broker without the admin API (librdkafka's mock
    // cluster) serves topics made beforehand, and a restart makes no admin request.
    let missing = {
        let (client, topics) = (standalone_consumer(config)?, topics.to_vec());
        tokio::task::spawn_blocking(move || -> anyhow::Result<Vec<String>> {
            let mut missing = Vec::new();
            for topic in topics {
                let metadata = client.fetch_metadata(Some(&topic), Duration::from_secs(10))?;
                let known = metadata.topics().iter().any(|known| known.error().is_none() && !known.partitions().is_empty());
                if !known {
                    missing.push(topic);
                }
            }
            Ok(missing)
        })
        .await??
    };
    if missing.is_empty() {
        return Ok(());
    }
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new().set("bootstrap.servers", &config.kafka.brokers).create()?;
    let new_topics: Vec<NewTopic<'_>> = missing
        .iter()
        .map(|name| {
            topic_settings(&config.kafka.topic_prefix, name)
                .iter()
                .fold(NewTopic::new(name, config.kafka.topic_partitions, TopicReplication::Fixed(1)), |topic, (key, value)| {
                    topic.set(key, value)
                })
        })
        .collect();
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    for outcome in admin.create_topics(&new_topics, &options).await? {
        match outcome {
            Ok(_) => {}
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => anyhow::bail!("creating topic {topic} failed: {code}"),
        }
    }
    Ok(())
}

/// Low and high watermark of every partition of `topic` (blocking: call from a blocking task).
pub fn partition_watermarks<Context: ConsumerContext>(
    consumer: &impl Consumer<Context>,
    topic: &str,
    timeout: Duration,
) -> anyhow::Result<Vec<(i32, i64, i64)>> {
    let metadata = consumer.fetch_metadata(Some(topic), timeout)?;
    let mut marks = Vec::new();
    for topic_metadata in metadata.topics() {
        if topic_metadata.error().is_some() {
            continue;
        }
        for partition in topic_metadata.partitions() {
            let (low, high) = consumer.fetch_watermarks(topic, partition.id(), timeout)?;
            marks.push((partition.id(), low, high));
        }
    }
    marks.sort_unstable();
    Ok(marks)
}

/// The partition ids of `topic` (blocking: call from a blocking task). Empty when it does not exist.
pub fn partitions_of<Context: ConsumerContext>(
    consumer: &impl Consumer<Context>,
    topic: &str,
    timeout: Duration,
) -> anyhow::Result<Vec<i32>> {
    let metadata = consumer.fetch_metadata(Some(topic), timeout)?;
    let mut partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .filter(|topic_metadata| topic_metadata.error().is_none())
        .flat_map(|topic_metadata| topic_metadata.partitions().iter().map(|partition| partition.id()))
        .collect();
    partitions.sort_unstable();
    Ok(partitions)
}

/// A consumer that belongs to no group, for reading topics from chosen offsets.
pub fn standalone_consumer(config: &Config) -> anyhow::Result<BaseConsumer> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &config.kafka.brokers)
        .set("group.id", format!("aurora-standalone-{}", uuid::Uuid::now_v7()))
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "10")
        .create()?;
    Ok(consumer)
}

/// Header names a dead-lettered record carries besides its original headers.
pub const DLQ_ERROR: &str = "aurora_dlq_error";
pub const DLQ_TOPIC: &str = "aurora_dlq_topic";
pub const DLQ_PARTITION: &str = "aurora_dlq_partition";
pub const DLQ_OFFSET: &str = "aurora_dlq_offset";
pub const DLQ_CONSUMER: &str = "aurora_dlq_consumer";

/// The dead-letter copy of `message`: same key, value and headers, plus where it came from, who
/// gave up on it and why.
pub fn dead_letter_record(prefix: &str, consumer: &str, message: &OwnedMessage, error: &str) -> OutgoingRecord {
    let mut headers = OwnedHeaders::new();
    if let Some(original) = message.headers() {
        for header in original.iter() {
            if let Some(value) = header.value {
                headers = headers.insert(Header { key: header.key, value: Some(value) });
            }
        }
    }
    let headers = with_dead_letter_headers(headers, error, message.topic(), message.partition(), message.offset(), consumer);
    OutgoingRecord {
        topic: aurora_events::topics::dead_letter_topic(prefix),
        key: message.key().map(|key| String::from_utf8_lossy(key).into_owned()).unwrap_or_default(),
        headers,
        value: message.payload().map(<[u8]>::to_vec).unwrap_or_default(),
    }
}

/// `headers` and the dead-letter headers: why, where the record was (partition and offset -1
/// when it never reached the log) and who gave up on it.
fn with_dead_letter_headers(
    mut headers: OwnedHeaders,
    error: &str,
    topic: &str,
    partition: i32,
    offset: i64,
    consumer: &str,
) -> OwnedHeaders {
    let (partition, offset) = (partition.to_string(), offset.to_string());
    for (name, text) in [
        (DLQ_ERROR, error),
        (DLQ_TOPIC, topic),
        (DLQ_PARTITION, partition.as_str()),
        (DLQ_OFFSET, offset.as_str()),
        (DLQ_CONSUMER, consumer),
    ] {
        headers = headers.insert(Header { key: name, value: Some(text.as_bytes()) });
    }
    headers
}
