//! The discovery feature's processor: when a scan is asked for, it reads each connected cloud's
//! credentials from the secret store at that moment, lists its resources, infers the
//! dependencies between them with their evidence, and records the scan as the estate aggregate
//! decides it: exactly what changed since the last one. One provider failing fails only itself.
//! A processor that dies mid-scan lists again when the request is delivered again; the
//! aggregate makes the second completion a no-op and the first one whole.

mod aws;

use std::sync::Arc;

use async_trait::async_trait;
use aurora_adapters::secrets::SecretPath;
use aurora_commands::{CommandMeta, HandleError};
use aurora_domain::discovery::{DiscoveryCommand, Estate};
use aurora_events::connection::Provider;
use aurora_events::discovery::{Dependency, DiscoveryEvent, ProviderFailure, Resource};
use aurora_events::{Actor, Envelope, EventPayload};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::agent::tools::Connected;
use crate::reactor::{self, Reactor};
use crate::{Context, Processors};

/// Registers the discovery processor.
pub fn register(processors: &mut Processors) {
    processors.add("discovery", |context: Context, shutdown: CancellationToken| async move {
        reactor::run(Arc::new(DiscoveryProcessor { context: context.clone() }), context, shutdown).await
    });
}

pub struct DiscoveryProcessor {
    context: Context,
}

#[async_trait]
impl Reactor for DiscoveryProcessor {
    fn name(&self) -> &'static str {
        "discovery"
    }

    fn topics(&self, prefix: &str) -> Vec<String> {
        vec![DiscoveryEvent::topic(prefix)]
    }

    async fn react(&self, envelope: &Envelope) -> anyhow::Result<()> {
        let Ok(DiscoveryEvent::ScanRequested(requested)) =
            DiscoveryEvent::decode(&envelope.event_type, envelope.schema_version, envelope.payload.clone())
        else {
            return Ok(());
        };
        self.scan(envelope, requested.scan_id).await
    }
}

/// What one scan found.
#[derive(Default)]
pub struct Found {
    pub resources: Vec<Resource>,
    pub dependencies: Vec<Dependency>,
}

impl DiscoveryProcessor {
    async fn record(&self, envelope: &Envelope, scan_id: Uuid, step: &str, command: DiscoveryCommand) -> Result<(), HandleError> {
        let mut meta = CommandMeta::idempotent(envelope.org_id, Actor::processor("discovery"), Uuid::new_v5(&scan_id, step.as_bytes()));
        meta.causation_id = Some(envelope.id);
        meta.correlation_id = envelope.correlation_id;
        meta.traceparent = envelope.traceparent.clone();
        self.context.commands.handle::<Estate>(&envelope.stream, command, &meta, None).await?;
        aurora_commands::relay::wake(&self.context.pool).await;
        Ok(())
    }

    async fn scan(&self, envelope: &Envelope, scan_id: Uuid) -> anyhow::Result<()> {
        let connected = Connected::load(&self.context.pool, envelope.org_id).await?;
        let clouds: Vec<_> = connected
            .connections
            .iter()
            .filter(|connection| matches!(connection.provider, Provider::Aws | Provider::Gcp | Provider::Azure))
            .collect();
        let providers = clouds.iter().map(|connection| connection.provider.as_str().to_owned()).collect();
        self.record(envelope, scan_id, "start", DiscoveryCommand::Start { scan_id, providers }).await?;
        let mut found = Found::default();
        let mut failures = Vec::new();
        for connection in clouds {
            let failure = |reason: String| ProviderFailure {
                provider: connection.provider.as_str().to_owned(),
                connection: connection.name.clone(),
                reason,
            };
            if connection.provider != Provider::Aws {
                failures.push(failure(format!("{} is not scanned yet: this build discovers AWS only", connection.provider.title())));
                continue;
            }
            // Read at the moment of use, dropped when the listing ends.
            let secret = match self.context.secrets.get(&SecretPath::connection(envelope.org_id.0, connection.connection_id)).await {
                Ok(secret) => secret,
                Err(error) => {
                    failures.push(failure(format!("its credentials could not be read: {error}")));
                    continue;
                }
            };
            match aws::scan(&self.context.config.connections, &secret).await {
                Ok(listed) => {
                    found.resources.extend(listed.resources);
                    found.dependencies.extend(listed.dependencies);
                }
                Err(error) => failures.push(failure(error.to_string())),
            }
        }
        let complete =
            DiscoveryCommand::Complete { scan_id, resources: found.resources, dependencies: found.dependencies, failures };
        self.record(envelope, scan_id, "complete", complete).await?;
        Ok(())
    }
}
