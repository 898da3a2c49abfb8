//! The webhook endpoint of an organisation (stream `webhook-<org id>`): the URL token admins
//! rotate (only its SHA-256 is kept) and each source's optional shared secret (in the secret
//! store; the events name where). And one delivery (stream `webhook-<delivery id>`), recorded
//! once however often it is delivered.

use std::collections::BTreeMap;

use aurora_events::incident::{AlertSource, WebhookEvent, WebhookReceived, WebhookSecretCleared, WebhookSecretSet, WebhookTokenRotated};

use crate::{Aggregate, DomainError};

#[derive(Debug, Clone, PartialEq)]
pub enum WebhookCommand {
    RotateToken { token_sha256: String },
    SetSecret { source: AlertSource, secret_ref: String, secret_version: u64 },
    ClearSecret { source: AlertSource },
}

/// Where a source's shared secret is, and which version of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretAt {
    pub secret_ref: String,
    pub version: u64,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct WebhookEndpoint {
    pub token_sha256: Option<String>,
    pub secrets: BTreeMap<AlertSource, SecretAt>,
}

impl Aggregate for WebhookEndpoint {
    type Command = WebhookCommand;
    type Event = WebhookEvent;

    fn decide(&self, command: WebhookCommand) -> Result<Vec<WebhookEvent>, DomainError> {
        match command {
            WebhookCommand::RotateToken { token_sha256 } => {
                if token_sha256.len() != 64 || !token_sha256.bytes().all(|byte| byte.is_ascii_hexdigit()) {
                    return Err(DomainError::InvalidInput { field: "token_sha256", reason: "must be 64 hex digits".into() });
                }
                Ok(vec![WebhookEvent::TokenRotated(WebhookTokenRotated { token_sha256 })])
            }
            WebhookCommand::SetSecret { source, secret_ref, secret_version } => {
                let current = SecretAt { secret_ref: secret_ref.clone(), version: secret_version };
                if self.secrets.get(&source) == Some(&current) {
                    return Ok(Vec::new());
                }
                Ok(vec![WebhookEvent::SecretSet(WebhookSecretSet { source, secret_ref, secret_version })])
            }
            WebhookCommand::ClearSecret { source } => {
                if !self.secrets.contains_key(&source) {
                    return Ok(Vec::new());
                }
                Ok(vec![WebhookEvent::SecretCleared(WebhookSecretCleared { source })])
            }
        }
    }

    fn evolve(mut self, event: &WebhookEvent) -> Self {
        match event {
            WebhookEvent::TokenRotated(rotated) => self.token_sha256 = Some(rotated.token_sha256.clone()),
            WebhookEvent::SecretSet(set) => {
                self.secrets.insert(set.source, SecretAt { secret_ref: set.secret_ref.clone(), version: set.secret_version });
            }
            WebhookEvent::SecretCleared(cleared) => {
                self.secrets.remove(&cleared.source);
            }
            WebhookEvent::Received(_) => {}
        }
        self
    }

    fn exists(&self) -> bool {
        self.token_sha256.is_some()
    }
}

/// One delivery: recorded the first time, nothing the next.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Delivery {
    pub received: Option<WebhookReceived>,
}

impl Aggregate for Delivery {
    type Command = WebhookReceived;
    type Event = WebhookEvent;

    fn decide(&self, received: WebhookReceived) -> Result<Vec<WebhookEvent>, DomainError> {
        if self.received.is_some() {
            return Ok(Vec::new());
        }
        Ok(vec![WebhookEvent::Received(received)])
    }

    fn evolve(mut self, event: &WebhookEvent) -> Self {
        if let WebhookEvent::Received(received) = event {
            self.received = Some(received.clone());
        }
        self
    }

    fn exists(&self) -> bool {
        self.received.is_some()
    }
}
