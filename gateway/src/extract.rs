//! Request extractors whose rejections are problem documents: JSON bodies that must say
//! `application/json`, parse, and name no unknown field; query strings that must parse.

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use crate::problem::ApiError;

/// `axum::Json` with problem+json rejections.
pub struct Json<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Json<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(request, state).await {
            Ok(axum::Json(value)) => Ok(Json(value)),
            Err(rejection) => Err(json_rejection(rejection)),
        }
    }
}

fn json_rejection(rejection: JsonRejection) -> ApiError {
    match rejection {
        JsonRejection::MissingJsonContentType(_) => {
            ApiError::UnsupportedMediaType("request body must be sent with `Content-Type: application/json`".into())
        }
        JsonRejection::JsonSyntaxError(error) => {
            ApiError::BadRequest { detail: format!("request body is not valid JSON: {}", error.body_text()), field: None }
        }
        JsonRejection::JsonDataError(error) => {
            let text = error.body_text();
            ApiError::BadRequest { field: field_named_in(&text), detail: text }
        }
        JsonRejection::BytesRejection(error) if error.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE => ApiError::PayloadTooLarge,
        other => ApiError::BadRequest { detail: other.body_text(), field: None },
    }
}

/// The field a serde error names: "unknown field `x`", "missing field `x`", or the path in front
/// of any other complaint ("role: unknown variant `owner`").
fn field_named_in(text: &str) -> Option<String> {
    for marker in ["unknown field `", "missing field `"] {
        if let Some(start) = text.find(marker) {
            return text[start + marker.len()..].split_once('`').map(|(field, _)| field.to_owned());
        }
    }
    // Past axum's "Failed to deserialize ...: " comes serde's "path: complaint".
    let complaint = text.split_once(": ").map_or(text, |(_, rest)| rest);
    let (path, _) = complaint.split_once(": ")?;
    (!path.is_empty() && !path.contains(' ')).then(|| path.to_owned())
}

/// `axum::extract::Query` with problem+json rejections.
pub struct Query<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(value)) => Ok(Query(value)),
            Err(QueryRejection::FailedToDeserializeQueryString(error)) => {
                let text = error.body_text();
                Err(ApiError::BadRequest { field: field_named_in(&text), detail: text })
            }
            Err(other) => Err(ApiError::BadRequest { detail: other.body_text(), field: None }),
        }
    }
}

/// `axum::extract::Path` with problem+json rejections.
pub struct Path<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for Path<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(value)) => Ok(Path(value)),
            Err(rejection) => Err(ApiError::BadRequest { detail: rejection.body_text(), field: None }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::field_named_in;

    #[test]
    fn the_field_at_fault_is_named() {
        let prefix = "Failed to deserialize the JSON body into the target type: ";
        assert_eq!(field_named_in(&format!("{prefix}unknown field `colour`, expected `title`")).as_deref(), Some("colour"));
        assert_eq!(field_named_in(&format!("{prefix}missing field `title` at line 1")).as_deref(), Some("title"));
        assert_eq!(field_named_in(&format!("{prefix}role: unknown variant `owner`, expected one of `viewer`")).as_deref(), Some("role"));
        assert_eq!(field_named_in(&format!("{prefix}invalid type: integer `1`, expected a string")), None);
        assert_eq!(field_named_in("Failed to deserialize query string: unknown field `colour`").as_deref(), Some("colour"));
    }
}
