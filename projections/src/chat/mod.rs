//! The chat feature's read models: sessions as the gateway lists them, and their messages.

pub mod messages;
pub mod sessions;

use std::sync::Arc;

use crate::Projections;

/// Registers the chat projections.
pub fn register(projections: &mut Projections) {
    projections.add(Arc::new(sessions::ChatSessions));
    projections.add(Arc::new(messages::ChatMessages));
}
