//! Typed payloads: every event family is an enum whose variants are the event types of one
//! stream category, declared once with [`event_family!`] so that the type name, the schema
//! version, the JSON Schema and the decoder can never disagree.

use crate::upcast::Upcasters;

#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("unknown event type `{0}`")]
    UnknownType(String),
    #[error("event `{event_type}` has schema version {found}, newer than the {known} this build knows")]
    FutureVersion { event_type: String, found: u32, known: u32 },
    #[error("no upcaster takes `{event_type}` from schema version {from}")]
    MissingUpcaster { event_type: String, from: u32 },
    #[error("upcasting `{event_type}` from schema version {from} failed: {reason}")]
    Upcast { event_type: String, from: u32, reason: String },
    #[error("payload of `{event_type}` does not match its schema: {source}")]
    Payload { event_type: String, source: serde_json::Error },
}

/// What the schema generator and the decoder know about one event type.
#[derive(Debug, Clone)]
pub struct EventTypeInfo {
    pub event_type: &'static str,
    pub schema_version: u32,
    pub category: &'static str,
    pub schema: serde_json::Value,
}

/// A family of events that belong to one stream category.
pub trait EventPayload: Sized + Clone + std::fmt::Debug + PartialEq + Send + Sync + 'static {
    /// The stream category (and so the topic) of this family.
    const CATEGORY: &'static str;

    fn event_type(&self) -> &'static str;
    fn schema_version(&self) -> u32;
    fn to_json(&self) -> serde_json::Value;

    /// Reads a stored payload, upcasting it first when it was written by an older schema.
    fn decode_with(upcasters: &Upcasters, event_type: &str, schema_version: u32, payload: serde_json::Value) -> Result<Self, DecodeError>;

    fn decode(event_type: &str, schema_version: u32, payload: serde_json::Value) -> Result<Self, DecodeError> {
        Self::decode_with(Upcasters::shipped(), event_type, schema_version, payload)
    }

    fn type_infos() -> Vec<EventTypeInfo>;

    /// The stream of this family's aggregate `id`, e.g. `chat-<session id>`.
    fn stream_of(id: uuid::Uuid) -> crate::StreamId {
        crate::StreamId::new(Self::CATEGORY, id.to_string()).expect("uuids are valid stream ids")
    }

    /// The topic this family is published on under `prefix`.
    fn topic(prefix: &str) -> String {
        crate::topics::topic_for_category(prefix, Self::CATEGORY)
    }
}

/// Declares an event family:
/// `Family in "category", named by FamilyType { Variant(Payload) = ("type.name", 1), ... }`.
/// `FamilyType` names the family's event types: consumers compare and match those, never
/// strings, so that a renamed type cannot compile and silently stop a consumer.
#[macro_export]
macro_rules! event_family {
    (
        $(#[$meta:meta])*
        pub enum $family:ident in $category:literal, named by $kind:ident {
            $( $variant:ident($payload:ty) = ($type_name:literal, $version:literal) ),+ $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq)]
        pub enum $family {
            $( $variant($payload), )+
        }

        #[doc = concat!("The event types of [`", stringify!($family), "`].")]
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $kind {
            $( $variant, )+
        }

        impl $kind {
            pub const ALL: &'static [$kind] = &[ $( $kind::$variant, )+ ];

            /// The name on the envelope and in the `ce_type` header.
            pub const fn name(self) -> &'static str {
                match self { $( Self::$variant => $type_name, )+ }
            }

            /// The type called `name`, when it is one of this family's.
            pub fn from_name(name: &str) -> Option<Self> {
                match name { $( $type_name => Some(Self::$variant), )+ _ => None }
            }
        }

        impl $family {
            pub fn kind(&self) -> $kind {
                match self { $( Self::$variant(_) => $kind::$variant, )+ }
            }
        }

        impl $crate::catalog::EventPayload for $family {
            const CATEGORY: &'static str = $category;

            fn event_type(&self) -> &'static str {
                self.kind().name()
            }

            fn schema_version(&self) -> u32 {
                match self { $( Self::$variant(_) => $version, )+ }
            }

            fn to_json(&self) -> serde_json::Value {
                let encoded = match self { $( Self::$variant(payload) => serde_json::to_value(payload), )+ };
                encoded.expect("event payloads are plain data and always serialize")
            }

            fn decode_with(
                upcasters: &$crate::upcast::Upcasters,
                event_type: &str,
                schema_version: u32,
                payload: serde_json::Value,
            ) -> Result<Self, $crate::catalog::DecodeError> {
                match event_type {
                    $(
                        $type_name => {
                            let current = upcasters.upcast($type_name, schema_version, $version, payload)?;
                            serde_json::from_value::<$payload>(current)
                                .map(Self::$variant)
                                .map_err(|source| $crate::catalog::DecodeError::Payload {
                                    event_type: $type_name.to_owned(),
                                    source,
                                })
                        }
                    )+
                    other => Err($crate::catalog::DecodeError::UnknownType(other.to_owned())),
                }
            }

            fn type_infos() -> Vec<$crate::catalog::EventTypeInfo> {
                vec![ $(
                    $crate::catalog::EventTypeInfo {
                        event_type: $type_name,
                        schema_version: $version,
                        category: $category,
                        schema: serde_json::to_value(schemars::schema_for!($payload))
                            .expect("schemas serialize"),
                    },
                )+ ]
            }
        }
    };
}

/// The event families of this build, as the features register them.
#[derive(Default)]
pub struct Families {
    types: Vec<EventTypeInfo>,
}

impl Families {
    /// Registers the event types of family `F`.
    pub fn add<F: EventPayload>(&mut self) {
        self.types.extend(F::type_infos());
    }
}

/// Every event type Aurora publishes. The schema files in `schemas/` are generated from this.
pub fn all_event_types() -> Vec<EventTypeInfo> {
    let mut families = Families::default();
    crate::register_features(&mut families);
    families.types
}

/// The stream category an event type belongs to, if Aurora knows the type.
pub fn category_of(event_type: &str) -> Option<&'static str> {
    all_event_types().into_iter().find(|info| info.event_type == event_type).map(|info| info.category)
}
