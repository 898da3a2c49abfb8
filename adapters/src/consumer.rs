//! The skeleton every long-running worker of the log stands on — the relay, each projection, the
//! agent and the chat hub, and every processor after them — so that each writes only what it
//! does with an event:
//!
//! - [`supervise`] runs the work again after a failure, with backoff, until shutdown;
//! - [`lead`] does so as the one leader of a Postgres advisory lock ([`Leadership`]), which the
//!   work fences before each side effect;
//! - [`LiveConsumer`] reads the topics: it assigns their partitions at the offsets stored with
//!   the work's effects and keeps in step with them, and it rests — no fetch open on the broker —
//!   while its topics are quiet, until an announcement ([`crate::wakeup`]) wakes it. Or, where
//!   the broker's consumer groups can be trusted ([`crate::config::Ownership::Group`]), it joins
//!   a group whose members share the partitions, each read from the offset stored in Postgres.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::FutureExt;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::ClientContext;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use sqlx::PgPool;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::config::Ownership;
use crate::kafka::partitions_of;
use crate::metrics::metrics;
use crate::postgres::{Leadership, LeadershipLost};
use crate::wakeup::{LogSignals, Signal};

const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// A run that lasted this long was healthy: the next failure starts the backoff over.
const HEALTHY_RUN: Duration = Duration::from_secs(60);

/// Runs `work` until it returns `Ok` or `shutdown` is cancelled. A failure (the broker or the
/// database away, leadership lost) is logged and `work` runs again after a backoff that doubles
/// from 100 ms up to 5 s.
pub async fn supervise<F, Fut>(worker: &str, shutdown: &CancellationToken, mut work: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let mut backoff = FIRST_BACKOFF;
    while !shutdown.is_cancelled() {
        let started = Instant::now();
        let Err(error) = work().await else { break };
        if started.elapsed() >= HEALTHY_RUN {
            backoff = FIRST_BACKOFF;
        }
        tracing::warn!(worker, error = %format!("{error:#}"), retry_in_ms = backoff.as_millis() as u64, "worker interrupted; retrying");
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
    tracing::info!(worker, "worker stopped");
}

/// [`supervise`]s `work` as the one leader of `lock` among every process of the deployment: waits
/// for the lock (a hot standby), runs `work` with the [`Leadership`], which it must
/// [`fence`](Leadership::fence) before each side effect, and gives the lock up when `work` ends.
/// A lost leadership is a failure like any other: the work stops and waits for the lock again.
pub async fn lead<F, Fut>(worker: &str, pool: &PgPool, lock: &str, shutdown: &CancellationToken, work: F)
where
    F: Fn(Arc<Leadership>) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let work = &work;
    supervise(worker, shutdown, move || async move {
        let Some(leadership) = Leadership::acquire(pool, lock, shutdown).await? else { return Ok(()) };
        let leadership = Arc::new(leadership);
        let outcome = work(leadership.clone()).await;
        match Arc::try_unwrap(leadership) {
            Ok(leadership) => leadership.release().await,
            // Something the work spawned still holds it; the lock goes with the last of them.
            Err(_) => tracing::debug!(worker, "leadership still shared at the end of the work"),
        }
        outcome
    })
    .await
}

/// Runs `work` with the ownership the deployment chose: as the one leader of `lock` ([`lead`]),
/// handing it the [`Leadership`] to fence with, or as one member of a consumer group
/// ([`supervise`]), handing it none (the group decides who reads what; see [`LiveConsumer::for_owner`]).
pub async fn own<F, Fut>(worker: &str, ownership: Ownership, pool: &PgPool, lock: &str, shutdown: &CancellationToken, work: F)
where
    F: Fn(Option<Arc<Leadership>>) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    match ownership {
        Ownership::Lock => lead(worker, pool, lock, shutdown, |leadership| work(Some(leadership))).await,
        Ownership::Group => supervise(worker, shutdown, || work(None)).await,
    }
}

/// Checks, right before a side effect, that a leader still leads; a group member has no lock to
/// check.
pub async fn fence_leader(leadership: Option<&Arc<Leadership>>) -> Result<(), LeadershipLost> {
    match leadership {
        Some(leadership) => leadership.fence().await,
        None => Ok(()),
    }
}

/// How often an awake consumer looks for partitions added to its topics.
pub const PARTITION_CHECK: Duration = Duration::from_secs(30);

/// A consumer whose topics gave it nothing for this long rests: it closes its fetch on the
/// broker until an announcement of its topics wakes it. Long enough that a conversation's pauses
/// do not make it close and open clients over and over (each costs the broker connections and
/// metadata requests), short enough that a quiet installation costs nothing within seconds.
pub const REST_AFTER: Duration = Duration::from_secs(5);

/// A resting consumer wakes at least this often, for records that no announcement told it about
/// (a producer outside Aurora, say).
pub const RESTING_CHECK: Duration = Duration::from_secs(60);

/// Where a consumer begins reading each partition.
pub enum Start {
    /// At the offset stored for the consumer in `projection_offsets`, with its effects; at the
    /// beginning when none is stored.
    Stored(PgPool),
    /// At the end the partitions have when the consumer opens: what is said from now on.
    /// Partitions added to the topics later are read from their beginning.
    End,
}

/// A Kafka consumer that costs nothing while its topics are quiet. Fetching is what costs: a
/// broker such as Tansu 0.6 answers an empty fetch only when its wait is over, so a consumer that
/// keeps a short fetch open for low latency keeps the broker busy. This one fetches with a short
/// wait while records come, rests — closes its client, keeping its positions — once it has read
/// every partition to its end and [`REST_AFTER`] passed without a record, and wakes when a
/// producer announces records on one of its topics ([`crate::wakeup::Announcer`]); a listener
/// reconnect or [`RESTING_CHECK`] makes it look, and rest again when there is nothing to read.
///
/// It owns the partitions of its topics: assigned at the offsets of its [`Start`] and kept in
/// step with the topics (a partition added later is followed). A stored offset beyond the end of
/// the log — the broker's log was reset or replaced, and what the read model holds is no longer
/// on it — raises an alarm (`aurora_consumer_log_resets_total` and an error log) rather than
/// passing in silence.
pub struct LiveConsumer {
    name: String,
    settings: ClientConfig,
    topics: Vec<String>,
    start: Start,
    /// Where each partition is read from next.
    next: BTreeMap<(String, i32), Offset>,
    consumer: Option<StreamConsumer<Rebalancing>>,
    /// What the group gave and took, for a member of a consumer group.
    group: Option<Arc<Rebalances>>,
    /// The partitions read now, for the fences of work on them.
    held: Held,
    signals: broadcast::Receiver<Signal>,
    /// When an awake consumer looks at whether it may rest.
    rest_at: Instant,
    resting_since: Instant,
    partitions_checked: Instant,
}

/// What an awake consumer does next.
enum Next {
    Record(OwnedMessage),
    Failed(KafkaError),
    Rest,
    CheckPartitions,
}

impl LiveConsumer {
    /// A consumer named `name` (the name its offsets are stored under) of `topics`, created with
    /// `settings` whenever it wakes, assigned every partition of the topics now.
    pub async fn open(name: &str, settings: ClientConfig, topics: &[String], start: Start, signals: &LogSignals) -> anyhow::Result<Self> {
        let consumer = settings.create_with_context(Rebalancing::default())?;
        let mut live = Self::with_client(name, settings, consumer, None, topics, start, signals);
        // A topic just created may not list its partitions for a moment.
        for _ in 0..50 {
            live.follow().await?;
            if live.topics.iter().all(|topic| live.next.keys().any(|(assigned, _)| assigned == topic)) {
                return Ok(live);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        anyhow::bail!("consumer {name}: the topics {:?} list no partitions", live.topics)
    }

    /// A member named `name` of the consumer group of `settings` over `topics`: the group's
    /// coordinator shares the partitions among the members and moves them when members come and
    /// go; this member reads each partition it is given from the offset stored for `name` in
    /// `projection_offsets` (the beginning when none is), never from the group's own offsets.
    /// A member does not rest: leaving the group would move its partitions at every rest, and
    /// the brokers that groups are meant for answer a waiting fetch as soon as records come.
    pub async fn join_group(
        name: &str,
        settings: ClientConfig,
        topics: &[String],
        pool: PgPool,
        signals: &LogSignals,
    ) -> anyhow::Result<Self> {
        let rebalances = Arc::new(Rebalances::default());
        let consumer: StreamConsumer<Rebalancing> = settings.create_with_context(Rebalancing(Some(rebalances.clone())))?;
        let subscribed: Vec<&str> = topics.iter().map(String::as_str).collect();
        consumer.subscribe(&subscribed)?;
        Ok(Self::with_client(name, settings, consumer, Some(rebalances), topics, Start::Stored(pool), signals))
    }

    /// The consumer of work that [`own`] runs: every partition, for the leader; the group's
    /// share, for a member.
    pub async fn for_owner(
        leadership: Option<&Arc<Leadership>>,
        name: &str,
        settings: ClientConfig,
        topics: &[String],
        pool: PgPool,
        signals: &LogSignals,
    ) -> anyhow::Result<Self> {
        match leadership {
            Some(_) => Self::open(name, settings, topics, Start::Stored(pool), signals).await,
            None => Self::join_group(name, settings, topics, pool, signals).await,
        }
    }

    fn with_client(
        name: &str,
        settings: ClientConfig,
        consumer: StreamConsumer<Rebalancing>,
        group: Option<Arc<Rebalances>>,
        topics: &[String],
        start: Start,
        signals: &LogSignals,
    ) -> Self {
        let now = Instant::now();
        Self {
            name: name.to_owned(),
            topics: topics.to_vec(),
            consumer: Some(consumer),
            group,
            held: Held::default(),
            settings,
            start,
            next: BTreeMap::new(),
            signals: signals.subscribe(),
            rest_at: now + REST_AFTER,
            resting_since: now,
            partitions_checked: now,
        }
    }

    /// The offsets stored for this consumer, by topic and partition.
    async fn stored_offsets(&self) -> anyhow::Result<BTreeMap<(String, i32), i64>> {
        let Start::Stored(pool) = &self.start else { return Ok(BTreeMap::new()) };
        let stored: Vec<(String, i32, i64)> =
            sqlx::query_as("SELECT topic, partition, next_offset FROM projection_offsets WHERE projection = $1")
                .bind(&self.name)
                .fetch_all(pool)
                .await?;
        Ok(stored.into_iter().map(|(topic, partition, next)| ((topic, partition), next)).collect())
    }

    /// The number of partitions assigned.
    pub fn partition_count(&self) -> usize {
        self.next.len()
    }

    /// The partitions assigned now.
    pub fn partitions(&self) -> Vec<(String, i32)> {
        self.next.keys().cloned().collect()
    }

    /// The partitions this consumer reads, kept current as rebalances move them: what a
    /// [`Fence::Partition`] checks.
    pub fn held(&self) -> Held {
        self.held.clone()
    }

    /// Makes the partitions read now known to fences and to `/metrics`.
    fn publish_partitions(&self) {
        *self.held.0.lock().expect("held lock") = self.next.keys().cloned().collect();
        metrics().consumer_partitions.with_label_values(&[&self.name]).set(self.next.len() as i64);
    }

    /// The next record of the topics, waiting (at rest when they stay quiet) until there is one.
    /// Cancel-safe: a record is lost by no cancelled call.
    pub async fn recv(&mut self) -> anyhow::Result<OwnedMessage> {
        if let Some(group) = self.group.clone() {
            return self.recv_as_member(&group).await;
        }
        loop {
            let Some(consumer) = &self.consumer else {
                let check = tokio::time::Instant::from_std(self.resting_since + RESTING_CHECK);
                // Announced: records are there. Otherwise (a listener that reconnected or lagged,
                // the periodic check) there may be: look, and rest again at once if there are none.
                let wake = tokio::select! {
                    signal = self.signals.recv() => match signal {
                        Ok(Signal::All) | Err(broadcast::error::RecvError::Lagged(_)) => Some(false),
                        Ok(signal) => signal.concerns(&self.topics).then_some(true),
                        // The listener stopped: the process is shutting down.
                        Err(broadcast::error::RecvError::Closed) => {
                            tokio::time::sleep_until(check).await;
                            Some(false)
                        }
                    },
                    _ = tokio::time::sleep_until(check) => Some(false),
                };
                let Some(announced) = wake else { continue };
                self.wake().await?;
                if !announced && self.caught_up() {
                    self.rest();
                }
                continue;
            };
            let rest_at = tokio::time::Instant::from_std(self.rest_at);
            let check_at = tokio::time::Instant::from_std(self.partitions_checked + PARTITION_CHECK);
            let next = tokio::select! {
                received = consumer.recv() => match received {
                    Ok(message) => Next::Record(message.detach()),
                    Err(error) => Next::Failed(error),
                },
                _ = tokio::time::sleep_until(rest_at) => Next::Rest,
                _ = tokio::time::sleep_until(check_at) => Next::CheckPartitions,
            };
            match next {
                Next::Record(message) => return Ok(self.received(message)),
                Next::Failed(error) => return Err(error.into()),
                // Quiet is not enough: a consumer still catching up (its first fetch slow, say)
                // would rest with records before it that nobody will announce again.
                Next::Rest if self.caught_up() => self.rest(),
                Next::Rest => self.rest_at = Instant::now() + REST_AFTER,
                Next::CheckPartitions => self.follow().await?,
            }
        }
    }

    /// [`Self::recv`] for a member of a consumer group: partitions given by a rebalance are
    /// moved to their stored offsets before anything is read from them.
    async fn recv_as_member(&mut self, group: &Rebalances) -> anyhow::Result<OwnedMessage> {
        loop {
            self.settle(group).await?;
            let consumer = self.consumer.as_ref().expect("a group member does not rest");
            tokio::select! {
                received = consumer.recv() => {
                    let message = received?.detach();
                    if self.is_current(&message) {
                        return Ok(self.received(message));
                    }
                }
                _ = group.changed.notified() => {}
            }
        }
    }

    /// Takes in what rebalances gave and took: a partition given (paused by the rebalance) is
    /// assigned again at the offset stored for it, and resumed; a partition taken is forgotten.
    /// (A partition just given cannot be sought yet: its fetcher has not started; assigning anew
    /// with explicit offsets is what librdkafka allows at any time.) Cancel-safe: the changes are
    /// taken only after the one wait, for the stored offsets.
    async fn settle(&mut self, group: &Rebalances) -> anyhow::Result<()> {
        let pending = group.changes.lock().expect("rebalances lock").len();
        if pending == 0 {
            return Ok(());
        }
        let stored = self.stored_offsets().await?;
        let changes: Vec<(bool, (String, i32))> = group.changes.lock().expect("rebalances lock").drain(..pending).collect();
        let mut given: Vec<(String, i32)> = Vec::new();
        for (is_given, key) in changes {
            given.retain(|known| *known != key);
            self.next.remove(&key);
            if is_given {
                given.push(key);
            }
        }
        for key in &given {
            self.next.insert(key.clone(), stored.get(key).map_or(Offset::Beginning, |next| Offset::Offset(*next)));
        }
        self.publish_partitions();
        if given.is_empty() {
            return Ok(());
        }
        let mut positions = TopicPartitionList::new();
        for ((topic, partition), offset) in &self.next {
            positions.add_partition_offset(topic, *partition, *offset)?;
        }
        let consumer = self.consumer.as_ref().expect("a group member does not rest");
        let assigned = consumer.assign(&positions).and_then(|()| consumer.resume(&positions));
        if let Err(error) = assigned {
            // Given still: taken in at the next call.
            for key in &given {
                self.next.remove(key);
            }
            self.publish_partitions();
            group.changes.lock().expect("rebalances lock").splice(0..0, given.into_iter().map(|key| (true, key)));
            return Err(error.into());
        }
        tracing::info!(consumer = %self.name, given = given.len(), "partitions given by the group; reading them from the stored offsets");
        Ok(())
    }

    /// Whether `message` is of a partition this member reads, at or after where it reads it.
    fn is_current(&self, message: &OwnedMessage) -> bool {
        match self.next.get(&(message.topic().to_owned(), message.partition())) {
            Some(Offset::Offset(next)) => message.offset() >= *next,
            Some(_) => true,
            None => false,
        }
    }

    /// The next record if one is at hand now, without waiting.
    pub fn try_recv(&mut self) -> Option<anyhow::Result<OwnedMessage>> {
        loop {
            let message = match self.consumer.as_ref()?.recv().now_or_never()? {
                Ok(message) => message.detach(),
                Err(error) => return Some(Err(error.into())),
            };
            // A member's partitions given since the last settle wait for it.
            if self.group.is_none() || self.is_current(&message) {
                return Some(Ok(self.received(message)));
            }
        }
    }

    /// Commits `offsets` to the consumer group, for Kafka's tools to show progress (the offsets
    /// that count are stored with the effects); skipped while resting.
    pub fn commit(&self, offsets: &TopicPartitionList) {
        let Some(consumer) = &self.consumer else { return };
        if let Err(error) = consumer.commit(offsets, CommitMode::Async) {
            tracing::debug!(consumer = %self.name, %error, "committing group offsets failed");
        }
    }

    fn received(&mut self, message: OwnedMessage) -> OwnedMessage {
        self.next.insert((message.topic().to_owned(), message.partition()), Offset::Offset(message.offset() + 1));
        self.rest_at = Instant::now() + REST_AFTER;
        // Announcements that came while records were flowing are answered by this fetch.
        while matches!(self.signals.try_recv(), Ok(_) | Err(broadcast::error::TryRecvError::Lagged(_))) {}
        message
    }

    /// Whether every partition has been read to its end (as the broker tells now).
    fn caught_up(&self) -> bool {
        let Some(consumer) = &self.consumer else { return true };
        self.next.iter().all(|((topic, partition), next)| {
            match tokio::task::block_in_place(|| consumer.fetch_watermarks(topic, *partition, Duration::from_secs(5))) {
                // (Tansu's in-memory engine reports ends below what it served, so a position
                // beyond the end counts as caught up.)
                Ok((low, high)) => match next {
                    Offset::Offset(next) => *next >= high,
                    _ => low >= high,
                },
                Err(error) => {
                    tracing::debug!(consumer = %self.name, %error, "reading the end of the log failed; staying awake");
                    false
                }
            }
        })
    }

    fn rest(&mut self) {
        tracing::trace!(consumer = %self.name, "topics quiet; resting");
        metrics().consumer_resting.with_label_values(&[&self.name]).set(1);
        self.resting_since = Instant::now();
        if let Some(consumer) = self.consumer.take() {
            // Closing a client waits for its threads: not on a runtime thread.
            tokio::task::spawn_blocking(move || drop(consumer));
        }
    }

    async fn wake(&mut self) -> anyhow::Result<()> {
        tracing::trace!(consumer = %self.name, "woken");
        metrics().consumer_wakeups.with_label_values(&[&self.name]).inc();
        metrics().consumer_resting.with_label_values(&[&self.name]).set(0);
        let consumer: StreamConsumer<Rebalancing> = self.settings.create_with_context(Rebalancing::default())?;
        let mut assignment = TopicPartitionList::new();
        for ((topic, partition), offset) in &self.next {
            assignment.add_partition_offset(topic, *partition, *offset)?;
        }
        consumer.assign(&assignment)?;
        self.consumer = Some(consumer);
        self.rest_at = Instant::now() + REST_AFTER;
        if self.partitions_checked.elapsed() >= PARTITION_CHECK {
            self.follow().await?;
        }
        Ok(())
    }

    /// Assigns the partitions of the topics not assigned yet, at the offsets of the [`Start`].
    async fn follow(&mut self) -> anyhow::Result<()> {
        self.partitions_checked = Instant::now();
        let Some(consumer) = &self.consumer else { return Ok(()) };
        let mut added = Vec::new();
        for topic in &self.topics {
            let partitions = tokio::task::block_in_place(|| partitions_of(consumer, topic, Duration::from_secs(10)))?;
            added.extend(partitions.into_iter().map(|partition| (topic.clone(), partition)).filter(|key| !self.next.contains_key(key)));
        }
        if added.is_empty() {
            return Ok(());
        }
        let first = self.next.is_empty();
        let stored = self.stored_offsets().await?;
        let mut assignment = TopicPartitionList::new();
        for (topic, partition) in added {
            let offset = match self.start {
                Start::Stored(_) => {
                    let stored_next = stored.get(&(topic.clone(), partition)).copied();
                    if let Some(next) = stored_next.filter(|next| *next > 0) {
                        // One watermark lookup per partition when it is first assigned, not per fetch.
                        let (_, high) =
                            tokio::task::block_in_place(|| consumer.fetch_watermarks(&topic, partition, Duration::from_secs(10)))?;
                        if next > high {
                            metrics().consumer_log_resets.with_label_values(&[&self.name, &topic]).inc();
                            tracing::error!(
                                consumer = %self.name, %topic, partition, stored_offset = next, log_end = high,
                                "the stored offset is beyond the end of the log: the broker's log was reset or replaced; \
                                 the log is read again from its beginning, records below the stored offset are taken as applied, \
                                 and a replay rebuilds the read model from what the log holds"
                            );
                        }
                    }
                    stored_next.map_or(Offset::Beginning, Offset::Offset)
                }
                // The end as a number, not `Offset::End`, which would be resolved later, at the first fetch.
                Start::End if first => {
                    let (_, high) = tokio::task::block_in_place(|| consumer.fetch_watermarks(&topic, partition, Duration::from_secs(10)))?;
                    Offset::Offset(high)
                }
                Start::End => Offset::Beginning,
            };
            assignment.add_partition_offset(&topic, partition, offset)?;
            self.next.insert((topic, partition), offset);
        }
        if first {
            consumer.assign(&assignment)?;
        } else {
            tracing::info!(consumer = %self.name, added = assignment.count(), "following partitions added to the topics");
            consumer.incremental_assign(&assignment)?;
        }
        self.publish_partitions();
        Ok(())
    }
}

/// Partitions rebalances gave this member (`true`) or took from it, in order, not yet taken in
/// by the consumer.
#[derive(Default)]
struct Rebalances {
    changes: Mutex<Vec<(bool, (String, i32))>>,
    changed: tokio::sync::Notify,
}

/// The context of every live consumer; a group member's hears its rebalances.
#[derive(Default)]
pub struct Rebalancing(Option<Arc<Rebalances>>);

impl ClientContext for Rebalancing {}

impl ConsumerContext for Rebalancing {
    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Some(rebalances) = &self.0 else { return };
        let changes = |given: bool, partitions: &TopicPartitionList| -> Vec<(bool, (String, i32))> {
            partitions.elements().iter().map(|element| (given, (element.topic().to_owned(), element.partition()))).collect()
        };
        match rebalance {
            Rebalance::Assign(partitions) => {
                // Nothing is read from a partition given before it is moved to its stored offset.
                if let Err(error) = consumer.pause(partitions) {
                    tracing::warn!(%error, "pausing partitions given by the group failed; records below the stored offsets are skipped");
                }
                rebalances.changes.lock().expect("rebalances lock").extend(changes(true, partitions));
            }
            Rebalance::Revoke(partitions) => rebalances.changes.lock().expect("rebalances lock").extend(changes(false, partitions)),
            Rebalance::Error(error) => tracing::warn!(%error, "consumer group rebalance failed"),
        }
        rebalances.changed.notify_one();
    }
}

/// The partitions a consumer reads now (see [`LiveConsumer::held`]).
#[derive(Clone, Default)]
pub struct Held(Arc<Mutex<BTreeSet<(String, i32)>>>);

impl Held {
    pub fn contains(&self, topic: &str, partition: i32) -> bool {
        self.0.lock().expect("held lock").contains(&(topic.to_owned(), partition))
    }
}

/// What work checks right before each side effect, so that an instance that no longer owns the
/// work stops before doing it twice beside the instance that owns it now.
#[derive(Clone)]
pub enum Fence {
    /// The work's leader still holds its lock.
    Leader(Arc<Leadership>),
    /// A consumer-group member still reads the partition the work came from.
    Partition { held: Held, topic: String, partition: i32 },
}

impl Fence {
    pub async fn check(&self) -> Result<(), LeadershipLost> {
        match self {
            Fence::Leader(leadership) => leadership.fence().await,
            Fence::Partition { held, topic, partition } if held.contains(topic, *partition) => Ok(()),
            Fence::Partition { topic, partition, .. } => Err(LeadershipLost(format!("{topic}[{partition}]"))),
        }
    }
}
