//! `POST /v1/knowledge/documents`: a multipart upload streamed to the object store.

use aurora_adapters::objects::{ObjectKey, Upload};
use aurora_domain::knowledge::{KnowledgeCommand, Library, Quota};
use aurora_events::knowledge::DocumentKind;
use axum::extract::multipart::{Field, Multipart, MultipartRejection};
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use serde::Serialize;
use sha2::Digest;
use utoipa::ToSchema;
use uuid::Uuid;

use super::library_stream;
use crate::auth::Caller;
use crate::problem::{ApiError, Problem};
use crate::AppState;

/// Bytes of multipart framing allowed beyond the file itself.
const FRAMING_BYTES: u64 = 64 * 1024;

/// What an upload recorded.
#[derive(Debug, Serialize, ToSchema)]
pub struct DocumentAccepted {
    pub document_id: Uuid,
    /// 1 for a new document; the next version when the organisation had one of this name.
    pub version: u32,
    pub name: String,
    /// `pdf`, `docx`, `markdown` or `text`, as the content showed.
    pub kind: String,
    pub bytes: u64,
    pub sha256: String,
    /// `processing`: the indexer takes it from here; follow it on `/v1/knowledge/events`.
    pub status: String,
    pub stream_version: u64,
}

/// The schema of the form, for the description.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct UploadForm {
    /// The file: PDF, DOCX, Markdown (`.md`) or plain text (`.txt`), at most 100 MB by default.
    #[schema(value_type = String, format = Binary)]
    pub file: Vec<u8>,
}

/// Uploads a runbook or postmortem (multipart form, field `file`). Its type is read from its
/// content and must agree with its name; a name the organisation has already is a new version of
/// that document. Nothing is kept of an upload that is refused or cut off.
#[utoipa::path(
    post, path = "/v1/knowledge/documents", tag = "knowledge",
    request_body(content = UploadForm, content_type = "multipart/form-data"),
    responses(
        (status = 202, body = DocumentAccepted),
        (status = 400, description = "no file, a malformed form, or an upload cut off", body = Problem),
        (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 409, description = "the same name was uploaded at the same moment", body = Problem),
        (status = 413, description = "the file is over the size limit", body = Problem),
        (status = 415, description = "not multipart, or the content is not a PDF, DOCX, Markdown or text file", body = Problem),
        (status = 422, description = "the organisation's document or byte quota is used up", body = Problem),
        (status = 503, body = Problem)
    )
)]
pub async fn upload_document(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    multipart: Result<Multipart, MultipartRejection>,
) -> Result<(StatusCode, axum::Json<DocumentAccepted>), ApiError> {
    let config = &state.config.knowledge;
    let content_length = headers.get(header::CONTENT_LENGTH).and_then(|value| value.to_str().ok()?.parse::<u64>().ok());
    if content_length.is_some_and(|length| length > config.max_upload_bytes + FRAMING_BYTES) {
        return Err(ApiError::FileTooLarge { max: config.max_upload_bytes });
    }
    let mut multipart = multipart.map_err(|rejection| {
        ApiError::UnsupportedMediaType(format!("upload the file as multipart/form-data with a `file` field: {}", rejection.body_text()))
    })?;
    let field = loop {
        let field = multipart.next_field().await.map_err(|error| ApiError::BadRequest {
            detail: format!("the form could not be read: {}", error.body_text()),
            field: None,
        })?;
        match field {
            Some(field) if field.name() == Some("file") => break field,
            Some(_) => continue,
            None => return Err(ApiError::BadRequest { detail: "the form has no `file` field".into(), field: Some("file".into()) }),
        }
    };
    let name = file_name(field.file_name())?;
    let kind = kind_by_name(&name)?;

    let stream = library_stream(&caller);
    let (library, _) = state.commands.load::<Library>(&stream, caller.org_id()).await?;
    let quota = Quota { max_documents: config.max_documents, max_total_bytes: config.max_total_bytes };
    let document_id = library.named(&name).unwrap_or_else(Uuid::now_v7);
    library.admits(document_id, 0, quota).map_err(|error| ApiError::from(aurora_domain::DomainError::from(error)))?;
    let room = config.max_total_bytes.saturating_sub(library.total_bytes());

    let key = ObjectKey::document(caller.org_id().0, document_id, Uuid::now_v7());
    let upload = state.objects.upload(&key).await.map_err(|error| ApiError::Unavailable(error.to_string()))?;
    let limits = Limits { file: config.max_upload_bytes, quota: room };
    let (bytes, sha256) = stream_file(field, upload, kind, &name, limits).await?;

    let command = KnowledgeCommand::Upload {
        document_id,
        name: name.clone(),
        kind,
        bytes,
        sha256: sha256.clone(),
        object_key: key.to_string(),
        quota,
    };
    let meta = aurora_commands::CommandMeta::new(caller.org_id(), caller.actor());
    let handled = match state.commands.handle::<Library>(&stream, command, &meta, None).await {
        Ok(handled) => handled,
        Err(error) => {
            // Refused after all (a concurrent upload took the quota or the name): nothing stays.
            if let Err(cleanup) = state.objects.delete_prefix(&key).await {
                tracing::warn!(%key, error = %cleanup, "a refused upload's file could not be deleted");
            }
            return Err(error.into());
        }
    };
    aurora_adapters::wakeup::announce_appended(&state.pool).await;
    // The version as the library holds it now, not as it was before the file streamed in.
    let (library, _) = state.commands.load::<Library>(&stream, caller.org_id()).await?;
    let version = library.documents.get(&document_id).map_or(1, |document| document.version);
    Ok((
        StatusCode::ACCEPTED,
        axum::Json(DocumentAccepted {
            document_id,
            version,
            name,
            kind: kind.as_str().to_owned(),
            bytes,
            sha256,
            status: "processing".into(),
            stream_version: handled.stream_version,
        }),
    ))
}

/// The file's name without any directory, checked.
fn file_name(given: Option<&str>) -> Result<String, ApiError> {
    let bad = |detail: &str| ApiError::BadRequest { detail: detail.into(), field: Some("file".into()) };
    let given = given.ok_or_else(|| bad("the `file` field needs a file name"))?;
    let name = given.rsplit(['/', '\\']).next().unwrap_or(given).trim();
    if name.is_empty() || name.chars().count() > aurora_domain::knowledge::MAX_NAME_CHARS || name.chars().any(char::is_control) {
        return Err(bad("the file name must be 1 to 200 characters without control characters"));
    }
    Ok(name.to_owned())
}

/// The kind a name claims; the content must then agree.
fn kind_by_name(name: &str) -> Result<DocumentKind, ApiError> {
    let extension = name.rsplit_once('.').map(|(_, extension)| extension.to_ascii_lowercase()).unwrap_or_default();
    match extension.as_str() {
        "pdf" => Ok(DocumentKind::Pdf),
        "docx" => Ok(DocumentKind::Docx),
        "md" | "markdown" => Ok(DocumentKind::Markdown),
        "txt" | "text" | "log" => Ok(DocumentKind::Text),
        _ => Err(ApiError::UnsupportedMediaType(format!(
            "`{name}` is not a PDF (.pdf), Word document (.docx), Markdown (.md) or text (.txt) file"
        ))),
    }
}

#[derive(Debug, Clone, Copy)]
struct Limits {
    /// Largest file.
    file: u64,
    /// Bytes left in the organisation's quota.
    quota: u64,
}

/// Streams the field into `upload`, checking the content's type on its first bytes and the
/// limits on every piece; the whole file or nothing is stored.
async fn stream_file(mut field: Field<'_>, mut upload: Upload, kind: DocumentKind, name: &str, limits: Limits) -> Result<(u64, String), ApiError> {
    let mut digest = sha2::Sha256::new();
    let mut head: Vec<u8> = Vec::with_capacity(8);
    let mut text = TextCheck::default();
    let outcome: Result<(), ApiError> = async {
        loop {
            let piece = match field.chunk().await {
                Ok(Some(piece)) => piece,
                Ok(None) => break,
                Err(error) => {
                    return Err(ApiError::BadRequest {
                        detail: format!("the upload was cut off or malformed ({}); nothing was kept", error.body_text()),
                        field: Some("file".into()),
                    })
                }
            };
            let total = upload.bytes() + piece.len() as u64;
            if total > limits.file {
                return Err(ApiError::FileTooLarge { max: limits.file });
            }
            if total > limits.quota {
                return Err(ApiError::QuotaExceeded(format!(
                    "the organisation's documents may take {} more bytes and this file is larger; delete some first (nothing was kept)",
                    limits.quota
                )));
            }
            if head.len() < 8 {
                head.extend(piece.iter().take(8 - head.len()));
                if head.len() >= 5 || piece.is_empty() {
                    check_magic(kind, &head, name)?;
                }
            }
            if matches!(kind, DocumentKind::Markdown | DocumentKind::Text) {
                text.feed(&piece).map_err(|reason| ApiError::UnsupportedMediaType(format!("`{name}` is not a text file: {reason}")))?;
            }
            digest.update(&piece);
            upload.write(&piece).await.map_err(|error| ApiError::Unavailable(error.to_string()))?;
        }
        if upload.bytes() == 0 {
            return Err(ApiError::BadRequest { detail: "the file is empty".into(), field: Some("file".into()) });
        }
        check_magic(kind, &head, name)?;
        if matches!(kind, DocumentKind::Markdown | DocumentKind::Text) {
            text.finish().map_err(|reason| ApiError::UnsupportedMediaType(format!("`{name}` is not a text file: {reason}")))?;
        }
        Ok(())
    }
    .await;
    match outcome {
        Ok(()) => {
            let bytes = upload.finish().await.map_err(|error| ApiError::Unavailable(error.to_string()))?;
            Ok((bytes, hex::encode(digest.finalize())))
        }
        Err(error) => {
            upload.abort().await;
            Err(error)
        }
    }
}

/// Whether the first bytes are what the name claims.
fn check_magic(kind: DocumentKind, head: &[u8], name: &str) -> Result<(), ApiError> {
    let fits = match kind {
        DocumentKind::Pdf => head.starts_with(b"%PDF-"),
        // A DOCX is a ZIP package; its parts are checked when it is read.
        DocumentKind::Docx => head.starts_with(b"PK\x03\x04"),
        DocumentKind::Markdown | DocumentKind::Text => true,
    };
    if fits {
        return Ok(());
    }
    let what = match kind {
        DocumentKind::Pdf => "a PDF",
        DocumentKind::Docx => "a Word document (DOCX)",
        DocumentKind::Markdown | DocumentKind::Text => "text",
    };
    Err(ApiError::UnsupportedMediaType(format!("`{name}` is named as {what} but its content is not; nothing was kept")))
}

/// Incremental UTF-8 check that also refuses binary control characters.
#[derive(Default)]
struct TextCheck {
    carry: Vec<u8>,
}

impl TextCheck {
    fn feed(&mut self, piece: &[u8]) -> Result<(), String> {
        let mut bytes = std::mem::take(&mut self.carry);
        bytes.extend_from_slice(piece);
        let valid = match std::str::from_utf8(&bytes) {
            Ok(text) => text.len(),
            // An incomplete character at the end waits for the next piece.
            Err(error) if error.error_len().is_none() => error.valid_up_to(),
            Err(error) => return Err(format!("byte {} is not UTF-8", error.valid_up_to())),
        };
        let text = std::str::from_utf8(&bytes[..valid]).expect("checked");
        if text.chars().any(|character| character.is_control() && !matches!(character, '\n' | '\r' | '\t' | '\u{c}')) {
            return Err("it holds binary control characters".into());
        }
        self.carry = bytes[valid..].to_vec();
        Ok(())
    }

    fn finish(&self) -> Result<(), String> {
        if self.carry.is_empty() {
            Ok(())
        } else {
            Err("it ends inside a UTF-8 character".into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_checked_across_pieces() {
        let mut check = TextCheck::default();
        let text = "Runbook — étape 1\n".as_bytes();
        let (first, second) = text.split_at(10);
        assert!(check.feed(first).is_ok() && check.feed(second).is_ok() && check.finish().is_ok());
        assert!(TextCheck::default().feed(b"abc\x00def").is_err());
        assert!(TextCheck::default().feed(b"abc\xff").is_err());
        let mut cut = TextCheck::default();
        assert!(cut.feed(&"é".as_bytes()[..1]).is_ok() && cut.finish().is_err());
    }

    #[test]
    fn names_decide_the_kind_the_content_must_show() {
        assert_eq!(kind_by_name("Runbook.PDF").unwrap(), DocumentKind::Pdf);
        assert_eq!(kind_by_name("notes.md").unwrap(), DocumentKind::Markdown);
        assert!(kind_by_name("image.png").is_err());
        assert!(check_magic(DocumentKind::Pdf, b"PK\x03\x04", "x.pdf").is_err());
        assert!(check_magic(DocumentKind::Docx, b"PK\x03\x04", "x.docx").is_ok());
        assert_eq!(file_name(Some("../../etc/passwd.txt")).unwrap(), "passwd.txt");
        assert_eq!(file_name(Some("C:\\Users\\me\\runbook.md")).unwrap(), "runbook.md");
    }
}
