//! The event store port: append with an expected version, load a stream, and remember commands
//! so that a repeated command yields its events once.

use async_trait::async_trait;
use aurora_events::{Actor, Envelope, OrgId, StreamId};
use chrono::{DateTime, Utc};
use uuid::Uuid;

/// What the stream must look like for an append to go through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpectedVersion {
    /// Append whatever the stream's version.
    Any,
    /// The stream must have no events yet.
    NoStream,
    /// The stream's last event must have this version.
    Exact(u64),
}

impl ExpectedVersion {
    /// The encoding the Postgres append function takes.
    pub fn as_sql(self) -> i64 {
        match self {
            ExpectedVersion::Any => -1,
            ExpectedVersion::NoStream => 0,
            ExpectedVersion::Exact(version) => version as i64,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    pub event_type: String,
    pub schema_version: u32,
    pub payload: serde_json::Value,
}

impl NewEvent {
    pub fn from_payload<E: aurora_events::EventPayload>(event: &E) -> Self {
        Self { event_type: event.event_type().to_owned(), schema_version: event.schema_version(), payload: event.to_json() }
    }
}

/// The largest event payload the store takes, serialized. Kafka's default record limit is 1 MB
/// (`message.max.bytes`); events are public and live for ever, so bulky content (documents,
/// whole tool results) belongs in a read model or the object store, with a reference here.
pub const MAX_EVENT_BYTES: usize = 256 * 1024;

#[derive(Debug, Clone)]
pub struct AppendRequest {
    pub stream: StreamId,
    pub expected: ExpectedVersion,
    /// When set, a second append with the same id appends nothing and returns the first result.
    pub command_id: Option<Uuid>,
    pub org_id: OrgId,
    pub actor: Actor,
    pub correlation_id: Uuid,
    pub causation_id: Option<Uuid>,
    pub traceparent: Option<String>,
    pub occurred_at: DateTime<Utc>,
    pub events: Vec<NewEvent>,
}

impl AppendRequest {
    /// Refuses an append with an event larger than [`MAX_EVENT_BYTES`]; every store calls this.
    pub fn check_size(&self) -> Result<(), StoreError> {
        for event in &self.events {
            let mut counter = ByteCounter(0);
            serde_json::to_writer(&mut counter, &event.payload).map_err(|error| StoreError::Unexpected(error.into()))?;
            if counter.0 > MAX_EVENT_BYTES {
                return Err(StoreError::EventTooLarge { event_type: event.event_type.clone(), bytes: counter.0, limit: MAX_EVENT_BYTES });
            }
        }
        Ok(())
    }
}

/// Counts what is written to it.
struct ByteCounter(usize);

impl std::io::Write for ByteCounter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0 += bytes.len();
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AppendResult {
    pub first_version: u64,
    pub last_version: u64,
    pub event_ids: Vec<Uuid>,
    /// True when the command id had been appended before and this call appended nothing.
    pub duplicate: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("stream {stream} is at version {actual}, the command expected {expected:?}")]
    Conflict { stream: StreamId, expected: ExpectedVersion, actual: u64 },
    #[error("an append needs at least one event")]
    NothingToAppend,
    #[error("a {event_type} event of {bytes} bytes is larger than the {limit} bytes an event may have")]
    EventTooLarge { event_type: String, bytes: usize, limit: usize },
    /// A stored row that cannot be read as an event (written by hand, or by a broken build).
    #[error("stored event is malformed: {0}")]
    Malformed(String),
    #[error("the event store is unavailable: {0}")]
    Unavailable(#[source] anyhow::Error),
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

#[async_trait]
pub trait EventStore: Send + Sync + 'static {
    async fn append(&self, request: AppendRequest) -> Result<AppendResult, StoreError>;

    /// The events of `stream` with a version greater than `after_version`, in order.
    async fn load_stream(&self, stream: &StreamId, after_version: u64) -> Result<Vec<Envelope>, StoreError>;

    /// The result of a command appended before, if any.
    async fn command_result(&self, command_id: Uuid) -> Result<Option<AppendResult>, StoreError>;
}
