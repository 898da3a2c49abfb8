//! Command handling: load the stream, decide (pure), append with the version that was loaded, and
//! on a conflict with a concurrent writer reload and decide again, a bounded number of times.

use std::sync::Arc;
use std::time::Duration;

use aurora_domain::{Aggregate, DomainError};
use aurora_events::{Actor, DecodeError, EventPayload, OrgId, StreamId};
use chrono::Utc;
use uuid::Uuid;

use crate::store::{AppendRequest, AppendResult, EventStore, ExpectedVersion, NewEvent, StoreError};

/// Who sends a command, on whose behalf, and how it relates to what came before.
#[derive(Debug, Clone)]
pub struct CommandMeta {
    /// Identifies the command (and starts the correlation of what it causes).
    pub command_id: Uuid,
    /// Whether the id came from outside (an `Idempotency-Key`, a webhook delivery id, the event a
    /// processor reacts to) and may arrive again: then the store remembers it, and the same id
    /// twice yields the events once. A fresh id nobody else knows is not worth a write.
    pub idempotent: bool,
    pub org_id: OrgId,
    pub actor: Actor,
    pub correlation_id: Uuid,
    pub causation_id: Option<Uuid>,
    pub traceparent: Option<String>,
}

impl CommandMeta {
    /// A command that starts a new correlation.
    pub fn new(org_id: OrgId, actor: Actor) -> Self {
        let command_id = Uuid::now_v7();
        Self { command_id, idempotent: false, org_id, actor, correlation_id: command_id, causation_id: None, traceparent: None }
    }

    /// A command whose id may be delivered again: handled once, whatever the number of deliveries.
    pub fn idempotent(org_id: OrgId, actor: Actor, command_id: Uuid) -> Self {
        Self { command_id, idempotent: true, correlation_id: command_id, ..Self::new(org_id, actor) }
    }
}

/// The outcome of a handled command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handled {
    /// The stream's version after the command.
    pub stream_version: u64,
    /// What was appended; `None` when the command changed nothing.
    pub appended: Option<AppendResult>,
}

#[derive(Debug, thiserror::Error)]
pub enum HandleError {
    #[error(transparent)]
    Domain(#[from] DomainError),
    #[error("stream {stream} is at version {actual}, the command expected {expected}")]
    Conflict { stream: StreamId, expected: u64, actual: u64 },
    #[error("stream {stream} kept changing under the command; gave up after {attempts} attempts")]
    TooMuchContention { stream: StreamId, attempts: u32 },
    #[error("stored event of stream {stream} cannot be read: {source}")]
    Decode { stream: StreamId, source: DecodeError },
    #[error(transparent)]
    Store(#[from] StoreError),
}

#[derive(Clone)]
pub struct CommandHandler {
    store: Arc<dyn EventStore>,
    max_attempts: u32,
}

impl CommandHandler {
    pub fn new(store: Arc<dyn EventStore>) -> Self {
        Self { store, max_attempts: 5 }
    }

    pub fn store(&self) -> &Arc<dyn EventStore> {
        &self.store
    }

    /// Handles `command` against `stream`. With `expected_version` the caller states which version
    /// it decided on (an HTTP `If-Match`); a mismatch is then a conflict rather than a retry.
    pub async fn handle<A: Aggregate>(
        &self,
        stream: &StreamId,
        command: A::Command,
        meta: &CommandMeta,
        expected_version: Option<u64>,
    ) -> Result<Handled, HandleError>
    where
        A::Command: Clone,
    {
        if meta.idempotent {
            if let Some(previous) = self.store.command_result(meta.command_id).await? {
                return Ok(Handled { stream_version: previous.last_version, appended: Some(previous) });
            }
        }
        for attempt in 1..=self.max_attempts {
            let (state, version) = self.load::<A>(stream, meta.org_id).await?;
            if let Some(expected) = expected_version {
                if expected != version {
                    return Err(HandleError::Conflict { stream: stream.clone(), expected, actual: version });
                }
            }
            let events = state.decide(command.clone())?;
            if events.is_empty() {
                return Ok(Handled { stream_version: version, appended: None });
            }
            let request = AppendRequest {
                stream: stream.clone(),
                expected: if version == 0 { ExpectedVersion::NoStream } else { ExpectedVersion::Exact(version) },
                command_id: meta.idempotent.then_some(meta.command_id),
                org_id: meta.org_id,
                actor: meta.actor.clone(),
                correlation_id: meta.correlation_id,
                causation_id: meta.causation_id,
                traceparent: meta.traceparent.clone(),
                occurred_at: Utc::now(),
                events: events.iter().map(NewEvent::from_payload).collect(),
            };
            match self.store.append(request).await {
                Ok(appended) => return Ok(Handled { stream_version: appended.last_version, appended: Some(appended) }),
                Err(StoreError::Conflict { actual, .. }) => {
                    if let Some(expected) = expected_version {
                        return Err(HandleError::Conflict { stream: stream.clone(), expected, actual });
                    }
                    tracing::debug!(%stream, attempt, "concurrent append, deciding again");
                    tokio::time::sleep(Duration::from_millis(u64::from(attempt) * 2)).await;
                }
                Err(error) => return Err(error.into()),
            }
        }
        Err(HandleError::TooMuchContention { stream: stream.clone(), attempts: self.max_attempts })
    }

    /// The aggregate's state and version. A stream owned by another organisation reads as empty,
    /// so that its existence does not leak.
    pub async fn load<A: Aggregate>(&self, stream: &StreamId, org_id: OrgId) -> Result<(A, u64), HandleError> {
        let envelopes = self.store.load_stream(stream, 0).await?;
        if envelopes.first().is_some_and(|first| first.org_id != org_id) {
            return Ok((A::default(), 0));
        }
        let mut state = A::default();
        let mut version = 0;
        for envelope in envelopes {
            let event = A::Event::decode(&envelope.event_type, envelope.schema_version, envelope.payload)
                .map_err(|source| HandleError::Decode { stream: stream.clone(), source })?;
            state = state.evolve(&event);
            version = envelope.stream_version;
        }
        Ok((state, version))
    }
}
