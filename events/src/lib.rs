//! The public contract of Aurora's event log.
//!
//! This crate owns the envelope every event travels in, the payload types of every event, the
//! names of the topics they are published on, their CloudEvents representation and the rules for
//! reading old versions of an event. It knows nothing of Kafka, Postgres or HTTP: adapters turn
//! the pure representations defined here into records and rows.

pub mod catalog;
pub mod cloudevents;
pub mod envelope;
pub mod schema;
pub mod topics;
pub mod upcast;

pub use catalog::{DecodeError, EventPayload};
pub use envelope::{Actor, Envelope, OrgId, StreamId, StreamIdError};

/// Declares a layer's feature modules and `register_features`, which calls each module's
/// `register` with the layer's registry: `features!(Registry: chat, identity)`. A feature is one
/// entry here; a module without its `register` does not compile, so nothing can be forgotten in
/// a hand-kept list.
#[macro_export]
macro_rules! features {
    ($registry:ty: $( $feature:ident ),+ $(,)?) => {
        $( pub mod $feature; )+

        /// Lets every feature of this layer register what it contributes.
        pub fn register_features(registry: &mut $registry) {
            $( $feature::register(registry); )+
        }
    };
}

features!(catalog::Families: chat, connection, deploy, discovery, identity, incident, knowledge);
