//! The vector-index port: embeddings of knowledge-base chunks and past conversations, searched by
//! cosine similarity within one organisation. [`pgvector::PgVectors`] (an HNSW index in the
//! read-model database) is the default; [`weaviate::WeaviateVectors`] (a collection holding
//! content, heading path, page, source and organisation) the alternative. One contract suite
//! (`tests/tests/vectors_contract.rs`) runs against both.
//!
//! Every record's id is derived from what it embeds ([`record_id`]: organisation, source, version,
//! chunk), so writing the same chunk again replaces it and a rerun never duplicates anything.

pub mod pgvector;
pub mod search;
pub mod weaviate;

use async_trait::async_trait;
use uuid::Uuid;

/// What a vector was computed from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SourceKind {
    /// A chunk of a knowledge-base document.
    Document,
    /// A completed chat turn: the question and the answer.
    Conversation,
    /// A completed investigation of an incident.
    Investigation,
}

impl SourceKind {
    pub const ALL: [SourceKind; 3] = [SourceKind::Document, SourceKind::Conversation, SourceKind::Investigation];

    pub fn as_str(self) -> &'static str {
        match self {
            SourceKind::Document => "document",
            SourceKind::Conversation => "conversation",
            SourceKind::Investigation => "investigation",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.as_str() == text)
    }
}

/// One source (a document's version, a chat turn) that chunks came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Source {
    pub kind: SourceKind,
    /// The document id, the chat session id.
    pub id: Uuid,
    /// The document's version; a conversation's turns share version 1 and differ by chunk.
    pub version: u32,
}

/// The deterministic id of chunk `index` of `source` in `org_id`.
pub fn record_id(org_id: Uuid, source: Source, index: u32) -> Uuid {
    Uuid::new_v5(&org_id, format!("{}/{}/v{}/{index}", source.kind.as_str(), source.id, source.version).as_bytes())
}

/// A vector and what it was computed from.
#[derive(Debug, Clone, PartialEq)]
pub struct VectorRecord {
    pub id: Uuid,
    pub org_id: Uuid,
    pub source: Source,
    pub chunk_index: u32,
    pub content: String,
    pub heading_path: Vec<String>,
    pub page: Option<u32>,
    pub embedding: Vec<f32>,
}

/// A nearest neighbour: its record id and cosine similarity (1 is identical).
#[derive(Debug, Clone, PartialEq)]
pub struct VectorHit {
    pub id: Uuid,
    pub source: Source,
    pub chunk_index: u32,
    pub similarity: f32,
}

#[derive(Debug, thiserror::Error)]
pub enum VectorError {
    #[error("the vector index is unavailable: {0}")]
    Unavailable(String),
    #[error("the vector index refused the request: {0}")]
    Refused(String),
}

impl From<sqlx::Error> for VectorError {
    fn from(error: sqlx::Error) -> Self {
        VectorError::Unavailable(error.to_string())
    }
}

/// A store of vectors searched by similarity, always within one organisation.
#[async_trait]
pub trait VectorIndex: Send + Sync + 'static {
    /// `pgvector`, `weaviate`.
    fn name(&self) -> &'static str;

    /// Writes `records`, replacing any of the same id.
    async fn upsert(&self, records: &[VectorRecord]) -> Result<(), VectorError>;

    /// The `limit` records of `org_id` nearest to `vector` among `kinds`, nearest first.
    async fn search(&self, org_id: Uuid, vector: &[f32], kinds: &[SourceKind], limit: usize) -> Result<Vec<VectorHit>, VectorError>;

    /// Deletes the records of source `id` of `kind` in `org_id`, every version but `keep` (all of
    /// them when `keep` is `None`); how many went.
    async fn delete_source(&self, org_id: Uuid, kind: SourceKind, id: Uuid, keep: Option<u32>) -> Result<u64, VectorError>;

    /// How many records source `id` of `kind` has in `org_id`, every version.
    async fn count(&self, org_id: Uuid, kind: SourceKind, id: Uuid) -> Result<u64, VectorError>;
}
