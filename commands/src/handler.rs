//! Command handling: load the stream, decide (pure), append with the version that was loaded, and
//! on a conflict with a concurrent writer reload and decide again, a bounded number of times.
//!
//! A command costs the same at the 10th and the 10,000th event of its stream: the handler keeps
//! the latest states it saw ([`STATES_KEPT`] streams, least recently used out first) with their
//! versions. A command decides on the state kept and appends expecting its version, so the
//! store's version check tells whether it was still the latest; when it was not (another process
//! appended) the handler reads only the events after it. A refusal, or a command that changes
//! nothing, decided on a kept state is decided again on the stored one before it is answered.

use std::any::Any;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aurora_domain::{Aggregate, DomainError};
use aurora_events::{Actor, DecodeError, Envelope, EventPayload, OrgId, StreamId};
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

    /// A processor's command in reaction to `cause`, handled once per `key`: it carries on the
    /// cause's correlation and trace.
    pub fn caused_by(org_id: OrgId, actor: Actor, key: Uuid, cause: &Envelope) -> Self {
        Self {
            causation_id: Some(cause.id),
            correlation_id: cause.correlation_id,
            traceparent: cause.traceparent.clone(),
            ..Self::idempotent(org_id, actor, key)
        }
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

/// How many streams' states a handler keeps.
pub const STATES_KEPT: usize = 2048;

/// A stream's state after `version`, for the organisation that owns the stream.
struct Kept {
    org_id: OrgId,
    version: u64,
    state: Box<dyn Any + Send + Sync>,
}

#[derive(Clone)]
pub struct CommandHandler {
    store: Arc<dyn EventStore>,
    max_attempts: u32,
    states: Arc<Mutex<hashlink::LruCache<StreamId, Kept>>>,
}

impl CommandHandler {
    pub fn new(store: Arc<dyn EventStore>) -> Self {
        Self { store, max_attempts: 5, states: Arc::new(Mutex::new(hashlink::LruCache::new(STATES_KEPT))) }
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
        // The state kept from an earlier command, not yet checked against the store.
        let mut kept = self.kept::<A>(stream, meta.org_id);
        let mut attempt = 0;
        while attempt < self.max_attempts {
            let (state, version, checked) = match kept.take() {
                Some((state, version)) => (state, version, false),
                None => {
                    attempt += 1;
                    let (state, version) = self.load::<A>(stream, meta.org_id).await?;
                    (state, version, true)
                }
            };
            if let Some(expected) = expected_version {
                if expected != version {
                    if !checked {
                        continue;
                    }
                    return Err(HandleError::Conflict { stream: stream.clone(), expected, actual: version });
                }
            }
            let events = match state.decide(command.clone()) {
                Ok(events) if !events.is_empty() => events,
                // Answered only on the state the store holds.
                _ if !checked => continue,
                Ok(_) => return Ok(Handled { stream_version: version, appended: None }),
                Err(error) => return Err(error.into()),
            };
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
                Ok(appended) => {
                    // A duplicate command appended nothing now: what the stream holds is not known here.
                    if !appended.duplicate {
                        let state = events.iter().fold(state, |state, event| state.evolve(event));
                        self.keep(stream, meta.org_id, appended.last_version, state);
                    }
                    return Ok(Handled { stream_version: appended.last_version, appended: Some(appended) });
                }
                Err(StoreError::Conflict { actual, .. }) => {
                    if let Some(expected) = expected_version {
                        return Err(HandleError::Conflict { stream: stream.clone(), expected, actual });
                    }
                    if checked {
                        tracing::debug!(%stream, attempt, "concurrent append, deciding again");
                        tokio::time::sleep(Duration::from_millis(u64::from(attempt) * 2)).await;
                    }
                }
                Err(error) => return Err(error.into()),
            }
        }
        Err(HandleError::TooMuchContention { stream: stream.clone(), attempts: self.max_attempts })
    }

    /// Handles `command` against a stream that is almost always new (its id derived from what
    /// the command carries: a webhook delivery's digest): decided on the empty state and appended
    /// expecting no stream, one round trip instead of a read and a write. When the stream exists
    /// after all (a redelivery), the command is handled as [`Self::handle`] handles it.
    pub async fn handle_new<A: Aggregate>(&self, stream: &StreamId, command: A::Command, meta: &CommandMeta) -> Result<Handled, HandleError>
    where
        A::Command: Clone,
    {
        if meta.idempotent || self.kept::<A>(stream, meta.org_id).is_some() {
            return self.handle::<A>(stream, command, meta, None).await;
        }
        let events = A::default().decide(command.clone())?;
        if events.is_empty() {
            return self.handle::<A>(stream, command, meta, None).await;
        }
        let request = AppendRequest {
            stream: stream.clone(),
            expected: ExpectedVersion::NoStream,
            command_id: None,
            org_id: meta.org_id,
            actor: meta.actor.clone(),
            correlation_id: meta.correlation_id,
            causation_id: meta.causation_id,
            traceparent: meta.traceparent.clone(),
            occurred_at: Utc::now(),
            events: events.iter().map(NewEvent::from_payload).collect(),
        };
        match self.store.append(request).await {
            Ok(appended) => Ok(Handled { stream_version: appended.last_version, appended: Some(appended) }),
            Err(StoreError::Conflict { .. }) => self.handle::<A>(stream, command, meta, None).await,
            Err(error) => Err(error.into()),
        }
    }

    /// The aggregate's state and version. A stream owned by another organisation reads as empty,
    /// so that its existence does not leak. Only the events after the state kept are read.
    pub async fn load<A: Aggregate>(&self, stream: &StreamId, org_id: OrgId) -> Result<(A, u64), HandleError> {
        let (mut state, mut version) = self.kept::<A>(stream, org_id).unwrap_or_default();
        let envelopes = self.store.load_stream(stream, version).await?;
        if version == 0 && envelopes.first().is_some_and(|first| first.org_id != org_id) {
            return Ok((A::default(), 0));
        }
        if envelopes.is_empty() {
            return Ok((state, version));
        }
        for envelope in envelopes {
            let event = A::Event::decode(&envelope.event_type, envelope.schema_version, envelope.payload)
                .map_err(|source| HandleError::Decode { stream: stream.clone(), source })?;
            state = state.evolve(&event);
            version = envelope.stream_version;
        }
        self.keep(stream, org_id, version, state.clone());
        Ok((state, version))
    }

    /// The state kept for `stream`, when `org_id` owns it.
    fn kept<A: Aggregate>(&self, stream: &StreamId, org_id: OrgId) -> Option<(A, u64)> {
        let mut states = self.states.lock().expect("states lock");
        let kept = states.get(stream)?;
        if kept.org_id != org_id {
            return None;
        }
        let state = kept.state.downcast_ref::<A>()?;
        Some((state.clone(), kept.version))
    }

    fn keep<A: Aggregate>(&self, stream: &StreamId, org_id: OrgId, version: u64, state: A) {
        let mut states = self.states.lock().expect("states lock");
        if states.get(stream).is_some_and(|kept| kept.version > version) {
            return;
        }
        states.insert(stream.clone(), Kept { org_id, version, state: Box::new(state) });
    }
}
