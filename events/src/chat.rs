//! Events of the chat session stream (`chat-<session id>`): the session itself, and every turn of
//! the conversation with the agent — the question, each LLM call, each tool call and its outcome,
//! each confirmation and its answer, and the final answer. A turn's state is these events: a
//! restarted agent processor resumes a turn from them. Token deltas are not events (they ride the
//! short-retention deltas topic); the completed message is.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::event_family;
use crate::Actor;

/// `chat.session_created`: a user opened a chat session.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SessionCreated {
    pub session_id: Uuid,
    pub title: String,
    /// The user the session belongs to (`user:<id>`).
    pub owner: Actor,
    /// What the agent is told the conversation is about (an incident and its RCA, for a
    /// follow-up chat), in every turn's prompt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<String>,
}

/// `chat.session_renamed`: the session's title changed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SessionRenamed {
    pub title: String,
}

/// `chat.session_archived`: the session was archived; it stays readable but takes no new turns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SessionArchived {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// `chat.session_deleted`: the session was deleted; it no longer shows in lists or takes turns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SessionDeleted {}

/// Which tools a turn may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ChatMode {
    /// Read-only tools only; destructive tools are not offered at all.
    Ask,
    /// Every tool; destructive ones run only after a person confirms.
    Agent,
}

/// `chat.message_submitted`: a user asked something; the agent processor starts a turn.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct MessageSubmitted {
    pub turn_id: Uuid,
    pub text: String,
    pub mode: ChatMode,
    /// The user who asked (`user:<id>`); the agent runs tools with this user's identity. A
    /// background investigation is asked by `processor:investigator`, with a viewer's reach.
    pub submitted_by: Actor,
    /// Limits of this turn in place of the agent's defaults (a background investigation's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<TurnLimits>,
}

/// What one turn may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct TurnLimits {
    pub llm_calls: u32,
    pub tool_calls: u32,
    pub wall_time_secs: u64,
    /// Prompt and completion tokens of every model call of the turn, together.
    pub tokens: u32,
}

/// `chat.turn_started`: the agent processor took the turn.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TurnStarted {
    pub turn_id: Uuid,
    /// When the turn's wall-time limit started counting.
    pub started_at: DateTime<Utc>,
    pub model: String,
    /// The tools offered to the model in this turn.
    pub tools: Vec<String>,
}

/// A tool call as the model asked for it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ModelToolCall {
    pub tool_call_id: String,
    pub name: String,
    /// The arguments as the model wrote them (JSON text, not always valid).
    pub arguments: String,
}

/// `llm.call_completed`: one streamed call to the LLM finished.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct LlmCallCompleted {
    pub turn_id: Uuid,
    /// 1 for the turn's first call.
    pub call_index: u32,
    pub model: String,
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
    /// From the request to the last chunk.
    pub latency_ms: u64,
    /// From the request to the first chunk with content or a tool call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_token_ms: Option<u64>,
    /// The text the model wrote in this call.
    pub text: String,
    pub tool_calls: Vec<ModelToolCall>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finish_reason: Option<String>,
}

/// `tool_call.requested`: the agent will run a tool the model asked for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ToolCallRequested {
    pub turn_id: Uuid,
    pub tool_call_id: String,
    pub name: String,
    pub arguments: serde_json::Value,
    /// A destructive tool runs only after `confirmation.granted`.
    pub destructive: bool,
}

/// `tool_call.started`: a destructive tool is about to run. Recorded before it runs, so that a
/// processor that dies while it runs never runs it again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ToolCallStarted {
    pub turn_id: Uuid,
    pub tool_call_id: String,
}

/// `tool_call.completed`: the tool answered. Large results are cut to the tool's cap here; the
/// whole result stays readable through the API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ToolCallCompleted {
    pub turn_id: Uuid,
    pub tool_call_id: String,
    /// The result, or its first `cap` bytes as a string when `truncated`.
    pub result: serde_json::Value,
    pub truncated: bool,
    /// Size of the whole result, in bytes of JSON.
    pub result_bytes: u64,
    pub duration_ms: u64,
}

/// `tool_call.failed`: the tool could not give a result (bad arguments, an error, a timeout, a
/// refused confirmation, or an outcome nobody knows because the processor stopped while it ran).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ToolCallFailed {
    pub turn_id: Uuid,
    pub tool_call_id: String,
    pub error: String,
}

/// `confirmation.requested`: a destructive tool waits for a person's yes or no.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ConfirmationRequested {
    pub turn_id: Uuid,
    pub confirmation_id: Uuid,
    pub tool_call_id: String,
    pub tool: String,
    pub arguments: serde_json::Value,
    pub expires_at: DateTime<Utc>,
    /// What the tool would do, as the tool itself read it before asking (e.g. the plan a deploy
    /// would apply): what the person approves.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preview: Option<serde_json::Value>,
}

/// `confirmation.granted`: a person said yes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ConfirmationGranted {
    pub confirmation_id: Uuid,
    /// Who said yes (absent in events recorded before it was kept).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answered_by: Option<Actor>,
}

/// `confirmation.denied`: a person said no.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ConfirmationDenied {
    pub confirmation_id: Uuid,
}

/// `confirmation.expired`: nobody answered in time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ConfirmationExpired {
    pub confirmation_id: Uuid,
}

/// `chat.assistant_message_completed`: the turn's final answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct AssistantMessageCompleted {
    pub turn_id: Uuid,
    pub text: String,
    pub llm_calls: u32,
    pub tool_calls: u32,
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
}

/// `chat.turn_cancel_requested`: a person asked to stop the running turn.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TurnCancelRequested {
    pub turn_id: Uuid,
}

/// `chat.turn_cancelled`: the turn stopped at the next step after a cancel request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TurnCancelled {
    pub turn_id: Uuid,
}

/// Why a turn ended without an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum TurnFailure {
    /// The LLM endpoint could not be reached, answered with an error or timed out.
    LlmUnavailable,
    /// The turn reached its limit of LLM calls.
    LlmCallLimit,
    /// The turn reached its limit of tool calls.
    ToolCallLimit,
    /// The turn ran longer than its wall-time limit.
    WallTimeLimit,
    /// The turn's model calls used more tokens than its limit.
    TokenLimit,
}

/// `chat.turn_failed`: the turn ended without an answer; `message` says why, for the user.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TurnFailed {
    pub turn_id: Uuid,
    pub reason: TurnFailure,
    pub message: String,
}

event_family! {
    /// Everything that happens to one chat session.
    pub enum ChatSessionEvent in "chat", named by ChatEventType {
        Created(SessionCreated) = ("chat.session_created", 1),
        Renamed(SessionRenamed) = ("chat.session_renamed", 1),
        Archived(SessionArchived) = ("chat.session_archived", 1),
        Deleted(SessionDeleted) = ("chat.session_deleted", 1),
        MessageSubmitted(MessageSubmitted) = ("chat.message_submitted", 1),
        TurnStarted(TurnStarted) = ("chat.turn_started", 1),
        LlmCallCompleted(LlmCallCompleted) = ("llm.call_completed", 1),
        ToolCallRequested(ToolCallRequested) = ("tool_call.requested", 1),
        ToolCallStarted(ToolCallStarted) = ("tool_call.started", 1),
        ToolCallCompleted(ToolCallCompleted) = ("tool_call.completed", 1),
        ToolCallFailed(ToolCallFailed) = ("tool_call.failed", 1),
        ConfirmationRequested(ConfirmationRequested) = ("confirmation.requested", 1),
        ConfirmationGranted(ConfirmationGranted) = ("confirmation.granted", 1),
        ConfirmationDenied(ConfirmationDenied) = ("confirmation.denied", 1),
        ConfirmationExpired(ConfirmationExpired) = ("confirmation.expired", 1),
        AssistantMessageCompleted(AssistantMessageCompleted) = ("chat.assistant_message_completed", 1),
        TurnCancelRequested(TurnCancelRequested) = ("chat.turn_cancel_requested", 1),
        TurnCancelled(TurnCancelled) = ("chat.turn_cancelled", 1),
        TurnFailed(TurnFailed) = ("chat.turn_failed", 1),
    }
}

/// Registers this feature's event families.
pub fn register(families: &mut crate::catalog::Families) {
    families.add::<ChatSessionEvent>();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::{DecodeError, EventPayload};
    use crate::upcast::Upcasters;

    #[test]
    fn payloads_round_trip_through_their_type_name() {
        let event = ChatSessionEvent::Renamed(SessionRenamed { title: "db latency".into() });
        let decoded = ChatSessionEvent::decode(event.event_type(), 1, event.to_json()).unwrap();
        assert_eq!(decoded, event);
    }

    #[test]
    fn unknown_types_and_future_versions_are_typed_errors() {
        let payload = serde_json::json!({ "title": "x" });
        assert!(matches!(ChatSessionEvent::decode("chat.nope", 1, payload.clone()), Err(DecodeError::UnknownType(_))));
        assert!(matches!(
            ChatSessionEvent::decode("chat.session_renamed", 7, payload),
            Err(DecodeError::FutureVersion { found: 7, known: 1, .. })
        ));
    }

    #[test]
    fn an_old_payload_is_upcast_before_it_is_read() {
        // Pretend `chat.session_renamed` was once written as version 0 with a `name` field.
        fn name_to_title(mut payload: serde_json::Value) -> Result<serde_json::Value, String> {
            let object = payload.as_object_mut().ok_or("payload is not an object")?;
            let name = object.remove("name").ok_or("missing `name`")?;
            object.insert("title".into(), name);
            Ok(payload)
        }
        let upcasters = Upcasters::default().with_step("chat.session_renamed", 0, name_to_title);
        let old = serde_json::json!({ "name": "from the old days" });
        let decoded = ChatSessionEvent::decode_with(&upcasters, "chat.session_renamed", 0, old).unwrap();
        assert_eq!(decoded, ChatSessionEvent::Renamed(SessionRenamed { title: "from the old days".into() }));

        let missing = ChatSessionEvent::decode("chat.session_renamed", 0, serde_json::json!({}));
        assert!(matches!(missing, Err(DecodeError::MissingUpcaster { from: 0, .. })));
    }
}

/// What a long tool prints as it runs (a deploy's CLI output, secrets redacted), on the deltas
/// topic (not an event; records carry the header [`ToolOutputDelta::HEADER`]). `seq` counts
/// from 0 within one tool call. The whole output is kept where the tool's result says.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ToolOutputDelta {
    pub session_id: Uuid,
    pub turn_id: Uuid,
    pub tool_call_id: String,
    pub seq: u32,
    pub text: String,
}

impl ToolOutputDelta {
    /// The record header that marks a tool's output among the deltas (value `tool_output`).
    pub const HEADER: &'static str = "aurora_delta";
}

/// A piece of an answer as it streams, on the deltas topic (not an event). `seq` counts from 0
/// within one LLM call; a call that starts again after a processor restart starts again at 0.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TokenDelta {
    pub session_id: Uuid,
    pub turn_id: Uuid,
    pub call_index: u32,
    pub seq: u32,
    pub text: String,
}
