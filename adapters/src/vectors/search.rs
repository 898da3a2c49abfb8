//! The searchable knowledge of an organisation: chunks (text, heading path, page, title) in the
//! `knowledge_chunks` table with a full-text index, their embeddings in the [`VectorIndex`], and
//! the hybrid search over both, which fuses vector similarity with Postgres full-text ranking by
//! reciprocal rank fusion. Used by the indexing processor (writes), the gateway's search route
//! and the agent's search tools (reads), always within one organisation.

use std::collections::HashMap;
use std::sync::Arc;

use sqlx::PgPool;
use uuid::Uuid;

use super::pgvector::PgVectors;
use super::weaviate::WeaviateVectors;
use super::{record_id, Source, SourceKind, VectorError, VectorIndex, VectorRecord};
use crate::config::{KnowledgeConfig, VectorBackend};
use crate::embeddings::{Embedder, EmbeddingError};

/// Candidates each ranking contributes to the fusion.
const CANDIDATES: usize = 50;
/// Reciprocal rank fusion's constant: a hit at rank r scores 1 / (RRF_K + r).
const RRF_K: f64 = 60.0;
/// Longest query, in characters.
pub const MAX_QUERY_CHARS: usize = 1_000;
/// Most results one search returns.
pub const MAX_RESULTS: usize = 50;

/// A piece of a source, ready to be written.
#[derive(Debug, Clone, PartialEq)]
pub struct Chunk {
    pub index: u32,
    pub content: String,
    pub heading_path: Vec<String>,
    pub page: Option<u32>,
    /// Word pieces, by the model's tokenizer.
    pub tokens: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SearchMode {
    /// Vector similarity fused with full-text ranking.
    Hybrid,
    /// Vector similarity alone.
    Vector,
}

/// One result: the chunk, where it comes from, and why it ranked.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct SearchHit {
    pub chunk_id: Uuid,
    /// `document`, `conversation`, `investigation`.
    pub kind: &'static str,
    /// The document (or chat session) it comes from.
    pub source_id: Uuid,
    pub version: u32,
    pub chunk_index: u32,
    /// The document's name, the session's title.
    pub title: String,
    pub content: String,
    pub heading_path: Vec<String>,
    pub page: Option<u32>,
    /// The fused score (hybrid) or the cosine similarity (vector).
    pub score: f64,
    /// Cosine similarity to the query, when the vector search found it.
    pub similarity: Option<f32>,
    /// Rank in the full-text search (1 is best), when it found it.
    pub text_rank: Option<u32>,
}

#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    #[error("{0}")]
    InvalidQuery(String),
    #[error(transparent)]
    Embedding(#[from] EmbeddingError),
    #[error(transparent)]
    Vectors(#[from] VectorError),
    #[error("the knowledge base's database failed: {0}")]
    Database(#[from] sqlx::Error),
}

/// An organisation's searchable knowledge.
#[derive(Clone)]
pub struct KnowledgeIndex {
    pool: PgPool,
    vectors: Arc<dyn VectorIndex>,
    embedder: Arc<Embedder>,
}

impl KnowledgeIndex {
    pub fn new(pool: PgPool, vectors: Arc<dyn VectorIndex>, embedder: Arc<Embedder>) -> Self {
        Self { pool, vectors, embedder }
    }

    /// The index `config` names: pgvector in `pool`'s database, or a Weaviate collection.
    pub fn from_config(config: &KnowledgeConfig, embedder: Arc<Embedder>, pool: PgPool) -> Self {
        let vectors: Arc<dyn VectorIndex> = match config.vectors {
            VectorBackend::Pgvector => Arc::new(PgVectors::new(pool.clone())),
            VectorBackend::Weaviate => {
                let api_key = config.weaviate_api_key.as_ref().map(|key| crate::config::ExposeSecret::expose_secret(key).to_owned());
                Arc::new(WeaviateVectors::new(&config.weaviate_url, api_key, &config.weaviate_collection))
            }
        };
        Self::new(pool, vectors, embedder)
    }

    pub fn embedder(&self) -> &Arc<Embedder> {
        &self.embedder
    }

    pub fn vectors(&self) -> &Arc<dyn VectorIndex> {
        &self.vectors
    }

    /// Writes `chunks` of `source` with their `embeddings` (one each, in order). Writing the same
    /// chunks again replaces them: ids come from the organisation, source, version and index.
    pub async fn write(
        &self,
        org_id: Uuid,
        source: Source,
        title: &str,
        chunks: &[Chunk],
        embeddings: &[Vec<f32>],
    ) -> Result<(), SearchError> {
        assert_eq!(chunks.len(), embeddings.len(), "one embedding per chunk");
        if chunks.is_empty() {
            return Ok(());
        }
        let ids: Vec<Uuid> = chunks.iter().map(|chunk| record_id(org_id, source, chunk.index)).collect();
        let indexes: Vec<i32> = chunks.iter().map(|chunk| chunk.index as i32).collect();
        let contents: Vec<&str> = chunks.iter().map(|chunk| chunk.content.as_str()).collect();
        // Postgres has no arrays of arrays of uneven length: the heading path travels as JSON.
        let headings: Vec<String> = chunks.iter().map(|chunk| serde_json::to_string(&chunk.heading_path).unwrap_or_default()).collect();
        let pages: Vec<Option<i32>> = chunks.iter().map(|chunk| chunk.page.map(|page| page as i32)).collect();
        let tokens: Vec<i32> = chunks.iter().map(|chunk| chunk.tokens as i32).collect();
        // The vectors first: a chunk row is the mark that its chunk is written whole.
        let records: Vec<VectorRecord> = chunks
            .iter()
            .zip(embeddings)
            .zip(&ids)
            .map(|((chunk, embedding), id)| VectorRecord {
                id: *id,
                org_id,
                source,
                chunk_index: chunk.index,
                content: chunk.content.clone(),
                heading_path: chunk.heading_path.clone(),
                page: chunk.page,
                embedding: embedding.clone(),
            })
            .collect();
        self.vectors.upsert(&records).await?;
        sqlx::query(
            "INSERT INTO knowledge_chunks (id, org_id, source_kind, source_id, source_version, chunk_index, title, content, heading_path, page, tokens, search) \
             SELECT id, $2, $3, $4, $5, chunk, $6, content, path, page, tokens, \
                 setweight(to_tsvector('english', array_to_string(path, ' ')), 'A') || setweight(to_tsvector('english', $6), 'B') || \
                 setweight(to_tsvector('english', content), 'C') \
             FROM (SELECT id, chunk, content, ARRAY(SELECT jsonb_array_elements_text(heading::jsonb)) AS path, page, tokens \
                   FROM UNNEST($1::uuid[], $7::int[], $8::text[], $9::text[], $10::int[], $11::int[]) AS input(id, chunk, content, heading, page, tokens)) rows \
             ON CONFLICT (id) DO UPDATE SET title = EXCLUDED.title, content = EXCLUDED.content, heading_path = EXCLUDED.heading_path, \
                 page = EXCLUDED.page, tokens = EXCLUDED.tokens, search = EXCLUDED.search",
        )
        .bind(&ids)
        .bind(org_id)
        .bind(source.kind.as_str())
        .bind(source.id)
        .bind(source.version as i32)
        .bind(title)
        .bind(&indexes)
        .bind(&contents)
        .bind(&headings)
        .bind(&pages)
        .bind(&tokens)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Removes the chunks and vectors of source `id`: every version but `keep`, or all.
    pub async fn remove(&self, org_id: Uuid, kind: SourceKind, id: Uuid, keep: Option<u32>) -> Result<u64, SearchError> {
        let removed = self.vectors.delete_source(org_id, kind, id, keep).await?;
        sqlx::query(
            "DELETE FROM knowledge_chunks WHERE org_id = $1 AND source_kind = $2 AND source_id = $3 AND ($4::int IS NULL OR source_version <> $4)",
        )
        .bind(org_id)
        .bind(kind.as_str())
        .bind(id)
        .bind(keep.map(|version| version as i32))
        .execute(&self.pool)
        .await?;
        Ok(removed)
    }

    /// The `limit` chunks of `org_id`'s `kinds` that best answer `query`.
    pub async fn search(
        &self,
        org_id: Uuid,
        query: &str,
        kinds: &[SourceKind],
        limit: usize,
        mode: SearchMode,
    ) -> Result<Vec<SearchHit>, SearchError> {
        let query = query.trim();
        if query.is_empty() || query.chars().count() > MAX_QUERY_CHARS || query.chars().any(|character| character.is_control()) {
            return Err(SearchError::InvalidQuery(format!(
                "the query must be 1 to {MAX_QUERY_CHARS} characters without control characters"
            )));
        }
        let limit = limit.clamp(1, MAX_RESULTS);
        let vector = self.embedder.embed(&[query.to_owned()]).await?.remove(0);
        let candidates = match mode {
            SearchMode::Hybrid => CANDIDATES.max(limit),
            SearchMode::Vector => limit,
        };
        let nearest = self.vectors.search(org_id, &vector, kinds, candidates).await?;
        let mut text_ranks: HashMap<Uuid, u32> = HashMap::new();
        if mode == SearchMode::Hybrid {
            for (rank, id) in self.text_search(org_id, query, kinds, candidates).await?.into_iter().enumerate() {
                text_ranks.insert(id, rank as u32 + 1);
            }
        }
        let similarities: HashMap<Uuid, f32> = nearest.iter().map(|hit| (hit.id, hit.similarity)).collect();
        let mut scored: Vec<(Uuid, f64)> = match mode {
            SearchMode::Vector => nearest.iter().map(|hit| (hit.id, hit.similarity as f64)).collect(),
            SearchMode::Hybrid => {
                let mut fused: HashMap<Uuid, f64> = HashMap::new();
                for (rank, hit) in nearest.iter().enumerate() {
                    *fused.entry(hit.id).or_default() += 1.0 / (RRF_K + rank as f64 + 1.0);
                }
                for (id, rank) in &text_ranks {
                    *fused.entry(*id).or_default() += 1.0 / (RRF_K + *rank as f64);
                }
                fused.into_iter().collect()
            }
        };
        scored.sort_by(|left, right| right.1.total_cmp(&left.1).then(left.0.cmp(&right.0)));
        scored.truncate(limit);
        let ids: Vec<Uuid> = scored.iter().map(|(id, _)| *id).collect();
        let mut details = self.details(org_id, &ids).await?;
        Ok(scored
            .into_iter()
            .filter_map(|(id, score)| {
                let mut hit = details.remove(&id)?;
                hit.score = score;
                hit.similarity = similarities.get(&id).copied();
                hit.text_rank = text_ranks.get(&id).copied();
                Some(hit)
            })
            .collect())
    }

    /// Chunk ids best matching `query` by Postgres full-text ranking.
    async fn text_search(&self, org_id: Uuid, query: &str, kinds: &[SourceKind], limit: usize) -> Result<Vec<Uuid>, sqlx::Error> {
        let kinds: Vec<&str> = kinds.iter().map(|kind| kind.as_str()).collect();
        let mut read = crate::postgres::tenant_transaction(&self.pool, org_id).await?;
        // Any of the query's words may match (OR), ranked by how well they cover the chunk.
        sqlx::query_scalar(
            "WITH words AS (SELECT to_tsquery('english', string_agg(quote_literal(lexeme) || ':*', ' | ')) AS query \
                            FROM unnest(to_tsvector('english', $2))) \
             SELECT chunk.id FROM knowledge_chunks chunk, words \
             WHERE words.query IS NOT NULL AND chunk.org_id = $1 AND chunk.source_kind = ANY($3) AND chunk.search @@ words.query \
             ORDER BY ts_rank_cd(chunk.search, words.query, 32) DESC, chunk.id LIMIT $4",
        )
        .bind(org_id)
        .bind(query)
        .bind(&kinds)
        .bind(limit as i64)
        .fetch_all(&mut *read)
        .await
    }

    async fn details(&self, org_id: Uuid, ids: &[Uuid]) -> Result<HashMap<Uuid, SearchHit>, sqlx::Error> {
        type Row = (Uuid, String, Uuid, i32, i32, String, String, Vec<String>, Option<i32>);
        let mut read = crate::postgres::tenant_transaction(&self.pool, org_id).await?;
        // A deleted document's chunks may outlive it for a moment; they are never shown.
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT chunk.id, chunk.source_kind, chunk.source_id, chunk.source_version, chunk.chunk_index, chunk.title, chunk.content, \
                    chunk.heading_path, chunk.page \
             FROM knowledge_chunks chunk \
             WHERE chunk.org_id = $1 AND chunk.id = ANY($2) \
               AND NOT EXISTS (SELECT 1 FROM documents document WHERE document.document_id = chunk.source_id AND document.status = 'deleted')",
        )
        .bind(org_id)
        .bind(ids)
        .fetch_all(&mut *read)
        .await?;
        Ok(rows
            .into_iter()
            .filter_map(|(id, kind, source_id, version, chunk_index, title, content, heading_path, page)| {
                let kind = SourceKind::parse(&kind)?.as_str();
                let hit = SearchHit {
                    chunk_id: id,
                    kind,
                    source_id,
                    version: version as u32,
                    chunk_index: chunk_index as u32,
                    title,
                    content,
                    heading_path,
                    page: page.map(|page| page as u32),
                    score: 0.0,
                    similarity: None,
                    text_rank: None,
                };
                Some((id, hit))
            })
            .collect())
    }
}
