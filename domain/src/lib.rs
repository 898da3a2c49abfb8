//! Pure decisions. An aggregate decides which events a command produces from the state its past
//! events built, and evolves that state one event at a time. Nothing here does I/O: the write side
//! in `aurora-commands` loads, decides, and appends.

pub mod chat_session;
pub mod identity;
pub mod testing;
pub mod text;

use aurora_events::EventPayload;

/// Why a command was refused. Each variant maps to one HTTP status in the gateway.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    /// The command addresses a stream that has no events (or belongs to another organisation).
    #[error("{0} does not exist")]
    NotFound(String),
    #[error("{0} already exists")]
    AlreadyExists(String),
    /// The command is well formed but not allowed in the aggregate's current state.
    #[error("{0}")]
    InvalidState(String),
    /// The command carries a value that breaks an invariant.
    #[error("invalid {field}: {reason}")]
    InvalidInput { field: &'static str, reason: String },
}

/// A consistency boundary whose state is the fold of its events.
pub trait Aggregate: Default + Clone + Send + Sync + 'static {
    type Command: Send + Sync;
    type Event: EventPayload;

    /// The events `command` produces in `self`'s state, or why it may not happen. An empty list
    /// means the command is already satisfied and nothing needs recording.
    fn decide(&self, command: Self::Command) -> Result<Vec<Self::Event>, DomainError>;

    /// The state after `event`.
    fn evolve(self, event: &Self::Event) -> Self;

    /// Whether any event has happened to this aggregate yet.
    fn exists(&self) -> bool;
}
