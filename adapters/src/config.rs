//! Configuration in one typed place. Defaults make the local stack work; every field can be
//! overridden by an `AURORA_*` environment variable, and an unknown `AURORA_*` variable is an
//! error rather than a silent typo.

use std::net::SocketAddr;
use std::time::Duration;

#[derive(Clone)]
pub struct Config {
    /// Postgres holding the event store and the read models.
    pub database_url: String,
    /// Kafka bootstrap servers.
    pub kafka_brokers: String,
    /// Prefix of every topic name, so several installations can share a broker.
    pub topic_prefix: String,
    /// Partitions of each event topic when Aurora creates it.
    pub topic_partitions: i32,
    /// Where the gateway listens.
    pub http_addr: SocketAddr,
    /// Largest request body the gateway accepts, in bytes.
    pub max_body_bytes: usize,
    /// How long the relay waits before looking for new events when it found none.
    pub relay_idle_wait: Duration,
    /// Largest number of events the relay publishes per round.
    pub relay_batch: i64,
    /// Largest number of records a projection applies in one transaction.
    pub projection_batch: usize,
    /// Connections in each process's Postgres pool.
    pub database_pool_size: u32,
}

/// `url` with any password replaced, for logs and debug output.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_owned() };
    let Some((credentials, host)) = rest.rsplit_once('@') else { return url.to_owned() };
    match credentials.split_once(':') {
        Some((user, _password)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_owned(),
    }
}

impl std::fmt::Debug for Config {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Config")
            .field("database_url", &redact_url(&self.database_url))
            .field("kafka_brokers", &self.kafka_brokers)
            .field("topic_prefix", &self.topic_prefix)
            .field("topic_partitions", &self.topic_partitions)
            .field("http_addr", &self.http_addr)
            .field("max_body_bytes", &self.max_body_bytes)
            .field("relay_idle_wait", &self.relay_idle_wait)
            .field("relay_batch", &self.relay_batch)
            .field("projection_batch", &self.projection_batch)
            .field("database_pool_size", &self.database_pool_size)
            .finish()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("unknown configuration variable {0}; see the README for the AURORA_* variables")]
    Unknown(String),
    #[error("{name} is not valid: {reason}")]
    Invalid { name: &'static str, reason: String },
}

impl Default for Config {
    fn default() -> Self {
        Self {
            database_url: "postgres://aurora@127.0.0.1:5433/aurora".into(),
            kafka_brokers: "127.0.0.1:9092".into(),
            topic_prefix: String::new(),
            topic_partitions: 3,
            http_addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            max_body_bytes: 1024 * 1024,
            relay_idle_wait: Duration::from_millis(5),
            relay_batch: 2000,
            projection_batch: 2000,
            database_pool_size: 10,
        }
    }
}

const KNOWN: &[&str] = &[
    "AURORA_DATABASE_URL",
    "AURORA_KAFKA_BROKERS",
    "AURORA_TOPIC_PREFIX",
    "AURORA_TOPIC_PARTITIONS",
    "AURORA_HTTP_ADDR",
    "AURORA_MAX_BODY_BYTES",
    "AURORA_RELAY_IDLE_WAIT_MS",
    "AURORA_RELAY_BATCH",
    "AURORA_PROJECTION_BATCH",
    "AURORA_DATABASE_POOL_SIZE",
    "AURORA_LOG",
    "AURORA_LOG_FORMAT",
    "AURORA_KAFKA_DEBUG",
];

/// Variables read by the project's scripts and tests rather than by the configuration.
const NOT_CONFIGURATION_PREFIXES: &[&str] = &["AURORA_TEST_", "AURORA_STACK_", "AURORA_BIN"];

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_vars(std::env::vars())
    }

    pub fn from_vars(vars: impl IntoIterator<Item = (String, String)>) -> Result<Self, ConfigError> {
        let mut config = Config::default();
        for (name, value) in vars {
            if !name.starts_with("AURORA_")
                || NOT_CONFIGURATION_PREFIXES.iter().any(|prefix| name.starts_with(prefix))
            {
                continue;
            }
            match name.as_str() {
                "AURORA_DATABASE_URL" => config.database_url = value,
                "AURORA_KAFKA_BROKERS" => config.kafka_brokers = value,
                "AURORA_TOPIC_PREFIX" => config.topic_prefix = value,
                "AURORA_TOPIC_PARTITIONS" => config.topic_partitions = parse("AURORA_TOPIC_PARTITIONS", &value)?,
                "AURORA_HTTP_ADDR" => config.http_addr = parse("AURORA_HTTP_ADDR", &value)?,
                "AURORA_MAX_BODY_BYTES" => config.max_body_bytes = parse("AURORA_MAX_BODY_BYTES", &value)?,
                "AURORA_RELAY_IDLE_WAIT_MS" => {
                    config.relay_idle_wait = Duration::from_millis(parse("AURORA_RELAY_IDLE_WAIT_MS", &value)?)
                }
                "AURORA_RELAY_BATCH" => config.relay_batch = parse("AURORA_RELAY_BATCH", &value)?,
                "AURORA_PROJECTION_BATCH" => config.projection_batch = parse("AURORA_PROJECTION_BATCH", &value)?,
                "AURORA_DATABASE_POOL_SIZE" => {
                    config.database_pool_size = parse("AURORA_DATABASE_POOL_SIZE", &value)?
                }
                known if KNOWN.contains(&known) => {}
                _ => return Err(ConfigError::Unknown(name)),
            }
        }
        if config.topic_partitions < 1 {
            return Err(ConfigError::Invalid { name: "AURORA_TOPIC_PARTITIONS", reason: "must be at least 1".into() });
        }
        Ok(config)
    }
}

fn parse<T: std::str::FromStr>(name: &'static str, value: &str) -> Result<T, ConfigError>
where
    T::Err: std::fmt::Display,
{
    value.parse().map_err(|error: T::Err| ConfigError::Invalid { name, reason: error.to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(name, value)| (name.to_string(), value.to_string())).collect()
    }

    #[test]
    fn overrides_apply_and_unknown_variables_are_refused() {
        let config = Config::from_vars(vars(&[("AURORA_TOPIC_PREFIX", "t1."), ("AURORA_TEST_X", "1")])).unwrap();
        assert_eq!(config.topic_prefix, "t1.");
        let error = Config::from_vars(vars(&[("AURORA_DATABSE_URL", "x")])).unwrap_err();
        assert!(error.to_string().contains("AURORA_DATABSE_URL"));
        let error = Config::from_vars(vars(&[("AURORA_TOPIC_PARTITIONS", "many")])).unwrap_err();
        assert!(error.to_string().contains("AURORA_TOPIC_PARTITIONS"));
    }

    #[test]
    fn debug_output_never_shows_the_database_password() {
        let config = Config::from_vars(vars(&[("AURORA_DATABASE_URL", "postgres://aurora:hunter2@db:5432/aurora")])).unwrap();
        let printed = format!("{config:?}");
        assert!(!printed.contains("hunter2"), "{printed}");
        assert!(printed.contains("postgres://aurora:***@db:5432/aurora"));
    }
}
