//! The event store on Postgres: one round trip per append, and group commit for appends that
//! arrive while others are being written.
//!
//! An append with no command id joins a queue. One writer takes the queue's appends (at most
//! [`MAX_BATCH`], of distinct streams) and writes them in one statement: one transaction, one
//! WAL flush, one round trip for all of them. At rest an append is alone in its batch and written at once; under load the ones
//! that arrive while a batch is written share the next commit. Each append keeps its own version
//! check: one that conflicts inserts nothing, fails alone and learns the stream's version from
//! the same answer. When a batch's statement fails as a whole (an append outside the queue, of
//! another process or with a command id, took one of its streams first; or the database is
//! away), each of its appends is written again alone, with the single statement.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use aurora_adapters::postgres::is_transient;
use aurora_events::{Envelope, StreamId};
use sqlx::postgres::PgRow;
use sqlx::{PgPool, Row};
use tokio::sync::oneshot;
use uuid::Uuid;

use crate::store::{AppendRequest, AppendResult, EventStore, StoreError};

const VERSION_MISMATCH: &str = "AU409";
const COMMAND_IN_FLIGHT: &str = "AU208";

/// An append of events with no command id to record. `$3` (the command id) must be NULL here.
const APPEND_WITHOUT_COMMAND: &str = "WITH inserted AS ( \
     INSERT INTO events (event_id, stream, stream_version, event_type, schema_version, org_id, actor, \
                         occurred_at, correlation_id, causation_id, traceparent, payload) \
     SELECT u.event_id, $1, current.version + u.ordinality, u.event_type, u.schema_version, $8, $9, $10, \
            $11, $12, $13, u.payload \
     FROM (SELECT coalesce(max(stream_version), 0) AS version FROM events WHERE stream = $1) AS current, \
          unnest($4::uuid[], $5::text[], $6::int[], $7::jsonb[]) \
            WITH ORDINALITY AS u(event_id, event_type, schema_version, payload, ordinality) \
     WHERE ($2 < 0 OR current.version = $2) AND $3::uuid IS NULL \
     RETURNING stream_version) \
   SELECT min(stream_version) AS first_version, max(stream_version) AS last_version, \
          $4::uuid[] AS event_ids, false AS duplicate FROM inserted";

/// Appends of distinct streams in one statement: every event's columns as arrays, with the index
/// of its append, its stream, the append's expected version and its place in the append. An
/// append whose stream is not at its expected version inserts nothing; the answer has a row per
/// append: the stream's version before the statement, and the first and last versions it
/// inserted (null when it inserted nothing).
const APPEND_BATCH: &str = "WITH input AS ( \
     SELECT * FROM unnest($1::int[], $2::text[], $3::bigint[], $4::uuid[], $5::text[], $6::int[], $7::jsonb[], $8::uuid[], \
                          $9::text[], $10::timestamptz[], $11::uuid[], $12::uuid[], $13::text[], $14::int[]) \
       AS i(request, stream, expected, event_id, event_type, schema_version, payload, org_id, actor, occurred_at, \
            correlation_id, causation_id, traceparent, ordinal)), \
   current AS ( \
     SELECT s.stream, (SELECT coalesce(max(e.stream_version), 0) FROM events e WHERE e.stream = s.stream) AS version \
     FROM (SELECT DISTINCT stream FROM input) AS s), \
   inserted AS ( \
     INSERT INTO events (event_id, stream, stream_version, event_type, schema_version, org_id, actor, \
                         occurred_at, correlation_id, causation_id, traceparent, payload) \
     SELECT i.event_id, i.stream, c.version + i.ordinal, i.event_type, i.schema_version, i.org_id, i.actor, \
            i.occurred_at, i.correlation_id, i.causation_id, i.traceparent, i.payload \
     FROM input i JOIN current c ON c.stream = i.stream \
     WHERE i.expected < 0 OR c.version = i.expected \
     ORDER BY i.request, i.ordinal \
     RETURNING stream, stream_version) \
   SELECT r.request, r.version AS current_version, min(ins.stream_version) AS first_version, \
          max(ins.stream_version) AS last_version \
   FROM (SELECT DISTINCT i.request, i.stream, c.version FROM input i JOIN current c ON c.stream = i.stream) AS r \
   LEFT JOIN inserted ins ON ins.stream = r.stream GROUP BY r.request, r.version";

/// Appends in one batch at most.
const MAX_BATCH: usize = 128;

/// An append that also records its command id (see migrations/0004).
const APPEND_WITH_COMMAND: &str = "SELECT first_version, last_version, event_ids, duplicate \
     FROM aurora_append($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)";
const UNIQUE_VIOLATION: &str = "23505";
const STREAM_VERSION_CONSTRAINT: &str = "events_stream_version_unique";

#[derive(Clone)]
pub struct PostgresEventStore {
    pool: PgPool,
    queue: Arc<Mutex<Queue>>,
}

/// Appends waiting for a batch, the writers at work, and the streams their batches hold.
#[derive(Default)]
struct Queue {
    waiting: Vec<Pending>,
    writers: usize,
    in_flight: HashSet<StreamId>,
}

/// Batches written at once at most. One writer made every append wait for the batch before it:
/// four appenders, each waiting for its append, got 31 - 36 % of four connections' raw INSERTs
/// (`aurora bench backbone`). Four writers, a batch of one written with the plain INSERT: 64 - 77 %,
/// whole commands 52 - 70 %. Under many senders the batches stay large (gateway alone, `aurora
/// bench incidents --gateway-only`: 6 325 - 6 849 webhooks/s, p99 16.3 - 17.6 ms, against 7 478 -
/// 7 728/s, p99 16.0 - 16.5 ms with one writer).
const WRITERS: usize = 4;

/// An append in the queue, and where its batch's answer goes.
struct Pending {
    request: AppendRequest,
    columns: AppendColumns,
    reply: oneshot::Sender<BatchAnswer>,
}

/// What a batch's statement did with one append.
#[derive(Clone, Copy)]
enum Written {
    Appended {
        first: i64,
        last: i64,
    },
    /// The stream was at `actual`, not the expected version: nothing was inserted.
    Conflict {
        actual: i64,
    },
}

/// What became of an append in a batch (none: the statement's answer had no row for it), or the
/// append back, to go alone when the batch failed as a whole.
type BatchAnswer = Result<Option<Written>, (AppendRequest, AppendColumns)>;

impl Pending {
    fn answer(self, written: Option<Written>) {
        let _ = self.reply.send(Ok(written));
    }

    /// Gives the append back to its caller, to write alone.
    fn alone(self) {
        let _ = self.reply.send(Err((self.request, self.columns)));
    }
}

impl PostgresEventStore {
    pub fn new(pool: PgPool) -> Self {
        Self { pool, queue: Arc::default() }
    }

    fn queue(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Writes the queue's appends, a batch at a time, until the queue holds none it may take: one
    /// of at most [`WRITERS`]. Postgres's cost is mostly per statement and per commit, so appends
    /// that arrive while the writers are at work wait for the next batch rather than take a
    /// connection and a commit of their own. No two batches hold one stream: a redelivery that
    /// arrives while its original is written waits for the batch after it.
    async fn write_batches(self) {
        loop {
            let (batch, streams) = {
                let mut queue = self.queue();
                let (mut batch, mut streams) = (Vec::new(), HashSet::new());
                let mut index = 0;
                while index < queue.waiting.len() && batch.len() < MAX_BATCH {
                    let stream = &queue.waiting[index].request.stream;
                    if !queue.in_flight.contains(stream) && streams.insert(stream.clone()) {
                        batch.push(queue.waiting.remove(index));
                    } else {
                        index += 1;
                    }
                }
                if batch.is_empty() {
                    queue.writers -= 1;
                    return;
                }
                queue.in_flight.extend(streams.iter().cloned());
                (batch, streams)
            };
            self.write_batch(batch).await;
            let mut queue = self.queue();
            for stream in &streams {
                queue.in_flight.remove(stream);
            }
        }
    }

    /// Writes a batch of one append with the plain INSERT, cheaper to plan than the batch's
    /// statement (about a third of its time, for one append).
    async fn write_one(&self, pending: Pending) {
        let inserted = async {
            let row = append_query(APPEND_WITHOUT_COMMAND, &pending.request, &pending.columns).fetch_one(&self.pool).await?;
            let first: Option<i64> = row.try_get("first_version")?;
            let last: Option<i64> = row.try_get("last_version")?;
            Ok::<_, sqlx::Error>(first.zip(last))
        };
        let written = match inserted.await {
            Ok(Some((first, last))) => Ok(Written::Appended { first, last }),
            // Nothing inserted: the stream is at another version.
            Ok(None) => self.current_version(&pending.request.stream).await.map(|actual| Written::Conflict { actual: actual as i64 }),
            Err(error) => Err(store_error(error)),
        };
        match written {
            Ok(written) => pending.answer(Some(written)),
            // Its caller writes it alone, as after a failed batch, and tells what went wrong.
            Err(_) => pending.alone(),
        }
    }

    /// Writes `batch` in one statement and answers each of its appends.
    async fn write_batch(&self, mut batch: Vec<Pending>) {
        if batch.len() == 1 {
            return self.write_one(batch.pop().expect("one append")).await;
        }
        let mut arrays = BatchColumns::default();
        for (index, pending) in batch.iter().enumerate() {
            arrays.add(index as i32, pending);
        }
        let answered = arrays.query().fetch_all(&self.pool).await;
        match answered {
            Ok(rows) => {
                let mut written = vec![None; batch.len()];
                for row in rows {
                    let read = (|| -> Result<(usize, Written), sqlx::Error> {
                        let index = row.try_get::<i32, _>("request")? as usize;
                        let versions: Option<(i64, i64)> =
                            row.try_get::<Option<i64>, _>("first_version")?.zip(row.try_get("last_version")?);
                        Ok((
                            index,
                            match versions {
                                Some((first, last)) => Written::Appended { first, last },
                                None => Written::Conflict { actual: row.try_get("current_version")? },
                            },
                        ))
                    })();
                    if let Ok((index, answer)) = read {
                        if let Some(slot) = written.get_mut(index) {
                            *slot = Some(answer);
                        }
                    }
                }
                for (pending, written) in batch.into_iter().zip(written) {
                    pending.answer(written);
                }
            }
            Err(error) => {
                tracing::debug!(%error, appends = batch.len(), "a batch of appends failed as a whole; each goes again alone");
                for pending in batch {
                    pending.alone();
                }
            }
        }
    }

    /// One append with no command id, through the queue.
    async fn append_grouped(&self, request: AppendRequest, columns: AppendColumns) -> Result<AppendResult, StoreError> {
        let (reply, answer) = oneshot::channel();
        let event_ids = columns.event_ids.clone();
        let (stream, expected) = (request.stream.clone(), request.expected);
        let lead = {
            let mut queue = self.queue();
            queue.waiting.push(Pending { request, columns, reply });
            let lead = queue.writers < WRITERS;
            if lead {
                queue.writers += 1;
            }
            lead
        };
        if lead {
            tokio::spawn(self.clone().write_batches());
        }
        match answer.await {
            Ok(Ok(Some(Written::Appended { first, last }))) => {
                Ok(AppendResult { first_version: first as u64, last_version: last as u64, event_ids, duplicate: false })
            }
            Ok(Ok(Some(Written::Conflict { actual }))) => Err(StoreError::Conflict { stream, expected, actual: actual as u64 }),
            Ok(Ok(None)) => Err(StoreError::Unexpected(anyhow::anyhow!("the batch's answer had no row for an append of {stream}"))),
            // The batch failed as a whole: the single statement writes it.
            Ok(Err((request, columns))) => self.append_alone(&request, &columns).await,
            Err(_) => Err(StoreError::Unexpected(anyhow::anyhow!("the append's batch writer stopped before answering"))),
        }
    }

    /// One append in a statement of its own: `aurora_append` with a command id, the plain insert
    /// without.
    async fn append_alone(&self, request: &AppendRequest, columns: &AppendColumns) -> Result<AppendResult, StoreError> {
        // Without a command to remember, one INSERT does it: the version check is its WHERE
        // clause, and no row inserted means the stream was not at the expected version. With an
        // idempotency key, `aurora_append` also records the command. Both take the same
        // parameters and answer with one row of the same shape.
        let statement = if request.command_id.is_none() { APPEND_WITHOUT_COMMAND } else { APPEND_WITH_COMMAND };
        let outcome = loop {
            let attempt = append_query(statement, request, columns).fetch_one(&self.pool).await;
            // The same command was appended concurrently and won: asking again returns its result.
            match attempt {
                Err(sqlx::Error::Database(ref database_error)) if database_error.code().as_deref() == Some(COMMAND_IN_FLIGHT) => continue,
                other => break other,
            }
        };
        let conflict = match &outcome {
            // The plain INSERT found the stream at another version and inserted nothing.
            Ok(row) => row.try_get::<Option<i64>, _>("first_version").map_err(store_error)?.is_none(),
            // `aurora_append` found the stream at another version, or a concurrent append took it.
            Err(sqlx::Error::Database(database_error)) => {
                let code = database_error.code();
                code.as_deref() == Some(VERSION_MISMATCH)
                    || (code.as_deref() == Some(UNIQUE_VIOLATION) && database_error.constraint() == Some(STREAM_VERSION_CONSTRAINT))
            }
            Err(_) => false,
        };
        if conflict {
            let actual = self.current_version(&request.stream).await?;
            return Err(StoreError::Conflict { stream: request.stream.clone(), expected: request.expected, actual });
        }
        append_result(&outcome.map_err(store_error)?)
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    async fn current_version(&self, stream: &StreamId) -> Result<u64, StoreError> {
        let version: i64 = sqlx::query_scalar("SELECT coalesce(max(stream_version), 0) FROM events WHERE stream = $1")
            .bind(stream.to_string())
            .fetch_one(&self.pool)
            .await
            .map_err(store_error)?;
        Ok(version as u64)
    }
}

fn store_error(error: sqlx::Error) -> StoreError {
    if is_transient(&error) {
        StoreError::Unavailable(error.into())
    } else {
        StoreError::Unexpected(error.into())
    }
}

/// The envelope stored in an `events` row selected with [`ENVELOPE_COLUMNS`].
pub fn envelope_from_row(row: &PgRow) -> Result<Envelope, StoreError> {
    let decode = StoreError::Malformed;
    let stream: String = row.try_get("stream").map_err(store_error)?;
    let actor: String = row.try_get("actor").map_err(store_error)?;
    Ok(Envelope {
        id: row.try_get("event_id").map_err(store_error)?,
        event_type: row.try_get("event_type").map_err(store_error)?,
        schema_version: row.try_get::<i32, _>("schema_version").map_err(store_error)? as u32,
        stream: stream.parse().map_err(|error: aurora_events::StreamIdError| decode(error.to_string()))?,
        stream_version: row.try_get::<i64, _>("stream_version").map_err(store_error)? as u64,
        org_id: aurora_events::OrgId(row.try_get("org_id").map_err(store_error)?),
        actor: actor.parse().map_err(|error: aurora_events::envelope::ActorParseError| decode(error.to_string()))?,
        occurred_at: row.try_get("occurred_at").map_err(store_error)?,
        correlation_id: row.try_get("correlation_id").map_err(store_error)?,
        causation_id: row.try_get("causation_id").map_err(store_error)?,
        traceparent: row.try_get("traceparent").map_err(store_error)?,
        payload: row.try_get("payload").map_err(store_error)?,
    })
}

pub const ENVELOPE_COLUMNS: &str = "event_id, event_type, schema_version, stream, stream_version, org_id, \
     actor, occurred_at, correlation_id, causation_id, traceparent, payload";

/// The per-event columns of an append, as the arrays its statement unnests.
struct AppendColumns {
    event_ids: Vec<Uuid>,
    types: Vec<String>,
    schema_versions: Vec<i32>,
    payloads: Vec<serde_json::Value>,
}

impl AppendColumns {
    fn of(request: &AppendRequest) -> Self {
        Self {
            event_ids: request.events.iter().map(|_| Uuid::now_v7()).collect(),
            types: request.events.iter().map(|event| event.event_type.clone()).collect(),
            schema_versions: request.events.iter().map(|event| event.schema_version as i32).collect(),
            payloads: request.events.iter().map(|event| event.payload.clone()).collect(),
        }
    }
}

/// The columns of a batch's events, as [`APPEND_BATCH`] unnests them.
#[derive(Default)]
struct BatchColumns {
    requests: Vec<i32>,
    streams: Vec<String>,
    expected: Vec<i64>,
    event_ids: Vec<Uuid>,
    types: Vec<String>,
    schema_versions: Vec<i32>,
    payloads: Vec<serde_json::Value>,
    org_ids: Vec<Uuid>,
    actors: Vec<String>,
    occurred_at: Vec<chrono::DateTime<chrono::Utc>>,
    correlation_ids: Vec<Uuid>,
    causation_ids: Vec<Option<Uuid>>,
    traceparents: Vec<Option<String>>,
    ordinals: Vec<i32>,
}

impl BatchColumns {
    fn add(&mut self, index: i32, pending: &Pending) {
        let (request, columns) = (&pending.request, &pending.columns);
        let (stream, actor) = (request.stream.to_string(), request.actor.to_string());
        let events = columns.event_ids.iter().zip(&columns.types).zip(&columns.schema_versions).zip(&columns.payloads);
        for (ordinal, (((event_id, event_type), schema_version), payload)) in events.enumerate() {
            self.requests.push(index);
            self.streams.push(stream.clone());
            self.expected.push(request.expected.as_sql());
            self.event_ids.push(*event_id);
            self.types.push(event_type.clone());
            self.schema_versions.push(*schema_version);
            self.payloads.push(payload.clone());
            self.org_ids.push(request.org_id.0);
            self.actors.push(actor.clone());
            self.occurred_at.push(request.occurred_at);
            self.correlation_ids.push(request.correlation_id);
            self.causation_ids.push(request.causation_id);
            self.traceparents.push(request.traceparent.clone());
            self.ordinals.push(ordinal as i32 + 1);
        }
    }

    fn query(&self) -> sqlx::query::Query<'_, sqlx::Postgres, sqlx::postgres::PgArguments> {
        sqlx::query(APPEND_BATCH)
            .bind(&self.requests)
            .bind(&self.streams)
            .bind(&self.expected)
            .bind(&self.event_ids)
            .bind(&self.types)
            .bind(&self.schema_versions)
            .bind(&self.payloads)
            .bind(&self.org_ids)
            .bind(&self.actors)
            .bind(&self.occurred_at)
            .bind(&self.correlation_ids)
            .bind(&self.causation_ids)
            .bind(&self.traceparents)
            .bind(&self.ordinals)
    }
}

/// Both append statements take the same parameters, in this order.
fn append_query<'q>(
    statement: &'q str,
    request: &'q AppendRequest,
    columns: &'q AppendColumns,
) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
    sqlx::query(statement)
        .bind(request.stream.to_string())
        .bind(request.expected.as_sql())
        .bind(request.command_id)
        .bind(&columns.event_ids)
        .bind(&columns.types)
        .bind(&columns.schema_versions)
        .bind(&columns.payloads)
        .bind(request.org_id.0)
        .bind(request.actor.to_string())
        .bind(request.occurred_at)
        .bind(request.correlation_id)
        .bind(request.causation_id)
        .bind(request.traceparent.as_deref())
}

fn append_result(row: &PgRow) -> Result<AppendResult, StoreError> {
    Ok(AppendResult {
        first_version: row.try_get::<i64, _>("first_version").map_err(store_error)? as u64,
        last_version: row.try_get::<i64, _>("last_version").map_err(store_error)? as u64,
        event_ids: row.try_get("event_ids").map_err(store_error)?,
        duplicate: row.try_get("duplicate").map_err(store_error)?,
    })
}

/// Appends inside the caller's transaction, so that the events commit or roll back with the
/// other rows it writes (the identity tables do this). Without a command id only: idempotency
/// belongs to [`EventStore::append`]. A stream at another version than `expected` is a
/// [`StoreError::Conflict`] and leaves the transaction usable.
pub async fn append_in_transaction(connection: &mut sqlx::PgConnection, request: AppendRequest) -> Result<AppendResult, StoreError> {
    if request.events.is_empty() {
        return Err(StoreError::NothingToAppend);
    }
    debug_assert!(request.command_id.is_none(), "idempotent appends go through EventStore::append");
    request.check_size()?;
    let request = AppendRequest { command_id: None, ..request };
    let columns = AppendColumns::of(&request);
    let row = append_query(APPEND_WITHOUT_COMMAND, &request, &columns).fetch_one(&mut *connection).await.map_err(store_error)?;
    if row.try_get::<Option<i64>, _>("first_version").map_err(store_error)?.is_none() {
        let actual: i64 = sqlx::query_scalar("SELECT coalesce(max(stream_version), 0) FROM events WHERE stream = $1")
            .bind(request.stream.to_string())
            .fetch_one(&mut *connection)
            .await
            .map_err(store_error)?;
        return Err(StoreError::Conflict { stream: request.stream, expected: request.expected, actual: actual as u64 });
    }
    let result = append_result(&row)?;
    aurora_adapters::metrics::metrics().events_appended.inc_by(request.events.len() as u64);
    Ok(result)
}

#[async_trait]
impl EventStore for PostgresEventStore {
    async fn append(&self, request: AppendRequest) -> Result<AppendResult, StoreError> {
        if request.events.is_empty() {
            return Err(StoreError::NothingToAppend);
        }
        request.check_size()?;
        let columns = AppendColumns::of(&request);
        let len = request.events.len() as u64;
        let result = if request.command_id.is_none() {
            self.append_grouped(request, columns).await?
        } else {
            self.append_alone(&request, &columns).await?
        };
        if !result.duplicate {
            aurora_adapters::metrics::metrics().events_appended.inc_by(len);
        }
        Ok(result)
    }

    async fn load_stream(&self, stream: &StreamId, after_version: u64) -> Result<Vec<Envelope>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {ENVELOPE_COLUMNS} FROM events WHERE stream = $1 AND stream_version > $2 ORDER BY stream_version"
        ))
        .bind(stream.to_string())
        .bind(after_version as i64)
        .fetch_all(&self.pool)
        .await
        .map_err(store_error)?;
        rows.iter().map(envelope_from_row).collect()
    }

    async fn command_result(&self, command_id: Uuid) -> Result<Option<AppendResult>, StoreError> {
        let row = sqlx::query("SELECT first_version, last_version, event_ids FROM processed_commands WHERE command_id = $1")
            .bind(command_id)
            .fetch_optional(&self.pool)
            .await
            .map_err(store_error)?;
        row.map(|row| {
            Ok(AppendResult {
                first_version: row.try_get::<i64, _>("first_version").map_err(store_error)? as u64,
                last_version: row.try_get::<i64, _>("last_version").map_err(store_error)? as u64,
                event_ids: row.try_get("event_ids").map_err(store_error)?,
                duplicate: true,
            })
        })
        .transpose()
    }
}
