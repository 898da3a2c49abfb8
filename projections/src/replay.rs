//! Rebuilding a projection from offset zero into fresh tables, then swapping them in.
//!
//! The rebuild reads every partition from the beginning up to the high watermark it saw when it
//! started, into `<table>__rebuild` tables created `LIKE` the live ones, while the live tables keep
//! serving. The swap is one transaction: it locks the live tables (waiting for the live consumer's
//! batch in hand), catches the rebuild up to wherever the live consumer had got, renames the fresh
//! tables into place and sets the offsets, so the live consumer carries on from exactly there.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use aurora_adapters::kafka::{ensure_topics, partition_watermarks, standalone_consumer};
use aurora_adapters::Config;
use futures::FutureExt;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::{Offset, TopicPartitionList};
use sqlx::{PgConnection, PgPool, Row};

use crate::apply::apply_records;
use crate::runner::store_offsets;
use crate::{Projection, TableNames};

const REBUILD_SUFFIX: &str = "__rebuild";
const RETIRED_SUFFIX: &str = "__retired";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplayReport {
    pub events_applied: u64,
    pub poison_skipped: u64,
    pub elapsed: Duration,
}

type Positions = BTreeMap<(String, i32), i64>;

/// Whether a rebuild may start from a log that no longer holds its first records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PartialLog {
    /// Refuse: a read model rebuilt from part of the log would replace a good one with less.
    Refuse,
    /// Rebuild from what the log holds (`aurora replay --force`).
    Accept,
}

/// The log does not hold every record of the projection's topics any more.
#[derive(Debug, thiserror::Error)]
#[error(
    "the log no longer starts at offset 0 ({partitions}): records were deleted or compacted away, and a rebuild \
     would replace the read model with what is left; the live read model is kept. Pass --force to rebuild anyway"
)]
pub struct PartialLogRefused {
    pub partitions: String,
}

/// Where a rebuild tells how far it is: the CLI draws a progress bar, a benchmark ignores it.
pub trait Progress: Send + Sync {
    /// The rebuild of `what` starts, with `total` records to read.
    fn start(&self, what: &str, total: u64);
    /// `more` records to read than announced (caught up with the live consumer).
    fn grow(&self, more: u64);
    /// `done` more records were read.
    fn advance(&self, done: u64);
    fn finish(&self, what: &str);
}

/// Progress nobody follows.
pub struct Unobserved;

impl Progress for Unobserved {
    fn start(&self, _: &str, _: u64) {}
    fn grow(&self, _: u64) {}
    fn advance(&self, _: u64) {}
    fn finish(&self, _: &str) {}
}

pub async fn rebuild(
    projection: Arc<dyn Projection>,
    config: &Config,
    pool: &PgPool,
    progress: &dyn Progress,
    partial_log: PartialLog,
) -> anyhow::Result<ReplayReport> {
    let started = std::time::Instant::now();
    let name = projection.name();
    let topics = projection.topics(&config.kafka.topic_prefix);
    ensure_topics(config, &topics).await?;
    let probe = standalone_consumer(config)?;
    let mut watermarks = Vec::new();
    for topic in &topics {
        let marks = tokio::task::block_in_place(|| partition_watermarks(&probe, topic, Duration::from_secs(10)))?;
        watermarks.push((topic.clone(), marks));
    }
    let truncated: Vec<String> = watermarks
        .iter()
        .flat_map(|(topic, marks)| {
            marks.iter().filter(|(_, low, _)| *low > 0).map(move |(partition, low, _)| format!("{topic}/{partition} starts at {low}"))
        })
        .collect();
    if !truncated.is_empty() {
        if partial_log == PartialLog::Refuse {
            return Err(PartialLogRefused { partitions: truncated.join(", ") }.into());
        }
        tracing::warn!(projection = name, partitions = %truncated.join(", "), "rebuilding from a log that lost its first records, as forced");
    }
    let fresh_tables = TableNames::with_suffix(projection.tables(), REBUILD_SUFFIX);
    for table in projection.tables() {
        let fresh = fresh_tables.get(table);
        sqlx::query(&format!("DROP TABLE IF EXISTS {fresh}")).execute(pool).await?;
        sqlx::query(&format!("CREATE TABLE {fresh} (LIKE {table} INCLUDING ALL)")).execute(pool).await?;
    }

    // Where the log ends now: the rebuild reads up to here before it swaps.
    let mut targets = Positions::new();
    let mut positions = Positions::new();
    let mut assignment = TopicPartitionList::new();
    let mut total = 0u64;
    for (topic, marks) in watermarks {
        for (partition, low, high) in marks {
            targets.insert((topic.clone(), partition), high);
            positions.insert((topic.clone(), partition), low);
            assignment.add_partition_offset(&topic, partition, Offset::Offset(low))?;
            total += (high - low).max(0) as u64;
        }
    }
    progress.start(&format!("rebuilding {name}"), total);

    let consumer: StreamConsumer =
        aurora_adapters::kafka::consumer_config(config, &format!("{}aurora-replay-{name}", config.kafka.topic_prefix)).create()?;
    consumer.assign(&assignment)?;

    let mut report = ReplayReport { events_applied: 0, poison_skipped: 0, elapsed: Duration::ZERO };
    {
        let mut connection = pool.acquire().await?;
        consume_until(
            projection.as_ref(),
            config,
            &consumer,
            &mut connection,
            &fresh_tables,
            &targets,
            &mut positions,
            &mut report,
            progress,
        )
        .await?;
    }

    // The swap.
    let mut transaction = pool.begin().await?;
    for table in projection.tables() {
        sqlx::query(&format!("LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")).execute(&mut *transaction).await?;
    }
    let live_rows = sqlx::query("SELECT topic, partition, next_offset FROM projection_offsets WHERE projection = $1 FOR UPDATE")
        .bind(name)
        .fetch_all(&mut *transaction)
        .await?;
    let mut live = Positions::new();
    for row in &live_rows {
        live.insert((row.try_get("topic")?, row.try_get("partition")?), row.try_get("next_offset")?);
    }
    let catch_up: Positions = live
        .iter()
        .filter(|(key, offset)| positions.get(*key).is_some_and(|position| position < *offset))
        .map(|(key, offset)| (key.clone(), *offset))
        .collect();
    if !catch_up.is_empty() {
        progress.grow(catch_up.iter().map(|(key, offset)| (offset - positions[key]) as u64).sum());
        consume_until(
            projection.as_ref(),
            config,
            &consumer,
            &mut transaction,
            &fresh_tables,
            &catch_up,
            &mut positions,
            &mut report,
            progress,
        )
        .await?;
    }
    let mut final_offsets = live.clone();
    for (key, position) in &positions {
        let entry = final_offsets.entry(key.clone()).or_insert(0);
        *entry = (*entry).max(*position);
    }
    for table in projection.tables() {
        let fresh = fresh_tables.get(table);
        sqlx::query(&format!("ALTER TABLE {table} RENAME TO {table}{RETIRED_SUFFIX}")).execute(&mut *transaction).await?;
        sqlx::query(&format!("ALTER TABLE {fresh} RENAME TO {table}")).execute(&mut *transaction).await?;
        sqlx::query(&format!("DROP TABLE {table}{RETIRED_SUFFIX}")).execute(&mut *transaction).await?;
        // A table made `LIKE` another has neither its row-level policy nor its grants.
        sqlx::query("SELECT aurora_expose_to_tenants($1::regclass)").bind(*table).execute(&mut *transaction).await?;
    }
    store_offsets(&mut transaction, name, &final_offsets).await?;
    transaction.commit().await?;
    progress.finish(&format!("{name} rebuilt"));
    report.elapsed = started.elapsed();
    Ok(report)
}

/// Consumes from the assigned partitions and applies to `tables` until every partition in
/// `targets` reached its target offset.
#[allow(clippy::too_many_arguments)]
async fn consume_until(
    projection: &dyn Projection,
    config: &Config,
    consumer: &StreamConsumer,
    connection: &mut PgConnection,
    tables: &TableNames,
    targets: &Positions,
    positions: &mut Positions,
    report: &mut ReplayReport,
    progress: &dyn Progress,
) -> anyhow::Result<()> {
    let reached = |positions: &Positions| targets.iter().all(|(key, target)| positions.get(key).is_some_and(|position| position >= target));
    while !reached(positions) {
        let first = tokio::time::timeout(Duration::from_secs(30), consumer.recv())
            .await
            .map_err(|_| anyhow::anyhow!("no record arrived for 30 s while replaying {}", projection.name()))??;
        let mut batch: Vec<OwnedMessage> = vec![first.detach()];
        while batch.len() < config.log.projection_batch {
            match consumer.recv().now_or_never() {
                Some(Ok(message)) => batch.push(message.detach()),
                Some(Err(error)) => return Err(error.into()),
                None => break,
            }
        }
        let wanted: Vec<&OwnedMessage> = batch
            .iter()
            .filter(|message| {
                let key = (message.topic().to_owned(), message.partition());
                positions.get(&key).is_none_or(|position| message.offset() >= *position)
            })
            .collect();
        let mut transaction_guard = sqlx::Connection::begin(&mut *connection).await?;
        let poison = apply_records(projection, &mut transaction_guard, tables, &wanted).await?;
        transaction_guard.commit().await?;
        for poison in &poison {
            tracing::warn!(projection = projection.name(), offset = poison.message.offset(), error = %poison.error, "replay skipped a poison record");
        }
        report.poison_skipped += poison.len() as u64;
        report.events_applied += (wanted.len() - poison.len()) as u64;
        for message in &wanted {
            positions.insert((message.topic().to_owned(), message.partition()), message.offset() + 1);
        }
        progress.advance(wanted.len() as u64);
    }
    Ok(())
}
