//! Pieces every consumer of the log shares (the relay's counterpart on the reading side): the
//! partitions it owns, assigned at the offsets stored with its effects and kept in step with its
//! topics. Ownership itself is [`crate::postgres::Leadership`].

use std::time::Duration;

use rdkafka::consumer::Consumer;
use rdkafka::{Offset, TopicPartitionList};
use sqlx::PgPool;

use crate::kafka::partitions_of;
use crate::metrics::metrics;

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
