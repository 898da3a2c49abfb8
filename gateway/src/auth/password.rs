//! Argon2id password hashes (the `argon2` crate's defaults: 19 MiB, 2 passes, 1 lane), computed on
//! the blocking pool: a hash takes tens of milliseconds of CPU, far too long for a runtime thread.
//! At most [`max_concurrent_hashes`] run at once; the others wait their turn. Unbounded, a burst of
//! logins would take every blocking thread (512, each holding 19 MiB) and starve everything else
//! that needs one.

use std::sync::OnceLock;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;

use crate::auth::secret::Password;

/// Password hashes computed at once, at most: about the machine's cores, so that hashing keeps
/// them busy without queueing on the blocking pool behind other work.
pub fn max_concurrent_hashes() -> usize {
    std::thread::available_parallelism().map(|cores| cores.get()).unwrap_or(2).max(2)
}

fn hashing_slots() -> &'static tokio::sync::Semaphore {
    static SLOTS: OnceLock<tokio::sync::Semaphore> = OnceLock::new();
    SLOTS.get_or_init(|| tokio::sync::Semaphore::new(max_concurrent_hashes()))
}

/// Runs `work` on the blocking pool once a hashing slot is free.
async fn with_hashing_slot<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> anyhow::Result<T> {
    let _slot = hashing_slots().acquire().await?;
    Ok(tokio::task::spawn_blocking(work).await?)
}

/// The PHC string of `password` with a fresh random salt.
pub async fn hash(password: Password) -> anyhow::Result<String> {
    with_hashing_slot(move || hash_now(password.expose())).await?
}

fn hash_now(password: &str) -> anyhow::Result<String> {
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt)?;
    let salt = SaltString::encode_b64(&salt).map_err(|error| anyhow::anyhow!("encoding a salt: {error}"))?;
    let hash =
        Argon2::default().hash_password(password.as_bytes(), &salt).map_err(|error| anyhow::anyhow!("hashing a password: {error}"))?;
    Ok(hash.to_string())
}

/// Whether `password` matches `stored`. With no stored hash (no such account) a dummy hash is
/// checked instead, so that the answer takes as long either way and does not tell which emails
/// have accounts.
pub async fn verify(password: Password, stored: Option<String>) -> anyhow::Result<bool> {
    with_hashing_slot(move || {
        let account_exists = stored.is_some();
        let stored = stored.unwrap_or_else(|| dummy_hash().to_owned());
        let parsed = PasswordHash::new(&stored).map_err(|error| anyhow::anyhow!("stored password hash is malformed: {error}"))?;
        let matches = Argon2::default().verify_password(password.expose().as_bytes(), &parsed).is_ok();
        Ok(account_exists && matches)
    })
    .await?
}

fn dummy_hash() -> &'static str {
    static DUMMY: OnceLock<String> = OnceLock::new();
    DUMMY.get_or_init(|| hash_now("no account has this password").expect("hashing a constant"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn password(text: &str) -> Password {
        serde_json::from_value(serde_json::json!(text)).unwrap()
    }

    #[tokio::test]
    async fn a_hash_verifies_its_password_only() {
        let stored = hash(password("correct horse battery")).await.unwrap();
        assert!(stored.starts_with("$argon2id$"), "{stored}");
        assert!(verify(password("correct horse battery"), Some(stored.clone())).await.unwrap());
        assert!(!verify(password("wrong horse battery"), Some(stored)).await.unwrap());
        assert!(!verify(password("no account has this password"), None).await.unwrap());
    }
}
