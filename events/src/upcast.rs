//! Reading old events as the current type. Events are never rewritten: a payload stored with an
//! older `schema_version` passes through a chain of upcasters, one version step at a time, when it
//! is read.

use std::collections::HashMap;
use std::sync::OnceLock;

use crate::catalog::DecodeError;

pub type UpcastFn = fn(serde_json::Value) -> Result<serde_json::Value, String>;

/// The registered steps `(event type, from version) -> payload at from version + 1`.
#[derive(Default, Clone)]
pub struct Upcasters {
    steps: HashMap<(&'static str, u32), UpcastFn>,
}

impl Upcasters {
    /// The upcasters shipped with this build. Every event type is at schema version 1 so far, so
    /// the chain is empty; the first breaking payload change registers its step here.
    pub fn shipped() -> &'static Upcasters {
        static SHIPPED: OnceLock<Upcasters> = OnceLock::new();
        SHIPPED.get_or_init(Upcasters::default)
    }

    pub fn with_step(mut self, event_type: &'static str, from_version: u32, step: UpcastFn) -> Self {
        self.steps.insert((event_type, from_version), step);
        self
    }

    /// Brings `payload`, written at `stored_version`, up to `current_version`.
    pub fn upcast(
        &self,
        event_type: &'static str,
        stored_version: u32,
        current_version: u32,
        mut payload: serde_json::Value,
    ) -> Result<serde_json::Value, DecodeError> {
        if stored_version > current_version {
            return Err(DecodeError::FutureVersion { event_type: event_type.to_owned(), found: stored_version, known: current_version });
        }
        for from in stored_version..current_version {
            let step = self
                .steps
                .get(&(event_type, from))
                .ok_or_else(|| DecodeError::MissingUpcaster { event_type: event_type.to_owned(), from })?;
            payload = step(payload).map_err(|reason| DecodeError::Upcast { event_type: event_type.to_owned(), from, reason })?;
        }
        Ok(payload)
    }
}
