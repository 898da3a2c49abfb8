//! The processors role: everything that reacts to the log rather than to a request. Today that is
//! the relay, which publishes appended events to Kafka; the agent runtime, RCA, deploys, indexing
//! and discovery join it here as later issues add them.

use aurora_adapters::Config;
use aurora_commands::relay::Relay;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

/// Runs every processor of this build until `shutdown`.
pub async fn run(config: &Config, pool: PgPool, shutdown: CancellationToken) -> anyhow::Result<()> {
    let relay = Relay::new(config, pool)?;
    relay.run(shutdown).await
}
