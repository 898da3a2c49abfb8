//! The processors role: everything that reacts to the log rather than to a request. The relay,
//! which publishes appended events to Kafka, runs here always; each feature registers its own
//! processors (`register` in `processors/src/<feature>`): the chat agent, which runs chat turns
//! with the LLM and the tools, and the connections processor (inventories, token refresh), on the
//! [`reactor`] skeleton. The agent runtime itself (`agent`) is shared by the features
//! that run the agent.

pub mod agent;
pub mod reactor;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use aurora_adapters::secrets::vault::VaultStore;
use aurora_adapters::secrets::SecretStore;
use aurora_adapters::wakeup::LogSignals;
use aurora_adapters::Config;
use aurora_commands::postgres::PostgresEventStore;
use aurora_commands::relay::Relay;
use aurora_commands::CommandHandler;
use sqlx::PgPool;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

aurora_events::features!(Processors: chat, connection, discovery, incident, knowledge);

/// What every processor is started with.
#[derive(Clone)]
pub struct Context {
    pub config: Config,
    pub pool: PgPool,
    /// Wakes consumers that rest.
    pub signals: LogSignals,
    pub commands: CommandHandler,
    /// Where every credential is kept; read at the moment of use.
    pub secrets: Arc<dyn SecretStore>,
    /// Where the discovered graph is read.
    pub graph: aurora_adapters::graph::GraphStore,
}

type Running = Pin<Box<dyn Future<Output = anyhow::Result<()>> + Send>>;
type Start = Box<dyn FnOnce(Context, CancellationToken) -> Running + Send>;

/// The processors of this build, as the features register them.
#[derive(Default)]
pub struct Processors {
    starts: Vec<(&'static str, Start)>,
}

impl Processors {
    /// Registers a processor: `start` runs it until the token is cancelled.
    pub fn add<F, R>(&mut self, name: &'static str, start: F)
    where
        F: FnOnce(Context, CancellationToken) -> R + Send + 'static,
        R: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        assert!(!self.starts.iter().any(|(known, _)| *known == name), "two processors are named `{name}`");
        self.starts.push((name, Box::new(move |context, shutdown| Box::pin(start(context, shutdown)))));
    }
}

/// Starts the relay and every registered processor on `tasks`; each runs until `shutdown`.
pub fn spawn(
    config: &Config,
    pool: PgPool,
    signals: LogSignals,
    shutdown: &CancellationToken,
    tasks: &mut JoinSet<anyhow::Result<()>>,
) -> anyhow::Result<()> {
    let relay = Relay::new(config, pool.clone(), signals.clone())?;
    let commands = CommandHandler::new(Arc::new(PostgresEventStore::new(pool.clone())));
    let secrets: Arc<dyn SecretStore> = Arc::new(VaultStore::new(&config.vault)?);
    let graph = aurora_adapters::graph::GraphStore::from_config(&config.discovery);
    let context = Context { config: config.clone(), pool, signals, commands, secrets, graph };
    let mut processors = Processors::default();
    register_features(&mut processors);
    let stop = shutdown.clone();
    tasks.spawn(async move { relay.run(stop).await });
    for (name, start) in processors.starts {
        let running = start(context.clone(), shutdown.clone());
        tasks.spawn(async move { running.await.map_err(|error| error.context(format!("processor `{name}`"))) });
    }
    Ok(())
}
