//! Projections: Kafka consumers that fold events into Postgres read models.
//!
//! A projection names the tables it owns and applies batches of events to them. The runner
//! (`runner`) stores the consumed offset of every partition in `projection_offsets`, in the same
//! transaction as the rows a batch wrote, so a crash neither applies an event twice nor skips one.
//! `replay` rebuilds a projection from offset zero into fresh tables and swaps them in.

pub mod apply;
pub mod replay;
pub mod runner;

aurora_events::features!(Projections: audit, chat, connection, deploy, discovery, incident, knowledge);

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use aurora_adapters::Config;
use aurora_events::Envelope;
use sqlx::PgConnection;

/// Physical names of a projection's tables: the live names, or the fresh tables of a rebuild.
#[derive(Debug, Clone, Default)]
pub struct TableNames {
    renamed: HashMap<&'static str, String>,
}

impl TableNames {
    pub fn live() -> Self {
        Self::default()
    }

    pub fn with_suffix(tables: &[&'static str], suffix: &str) -> Self {
        Self { renamed: tables.iter().map(|table| (*table, format!("{table}{suffix}"))).collect() }
    }

    /// The physical name of the table whose live name is `table`.
    pub fn get<'a>(&'a self, table: &'a str) -> &'a str {
        self.renamed.get(table).map(String::as_str).unwrap_or(table)
    }
}

#[async_trait]
pub trait Projection: Send + Sync + 'static {
    /// Stable name: the consumer group, the key of its offsets, the argument of `aurora replay`.
    fn name(&self) -> &'static str;

    /// Stream categories whose topics it consumes.
    fn categories(&self) -> Vec<&'static str>;

    /// Live names of the tables it owns (created by migrations; rebuilt by replay).
    fn tables(&self) -> &'static [&'static str];

    /// Applies `events` in order. Must be idempotent per event: the relay delivers at least once.
    async fn apply(&self, connection: &mut PgConnection, tables: &TableNames, events: &[Envelope]) -> Result<(), sqlx::Error>;

    /// Topics it consumes under `prefix`.
    fn topics(&self, prefix: &str) -> Vec<String> {
        self.categories().into_iter().map(|category| aurora_events::topics::topic_for_category(prefix, category)).collect()
    }
}

/// The projections of this build, as the features register them under one configuration (a
/// projection into an optional store registers only when that store is configured).
pub struct Projections<'c> {
    config: &'c Config,
    all: Vec<Arc<dyn Projection>>,
}

impl Projections<'_> {
    pub fn config(&self) -> &Config {
        self.config
    }

    /// Registers `projection`; its name must be new.
    pub fn add(&mut self, projection: Arc<dyn Projection>) {
        assert!(!self.all.iter().any(|known| known.name() == projection.name()), "two projections are named `{}`", projection.name());
        self.all.push(projection);
    }
}

/// Every projection of this build that runs under `config`.
pub fn all_projections(config: &Config) -> Vec<Arc<dyn Projection>> {
    let mut projections = Projections { config, all: Vec::new() };
    register_features(&mut projections);
    projections.all
}

pub fn projection_named(config: &Config, name: &str) -> Option<Arc<dyn Projection>> {
    all_projections(config).into_iter().find(|projection| projection.name() == name)
}
