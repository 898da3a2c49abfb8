//! Applying a batch of consumed records to a projection's tables, isolating poison records.
//!
//! A batch is applied in one statement group under a savepoint. When that fails for a reason that
//! is not transient, the batch is applied again one record at a time, each under its own
//! savepoint, so that the record that cannot be applied is singled out and the rest go through.
//! A transient failure (the database went away) fails the whole batch, for the caller to retry.

use aurora_adapters::kafka::envelope_of;
use aurora_adapters::postgres::is_transient;
use aurora_events::Envelope;
use rdkafka::message::OwnedMessage;
use sqlx::PgConnection;

use crate::{Projection, TableNames};

/// A record that cannot be applied, and why.
#[derive(Debug)]
pub struct Poison<'a> {
    pub message: &'a OwnedMessage,
    pub error: String,
}

/// Applies `records` in order; returns the poison records, or the transient error that stopped it.
pub async fn apply_records<'a>(
    projection: &dyn Projection,
    connection: &mut PgConnection,
    tables: &TableNames,
    records: &[&'a OwnedMessage],
) -> Result<Vec<Poison<'a>>, sqlx::Error> {
    let mut poison = Vec::new();
    let mut messages: Vec<&'a OwnedMessage> = Vec::with_capacity(records.len());
    let mut envelopes: Vec<Envelope> = Vec::with_capacity(records.len());
    for message in records {
        match envelope_of(*message) {
            Ok(envelope) => {
                messages.push(message);
                envelopes.push(envelope);
            }
            Err(error) => poison.push(Poison { message, error: format!("record is not an Aurora CloudEvent: {error}") }),
        }
    }
    if envelopes.is_empty() {
        return Ok(poison);
    }
    sqlx::query("SAVEPOINT projection_batch").execute(&mut *connection).await?;
    match projection.apply(connection, tables, &envelopes).await {
        Ok(()) => {
            sqlx::query("RELEASE SAVEPOINT projection_batch").execute(&mut *connection).await?;
            return Ok(poison);
        }
        Err(error) if is_transient(&error) => return Err(error),
        Err(error) => {
            tracing::warn!(projection = projection.name(), %error, "batch failed, applying its records one by one");
            sqlx::query("ROLLBACK TO SAVEPOINT projection_batch").execute(&mut *connection).await?;
        }
    }
    for (message, envelope) in messages.into_iter().zip(envelopes) {
        sqlx::query("SAVEPOINT projection_record").execute(&mut *connection).await?;
        match projection.apply(connection, tables, std::slice::from_ref(&envelope)).await {
            Ok(()) => {
                sqlx::query("RELEASE SAVEPOINT projection_record").execute(&mut *connection).await?;
            }
            Err(error) if is_transient(&error) => return Err(error),
            Err(error) => {
                sqlx::query("ROLLBACK TO SAVEPOINT projection_record").execute(&mut *connection).await?;
                poison.push(Poison { message, error: format!("{} cannot apply {}: {error}", projection.name(), envelope.event_type) });
            }
        }
    }
    sqlx::query("RELEASE SAVEPOINT projection_batch").execute(&mut *connection).await?;
    Ok(poison)
}
