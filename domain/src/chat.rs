//! The chat session aggregate: the session (created, renamed, archived, deleted) and its turns
//! with the agent. A turn's whole state — its LLM calls, tool calls, confirmations and how it
//! ended — is folded from its events, so the agent processor decides its next step from this
//! state after a restart exactly as it would have without one.

use aurora_events::chat::{
    AssistantMessageCompleted, ChatMode, ChatSessionEvent, ConfirmationDenied, ConfirmationExpired, ConfirmationGranted,
    ConfirmationRequested, LlmCallCompleted, MessageSubmitted, SessionArchived, SessionCreated, SessionDeleted, SessionRenamed,
    ToolCallCompleted, ToolCallFailed, ToolCallRequested, ToolCallStarted, TurnCancelRequested, TurnCancelled, TurnFailed, TurnFailure,
    TurnLimits, TurnStarted,
};
use aurora_events::Actor;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::text::Lines;
use crate::{Aggregate, DomainError, ErrorKind};

pub const MAX_TITLE_CHARS: usize = 200;
pub const MAX_MESSAGE_CHARS: usize = 16_000;
pub const MAX_REASON_CHARS: usize = 1_000;
pub const MAX_CONTEXT_CHARS: usize = 32_000;

#[derive(Debug, Clone, PartialEq)]
pub enum ChatSessionCommand {
    Create {
        session_id: Uuid,
        title: String,
        owner: Actor,
        /// What the conversation is about, for the agent (at most [`MAX_CONTEXT_CHARS`]).
        context: Option<String>,
    },
    Rename {
        title: String,
    },
    Archive {
        reason: Option<String>,
    },
    Delete,
    /// A user asks something (the gateway).
    Submit {
        turn_id: Uuid,
        text: String,
        mode: ChatMode,
        submitted_by: Actor,
        /// Limits in place of the agent's defaults.
        limits: Option<TurnLimits>,
    },
    /// The agent processor takes the turn.
    StartTurn {
        turn_id: Uuid,
        started_at: DateTime<Utc>,
        model: String,
        tools: Vec<String>,
    },
    RecordLlmCall(LlmCallCompleted),
    /// The agent will run a tool; a destructive one waits for the confirmation given here.
    RequestTool {
        call: ToolCallRequested,
        /// The confirmation's id, expiry and what the tool previewed for the person.
        confirmation: Option<(Uuid, DateTime<Utc>, Option<serde_json::Value>)>,
    },
    /// A destructive tool is about to run. Refused if it was started before: its outcome is unknown.
    StartTool {
        turn_id: Uuid,
        tool_call_id: String,
    },
    FinishTool {
        turn_id: Uuid,
        tool_call_id: String,
        outcome: Result<ToolCallCompleted, String>,
    },
    /// A person answers a confirmation at `answered_at`; an answer after its expiry is refused.
    AnswerConfirmation {
        confirmation_id: Uuid,
        approve: bool,
        answered_at: DateTime<Utc>,
        by: Actor,
    },
    ExpireConfirmation {
        confirmation_id: Uuid,
    },
    RequestCancel {
        turn_id: Uuid,
    },
    Cancel {
        turn_id: Uuid,
    },
    Complete(AssistantMessageCompleted),
    Fail {
        turn_id: Uuid,
        reason: TurnFailure,
        message: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TurnStatus {
    Running,
    Completed,
    Failed,
    Cancelled,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ToolOutcome {
    Completed(serde_json::Value),
    Failed(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct ToolCallState {
    pub requested: ToolCallRequested,
    pub started: bool,
    pub outcome: Option<ToolOutcome>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfirmationAnswer {
    Granted,
    Denied,
    Expired,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Confirmation {
    pub confirmation_id: Uuid,
    pub tool_call_id: String,
    pub expires_at: DateTime<Utc>,
    pub answer: Option<ConfirmationAnswer>,
    /// Who said yes.
    pub granted_by: Option<Actor>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Turn {
    pub turn_id: Uuid,
    pub mode: ChatMode,
    pub question: String,
    pub submitted_by: Actor,
    /// Limits in place of the agent's defaults.
    pub limits: Option<TurnLimits>,
    pub status: TurnStatus,
    /// Set once the agent processor took the turn.
    pub started_at: Option<DateTime<Utc>>,
    pub cancel_requested: bool,
    pub llm_calls: Vec<LlmCallCompleted>,
    pub tool_calls: Vec<ToolCallState>,
    pub confirmations: Vec<Confirmation>,
}

impl Turn {
    pub fn tool_call(&self, tool_call_id: &str) -> Option<&ToolCallState> {
        self.tool_calls.iter().find(|call| call.requested.tool_call_id == tool_call_id)
    }

    fn tool_call_mut(&mut self, tool_call_id: &str) -> Option<&mut ToolCallState> {
        self.tool_calls.iter_mut().find(|call| call.requested.tool_call_id == tool_call_id)
    }

    pub fn confirmation_for(&self, tool_call_id: &str) -> Option<&Confirmation> {
        self.confirmations.iter().find(|confirmation| confirmation.tool_call_id == tool_call_id)
    }

    /// Whether the turn waits for a person's answer.
    pub fn awaiting_confirmation(&self) -> bool {
        self.confirmations.iter().any(|confirmation| confirmation.answer.is_none())
    }
}

/// One finished question and answer, for the model's history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exchange {
    pub question: String,
    pub answer: String,
}

/// Why a chat session refused a command.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChatSessionError {
    #[error("chat session does not exist")]
    NotFound,
    #[error("chat session {0} already exists")]
    AlreadyExists(Uuid),
    #[error("chat session is archived")]
    Archived,
    #[error("a turn is running in this session; wait for it or cancel it")]
    TurnRunning,
    #[error("the turn is no longer running")]
    TurnNotRunning,
    #[error("no turn is running")]
    NoTurnRunning,
    #[error("turn does not exist")]
    TurnNotFound,
    #[error("tool call {0} does not exist")]
    ToolCallNotFound(String),
    #[error("tool call {0} already has an outcome")]
    ToolCallHasOutcome(String),
    #[error("tool call {0} was started before")]
    ToolCallStarted(String),
    #[error("confirmation does not exist")]
    ConfirmationNotFound,
    #[error("this confirmation has expired")]
    ConfirmationExpired,
    #[error("this confirmation was already answered")]
    ConfirmationAnswered,
}

impl ChatSessionError {
    pub fn kind(&self) -> ErrorKind {
        use ChatSessionError as E;
        match self {
            E::NotFound => ErrorKind::NotFound("chat session".into()),
            E::TurnNotFound => ErrorKind::NotFound("turn".into()),
            E::ToolCallNotFound(id) => ErrorKind::NotFound(format!("tool call {id}")),
            E::ConfirmationNotFound => ErrorKind::NotFound("confirmation".into()),
            E::AlreadyExists(_) => ErrorKind::AlreadyExists,
            E::Archived
            | E::TurnRunning
            | E::TurnNotRunning
            | E::NoTurnRunning
            | E::ToolCallHasOutcome(_)
            | E::ToolCallStarted(_)
            | E::ConfirmationExpired
            | E::ConfirmationAnswered => ErrorKind::InvalidState,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct ChatSession {
    pub session_id: Option<Uuid>,
    pub title: String,
    /// Who opened the session; `None` before it exists.
    pub owner: Option<Actor>,
    /// What the conversation is about, for the agent.
    pub context: Option<String>,
    pub archived: bool,
    pub deleted: bool,
    pub history: Vec<Exchange>,
    /// The latest turn, finished or not.
    pub turn: Option<Turn>,
}

/// `text` trimmed, refused when empty or longer than `max` characters.
fn bounded_text(field: &'static str, text: String, max: usize, lines: Lines) -> Result<String, DomainError> {
    let text = crate::text::bounded(field, &text, max, lines)?;
    if text.is_empty() {
        return Err(DomainError::InvalidInput { field, reason: "must not be empty".into() });
    }
    Ok(text)
}

fn valid_title(title: String) -> Result<String, DomainError> {
    bounded_text("title", title, MAX_TITLE_CHARS, Lines::One)
}

fn not_running() -> DomainError {
    ChatSessionError::TurnNotRunning.into()
}

impl Aggregate for ChatSession {
    type Command = ChatSessionCommand;
    type Event = ChatSessionEvent;

    fn decide(&self, command: ChatSessionCommand) -> Result<Vec<ChatSessionEvent>, DomainError> {
        use ChatSessionCommand as C;
        use ChatSessionEvent as E;
        match command {
            C::Create { session_id, title, owner, context } => {
                if self.exists() {
                    return Err(ChatSessionError::AlreadyExists(session_id).into());
                }
                let title = valid_title(title)?;
                let context = context
                    .map(|context| crate::text::bounded("context", &context, MAX_CONTEXT_CHARS, Lines::Many))
                    .transpose()?
                    .filter(|context| !context.is_empty());
                Ok(vec![E::Created(SessionCreated { session_id, title, owner, context })])
            }
            C::Rename { title } => {
                self.require_open()?;
                let title = valid_title(title)?;
                if title == self.title {
                    return Ok(Vec::new());
                }
                Ok(vec![E::Renamed(SessionRenamed { title })])
            }
            C::Archive { reason } => {
                self.require_present()?;
                let reason = reason
                    .map(|reason| crate::text::bounded("reason", &reason, MAX_REASON_CHARS, Lines::Many))
                    .transpose()?
                    .filter(|reason| !reason.is_empty());
                if self.archived {
                    return Ok(Vec::new());
                }
                Ok(vec![E::Archived(SessionArchived { reason })])
            }
            C::Delete => {
                if !self.exists() {
                    return Err(ChatSessionError::NotFound.into());
                }
                if self.deleted {
                    return Ok(Vec::new());
                }
                Ok(vec![E::Deleted(SessionDeleted {})])
            }
            C::Submit { turn_id, text, mode, submitted_by, limits } => {
                self.require_open()?;
                if self.running_turn().is_some() {
                    return Err(ChatSessionError::TurnRunning.into());
                }
                let text = bounded_text("text", text, MAX_MESSAGE_CHARS, Lines::Many)?;
                Ok(vec![E::MessageSubmitted(MessageSubmitted { turn_id, text, mode, submitted_by, limits })])
            }
            C::StartTurn { turn_id, started_at, model, tools } => {
                let turn = self.running(turn_id)?;
                if turn.started_at.is_some() {
                    return Ok(Vec::new());
                }
                Ok(vec![E::TurnStarted(TurnStarted { turn_id, started_at, model, tools })])
            }
            C::RecordLlmCall(call) => {
                let turn = self.running(call.turn_id)?;
                let recorded = turn.llm_calls.len() as u32;
                if call.call_index <= recorded {
                    return Ok(Vec::new());
                }
                if call.call_index != recorded + 1 {
                    return Err(DomainError::InvalidInput { field: "call_index", reason: format!("must be {}", recorded + 1) });
                }
                Ok(vec![E::LlmCallCompleted(call)])
            }
            C::RequestTool { call, confirmation } => {
                let turn = self.running(call.turn_id)?;
                if turn.tool_call(&call.tool_call_id).is_some() {
                    return Ok(Vec::new());
                }
                let mut events = vec![E::ToolCallRequested(call.clone())];
                if let Some((confirmation_id, expires_at, preview)) = confirmation {
                    events.push(E::ConfirmationRequested(ConfirmationRequested {
                        turn_id: call.turn_id,
                        confirmation_id,
                        tool_call_id: call.tool_call_id,
                        tool: call.name,
                        arguments: call.arguments,
                        expires_at,
                        preview,
                    }));
                }
                Ok(events)
            }
            C::StartTool { turn_id, tool_call_id } => {
                let turn = self.running(turn_id)?;
                let call = turn
                    .tool_call(&tool_call_id)
                    .ok_or_else(|| DomainError::from(ChatSessionError::ToolCallNotFound(tool_call_id.clone())))?;
                // Starting is the permission to run: a call whose outcome is known must not run.
                if call.outcome.is_some() {
                    return Err(ChatSessionError::ToolCallHasOutcome(tool_call_id).into());
                }
                if call.started {
                    return Err(ChatSessionError::ToolCallStarted(tool_call_id).into());
                }
                Ok(vec![E::ToolCallStarted(ToolCallStarted { turn_id, tool_call_id })])
            }
            C::FinishTool { turn_id, tool_call_id, outcome } => {
                let turn = self.running(turn_id)?;
                let call = turn
                    .tool_call(&tool_call_id)
                    .ok_or_else(|| DomainError::from(ChatSessionError::ToolCallNotFound(tool_call_id.clone())))?;
                if call.outcome.is_some() {
                    return Ok(Vec::new());
                }
                Ok(vec![match outcome {
                    Ok(completed) => E::ToolCallCompleted(completed),
                    Err(error) => E::ToolCallFailed(ToolCallFailed { turn_id, tool_call_id, error }),
                }])
            }
            C::AnswerConfirmation { confirmation_id, approve, answered_at, by } => {
                let confirmation = self
                    .turn
                    .as_ref()
                    .and_then(|turn| turn.confirmations.iter().find(|c| c.confirmation_id == confirmation_id))
                    .ok_or_else(|| DomainError::from(ChatSessionError::ConfirmationNotFound))?;
                match confirmation.answer {
                    Some(ConfirmationAnswer::Expired) => return Err(ChatSessionError::ConfirmationExpired.into()),
                    Some(_) => return Err(ChatSessionError::ConfirmationAnswered.into()),
                    None if answered_at >= confirmation.expires_at => return Err(ChatSessionError::ConfirmationExpired.into()),
                    None => {}
                }
                if self.running_turn().is_none() {
                    return Err(not_running());
                }
                Ok(vec![if approve {
                    E::ConfirmationGranted(ConfirmationGranted { confirmation_id, answered_by: Some(by) })
                } else {
                    E::ConfirmationDenied(ConfirmationDenied { confirmation_id })
                }])
            }
            C::ExpireConfirmation { confirmation_id } => {
                let pending = self.turn.as_ref().is_some_and(|turn| {
                    turn.status == TurnStatus::Running
                        && turn.confirmations.iter().any(|c| c.confirmation_id == confirmation_id && c.answer.is_none())
                });
                Ok(if pending { vec![E::ConfirmationExpired(ConfirmationExpired { confirmation_id })] } else { Vec::new() })
            }
            C::RequestCancel { turn_id } => {
                let turn = self.running_turn().ok_or_else(|| DomainError::from(ChatSessionError::NoTurnRunning))?;
                if turn.turn_id != turn_id {
                    return Err(ChatSessionError::TurnNotFound.into());
                }
                if turn.cancel_requested {
                    return Ok(Vec::new());
                }
                Ok(vec![E::TurnCancelRequested(TurnCancelRequested { turn_id })])
            }
            C::Cancel { turn_id } => {
                self.running(turn_id)?;
                Ok(vec![E::TurnCancelled(TurnCancelled { turn_id })])
            }
            C::Complete(completed) => {
                self.running(completed.turn_id)?;
                Ok(vec![E::AssistantMessageCompleted(completed)])
            }
            C::Fail { turn_id, reason, message } => {
                self.running(turn_id)?;
                Ok(vec![E::TurnFailed(TurnFailed { turn_id, reason, message })])
            }
        }
    }

    fn evolve(mut self, event: &ChatSessionEvent) -> Self {
        use ChatSessionEvent as E;
        match event {
            E::Created(created) => {
                self.session_id = Some(created.session_id);
                self.title = created.title.clone();
                self.owner = Some(created.owner.clone());
                self.context = created.context.clone();
            }
            E::Renamed(renamed) => self.title = renamed.title.clone(),
            E::Archived(_) => self.archived = true,
            E::Deleted(_) => self.deleted = true,
            E::MessageSubmitted(submitted) => {
                self.turn = Some(Turn {
                    turn_id: submitted.turn_id,
                    mode: submitted.mode,
                    question: submitted.text.clone(),
                    submitted_by: submitted.submitted_by.clone(),
                    limits: submitted.limits,
                    status: TurnStatus::Running,
                    started_at: None,
                    cancel_requested: false,
                    llm_calls: Vec::new(),
                    tool_calls: Vec::new(),
                    confirmations: Vec::new(),
                });
            }
            E::TurnStarted(started) => self.with_turn(|turn| turn.started_at = Some(started.started_at)),
            E::LlmCallCompleted(call) => self.with_turn(|turn| turn.llm_calls.push(call.clone())),
            E::ToolCallRequested(call) => {
                self.with_turn(|turn| turn.tool_calls.push(ToolCallState { requested: call.clone(), started: false, outcome: None }))
            }
            E::ToolCallStarted(started) => self.with_turn(|turn| {
                if let Some(call) = turn.tool_call_mut(&started.tool_call_id) {
                    call.started = true;
                }
            }),
            E::ToolCallCompleted(completed) => self.with_turn(|turn| {
                if let Some(call) = turn.tool_call_mut(&completed.tool_call_id) {
                    call.outcome = Some(ToolOutcome::Completed(completed.result.clone()));
                }
            }),
            E::ToolCallFailed(failed) => self.with_turn(|turn| {
                if let Some(call) = turn.tool_call_mut(&failed.tool_call_id) {
                    call.outcome = Some(ToolOutcome::Failed(failed.error.clone()));
                }
            }),
            E::ConfirmationRequested(requested) => self.with_turn(|turn| {
                turn.confirmations.push(Confirmation {
                    confirmation_id: requested.confirmation_id,
                    tool_call_id: requested.tool_call_id.clone(),
                    expires_at: requested.expires_at,
                    answer: None,
                    granted_by: None,
                })
            }),
            E::ConfirmationGranted(answer) => {
                let granted_by = answer.answered_by.clone();
                self.with_turn(|turn| {
                    if let Some(confirmation) = turn.confirmations.iter_mut().find(|c| c.confirmation_id == answer.confirmation_id) {
                        confirmation.granted_by = granted_by;
                    }
                });
                self.answer(answer.confirmation_id, ConfirmationAnswer::Granted)
            }
            E::ConfirmationDenied(answer) => self.answer(answer.confirmation_id, ConfirmationAnswer::Denied),
            E::ConfirmationExpired(answer) => self.answer(answer.confirmation_id, ConfirmationAnswer::Expired),
            E::AssistantMessageCompleted(completed) => {
                let question = self.turn.as_ref().map(|turn| turn.question.clone()).unwrap_or_default();
                self.history.push(Exchange { question, answer: completed.text.clone() });
                self.with_turn(|turn| turn.status = TurnStatus::Completed);
            }
            E::TurnCancelRequested(_) => self.with_turn(|turn| turn.cancel_requested = true),
            E::TurnCancelled(_) => self.with_turn(|turn| turn.status = TurnStatus::Cancelled),
            E::TurnFailed(_) => self.with_turn(|turn| turn.status = TurnStatus::Failed),
        }
        self
    }

    fn exists(&self) -> bool {
        self.session_id.is_some()
    }
}

impl ChatSession {
    fn require_present(&self) -> Result<(), DomainError> {
        if !self.exists() || self.deleted {
            return Err(ChatSessionError::NotFound.into());
        }
        Ok(())
    }

    fn require_open(&self) -> Result<(), DomainError> {
        self.require_present()?;
        if self.archived {
            return Err(ChatSessionError::Archived.into());
        }
        Ok(())
    }

    /// The turn in progress, if any.
    pub fn running_turn(&self) -> Option<&Turn> {
        self.turn.as_ref().filter(|turn| turn.status == TurnStatus::Running)
    }

    fn running(&self, turn_id: Uuid) -> Result<&Turn, DomainError> {
        self.running_turn().filter(|turn| turn.turn_id == turn_id).ok_or_else(not_running)
    }

    fn with_turn(&mut self, change: impl FnOnce(&mut Turn)) {
        if let Some(turn) = self.turn.as_mut() {
            change(turn);
        }
    }

    fn answer(&mut self, confirmation_id: Uuid, answer: ConfirmationAnswer) {
        self.with_turn(|turn| {
            if let Some(confirmation) = turn.confirmations.iter_mut().find(|c| c.confirmation_id == confirmation_id) {
                confirmation.answer = Some(answer);
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::given;
    use chrono::TimeZone;

    fn ana() -> Actor {
        Actor::user(Uuid::from_u128(1))
    }

    fn bo() -> Actor {
        Actor::user(Uuid::from_u128(2))
    }

    fn created() -> ChatSessionEvent {
        ChatSessionEvent::Created(SessionCreated { session_id: Uuid::nil(), title: "checkout latency".into(), owner: ana(), context: None })
    }

    #[test]
    fn a_new_session_is_created_with_a_trimmed_title() {
        given::<ChatSession>([])
            .when(ChatSessionCommand::Create { session_id: Uuid::nil(), title: "  checkout latency ".into(), owner: ana(), context: None })
            .then([created()]);
    }

    #[test]
    fn a_session_cannot_be_created_twice() {
        given::<ChatSession>([created()])
            .when(ChatSessionCommand::Create { session_id: Uuid::nil(), title: "again".into(), owner: ana(), context: None })
            .then_error(ChatSessionError::AlreadyExists(Uuid::nil()).into());
    }

    #[test]
    fn renaming_records_the_new_title_and_same_title_is_a_no_op() {
        given::<ChatSession>([created()])
            .when(ChatSessionCommand::Rename { title: "db pool".into() })
            .then([ChatSessionEvent::Renamed(SessionRenamed { title: "db pool".into() })]);
        given::<ChatSession>([created()]).when(ChatSessionCommand::Rename { title: "checkout latency".into() }).then([]);
    }

    #[test]
    fn empty_and_overlong_titles_are_refused() {
        given::<ChatSession>([created()])
            .when(ChatSessionCommand::Rename { title: "   ".into() })
            .then_error(DomainError::InvalidInput { field: "title", reason: "must not be empty".into() });
        given::<ChatSession>([created()])
            .when(ChatSessionCommand::Rename { title: "x".repeat(MAX_TITLE_CHARS + 1) })
            .then_error(DomainError::InvalidInput { field: "title", reason: format!("must be at most {MAX_TITLE_CHARS} characters") });
    }

    #[test]
    fn an_unknown_session_cannot_be_renamed_or_archived() {
        given::<ChatSession>([]).when(ChatSessionCommand::Rename { title: "x".into() }).then_error(ChatSessionError::NotFound.into());
        given::<ChatSession>([]).when(ChatSessionCommand::Archive { reason: None }).then_error(ChatSessionError::NotFound.into());
    }

    #[test]
    fn an_archived_session_takes_no_rename_and_archiving_again_is_a_no_op() {
        let archived = ChatSessionEvent::Archived(SessionArchived { reason: None });
        given::<ChatSession>([created(), archived.clone()])
            .when(ChatSessionCommand::Rename { title: "x".into() })
            .then_error(ChatSessionError::Archived.into());
        given::<ChatSession>([created(), archived]).when(ChatSessionCommand::Archive { reason: Some("done".into()) }).then([]);
    }

    fn submitted(turn_id: Uuid) -> ChatSessionEvent {
        ChatSessionEvent::MessageSubmitted(MessageSubmitted {
            turn_id,
            text: "why is checkout slow?".into(),
            mode: ChatMode::Agent,
            submitted_by: ana(),
            limits: None,
        })
    }

    fn in_an_hour() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 1, 1, 13, 0, 0).unwrap()
    }

    fn noon() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 1, 1, 12, 0, 0).unwrap()
    }

    fn archive_requested(turn_id: Uuid, confirmation_id: Uuid) -> Vec<ChatSessionEvent> {
        let call = ToolCallRequested {
            turn_id,
            tool_call_id: "call_1".into(),
            name: "archive_chat_session".into(),
            arguments: serde_json::json!({}),
            destructive: true,
        };
        vec![
            ChatSessionEvent::ToolCallRequested(call),
            ChatSessionEvent::ConfirmationRequested(ConfirmationRequested {
                turn_id,
                confirmation_id,
                tool_call_id: "call_1".into(),
                tool: "archive_chat_session".into(),
                arguments: serde_json::json!({}),
                expires_at: in_an_hour(),
                preview: None,
            }),
        ]
    }

    #[test]
    fn one_turn_runs_at_a_time() {
        let turn_id = Uuid::now_v7();
        given::<ChatSession>([created(), submitted(turn_id)])
            .when(ChatSessionCommand::Submit {
                turn_id: Uuid::now_v7(),
                text: "and now?".into(),
                mode: ChatMode::Ask,
                submitted_by: ana(),
                limits: None,
            })
            .then_error(ChatSessionError::TurnRunning.into());
        let finished = ChatSessionEvent::TurnCancelled(TurnCancelled { turn_id });
        let next = Uuid::now_v7();
        given::<ChatSession>([created(), submitted(turn_id), finished])
            .when(ChatSessionCommand::Submit {
                turn_id: next,
                text: " and now? ".into(),
                mode: ChatMode::Ask,
                submitted_by: bo(),
                limits: None,
            })
            .then([ChatSessionEvent::MessageSubmitted(MessageSubmitted {
                turn_id: next,
                text: "and now?".into(),
                mode: ChatMode::Ask,
                submitted_by: bo(),
                limits: None,
            })]);
    }

    #[test]
    fn a_confirmation_is_answered_once_and_not_after_it_expired() {
        let (turn_id, confirmation_id) = (Uuid::now_v7(), Uuid::now_v7());
        let mut history = vec![created(), submitted(turn_id)];
        history.extend(archive_requested(turn_id, confirmation_id));
        given::<ChatSession>(history.clone())
            .when(ChatSessionCommand::AnswerConfirmation { confirmation_id, approve: true, answered_at: noon(), by: ana() })
            .then([ChatSessionEvent::ConfirmationGranted(ConfirmationGranted { confirmation_id, answered_by: Some(ana()) })]);
        // A "yes" that arrives after the expiry, before the timer recorded it, is still too late.
        given::<ChatSession>(history.clone())
            .when(ChatSessionCommand::AnswerConfirmation { confirmation_id, approve: true, answered_at: in_an_hour(), by: ana() })
            .then_error(ChatSessionError::ConfirmationExpired.into());
        let mut granted = history.clone();
        granted.push(ChatSessionEvent::ConfirmationGranted(ConfirmationGranted { confirmation_id, answered_by: Some(ana()) }));
        given::<ChatSession>(granted.clone())
            .when(ChatSessionCommand::AnswerConfirmation { confirmation_id, approve: false, answered_at: noon(), by: ana() })
            .then_error(ChatSessionError::ConfirmationAnswered.into());
        given::<ChatSession>(granted).when(ChatSessionCommand::ExpireConfirmation { confirmation_id }).then([]);
        let mut expired = history;
        expired.push(ChatSessionEvent::ConfirmationExpired(ConfirmationExpired { confirmation_id }));
        given::<ChatSession>(expired)
            .when(ChatSessionCommand::AnswerConfirmation { confirmation_id, approve: true, answered_at: noon(), by: ana() })
            .then_error(ChatSessionError::ConfirmationExpired.into());
    }

    #[test]
    fn a_destructive_tool_is_started_once() {
        let (turn_id, confirmation_id) = (Uuid::now_v7(), Uuid::now_v7());
        let mut history = vec![created(), submitted(turn_id)];
        history.extend(archive_requested(turn_id, confirmation_id));
        let start = ChatSessionCommand::StartTool { turn_id, tool_call_id: "call_1".into() };
        given::<ChatSession>(history.clone())
            .when(start.clone())
            .then([ChatSessionEvent::ToolCallStarted(ToolCallStarted { turn_id, tool_call_id: "call_1".into() })]);
        let mut denied = history.clone();
        history.push(ChatSessionEvent::ToolCallStarted(ToolCallStarted { turn_id, tool_call_id: "call_1".into() }));
        given::<ChatSession>(history).when(start.clone()).then_error(ChatSessionError::ToolCallStarted("call_1".into()).into());
        // A call whose outcome is recorded (here: refused after a "no") is never started.
        denied.push(ChatSessionEvent::ConfirmationDenied(ConfirmationDenied { confirmation_id }));
        denied.push(ChatSessionEvent::ToolCallFailed(ToolCallFailed { turn_id, tool_call_id: "call_1".into(), error: "declined".into() }));
        given::<ChatSession>(denied).when(start).then_error(ChatSessionError::ToolCallHasOutcome("call_1".into()).into());
    }

    #[test]
    fn free_text_is_bounded_and_holds_no_control_characters() {
        let title_with_nul = ChatSessionCommand::Create { session_id: Uuid::nil(), title: "a\u{0}b".into(), owner: ana(), context: None };
        given::<ChatSession>([])
            .when(title_with_nul)
            .then_error(DomainError::InvalidInput { field: "title", reason: "must not contain control characters".into() });
        let long_reason = ChatSessionCommand::Archive { reason: Some("x".repeat(MAX_REASON_CHARS + 1)) };
        given::<ChatSession>([created()])
            .when(long_reason)
            .then_error(DomainError::InvalidInput { field: "reason", reason: format!("must be at most {MAX_REASON_CHARS} characters") });
        let question = ChatSessionCommand::Submit {
            turn_id: Uuid::nil(),
            text: "line one\nline two\tindented".into(),
            mode: ChatMode::Ask,
            submitted_by: ana(),
            limits: None,
        };
        given::<ChatSession>([created()]).when(question).then([ChatSessionEvent::MessageSubmitted(MessageSubmitted {
            turn_id: Uuid::nil(),
            text: "line one\nline two\tindented".into(),
            mode: ChatMode::Ask,
            submitted_by: ana(),
            limits: None,
        })]);
    }

    #[test]
    fn a_finished_turn_takes_no_more_steps_and_recording_twice_is_a_no_op() {
        let turn_id = Uuid::now_v7();
        let call = LlmCallCompleted {
            turn_id,
            call_index: 1,
            model: "m".into(),
            prompt_tokens: 1,
            completion_tokens: 1,
            latency_ms: 1,
            first_token_ms: None,
            text: "hi".into(),
            tool_calls: Vec::new(),
            finish_reason: None,
        };
        given::<ChatSession>([created(), submitted(turn_id), ChatSessionEvent::LlmCallCompleted(call.clone())])
            .when(ChatSessionCommand::RecordLlmCall(call))
            .then([]);
        given::<ChatSession>([created(), submitted(turn_id), ChatSessionEvent::TurnCancelled(TurnCancelled { turn_id })])
            .when(ChatSessionCommand::Fail { turn_id, reason: TurnFailure::LlmUnavailable, message: "x".into() })
            .then_error(ChatSessionError::TurnNotRunning.into());
    }
}
