//! Events of the chat session stream (`chat-<session id>`). Later issues add turns, messages and
//! tool calls to this family.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::event_family;

/// `chat.session_created`: a user opened a chat session.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SessionCreated {
    pub session_id: Uuid,
    pub title: String,
    /// The user the session belongs to (`user:<id>`).
    pub owner: String,
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

event_family! {
    /// Everything that happens to one chat session.
    pub enum ChatSessionEvent in "chat" {
        Created(SessionCreated) = ("chat.session_created", 1),
        Renamed(SessionRenamed) = ("chat.session_renamed", 1),
        Archived(SessionArchived) = ("chat.session_archived", 1),
    }
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
        assert!(matches!(
            ChatSessionEvent::decode("chat.nope", 1, payload.clone()),
            Err(DecodeError::UnknownType(_))
        ));
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
