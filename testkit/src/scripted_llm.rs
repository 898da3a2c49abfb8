//! A scripted OpenAI-compatible Chat Completions server, for tests and benchmarks on machines
//! without a model. It speaks the real wire format — server-sent `chat.completion.chunk` events,
//! `tool_calls` deltas split across chunks, a final usage chunk, `data: [DONE]` — so that the real
//! `async-openai` client is what reads it.
//!
//! A conversation is chosen by the text of its latest user message; the step within it is the
//! number of assistant messages after that message. The server keeps no other state, so a client
//! that asks again after a crash hears the same step again. Unknown conversations get a short
//! default answer. Every request is kept for the test to inspect.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Value};

/// One answer of a scripted conversation.
#[derive(Debug, Clone)]
pub enum Step {
    /// Text in these chunks, `pause` before each one.
    Text { chunks: Vec<String>, pause: Duration },
    /// Calls to tools: (call id, tool name, arguments).
    ToolCalls(Vec<(String, String, Value)>),
    /// Reasoning text, then calls to tools, in one answer; `pause` before each chunk.
    Reasoned { text: String, calls: Vec<(String, String, Value)>, pause: Duration },
    /// An HTTP error with an OpenAI-style error body.
    Error(u16),
    /// Accept the request and never answer.
    Hang,
}

impl Step {
    pub fn text(text: &str) -> Self {
        let chunks = text.split_inclusive(' ').map(str::to_owned).collect();
        Step::Text { chunks, pause: Duration::ZERO }
    }

    pub fn slow_text(text: &str, pause: Duration) -> Self {
        let chunks = text.split_inclusive(' ').map(str::to_owned).collect();
        Step::Text { chunks, pause }
    }

    pub fn tool(id: &str, name: &str, arguments: Value) -> Self {
        Step::ToolCalls(vec![(id.to_owned(), name.to_owned(), arguments)])
    }

    /// Says `text`, then calls one tool.
    pub fn reasoned(text: &str, id: &str, name: &str, arguments: Value) -> Self {
        Step::Reasoned { text: text.to_owned(), calls: vec![(id.to_owned(), name.to_owned(), arguments)], pause: Duration::ZERO }
    }

    /// Says `text` slowly (`pause` before each chunk), then calls one tool.
    pub fn slow_reasoned(text: &str, pause: Duration, id: &str, name: &str, arguments: Value) -> Self {
        Step::Reasoned { text: text.to_owned(), calls: vec![(id.to_owned(), name.to_owned(), arguments)], pause }
    }
}

#[derive(Default)]
struct Scripts {
    conversations: HashMap<String, Vec<Step>>,
    /// Conversations whose question contains a fragment, for questions Aurora writes itself.
    containing: Vec<(String, Vec<Step>)>,
    requests: Vec<Value>,
    /// The `Authorization` header of each request.
    authorizations: Vec<Option<String>>,
    /// When each answer's first chunk left the server, after its request arrived.
    first_chunk_delays: Vec<Duration>,
}

#[derive(Clone)]
pub struct ScriptedLlm {
    pub base_url: String,
    scripts: Arc<Mutex<Scripts>>,
}

impl ScriptedLlm {
    /// Serves on 127.0.0.1 at a free port until the runtime ends.
    pub async fn start() -> Self {
        let scripts: Arc<Mutex<Scripts>> = Arc::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind the scripted llm");
        let address: SocketAddr = listener.local_addr().expect("local address");
        let app = Router::new().route("/v1/chat/completions", post(complete)).with_state(scripts.clone());
        let listener = axum::serve::ListenerExt::tap_io(listener, |stream: &mut tokio::net::TcpStream| {
            let _ = stream.set_nodelay(true);
        });
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { base_url: format!("http://{address}/v1"), scripts }
    }

    /// Plays `steps` to the conversation whose latest question is `question`.
    pub fn script(&self, question: &str, steps: Vec<Step>) {
        self.scripts.lock().expect("scripts").conversations.insert(question.to_owned(), steps);
    }

    /// Plays `steps` to every conversation whose latest question contains `fragment` (an
    /// investigation's question, which Aurora writes from the incident).
    pub fn script_containing(&self, fragment: &str, steps: Vec<Step>) {
        self.scripts.lock().expect("scripts").containing.push((fragment.to_owned(), steps));
    }

    /// Every request received, oldest first.
    pub fn requests(&self) -> Vec<Value> {
        self.scripts.lock().expect("scripts").requests.clone()
    }

    /// The requests whose latest question is `question`.
    pub fn requests_for(&self, question: &str) -> Vec<Value> {
        self.requests().into_iter().filter(|request| latest_question(request).0 == question).collect()
    }

    /// The `Authorization` header of every request, oldest first.
    pub fn authorizations(&self) -> Vec<Option<String>> {
        self.scripts.lock().expect("scripts").authorizations.clone()
    }

    /// How long each answer took to send its first chunk.
    pub fn first_chunk_delays(&self) -> Vec<Duration> {
        self.scripts.lock().expect("scripts").first_chunk_delays.clone()
    }
}

/// The text of the latest user message and how many assistant messages follow it.
fn latest_question(request: &Value) -> (String, usize) {
    let messages = request["messages"].as_array().cloned().unwrap_or_default();
    let Some(position) = messages.iter().rposition(|message| message["role"] == "user") else { return (String::new(), 0) };
    let question = messages[position]["content"].as_str().unwrap_or_default().to_owned();
    let answered = messages[position..].iter().filter(|message| message["role"] == "assistant").count();
    (question, answered)
}

fn chunk(model: &str, delta: Value, finish_reason: Value) -> Bytes {
    let body = json!({
        "id": "chatcmpl-scripted", "object": "chat.completion.chunk", "created": 1_700_000_000, "model": model,
        "choices": [{ "index": 0, "delta": delta, "finish_reason": finish_reason }],
    });
    Bytes::from(format!("data: {body}\n\n"))
}

async fn complete(State(scripts): State<Arc<Mutex<Scripts>>>, headers: axum::http::HeaderMap, Json(request): Json<Value>) -> Response {
    let arrived = Instant::now();
    let (question, step_index) = latest_question(&request);
    let model = request["model"].as_str().unwrap_or("scripted").to_owned();
    let step = {
        let mut scripts = scripts.lock().expect("scripts");
        scripts.requests.push(request.clone());
        let authorization = headers.get(header::AUTHORIZATION).and_then(|value| value.to_str().ok()).map(str::to_owned);
        scripts.authorizations.push(authorization);
        let steps = scripts
            .conversations
            .get(&question)
            .or_else(|| scripts.containing.iter().find(|(fragment, _)| question.contains(fragment.as_str())).map(|(_, steps)| steps));
        steps.and_then(|steps| steps.get(step_index).cloned())
    }
    .unwrap_or_else(|| Step::text("I have nothing scripted for that."));
    let prompt_tokens = serde_json::to_string(&request["messages"]).map(|text| text.len() / 4).unwrap_or(0) as u64;
    let (chunks, pause): (Vec<Bytes>, Duration) = match step {
        Step::Error(status) => {
            let body = json!({ "error": { "message": "the scripted model is failing on purpose", "type": "server_error", "param": null, "code": null } });
            return (StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR), Json(body)).into_response();
        }
        Step::Hang => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            return StatusCode::GATEWAY_TIMEOUT.into_response();
        }
        Step::Text { chunks: pieces, pause } => {
            let completion_tokens = pieces.len() as u64;
            let mut chunks = vec![chunk(&model, json!({ "role": "assistant", "content": "" }), Value::Null)];
            chunks.extend(pieces.iter().map(|piece| chunk(&model, json!({ "content": piece }), Value::Null)));
            chunks.push(chunk(&model, json!({}), json!("stop")));
            chunks.push(usage(&model, prompt_tokens, completion_tokens));
            (chunks, pause)
        }
        Step::ToolCalls(calls) => (tool_call_chunks(&model, "", &calls, prompt_tokens), Duration::ZERO),
        Step::Reasoned { text, calls, pause } => (tool_call_chunks(&model, &text, &calls, prompt_tokens), pause),
    };
    let stream = futures::stream::unfold((chunks.into_iter(), true), move |(mut chunks, first)| {
        let scripts = scripts.clone();
        async move {
            let next = chunks.next()?;
            if !pause.is_zero() && !first {
                tokio::time::sleep(pause).await;
            }
            if first {
                scripts.lock().expect("scripts").first_chunk_delays.push(arrived.elapsed());
            }
            Some((Ok::<_, std::io::Error>(next), (chunks, false)))
        }
    });
    let done = futures::stream::once(async { Ok::<_, std::io::Error>(Bytes::from_static(b"data: [DONE]\n\n")) });
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(Body::from_stream(futures::StreamExt::chain(stream, done)))
        .expect("a streaming response")
}

/// An answer that says `text` (when any), then calls `calls`.
fn tool_call_chunks(model: &str, text: &str, calls: &[(String, String, Value)], prompt_tokens: u64) -> Vec<Bytes> {
    let mut chunks = vec![chunk(model, json!({ "role": "assistant", "content": null }), Value::Null)];
    chunks.extend(text.split_inclusive(' ').map(|piece| chunk(model, json!({ "content": piece }), Value::Null)));
    for (index, (id, name, arguments)) in calls.iter().enumerate() {
        let text = arguments.to_string();
        let (first, rest) = text.split_at(text.len() / 2);
        let opening =
            json!({ "tool_calls": [{ "index": index, "id": id, "type": "function", "function": { "name": name, "arguments": "" } }] });
        chunks.push(chunk(model, opening, Value::Null));
        for piece in [first, rest] {
            chunks.push(chunk(model, json!({ "tool_calls": [{ "index": index, "function": { "arguments": piece } }] }), Value::Null));
        }
    }
    chunks.push(chunk(model, json!({}), json!("tool_calls")));
    chunks.push(usage(model, prompt_tokens, 10 * calls.len() as u64 + text.split_whitespace().count() as u64));
    chunks
}

fn usage(model: &str, prompt_tokens: u64, completion_tokens: u64) -> Bytes {
    let body = json!({
        "id": "chatcmpl-scripted", "object": "chat.completion.chunk", "created": 1_700_000_000, "model": model,
        "choices": [],
        "usage": { "prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens, "total_tokens": prompt_tokens + completion_tokens },
    });
    Bytes::from(format!("data: {body}\n\n"))
}
