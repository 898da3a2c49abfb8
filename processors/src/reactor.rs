//! The skeleton of a processor that reacts to events: it owns its topics' partitions through
//! [`aurora_adapters::consumer::own`] (one leader, or a consumer group), reads them from the
//! offsets stored under its name in `projection_offsets`, and hands each event to its
//! [`Reactor`]. Events react one at a time per lane (an organisation), in order; several lanes
//! react at once and take turns, and records are read ahead of the reactions (up to a number of
//! bytes), so that one organisation's backlog, or its reaction that keeps failing, holds up no
//! other organisation. A partition's stored offset is that of its earliest record whose reaction
//! has not succeeded. A reaction that fails is retried with backoff (the database or the secret
//! store is away for a moment); a record that is no Aurora event goes to the dead-letter topic.
//! Reactions must be idempotent: after a crash the last events are delivered again, so whatever
//! a reaction records goes through commands keyed by the event.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
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
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use uuid::Uuid;

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

    /// Events of one lane react in the order they were read, one at a time; events of different
    /// lanes may react at once. By organisation unless a reactor says otherwise.
    fn lane(&self, envelope: &Envelope) -> Uuid {
        envelope.org_id.0
    }
}

/// Runs `reactor` until `shutdown`.
pub async fn run(reactor: Arc<dyn Reactor>, context: Context, shutdown: CancellationToken) -> anyhow::Result<()> {
    let name = reactor.name();
    let (worker, lock) = (format!("processor {name}"), format!("aurora-processor:{name}"));
    own(&worker, context.config.kafka.ownership, &context.pool, &lock, &shutdown, |leadership| {
        consume(&reactor, &context, leadership, &shutdown)
    })
    .await;
    Ok(())
}

/// The name its offsets are stored under.
fn offsets_name(reactor: &dyn Reactor) -> String {
    format!("processor:{}", reactor.name())
}

async fn consume(
    reactor: &Arc<dyn Reactor>,
    context: &Context,
    leadership: Option<Arc<Leadership>>,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    let config = &context.config;
    let topics = reactor.topics(&config.kafka.topic_prefix);
    let mut all_topics = topics.clone();
    all_topics.push(aurora_events::topics::dead_letter_topic(&config.kafka.topic_prefix));
    ensure_topics(config, &all_topics).await?;
    let name = offsets_name(reactor.as_ref());
    let settings = consumer_config(config, &format!("{}aurora-{name}", config.kafka.topic_prefix));
    let mut consumer =
        LiveConsumer::for_owner(leadership.as_ref(), &name, settings, &topics, context.pool.clone(), &context.signals).await?;
    let dead_letters: tokio::sync::OnceCell<Producer> = tokio::sync::OnceCell::new();
    tracing::info!(processor = reactor.name(), ?topics, "processor consuming");
    let mut lanes = Lanes::new(config.log.processor_lanes, config.log.processor_read_ahead_bytes);
    // Each reaction is a task of its own: it goes on while this loop waits for something else
    // (storing offsets, checking the lock), and what it holds meanwhile (a connection of the
    // pool, the leader's connection) is never held by a future nobody polls.
    let mut running: JoinSet<(Pending, anyhow::Result<bool>)> = JoinSet::new();
    let mut lock_check = tokio::time::interval(Duration::from_secs(5));
    // When how far it got is to be stored next, while there is something to store.
    let mut store_at: Option<tokio::time::Instant> = None;
    loop {
        // Start what the free lanes may start: organisations in turn, each one's events in order.
        while running.len() < lanes.concurrency {
            let Some(pending) = lanes.start_next() else { break };
            let (reactor, leadership, shutdown) = (reactor.clone(), leadership.clone(), shutdown.clone());
            running.spawn(
                async move {
                    let reacted = react_with_retry(reactor.as_ref(), &pending.envelope, leadership.as_ref(), &shutdown).await;
                    (pending, reacted)
                }
                .in_current_span(),
            );
        }
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = lock_check.tick() => fence_leader(leadership.as_ref()).await?,
            _ = tokio::time::sleep_until(store_at.unwrap_or_else(tokio::time::Instant::now)), if store_at.is_some() => {
                lanes.store_offsets(context, &name, &consumer).await?;
                store_at = None;
            }
            Some(joined) = running.join_next() => {
                let (pending, reacted) = joined.map_err(|error| anyhow::anyhow!("a reaction of {} ended abnormally: {error}", reactor.name()))?;
                if !reacted? {
                    return Ok(());
                }
                lanes.done(pending);
                if running.is_empty() && lanes.is_idle() {
                    lanes.store_offsets(context, &name, &consumer).await?;
                    store_at = None;
                } else {
                    store_at.get_or_insert_with(|| tokio::time::Instant::now() + STORE_OFFSETS_EVERY);
                }
            }
            received = consumer.recv(), if lanes.has_room() => {
                let message = match received {
                    Ok(message) => message,
                    Err(error) => {
                        tracing::warn!(processor = reactor.name(), %error, "kafka consume error");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        continue;
                    }
                };
                match envelope_of(&message) {
                    Ok(envelope) => lanes.push(reactor.lane(&envelope), &message, envelope),
                    Err(error) => {
                        dead_letter(reactor.as_ref(), context, &dead_letters, &message, &format!("record is not an Aurora CloudEvent: {error}")).await?;
                        lanes.skipped(&message);
                        store_at.get_or_insert_with(|| tokio::time::Instant::now() + STORE_OFFSETS_EVERY);
                    }
                }
            }
        }
    }
}

/// How often a processor stores how far it got while it works (and always when it runs out of
/// work): after a crash at most this much is delivered again, and reactions are idempotent.
const STORE_OFFSETS_EVERY: Duration = Duration::from_millis(200);

/// A record read and not yet reacted to.
struct Pending {
    lane: Uuid,
    topic: String,
    partition: i32,
    offset: i64,
    bytes: usize,
    envelope: Envelope,
}

/// What a processor has read ahead, by lane (organisation): each lane's records react in order,
/// one at a time; up to `concurrency` lanes react at once, taking turns, so that one
/// organisation's backlog or a reaction that keeps failing holds up only that organisation.
/// The offset stored for a partition is that of its earliest record not yet reacted to.
struct Lanes {
    concurrency: usize,
    read_ahead_bytes: usize,
    buffered_bytes: usize,
    waiting: HashMap<Uuid, VecDeque<Pending>>,
    /// Lanes with records waiting and none reacting, in the order they take turns.
    ready: VecDeque<Uuid>,
    busy: HashSet<Uuid>,
    /// Per partition: the offsets read and not yet reacted to, and the offset after the last read.
    partitions: HashMap<(String, i32), (BTreeSet<i64>, i64)>,
    /// The next offset stored per partition.
    stored: HashMap<(String, i32), i64>,
}

impl Lanes {
    fn new(concurrency: usize, read_ahead_bytes: usize) -> Self {
        Self {
            concurrency,
            read_ahead_bytes,
            buffered_bytes: 0,
            waiting: HashMap::new(),
            ready: VecDeque::new(),
            busy: HashSet::new(),
            partitions: HashMap::new(),
            stored: HashMap::new(),
        }
    }

    fn has_room(&self) -> bool {
        self.buffered_bytes < self.read_ahead_bytes
    }

    fn is_idle(&self) -> bool {
        self.busy.is_empty() && self.ready.is_empty()
    }

    fn push(&mut self, lane: Uuid, message: &OwnedMessage, envelope: Envelope) {
        let bytes = message.payload().map_or(0, <[u8]>::len) + 256;
        let (topic, partition, offset) = (message.topic().to_owned(), message.partition(), message.offset());
        self.add(Pending { lane, topic, partition, offset, bytes, envelope });
    }

    fn add(&mut self, pending: Pending) {
        let read = self.partitions.entry((pending.topic.clone(), pending.partition)).or_insert_with(|| (BTreeSet::new(), pending.offset));
        read.0.insert(pending.offset);
        read.1 = pending.offset + 1;
        self.buffered_bytes += pending.bytes;
        let lane = pending.lane;
        let queue = self.waiting.entry(lane).or_default();
        queue.push_back(pending);
        if queue.len() == 1 && !self.busy.contains(&lane) {
            self.ready.push_back(lane);
        }
    }

    /// A record that needs no reaction (it went to the dead-letter topic).
    fn skipped(&mut self, message: &OwnedMessage) {
        let read = self.partitions.entry((message.topic().to_owned(), message.partition())).or_insert_with(|| (BTreeSet::new(), 0));
        read.1 = read.1.max(message.offset() + 1);
    }

    fn start_next(&mut self) -> Option<Pending> {
        let lane = self.ready.pop_front()?;
        let pending = self.waiting.get_mut(&lane)?.pop_front()?;
        self.busy.insert(lane);
        Some(pending)
    }

    fn done(&mut self, pending: Pending) {
        self.buffered_bytes -= pending.bytes;
        if let Some(read) = self.partitions.get_mut(&(pending.topic, pending.partition)) {
            read.0.remove(&pending.offset);
        }
        self.busy.remove(&pending.lane);
        match self.waiting.get(&pending.lane) {
            Some(queue) if !queue.is_empty() => self.ready.push_back(pending.lane),
            _ => {
                self.waiting.remove(&pending.lane);
            }
        }
    }

    /// The partitions whose next offset to store moved since it was last stored, with it: the
    /// earliest offset read and not yet reacted to, or the one after the last read.
    fn moved(&mut self) -> Vec<(String, i32, i64)> {
        let mut moved = Vec::new();
        for ((topic, partition), (outstanding, after_read)) in &self.partitions {
            let next = outstanding.first().copied().unwrap_or(*after_read);
            if self.stored.get(&(topic.clone(), *partition)).is_none_or(|stored| *stored < next) {
                self.stored.insert((topic.clone(), *partition), next);
                moved.push((topic.clone(), *partition, next));
            }
        }
        moved
    }

    /// Stores (and commits) how far each partition got, where that moved.
    async fn store_offsets(&mut self, context: &Context, name: &str, consumer: &LiveConsumer) -> anyhow::Result<()> {
        let moved = self.moved();
        if moved.is_empty() {
            return Ok(());
        }
        let mut committed = TopicPartitionList::new();
        for (topic, partition, next) in &moved {
            // On an error the processor starts again from what was stored: delivered again, no more.
            store_offset(context, name, topic, *partition, *next).await?;
            committed.add_partition_offset(topic, *partition, Offset::Offset(*next))?;
        }
        consumer.commit(&committed);
        Ok(())
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

async fn store_offset(context: &Context, name: &str, topic: &str, partition: i32, next_offset: i64) -> anyhow::Result<()> {
    sqlx::query(
        "INSERT INTO projection_offsets (projection, topic, partition, next_offset) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (projection, topic, partition) DO UPDATE SET next_offset = GREATEST(projection_offsets.next_offset, EXCLUDED.next_offset), updated_at = now()",
    )
    .bind(name)
    .bind(topic)
    .bind(partition)
    .bind(next_offset)
    .execute(&context.pool)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending(lane: u128, partition: i32, offset: i64) -> Pending {
        let envelope: Envelope = serde_json::from_value(serde_json::json!({
            "id": Uuid::from_u128(offset as u128), "type": "test.happened", "schema_version": 1, "stream": "test-1",
            "stream_version": 1, "org_id": Uuid::from_u128(lane), "actor": "system:test", "occurred_at": "2026-12-02T00:00:00Z",
            "correlation_id": Uuid::nil(), "causation_id": null, "traceparent": null, "payload": {}
        }))
        .expect("an envelope");
        Pending { lane: Uuid::from_u128(lane), topic: "t".into(), partition, offset, bytes: 10, envelope }
    }

    fn offsets(pending: &[Pending]) -> Vec<i64> {
        pending.iter().map(|pending| pending.offset).collect()
    }

    #[test]
    fn organisations_take_turns_each_in_order() {
        let mut lanes = Lanes::new(2, 1 << 20);
        // Organisation 1 has a backlog; organisation 2's one event comes after it.
        for offset in 0..5 {
            lanes.add(pending(1, 0, offset));
        }
        lanes.add(pending(2, 0, 5));
        let first = lanes.start_next().expect("organisation 1");
        let second = lanes.start_next().expect("organisation 2, not behind the backlog");
        assert_eq!(offsets(&[first, second]).as_slice(), &[0, 5][..]);
        assert!(lanes.start_next().is_none(), "organisation 1's next waits for its first");
    }

    #[test]
    fn the_stored_offset_is_the_earliest_not_reacted_to() {
        let mut lanes = Lanes::new(4, 1 << 20);
        lanes.add(pending(1, 0, 10));
        lanes.add(pending(1, 0, 11));
        lanes.add(pending(2, 0, 12));
        lanes.add(pending(3, 1, 7));
        let one = lanes.start_next().expect("10");
        let two = lanes.start_next().expect("12");
        let three = lanes.start_next().expect("7");
        lanes.done(two);
        lanes.done(three);
        // 10 has not reacted yet: partition 0 stays at 10, partition 1 moves past 7.
        let mut moved = lanes.moved();
        moved.sort();
        assert_eq!(moved, vec![("t".to_string(), 0, 10), ("t".to_string(), 1, 8)]);
        lanes.done(one);
        let eleven = lanes.start_next().expect("organisation 1's second event");
        assert_eq!(eleven.offset, 11);
        assert_eq!(lanes.moved(), vec![("t".to_string(), 0, 11)]);
        lanes.done(eleven);
        assert!(lanes.is_idle());
        assert_eq!(lanes.moved(), vec![("t".to_string(), 0, 13)]);
        assert!(lanes.moved().is_empty(), "nothing moved, nothing to store");
    }

    #[test]
    fn reading_ahead_stops_at_the_byte_limit() {
        let mut lanes = Lanes::new(1, 25);
        lanes.add(pending(1, 0, 0));
        lanes.add(pending(1, 0, 1));
        assert!(lanes.has_room());
        lanes.add(pending(1, 0, 2));
        assert!(!lanes.has_room());
        let first = lanes.start_next().expect("first");
        lanes.done(first);
        assert!(lanes.has_room());
    }
}
