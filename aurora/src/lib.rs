//! The one assembly of Aurora's roles. `aurora up`, the role subcommands (`gateway`,
//! `processors`, `projections`), the end-to-end tests and the benchmarks all start the roles
//! through [`Application::start`], so what runs in a test is what runs in production.

use std::net::SocketAddr;

use aurora_adapters::wakeup::LogSignals;
use aurora_adapters::Config;
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// A role this process takes on.
pub enum Role {
    /// The HTTP gateway, serving on the listener.
    Gateway(TcpListener),
    /// The relay and every processor.
    Processors,
    /// The projections named, or all of them when the list is empty.
    Projections(Vec<String>),
}

/// Roles running in this process.
pub struct Application {
    shutdown: CancellationToken,
    tasks: JoinSet<anyhow::Result<()>>,
    gateway_address: Option<SocketAddr>,
}

impl Application {
    /// Starts `roles` on `pool` until `shutdown` is cancelled. The roles of a process share one
    /// listener for wake-ups ([`LogSignals`]).
    pub async fn start(config: &Config, pool: PgPool, roles: Vec<Role>, shutdown: CancellationToken) -> anyhow::Result<Self> {
        aurora_adapters::telemetry::install(&config.telemetry)?;
        let signals = LogSignals::listen(&config.database.url, shutdown.clone());
        let mut tasks = JoinSet::new();
        let mut gateway_address = None;
        for role in roles {
            match role {
                Role::Gateway(listener) => {
                    gateway_address = Some(listener.local_addr()?);
                    let state = aurora_gateway::AppState::new(config.clone(), pool.clone(), &signals, shutdown.clone()).await?;
                    tasks.spawn(aurora_gateway::serve(state, listener, shutdown.clone()));
                }
                Role::Processors => aurora_processors::spawn(config, pool.clone(), signals.clone(), &shutdown, &mut tasks)?,
                Role::Projections(only) => {
                    let projections = aurora_projections::all_projections(config);
                    if let Some(unknown) = only.iter().find(|name| !projections.iter().any(|projection| projection.name() == name.as_str()))
                    {
                        anyhow::bail!("unknown projection `{unknown}`");
                    }
                    for projection in projections {
                        if !only.is_empty() && !only.iter().any(|name| name == projection.name()) {
                            continue;
                        }
                        let runner =
                            aurora_projections::runner::ProjectionRunner::new(projection, pool.clone(), config.clone(), signals.clone());
                        let shutdown = shutdown.clone();
                        tasks.spawn(async move { runner.run(shutdown).await });
                    }
                }
            }
        }
        Ok(Self { shutdown, tasks, gateway_address })
    }

    /// Where the gateway listens, when this process runs it.
    pub fn gateway_address(&self) -> Option<SocketAddr> {
        self.gateway_address
    }

    /// Cancelling this stops every role.
    pub fn shutdown(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Runs until every role has stopped; when one fails, the others are stopped too, and the
    /// first failure is returned.
    pub async fn wait(mut self) -> anyhow::Result<()> {
        let mut outcome = Ok(());
        while let Some(joined) = self.tasks.join_next().await {
            let result = joined.map_err(anyhow::Error::from).and_then(|inner| inner);
            if let Err(error) = result {
                tracing::error!(error = %format!("{error:#}"), "a role failed; stopping the others");
                self.shutdown.cancel();
                if outcome.is_ok() {
                    outcome = Err(error);
                }
            }
        }
        // The batch exporter's flush blocks while its task, on this runtime, sends the spans.
        let _ = tokio::task::spawn_blocking(aurora_adapters::telemetry::flush).await;
        outcome
    }

    /// Stops every role and waits for them.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        self.wait().await
    }
}
