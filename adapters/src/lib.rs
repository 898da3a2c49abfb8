//! Clients of external systems shared by the gateway, processors and projections: one module per
//! port. Today: configuration, Postgres connections, the Kafka log, Redis and the LLM.

pub mod config;
pub mod consumer;
pub mod kafka;
pub mod llm;
pub mod metrics;
pub mod postgres;
pub mod redis;
pub mod shutdown;
pub mod telemetry;
pub mod wakeup;

pub use config::Config;
