//! The investigator: each requested investigation becomes a read-only agent turn in a chat
//! session of its own (owned by `processor:investigator`, so no person's list shows it), with the
//! incident's context and the RCA's shape in the question and the investigation's limits on the
//! turn. The agent runtime runs the turn (and resumes it after a crash); this processor follows
//! the session's events: each model call's reasoning becomes thoughts, the final answer is read
//! as the RCA (refused once with the reasons and asked again within what is left of the
//! investigation's limits, then failed), a failed or cancelled
//! turn fails the investigation with its reason.
//!
//! At most `max_concurrent_investigations` run at once per organisation; the rest wait in
//! `investigation_runs`, oldest first, and start as running ones end.

use std::collections::HashMap;

use async_trait::async_trait;
use aurora_adapters::embeddings::Embedder;
use aurora_adapters::graph::{AsOf};
use aurora_adapters::vectors::search::{Chunk, KnowledgeIndex};
use aurora_adapters::vectors::{Source, SourceKind};
use aurora_commands::{CommandMeta, HandleError};
use aurora_domain::chat::{ChatSession, ChatSessionCommand, ChatSessionError};
use aurora_domain::incident::postmortem::{self, Moment};
use aurora_domain::incident::rca::{self, KnownToolCall};
use aurora_domain::incident::{sources, Incident, IncidentCommand, InvestigationStatus};
use aurora_domain::DomainError;
use aurora_events::chat::{ChatEventType, ChatMode, ChatSessionEvent, TurnFailure, TurnLimits};
use aurora_events::incident::{IncidentEvent, InvestigationFailure, InvestigationLimits, PostmortemOrigin, Resolution};
use aurora_events::{Actor, Envelope, EventPayload, OrgId};
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::record;
use crate::reactor::Reactor;
use crate::Context;

/// Characters of the question an investigation starts with (the chat limit is 16 000).
const MAX_BRIEF_CHARS: usize = 15_000;
/// Most neighbours on each side the brief names (at most about 300 characters each).
const MAX_NEIGHBOURS: usize = 15;
/// Thoughts taken from one model call at most.
const MAX_THOUGHTS_PER_CALL: usize = 20;

pub fn actor() -> Actor {
    Actor::processor("investigator")
}

/// The chat session an investigation runs in.
pub fn session_of(investigation_id: Uuid) -> Uuid {
    Uuid::new_v5(&investigation_id, b"session")
}

fn turn_of(investigation_id: Uuid, attempt: u32) -> Uuid {
    Uuid::new_v5(&investigation_id, format!("turn-{attempt}").as_bytes())
}

fn key(investigation_id: Uuid, what: &str) -> Uuid {
    Uuid::new_v5(&investigation_id, what.as_bytes())
}

#[derive(sqlx::FromRow)]
struct Run {
    investigation_id: Uuid,
    incident_id: Uuid,
    session_id: Uuid,
}

/// What an investigation has used of its limits, as its chat session recorded it.
#[derive(Debug, Default)]
struct Used {
    /// The tool calls that gave a result: what evidence may cite.
    known: Vec<KnownToolCall>,
    /// Tool calls asked for.
    tool_calls: u32,
    llm_calls: u32,
    /// Prompt and completion tokens of every model call.
    tokens: u32,
    /// When its first turn started: its wall time counts from there.
    started_at: Option<DateTime<Utc>>,
    /// The turns asked for, in order.
    turns: Vec<Uuid>,
}

impl Used {
    /// What is left of `limits` at `now` for the turn that asks again, or the reason it cannot
    /// run and what was used up. With no tool call left it may still answer.
    fn left_of(&self, limits: &InvestigationLimits, now: DateTime<Utc>) -> Result<TurnLimits, (InvestigationFailure, String)> {
        let elapsed = self.started_at.map_or(0, |started_at| u64::try_from((now - started_at).num_seconds()).unwrap_or(0));
        let left = TurnLimits {
            llm_calls: limits.llm_calls.saturating_sub(self.llm_calls),
            tool_calls: limits.tool_calls.saturating_sub(self.tool_calls),
            wall_time_secs: limits.wall_time_secs.saturating_sub(elapsed),
            tokens: limits.tokens.saturating_sub(self.tokens),
        };
        if left.llm_calls == 0 {
            return Err((InvestigationFailure::LlmCallLimit, format!("its {} model calls were used up", limits.llm_calls)));
        }
        if left.tokens == 0 {
            return Err((InvestigationFailure::TokenLimit, format!("its {} tokens were used up", limits.tokens)));
        }
        if left.wall_time_secs == 0 {
            return Err((InvestigationFailure::WallTimeLimit, format!("its {} s of wall time were used up", limits.wall_time_secs)));
        }
        Ok(left)
    }
}

pub struct Investigator {
    context: Context,
    index: KnowledgeIndex,
}

impl Investigator {
    pub fn new(context: &Context) -> Self {
        let index = KnowledgeIndex::from_config(&context.config.knowledge, Embedder::shared(&context.config.embedding), context.pool.clone());
        Self { context: context.clone(), index }
    }

    fn limits(&self) -> InvestigationLimits {
        let config = &self.context.config.incident;
        InvestigationLimits {
            wall_time_secs: config.investigation_wall_time.as_secs(),
            tool_calls: config.investigation_tool_calls,
            llm_calls: config.investigation_llm_calls,
            tokens: config.investigation_tokens,
        }
    }

    /// The investigation's limits as its chat turn carries them.
    fn turn_limits(&self) -> TurnLimits {
        let limits = self.limits();
        TurnLimits { llm_calls: limits.llm_calls, tool_calls: limits.tool_calls, wall_time_secs: limits.wall_time_secs, tokens: limits.tokens }
    }

    async fn chat(&self, org_id: OrgId, session_id: Uuid, key: Uuid, cause: &Envelope, command: ChatSessionCommand) -> Result<(), HandleError> {
        let meta = CommandMeta::caused_by(org_id, actor(), key, cause);
                self.context.commands.handle::<ChatSession>(&ChatSessionEvent::stream_of(session_id), command, &meta, None).await?;
        aurora_commands::relay::wake(&self.context.pool).await;
        Ok(())
    }

    /// Starts queued investigations of `org_id` while it has free slots, oldest first.
    async fn drive(&self, org_id: OrgId, cause: &Envelope) -> anyhow::Result<()> {
        let max = i64::from(self.context.config.incident.max_concurrent_investigations);
        let mut transaction = self.context.pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended('investigations:' || $1::text, 0))")
            .bind(org_id.0)
            .execute(&mut *transaction)
            .await?;
        let running: i64 = sqlx::query_scalar("SELECT count(*) FROM investigation_runs WHERE org_id = $1 AND status = 'running'")
            .bind(org_id.0)
            .fetch_one(&mut *transaction)
            .await?;
        if running < max {
            sqlx::query(
                "UPDATE investigation_runs SET status = 'running' WHERE investigation_id IN ( \
                     SELECT investigation_id FROM investigation_runs WHERE org_id = $1 AND status = 'queued' \
                     ORDER BY requested_at, investigation_id LIMIT $2)",
            )
            .bind(org_id.0)
            .bind(max - running)
            .execute(&mut *transaction)
            .await?;
        }
        transaction.commit().await?;
        let to_start: Vec<Run> = sqlx::query_as(
            "SELECT investigation_id, incident_id, session_id FROM investigation_runs WHERE org_id = $1 AND status = 'running' AND NOT started \
             ORDER BY requested_at",
        )
        .bind(org_id.0)
        .fetch_all(&self.context.pool)
        .await?;
        for run in to_start {
            self.start(org_id, &run, cause).await?;
        }
        Ok(())
    }

    async fn start(&self, org_id: OrgId, run: &Run, cause: &Envelope) -> anyhow::Result<()> {
        let (incident, _) = self.context.commands.load::<Incident>(&IncidentEvent::stream_of(run.incident_id), org_id).await?;
        let status = incident.investigation(run.investigation_id).map(|investigation| investigation.status);
        if status != Some(InvestigationStatus::Queued) {
            let done = if status == Some(InvestigationStatus::Running) { "status = 'running', started = true" } else { "status = 'done'" };
            sqlx::query(&format!("UPDATE investigation_runs SET {done} WHERE investigation_id = $1")).bind(run.investigation_id).execute(&self.context.pool).await?;
            return Ok(());
        }
        let title: String = format!("Investigation: {}", incident.title).chars().take(200).collect();
        let create = ChatSessionCommand::Create { session_id: run.session_id, title, owner: actor(), context: None };
        match self.chat(org_id, run.session_id, key(run.investigation_id, "create"), cause, create).await {
            Ok(()) | Err(HandleError::Domain(DomainError::ChatSession(ChatSessionError::AlreadyExists(_)))) => {}
            Err(error) => return Err(error.into()),
        }
        let limits = self.limits();
        let submit = ChatSessionCommand::Submit {
            turn_id: turn_of(run.investigation_id, 1),
            text: brief(&incident, self.neighbourhood(org_id, incident.service.as_deref(), incident.opened_at).await?.as_deref()),
            mode: ChatMode::Ask,
            submitted_by: actor(),
            limits: Some(self.turn_limits()),
        };
        match self.chat(org_id, run.session_id, key(run.investigation_id, "submit-1"), cause, submit).await {
            Ok(()) | Err(HandleError::Domain(DomainError::ChatSession(ChatSessionError::TurnRunning))) => {}
            Err(error) => return Err(error.into()),
        }
        let started = IncidentCommand::StartInvestigation { investigation_id: run.investigation_id, session_id: run.session_id, at: Utc::now(), limits };
        record(&self.context, org_id, run.incident_id, actor(), key(run.investigation_id, "started"), cause, started).await?;
        sqlx::query("UPDATE investigation_runs SET started = true, attempts = GREATEST(attempts, 1) WHERE investigation_id = $1")
            .bind(run.investigation_id)
            .execute(&self.context.pool)
            .await?;
        tracing::info!(incident_id = %run.incident_id, investigation_id = %run.investigation_id, "investigation started");
        Ok(())
    }

    /// What the discovered graph knows of the alerting service, named exactly: what it is, what
    /// it depends on and what depends on it, with the evidence (none without a graph or a match),
    /// as the graph was when the incident opened — or as discovered since, when the service was
    /// found only after that.
    async fn neighbourhood(&self, org_id: OrgId, service: Option<&str>, opened_at: Option<DateTime<Utc>>) -> anyhow::Result<Option<String>> {
        let Some(service) = service else { return Ok(None) };
        let mut connection = self.context.pool.acquire().await?;
        let Some(node) = self.context.graph.reader(&mut connection).named(org_id.0, service).await? else { return Ok(None) };
        let (as_of, when) = match opened_at {
            Some(at) if node.first_seen <= at => {
                (AsOf::At(at), format!("as it was when the incident opened ({}; pass `at` to the graph tools for that time)", at.to_rfc3339()))
            }
            _ => (AsOf::Now, "as discovered since the incident opened".to_owned()),
        };
        let (depends_on, depended_on_by) = self.context.graph.reader(&mut connection).neighbours(org_id.0, node.node_id, as_of).await?;
        let mut text = format!(
            "\nIn the discovered service graph (ask `get_service`, `service_dependencies` and `blast_radius` for more), {} is a {} ({}{}, {}), {when}.\n",
            node.name,
            node.kind,
            node.provider_type,
            node.region.as_deref().map(|region| format!(" in {region}")).unwrap_or_default(),
            node.status,
        );
        for (heading, neighbours) in [("It depends on", &depends_on), ("What depends on it", &depended_on_by)] {
            if neighbours.is_empty() {
                continue;
            }
            text.push_str(&format!("{heading}:\n"));
            for neighbour in neighbours.iter().take(MAX_NEIGHBOURS) {
                let evidence = sources::clip_text(&neighbour.evidence, 200);
                text.push_str(&format!("- {} ({}): {}, {evidence}\n", neighbour.name, neighbour.kind, neighbour.dependency));
            }
            if neighbours.len() > MAX_NEIGHBOURS {
                text.push_str(&format!("- and {} more\n", neighbours.len() - MAX_NEIGHBOURS));
            }
        }
        Ok(Some(text))
    }

    async fn finished(&self, investigation_id: Uuid, envelope: &Envelope) -> anyhow::Result<()> {
        sqlx::query("UPDATE investigation_runs SET status = 'done' WHERE investigation_id = $1").bind(investigation_id).execute(&self.context.pool).await?;
        self.drive(envelope.org_id, envelope).await
    }

    async fn run_of_session(&self, session_id: Uuid) -> anyhow::Result<Option<Run>> {
        Ok(sqlx::query_as("SELECT investigation_id, incident_id, session_id FROM investigation_runs WHERE session_id = $1")
            .bind(session_id)
            .fetch_optional(&self.context.pool)
            .await?)
    }

    /// Reacts to an event of an investigation's chat session.
    async fn session_event(&self, envelope: &Envelope, run: Run, event: ChatSessionEvent) -> anyhow::Result<()> {
        let org_id = envelope.org_id;
        let investigation_id = run.investigation_id;
        match event {
            ChatSessionEvent::LlmCallCompleted(call) => {
                let tool_names: Vec<String> = call.tool_calls.iter().map(|tool_call| tool_call.name.clone()).collect();
                let thoughts = sentences(&call.text, tool_names.is_empty());
                let last = thoughts.len().saturating_sub(1);
                for (index, text) in thoughts.into_iter().enumerate() {
                    let tool_calls = if index == last { tool_names.clone() } else { Vec::new() };
                    let command = IncidentCommand::RecordThought { investigation_id, text, tool_calls };
                    let key = Uuid::new_v5(&envelope.id, format!("thought-{index}").as_bytes());
                    record(&self.context, org_id, run.incident_id, actor(), key, envelope, command).await?;
                }
                Ok(())
            }
            ChatSessionEvent::AssistantMessageCompleted(completed) => {
                let used = self.used(envelope).await?;
                match rca::read(&completed.text, &used.known) {
                    Ok(rca) => {
                        let command = IncidentCommand::CompleteInvestigation {
                            investigation_id,
                            rca: Box::new(rca),
                            at: Utc::now(),
                            tool_calls: used.tool_calls,
                            tokens: used.tokens,
                        };
                        record(&self.context, org_id, run.incident_id, actor(), key(investigation_id, "completed"), envelope, command).await?;
                        tracing::info!(incident_id = %run.incident_id, %investigation_id, "investigation completed");
                        Ok(())
                    }
                    Err(problems) if completed.turn_id == turn_of(investigation_id, 1) => {
                        if used.turns.contains(&turn_of(investigation_id, 2)) {
                            // Read again after a restart: it was asked again already, with what was left then.
                            return Ok(());
                        }
                        // The second turn has what the first left of the investigation's limits.
                        let left = match used.left_of(&self.limits(), Utc::now()) {
                            Ok(left) => left,
                            Err((reason, spent)) => {
                                let message = format!("The model's RCA was refused ({}); {spent}, so it was not asked again.", problems.join("; "));
                                return self.fail(envelope, &run, reason, message).await;
                            }
                        };
                        tracing::info!(%investigation_id, problems = problems.len(), "the RCA was refused; asking once more");
                        let text = format!(
                            "Your RCA was refused:\n- {}\nAnswer again with only the corrected JSON object. Every evidence item must cite the \
                             `tool_call_id` of a tool call you made that gave a result; a cause the evidence does not support is `inconclusive`.",
                            problems.join("\n- ")
                        );
                        let submit = ChatSessionCommand::Submit {
                            turn_id: turn_of(investigation_id, 2),
                            text: sources::clip_text(&text, MAX_BRIEF_CHARS),
                            mode: ChatMode::Ask,
                            submitted_by: actor(),
                            limits: Some(left),
                        };
                        match self.chat(org_id, run.session_id, key(investigation_id, "submit-2"), envelope, submit).await {
                            Ok(()) | Err(HandleError::Domain(DomainError::ChatSession(ChatSessionError::TurnRunning))) => Ok(()),
                            Err(error) => Err(error.into()),
                        }
                    }
                    Err(problems) => {
                        let message = format!("The model's RCA was refused twice: {}", problems.join("; "));
                        self.fail(envelope, &run, InvestigationFailure::InvalidRca, message).await
                    }
                }
            }
            ChatSessionEvent::TurnFailed(failed) => {
                let reason = match failed.reason {
                    TurnFailure::LlmUnavailable => InvestigationFailure::LlmUnavailable,
                    TurnFailure::LlmCallLimit => InvestigationFailure::LlmCallLimit,
                    TurnFailure::ToolCallLimit => InvestigationFailure::ToolCallLimit,
                    TurnFailure::WallTimeLimit => InvestigationFailure::WallTimeLimit,
                    TurnFailure::TokenLimit => InvestigationFailure::TokenLimit,
                };
                // The second turn's limits are what the first left, which its message counts.
                let message = if failed.turn_id == turn_of(investigation_id, 2) {
                    format!("Asked again for its RCA with what was left of the investigation's limits: {}", failed.message)
                } else {
                    failed.message
                };
                self.fail(envelope, &run, reason, message).await
            }
            ChatSessionEvent::TurnCancelled(_) => self.fail(envelope, &run, InvestigationFailure::Cancelled, "The investigation was cancelled.".into()).await,
            _ => Ok(()),
        }
    }

    async fn fail(&self, envelope: &Envelope, run: &Run, reason: InvestigationFailure, message: String) -> anyhow::Result<()> {
        let command = IncidentCommand::FailInvestigation { investigation_id: run.investigation_id, reason, message, at: Utc::now() };
        record(&self.context, envelope.org_id, run.incident_id, actor(), key(run.investigation_id, "failed"), envelope, command).await?;
        tracing::info!(incident_id = %run.incident_id, investigation_id = %run.investigation_id, ?reason, "investigation failed");
        Ok(())
    }

    /// What the investigation has used so far, as its session recorded it.
    async fn used(&self, envelope: &Envelope) -> anyhow::Result<Used> {
        let events = self.context.commands.store().load_stream(&envelope.stream, 0).await?;
        let mut names: HashMap<String, String> = HashMap::new();
        let mut used = Used::default();
        for stored in events {
            let Ok(event) = ChatSessionEvent::decode(&stored.event_type, stored.schema_version, stored.payload) else { continue };
            match event {
                ChatSessionEvent::MessageSubmitted(submitted) => used.turns.push(submitted.turn_id),
                ChatSessionEvent::TurnStarted(started) => {
                    used.started_at.get_or_insert(started.started_at);
                }
                ChatSessionEvent::ToolCallRequested(call) => {
                    used.tool_calls += 1;
                    names.insert(call.tool_call_id, call.name);
                }
                ChatSessionEvent::ToolCallCompleted(completed) => {
                    let tool = names.get(&completed.tool_call_id).cloned().unwrap_or_default();
                    used.known.push(KnownToolCall { tool_call_id: completed.tool_call_id, tool });
                }
                ChatSessionEvent::LlmCallCompleted(call) => {
                    used.llm_calls += 1;
                    used.tokens = used.tokens.saturating_add(call.prompt_tokens).saturating_add(call.completion_tokens);
                }
                _ => {}
            }
        }
        Ok(used)
    }

    /// Makes a completed RCA findable by later investigations (`past_investigations_search`).
    async fn index_rca(&self, envelope: &Envelope, incident: &Incident, investigation_id: Uuid) -> anyhow::Result<()> {
        let Some((position, rca)) = incident
            .investigations
            .iter()
            .enumerate()
            .find(|(_, investigation)| investigation.investigation_id == investigation_id)
            .and_then(|(position, investigation)| investigation.rca.as_ref().map(|rca| (position, rca)))
        else {
            return Ok(());
        };
        let incident_id = Uuid::parse_str(envelope.stream.id())?;
        let alerts: Vec<&str> = incident.alerts.iter().map(|attached| attached.alert.title.as_str()).collect();
        let mut content = format!("Incident: {}\nAlerts: {}\nSummary: {}\n", incident.title, alerts.join(", "), rca.summary);
        if let Some(statement) = &rca.root_cause.statement {
            content.push_str(&format!("Root cause: {statement}\n"));
        }
        for evidence in &rca.evidence {
            content.push_str(&format!("Evidence: {}\n", evidence.finding));
        }
        let content: String = content.chars().take(8_000).collect();
        let tokens = self.index.embedder().count_tokens(&content)? as u32;
        let version = position as u32 + 1;
        let chunk = Chunk { index: 0, content, heading_path: Vec::new(), page: None, tokens };
        let embeddings = self.index.embedder().embed(std::slice::from_ref(&chunk.content)).await?;
        let source = Source { kind: SourceKind::Investigation, id: incident_id, version };
        self.index.write(envelope.org_id.0, source, &incident.title, &[chunk], &embeddings).await?;
        self.index.remove(envelope.org_id.0, SourceKind::Investigation, incident_id, Some(version)).await?;
        Ok(())
    }

    async fn draft_postmortem(&self, envelope: &Envelope, resolution: Resolution) -> anyhow::Result<()> {
        let (incident, _) = self.context.commands.load::<Incident>(&envelope.stream, envelope.org_id).await?;
        if !incident.postmortems.is_empty() {
            return Ok(());
        }
        let events = self.context.commands.store().load_stream(&envelope.stream, 0).await?;
        let mut moments = Vec::new();
        for stored in events {
            let Ok(event) = IncidentEvent::decode(&stored.event_type, stored.schema_version, stored.payload) else { continue };
            let what = match event {
                IncidentEvent::Opened(opened) => format!("Incident opened: {} ({})", opened.title, opened.source),
                IncidentEvent::AlertAttached(attached) if attached.grouping.rule != aurora_events::incident::GroupingRule::Opened => {
                    format!("Alert joined: {} — {}", attached.alert.title, attached.grouping.reason)
                }
                IncidentEvent::AlertResolved(resolved) => format!("Alert resolved ({})", resolved.fingerprint),
                IncidentEvent::Acknowledged(_) => format!("Acknowledged by {}", stored.actor),
                IncidentEvent::SeverityChanged(changed) => format!("Severity changed from {} to {} by {}", changed.from.as_str(), changed.to.as_str(), stored.actor),
                IncidentEvent::InvestigationStarted(_) => "Aurora started investigating".to_owned(),
                IncidentEvent::InvestigationCompleted(completed) => format!("Aurora's analysis: {}", completed.rca.summary.lines().next().unwrap_or_default()),
                IncidentEvent::InvestigationFailed(failed) => format!("Aurora's investigation ended without an analysis: {}", failed.message),
                IncidentEvent::Resolved(_) => "Incident resolved".to_owned(),
                IncidentEvent::Reopened(_) => format!("Reopened by {}", stored.actor),
                _ => continue,
            };
            moments.push(Moment { at: stored.occurred_at, what });
        }
        let markdown = postmortem::draft(&incident, &moments, Some(resolution));
        let incident_id = Uuid::parse_str(envelope.stream.id())?;
        let command = IncidentCommand::SavePostmortem { markdown, origin: PostmortemOrigin::Drafted };
        record(&self.context, envelope.org_id, incident_id, actor(), Uuid::new_v5(&envelope.id, b"postmortem"), envelope, command).await?;
        Ok(())
    }

    async fn incident_event(&self, envelope: &Envelope, event: IncidentEvent) -> anyhow::Result<()> {
        let incident_id = Uuid::parse_str(envelope.stream.id())?;
        match event {
            IncidentEvent::InvestigationRequested(requested) => {
                sqlx::query(
                    "INSERT INTO investigation_runs (investigation_id, org_id, incident_id, session_id, status, requested_at) VALUES ($1, $2, $3, $4, 'queued', $5) \
                     ON CONFLICT (investigation_id) DO NOTHING",
                )
                .bind(requested.investigation_id)
                .bind(envelope.org_id.0)
                .bind(incident_id)
                .bind(session_of(requested.investigation_id))
                .bind(requested.requested_at)
                .execute(&self.context.pool)
                .await?;
                self.drive(envelope.org_id, envelope).await
            }
            IncidentEvent::InvestigationCompleted(completed) => {
                let (incident, _) = self.context.commands.load::<Incident>(&envelope.stream, envelope.org_id).await?;
                if let Err(error) = self.index_rca(envelope, &incident, completed.investigation_id).await {
                    // Search is a help, not the record: the RCA is kept either way.
                    tracing::warn!(%incident_id, error = %format!("{error:#}"), "the RCA could not be indexed for search");
                }
                self.finished(completed.investigation_id, envelope).await
            }
            IncidentEvent::InvestigationFailed(failed) => self.finished(failed.investigation_id, envelope).await,
            IncidentEvent::Resolved(resolved) => self.draft_postmortem(envelope, resolved.resolution).await,
            _ => Ok(()),
        }
    }
}

/// The whole sentences of a model call's text: its reasoning. A final answer's JSON is no thought.
fn sentences(text: &str, final_answer: bool) -> Vec<String> {
    let prose = if final_answer { text.split(['{', '`']).next().unwrap_or_default() } else { text };
    let mut found = Vec::new();
    let mut current = String::new();
    let mut characters = prose.chars().peekable();
    while let Some(character) = characters.next() {
        current.push(character);
        let ends = matches!(character, '.' | '!' | '?') && characters.peek().is_none_or(|next| next.is_whitespace());
        if ends || character == '\n' {
            let sentence = current.trim().to_owned();
            if sentence.chars().filter(|character| character.is_alphanumeric()).count() >= 3 {
                found.push(sentence);
            }
            current.clear();
        }
    }
    let rest = current.trim();
    if rest.chars().filter(|character| character.is_alphanumeric()).count() >= 3 {
        found.push(rest.to_owned());
    }
    found.truncate(MAX_THOUGHTS_PER_CALL);
    found
}

/// The question an investigation starts with: the incident, the alerting service's place in the
/// discovered graph when it has one, how to work, and the RCA's shape.
fn brief(incident: &Incident, neighbourhood: Option<&str>) -> String {
    let mut text = String::from(
        "An alert fired and Aurora opened an incident. Investigate it with your read-only tools and end with a root-cause analysis.\n\n",
    );
    text.push_str(&format!("Incident: {}\n", incident.title));
    text.push_str(&format!("Severity: {}\n", incident.severity.map(|severity| severity.as_str()).unwrap_or("warning")));
    if let Some(service) = &incident.service {
        text.push_str(&format!("Service: {service}\n"));
    }
    if let Some(environment) = &incident.environment {
        text.push_str(&format!("Environment: {environment}\n"));
    }
    if let Some(opened_at) = incident.opened_at {
        text.push_str(&format!("Opened: {}\n", opened_at.to_rfc3339()));
    }
    text.push_str(&format!("\nAlerts ({}):\n", incident.alerts.len()));
    let mut alerts = String::new();
    for attached in &incident.alerts {
        let alert = &attached.alert;
        let status = if attached.firing { "firing" } else { "resolved" };
        alerts.push_str(&format!("- [{status}] {} (from {}, fingerprint {})", alert.title, alert.source, alert.fingerprint));
        if let Some(starts_at) = alert.starts_at {
            alerts.push_str(&format!(", since {}", starts_at.to_rfc3339()));
        }
        alerts.push('\n');
        let labels: Vec<String> = alert.labels.iter().map(|(key, value)| format!("{key}={value}")).collect();
        if !labels.is_empty() {
            alerts.push_str(&format!("  labels: {}\n", labels.join(", ")));
        }
        for (key, value) in &alert.annotations {
            alerts.push_str(&format!("  {key}: {}\n", sources::clip_text(value, 600)));
        }
        for (name, url) in &alert.links {
            alerts.push_str(&format!("  link ({name}): {url}\n"));
        }
    }
    let instructions = format!(
        "\nHow to work:\n\
         1. First search the runbooks (`knowledge_base_search`) and earlier incidents (`past_investigations_search`) for this alert.\n\
         2. Gather evidence with the tools. Before each tool call, say in a sentence or two what you check and why.\n\
         3. Claim only a cause the tool outputs support. When they do not, the confidence is `inconclusive` and there is no statement. \
         Say what you could not check and why (for example: no connection for that provider).\n\
         4. When you are done, answer with only one JSON object of this shape, and nothing else:\n{}\n\
         Every evidence item cites the `tool_call_id` of one of your tool calls that gave a result; cite evidence in texts as [n] with its id.\n",
        rca::FORMAT
    );
    let neighbourhood = neighbourhood.unwrap_or_default();
    let room = MAX_BRIEF_CHARS.saturating_sub(text.chars().count() + instructions.chars().count() + neighbourhood.chars().count());
    text.push_str(&alerts.chars().take(room).collect::<String>());
    text.push_str(neighbourhood);
    text.push_str(&instructions);
    text
}

#[async_trait]
impl Reactor for Investigator {
    fn name(&self) -> &'static str {
        "investigator"
    }

    fn topics(&self, prefix: &str) -> Vec<String> {
        vec![IncidentEvent::topic(prefix), ChatSessionEvent::topic(prefix)]
    }

    async fn react(&self, envelope: &Envelope) -> anyhow::Result<()> {
        if envelope.stream.category() == IncidentEvent::CATEGORY {
            return match IncidentEvent::decode(&envelope.event_type, envelope.schema_version, envelope.payload.clone()) {
                Ok(event) => self.incident_event(envelope, event).await,
                Err(_) => Ok(()),
            };
        }
        let relevant = [ChatEventType::LlmCallCompleted, ChatEventType::AssistantMessageCompleted, ChatEventType::TurnFailed, ChatEventType::TurnCancelled];
        if !ChatEventType::from_name(&envelope.event_type).is_some_and(|kind| relevant.contains(&kind)) {
            return Ok(());
        }
        let Ok(session_id) = Uuid::parse_str(envelope.stream.id()) else { return Ok(()) };
        let Some(run) = self.run_of_session(session_id).await? else { return Ok(()) };
        let Ok(event) = ChatSessionEvent::decode(&envelope.event_type, envelope.schema_version, envelope.payload.clone()) else { return Ok(()) };
        self.session_event(envelope, run, event).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thoughts_are_whole_sentences_and_never_the_rca() {
        let reasoning = "The alert names checkout. I will read its logs first! Then the deploys.\nShort";
        assert_eq!(sentences(reasoning, false), vec!["The alert names checkout.", "I will read its logs first!", "Then the deploys.", "Short"]);
        assert_eq!(sentences("Done. {\"summary\": \"x. y.\"}", true), vec!["Done."]);
        assert!(sentences("{\"summary\": \"x\"}", true).is_empty());
        assert_eq!(sentences("Version 1.2 is out.", false), vec!["Version 1.2 is out."]);
    }

    #[test]
    fn the_second_turn_has_what_the_first_left_of_the_limits() {
        let limits = InvestigationLimits { wall_time_secs: 1_800, tool_calls: 4, llm_calls: 5, tokens: 10_000 };
        let started_at = Utc::now() - chrono::Duration::seconds(600);
        let used = Used { tool_calls: 4, llm_calls: 3, tokens: 7_000, started_at: Some(started_at), ..Used::default() };
        let left = used.left_of(&limits, started_at + chrono::Duration::seconds(600)).unwrap();
        assert_eq!((left.wall_time_secs, left.tool_calls, left.llm_calls, left.tokens), (1_200, 0, 2, 3_000));
        let spent = |used: Used, at: DateTime<Utc>| used.left_of(&limits, at).unwrap_err().0;
        assert_eq!(spent(Used { llm_calls: 5, ..Used::default() }, started_at), InvestigationFailure::LlmCallLimit);
        assert_eq!(spent(Used { tokens: 12_000, ..Used::default() }, started_at), InvestigationFailure::TokenLimit);
        let late = started_at + chrono::Duration::seconds(1_801);
        assert_eq!(spent(Used { started_at: Some(started_at), ..Used::default() }, late), InvestigationFailure::WallTimeLimit);
    }
}
