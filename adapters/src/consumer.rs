//! The skeleton every long-running worker of the log stands on — the relay, each projection, the
//! agent and the chat hub, and every processor after them — so that each writes only what it
//! does with an event:
//!
//! - [`supervise`] runs the work again after a failure, with backoff, until shutdown;
//! - [`lead`] does so as the one leader of a Postgres advisory lock ([`Leadership`]), which the
//!   work fences before each side effect;
//! - [`Assignment`] owns the partitions, assigned at the offsets stored with the work's effects
//!   and kept in step with the topics.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::Consumer;
use rdkafka::{Offset, TopicPartitionList};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::kafka::partitions_of;
use crate::metrics::metrics;
use crate::postgres::Leadership;

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

/// How often a consumer looks for partitions added to its topics.
pub const PARTITION_CHECK: Duration = Duration::from_secs(30);

/// The partitions a consumer owns, kept in step with its topics: a partition added to a topic is
/// assigned from its beginning (or its stored offset), and a stored offset beyond the end of the
/// log — the broker's log was reset or replaced, and what the read model holds is no longer on it
/// — raises an alarm (`aurora_consumer_log_resets_total` and an error log) rather than passing in
/// silence.
pub struct Assignment {
    consumer_name: String,
    partitions: std::collections::BTreeSet<(String, i32)>,
}

impl Assignment {
    pub fn new(consumer_name: &str) -> Self {
        Self { consumer_name: consumer_name.to_owned(), partitions: Default::default() }
    }

    pub fn count(&self) -> usize {
        self.partitions.len()
    }

    /// Assigns the partitions of `topics` not assigned yet, at the offsets stored for this consumer.
    pub async fn follow<C: Consumer>(&mut self, consumer: &C, topics: &[String], pool: &PgPool) -> anyhow::Result<()> {
        let mut added = Vec::new();
        for topic in topics {
            let partitions = tokio::task::block_in_place(|| partitions_of(consumer, topic, Duration::from_secs(10)))?;
            added.extend(partitions.into_iter().map(|partition| (topic.clone(), partition)).filter(|key| !self.partitions.contains(key)));
        }
        if added.is_empty() {
            return Ok(());
        }
        let stored: Vec<(String, i32, i64)> =
            sqlx::query_as("SELECT topic, partition, next_offset FROM projection_offsets WHERE projection = $1")
                .bind(&self.consumer_name)
                .fetch_all(pool)
                .await?;
        let mut assignment = TopicPartitionList::new();
        for (topic, partition) in &added {
            let stored_next = stored
                .iter()
                .find(|(stored_topic, stored_partition, _)| stored_topic == topic && stored_partition == partition)
                .map(|(_, _, next)| *next);
            if let Some(next) = stored_next.filter(|next| *next > 0) {
                // One watermark lookup per partition when it is first assigned, not per fetch.
                let (_, high) = tokio::task::block_in_place(|| consumer.fetch_watermarks(topic, *partition, Duration::from_secs(10)))?;
                if next > high {
                    metrics().consumer_log_resets.with_label_values(&[&self.consumer_name, topic]).inc();
                    tracing::error!(
                        consumer = %self.consumer_name, %topic, partition, stored_offset = next, log_end = high,
                        "the stored offset is beyond the end of the log: the broker's log was reset or replaced; \
                         records appended from now on are consumed from the stored offset, and a replay rebuilds from what the log holds"
                    );
                }
            }
            assignment.add_partition_offset(topic, *partition, stored_next.map_or(Offset::Beginning, Offset::Offset))?;
        }
        if self.partitions.is_empty() {
            consumer.assign(&assignment)?;
        } else {
            tracing::info!(consumer = %self.consumer_name, added = assignment.count(), "following partitions added to the topics");
            consumer.incremental_assign(&assignment)?;
        }
        self.partitions.extend(added);
        Ok(())
    }
}
