//! The event store on KurrentDB (EventStoreDB), through the `eventstore` gRPC client. Built with
//! `--features kurrentdb`; the contract suite runs against it when `AURORA_TEST_KURRENTDB_URL`
//! names a server.
//!
//! Aurora's envelope fields travel in each event's custom metadata. Idempotency rests on
//! KurrentDB's own: the event ids of a command with an idempotency key are derived from that key,
//! so appending it again is recognised by the server, and the result is kept in a
//! `aurora_command-<id>` stream for `command_result`.

use async_trait::async_trait;
use aurora_events::{Envelope, OrgId, StreamId};
use chrono::{DateTime, Utc};
use eventstore::{
    AppendToStreamOptions, Client, ClientSettings, CurrentRevision, EventData, ExpectedRevision, ReadStreamOptions, StreamPosition,
};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::store::{AppendRequest, AppendResult, EventStore, ExpectedVersion, StoreError};

#[derive(Clone)]
pub struct KurrentDbEventStore {
    client: Client,
}

/// The envelope fields that are not KurrentDB's own (id, type, stream, revision, data).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct EnvelopeMetadata {
    schema_version: u32,
    org_id: OrgId,
    actor: String,
    occurred_at: DateTime<Utc>,
    correlation_id: Uuid,
    causation_id: Option<Uuid>,
    traceparent: Option<String>,
}

fn command_stream(command_id: Uuid) -> String {
    format!("aurora_command-{command_id}")
}

fn store_error(error: eventstore::Error) -> StoreError {
    match error {
        eventstore::Error::ConnectionClosed
        | eventstore::Error::GrpcConnectionError(_)
        | eventstore::Error::DeadlineExceeded
        | eventstore::Error::NotLeaderException(_) => StoreError::Unavailable(anyhow::Error::new(error)),
        other => StoreError::Unexpected(anyhow::Error::new(other)),
    }
}

impl KurrentDbEventStore {
    /// Connects with a connection string such as `esdb://127.0.0.1:2113?tls=false`.
    pub async fn connect(url: &str) -> anyhow::Result<Self> {
        let settings: ClientSettings = url.parse()?;
        Ok(Self { client: Client::new(settings)? })
    }
}

#[async_trait]
impl EventStore for KurrentDbEventStore {
    async fn append(&self, request: AppendRequest) -> Result<AppendResult, StoreError> {
        if request.events.is_empty() {
            return Err(StoreError::NothingToAppend);
        }
        request.check_size()?;
        if let Some(command_id) = request.command_id {
            if let Some(previous) = self.command_result(command_id).await? {
                return Ok(previous);
            }
        }
        let event_ids: Vec<Uuid> = (0..request.events.len())
            .map(|index| match request.command_id {
                Some(command_id) => Uuid::new_v5(&command_id, &index.to_be_bytes()),
                None => Uuid::now_v7(),
            })
            .collect();
        let metadata = EnvelopeMetadata {
            schema_version: 0,
            org_id: request.org_id,
            actor: request.actor.to_string(),
            occurred_at: request.occurred_at,
            correlation_id: request.correlation_id,
            causation_id: request.causation_id,
            traceparent: request.traceparent.clone(),
        };
        let mut events = Vec::with_capacity(request.events.len());
        for (event, id) in request.events.iter().zip(&event_ids) {
            let metadata = EnvelopeMetadata { schema_version: event.schema_version, ..metadata.clone() };
            let data = EventData::json(event.event_type.as_str(), &event.payload)
                .and_then(|data| data.metadata_as_json(&metadata))
                .map_err(|error| StoreError::Unexpected(error.into()))?
                .id(*id);
            events.push(data);
        }
        let expected = match request.expected {
            ExpectedVersion::Any => ExpectedRevision::Any,
            ExpectedVersion::NoStream => ExpectedRevision::NoStream,
            // Aurora's versions start at 1, KurrentDB's revisions at 0.
            ExpectedVersion::Exact(version) => ExpectedRevision::Exact(version - 1),
        };
        let options = AppendToStreamOptions::default().expected_revision(expected);
        let written = match self.client.append_to_stream(request.stream.to_string(), &options, events).await {
            Ok(written) => written,
            Err(eventstore::Error::WrongExpectedVersion { current, .. }) => {
                let actual = match current {
                    CurrentRevision::Current(revision) => revision + 1,
                    CurrentRevision::NoStream => 0,
                };
                return Err(StoreError::Conflict { stream: request.stream, expected: request.expected, actual });
            }
            Err(error) => return Err(store_error(error)),
        };
        let last_version = written.next_expected_version + 1;
        let result = AppendResult { first_version: last_version + 1 - event_ids.len() as u64, last_version, event_ids, duplicate: false };
        if let Some(command_id) = request.command_id {
            let record =
                EventData::json("aurora.command_appended", &result).map_err(|error| StoreError::Unexpected(error.into()))?.id(command_id);
            let options = AppendToStreamOptions::default().expected_revision(ExpectedRevision::NoStream);
            match self.client.append_to_stream(command_stream(command_id), &options, record).await {
                Ok(_) | Err(eventstore::Error::WrongExpectedVersion { .. }) => {}
                Err(error) => return Err(store_error(error)),
            }
        }
        Ok(result)
    }

    async fn load_stream(&self, stream: &StreamId, after_version: u64) -> Result<Vec<Envelope>, StoreError> {
        let options = ReadStreamOptions::default().forwards().position(StreamPosition::Position(after_version)).max_count(usize::MAX);
        let mut reader = match self.client.read_stream(stream.to_string(), &options).await {
            Ok(reader) => reader,
            Err(eventstore::Error::ResourceNotFound) => return Ok(Vec::new()),
            Err(error) => return Err(store_error(error)),
        };
        let mut envelopes = Vec::new();
        loop {
            let resolved = match reader.next().await {
                Ok(Some(resolved)) => resolved,
                Ok(None) | Err(eventstore::Error::ResourceNotFound) => break,
                Err(error) => return Err(store_error(error)),
            };
            let recorded = resolved.get_original_event();
            let metadata: EnvelopeMetadata = serde_json::from_slice(&recorded.custom_metadata)
                .map_err(|error| StoreError::Unexpected(anyhow::anyhow!("event {} has no Aurora metadata: {error}", recorded.id)))?;
            let payload: serde_json::Value =
                serde_json::from_slice(&recorded.data).map_err(|error| StoreError::Unexpected(error.into()))?;
            envelopes.push(Envelope {
                id: recorded.id,
                event_type: recorded.event_type.clone(),
                schema_version: metadata.schema_version,
                stream: stream.clone(),
                stream_version: recorded.revision + 1,
                org_id: metadata.org_id,
                actor: metadata.actor.parse().map_err(|error| StoreError::Unexpected(anyhow::anyhow!("{error}")))?,
                occurred_at: metadata.occurred_at,
                correlation_id: metadata.correlation_id,
                causation_id: metadata.causation_id,
                traceparent: metadata.traceparent,
                payload,
            });
        }
        Ok(envelopes)
    }

    async fn command_result(&self, command_id: Uuid) -> Result<Option<AppendResult>, StoreError> {
        let options = ReadStreamOptions::default().forwards().position(StreamPosition::Start).max_count(1);
        let mut reader = match self.client.read_stream(command_stream(command_id), &options).await {
            Ok(reader) => reader,
            Err(eventstore::Error::ResourceNotFound) => return Ok(None),
            Err(error) => return Err(store_error(error)),
        };
        match reader.next().await {
            Ok(Some(resolved)) => {
                let mut result: AppendResult =
                    resolved.get_original_event().as_json().map_err(|error| StoreError::Unexpected(error.into()))?;
                result.duplicate = true;
                Ok(Some(result))
            }
            Ok(None) | Err(eventstore::Error::ResourceNotFound) => Ok(None),
            Err(error) => Err(store_error(error)),
        }
    }
}
