//! Pure decisions. An aggregate decides which events a command produces from the state its past
//! events built, and evolves that state one event at a time. Nothing here does I/O: the write side
//! in `aurora-commands` loads, decides, and appends.

pub mod chat;
pub mod connection;
pub mod deploy;
pub mod discovery;
pub mod identity;
pub mod incident;
pub mod knowledge;
pub mod testing;
pub mod text;

use aurora_events::EventPayload;

/// Why a command was refused: the aggregate's own typed reason, or a value that breaks an
/// invariant. [`DomainError::kind`] is what the gateway answers with (one HTTP status per kind).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    #[error(transparent)]
    ChatSession(#[from] chat::ChatSessionError),
    #[error(transparent)]
    Connection(#[from] connection::ConnectionError),
    #[error(transparent)]
    Deploy(#[from] deploy::DeployError),
    #[error(transparent)]
    Discovery(#[from] discovery::DiscoveryError),
    #[error(transparent)]
    Identity(#[from] identity::IdentityError),
    #[error(transparent)]
    Incident(#[from] incident::IncidentError),
    #[error(transparent)]
    Knowledge(#[from] knowledge::KnowledgeError),
    /// The command carries a value that breaks an invariant.
    #[error("invalid {field}: {reason}")]
    InvalidInput { field: &'static str, reason: String },
}

/// What kind of refusal an error is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ErrorKind {
    /// What the command addresses does not exist (or belongs to another organisation); names it.
    NotFound(String),
    /// What the command would create exists already.
    AlreadyExists,
    /// The command is well formed but not allowed in the aggregate's current state.
    InvalidState,
    /// The command carries a value that breaks an invariant.
    InvalidInput { field: &'static str, reason: String },
    /// The organisation has used up what it may keep.
    QuotaExceeded,
}

impl DomainError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            DomainError::ChatSession(error) => error.kind(),
            DomainError::Connection(error) => error.kind(),
            DomainError::Deploy(error) => error.kind(),
            DomainError::Discovery(error) => error.kind(),
            DomainError::Identity(_) => ErrorKind::InvalidState,
            DomainError::Incident(error) => error.kind(),
            DomainError::Knowledge(error) => error.kind(),
            DomainError::InvalidInput { field, reason } => ErrorKind::InvalidInput { field, reason: reason.clone() },
        }
    }
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
