//! The LLM port: streamed Chat Completions against any OpenAI-compatible endpoint (OpenAI, Azure
//! OpenAI, Ollama, vLLM), through `async-openai`. The caller sees each piece of text as it arrives
//! and gets the whole completion — text, tool calls, token usage, timings — at the end.

use std::sync::Once;
use std::time::{Duration, Instant};

use async_openai::config::OpenAIConfig;
use async_openai::types::chat::{CreateChatCompletionRequest, FinishReason};
use aurora_events::chat::ModelToolCall;
use futures::StreamExt;
use serde_json::{json, Value};

use crate::config::Config;

/// One message of the conversation sent to the model.
#[derive(Debug, Clone, PartialEq)]
pub enum ChatMessage {
    System(String),
    User(String),
    Assistant { text: String, tool_calls: Vec<ModelToolCall> },
    Tool { tool_call_id: String, content: String },
}

impl ChatMessage {
    /// The message as the Chat Completions API takes it.
    fn to_wire(&self) -> Value {
        match self {
            ChatMessage::System(text) => json!({ "role": "system", "content": text }),
            ChatMessage::User(text) => json!({ "role": "user", "content": text }),
            ChatMessage::Assistant { text, tool_calls } if tool_calls.is_empty() => json!({ "role": "assistant", "content": text }),
            ChatMessage::Assistant { text, tool_calls } => {
                let calls: Vec<Value> = tool_calls
                    .iter()
                    .map(|call| json!({ "id": call.tool_call_id, "type": "function", "function": { "name": call.name, "arguments": call.arguments } }))
                    .collect();
                let content = if text.is_empty() { Value::Null } else { json!(text) };
                json!({ "role": "assistant", "content": content, "tool_calls": calls })
            }
            ChatMessage::Tool { tool_call_id, content } => json!({ "role": "tool", "tool_call_id": tool_call_id, "content": content }),
        }
    }

    /// A rough size in tokens (four characters a token, plus the message's framing), good enough
    /// to keep a conversation inside a context window with some margin.
    pub fn estimated_tokens(&self) -> usize {
        let characters = match self {
            ChatMessage::System(text) | ChatMessage::User(text) => text.len(),
            ChatMessage::Assistant { text, tool_calls } => {
                text.len() + tool_calls.iter().map(|call| call.name.len() + call.arguments.len()).sum::<usize>()
            }
            ChatMessage::Tool { content, .. } => content.len(),
        };
        characters / 4 + 4
    }
}

/// A tool as offered to the model.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolSpec {
    pub name: String,
    pub description: String,
    /// JSON Schema of the arguments.
    pub parameters: Value,
}

/// A finished streamed call.
#[derive(Debug, Clone, PartialEq)]
pub struct Completion {
    pub text: String,
    pub tool_calls: Vec<ModelToolCall>,
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
    pub finish_reason: Option<String>,
    pub first_token: Option<Duration>,
    pub latency: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum LlmError {
    #[error("the model did not answer within {0:?}")]
    TimedOut(Duration),
    #[error("the model endpoint failed: {0}")]
    Failed(String),
}

/// Installs ring as the process's TLS provider, once. Every HTTPS client in the process (the LLM
/// client, and any other reqwest client built with rustls) needs one before it is built.
pub fn install_tls_provider() {
    static PROVIDER: Once = Once::new();
    PROVIDER.call_once(|| {
        // Another part of the process may have installed one first; either will do.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

#[derive(Clone)]
pub struct Llm {
    client: async_openai::Client<OpenAIConfig>,
    model: String,
    timeout: Duration,
}

impl Llm {
    pub fn new(config: &Config) -> Self {
        install_tls_provider();
        let mut openai = OpenAIConfig::new().with_api_base(config.llm.base_url.trim_end_matches('/'));
        if let Some(key) = &config.llm.api_key {
            openai = openai.with_api_key(secrecy::ExposeSecret::expose_secret(key));
        }
        Self { client: async_openai::Client::with_config(openai), model: config.llm.model.clone(), timeout: config.llm.timeout }
    }

    pub fn model(&self) -> &str {
        &self.model
    }

    /// Streams one completion of `messages`, offering `tools`; `on_text` gets each piece of text
    /// as it arrives. The model gets `timeout` for its first chunk and for each one after.
    pub async fn stream(
        &self,
        messages: &[ChatMessage],
        tools: &[ToolSpec],
        mut on_text: impl FnMut(&str),
    ) -> Result<Completion, LlmError> {
        let mut body = json!({
            "model": self.model,
            "messages": messages.iter().map(ChatMessage::to_wire).collect::<Vec<_>>(),
            "stream": true,
            "stream_options": { "include_usage": true },
        });
        if !tools.is_empty() {
            body["tools"] = tools
                .iter()
                .map(|tool| json!({ "type": "function", "function": { "name": tool.name, "description": tool.description, "parameters": tool.parameters } }))
                .collect();
        }
        let request: CreateChatCompletionRequest =
            serde_json::from_value(body).map_err(|error| LlmError::Failed(format!("building the request: {error}")))?;
        let started = Instant::now();
        let mut stream = match tokio::time::timeout(self.timeout, self.client.chat().create_stream(request)).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(error)) => return Err(LlmError::Failed(error.to_string())),
            Err(_) => return Err(LlmError::TimedOut(self.timeout)),
        };
        let mut completion = Completion {
            text: String::new(),
            tool_calls: Vec::new(),
            prompt_tokens: 0,
            completion_tokens: 0,
            finish_reason: None,
            first_token: None,
            latency: Duration::ZERO,
        };
        // Tool calls arrive in pieces, addressed by index: the id and name first, the arguments after.
        let mut calls: Vec<(u32, ModelToolCall)> = Vec::new();
        loop {
            let chunk = match tokio::time::timeout(self.timeout, stream.next()).await {
                Err(_) => return Err(LlmError::TimedOut(self.timeout)),
                Ok(None) => break,
                Ok(Some(Err(error))) => return Err(LlmError::Failed(error.to_string())),
                Ok(Some(Ok(chunk))) => chunk,
            };
            if let Some(usage) = chunk.usage {
                completion.prompt_tokens = usage.prompt_tokens;
                completion.completion_tokens = usage.completion_tokens;
            }
            for choice in chunk.choices.into_iter().filter(|choice| choice.index == 0) {
                if let Some(text) = choice.delta.content.filter(|text| !text.is_empty()) {
                    completion.first_token.get_or_insert_with(|| started.elapsed());
                    on_text(&text);
                    completion.text.push_str(&text);
                }
                for piece in choice.delta.tool_calls.unwrap_or_default() {
                    completion.first_token.get_or_insert_with(|| started.elapsed());
                    let position = match calls.iter().position(|(index, _)| *index == piece.index) {
                        Some(position) => position,
                        None => {
                            let call = ModelToolCall { tool_call_id: String::new(), name: String::new(), arguments: String::new() };
                            calls.push((piece.index, call));
                            calls.len() - 1
                        }
                    };
                    let call = &mut calls[position].1;
                    if let Some(id) = piece.id {
                        call.tool_call_id = id;
                    }
                    if let Some(function) = piece.function {
                        if let Some(name) = function.name {
                            call.name.push_str(&name);
                        }
                        if let Some(arguments) = function.arguments {
                            call.arguments.push_str(&arguments);
                        }
                    }
                }
                if let Some(reason) = choice.finish_reason {
                    completion.finish_reason = Some(finish_reason_name(reason).to_owned());
                }
            }
        }
        completion.tool_calls = calls.into_iter().map(|(_, call)| call).collect();
        completion.latency = started.elapsed();
        Ok(completion)
    }
}

fn finish_reason_name(reason: FinishReason) -> &'static str {
    match reason {
        FinishReason::Stop => "stop",
        FinishReason::Length => "length",
        FinishReason::ToolCalls => "tool_calls",
        FinishReason::ContentFilter => "content_filter",
        FinishReason::FunctionCall => "function_call",
    }
}
