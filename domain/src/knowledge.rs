//! The knowledge base of one organisation (stream `knowledge-<org id>`): its documents, their
//! versions and processing, its quotas, and the memory note. One aggregate per organisation, so
//! that the quotas and "the same name is a new version" are decided on everything at once.

use std::collections::HashMap;

use aurora_events::knowledge::{
    DocumentDeleted, DocumentFailed, DocumentIndexed, DocumentKind, DocumentProcessingStarted, DocumentUploaded, KnowledgeEvent,
    MemoryUpdated,
};
use uuid::Uuid;

use crate::text::{bounded, Lines};
use crate::{Aggregate, DomainError, ErrorKind};

pub const MAX_NAME_CHARS: usize = 200;
pub const MAX_MEMORY_CHARS: usize = 5_000;
pub const MAX_REASON_CHARS: usize = 1_000;

/// What an organisation may keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    pub max_documents: u64,
    pub max_total_bytes: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub enum KnowledgeCommand {
    /// Records a file stored whole at `object_key` as `document_id` (a new document, or the
    /// document of that name when there is one: the caller looked it up with [`Library::named`]).
    Upload {
        document_id: Uuid,
        name: String,
        kind: DocumentKind,
        bytes: u64,
        sha256: String,
        object_key: String,
        quota: Quota,
    },
    StartProcessing {
        document_id: Uuid,
        version: u32,
    },
    MarkIndexed(DocumentIndexed),
    MarkFailed(DocumentFailed),
    Delete {
        document_id: Uuid,
    },
    SetMemory {
        text: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KnowledgeError {
    #[error("document does not exist")]
    NotFound,
    #[error("the organisation keeps {max} documents at most; delete some first")]
    TooManyDocuments { max: u64 },
    #[error("the organisation keeps {max} bytes of documents at most and has {used}; this file of {bytes} bytes does not fit")]
    TooManyBytes { max: u64, used: u64, bytes: u64 },
    #[error("a document named `{0}` was uploaded at the same time; upload again")]
    NameTaken(String),
}

impl KnowledgeError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            KnowledgeError::NotFound => ErrorKind::NotFound("document".into()),
            KnowledgeError::TooManyDocuments { .. } | KnowledgeError::TooManyBytes { .. } => ErrorKind::QuotaExceeded,
            KnowledgeError::NameTaken(_) => ErrorKind::InvalidState,
        }
    }
}

/// Where a version is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Processing,
    Ready,
    Failed,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Document {
    pub name: String,
    pub kind: DocumentKind,
    pub version: u32,
    pub status: Status,
    /// Whether processing of the current version began.
    pub started: bool,
    /// Bytes of every version kept.
    pub bytes: u64,
    /// Where the current version's file is.
    pub object_key: String,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Library {
    pub documents: HashMap<Uuid, Document>,
    pub memory: String,
    events: u64,
}

/// `text` without control characters other than line breaks and tabs, at most `max` characters.
fn clip(text: &str, max: usize) -> String {
    text.trim().chars().filter(|character| !character.is_control() || matches!(character, '\n' | '\t')).take(max).collect()
}

/// Names compare without regard to case.
fn name_key(name: &str) -> String {
    name.to_lowercase()
}

impl Library {
    /// The live document called `name`, if any.
    pub fn named(&self, name: &str) -> Option<Uuid> {
        let key = name_key(name.trim());
        self.documents.iter().find(|(_, document)| name_key(&document.name) == key).map(|(id, _)| *id)
    }

    pub fn total_bytes(&self) -> u64 {
        self.documents.values().map(|document| document.bytes).sum()
    }

    /// Whether one more document fits `quota`.
    pub fn admits(&self, document_id: Uuid, bytes: u64, quota: Quota) -> Result<(), KnowledgeError> {
        if !self.documents.contains_key(&document_id) && self.documents.len() as u64 >= quota.max_documents {
            return Err(KnowledgeError::TooManyDocuments { max: quota.max_documents });
        }
        let used = self.total_bytes();
        if used.saturating_add(bytes) > quota.max_total_bytes {
            return Err(KnowledgeError::TooManyBytes { max: quota.max_total_bytes, used, bytes });
        }
        Ok(())
    }

    fn live(&self, document_id: Uuid) -> Result<&Document, DomainError> {
        self.documents.get(&document_id).ok_or_else(|| KnowledgeError::NotFound.into())
    }

    /// Whether `version` is the current version of a live document.
    fn current(&self, document_id: Uuid, version: u32) -> Option<&Document> {
        self.documents.get(&document_id).filter(|document| document.version == version)
    }
}

impl Aggregate for Library {
    type Command = KnowledgeCommand;
    type Event = KnowledgeEvent;

    fn decide(&self, command: KnowledgeCommand) -> Result<Vec<KnowledgeEvent>, DomainError> {
        match command {
            KnowledgeCommand::Upload { document_id, name, kind, bytes, sha256, object_key, quota } => {
                let name = bounded("name", &name, MAX_NAME_CHARS, Lines::One)?;
                if name.is_empty() {
                    return Err(DomainError::InvalidInput { field: "name", reason: "a document needs a file name".into() });
                }
                match self.named(&name) {
                    Some(existing) if existing != document_id => return Err(KnowledgeError::NameTaken(name).into()),
                    None if self.documents.contains_key(&document_id) => return Err(KnowledgeError::NameTaken(name).into()),
                    _ => {}
                }
                self.admits(document_id, bytes, quota)?;
                let version = self.documents.get(&document_id).map_or(1, |document| document.version + 1);
                Ok(vec![KnowledgeEvent::DocumentUploaded(DocumentUploaded { document_id, version, name, kind, bytes, sha256, object_key })])
            }
            KnowledgeCommand::StartProcessing { document_id, version } => match self.current(document_id, version) {
                Some(document) if !document.started => {
                    Ok(vec![KnowledgeEvent::ProcessingStarted(DocumentProcessingStarted { document_id, version })])
                }
                // Started already, replaced by a newer version, or deleted: nothing to start.
                _ => Ok(Vec::new()),
            },
            KnowledgeCommand::MarkIndexed(indexed) => match self.current(indexed.document_id, indexed.version) {
                Some(document) if document.status == Status::Processing => Ok(vec![KnowledgeEvent::DocumentIndexed(indexed)]),
                _ => Ok(Vec::new()),
            },
            KnowledgeCommand::MarkFailed(mut failed) => match self.current(failed.document_id, failed.version) {
                Some(document) if document.status == Status::Processing => {
                    // A reader's own words end up here: cut to size, never refused, or the
                    // processor that records them would retry for ever.
                    failed.reason = clip(&failed.reason, MAX_REASON_CHARS);
                    Ok(vec![KnowledgeEvent::DocumentFailed(failed)])
                }
                _ => Ok(Vec::new()),
            },
            KnowledgeCommand::Delete { document_id } => {
                let document = self.live(document_id)?;
                Ok(vec![KnowledgeEvent::DocumentDeleted(DocumentDeleted { document_id, versions: document.version })])
            }
            KnowledgeCommand::SetMemory { text } => {
                let text = bounded("memory", &text, MAX_MEMORY_CHARS, Lines::Many)?;
                if text == self.memory {
                    return Ok(Vec::new());
                }
                Ok(vec![KnowledgeEvent::MemoryUpdated(MemoryUpdated { text })])
            }
        }
    }

    fn evolve(mut self, event: &KnowledgeEvent) -> Self {
        self.events += 1;
        match event {
            KnowledgeEvent::DocumentUploaded(uploaded) => {
                let document = self.documents.entry(uploaded.document_id).or_insert_with(|| Document {
                    name: uploaded.name.clone(),
                    kind: uploaded.kind,
                    version: 0,
                    status: Status::Processing,
                    started: false,
                    bytes: 0,
                    object_key: String::new(),
                });
                document.name = uploaded.name.clone();
                document.kind = uploaded.kind;
                document.version = uploaded.version;
                document.status = Status::Processing;
                document.started = false;
                document.bytes += uploaded.bytes;
                document.object_key = uploaded.object_key.clone();
            }
            KnowledgeEvent::ProcessingStarted(started) => {
                if let Some(document) = self.documents.get_mut(&started.document_id).filter(|document| document.version == started.version)
                {
                    document.started = true;
                }
            }
            KnowledgeEvent::DocumentIndexed(DocumentIndexed { document_id, version, .. })
            | KnowledgeEvent::DocumentFailed(DocumentFailed { document_id, version, .. }) => {
                let status = if matches!(event, KnowledgeEvent::DocumentIndexed(_)) { Status::Ready } else { Status::Failed };
                if let Some(document) = self.documents.get_mut(document_id).filter(|document| document.version == *version) {
                    document.status = status;
                }
            }
            KnowledgeEvent::DocumentDeleted(deleted) => {
                self.documents.remove(&deleted.document_id);
            }
            KnowledgeEvent::MemoryUpdated(updated) => self.memory = updated.text.clone(),
        }
        self
    }

    fn exists(&self) -> bool {
        self.events > 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::given;
    use aurora_events::knowledge::FailureCode;

    const QUOTA: Quota = Quota { max_documents: 2, max_total_bytes: 1_000 };

    fn upload(document_id: Uuid, name: &str, bytes: u64) -> KnowledgeCommand {
        KnowledgeCommand::Upload {
            document_id,
            name: name.into(),
            kind: DocumentKind::Markdown,
            bytes,
            sha256: "ab".into(),
            object_key: format!("o/kb/{document_id}/{bytes}/original"),
            quota: QUOTA,
        }
    }

    fn uploaded(document_id: Uuid, name: &str, version: u32, bytes: u64) -> KnowledgeEvent {
        KnowledgeEvent::DocumentUploaded(DocumentUploaded {
            document_id,
            version,
            name: name.into(),
            kind: DocumentKind::Markdown,
            bytes,
            sha256: "ab".into(),
            object_key: format!("o/kb/{document_id}/{bytes}/original"),
        })
    }

    #[test]
    fn the_same_name_is_a_new_version_and_another_id_for_it_is_refused() {
        let first = Uuid::from_u128(1);
        given::<Library>([]).when(upload(first, "runbook.md", 10)).then([uploaded(first, "runbook.md", 1, 10)]);
        let state = [uploaded(first, "runbook.md", 1, 10)];
        assert_eq!(crate::testing::given::<Library>(state.clone()).state_after(upload(first, "Runbook.MD", 20)).len(), 1);
        given::<Library>(state.clone()).when(upload(first, "runbook.md", 20)).then([uploaded(first, "runbook.md", 2, 20)]);
        given::<Library>(state)
            .when(upload(Uuid::from_u128(2), "runbook.md", 20))
            .then_error(KnowledgeError::NameTaken("runbook.md".into()).into());
    }

    #[test]
    fn quotas_count_documents_and_every_version_s_bytes() {
        let (one, two) = (Uuid::from_u128(1), Uuid::from_u128(2));
        let full = [uploaded(one, "a.md", 1, 10), uploaded(two, "b.md", 1, 10)];
        given::<Library>(full.clone())
            .when(upload(Uuid::from_u128(3), "c.md", 1))
            .then_error(KnowledgeError::TooManyDocuments { max: 2 }.into());
        // A new version of a document is not one more document, but its bytes count.
        given::<Library>(full.clone()).when(upload(one, "a.md", 900)).then([uploaded(one, "a.md", 2, 900)]);
        given::<Library>(full)
            .when(upload(one, "a.md", 981))
            .then_error(KnowledgeError::TooManyBytes { max: 1_000, used: 20, bytes: 981 }.into());
    }

    #[test]
    fn processing_is_recorded_once_and_only_for_the_current_version() {
        let id = Uuid::from_u128(1);
        let start = KnowledgeCommand::StartProcessing { document_id: id, version: 1 };
        let started = KnowledgeEvent::ProcessingStarted(DocumentProcessingStarted { document_id: id, version: 1 });
        given::<Library>([uploaded(id, "a.md", 1, 10)]).when(start.clone()).then([started.clone()]);
        given::<Library>([uploaded(id, "a.md", 1, 10), started.clone()]).when(start.clone()).then([]);
        // Version 2 arrived while version 1 was processed: version 1's outcome is not recorded.
        let replaced = [uploaded(id, "a.md", 1, 10), started.clone(), uploaded(id, "a.md", 2, 10)];
        let indexed = DocumentIndexed { document_id: id, version: 1, chunks: 1, pages: None, characters: 5, tokens: 2 };
        given::<Library>(replaced.clone()).when(KnowledgeCommand::MarkIndexed(indexed.clone())).then([]);
        given::<Library>(replaced).when(start).then([]);
        let failed = DocumentFailed { document_id: id, version: 1, code: FailureCode::Empty, reason: "no text".into() };
        given::<Library>([uploaded(id, "a.md", 1, 10), started.clone()])
            .when(KnowledgeCommand::MarkFailed(failed.clone()))
            .then([KnowledgeEvent::DocumentFailed(failed.clone())]);
        given::<Library>([uploaded(id, "a.md", 1, 10), started.clone(), KnowledgeEvent::DocumentFailed(failed.clone())])
            .when(KnowledgeCommand::MarkIndexed(indexed))
            .then([]);
        // A reader's long or odd message is cut, not refused (a refusal would be retried for ever).
        let noisy = DocumentFailed { reason: format!("bad \u{0}byte {}", "x".repeat(2 * MAX_REASON_CHARS)), ..failed };
        let events = given::<Library>([uploaded(id, "a.md", 1, 10), started]).state_after(KnowledgeCommand::MarkFailed(noisy));
        let [KnowledgeEvent::DocumentFailed(recorded)] = events.as_slice() else { panic!("{events:?}") };
        assert!(recorded.reason.starts_with("bad byte") && recorded.reason.chars().count() == MAX_REASON_CHARS);
    }

    #[test]
    fn a_deleted_document_is_gone_and_its_name_free() {
        let id = Uuid::from_u128(1);
        let state = [uploaded(id, "a.md", 1, 10), uploaded(id, "a.md", 2, 20)];
        given::<Library>(state.clone())
            .when(KnowledgeCommand::Delete { document_id: id })
            .then([KnowledgeEvent::DocumentDeleted(DocumentDeleted { document_id: id, versions: 2 })]);
        let mut deleted = state.to_vec();
        deleted.push(KnowledgeEvent::DocumentDeleted(DocumentDeleted { document_id: id, versions: 2 }));
        given::<Library>(deleted.clone()).when(KnowledgeCommand::Delete { document_id: id }).then_error(KnowledgeError::NotFound.into());
        // The name is free again: a new document, version 1.
        let new = Uuid::from_u128(9);
        given::<Library>(deleted).when(upload(new, "a.md", 5)).then([uploaded(new, "a.md", 1, 5)]);
    }

    #[test]
    fn the_memory_is_bounded_and_unchanged_text_records_nothing() {
        given::<Library>([])
            .when(KnowledgeCommand::SetMemory { text: "Prod is eu-west-1.".into() })
            .then([KnowledgeEvent::MemoryUpdated(MemoryUpdated { text: "Prod is eu-west-1.".into() })]);
        given::<Library>([KnowledgeEvent::MemoryUpdated(MemoryUpdated { text: "x".into() })])
            .when(KnowledgeCommand::SetMemory { text: " x ".into() })
            .then([]);
        given::<Library>([])
            .when(KnowledgeCommand::SetMemory { text: "y".repeat(MAX_MEMORY_CHARS + 1) })
            .then_error(DomainError::InvalidInput { field: "memory", reason: format!("must be at most {MAX_MEMORY_CHARS} characters") });
    }
}
