//! The event store on Postgres: one round trip per append through `aurora_append`.

use async_trait::async_trait;
use aurora_adapters::postgres::is_transient;
use aurora_events::{Envelope, StreamId};
use sqlx::postgres::PgRow;
use sqlx::{PgPool, Row};
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

/// An append that also records its command id (see migrations/0004).
const APPEND_WITH_COMMAND: &str = "SELECT first_version, last_version, event_ids, duplicate \
     FROM aurora_append($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)";
const UNIQUE_VIOLATION: &str = "23505";
const STREAM_VERSION_CONSTRAINT: &str = "events_stream_version_unique";

#[derive(Clone)]
pub struct PostgresEventStore {
    pool: PgPool,
}

impl PostgresEventStore {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
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
        // Without a command to remember, one INSERT does it: the version check is its WHERE
        // clause, and no row inserted means the stream was not at the expected version. With an
        // idempotency key, `aurora_append` also records the command. Both take the same
        // parameters and answer with one row of the same shape.
        let statement = if request.command_id.is_none() { APPEND_WITHOUT_COMMAND } else { APPEND_WITH_COMMAND };
        let outcome = loop {
            let attempt = append_query(statement, &request, &columns).fetch_one(&self.pool).await;
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
            return Err(StoreError::Conflict { stream: request.stream, expected: request.expected, actual });
        }
        let result = append_result(&outcome.map_err(store_error)?)?;
        if !result.duplicate {
            aurora_adapters::metrics::metrics().events_appended.inc_by(request.events.len() as u64);
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
