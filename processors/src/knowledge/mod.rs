//! The knowledge feature's processors.
//!
//! The indexer reacts to the knowledge base's events: an uploaded version is started
//! (`document.processing_started`), then read from the object store, its text extracted, cut
//! into chunks by the model's tokenizer, embedded in batches on the embedding threads and
//! written with deterministic ids, and recorded as `document.indexed` (or `document.failed` with
//! a reason a person can act on). Its progress is the chunks written: a processor killed mid-way
//! gets `document.processing_started` again and goes on from the first chunk not yet written. A
//! deleted document's chunks, vectors and every version's file go.
//!
//! The conversation indexer embeds every completed chat turn (question and answer) the same way,
//! for `past_conversations_search`, and forgets a deleted session's.

pub mod chunk;
pub mod extract;

use std::collections::HashSet;
use std::sync::Arc;

use async_trait::async_trait;
use aurora_adapters::embeddings::Embedder;
use aurora_adapters::objects::{ObjectError, ObjectKey, Objects};
use aurora_adapters::vectors::search::{Chunk, KnowledgeIndex};
use aurora_adapters::vectors::{Source, SourceKind};
use aurora_commands::{CommandMeta, HandleError};
use aurora_domain::chat::ChatSession;
use aurora_domain::knowledge::{KnowledgeCommand, Library, Status};
use aurora_events::chat::ChatSessionEvent;
use aurora_events::knowledge::{DocumentFailed, DocumentIndexed, FailureCode, KnowledgeEvent};
use aurora_events::{Actor, Envelope, EventPayload, OrgId, StreamId};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::reactor::{self, Reactor};
use crate::{Context, Processors};

/// Chunks embedded and written at a time: the unit of progress a crash can lose.
const WRITE_BATCH: usize = 32;
/// Most characters of one chat turn kept for its search.
const MAX_TURN_CHARS: usize = 8_000;

/// Registers the indexer and the conversation indexer.
pub fn register(processors: &mut Processors) {
    processors.add("knowledge", |context: Context, shutdown: CancellationToken| async move {
        let indexer = Arc::new(Indexer::new(&context)?);
        reactor::run(indexer, context, shutdown).await
    });
    processors.add("conversation_index", |context: Context, shutdown: CancellationToken| async move {
        let index = knowledge_index(&context);
        reactor::run(Arc::new(ConversationIndexer { context: context.clone(), index }), context, shutdown).await
    });
}

/// The organisation's searchable knowledge, as `context`'s configuration names it.
pub fn knowledge_index(context: &Context) -> KnowledgeIndex {
    KnowledgeIndex::from_config(&context.config.knowledge, Embedder::shared(&context.config.embedding), context.pool.clone())
}

fn actor() -> Actor {
    Actor::processor("knowledge")
}

pub struct Indexer {
    context: Context,
    objects: Objects,
    index: KnowledgeIndex,
}

impl Indexer {
    pub fn new(context: &Context) -> anyhow::Result<Self> {
        Ok(Self { context: context.clone(), objects: Objects::from_config(&context.config.objects)?, index: knowledge_index(context) })
    }

    async fn record(&self, stream: &StreamId, org_id: OrgId, key: Uuid, cause: &Envelope, command: KnowledgeCommand) -> Result<(), HandleError> {
        let meta = CommandMeta::caused_by(org_id, actor(), key, cause);
                self.context.commands.handle::<Library>(stream, command, &meta, None).await?;
        aurora_commands::relay::wake(&self.context.pool).await;
        Ok(())
    }

    /// Reads, cuts, embeds and writes one version; its outcome is recorded on the library.
    async fn index(&self, envelope: &Envelope, document_id: Uuid, version: u32) -> anyhow::Result<()> {
        let org_id = envelope.org_id;
        let (library, _) = self.context.commands.load::<Library>(&envelope.stream, org_id).await?;
        let Some(document) = library.documents.get(&document_id).filter(|document| document.version == version) else {
            return Ok(());
        };
        if document.status != Status::Processing {
            return Ok(());
        }
        let object_key = document.object_key.clone();
        let kind = document.kind;
        let name = document.name.clone();
        let key = ObjectKey::from_recorded(org_id.0, &object_key).ok_or_else(|| anyhow::anyhow!("recorded key {object_key} is not the organisation's"))?;
        let started = std::time::Instant::now();
        let bytes = match self.objects.get(&key).await {
            Ok(bytes) => bytes,
            Err(ObjectError::NotFound(_)) => {
                let failure = extract::Failure { code: FailureCode::Corrupt, reason: "the uploaded file is no longer in the object store; upload it again".into() };
                return self.fail(envelope, document_id, version, failure).await;
            }
            Err(error) => return Err(error.into()),
        };
        let config = &self.context.config.knowledge;
        let limits = extract::Limits {
            max_text_chars: config.max_text_chars,
            max_docx_uncompressed_bytes: config.max_docx_uncompressed_bytes,
            max_docx_ratio: config.max_docx_ratio,
        };
        let embedder = self.index.embedder().clone();
        let (size, overlap) = (config.chunk_tokens, config.chunk_overlap);
        // Reading and cutting are CPU work: off the async threads, and a reader that panics on a
        // malformed file fails the document, not the processor.
        let cut = tokio::task::spawn_blocking(move || -> Result<Result<(extract::Extracted, Vec<Chunk>), extract::Failure>, anyhow::Error> {
            let extracted = match extract::extract(kind, &bytes, limits) {
                Ok(extracted) => extracted,
                Err(failure) => return Ok(Err(failure)),
            };
            let chunks = chunk::chunks(&extracted.sections, size, overlap, |text| embedder.tokenize(text))?;
            Ok(Ok((extracted, chunks)))
        })
        .await;
        let (extracted, chunks) = match cut {
            Ok(Ok(Ok(done))) => done,
            Ok(Ok(Err(failure))) => return self.fail(envelope, document_id, version, failure).await,
            Ok(Err(error)) => return Err(error),
            Err(panicked) if panicked.is_panic() => {
                let failure = extract::Failure { code: FailureCode::Corrupt, reason: "the file could not be read: its reader failed on it (damaged file?)".into() };
                return self.fail(envelope, document_id, version, failure).await;
            }
            Err(error) => return Err(error.into()),
        };
        let source = Source { kind: SourceKind::Document, id: document_id, version };
        let written: HashSet<i32> = sqlx::query_scalar(
            "SELECT chunk_index FROM knowledge_chunks WHERE org_id = $1 AND source_kind = 'document' AND source_id = $2 AND source_version = $3",
        )
        .bind(org_id.0)
        .bind(document_id)
        .bind(version as i32)
        .fetch_all(&self.context.pool)
        .await?
        .into_iter()
        .collect();
        let pending: Vec<&Chunk> = chunks.iter().filter(|chunk| !written.contains(&(chunk.index as i32))).collect();
        if !written.is_empty() {
            tracing::info!(%document_id, version, written = written.len(), pending = pending.len(), "resuming a document");
        }
        for batch in pending.chunks(WRITE_BATCH) {
            let texts: Vec<String> = batch.iter().map(|chunk| embedding_text(&name, chunk)).collect();
            let embeddings = self.index.embedder().embed(&texts).await?;
            let batch: Vec<Chunk> = batch.iter().map(|chunk| (*chunk).clone()).collect();
            self.index.write(org_id.0, source, &name, &batch, &embeddings).await?;
        }
        // Earlier versions' chunks go once this one is searchable.
        self.index.remove(org_id.0, SourceKind::Document, document_id, Some(version)).await?;
        let indexed = DocumentIndexed {
            document_id,
            version,
            chunks: chunks.len() as u32,
            pages: extracted.pages,
            characters: extracted.characters,
            tokens: chunks.iter().map(|chunk| chunk.tokens as u64).sum(),
        };
        tracing::info!(%document_id, version, chunks = indexed.chunks, elapsed_ms = started.elapsed().as_millis() as u64, "document indexed");
        let key = Uuid::new_v5(&envelope.id, b"indexed");
        Ok(self.record(&envelope.stream, org_id, key, envelope, KnowledgeCommand::MarkIndexed(indexed)).await?)
    }

    async fn fail(&self, envelope: &Envelope, document_id: Uuid, version: u32, failure: extract::Failure) -> anyhow::Result<()> {
        tracing::info!(%document_id, version, code = ?failure.code, reason = %failure.reason, "document failed");
        let failed = DocumentFailed { document_id, version, code: failure.code, reason: failure.reason };
        let key = Uuid::new_v5(&envelope.id, b"failed");
        Ok(self.record(&envelope.stream, envelope.org_id, key, envelope, KnowledgeCommand::MarkFailed(failed)).await?)
    }
}

/// What a chunk's vector is computed from: where it sits, then what it says.
fn embedding_text(title: &str, chunk: &Chunk) -> String {
    let mut path = vec![title.to_owned()];
    path.extend(chunk.heading_path.iter().cloned());
    format!("{}\n\n{}", path.join(" > "), chunk.content)
}

#[async_trait]
impl Reactor for Indexer {
    fn name(&self) -> &'static str {
        "knowledge"
    }

    fn topics(&self, prefix: &str) -> Vec<String> {
        vec![KnowledgeEvent::topic(prefix)]
    }

    async fn react(&self, envelope: &Envelope) -> anyhow::Result<()> {
        let Ok(event) = KnowledgeEvent::decode(&envelope.event_type, envelope.schema_version, envelope.payload.clone()) else {
            return Ok(());
        };
        match event {
            KnowledgeEvent::DocumentUploaded(uploaded) => {
                let command = KnowledgeCommand::StartProcessing { document_id: uploaded.document_id, version: uploaded.version };
                let key = Uuid::new_v5(&envelope.id, b"start");
                Ok(self.record(&envelope.stream, envelope.org_id, key, envelope, command).await?)
            }
            KnowledgeEvent::ProcessingStarted(started) => self.index(envelope, started.document_id, started.version).await,
            KnowledgeEvent::DocumentDeleted(deleted) => {
                let org_id = envelope.org_id.0;
                self.index.remove(org_id, SourceKind::Document, deleted.document_id, None).await?;
                self.objects.delete_prefix(&ObjectKey::document_prefix(org_id, deleted.document_id)).await?;
                Ok(())
            }
            KnowledgeEvent::DocumentIndexed(_) | KnowledgeEvent::DocumentFailed(_) | KnowledgeEvent::MemoryUpdated(_) => Ok(()),
        }
    }
}

/// Embeds completed chat turns for `past_conversations_search`.
pub struct ConversationIndexer {
    context: Context,
    index: KnowledgeIndex,
}

#[async_trait]
impl Reactor for ConversationIndexer {
    fn name(&self) -> &'static str {
        "conversation_index"
    }

    fn topics(&self, prefix: &str) -> Vec<String> {
        vec![ChatSessionEvent::topic(prefix)]
    }

    async fn react(&self, envelope: &Envelope) -> anyhow::Result<()> {
        let Ok(event) = ChatSessionEvent::decode(&envelope.event_type, envelope.schema_version, envelope.payload.clone()) else {
            return Ok(());
        };
        let session_id = Uuid::parse_str(envelope.stream.id())?;
        match event {
            ChatSessionEvent::AssistantMessageCompleted(completed) => {
                let (session, _) = self.context.commands.load::<ChatSession>(&envelope.stream, envelope.org_id).await?;
                // An investigation's session is no conversation: its RCA is indexed by the incident processor.
                if session.deleted || !matches!(session.owner, Some(Actor::User(_))) {
                    return Ok(());
                }
                let Some(question) = session.turn.as_ref().filter(|turn| turn.turn_id == completed.turn_id).map(|turn| turn.question.clone())
                else {
                    // A later turn has begun since (a replay of old events): only the latest
                    // turn's question is at hand, so this one is not indexed.
                    return Ok(());
                };
                let content: String = format!("Q: {question}\nA: {}", completed.text).chars().take(MAX_TURN_CHARS).collect();
                let tokens = self.index.embedder().count_tokens(&content)? as u32;
                let chunk = Chunk { index: envelope.stream_version as u32, content, heading_path: Vec::new(), page: None, tokens };
                let embeddings = self.index.embedder().embed(std::slice::from_ref(&chunk.content)).await?;
                let source = Source { kind: SourceKind::Conversation, id: session_id, version: 1 };
                self.index.write(envelope.org_id.0, source, &session.title, &[chunk], &embeddings).await?;
                Ok(())
            }
            ChatSessionEvent::Deleted(_) => {
                self.index.remove(envelope.org_id.0, SourceKind::Conversation, session_id, None).await?;
                Ok(())
            }
            _ => Ok(()),
        }
    }
}
