//! Postgres connections. A database that is down for a moment at start-up is waited for, with
//! backoff, rather than failing the process.

use secrecy::ExposeSecret;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{ConnectOptions, Connection};

use crate::config::Config;

pub async fn connect(config: &Config) -> anyhow::Result<PgPool> {
    connect_url(config.database.url.expose_secret(), config.database.pool_size).await
}

pub async fn connect_url(url: &str, pool_size: u32) -> anyhow::Result<PgPool> {
    let options: PgConnectOptions = url
        .parse::<PgConnectOptions>()
        .map_err(|error| anyhow::anyhow!("database url is not valid: {error}"))?
        .log_statements(log::LevelFilter::Trace)
        .log_slow_statements(log::LevelFilter::Warn, Duration::from_secs(2));
    let mut delay = Duration::from_millis(100);
    let mut attempts = 0;
    loop {
        let pool = PgPoolOptions::new()
            .max_connections(pool_size)
            // A ping before every checkout doubles the round trips of a one-statement command; a
            // broken connection shows on use instead, and callers retry transient errors.
            .test_before_acquire(false)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options.clone())
            .await;
        match pool {
            Ok(pool) => return Ok(pool),
            Err(error) if attempts < 20 && is_transient(&error) => {
                attempts += 1;
                tracing::warn!(%error, attempt = attempts, "postgres not reachable yet, retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(2));
            }
            Err(error) => return Err(anyhow::Error::new(error).context("connecting to postgres")),
        }
    }
}

/// Errors worth retrying: the server or the connection went away, or it is starting up.
pub fn is_transient(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Protocol(_) => true,
        sqlx::Error::Database(database_error) => {
            let code = database_error.code().unwrap_or_default();
            // 08: connection exception, 57P: operator intervention (shutdown, cannot connect now),
            // 40001/40P01: serialization failure and deadlock, 53: insufficient resources.
            code.starts_with("08") || code.starts_with("57P") || code == "40001" || code == "40P01" || code.starts_with("53")
        }
        _ => false,
    }
}

/// The application name of the connection that holds (or waits for) leadership `name`, so
/// that operators and tests can find it in `pg_stat_activity`.
pub fn leadership_application_name(name: &str) -> String {
    format!("aurora lock {name}")
}

/// Leadership of one piece of work (the relay, a projection, a processor): the session-level
/// advisory lock `name`, held on a connection of its own for as long as this instance leads.
///
/// A lock is only as good as the session that holds it: an administrator, a network fault or a
/// database failover can end that session while the leader still believes it leads, and another
/// instance then takes the lock. So a leader [`fence`](Leadership::fence)s every side effect:
/// it asks its own session before acting, and once that fails it has lost, for good —
/// [`lost`](Leadership::lost) is cancelled and everything the leader runs must stop.
pub struct Leadership {
    name: String,
    connection: tokio::sync::Mutex<Option<sqlx::PgConnection>>,
    lost: tokio_util::sync::CancellationToken,
}

#[derive(Debug, thiserror::Error)]
#[error("leadership of {0} was lost; this instance stops acting on it")]
pub struct LeadershipLost(pub String);

impl Leadership {
    /// Waits until this process holds the lock `name`. `None` when `shutdown` came first.
    pub async fn acquire(pool: &PgPool, name: &str, shutdown: &tokio_util::sync::CancellationToken) -> anyhow::Result<Option<Self>> {
        // A connection of its own, not one of the pool's: a leader holds it as long as it leads,
        // and every leader of a process taking a pool slot for good would starve the requests
        // that share the pool.
        let options = pool.connect_options().as_ref().clone().application_name(&leadership_application_name(name));
        let mut connection = sqlx::PgConnection::connect_with(&options).await?;
        loop {
            let locked: bool =
                sqlx::query_scalar("SELECT pg_try_advisory_lock(hashtext($1))").bind(name).fetch_one(&mut connection).await?;
            if locked {
                tracing::info!(lock = name, "leading");
                return Ok(Some(Self {
                    name: name.to_owned(),
                    connection: tokio::sync::Mutex::new(Some(connection)),
                    lost: tokio_util::sync::CancellationToken::new(),
                }));
            }
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(None),
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            }
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Cancelled once leadership is known to be lost.
    pub fn lost(&self) -> tokio_util::sync::CancellationToken {
        self.lost.clone()
    }

    /// Proves that this instance still leads, right before a side effect: the session that holds
    /// the lock answers. Fails for good once it did not.
    pub async fn fence(&self) -> Result<(), LeadershipLost> {
        let lost = || LeadershipLost(self.name.clone());
        if self.lost.is_cancelled() {
            return Err(lost());
        }
        let mut connection = self.connection.lock().await;
        let Some(held) = connection.as_mut() else { return Err(lost()) };
        match sqlx::query("SELECT 1").execute(&mut *held).await {
            Ok(_) => Ok(()),
            Err(error) => {
                tracing::error!(lock = %self.name, %error, "leadership lost: the session holding the lock is gone");
                *connection = None;
                self.lost.cancel();
                Err(lost())
            }
        }
    }

    /// The leader's own connection: writes that must only happen while this instance leads (a
    /// relay checkpoint) go through the session that holds the lock.
    pub async fn connection(&self) -> Result<tokio::sync::MappedMutexGuard<'_, sqlx::PgConnection>, LeadershipLost> {
        let guard = self.connection.lock().await;
        tokio::sync::MutexGuard::try_map(guard, Option::as_mut).map_err(|_| LeadershipLost(self.name.clone()))
    }

    /// Gives the lock up (closing the connection would too).
    pub async fn release(self) {
        let Some(mut connection) = self.connection.into_inner() else { return };
        if let Err(error) = sqlx::query("SELECT pg_advisory_unlock(hashtext($1))").bind(&self.name).execute(&mut connection).await {
            tracing::debug!(lock = %self.name, %error, "releasing leadership failed; the session ends with the connection");
        }
    }
}

/// A transaction on the read models that sees one organisation only: it runs as the
/// `aurora_tenant` role with `aurora.org_id` set, and row-level security (migrations/0005)
/// filters every read-model table by it, whatever the queries inside say. The role can read no
/// event store, session or hash. The gateway's reads and the agent's tools both go through here.
pub async fn tenant_transaction(pool: &PgPool, org_id: uuid::Uuid) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, sqlx::Error> {
    let mut transaction = pool.begin().await?;
    sqlx::query("SELECT set_config('role', 'aurora_tenant', true), set_config('aurora.org_id', $1, true)")
        .bind(org_id.to_string())
        .execute(&mut *transaction)
        .await?;
    Ok(transaction)
}
