//! What the knowledge-base tests share: documents made by real producers, uploads as a browser
//! sends them, waiting for a document's status, a server-sent-events reader, and a look into the
//! object store's folder.

use std::path::{Path, PathBuf};
use std::time::Duration;

use futures::StreamExt;
use serde_json::{json, Value};

use crate::{eventually, http, App, Caller};

/// Makes the test documents (fpdf2, python-docx, zipfile) into a fresh folder.
pub fn make_documents() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("aurora-kb-documents-{}", uuid::Uuid::now_v7().simple()));
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/make_documents.py");
    let tools = std::env::var("AURORA_TEST_DOC_TOOLS").expect("AURORA_TEST_DOC_TOOLS (run scripts/stack.sh test-tools and eval its env)");
    let output = std::process::Command::new("python3")
        .arg(&script)
        .arg(&dir)
        .env("PYTHONPATH", tools)
        .output()
        .expect("run python3 to make the documents");
    assert!(output.status.success(), "making the documents failed: {}", String::from_utf8_lossy(&output.stderr));
    dir
}

/// A multipart upload of `bytes` named `name`, as `caller` (cookie and CSRF token).
pub async fn upload(app: &App, caller: &Caller, name: &str, bytes: Vec<u8>) -> reqwest::Response {
    let form = reqwest::multipart::Form::new().part("file", reqwest::multipart::Part::bytes(bytes).file_name(name.to_owned()));
    caller.apply(http().post(app.url("/v1/knowledge/documents"))).multipart(form).send().await.unwrap()
}

/// [`upload`], asserting 202, answering the gateway's JSON.
pub async fn uploaded(app: &App, caller: &Caller, name: &str, bytes: Vec<u8>) -> Value {
    let response = upload(app, caller, name, bytes).await;
    assert_eq!(response.status(), reqwest::StatusCode::ACCEPTED, "upload of {name} refused: {}", response.text().await.unwrap());
    response.json().await.unwrap()
}

pub async fn document(app: &App, caller: &Caller, document_id: &str) -> reqwest::Response {
    caller.apply(http().get(app.url(&format!("/v1/knowledge/documents/{document_id}")))).send().await.unwrap()
}

/// Waits until the document's version `version` is `ready` or `failed`, and answers it.
pub async fn settled(app: &App, caller: &Caller, document_id: &str, version: u64) -> Value {
    eventually(&format!("document {document_id} v{version} to settle"), Duration::from_secs(120), || async {
        let response = document(app, caller, document_id).await;
        if !response.status().is_success() {
            return None;
        }
        let body: Value = response.json().await.ok()?;
        (body["version"] == version && (body["status"] == "ready" || body["status"] == "failed")).then_some(body)
    })
    .await
}

/// Searches as `caller`, answering the results.
pub async fn search(app: &App, caller: &Caller, body: Value) -> Vec<Value> {
    let response = caller.apply(http().post(app.url("/v1/knowledge/search"))).json(&body).send().await.unwrap();
    assert_eq!(response.status(), reqwest::StatusCode::OK, "search refused: {}", response.text().await.unwrap());
    let answer: Value = response.json().await.unwrap();
    answer["results"].as_array().cloned().unwrap_or_default()
}

pub async fn search_for(app: &App, caller: &Caller, query: &str) -> Vec<Value> {
    search(app, caller, json!({ "query": query, "limit": 5 })).await
}

/// A server-sent-events stream being read.
pub struct EventStream {
    body: futures::stream::BoxStream<'static, reqwest::Result<bytes::Bytes>>,
    buffer: String,
    /// Every event's data so far.
    pub events: Vec<Value>,
}

impl EventStream {
    pub async fn open(request: reqwest::RequestBuilder) -> Self {
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), reqwest::StatusCode::OK);
        let content_type = response.headers().get("content-type").unwrap().to_str().unwrap().to_owned();
        assert!(content_type.starts_with("text/event-stream"), "{content_type}");
        Self { body: response.bytes_stream().boxed(), buffer: String::new(), events: Vec::new() }
    }

    /// Reads until an event satisfies `matches` (or fails after `wait`).
    pub async fn until(&mut self, what: &str, wait: Duration, matches: impl Fn(&Value) -> bool) -> Value {
        let deadline = tokio::time::Instant::now() + wait;
        let mut checked = 0;
        loop {
            self.take_messages();
            if let Some(found) = self.events[checked..].iter().find(|event| matches(event)) {
                return found.clone();
            }
            checked = self.events.len();
            let piece = tokio::time::timeout_at(deadline, self.body.next())
                .await
                .unwrap_or_else(|_| panic!("timed out waiting for {what}; events so far: {:#?}", self.events));
            let piece = piece.expect("the stream stays open").expect("the stream stays healthy");
            self.buffer.push_str(&String::from_utf8_lossy(&piece));
        }
    }

    /// Whatever arrives within `wait`, without waiting for anything in particular.
    pub async fn drain(&mut self, wait: Duration) {
        let deadline = tokio::time::Instant::now() + wait;
        while let Ok(Some(Ok(piece))) = tokio::time::timeout_at(deadline, self.body.next()).await {
            self.buffer.push_str(&String::from_utf8_lossy(&piece));
        }
        self.take_messages();
    }

    /// Whether the server ends the stream within `wait` (what arrives before is kept).
    pub async fn ends_within(&mut self, wait: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            match tokio::time::timeout_at(deadline, self.body.next()).await {
                Ok(Some(Ok(piece))) => self.buffer.push_str(&String::from_utf8_lossy(&piece)),
                Ok(None) => break true,
                Ok(Some(Err(error))) => panic!("the stream broke instead of ending: {error}"),
                Err(_) => break false,
            }
        }
    }

    /// Moves the complete messages received into `events` (comments, such as keep-alives, are skipped).
    fn take_messages(&mut self) {
        while let Some(end) = self.buffer.find("\n\n") {
            let message: String = self.buffer.drain(..end + 2).collect();
            let data: String = message.lines().filter_map(|line| line.strip_prefix("data:")).map(str::trim).collect();
            if message.lines().any(|line| line.starts_with("event:")) && !data.is_empty() {
                self.events.push(serde_json::from_str(&data).unwrap());
            }
        }
    }
}

/// Every file under the folder of a `file://` object store URL.
pub fn stored_files(objects_url: &str) -> Vec<PathBuf> {
    let root = PathBuf::from(objects_url.strip_prefix("file://").expect("a file:// store"));
    let mut files = Vec::new();
    let mut pending = vec![root];
    while let Some(dir) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
            } else {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}
