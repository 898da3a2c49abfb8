//! The discovery feature's processor: when a scan is asked for, it reads each connected cloud's
//! credentials from the secret store at that moment, lists its resources, infers the
//! dependencies between them with their evidence, and records the scan as the estate aggregate
//! decides it: exactly what changed since the last one. One provider failing fails only itself.
//! A processor that dies mid-scan lists again when the request is delivered again; the
//! aggregate makes the second completion a no-op and the first one whole.
//!
//! Scans repeat on a durable timer (`discovery_scan`, one per organisation, fired once across
//! every instance by the owner of the timers' lock): set `AURORA_DISCOVERY_INTERVAL_SECS` after
//! each scan ends, and shortly after a cloud is connected for the first scan.
//!
//! A connection that fails `AURORA_DISCOVERY_FLAG_AFTER_FAILURES` (3) scans in a row is flagged
//! on the connection; see [`DiscoveryProcessor::flag_failing`].
//!
//! A resource no longer listed is kept as missed, marked stale after
//! `AURORA_DISCOVERY_STALE_AFTER_SECS` (7 days) and gone after `AURORA_DISCOVERY_GONE_AFTER_SECS`
//! (30 days) unlisted.

pub mod aws;
pub mod azure;
pub mod gcp;
mod inventory;

use std::sync::Arc;

use async_trait::async_trait;
use aurora_adapters::clouds::ProviderError;
use aurora_adapters::secrets::SecretPath;
use aurora_adapters::timers::{self, DueTimer};
use aurora_commands::{CommandMeta, HandleError};
use aurora_domain::discovery::{DiscoveryCommand, Estate, Thresholds};
use chrono::TimeDelta;
use aurora_domain::connection::{Connection, ConnectionCommand, ConnectionError};
use aurora_events::connection::{ConnectionEvent, ConnectionFailed, FailureStage, Provider};
use aurora_events::discovery::{Dependency, DiscoveryEvent, ProviderFailure, Resource, ScanCompleted, ScanFailed, SCAN_TIMER};
use aurora_events::{Actor, Envelope, EventPayload, OrgId, StreamId};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::agent::tools::Connected;
use crate::reactor::{self, Reactor};
use crate::{Context, Processors};

/// A first scan's timer payload field: which look for the new connection this is.
const FIRST_SCAN_ATTEMPT: &str = "first_scan_attempt";
const FIRST_SCAN_ATTEMPTS: u64 = 10;

/// Registers the discovery processor.
pub fn register(processors: &mut Processors) {
    processors.add("discovery", |context: Context, shutdown: CancellationToken| async move {
        let processor = Arc::new(DiscoveryProcessor { context: context.clone(), timers_changed: Arc::new(tokio::sync::Notify::new()) });
        let timers = tokio::spawn(fire_scan_timers(processor.clone(), shutdown.clone()));
        let outcome = reactor::run(processor, context, shutdown).await;
        let _ = timers.await;
        outcome
    });
}

pub struct DiscoveryProcessor {
    context: Context,
    timers_changed: Arc<tokio::sync::Notify>,
}

async fn fire_scan_timers(processor: Arc<DiscoveryProcessor>, shutdown: CancellationToken) {
    let pool = processor.context.pool.clone();
    aurora_adapters::consumer::lead("discovery timers", &pool, "aurora-timers:discovery_scan", &shutdown, |leadership| {
        let processor = processor.clone();
        let shutdown = shutdown.clone();
        async move {
            let changed = processor.timers_changed.clone();
            let pool = processor.context.pool.clone();
            timers::run(SCAN_TIMER, &pool, Some(leadership), changed, shutdown, |timer| processor.fire(timer)).await?;
            Ok(())
        }
    })
    .await;
}

#[async_trait]
impl Reactor for DiscoveryProcessor {
    fn name(&self) -> &'static str {
        "discovery"
    }

    fn topics(&self, prefix: &str) -> Vec<String> {
        vec![DiscoveryEvent::topic(prefix), ConnectionEvent::topic(prefix)]
    }

    async fn react(&self, envelope: &Envelope) -> anyhow::Result<()> {
        if envelope.stream.category() == ConnectionEvent::CATEGORY {
            // A cloud connected: its first scan soon, and hourly ones after it.
            if let Ok(ConnectionEvent::Established(established)) =
                ConnectionEvent::decode(&envelope.event_type, envelope.schema_version, envelope.payload.clone())
            {
                if matches!(established.provider, Provider::Aws | Provider::Gcp | Provider::Azure) {
                    let due = envelope.occurred_at + self.context.config.discovery.first_scan_delay;
                    let first = serde_json::json!({ FIRST_SCAN_ATTEMPT: 1 });
                    self.schedule(envelope.org_id, Uuid::new_v5(&envelope.id, b"first scan"), due, first).await?;
                }
            }
            return Ok(());
        }
        match DiscoveryEvent::decode(&envelope.event_type, envelope.schema_version, envelope.payload.clone()) {
            Ok(DiscoveryEvent::ScanRequested(requested)) => self.scan(envelope, requested.scan_id).await,
            Ok(
                DiscoveryEvent::ScanCompleted(ScanCompleted { scan_id, failures, .. })
                | DiscoveryEvent::ScanFailed(ScanFailed { scan_id, failures }),
            ) => {
                self.flag_failing(envelope, scan_id, &failures).await?;
                let due = envelope.occurred_at + self.interval(envelope).await?;
                self.schedule(envelope.org_id, Uuid::new_v5(&scan_id, b"next scan"), due, serde_json::json!({})).await
            }
            // A new schedule moves the waiting scan, counted from now; with no scan waiting
            // (no cloud connected), the next connection starts the chain.
            Ok(DiscoveryEvent::ScheduleChanged(_)) => {
                let stream = envelope.stream.to_string();
                if timers::pending(&self.context.pool, SCAN_TIMER, &stream).await?.is_none() {
                    return Ok(());
                }
                let due = envelope.occurred_at + self.interval(envelope).await?;
                self.schedule(envelope.org_id, Uuid::new_v5(&envelope.id, b"rescheduled"), due, serde_json::json!({})).await
            }
            _ => Ok(()),
        }
    }
}

/// What one scan found.
#[derive(Default)]
pub struct Found {
    pub resources: Vec<Resource>,
    pub dependencies: Vec<Dependency>,
}

impl DiscoveryProcessor {
    /// The time between the organisation's scans: its admins' choice, or the deployment's.
    async fn interval(&self, envelope: &Envelope) -> anyhow::Result<TimeDelta> {
        let (estate, _) = self.context.commands.load::<Estate>(&envelope.stream, envelope.org_id).await?;
        Ok(match estate.interval_minutes {
            Some(minutes) => TimeDelta::minutes(minutes.into()),
            None => TimeDelta::from_std(self.context.config.discovery.interval)?,
        })
    }

    /// The organisation's next scan at `due`, in place of any pending one: one chain of scans
    /// per organisation, however many scans were asked for by hand.
    async fn schedule(&self, org_id: OrgId, timer_id: Uuid, due: chrono::DateTime<chrono::Utc>, payload: serde_json::Value) -> anyhow::Result<()> {
        let stream = DiscoveryEvent::stream_of(org_id.0).to_string();
        let set: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM timers WHERE timer_id = $1)")
            .bind(timer_id)
            .fetch_one(&self.context.pool)
            .await?;
        if set {
            // Delivered again: this event's timer is set (or fired) already.
            return Ok(());
        }
        timers::cancel(&self.context.pool, SCAN_TIMER, &stream).await?;
        timers::set(&self.context.pool, timer_id, SCAN_TIMER, org_id.0, &stream, &payload, due).await?;
        self.timers_changed.notify_one();
        Ok(())
    }

    /// A scan timer is due: a scan is asked for, unless one runs (its end sets the next timer)
    /// or the organisation has no cloud left to scan (a new connection sets one again).
    async fn fire(&self, timer: DueTimer) -> anyhow::Result<()> {
        let org_id = OrgId(timer.org_id);
        let connected = Connected::load(&self.context.pool, org_id, None).await?;
        if !connected.connections.iter().any(|connection| matches!(connection.provider, Provider::Aws | Provider::Gcp | Provider::Azure)) {
            // A first scan's connection may not be in the read model yet: look again shortly,
            // a few times, before the chain waits for the next connection.
            if let Some(attempt) = timer.payload[FIRST_SCAN_ATTEMPT].as_u64().filter(|attempt| *attempt < FIRST_SCAN_ATTEMPTS) {
                let due = chrono::Utc::now() + self.context.config.discovery.first_scan_delay;
                let again = serde_json::json!({ FIRST_SCAN_ATTEMPT: attempt + 1 });
                self.schedule(org_id, Uuid::new_v5(&timer.timer_id, b"again"), due, again).await?;
            }
            return Ok(());
        }
        let stream: StreamId = timer.stream.parse()?;
        let scan_id = Uuid::new_v5(&timer.timer_id, b"scan");
        let meta = CommandMeta::idempotent(org_id, Actor::processor("discovery"), scan_id);
        match self.context.commands.handle::<Estate>(&stream, DiscoveryCommand::Request { scan_id }, &meta, None).await {
            Ok(_) => {}
            Err(HandleError::Domain(aurora_domain::DomainError::Discovery(aurora_domain::discovery::DiscoveryError::ScanRunning(_)))) => {}
            Err(error) => return Err(error.into()),
        }
        aurora_commands::relay::wake(&self.context.pool).await;
        Ok(())
    }

    /// A connection that has failed `AURORA_DISCOVERY_FLAG_AFTER_FAILURES` scans in a row is
    /// flagged on the connection (`connection.failed`, stage `discovery`), once a streak. One
    /// whose credentials the provider refused then needs reconnecting, and is not scanned (nor
    /// offered to the agent) until it is; any other keeps being scanned, as the flag says.
    async fn flag_failing(&self, envelope: &Envelope, scan_id: Uuid, failures: &[ProviderFailure]) -> anyhow::Result<()> {
        let threshold = self.context.config.discovery.flag_after_failures;
        let mut flagged = false;
        for failure in failures.iter().filter(|failure| threshold > 0 && failure.consecutive == threshold) {
            let Some(connection_id) = failure.connection_id else { continue };
            let failed = ConnectionFailed {
                stage: FailureStage::Discovery,
                reason: format!("the last {threshold} discovery scans could not list it: {}", failure.reason),
                needs_reconnect: failure.refused,
            };
            let meta = CommandMeta::caused_by(envelope.org_id, Actor::processor("discovery"), Uuid::new_v5(&scan_id, connection_id.as_bytes()), envelope);
                        let stream = ConnectionEvent::stream_of(connection_id);
            match self.context.commands.handle::<Connection>(&stream, ConnectionCommand::Fail(failed), &meta, None).await {
                // Removed since: there is nothing left to flag.
                Err(HandleError::Domain(aurora_domain::DomainError::Connection(
                    ConnectionError::Removed | ConnectionError::NotFound,
                ))) => {}
                outcome => {
                    outcome?;
                    flagged = true;
                }
            }
        }
        if flagged {
            aurora_commands::relay::wake(&self.context.pool).await;
        }
        Ok(())
    }

    /// The organisation's clouds that need reconnecting, as failures of this scan.
    async fn awaiting_reconnection(&self, org_id: OrgId) -> anyhow::Result<Vec<ProviderFailure>> {
        let mut read = aurora_adapters::postgres::tenant_transaction(&self.context.pool, org_id.0).await?;
        let rows: Vec<(Uuid, String, String)> = sqlx::query_as(
            "SELECT connection_id, provider, name FROM connections \
             WHERE org_id = $1 AND status = 'failed' AND needs_reconnect AND provider IN ('aws', 'gcp', 'azure') ORDER BY created_at",
        )
        .bind(org_id.0)
        .fetch_all(&mut *read)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(connection_id, provider, connection)| ProviderFailure {
                provider,
                connection,
                reason: "not scanned: the connection needs reconnecting (rotate or reconnect its credentials)".into(),
                connection_id: Some(connection_id),
                refused: true,
                consecutive: 0,
            })
            .collect())
    }

    async fn record(&self, envelope: &Envelope, scan_id: Uuid, step: &str, command: DiscoveryCommand) -> Result<(), HandleError> {
        let meta = CommandMeta::caused_by(envelope.org_id, Actor::processor("discovery"), Uuid::new_v5(&scan_id, step.as_bytes()), envelope);
                self.context.commands.handle::<Estate>(&envelope.stream, command, &meta, None).await?;
        aurora_commands::relay::wake(&self.context.pool).await;
        Ok(())
    }

    async fn scan(&self, envelope: &Envelope, scan_id: Uuid) -> anyhow::Result<()> {
        let connected = Connected::load(&self.context.pool, envelope.org_id, None).await?;
        let clouds: Vec<_> = connected
            .connections
            .iter()
            .filter(|connection| matches!(connection.provider, Provider::Aws | Provider::Gcp | Provider::Azure))
            .collect();
        let providers = clouds.iter().map(|connection| connection.provider.as_str().to_owned()).collect();
        self.record(envelope, scan_id, "start", DiscoveryCommand::Start { scan_id, providers }).await?;
        let mut found = Found::default();
        // A cloud waiting to be reconnected is not tried, and keeps what it had: failed, not gone.
        let mut failures = self.awaiting_reconnection(envelope.org_id).await?;
        for connection in clouds {
            let failure = |reason: String, refused: bool| ProviderFailure {
                provider: connection.provider.as_str().to_owned(),
                connection: connection.name.clone(),
                reason,
                connection_id: Some(connection.connection_id),
                refused,
                consecutive: 0,
            };
            // Read at the moment of use, dropped when the listing ends.
            let secret = match self.context.secrets.get(&SecretPath::connection(envelope.org_id.0, connection.connection_id)).await {
                Ok(secret) => secret,
                Err(error) => {
                    failures.push(failure(format!("its credentials could not be read: {error}"), false));
                    continue;
                }
            };
            let config = &self.context.config;
            let listed = match connection.provider {
                Provider::Aws => aws::scan(&config.connections, &config.discovery, &secret).await,
                Provider::Gcp => gcp::scan(&config.connections, &secret).await,
                Provider::Azure => azure::scan(&config.connections, &secret).await,
                _ => continue,
            };
            match listed {
                Ok(listed) => {
                    found.resources.extend(listed.resources);
                    found.dependencies.extend(listed.dependencies);
                }
                Err(error) => failures.push(failure(error.to_string(), matches!(error, ProviderError::Unauthorized { .. }))),
            }
        }
        let discovery = &self.context.config.discovery;
        let thresholds = Thresholds {
            stale_after: TimeDelta::from_std(discovery.stale_after).unwrap_or(TimeDelta::MAX),
            gone_after: TimeDelta::from_std(discovery.gone_after).unwrap_or(TimeDelta::MAX),
        };
        let (resources, dependencies, now) = (found.resources, found.dependencies, chrono::Utc::now());
        let complete = DiscoveryCommand::Complete { scan_id, resources, dependencies, failures, now, thresholds };
        match self.record(envelope, scan_id, "complete", complete).await {
            // Refused (an estate over the limit): the scan fails and says why, rather than be
            // retried for ever.
            Err(HandleError::Domain(refusal)) => {
                let failures = vec![ProviderFailure { provider: "all".into(), reason: refusal.to_string(), ..Default::default() }];
                let failed = DiscoveryCommand::Complete {
                    scan_id,
                    resources: Vec::new(),
                    dependencies: Vec::new(),
                    failures,
                    now: chrono::Utc::now(),
                    thresholds,
                };
                self.record(envelope, scan_id, "fail", failed).await?;
                Ok(())
            }
            outcome => Ok(outcome?),
        }
    }
}
