//! The agent runtime: advances a chat turn from wherever its events leave it until it ends or
//! waits for a person. Every step is recorded through the chat session aggregate before the next
//! one is taken, so a processor that dies at any point resumes the turn from its events: an LLM
//! call that was not recorded is made again, a read-only tool whose result was not recorded runs
//! again, and a destructive tool that was started but not finished is never run twice — its
//! unknown outcome is recorded as a failure instead.

pub mod deltas;
pub mod runner;
pub mod tools;

use std::sync::Arc;
use std::time::Duration;

use aurora_adapters::config::{ConnectionsConfig, DeployConfig};
use aurora_adapters::consumer::Fence;
use aurora_adapters::embeddings::Embedder;
use aurora_adapters::llm::{ChatMessage, Completion, Llm, ToolSpec};
use aurora_adapters::objects::Objects;
use aurora_adapters::secrets::SecretStore;
use aurora_adapters::telemetry::{SpanKind, Trace};
use aurora_adapters::vectors::search::KnowledgeIndex;
use aurora_adapters::Config;
use aurora_commands::{CommandHandler, CommandMeta, HandleError};
use aurora_domain::chat::{ChatSession, ChatSessionCommand, ChatSessionError, ConfirmationAnswer, ToolCallState, ToolOutcome, Turn};
use aurora_domain::{DomainError, ErrorKind};
use aurora_events::chat::{AssistantMessageCompleted, ChatMode, LlmCallCompleted, ToolCallCompleted, ToolCallRequested, TurnFailure};
use aurora_events::identity::Role;
use aurora_events::{Actor, OrgId, StreamId};
use chrono::Utc;
use serde_json::Value;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use deltas::DeltaPublisher;
use tools::{AnyTool, Connected, Effect, Registry, ToolContext};

/// The kind of the durable timers that expire confirmations.
pub const CONFIRMATION_EXPIRY: &str = "confirmation_expiry";

/// Limits of one turn.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub llm_calls: u32,
    pub tool_calls: u32,
    pub wall_time: Duration,
    /// Prompt and completion tokens of the whole turn; no limit when `None`.
    pub tokens: Option<u32>,
    pub context_tokens: usize,
    pub confirmation_ttl: Duration,
}

impl Limits {
    pub fn from_config(config: &Config) -> Self {
        Self {
            llm_calls: config.agent.max_llm_calls,
            tool_calls: config.agent.max_tool_calls,
            wall_time: config.agent.max_turn,
            tokens: None,
            context_tokens: config.llm.context_tokens,
            confirmation_ttl: config.agent.confirmation_ttl,
        }
    }

    /// The limits of `turn`: its own when it was given some (a background investigation).
    pub fn of(&self, turn: &Turn) -> Self {
        match turn.limits {
            Some(own) => Self {
                llm_calls: own.llm_calls,
                tool_calls: own.tool_calls,
                wall_time: Duration::from_secs(own.wall_time_secs),
                tokens: Some(own.tokens),
                ..*self
            },
            None => *self,
        }
    }
}

/// One pass of the agent over a turn, started by an event (a question, an answer to a
/// confirmation, a cancel): every event the pass records names that event as its cause and
/// carries the pass's span, which continues the trace of that event. The runner sets it around
/// [`Agent::advance`] with [`Pass::scope`].
pub struct Pass {
    causation_id: Uuid,
    trace: Trace,
}

tokio::task_local! {
    static PASS: Pass;
}

impl Pass {
    pub fn new(causation_id: Uuid, traceparent: Option<&str>) -> Self {
        let trace = Trace::start("agent.pass", SpanKind::Consumer, traceparent);
        trace.set("aurora.causation_id", causation_id.to_string());
        Self { causation_id, trace }
    }

    /// Runs `work` as this pass.
    pub async fn scope<F: std::future::Future>(self, work: F) -> F::Output {
        PASS.scope(self, work).await
    }
}

#[derive(Clone)]
pub struct Agent {
    commands: CommandHandler,
    pool: PgPool,
    secrets: Arc<dyn SecretStore>,
    providers: Arc<ConnectionsConfig>,
    objects: Objects,
    deploy: Arc<DeployConfig>,
    /// The organisation's runbooks and past conversations, for the search tools.
    knowledge: KnowledgeIndex,
    graph: aurora_adapters::graph::GraphStore,
    llm: Llm,
    tools: Registry,
    deltas: DeltaPublisher,
    limits: Limits,
    /// Wakes the timer loop when a new confirmation sets a timer.
    timers_changed: Arc<tokio::sync::Notify>,
}

/// Where a turn stands after [`Agent::advance`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Advanced {
    /// Nothing is running in the session.
    Idle,
    /// The turn waits for a person to answer a confirmation.
    Waiting,
    /// The turn ended (answered, failed or cancelled).
    Ended,
}

fn agent_actor() -> Actor {
    Actor::processor("agent")
}

impl Agent {
    pub fn new(context: &crate::Context, objects: Objects, deltas: DeltaPublisher) -> Self {
        let (config, pool) = (&context.config, context.pool.clone());
        Self {
            graph: context.graph.clone(),
            objects,
            deploy: Arc::new(config.deploy.clone()),
            knowledge: KnowledgeIndex::from_config(&config.knowledge, Embedder::shared(&config.embedding), pool.clone()),
            commands: context.commands.clone(),
            pool,
            secrets: context.secrets.clone(),
            providers: Arc::new(config.connections.clone()),
            llm: Llm::new(config),
            tools: Registry::standard(),
            deltas,
            limits: Limits::from_config(config),
            timers_changed: Arc::new(tokio::sync::Notify::new()),
        }
    }

    pub fn timers_changed(&self) -> Arc<tokio::sync::Notify> {
        self.timers_changed.clone()
    }

    pub fn commands(&self) -> &CommandHandler {
        &self.commands
    }

    async fn record(&self, stream: &StreamId, org_id: OrgId, turn_id: Uuid, command: ChatSessionCommand) -> Result<(), HandleError> {
        let mut meta = CommandMeta::new(org_id, agent_actor());
        meta.correlation_id = turn_id;
        if let Ok((causation_id, traceparent)) = PASS.try_with(|pass| (pass.causation_id, pass.trace.traceparent())) {
            meta.causation_id = Some(causation_id);
            meta.traceparent = traceparent;
        }
        self.commands.handle::<ChatSession>(stream, command, &meta, None).await?;
        // A person waits on every event of a turn: the relay publishes it now, not at its next poll.
        aurora_commands::relay::wake(&self.pool).await;
        Ok(())
    }

    /// Advances the running turn of `stream`, if any, until it ends or waits. `cancel` interrupts
    /// a streaming LLM call as soon as a cancel request is seen.
    ///
    /// Each step takes at most one side effect (a model call, a tool run), and each is fenced:
    /// an instance that no longer owns the session's work (its lock, or its partition) stops
    /// before it, and the one that owns it now takes over.
    pub async fn advance(&self, stream: &StreamId, org_id: OrgId, cancel: &CancellationToken, fence: &Fence) -> anyhow::Result<Advanced> {
        let mut refusals = 0;
        loop {
            fence.check().await?;
            let (session, _) = self.commands.load::<ChatSession>(stream, org_id).await?;
            let Some(turn) = session.running_turn().cloned() else {
                return Ok(if session.turn.is_some() { Advanced::Ended } else { Advanced::Idle });
            };
            let outcome = self.step(stream, org_id, &session, &turn, cancel).await;
            match outcome {
                Ok(Some(advanced)) => return Ok(advanced),
                Ok(None) => continue,
                // The turn ended under us (cancelled, or finished by another owner): look again,
                // but not forever if the same step keeps being refused.
                Err(HandleError::Domain(reason)) if reason.kind() == ErrorKind::InvalidState => {
                    refusals += 1;
                    if refusals >= 5 {
                        anyhow::bail!("the turn's next step keeps being refused: {reason}");
                    }
                }
                Err(error) => return Err(error.into()),
            }
        }
    }

    /// Takes one step of `turn`. `None`: a step was recorded, look again.
    async fn step(
        &self,
        stream: &StreamId,
        org_id: OrgId,
        session: &ChatSession,
        turn: &Turn,
        cancel: &CancellationToken,
    ) -> Result<Option<Advanced>, HandleError> {
        let turn_id = turn.turn_id;
        // What the organisation has connected decides which tools exist and what the prompt says.
        let connected = Arc::new(
            Connected::load(&self.pool, org_id, Some(&self.graph))
                .await
                .map_err(|error| HandleError::Store(aurora_commands::StoreError::Unexpected(error.into())))?,
        );
        let offered = self.tools.offered(&connected, turn.mode);
        if turn.cancel_requested {
            self.record(stream, org_id, turn_id, ChatSessionCommand::Cancel { turn_id }).await?;
            return Ok(Some(Advanced::Ended));
        }
        let started_at = match turn.started_at {
            Some(started_at) => started_at,
            None => {
                // Recorded, and the turn goes straight on to its first model call: the first
                // token is waited for, a reload would only add a round trip.
                let started_at = Utc::now();
                let tools = offered.iter().map(|tool| tool.name().to_owned()).collect();
                let start = ChatSessionCommand::StartTurn { turn_id, started_at, model: self.llm.model().to_owned(), tools };
                self.record(stream, org_id, turn_id, start).await?;
                started_at
            }
        };
        if turn.awaiting_confirmation() {
            // Every path that waits makes sure the expiry timer exists: a processor that died
            // between recording the request and setting its timer must not leave it waiting for ever.
            self.ensure_confirmation_timers(stream, org_id, turn).await?;
            return Ok(Some(Advanced::Waiting));
        }
        if let Some(pending) = turn.tool_calls.iter().find(|call| call.outcome.is_none()) {
            self.resolve_tool_call(stream, org_id, turn, pending, &offered, &connected, cancel).await?;
            return Ok(None);
        }
        let limits = self.limits.of(turn);
        let elapsed = (Utc::now() - started_at).to_std().unwrap_or_default();
        if elapsed > limits.wall_time {
            let message = format!("The turn ran longer than its limit of {} s and was stopped.", limits.wall_time.as_secs());
            self.fail(stream, org_id, turn_id, TurnFailure::WallTimeLimit, message).await?;
            return Ok(Some(Advanced::Ended));
        }
        if turn.llm_calls.len() as u32 >= limits.llm_calls {
            let message = format!("The turn reached its limit of {} model calls and was stopped.", limits.llm_calls);
            self.fail(stream, org_id, turn_id, TurnFailure::LlmCallLimit, message).await?;
            return Ok(Some(Advanced::Ended));
        }
        let tokens_used: u64 = turn.llm_calls.iter().map(|call| u64::from(call.prompt_tokens) + u64::from(call.completion_tokens)).sum();
        if let Some(max_tokens) = limits.tokens.filter(|max_tokens| tokens_used >= u64::from(*max_tokens)) {
            let message = format!("The turn used {tokens_used} tokens, over its limit of {max_tokens}, and was stopped.");
            self.fail(stream, org_id, turn_id, TurnFailure::TokenLimit, message).await?;
            return Ok(Some(Advanced::Ended));
        }
        let call_index = turn.llm_calls.len() as u32 + 1;
        let messages = self.conversation(session, turn, &offered, &connected);
        let specs: Vec<ToolSpec> = offered
            .iter()
            .map(|tool| ToolSpec {
                name: tool.name().to_owned(),
                description: tool.description().to_owned(),
                parameters: tool.parameters(),
            })
            .collect();
        let session_id = Uuid::parse_str(stream.id()).unwrap_or_default();
        let mut seq = 0u32;
        let streamed = self.llm.stream(&messages, &specs, |text| {
            self.deltas.publish(session_id, turn_id, call_index, seq, text);
            seq += 1;
        });
        let completion = tokio::select! {
            completion = streamed => completion,
            _ = cancel.cancelled() => return Ok(None),
        };
        let completion: Completion = match completion {
            Ok(completion) => completion,
            Err(error) => {
                tracing::warn!(%stream, %turn_id, %error, "llm call failed");
                let message = format!("The model could not answer: {error}. Nothing was changed; ask again when it is back.");
                self.fail(stream, org_id, turn_id, TurnFailure::LlmUnavailable, message).await?;
                return Ok(Some(Advanced::Ended));
            }
        };
        let record = LlmCallCompleted {
            turn_id,
            call_index,
            model: self.llm.model().to_owned(),
            prompt_tokens: completion.prompt_tokens,
            completion_tokens: completion.completion_tokens,
            latency_ms: completion.latency.as_millis() as u64,
            first_token_ms: completion.first_token.map(|first| first.as_millis() as u64),
            text: completion.text.clone(),
            tool_calls: completion.tool_calls.clone(),
            finish_reason: completion.finish_reason.clone(),
        };
        self.record(stream, org_id, turn_id, ChatSessionCommand::RecordLlmCall(record)).await?;
        if completion.tool_calls.is_empty() {
            // The turn's recorded calls, and this one.
            let answer = AssistantMessageCompleted {
                turn_id,
                text: completion.text,
                llm_calls: call_index,
                tool_calls: turn.tool_calls.len() as u32,
                prompt_tokens: turn.llm_calls.iter().map(|call| call.prompt_tokens).sum::<u32>() + completion.prompt_tokens,
                completion_tokens: turn.llm_calls.iter().map(|call| call.completion_tokens).sum::<u32>() + completion.completion_tokens,
            };
            self.record(stream, org_id, turn_id, ChatSessionCommand::Complete(answer)).await?;
            return Ok(Some(Advanced::Ended));
        }
        let mut requested = turn.tool_calls.len() as u32;
        for call in completion.tool_calls {
            requested += 1;
            if requested > limits.tool_calls {
                let message = format!("The turn reached its limit of {} tool calls and was stopped.", limits.tool_calls);
                self.fail(stream, org_id, turn_id, TurnFailure::ToolCallLimit, message).await?;
                return Ok(Some(Advanced::Ended));
            }
            let tool = offered.iter().find(|tool| tool.name() == call.name);
            let arguments: Result<Value, _> = if call.arguments.trim().is_empty() {
                Ok(Value::Object(Default::default()))
            } else {
                serde_json::from_str(&call.arguments)
            };
            let destructive = tool.is_some_and(|tool| tool.effect() == Effect::Destructive);
            let request = ToolCallRequested {
                turn_id,
                tool_call_id: call.tool_call_id.clone(),
                name: call.name.clone(),
                arguments: arguments.as_ref().cloned().unwrap_or(Value::String(call.arguments.clone())),
                destructive,
            };
            let mut problem = match (&tool, &arguments) {
                (None, _) => Some(format!("there is no tool named {} in this conversation", call.name)),
                (_, Err(error)) => Some(format!("the arguments are not valid JSON: {error}")),
                _ => None,
            };
            // What the person will approve, read by the tool now; a call it refuses asks nobody.
            let mut preview = None;
            if let (Some(tool), Ok(arguments), true, None) = (tool, &arguments, destructive, &problem) {
                let previewed = match self.tool_context(stream, org_id, turn, &request, &connected, cancel).await {
                    Ok(context) => tool.preview(&context, arguments).await.map_err(|error| error.to_string()),
                    Err(reason) => Err(reason),
                };
                match previewed {
                    Ok(shown) => preview = shown,
                    Err(reason) => problem = Some(reason),
                }
            }
            let confirmation = (destructive && problem.is_none()).then(|| {
                let expires_at = Utc::now() + chrono::Duration::from_std(self.limits.confirmation_ttl).unwrap_or_default();
                (Uuid::now_v7(), expires_at, preview)
            });
            self.record(stream, org_id, turn_id, ChatSessionCommand::RequestTool { call: request, confirmation }).await?;
            if let Some(error) = problem {
                let finish = ChatSessionCommand::FinishTool { turn_id, tool_call_id: call.tool_call_id.clone(), outcome: Err(error) };
                self.record(stream, org_id, turn_id, finish).await?;
            }
        }
        // A confirmation requested here gets its timer at the next step, which waits on it.
        Ok(None)
    }

    async fn fail(&self, stream: &StreamId, org_id: OrgId, turn_id: Uuid, reason: TurnFailure, message: String) -> Result<(), HandleError> {
        self.record(stream, org_id, turn_id, ChatSessionCommand::Fail { turn_id, reason, message }).await
    }

    /// Every pending confirmation of `turn` has its expiry timer (idempotent).
    async fn ensure_confirmation_timers(&self, stream: &StreamId, org_id: OrgId, turn: &Turn) -> Result<(), HandleError> {
        for confirmation in turn.confirmations.iter().filter(|confirmation| confirmation.answer.is_none()) {
            let payload = serde_json::json!({ "confirmation_id": confirmation.confirmation_id });
            let stream_name = stream.to_string();
            aurora_adapters::timers::set(
                &self.pool,
                confirmation.confirmation_id,
                CONFIRMATION_EXPIRY,
                org_id.0,
                &stream_name,
                &payload,
                confirmation.expires_at,
            )
            .await
            .map_err(|error| HandleError::Store(aurora_commands::StoreError::Unexpected(error.into())))?;
        }
        self.timers_changed.notify_one();
        Ok(())
    }

    /// Runs, refuses or writes off one requested tool call whose outcome is not recorded.
    #[allow(clippy::too_many_arguments)]
    async fn resolve_tool_call(
        &self,
        stream: &StreamId,
        org_id: OrgId,
        turn: &Turn,
        pending: &ToolCallState,
        offered: &[Arc<dyn AnyTool>],
        connected: &Arc<Connected>,
        cancel: &CancellationToken,
    ) -> Result<(), HandleError> {
        let (call, started_before) = (&pending.requested, pending.started);
        let turn_id = turn.turn_id;
        let finish = |outcome: Result<ToolCallCompleted, String>| ChatSessionCommand::FinishTool {
            turn_id,
            tool_call_id: call.tool_call_id.clone(),
            outcome,
        };
        let Some(tool) = offered.iter().find(|tool| tool.name() == call.name).cloned() else {
            let error = format!("there is no tool named {} in this conversation", call.name);
            return self.record(stream, org_id, turn_id, finish(Err(error))).await;
        };
        if call.destructive {
            let answer = turn.confirmation_for(&call.tool_call_id).and_then(|confirmation| confirmation.answer);
            match answer {
                Some(ConfirmationAnswer::Granted) => {}
                Some(ConfirmationAnswer::Denied) => {
                    let error = "a person declined to run this tool; do not try it again in this turn".to_owned();
                    return self.record(stream, org_id, turn_id, finish(Err(error))).await;
                }
                Some(ConfirmationAnswer::Expired) | None => {
                    let error = "nobody confirmed this tool in time, so it did not run".to_owned();
                    return self.record(stream, org_id, turn_id, finish(Err(error))).await;
                }
            }
            if started_before {
                let mut error =
                    "the agent stopped while this tool ran; whether it took effect is unknown, and it was not run again".to_owned();
                // The tool records what it can tell of the lost run (a deploy: its lock and state).
                let told = match self.tool_context(stream, org_id, turn, call, connected, cancel).await {
                    Ok(context) => tool.abandoned(&context, &call.arguments).await.map_err(|error| error.to_string()),
                    Err(reason) => Err(reason),
                };
                match told {
                    Ok(Some(note)) => error = format!("{error}. {note}"),
                    Ok(None) => {}
                    Err(reason) => tracing::warn!(%stream, tool = call.name, %reason, "could not record what an interrupted tool left"),
                }
                return self.record(stream, org_id, turn_id, finish(Err(error))).await;
            }
            let start = ChatSessionCommand::StartTool { turn_id, tool_call_id: call.tool_call_id.clone() };
            match self.record(stream, org_id, turn_id, start).await {
                Ok(()) => {}
                // Another owner started it, or it already has an outcome: it is not run again.
                Err(HandleError::Domain(DomainError::ChatSession(
                    ChatSessionError::ToolCallStarted(_) | ChatSessionError::ToolCallHasOutcome(_) | ChatSessionError::TurnNotRunning,
                ))) => return Ok(()),
                Err(error) => return Err(error),
            }
        }
        let outcome = self.run_tool(stream, org_id, turn, call, tool.as_ref(), connected, cancel).await;
        self.record(stream, org_id, turn_id, finish(outcome)).await
    }

    /// What a tool of `call` runs with: the organisation, the user who asked (and their role
    /// now), the person who approved it, the session's workspace.
    async fn tool_context(
        &self,
        stream: &StreamId,
        org_id: OrgId,
        turn: &Turn,
        call: &ToolCallRequested,
        connected: &Arc<Connected>,
        cancel: &CancellationToken,
    ) -> Result<ToolContext, String> {
        let role = match &turn.submitted_by {
            Actor::User(user_id) => {
                let role: Option<String> =
                    sqlx::query_scalar("SELECT role FROM accounts WHERE user_id = $1 AND org_id = $2 AND removed_at IS NULL")
                        .bind(user_id)
                        .bind(org_id.0)
                        .fetch_optional(&self.pool)
                        .await
                        .map_err(|error| format!("could not look up the user: {error}"))?;
                role.and_then(|role| role.parse::<Role>().ok())
                    .ok_or_else(|| "the user who asked is no longer a member of the organisation".to_owned())?
            }
            // A background investigation reads what a viewer may read, and only in ask mode.
            Actor::Processor(_) if turn.mode == ChatMode::Ask => Role::Viewer,
            _ => return Err("the turn has no user to run tools for".into()),
        };
        let session_id = Uuid::parse_str(stream.id()).unwrap_or_default();
        let (deltas, turn_id, tool_call_id, seq) =
            (self.deltas.clone(), turn.turn_id, call.tool_call_id.clone(), Arc::new(std::sync::atomic::AtomicU32::new(0)));
        let output = tools::OutputStream::new(move |text| {
            let seq = seq.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            deltas.publish_tool_output(session_id, turn_id, &tool_call_id, seq, text);
        });
        Ok(ToolContext {
            org_id,
            actor: turn.submitted_by.clone(),
            role,
            approved_by: turn.confirmation_for(&call.tool_call_id).and_then(|confirmation| confirmation.granted_by.clone()),
            tool_call_id: call.tool_call_id.clone(),
            tool_call_key: Uuid::new_v5(&turn.turn_id, call.tool_call_id.as_bytes()),
            pool: self.pool.clone(),
            commands: self.commands.clone(),
            secrets: self.secrets.clone(),
            providers: self.providers.clone(),
            knowledge: self.knowledge.clone(),
            graph: self.graph.clone(),
            connected: connected.clone(),
            session_id,
            objects: self.objects.clone(),
            deploy: self.deploy.clone(),
            cancel: cancel.clone(),
            output,
        })
    }

    #[allow(clippy::too_many_arguments)]
    async fn run_tool(
        &self,
        stream: &StreamId,
        org_id: OrgId,
        turn: &Turn,
        call: &ToolCallRequested,
        tool: &dyn AnyTool,
        connected: &Arc<Connected>,
        cancel: &CancellationToken,
    ) -> Result<ToolCallCompleted, String> {
        let context = self.tool_context(stream, org_id, turn, call, connected, cancel).await?;
        let session_id = context.session_id;
        let started = std::time::Instant::now();
        let result = tool.call(&context, &call.arguments).await.map_err(|error| error.to_string())?;
        let text = serde_json::to_string(&result).unwrap_or_default();
        // The whole result first, so that the event that announces it never points at nothing.
        sqlx::query(
            "INSERT INTO tool_results (org_id, session_id, tool_call_id, turn_id, result) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (session_id, tool_call_id) DO UPDATE SET result = EXCLUDED.result",
        )
        .bind(org_id.0)
        .bind(session_id)
        .bind(&call.tool_call_id)
        .bind(turn.turn_id)
        .bind(&result)
        .execute(&self.pool)
        .await
        .map_err(|error| format!("could not keep the result: {error}"))?;
        let cap = tool.output_cap();
        let truncated = text.len() > cap;
        let kept = if truncated { Value::String(cut(&text, cap).to_owned()) } else { result };
        Ok(ToolCallCompleted {
            turn_id: turn.turn_id,
            tool_call_id: call.tool_call_id.clone(),
            result: kept,
            truncated,
            result_bytes: text.len() as u64,
            duration_ms: started.elapsed().as_millis() as u64,
        })
    }

    /// The messages of the next LLM call: the system prompt, as much history as the context
    /// budget holds (oldest dropped first), the question and this turn's calls and tool results.
    fn conversation(&self, session: &ChatSession, turn: &Turn, offered: &[Arc<dyn AnyTool>], connected: &Connected) -> Vec<ChatMessage> {
        let mut prompt = system_prompt(offered, connected);
        if let Some(context) = &session.context {
            prompt.push_str("\nWhat this conversation is about:\n");
            prompt.push_str(context);
            prompt.push('\n');
        }
        let system = ChatMessage::System(prompt);
        let mut current = vec![ChatMessage::User(turn.question.clone())];
        for llm_call in &turn.llm_calls {
            current.push(ChatMessage::Assistant { text: llm_call.text.clone(), tool_calls: llm_call.tool_calls.clone() });
            for model_call in &llm_call.tool_calls {
                let content = match turn.tool_call(&model_call.tool_call_id).and_then(|call| call.outcome.as_ref()) {
                    Some(ToolOutcome::Completed(result)) => serde_json::to_string(result).unwrap_or_default(),
                    Some(ToolOutcome::Failed(error)) => format!("error: {error}"),
                    None => "error: no result".into(),
                };
                current.push(ChatMessage::Tool { tool_call_id: model_call.tool_call_id.clone(), content });
            }
        }
        let fixed: usize = system.estimated_tokens() + current.iter().map(ChatMessage::estimated_tokens).sum::<usize>();
        let mut budget = self.limits.context_tokens.saturating_sub(fixed);
        let mut history = Vec::new();
        for exchange in session.history.iter().rev() {
            let pair = [
                ChatMessage::User(exchange.question.clone()),
                ChatMessage::Assistant { text: exchange.answer.clone(), tool_calls: Vec::new() },
            ];
            let cost: usize = pair.iter().map(ChatMessage::estimated_tokens).sum();
            if cost > budget {
                break;
            }
            budget -= cost;
            history.extend(pair.into_iter().rev());
        }
        history.reverse();
        let mut messages = vec![system];
        messages.extend(history);
        messages.extend(current);
        messages
    }
}

/// At most `cap` bytes of `text`, cut on a character boundary.
fn cut(text: &str, cap: usize) -> &str {
    let mut end = cap.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// Inventory items the prompt names per connection; the rest are counted.
const PROMPT_ITEMS_PER_CONNECTION: usize = 20;

/// The system prompt: who the agent is, what the organisation has connected (providers, accounts,
/// projects, repositories), and which tools exist for them.
fn system_prompt(offered: &[Arc<dyn AnyTool>], connected: &Connected) -> String {
    let mut prompt = String::from(
        "You are Aurora, a site-reliability assistant. Answer from evidence; say which tool results support \
         what you say. Call tools when they would help.\n\n",
    );
    if offered.iter().any(|tool| tool.name() == tools::knowledge::KNOWLEDGE_BASE_SEARCH) {
        prompt.push_str(&format!(
            "Before anything else, search the organisation's runbooks and postmortems with `{}`, and cite the \
             document and page of what you use. `{}` finds how earlier conversations handled similar questions, \
             `{}` what earlier incidents' investigations found.\n\n",
            tools::knowledge::KNOWLEDGE_BASE_SEARCH,
            tools::knowledge::PAST_CONVERSATIONS_SEARCH,
            tools::knowledge::PAST_INVESTIGATIONS_SEARCH,
        ));
    }
    if let Some(memory) = connected.memory.as_deref().filter(|memory| !memory.trim().is_empty()) {
        prompt.push_str("What the organisation wants you to know (its memory, kept by its admins):\n");
        prompt.push_str(memory);
        prompt.push_str("\n\n");
    }
    if connected.connections.is_empty() {
        prompt.push_str("The organisation has connected no cloud or tool yet; say so when a question needs one.\n\n");
    } else {
        prompt.push_str("Connected to this organisation (pass `connection` to a tool to pick one of several of a provider):\n");
        for connection in &connected.connections {
            prompt.push_str(&format!("- {} `{}`: {}\n", connection.provider.title(), connection.name, connection.account));
            let shown: Vec<String> = connection
                .inventory
                .iter()
                .take(PROMPT_ITEMS_PER_CONNECTION)
                .map(|item| match &item.name {
                    Some(name) if name != &item.id => format!("{} {} ({name})", item.kind, item.id),
                    _ => format!("{} {}", item.kind, item.id),
                })
                .collect();
            let more = connection.inventory.len().saturating_sub(PROMPT_ITEMS_PER_CONNECTION) as i64 + connection.inventory_omitted;
            if !shown.is_empty() {
                let tail = if more > 0 { format!(", and {more} more") } else { String::new() };
                prompt.push_str(&format!("  reaches: {}{tail}\n", shown.join(", ")));
            }
        }
        prompt.push('\n');
    }
    if let Some(graph) = connected.graph.as_ref().filter(|_| offered.iter().any(|tool| tool.needs_graph())) {
        prompt.push_str("The discovered service graph (ask `list_services`, `get_service`, `service_dependencies`, `blast_radius` and `dependency_path` for more): ");
        prompt.push_str(&graph.describe());
        prompt.push('\n');
    }
    prompt.push_str("Tools available to this user:\n");
    if offered.is_empty() {
        prompt.push_str("(none)\n");
    }
    for tool in offered {
        let note = if tool.effect() == Effect::Destructive { " (changes state; a person must confirm it first)" } else { "" };
        prompt.push_str(&format!("- {}: {}{note}\n", tool.name(), tool.description()));
    }
    prompt
}
