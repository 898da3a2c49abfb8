//! Clients of external systems shared by the gateway, processors and projections: one module per
//! port. Today: configuration, Postgres connections and the Kafka log.

pub mod config;
pub mod kafka;
pub mod postgres;
pub mod shutdown;

pub use config::Config;
