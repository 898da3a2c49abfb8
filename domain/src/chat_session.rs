//! The chat session aggregate: created, renamed, archived. Later issues add turns to it.

use aurora_events::chat::{ChatSessionEvent, SessionArchived, SessionCreated, SessionRenamed};
use uuid::Uuid;

use crate::{Aggregate, DomainError};

pub const MAX_TITLE_CHARS: usize = 200;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChatSessionCommand {
    Create { session_id: Uuid, title: String, owner: String },
    Rename { title: String },
    Archive { reason: Option<String> },
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChatSession {
    pub session_id: Option<Uuid>,
    pub title: String,
    pub owner: String,
    pub archived: bool,
}

fn valid_title(title: String) -> Result<String, DomainError> {
    let title = title.trim().to_owned();
    if title.is_empty() {
        return Err(DomainError::InvalidInput { field: "title", reason: "must not be empty".into() });
    }
    if title.chars().count() > MAX_TITLE_CHARS {
        return Err(DomainError::InvalidInput {
            field: "title",
            reason: format!("must be at most {MAX_TITLE_CHARS} characters"),
        });
    }
    Ok(title)
}

impl Aggregate for ChatSession {
    type Command = ChatSessionCommand;
    type Event = ChatSessionEvent;

    fn decide(&self, command: ChatSessionCommand) -> Result<Vec<ChatSessionEvent>, DomainError> {
        match command {
            ChatSessionCommand::Create { session_id, title, owner } => {
                if self.exists() {
                    return Err(DomainError::AlreadyExists(format!("chat session {session_id}")));
                }
                let title = valid_title(title)?;
                Ok(vec![ChatSessionEvent::Created(SessionCreated { session_id, title, owner })])
            }
            ChatSessionCommand::Rename { title } => {
                self.require_open()?;
                let title = valid_title(title)?;
                if title == self.title {
                    return Ok(Vec::new());
                }
                Ok(vec![ChatSessionEvent::Renamed(SessionRenamed { title })])
            }
            ChatSessionCommand::Archive { reason } => {
                if !self.exists() {
                    return Err(DomainError::NotFound("chat session".into()));
                }
                if self.archived {
                    return Ok(Vec::new());
                }
                Ok(vec![ChatSessionEvent::Archived(SessionArchived { reason })])
            }
        }
    }

    fn evolve(mut self, event: &ChatSessionEvent) -> Self {
        match event {
            ChatSessionEvent::Created(created) => {
                self.session_id = Some(created.session_id);
                self.title = created.title.clone();
                self.owner = created.owner.clone();
            }
            ChatSessionEvent::Renamed(renamed) => self.title = renamed.title.clone(),
            ChatSessionEvent::Archived(_) => self.archived = true,
        }
        self
    }

    fn exists(&self) -> bool {
        self.session_id.is_some()
    }
}

impl ChatSession {
    fn require_open(&self) -> Result<(), DomainError> {
        if !self.exists() {
            return Err(DomainError::NotFound("chat session".into()));
        }
        if self.archived {
            return Err(DomainError::InvalidState("chat session is archived".into()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::given;

    fn created() -> ChatSessionEvent {
        ChatSessionEvent::Created(SessionCreated {
            session_id: Uuid::nil(),
            title: "checkout latency".into(),
            owner: "user:ana".into(),
        })
    }

    #[test]
    fn a_new_session_is_created_with_a_trimmed_title() {
        given::<ChatSession>([])
            .when(ChatSessionCommand::Create {
                session_id: Uuid::nil(),
                title: "  checkout latency ".into(),
                owner: "user:ana".into(),
            })
            .then([created()]);
    }

    #[test]
    fn a_session_cannot_be_created_twice() {
        given::<ChatSession>([created()])
            .when(ChatSessionCommand::Create { session_id: Uuid::nil(), title: "again".into(), owner: "user:ana".into() })
            .then_error(DomainError::AlreadyExists(format!("chat session {}", Uuid::nil())));
    }

    #[test]
    fn renaming_records_the_new_title_and_same_title_is_a_no_op() {
        given::<ChatSession>([created()])
            .when(ChatSessionCommand::Rename { title: "db pool".into() })
            .then([ChatSessionEvent::Renamed(SessionRenamed { title: "db pool".into() })]);
        given::<ChatSession>([created()])
            .when(ChatSessionCommand::Rename { title: "checkout latency".into() })
            .then([]);
    }

    #[test]
    fn empty_and_overlong_titles_are_refused() {
        given::<ChatSession>([created()])
            .when(ChatSessionCommand::Rename { title: "   ".into() })
            .then_error(DomainError::InvalidInput { field: "title", reason: "must not be empty".into() });
        given::<ChatSession>([created()])
            .when(ChatSessionCommand::Rename { title: "x".repeat(MAX_TITLE_CHARS + 1) })
            .then_error(DomainError::InvalidInput {
                field: "title",
                reason: format!("must be at most {MAX_TITLE_CHARS} characters"),
            });
    }

    #[test]
    fn an_unknown_session_cannot_be_renamed_or_archived() {
        given::<ChatSession>([])
            .when(ChatSessionCommand::Rename { title: "x".into() })
            .then_error(DomainError::NotFound("chat session".into()));
        given::<ChatSession>([])
            .when(ChatSessionCommand::Archive { reason: None })
            .then_error(DomainError::NotFound("chat session".into()));
    }

    #[test]
    fn an_archived_session_takes_no_rename_and_archiving_again_is_a_no_op() {
        let archived = ChatSessionEvent::Archived(SessionArchived { reason: None });
        given::<ChatSession>([created(), archived.clone()])
            .when(ChatSessionCommand::Rename { title: "x".into() })
            .then_error(DomainError::InvalidState("chat session is archived".into()));
        given::<ChatSession>([created(), archived])
            .when(ChatSessionCommand::Archive { reason: Some("done".into()) })
            .then([]);
    }
}
