//! The secret store on HashiCorp Vault's KV v2 engine (`vaultrs`), which OpenBao serves too.
//!
//! Aurora authenticates with a token whose policy reaches only `<mount>/*/aurora/*`: given as
//! `AURORA_VAULT_TOKEN`, read from `AURORA_VAULT_TOKEN_FILE` (the local stack writes one that only
//! its owner can read), or obtained by AppRole login (`AURORA_VAULT_ROLE_ID`,
//! `AURORA_VAULT_SECRET_ID`) and obtained again when Vault stops accepting it. Each call is one
//! request to Vault: a sealed or stopped Vault answers the call that meets it with a clear
//! error, and the next call after it is back goes through; nothing is queued or cached here.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::RwLock;
use vaultrs::client::{VaultClient, VaultClientSettingsBuilder};
use vaultrs::error::ClientError;

use super::{Secret, SecretError, SecretPath, SecretRef, SecretStore};
use crate::config::VaultConfig;

/// How Aurora proves who it is to Vault.
enum Login {
    Token(SecretString),
    AppRole { mount: String, role_id: String, secret_id: SecretString },
}

pub struct VaultStore {
    address: String,
    mount: String,
    timeout: Duration,
    /// `None` when no credentials are configured: every call says so.
    login: Option<Login>,
    /// The client with the current token; replaced when an AppRole login is renewed.
    client: RwLock<Option<Arc<VaultClient>>>,
}

impl VaultStore {
    /// A store for `config`. No request is made until the first use; without credentials in the
    /// configuration every use answers that they are missing.
    pub fn new(config: &VaultConfig) -> anyhow::Result<Self> {
        crate::llm::install_tls_provider();
        let login = match (&config.token, &config.token_file, &config.role_id, &config.secret_id) {
            (Some(token), _, _, _) => Some(Login::Token(token.clone())),
            (None, Some(file), _, _) => {
                let token = std::fs::read_to_string(file)
                    .map_err(|error| anyhow::anyhow!("cannot read the Vault token file {}: {error}", file.display()))?;
                Some(Login::Token(SecretString::from(token.trim().to_owned())))
            }
            (None, None, Some(role_id), Some(secret_id)) => {
                Some(Login::AppRole { mount: config.approle_mount.clone(), role_id: role_id.clone(), secret_id: secret_id.clone() })
            }
            _ => None,
        };
        Ok(Self { address: config.addr.clone(), mount: config.mount.clone(), timeout: config.timeout, login, client: RwLock::new(None) })
    }

    fn client_with(&self, token: &str) -> Result<VaultClient, SecretError> {
        let settings = VaultClientSettingsBuilder::default()
            .address(&self.address)
            .token(token)
            .timeout(Some(self.timeout))
            .build()
            .map_err(|error| SecretError::Refused(format!("invalid Vault settings: {error}")))?;
        VaultClient::new(settings).map_err(|error| SecretError::Unreachable(error.to_string()))
    }

    /// A client with a token Vault accepted last time (or a fresh login).
    async fn client(&self) -> Result<Arc<VaultClient>, SecretError> {
        if let Some(client) = self.client.read().await.as_ref() {
            return Ok(client.clone());
        }
        let Some(login) = &self.login else {
            return Err(SecretError::Refused(
                "no Vault credentials are configured: set AURORA_VAULT_TOKEN, AURORA_VAULT_TOKEN_FILE, or AURORA_VAULT_ROLE_ID with AURORA_VAULT_SECRET_ID".into(),
            ));
        };
        let client = match login {
            Login::Token(token) => self.client_with(token.expose_secret())?,
            Login::AppRole { mount, role_id, secret_id } => {
                let anonymous = self.client_with("")?;
                let auth = vaultrs::auth::approle::login(&anonymous, mount, role_id, secret_id.expose_secret())
                    .await
                    .map_err(|error| classify("AppRole login", error))?;
                self.client_with(&auth.client_token)?
            }
        };
        let client = Arc::new(client);
        *self.client.write().await = Some(client.clone());
        Ok(client)
    }

    /// Runs `request`; with AppRole, a refused token is replaced by a new login once.
    async fn call<T, F, Fut>(&self, what: &str, request: F) -> Result<T, SecretError>
    where
        F: Fn(Arc<VaultClient>) -> Fut,
        Fut: std::future::Future<Output = Result<T, ClientError>>,
    {
        let client = self.client().await?;
        match request(client).await.map_err(|error| classify(what, error)) {
            Err(SecretError::Refused(_)) if matches!(self.login, Some(Login::AppRole { .. })) => {
                *self.client.write().await = None;
                let client = self.client().await?;
                request(client).await.map_err(|error| classify(what, error))
            }
            outcome => outcome,
        }
    }
}

/// Vault's answer as a [`SecretError`]. Vault's own error texts name paths and policies, never
/// secret values, so they are kept.
fn classify(what: &str, error: ClientError) -> SecretError {
    match error {
        ClientError::APIError { code: 404, .. } => SecretError::NotFound(what.to_owned()),
        ClientError::APIError { code: 503, errors } if errors.iter().any(|error| error.contains("sealed")) || errors.is_empty() => {
            SecretError::Sealed
        }
        ClientError::APIError { code: 503, errors } => SecretError::Unreachable(format!("Vault is unavailable: {}", errors.join("; "))),
        ClientError::APIError { code: 403, errors } => SecretError::Refused(format!("{what}: permission denied {}", errors.join("; "))),
        ClientError::APIError { code, errors } => SecretError::Refused(format!("{what}: Vault answered {code}: {}", errors.join("; "))),
        ClientError::RestClientError { source } => SecretError::Unreachable(format!("{what}: {}", describe_transport(&source))),
        ClientError::ResponseEmptyError | ClientError::ResponseDataEmptyError => SecretError::NotFound(what.to_owned()),
        other => SecretError::Malformed(format!("{what}: {other}")),
    }
}

/// The innermost cause of a transport failure (connection refused, timed out).
fn describe_transport(error: &dyn std::error::Error) -> String {
    let mut cause: &dyn std::error::Error = error;
    while let Some(source) = cause.source() {
        cause = source;
    }
    cause.to_string()
}

#[async_trait]
impl SecretStore for VaultStore {
    async fn put(&self, path: &SecretPath, secret: &Secret) -> Result<u64, SecretError> {
        let data = secret.to_map();
        let written = self
            .call("writing a secret", |client| {
                let data = data.clone();
                async move { vaultrs::kv2::set(client.as_ref(), &self.mount, path.as_str(), &data).await }
            })
            .await?;
        Ok(written.version)
    }

    async fn get(&self, path: &SecretPath) -> Result<Secret, SecretError> {
        let data: BTreeMap<String, String> =
            self.call(path.as_str(), |client| async move { vaultrs::kv2::read(client.as_ref(), &self.mount, path.as_str()).await }).await?;
        Ok(Secret::from_map(data))
    }

    async fn destroy(&self, path: &SecretPath) -> Result<(), SecretError> {
        let deleted =
            self.call("deleting a secret", |client| async move {
                vaultrs::kv2::delete_metadata(client.as_ref(), &self.mount, path.as_str()).await
            })
            .await;
        match deleted {
            Ok(()) | Err(SecretError::NotFound(_)) => Ok(()),
            Err(error) => Err(error),
        }
    }

    fn reference(&self, path: &SecretPath) -> SecretRef {
        SecretRef::new(&self.mount, path)
    }
}
