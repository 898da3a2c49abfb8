//! The write side: the event store port and its implementations, command handling (load, decide,
//! append, retry on conflict) and the relay that publishes appended events to Kafka.

pub mod handler;
#[cfg(feature = "kurrentdb")]
pub mod kurrentdb;
pub mod postgres;
pub mod relay;
pub mod store;

pub use handler::{CommandHandler, CommandMeta, HandleError, Handled};
pub use store::{AppendRequest, AppendResult, EventStore, ExpectedVersion, NewEvent, StoreError};

/// Applies every migration of the event store and the read models.
pub async fn migrate(pool: &sqlx::PgPool) -> anyhow::Result<()> {
    sqlx::migrate!("../migrations").run(pool).await?;
    Ok(())
}
