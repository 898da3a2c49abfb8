//! Clients of external systems shared by the gateway, processors and projections: one module per
//! port. Today: configuration, Postgres connections, the Kafka log, Redis, the LLM, the secret
//! store (`secrets/`) and the providers' APIs (`clouds/`).

pub mod clouds;
pub mod config;
pub mod consumer;
pub mod kafka;
pub mod llm;
pub mod metrics;
pub mod postgres;
pub mod redis;
pub mod secrets;
pub mod shutdown;
pub mod telemetry;
pub mod timers;
pub mod wakeup;

pub use config::Config;
