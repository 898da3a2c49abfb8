//! The Terraform state of a workspace, kept in the object store with every version, locked in
//! Postgres, and served to the CLI through its own `http` backend.
//!
//! Why the `http` backend: it is built into OpenTofu and Terraform, needs no cloud account, and
//! lets Aurora decide everything the CLI may do with the state. Each CLI run gets a server of
//! its own on 127.0.0.1 (a random port and password, in the child's environment only), which
//! serves that one workspace and nothing else: the CLI, and whatever a provisioner runs under
//! it, never holds a credential of the object store. The `s3` backend against the store would
//! have handed the child keys that reach every organisation's objects.
//!
//! - `GET` answers the latest version (`204` before the first).
//! - `LOCK` takes the workspace's row in `deploy_state_locks` (`423` with the holder's lock when
//!   another run holds it), `UNLOCK` drops it when the ids match.
//! - `POST ?ID=<lock>` keeps the body as a new version, `state/{version:06}.tfstate`; only the
//!   holder of the lock may write.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Query, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use aurora_adapters::objects::{ObjectError, ObjectKey, Objects};
use base64::Engine;
use serde_json::Value;
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::agent::tools::ToolError;

/// Largest state file the server keeps.
const MAX_STATE_BYTES: usize = 64 * 1024 * 1024;

/// One workspace's state: its versions and its lock.
#[derive(Clone)]
pub struct Workspace {
    pub pool: PgPool,
    pub objects: Objects,
    pub org_id: Uuid,
    pub workspace_id: Uuid,
}

impl Workspace {
    fn version_key(&self, version: u32) -> ObjectKey {
        ObjectKey::workspace_state(self.org_id, self.workspace_id, version)
    }

    /// The latest version's number.
    pub async fn latest_version(&self) -> Result<Option<u32>, ObjectError> {
        let prefix = ObjectKey::workspace(self.org_id, self.workspace_id, &["state"]);
        let keys = self.objects.list(&prefix).await?;
        Ok(keys
            .iter()
            .filter_map(|key| key.rsplit('/').next()?.strip_suffix(".tfstate")?.parse::<u32>().ok())
            .max())
    }

    async fn latest(&self) -> Result<Option<Bytes>, ObjectError> {
        match self.latest_version().await? {
            Some(version) => Ok(Some(self.objects.get(&self.version_key(version)).await?)),
            None => Ok(None),
        }
    }

    async fn save(&self, state: Bytes) -> Result<u32, ObjectError> {
        let version = self.latest_version().await?.map_or(1, |latest| latest + 1);
        self.objects.put(&self.version_key(version), state).await?;
        Ok(version)
    }

    /// Takes the lock for `lock_id`: `Err` with the holder's description when another holds it.
    async fn lock(&self, lock_id: &str, info: &Value) -> Result<Result<(), Value>, sqlx::Error> {
        let taken = sqlx::query(
            "INSERT INTO deploy_state_locks (org_id, workspace_id, lock_id, info) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (workspace_id) DO NOTHING",
        )
        .bind(self.org_id)
        .bind(self.workspace_id)
        .bind(lock_id)
        .bind(info)
        .execute(&self.pool)
        .await?
        .rows_affected()
            == 1;
        if taken {
            return Ok(Ok(()));
        }
        Ok(Err(self.held().await?.map(|(_, info)| info).unwrap_or(Value::Null)))
    }

    /// The lock's id and description, when someone holds it.
    pub async fn held(&self) -> Result<Option<(String, Value)>, sqlx::Error> {
        sqlx::query_as("SELECT lock_id, info FROM deploy_state_locks WHERE workspace_id = $1 AND org_id = $2")
            .bind(self.workspace_id)
            .bind(self.org_id)
            .fetch_optional(&self.pool)
            .await
    }

    async fn unlock(&self, lock_id: &str) -> Result<bool, sqlx::Error> {
        let dropped = sqlx::query("DELETE FROM deploy_state_locks WHERE workspace_id = $1 AND org_id = $2 AND lock_id = $3")
            .bind(self.workspace_id)
            .bind(self.org_id)
            .bind(lock_id)
            .execute(&self.pool)
            .await?;
        Ok(dropped.rows_affected() == 1)
    }

    /// Drops the lock whatever holds it, answering what it was: for a run that is known lost.
    pub async fn release(&self) -> Result<Option<Value>, sqlx::Error> {
        sqlx::query_scalar("DELETE FROM deploy_state_locks WHERE workspace_id = $1 AND org_id = $2 RETURNING info")
            .bind(self.workspace_id)
            .bind(self.org_id)
            .fetch_optional(&self.pool)
            .await
    }
}

/// The state server of one CLI run; it stops when dropped.
pub struct StateServer {
    address: String,
    password: String,
    stop: CancellationToken,
    served: Arc<Served>,
}

struct Served {
    workspace: Workspace,
    /// The locks taken through this server and not dropped yet.
    taken: std::sync::Mutex<Vec<String>>,
    /// SHA-256 of the one `Authorization` header accepted.
    authorization: [u8; 32],
}

impl StateServer {
    pub async fn start(workspace: Workspace) -> Result<Self, ToolError> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
            .await
            .map_err(|error| ToolError::Unavailable(format!("could not open the state server: {error}")))?;
        let port = listener.local_addr().map_err(|error| ToolError::Unavailable(error.to_string()))?.port();
        let password = aurora_adapters::clouds::oauth::random_token();
        let basic = base64::engine::general_purpose::STANDARD.encode(format!("aurora:{password}"));
        let served = Arc::new(Served { workspace, taken: Default::default(), authorization: Sha256::digest(format!("Basic {basic}")).into() });
        let app = Router::new().fallback(serve).layer(DefaultBodyLimit::max(MAX_STATE_BYTES)).with_state(served.clone());
        let stop = CancellationToken::new();
        let stopped = stop.clone();
        tokio::spawn(async move {
            let serving = axum::serve(listener, app).with_graceful_shutdown(stopped.cancelled_owned());
            if let Err(error) = serving.await {
                tracing::warn!(%error, "the state server stopped");
            }
        });
        Ok(Self { address: format!("http://127.0.0.1:{port}/state"), password, stop, served })
    }

    /// Drops the locks a stopped CLI took through this server and could not drop itself:
    /// the run is known to be over, so nobody writes the state under them any more.
    pub async fn release_taken(&self) -> Result<usize, sqlx::Error> {
        let taken = std::mem::take(&mut *self.served.taken.lock().expect("lock list"));
        let mut released = 0;
        for lock_id in taken {
            released += usize::from(self.served.workspace.unlock(&lock_id).await?);
        }
        Ok(released)
    }

    /// The environment that points the CLI's `http` backend here.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("TF_HTTP_ADDRESS", self.address.clone()),
            ("TF_HTTP_LOCK_ADDRESS", self.address.clone()),
            ("TF_HTTP_UNLOCK_ADDRESS", self.address.clone()),
            ("TF_HTTP_USERNAME", "aurora".into()),
            ("TF_HTTP_PASSWORD", self.password.clone()),
        ]
    }

    /// The password, to be redacted from what the CLI prints.
    pub fn password(&self) -> &str {
        &self.password
    }
}

impl Drop for StateServer {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn serve(
    State(served): State<Arc<Served>>,
    method: Method,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
    body: Bytes,
) -> Response {
    let given = headers.get(header::AUTHORIZATION).map(|value| Sha256::digest(value.as_bytes()));
    if given.is_none_or(|given| given.as_slice() != served.authorization) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let workspace = &served.workspace;
    let failed = |error: &dyn std::fmt::Display| {
        tracing::warn!(%error, workspace = %workspace.workspace_id, "the state server could not answer");
        StatusCode::SERVICE_UNAVAILABLE.into_response()
    };
    match method.as_str() {
        "GET" => match workspace.latest().await {
            Ok(Some(state)) => (StatusCode::OK, state).into_response(),
            Ok(None) => StatusCode::NO_CONTENT.into_response(),
            Err(error) => failed(&error),
        },
        "POST" => {
            let Some(lock_id) = query.get("ID") else {
                return (StatusCode::CONFLICT, "the state is written under its lock only").into_response();
            };
            match workspace.held().await {
                Ok(Some((held, _))) if &held == lock_id => {}
                Ok(_) => return (StatusCode::CONFLICT, "the lock is not held by this run").into_response(),
                Err(error) => return failed(&error),
            }
            if serde_json::from_slice::<Value>(&body).is_err() {
                return (StatusCode::BAD_REQUEST, "a state is JSON").into_response();
            }
            match workspace.save(body).await {
                Ok(_) => StatusCode::OK.into_response(),
                Err(error) => failed(&error),
            }
        }
        "LOCK" => {
            let Some((lock_id, info)) = lock_of(&body) else {
                return (StatusCode::BAD_REQUEST, "a lock is JSON with an ID").into_response();
            };
            match workspace.lock(&lock_id, &info).await {
                Ok(Ok(())) => {
                    served.taken.lock().expect("lock list").push(lock_id);
                    StatusCode::OK.into_response()
                }
                Ok(Err(holder)) => (StatusCode::LOCKED, axum::Json(holder)).into_response(),
                Err(error) => failed(&error),
            }
        }
        "UNLOCK" => {
            let Some((lock_id, _)) = lock_of(&body) else {
                return (StatusCode::BAD_REQUEST, "a lock is JSON with an ID").into_response();
            };
            match workspace.unlock(&lock_id).await {
                Ok(true) => {
                    served.taken.lock().expect("lock list").retain(|taken| taken != &lock_id);
                    StatusCode::OK.into_response()
                }
                Ok(false) => match workspace.held().await {
                    Ok(None) => StatusCode::OK.into_response(),
                    Ok(Some((_, holder))) => (StatusCode::CONFLICT, axum::Json(holder)).into_response(),
                    Err(error) => failed(&error),
                },
                Err(error) => failed(&error),
            }
        }
        _ => StatusCode::METHOD_NOT_ALLOWED.into_response(),
    }
}

/// The id and whole description of a lock the CLI sends.
fn lock_of(body: &[u8]) -> Option<(String, Value)> {
    let info: Value = serde_json::from_slice(body).ok()?;
    let id = info.get("ID")?.as_str()?.to_owned();
    (!id.is_empty() && id.len() <= 200).then_some((id, info))
}
