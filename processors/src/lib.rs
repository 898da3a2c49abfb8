//! The processors role: everything that reacts to the log rather than to a request. Today: the
//! relay, which publishes appended events to Kafka, and the agent runtime, which runs chat turns
//! with the LLM and the tools. RCA, deploys, indexing and discovery join here as they arrive.

pub mod agent;

use std::sync::Arc;

use aurora_adapters::wakeup::{Announcer, LogSignals};
use aurora_adapters::Config;
use aurora_commands::postgres::PostgresEventStore;
use aurora_commands::relay::Relay;
use aurora_commands::CommandHandler;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

/// Runs every processor of this build until `shutdown`; when one fails, the others stop too.
pub async fn run(config: &Config, pool: PgPool, signals: LogSignals, shutdown: CancellationToken) -> anyhow::Result<()> {
    let relay = Relay::new(config, pool.clone(), signals.clone())?;
    let commands = CommandHandler::new(Arc::new(PostgresEventStore::new(pool.clone())));
    let deltas = agent::deltas::DeltaPublisher::new(config, Announcer::new(pool.clone()))?;
    let agent = agent::Agent::new(config, pool.clone(), commands, deltas);
    let runner = agent::runner::AgentRunner::new(config.clone(), pool, agent, signals);
    let (relay_outcome, agent_outcome) = tokio::join!(relay.run(shutdown.clone()), runner.run(shutdown.clone()));
    relay_outcome.and(agent_outcome)
}
