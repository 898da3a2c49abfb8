//! The connection feature's processor. After a connection is made it lists what the connection
//! reaches (GCP projects, the AWS account and regions, Azure subscriptions, GitHub repositories)
//! and records it; for an OAuth connection whose access token expires it sets a durable timer,
//! and when the timer fires it renews the token with the refresh token, writes the new tokens as
//! a new version of the secret and records `connection.refreshed` (or `connection.failed` when
//! the provider refuses, so that an admin reconnects it).

use std::sync::Arc;

use async_trait::async_trait;
use aurora_adapters::clouds::{self, oauth, ProviderError};
use aurora_adapters::secrets::{SecretError, SecretPath};
use aurora_adapters::timers::{self, DueTimer};
use aurora_commands::{CommandMeta, HandleError};
use aurora_domain::connection::{Connection, ConnectionCommand};
use aurora_events::connection::{AuthMethod, ConnectionEvent, ConnectionFailed, ConnectionRefreshed, FailureStage, Provider};
use aurora_events::{Actor, Envelope, EventPayload, OrgId, StreamId};
use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::reactor::{self, Reactor};
use crate::{Context, Processors};

/// The kind of the durable timers that refresh OAuth tokens.
pub const TOKEN_REFRESH: &str = "connection_token_refresh";

/// Registers the connections processor.
pub fn register(processors: &mut Processors) {
    processors.add("connections", |context: Context, shutdown: CancellationToken| async move {
        let processor = Arc::new(ConnectionProcessor { context: context.clone(), timers_changed: Arc::new(tokio::sync::Notify::new()) });
        let timers = tokio::spawn(fire_refresh_timers(processor.clone(), shutdown.clone()));
        let outcome = reactor::run(processor, context, shutdown).await;
        let _ = timers.await;
        outcome
    });
}

pub struct ConnectionProcessor {
    context: Context,
    timers_changed: Arc<tokio::sync::Notify>,
}

fn actor() -> Actor {
    Actor::processor("connections")
}

#[async_trait]
impl Reactor for ConnectionProcessor {
    fn name(&self) -> &'static str {
        "connections"
    }

    fn topics(&self, prefix: &str) -> Vec<String> {
        vec![ConnectionEvent::topic(prefix)]
    }

    async fn react(&self, envelope: &Envelope) -> anyhow::Result<()> {
        let Ok(event) = ConnectionEvent::decode(&envelope.event_type, envelope.schema_version, envelope.payload.clone()) else {
            return Ok(());
        };
        match event {
            ConnectionEvent::Established(established) => {
                self.schedule_refresh(envelope, established.method, established.secret_version, established.expires_at).await?;
                self.record_inventory(envelope, established.provider).await
            }
            ConnectionEvent::Rotated(_) => {
                let (connection, _) = self.context.commands.load::<Connection>(&envelope.stream, envelope.org_id).await?;
                match connection.provider() {
                    Some(provider) if !connection.removed => self.record_inventory(envelope, provider).await,
                    _ => Ok(()),
                }
            }
            ConnectionEvent::Refreshed(refreshed) => {
                self.schedule_refresh(envelope, AuthMethod::Oauth, refreshed.secret_version, refreshed.expires_at).await
            }
            ConnectionEvent::Removed(_) => Ok(timers::cancel(&self.context.pool, TOKEN_REFRESH, &envelope.stream.to_string()).await?),
            ConnectionEvent::Failed(_) | ConnectionEvent::InventoryRecorded(_) => Ok(()),
        }
    }
}

impl ConnectionProcessor {
    async fn record(&self, stream: &StreamId, org_id: OrgId, key: Uuid, cause: &Envelope, command: ConnectionCommand) -> Result<(), HandleError> {
        let meta = CommandMeta::caused_by(org_id, actor(), key, cause);
                match self.context.commands.handle::<Connection>(stream, command, &meta, None).await {
            // Removed meanwhile: there is nothing left to record on it.
            Err(HandleError::Domain(aurora_domain::DomainError::Connection(aurora_domain::connection::ConnectionError::Removed))) => Ok(()),
            outcome => outcome.map(|_| ()),
        }
    }

    /// Reads the connection's credentials now and lists what they reach.
    async fn record_inventory(&self, envelope: &Envelope, provider: Provider) -> anyhow::Result<()> {
        let connection_id = Uuid::parse_str(envelope.stream.id())?;
        let key = Uuid::new_v5(&envelope.id, b"inventory");
        let secret = match self.context.secrets.get(&SecretPath::connection(envelope.org_id.0, connection_id)).await {
            Ok(secret) => secret,
            // Removed meanwhile (its secret went first): nothing to list.
            Err(SecretError::NotFound(_)) => return Ok(()),
            Err(error) => return Err(error.into()),
        };
        let command = match clouds::inventory(&self.context.config.connections, provider, &secret).await {
            Ok(items) => ConnectionCommand::RecordInventory { items },
            Err(error) => ConnectionCommand::Fail(ConnectionFailed {
                stage: FailureStage::Inventory,
                reason: format!("listing what the connection reaches failed: {error}"),
                needs_reconnect: matches!(error, ProviderError::Unauthorized { .. }),
            }),
        };
        drop(secret);
        self.record(&envelope.stream, envelope.org_id, key, envelope, command).await?;
        aurora_commands::relay::wake(&self.context.pool).await;
        Ok(())
    }

    /// Sets the timer that refreshes the access token `margin` before it expires.
    async fn schedule_refresh(&self, envelope: &Envelope, method: AuthMethod, secret_version: u64, expires_at: Option<DateTime<Utc>>) -> anyhow::Result<()> {
        let (AuthMethod::Oauth, Some(expires_at)) = (method, expires_at) else { return Ok(()) };
        let margin = chrono::Duration::from_std(self.context.config.connections.refresh_margin)?;
        let connection_id = Uuid::parse_str(envelope.stream.id())?;
        let timer_id = Uuid::new_v5(&connection_id, format!("refresh-{secret_version}").as_bytes());
        let payload = serde_json::json!({ "secret_version": secret_version });
        timers::set(&self.context.pool, timer_id, TOKEN_REFRESH, envelope.org_id.0, &envelope.stream.to_string(), &payload, expires_at - margin).await?;
        self.timers_changed.notify_one();
        Ok(())
    }

    /// Renews one connection's access token.
    async fn refresh(&self, timer: DueTimer) -> anyhow::Result<()> {
        let stream: StreamId = timer.stream.parse()?;
        let org_id = OrgId(timer.org_id);
        let (connection, _) = self.context.commands.load::<Connection>(&stream, org_id).await?;
        let (Some(established), false) = (connection.established.as_ref(), connection.removed) else { return Ok(()) };
        let config = &self.context.config.connections;
        let (provider_config, name) = match established.provider {
            Provider::Github => (&config.github, clouds::github::NAME),
            Provider::Gcp => (&config.google, clouds::gcp::NAME),
            _ => return Ok(()),
        };
        let path = SecretPath::connection(org_id.0, established.connection_id);
        let secret = self.context.secrets.get(&path).await?;
        let Some(refresh_token) = secret.get("refresh_token") else {
            let failed = ConnectionFailed { stage: FailureStage::Refresh, reason: format!("{name} gave no refresh token; reconnect it before the access token expires"), needs_reconnect: true };
            return Ok(self.record_timer(&stream, org_id, &timer, ConnectionCommand::Fail(failed)).await?);
        };
        match oauth::refresh(config, provider_config, name, refresh_token).await {
            Ok(tokens) => {
                // A provider that does not rotate refresh tokens leaves the old one in force.
                let renewed = secret.clone().with("access_token", tokens.access_token.clone()).with("refresh_token", tokens.refresh_token.clone().unwrap_or_default());
                drop(secret);
                let secret_version = self.context.secrets.put(&path, &renewed).await?;
                let refreshed = ConnectionRefreshed { secret_version, expires_at: tokens.expires_at() };
                self.record_timer(&stream, org_id, &timer, ConnectionCommand::Refresh(refreshed)).await?;
                tracing::info!(connection_id = %established.connection_id, provider = %established.provider, "access token refreshed");
                Ok(())
            }
            Err(error @ ProviderError::Unauthorized { .. }) => {
                let failed = ConnectionFailed { stage: FailureStage::Refresh, reason: format!("renewing the access token failed: {error}"), needs_reconnect: true };
                Ok(self.record_timer(&stream, org_id, &timer, ConnectionCommand::Fail(failed)).await?)
            }
            // The provider is away or slow: the timer fires again shortly.
            Err(error) => Err(anyhow::anyhow!("renewing the access token of {} failed: {error}", established.connection_id)),
        }
    }

    async fn record_timer(&self, stream: &StreamId, org_id: OrgId, timer: &DueTimer, command: ConnectionCommand) -> Result<(), HandleError> {
        let meta = CommandMeta::idempotent(org_id, actor(), timer.timer_id);
        match self.context.commands.handle::<Connection>(stream, command, &meta, None).await {
            Err(HandleError::Domain(aurora_domain::DomainError::Connection(aurora_domain::connection::ConnectionError::Removed))) => Ok(()),
            outcome => {
                outcome?;
                aurora_commands::relay::wake(&self.context.pool).await;
                Ok(())
            }
        }
    }
}

/// Fires due refresh timers as long as this process owns the connections processor's lock.
async fn fire_refresh_timers(processor: Arc<ConnectionProcessor>, shutdown: CancellationToken) {
    let pool = processor.context.pool.clone();
    aurora_adapters::consumer::lead("connection token refresh", &pool, "aurora-timers:connection_token_refresh", &shutdown, |leadership| {
        let processor = processor.clone();
        let shutdown = shutdown.clone();
        async move {
            let changed = processor.timers_changed.clone();
            let pool = processor.context.pool.clone();
            timers::run(TOKEN_REFRESH, &pool, Some(leadership), changed, shutdown, |timer| processor.refresh(timer)).await?;
            Ok(())
        }
    })
    .await;
}
