//! Clients of external systems shared by the gateway, processors and projections: one module per
//! port. Today: configuration, Postgres connections, the Kafka log and Redis.

pub mod config;
pub mod kafka;
pub mod postgres;
pub mod redis;
pub mod shutdown;

pub use config::Config;
