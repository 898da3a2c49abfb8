//! Clients of external systems shared by the gateway, processors and projections: one module per
//! port. Today: configuration, Postgres connections, the Kafka log, Redis, the LLM, the secret
//! store (`secrets/`), the providers' APIs (`clouds/`), the object store (`objects/`), the
//! in-process embedding model (`embeddings/`) and the vector index with the knowledge base's
//! hybrid search (`vectors/`).

pub mod clouds;
pub mod config;
pub mod consumer;
pub mod embeddings;
pub mod graph;
pub mod kafka;
pub mod llm;
pub mod metrics;
pub mod objects;
pub mod postgres;
pub mod redis;
pub mod secrets;
pub mod shutdown;
pub mod telemetry;
pub mod timers;
pub mod vectors;
pub mod wakeup;

pub use config::Config;
