//! The secrets the gateway hands out (session ids, CSRF tokens, API tokens, invitation tokens,
//! WebSocket tickets) and the passwords it takes in. A secret is 32 random bytes from the operating
//! system, sent once and stored only as its SHA-256 digest. Neither type prints its value.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::Deserialize;
use sha2::{Digest, Sha256};

/// A freshly made secret, on its way to the one client that will hold it.
pub struct Secret(String);

impl Secret {
    /// `prefix` names the kind of secret (`aur_` for API tokens, ...) so that secret scanners
    /// and people can tell them apart.
    pub fn generate(prefix: &str) -> Self {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).expect("the operating system provides randomness");
        Secret(format!("{prefix}{}", URL_SAFE_NO_PAD.encode(bytes)))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn into_exposed(self) -> String {
        self.0
    }

    pub fn digest(&self) -> Vec<u8> {
        digest(&self.0)
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("Secret(***)")
    }
}

/// What the tables store of a secret a client presents. High-entropy secrets need no slow hash:
/// nobody can guess one from its digest.
pub fn digest(value: &str) -> Vec<u8> {
    Sha256::digest(value.as_bytes()).to_vec()
}

/// The hex digest, for Redis keys.
pub fn hex_digest(value: &str) -> String {
    digest(value).iter().map(|byte| format!("{byte:02x}")).collect()
}

/// A password as a request carries it. Never printed, never logged.
#[derive(Clone, Deserialize)]
#[serde(transparent)]
pub struct Password(String);

impl Password {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Password {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("Password(***)")
    }
}

impl utoipa::PartialSchema for Password {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .format(Some(utoipa::openapi::SchemaFormat::KnownFormat(utoipa::openapi::KnownFormat::Password)))
            .min_length(Some(aurora_domain::identity::MIN_PASSWORD_CHARS))
            .max_length(Some(aurora_domain::identity::MAX_PASSWORD_CHARS))
            .into()
    }
}

impl utoipa::ToSchema for Password {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_distinct_prefixed_and_never_printed() {
        let first = Secret::generate("aur_");
        let second = Secret::generate("aur_");
        assert_ne!(first.expose(), second.expose());
        assert!(first.expose().starts_with("aur_") && first.expose().len() == 4 + 43);
        assert!(!format!("{first:?}").contains(first.expose()));
        assert_eq!(first.digest(), digest(first.expose()));
        let password: Password = serde_json::from_str("\"hunter2hunter2\"").unwrap();
        assert!(!format!("{password:?}").contains("hunter2"));
    }
}
