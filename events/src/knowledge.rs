//! Events of an organisation's knowledge base (`knowledge-<org id>`): runbooks and postmortems
//! uploaded, processed, indexed or failed, deleted; and the organisation's memory, the note
//! admins keep for the agent. The files themselves are in the object store; an event names where.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::event_family;

/// What a document is, as its content (not its name) showed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum DocumentKind {
    Pdf,
    Docx,
    Markdown,
    Text,
}

impl DocumentKind {
    pub fn as_str(self) -> &'static str {
        match self {
            DocumentKind::Pdf => "pdf",
            DocumentKind::Docx => "docx",
            DocumentKind::Markdown => "markdown",
            DocumentKind::Text => "text",
        }
    }
}

/// `document.uploaded`: a file was stored whole; a document of the same name gets a new version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct DocumentUploaded {
    pub document_id: Uuid,
    /// 1 for a new document; one more for each upload of the same name.
    pub version: u32,
    /// The file's name as uploaded.
    pub name: String,
    pub kind: DocumentKind,
    pub bytes: u64,
    /// SHA-256 of the file, hex.
    pub sha256: String,
    /// Where the file is in the object store (`{org}/kb/{document}/{upload}/original`).
    pub object_key: String,
}

/// `document.processing_started`: the indexer began reading a version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct DocumentProcessingStarted {
    pub document_id: Uuid,
    pub version: u32,
}

/// `document.indexed`: a version is searchable.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct DocumentIndexed {
    pub document_id: Uuid,
    pub version: u32,
    pub chunks: u32,
    /// Pages of a PDF.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pages: Option<u32>,
    pub characters: u64,
    /// Word pieces of the text, by the embedding model's tokenizer.
    pub tokens: u64,
}

/// Why a document could not be indexed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum FailureCode {
    /// A PDF that needs a password.
    Encrypted,
    /// A PDF of scanned pages: no text to read.
    NoTextLayer,
    /// The file is damaged or not what its content first looked like.
    Corrupt,
    /// The file holds no text.
    Empty,
    /// A DOCX that unpacks to far more than it weighs, or holds what a document must not.
    Unsafe,
    /// More text than a document may hold.
    TooLarge,
}

/// `document.failed`: a version could not be indexed; `reason` says what to do about it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct DocumentFailed {
    pub document_id: Uuid,
    pub version: u32,
    pub code: FailureCode,
    pub reason: String,
}

/// `document.deleted`: the document, every version's file (everything under
/// `{org}/kb/{document}/` in the object store), its chunks and vectors go.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct DocumentDeleted {
    pub document_id: Uuid,
    /// How many versions it had.
    pub versions: u32,
}

/// `knowledge.memory_updated`: the organisation's note for the agent, whole.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct MemoryUpdated {
    pub text: String,
}

event_family! {
    /// Everything that happens to one organisation's knowledge base.
    pub enum KnowledgeEvent in "knowledge", named by KnowledgeEventType {
        DocumentUploaded(DocumentUploaded) = ("document.uploaded", 1),
        ProcessingStarted(DocumentProcessingStarted) = ("document.processing_started", 1),
        DocumentIndexed(DocumentIndexed) = ("document.indexed", 1),
        DocumentFailed(DocumentFailed) = ("document.failed", 1),
        DocumentDeleted(DocumentDeleted) = ("document.deleted", 1),
        MemoryUpdated(MemoryUpdated) = ("knowledge.memory_updated", 1),
    }
}

/// Registers this feature's event family.
pub fn register(families: &mut crate::catalog::Families) {
    families.add::<KnowledgeEvent>();
}
