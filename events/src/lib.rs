//! The public contract of Aurora's event log.
//!
//! This crate owns the envelope every event travels in, the payload types of every event, the
//! names of the topics they are published on, their CloudEvents representation and the rules for
//! reading old versions of an event. It knows nothing of Kafka, Postgres or HTTP: adapters turn
//! the pure representations defined here into records and rows.

pub mod catalog;
pub mod chat;
pub mod cloudevents;
pub mod envelope;
pub mod identity;
pub mod schema;
pub mod topics;
pub mod upcast;

pub use catalog::{DecodeError, EventPayload};
pub use envelope::{Actor, ActorKind, Envelope, OrgId, StreamId, StreamIdError};
