//! The secret-store port's contract, against OpenBao (the real Vault API): versions, deletion of
//! every version, a policy that reaches only Aurora's path, the audit trail, and what happens
//! when the store restarts, is sealed or is down — a clear error while it is away, and the next
//! call after it is back goes through with nothing lost.

use std::sync::Arc;

use aurora_adapters::secrets::vault::VaultStore;
use aurora_adapters::secrets::{Secret, SecretError, SecretPath, SecretStore};
use aurora_tests::servers::ScratchVault;
use uuid::Uuid;

/// The cases every implementation must pass.
async fn contract(store: Arc<dyn SecretStore>) {
    let (org, other_org) = (Uuid::now_v7(), Uuid::now_v7());
    let path = SecretPath::connection(org, Uuid::now_v7());
    assert!(matches!(store.get(&path).await, Err(SecretError::NotFound(_))), "nothing is there before it is written");

    let first = store.put(&path, &Secret::new().with("api_key", "first-value-0001").with("site", "datadoghq.eu")).await.unwrap();
    let read = store.get(&path).await.unwrap();
    assert_eq!((read.get("api_key"), read.get("site")), (Some("first-value-0001"), Some("datadoghq.eu")));
    assert!(!format!("{read:?}").contains("first-value"), "a secret's Debug shows no value: {read:?}");

    // Rotation writes a new version and the next read sees it.
    let second = store.put(&path, &Secret::new().with("api_key", "second-value-0002")).await.unwrap();
    assert_eq!(second, first + 1);
    assert_eq!(store.get(&path).await.unwrap().get("api_key"), Some("second-value-0002"));

    // Another organisation's path is another secret.
    let elsewhere = SecretPath::connection(other_org, Uuid::now_v7());
    assert!(matches!(store.get(&elsewhere).await, Err(SecretError::NotFound(_))));

    assert_eq!(store.reference(&path).0, format!("vault:kv/data/{}", path.as_str()));

    // Destroying removes every version; destroying again is fine.
    store.destroy(&path).await.unwrap();
    assert!(matches!(store.get(&path).await, Err(SecretError::NotFound(_))));
    store.destroy(&path).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openbao_keeps_versions_and_deletes_every_one() {
    let vault = ScratchVault::start();
    contract(Arc::new(VaultStore::new(&vault.config()).unwrap())).await;

    // Every version is gone, not only the latest: the metadata itself is deleted.
    let store = VaultStore::new(&vault.config()).unwrap();
    let path = SecretPath::connection(Uuid::now_v7(), Uuid::now_v7());
    store.put(&path, &Secret::new().with("token", "v1-abcdefgh")).await.unwrap();
    store.put(&path, &Secret::new().with("token", "v2-abcdefgh")).await.unwrap();
    store.destroy(&path).await.unwrap();
    let metadata = vault.bao(&["kv", "metadata", "get", "-mount=kv", path.as_str()]).output().unwrap();
    assert!(!metadata.status.success(), "metadata survived: {}", String::from_utf8_lossy(&metadata.stdout));
    let old_version = vault.bao(&["kv", "get", "-mount=kv", "-version=1", path.as_str()]).output().unwrap();
    assert!(!old_version.status.success(), "version 1 survived");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aurora_reaches_only_its_own_path_and_every_read_is_audited() {
    let vault = ScratchVault::start();
    let store = VaultStore::new(&vault.config()).unwrap();
    // A secret outside Aurora's path, written by the root.
    let written = vault.bao(&["kv", "put", "-mount=kv", "payroll/db", "password=not-auroras-to-read"]).output().unwrap();
    assert!(written.status.success(), "{}", String::from_utf8_lossy(&written.stderr));
    let token = std::fs::read_to_string(vault.token_file()).unwrap();
    let refused = reqwest::Client::new()
        .get(format!("{}/v1/kv/data/payroll/db", vault.addr()))
        .header("X-Vault-Token", token.trim())
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), reqwest::StatusCode::FORBIDDEN, "Aurora's token read outside its path");

    let path = SecretPath::connection(Uuid::now_v7(), Uuid::now_v7());
    store.put(&path, &Secret::new().with("token", "audited-secret-value")).await.unwrap();
    for _ in 0..3 {
        store.get(&path).await.unwrap();
    }
    let reads = vault
        .audit_log()
        .into_iter()
        .filter(|entry| entry["type"] == "request" && entry["request"]["operation"] == "read")
        .filter(|entry| entry["request"]["path"].as_str() == Some(&format!("kv/data/{}", path.as_str())))
        .count();
    assert_eq!(reads, 3, "each read is in the audit log");
    let audit = std::fs::read_to_string(vault.dir.join("audit.log")).unwrap();
    assert!(!audit.contains("audited-secret-value"), "the audit log holds secret values in clear");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_keeps_every_secret_and_a_sealed_or_stopped_store_says_so_until_it_is_back() {
    let vault = ScratchVault::start();
    let store = VaultStore::new(&vault.config()).unwrap();
    let path = SecretPath::connection(Uuid::now_v7(), Uuid::now_v7());
    store.put(&path, &Secret::new().with("token", "survives-restarts")).await.unwrap();

    // Restarted (not dev mode): the secret is still there, with the same client.
    vault.stop();
    let down = store.get(&path).await.unwrap_err();
    assert!(matches!(down, SecretError::Unreachable(_)), "{down:?}");
    assert!(down.is_transient() && down.to_string().contains("cannot be reached"), "{down}");
    vault.restart();
    assert_eq!(store.get(&path).await.unwrap().get("token"), Some("survives-restarts"));

    // Sealed: a clear error, and once unsealed the same client goes on.
    vault.seal();
    let sealed = store.get(&path).await.unwrap_err();
    assert_eq!(sealed, SecretError::Sealed, "{sealed}");
    assert!(store.put(&path, &Secret::new().with("token", "while-sealed")).await.is_err());
    vault.unseal();
    assert_eq!(store.get(&path).await.unwrap().get("token"), Some("survives-restarts"), "nothing was written while sealed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_credentials_the_store_says_what_to_configure() {
    let store = VaultStore::new(&aurora_adapters::config::VaultConfig::default()).unwrap();
    let error = store.get(&SecretPath::connection(Uuid::now_v7(), Uuid::now_v7())).await.unwrap_err();
    assert!(error.to_string().contains("AURORA_VAULT_TOKEN"), "{error}");
}
