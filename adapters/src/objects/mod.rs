//! The object-store port, on the `object_store` crate: the local filesystem by default (a folder,
//! `AURORA_OBJECTS_URL=file:///var/lib/aurora/objects`), or any S3-compatible store (AWS S3,
//! SeaweedFS, MinIO; `s3://bucket` with `AURORA_S3_*`). Every key is built here from an
//! organisation and ids ([`ObjectKey`]); no key ever comes from a client.
//!
//! Writes stream: an [`Upload`] sends parts as they fill (5 MiB each, a few in flight), so a file
//! of any size passes through in bounded memory, and an upload that is aborted or dropped leaves
//! nothing behind.

use std::sync::Arc;

use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload, WriteMultipart};
use uuid::Uuid;

use crate::config::{ExposeSecret, ObjectsConfig};

/// Bytes of one part of a streamed upload (S3's smallest part but the last).
const PART_BYTES: usize = 5 * 1024 * 1024;
/// Parts of one upload in flight at once.
const PARTS_IN_FLIGHT: usize = 2;

#[derive(Debug, thiserror::Error)]
pub enum ObjectError {
    #[error("no object at {0}")]
    NotFound(String),
    #[error("the object store is misconfigured: {0}")]
    Config(String),
    #[error("the object store failed: {0}")]
    Store(String),
}

impl From<object_store::Error> for ObjectError {
    fn from(error: object_store::Error) -> Self {
        match error {
            object_store::Error::NotFound { path, .. } => ObjectError::NotFound(path),
            other => ObjectError::Store(other.to_string()),
        }
    }
}

/// A key in the store, always under its organisation: `{org_id}/{area}/{id}/…`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectKey(Path);

impl ObjectKey {
    /// The original file of one upload of a knowledge-base document.
    pub fn document(org_id: Uuid, document_id: Uuid, upload_id: Uuid) -> Self {
        Self(Path::from(format!("{org_id}/kb/{document_id}/{upload_id}/original")))
    }

    /// A key recorded in an event, when it is under `org_id`'s own folder.
    pub fn from_recorded(org_id: Uuid, recorded: &str) -> Option<Self> {
        let path = Path::parse(recorded).ok()?;
        let mut parts = path.parts();
        (parts.next()?.as_ref() == org_id.to_string()).then_some(Self(path))
    }

    /// Something of a chat session's infrastructure workspace, `{org_id}/iac/{session_id}/…`:
    /// `files/{name}`, `plans/{plan id}/{plan.tfplan, output.txt, apply.txt}`, `state/…`.
    pub fn workspace(org_id: Uuid, session_id: Uuid, parts: &[&str]) -> Self {
        Self::scoped(org_id, "iac", session_id, parts)
    }

    /// The part `name` of the deployment `plan_id` of a workspace: `plan.tfplan`, `output.txt`
    /// (the plan's output), `apply.txt` (the apply's).
    pub fn deployment(org_id: Uuid, session_id: Uuid, plan_id: Uuid, name: &str) -> Self {
        Self::workspace(org_id, session_id, &["plans", &plan_id.to_string(), name])
    }

    /// Version `version` of a workspace's Terraform state.
    pub fn workspace_state(org_id: Uuid, session_id: Uuid, version: u32) -> Self {
        Self::workspace(org_id, session_id, &["state", &format!("{version:06}.tfstate")])
    }

    /// Everything of one knowledge-base document, every version.
    pub fn document_prefix(org_id: Uuid, document_id: Uuid) -> Self {
        Self(Path::from(format!("{org_id}/kb/{document_id}")))
    }

    /// A key under `{org_id}/{area}/{id}/` with `parts` below it; each part is one path segment
    /// (a `/`, `..` or empty part cannot climb out: `object_store` encodes it).
    pub fn scoped(org_id: Uuid, area: &str, id: Uuid, parts: &[&str]) -> Self {
        let mut path = Path::from(format!("{org_id}/{area}/{id}"));
        for part in parts {
            path = path.join(*part);
        }
        Self(path)
    }

    pub fn as_str(&self) -> &str {
        self.0.as_ref()
    }
}

impl std::fmt::Display for ObjectKey {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(self.as_str())
    }
}

/// Aurora's object store.
#[derive(Clone)]
pub struct Objects {
    store: Arc<dyn ObjectStore>,
    description: String,
}

impl std::fmt::Debug for Objects {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(&self.description)
    }
}

impl Objects {
    /// The store `config` names: `file:///folder` (created when missing) or `s3://bucket[/prefix]`.
    pub fn from_config(config: &ObjectsConfig) -> Result<Self, ObjectError> {
        let url = config.url.trim();
        if let Some(folder) = url.strip_prefix("file://") {
            std::fs::create_dir_all(folder).map_err(|error| ObjectError::Config(format!("cannot create {folder}: {error}")))?;
            let store = object_store::local::LocalFileSystem::new_with_prefix(folder)
                .map_err(|error| ObjectError::Config(error.to_string()))?
                .with_automatic_cleanup(true);
            return Ok(Self { store: Arc::new(store), description: format!("filesystem {folder}") });
        }
        if let Some(rest) = url.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(ObjectError::Config("an s3:// URL names its bucket: s3://bucket[/prefix]".into()));
            }
            crate::llm::install_tls_provider();
            let mut builder = object_store::aws::AmazonS3Builder::new().with_bucket_name(bucket).with_region(&config.s3_region);
            if let Some(endpoint) = &config.s3_endpoint {
                builder = builder
                    .with_endpoint(endpoint)
                    .with_allow_http(endpoint.starts_with("http://"))
                    .with_virtual_hosted_style_request(false);
            }
            if let (Some(key_id), Some(secret)) = (&config.s3_access_key_id, &config.s3_secret_access_key) {
                builder = builder.with_access_key_id(key_id).with_secret_access_key(secret.expose_secret());
            }
            let store = builder.build().map_err(|error| ObjectError::Config(error.to_string()))?;
            let store: Arc<dyn ObjectStore> = if prefix.trim_matches('/').is_empty() {
                Arc::new(store)
            } else {
                Arc::new(object_store::prefix::PrefixStore::new(store, prefix.trim_matches('/')))
            };
            return Ok(Self { store, description: format!("s3 bucket {bucket}") });
        }
        Err(ObjectError::Config(format!("AURORA_OBJECTS_URL must start with file:// or s3://, not `{}`", crate::config::redact_url(url))))
    }

    /// A streamed upload to `key`; nothing is visible there until [`Upload::finish`].
    pub async fn upload(&self, key: &ObjectKey) -> Result<Upload, ObjectError> {
        let multipart = self.store.put_multipart(&key.0).await?;
        Ok(Upload { writer: Some(WriteMultipart::new_with_chunk_size(multipart, PART_BYTES)), bytes: 0 })
    }

    /// Writes `bytes` to `key` at once.
    pub async fn put(&self, key: &ObjectKey, bytes: Bytes) -> Result<(), ObjectError> {
        self.store.put(&key.0, PutPayload::from(bytes)).await?;
        Ok(())
    }

    /// The whole object.
    pub async fn get(&self, key: &ObjectKey) -> Result<Bytes, ObjectError> {
        Ok(self.store.get(&key.0).await?.bytes().await?)
    }

    /// The object as a stream of pieces.
    pub async fn stream(&self, key: &ObjectKey) -> Result<BoxStream<'static, Result<Bytes, ObjectError>>, ObjectError> {
        Ok(self.store.get(&key.0).await?.into_stream().map_err(ObjectError::from).boxed())
    }

    /// Its size, when it exists.
    pub async fn size(&self, key: &ObjectKey) -> Result<Option<u64>, ObjectError> {
        match self.store.head(&key.0).await {
            Ok(meta) => Ok(Some(meta.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(error) => Err(error.into()),
        }
    }

    /// Deletes every object under `prefix`; how many there were.
    pub async fn delete_prefix(&self, prefix: &ObjectKey) -> Result<usize, ObjectError> {
        let keys: Vec<Path> = self.store.list(Some(&prefix.0)).map_ok(|meta| meta.location).try_collect().await?;
        for key in &keys {
            match self.store.delete(key).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(error) => return Err(error.into()),
            }
        }
        Ok(keys.len())
    }

    /// The keys under `prefix`.
    pub async fn list(&self, prefix: &ObjectKey) -> Result<Vec<String>, ObjectError> {
        let mut keys: Vec<String> = self.store.list(Some(&prefix.0)).map_ok(|meta| meta.location.to_string()).try_collect().await?;
        keys.sort();
        Ok(keys)
    }
}

/// A streamed write in progress. Dropped without [`Upload::finish`], it is aborted: the parts
/// sent are deleted and nothing appears at the key.
pub struct Upload {
    writer: Option<WriteMultipart>,
    bytes: u64,
}

impl Upload {
    /// Appends `data`, waiting while too many parts are in flight.
    pub async fn write(&mut self, data: &[u8]) -> Result<(), ObjectError> {
        let writer = self.writer.as_mut().expect("an upload is written until it is finished");
        writer.wait_for_capacity(PARTS_IN_FLIGHT).await?;
        writer.write(data);
        self.bytes += data.len() as u64;
        Ok(())
    }

    /// Bytes written so far.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Completes the upload: the object appears whole at its key.
    pub async fn finish(mut self) -> Result<u64, ObjectError> {
        let writer = self.writer.take().expect("an upload finishes once");
        writer.finish().await?;
        Ok(self.bytes)
    }

    /// Gives the upload up: nothing appears at the key.
    pub async fn abort(mut self) {
        if let Some(writer) = self.writer.take() {
            if let Err(error) = writer.abort().await {
                tracing::warn!(%error, "aborting an upload failed; the store's own cleanup of incomplete uploads removes its parts");
            }
        }
    }
}

impl Drop for Upload {
    fn drop(&mut self) {
        if let Some(writer) = self.writer.take() {
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(async move {
                    let _ = writer.abort().await;
                });
            }
        }
    }
}
