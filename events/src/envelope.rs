//! The one envelope type: identity, ordering, tenancy, provenance and tracing of an event.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The organisation that owns an event and everything derived from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct OrgId(pub Uuid);

impl fmt::Display for OrgId {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(formatter)
    }
}

impl FromStr for OrgId {
    type Err = uuid::Error;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Uuid::parse_str(text).map(OrgId)
    }
}

/// A stream is one aggregate instance: its category (`chat`, `incident`, ...) and its id.
///
/// Rendered as `category-id`; the category decides the topic, the whole id is the Kafka key so
/// that a stream's events stay on one partition, in order.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StreamId {
    category: String,
    id: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StreamIdError {
    #[error("stream id `{0}` must have the form `category-id`")]
    MissingSeparator(String),
    #[error("stream category `{0}` must be 1 to 40 lowercase ASCII letters or underscores")]
    BadCategory(String),
    #[error("stream id part `{0}` must be 1 to 200 ASCII letters, digits, `-`, `_` or `.`")]
    BadId(String),
}

impl StreamId {
    pub fn new(category: &str, id: impl Into<String>) -> Result<Self, StreamIdError> {
        let id = id.into();
        let category_is_valid =
            !category.is_empty() && category.len() <= 40 && category.bytes().all(|byte| byte.is_ascii_lowercase() || byte == b'_');
        if !category_is_valid {
            return Err(StreamIdError::BadCategory(category.to_owned()));
        }
        let id_is_valid =
            !id.is_empty() && id.len() <= 200 && id.bytes().all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.'));
        if !id_is_valid {
            return Err(StreamIdError::BadId(id));
        }
        Ok(Self { category: category.to_owned(), id })
    }

    pub fn category(&self) -> &str {
        &self.category
    }

    pub fn id(&self) -> &str {
        &self.id
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{}-{}", self.category, self.id)
    }
}

impl FromStr for StreamId {
    type Err = StreamIdError;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (category, id) = text.split_once('-').ok_or_else(|| StreamIdError::MissingSeparator(text.to_owned()))?;
        Self::new(category, id)
    }
}

impl Serialize for StreamId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for StreamId {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// Who caused an event: a person (by user id), an external system delivering a webhook (by
/// source), one of Aurora's own processors acting on an earlier event, or Aurora itself (a timer,
/// a command-line tool). On the wire it is `kind:id`, for example `user:0193...` or
/// `webhook:grafana`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Actor {
    User(Uuid),
    Webhook(String),
    Processor(String),
    System(String),
}

impl Actor {
    pub fn user(user_id: Uuid) -> Self {
        Self::User(user_id)
    }

    pub fn processor(name: impl Into<String>) -> Self {
        Self::Processor(name.into())
    }

    pub fn system(name: impl Into<String>) -> Self {
        Self::System(name.into())
    }

    /// The person, when a person acted.
    pub fn user_id(&self) -> Option<Uuid> {
        match self {
            Self::User(user_id) => Some(*user_id),
            _ => None,
        }
    }
}

impl fmt::Display for Actor {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::User(user_id) => write!(formatter, "user:{user_id}"),
            Self::Webhook(source) => write!(formatter, "webhook:{source}"),
            Self::Processor(name) => write!(formatter, "processor:{name}"),
            Self::System(name) => write!(formatter, "system:{name}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("actor `{0}` must have the form `user:<uuid>` or `webhook|processor|system:<name>`")]
pub struct ActorParseError(String);

impl FromStr for Actor {
    type Err = ActorParseError;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let refused = || ActorParseError(text.to_owned());
        let (kind, id) = text.split_once(':').ok_or_else(refused)?;
        if id.is_empty() {
            return Err(refused());
        }
        match kind {
            "user" => Uuid::parse_str(id).map(Self::User).map_err(|_| refused()),
            "webhook" => Ok(Self::Webhook(id.to_owned())),
            "processor" => Ok(Self::Processor(id.to_owned())),
            "system" => Ok(Self::System(id.to_owned())),
            _ => Err(refused()),
        }
    }
}

/// In event payloads an actor is a string, as on the envelope.
impl schemars::JsonSchema for Actor {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        String::schema_name()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        String::json_schema(generator)
    }
}

impl Serialize for Actor {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Actor {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// The envelope of DESIGN.md §2. The payload is kept as JSON here; typed access goes through
/// [`crate::EventPayload::decode`], which upcasts old schema versions first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    pub id: Uuid,
    #[serde(rename = "type")]
    pub event_type: String,
    pub schema_version: u32,
    pub stream: StreamId,
    pub stream_version: u64,
    pub org_id: OrgId,
    pub actor: Actor,
    pub occurred_at: DateTime<Utc>,
    pub correlation_id: Uuid,
    pub causation_id: Option<Uuid>,
    pub traceparent: Option<String>,
    pub payload: serde_json::Value,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_ids_round_trip_and_reject_bad_shapes() {
        let stream: StreamId = "chat-0193a2b4-aaaa".parse().unwrap();
        assert_eq!(stream.category(), "chat");
        assert_eq!(stream.id(), "0193a2b4-aaaa");
        assert_eq!(stream.to_string(), "chat-0193a2b4-aaaa");
        assert!(matches!("chat".parse::<StreamId>(), Err(StreamIdError::MissingSeparator(_))));
        assert!(matches!("Chat-1".parse::<StreamId>(), Err(StreamIdError::BadCategory(_))));
        assert!(matches!("chat-a b".parse::<StreamId>(), Err(StreamIdError::BadId(_))));
    }

    #[test]
    fn actors_round_trip() {
        let actor: Actor = "webhook:grafana".parse().unwrap();
        assert_eq!(actor, Actor::Webhook("grafana".into()));
        assert_eq!(actor.to_string(), "webhook:grafana");
        let user = Uuid::now_v7();
        assert_eq!(format!("user:{user}").parse::<Actor>().unwrap().user_id(), Some(user));
        assert!("robot:x".parse::<Actor>().is_err());
        assert!("user:".parse::<Actor>().is_err());
        assert!("user:ana".parse::<Actor>().is_err(), "a user is named by id");
    }
}
