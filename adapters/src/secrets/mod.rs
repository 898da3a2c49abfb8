//! The secret-store port: where every credential Aurora holds lives, and nowhere else. Events,
//! read models, logs and errors carry a [`SecretRef`] (`vault:kv/data/aurora/orgs/{org}/...`),
//! never the value. A secret is read at the moment of use, by the process that uses it, and
//! dropped after the use: nothing here caches a value.
//!
//! One implementation, [`vault::VaultStore`], speaks HashiCorp Vault's KV v2 API (OpenBao locally
//! and in tests); its contract suite is `tests/tests/secrets_contract.rs`.

pub mod vault;

use std::collections::BTreeMap;

use async_trait::async_trait;
use secrecy::{ExposeSecret, SecretString};
use uuid::Uuid;

/// Where one connection's credentials are kept, relative to the store's mount.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SecretPath(String);

impl SecretPath {
    /// The credentials of one connection of one organisation.
    pub fn connection(org_id: Uuid, connection_id: Uuid) -> Self {
        Self(format!("aurora/orgs/{org_id}/connections/{connection_id}"))
    }

    /// The shared secret of an organisation's webhooks from `source`.
    pub fn webhook(org_id: Uuid, source: &str) -> Self {
        Self(format!("aurora/orgs/{org_id}/webhooks/{source}"))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// What events and read models say instead of a secret: `vault:<mount>/data/<path>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretRef(pub String);

impl SecretRef {
    pub fn new(mount: &str, path: &SecretPath) -> Self {
        Self(format!("vault:{mount}/data/{}", path.as_str()))
    }
}

/// A secret's fields. Its `Debug` shows the field names only.
#[derive(Clone, Default)]
pub struct Secret {
    fields: BTreeMap<String, SecretString>,
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_set().entries(self.fields.keys()).finish()
    }
}

impl Secret {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a field (empty values are left out).
    pub fn with(mut self, name: &str, value: impl Into<String>) -> Self {
        let value = value.into();
        if !value.is_empty() {
            self.fields.insert(name.to_owned(), SecretString::from(value));
        }
        self
    }

    /// A field's value, if the secret has it.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.fields.get(name).map(|value| value.expose_secret())
    }

    /// A field the caller cannot do without.
    pub fn require(&self, name: &str) -> Result<&str, SecretError> {
        self.get(name).ok_or_else(|| SecretError::Malformed(format!("the stored credentials have no `{name}`")))
    }

    /// Every value, for redacting them from output that might echo one.
    pub fn values(&self) -> impl Iterator<Item = &str> {
        self.fields.values().map(|value| value.expose_secret())
    }

    pub(crate) fn to_map(&self) -> BTreeMap<String, String> {
        self.fields.iter().map(|(name, value)| (name.clone(), value.expose_secret().to_owned())).collect()
    }

    pub(crate) fn from_map(map: BTreeMap<String, String>) -> Self {
        Self { fields: map.into_iter().map(|(name, value)| (name, SecretString::from(value))).collect() }
    }
}

/// Why the store could not do what was asked. No variant carries a secret value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    #[error("no secret is stored at {0}")]
    NotFound(String),
    #[error("the secret store is sealed; an operator must unseal it, and Aurora carries on once it is")]
    Sealed,
    #[error("the secret store cannot be reached ({0}); Aurora retries when it is back")]
    Unreachable(String),
    #[error("the secret store refused Aurora's request ({0}); check Aurora's token and policy")]
    Refused(String),
    #[error("the stored credentials cannot be read: {0}")]
    Malformed(String),
}

impl SecretError {
    /// Whether waiting may help (the store is down or sealed), rather than a fault to fix.
    pub fn is_transient(&self) -> bool {
        matches!(self, SecretError::Sealed | SecretError::Unreachable(_))
    }
}

/// A key-value secret store with versions.
#[async_trait]
pub trait SecretStore: Send + Sync + 'static {
    /// Writes a new version of the secret at `path`; returns the version written.
    async fn put(&self, path: &SecretPath, secret: &Secret) -> Result<u64, SecretError>;

    /// Reads the latest version.
    async fn get(&self, path: &SecretPath) -> Result<Secret, SecretError>;

    /// Deletes every version and the secret's metadata. Deleting what is not there succeeds.
    async fn destroy(&self, path: &SecretPath) -> Result<(), SecretError>;

    /// The reference that events and read models carry for `path`.
    fn reference(&self, path: &SecretPath) -> SecretRef;
}
