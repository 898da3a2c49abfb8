//! Every error the API returns, mapped once to a status code and an RFC 9457 problem document.

use aurora_commands::{HandleError, StoreError};
use aurora_domain::{DomainError, ErrorKind};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

/// The content type of every error body (RFC 9457).
pub const PROBLEM_CONTENT_TYPE: &str = "application/problem+json";

/// An RFC 9457 problem document.
#[derive(Debug, Serialize, ToSchema)]
pub struct Problem {
    /// A URI reference naming the kind of problem.
    #[serde(rename = "type")]
    pub problem_type: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    /// The request field at fault, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// The stream's current version, on conflicts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub current_version: Option<u64>,
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("no route matches this path")]
    RouteNotFound,
    #[error("{0} not found")]
    NotFound(String),
    #[error("{0}")]
    Unauthenticated(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("too many attempts; try again in {retry_after_secs} s")]
    TooManyRequests { retry_after_secs: u64 },
    #[error("{detail}")]
    BadRequest { detail: String, field: Option<String> },
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("request body is larger than the gateway accepts (AURORA_MAX_BODY_BYTES)")]
    PayloadTooLarge,
    /// What the request would record is larger than an event may be.
    #[error("{0}")]
    EventTooLarge(String),
    #[error("the file is larger than the {max} bytes a document may be (AURORA_KB_MAX_UPLOAD_BYTES); nothing was kept")]
    FileTooLarge { max: u64 },
    #[error("{0}")]
    QuotaExceeded(String),
    #[error("{detail}")]
    Conflict { detail: String, current_version: Option<u64> },
    #[error("{0}")]
    Unprocessable(String),
    #[error("{0}")]
    Unavailable(String),
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

impl ApiError {
    fn parts(&self) -> (StatusCode, &'static str, &'static str) {
        match self {
            ApiError::RouteNotFound => (StatusCode::NOT_FOUND, "route-not-found", "Route not found"),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not-found", "Resource not found"),
            ApiError::Unauthenticated(_) => (StatusCode::UNAUTHORIZED, "unauthenticated", "Authentication required"),
            ApiError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden", "Not allowed"),
            ApiError::TooManyRequests { .. } => (StatusCode::TOO_MANY_REQUESTS, "too-many-requests", "Too many requests"),
            ApiError::BadRequest { .. } => (StatusCode::BAD_REQUEST, "bad-request", "Request is not valid"),
            ApiError::UnsupportedMediaType(_) => (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported-media-type", "Unsupported content type"),
            ApiError::PayloadTooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "payload-too-large", "Request body too large"),
            ApiError::EventTooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "event-too-large", "Change too large to record"),
            ApiError::FileTooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "file-too-large", "File too large"),
            ApiError::QuotaExceeded(_) => (StatusCode::UNPROCESSABLE_ENTITY, "quota-exceeded", "Quota exceeded"),
            ApiError::Conflict { .. } => (StatusCode::CONFLICT, "conflict", "Conflicting change"),
            ApiError::Unprocessable(_) => (StatusCode::UNPROCESSABLE_ENTITY, "unprocessable", "Command refused"),
            ApiError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable", "Dependency unavailable"),
            ApiError::Unexpected(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal", "Internal error"),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, slug, title) = self.parts();
        let detail = match &self {
            // The cause is logged, never shown: it may name internals.
            ApiError::Unexpected(error) => {
                tracing::error!(error = %format!("{error:#}"), "request failed");
                "the server could not complete the request; it has been logged".to_owned()
            }
            other => {
                if status.is_server_error() {
                    tracing::warn!(error = %other, "request failed");
                }
                other.to_string()
            }
        };
        let problem = Problem {
            problem_type: format!("/problems/{slug}"),
            title: title.to_owned(),
            status: status.as_u16(),
            detail,
            field: match &self {
                ApiError::BadRequest { field, .. } => field.clone(),
                _ => None,
            },
            current_version: match &self {
                ApiError::Conflict { current_version, .. } => *current_version,
                _ => None,
            },
        };
        let body = serde_json::to_vec(&problem).expect("problems serialize");
        let mut response = (status, [(header::CONTENT_TYPE, PROBLEM_CONTENT_TYPE)], body).into_response();
        if let ApiError::TooManyRequests { retry_after_secs } = self {
            response.headers_mut().insert(header::RETRY_AFTER, header::HeaderValue::from(retry_after_secs));
        }
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer realm=\"aurora\""));
        }
        response
    }
}

impl From<DomainError> for ApiError {
    fn from(error: DomainError) -> Self {
        match error.kind() {
            ErrorKind::NotFound(what) => ApiError::NotFound(what),
            ErrorKind::AlreadyExists => ApiError::Conflict { detail: error.to_string(), current_version: None },
            ErrorKind::InvalidInput { field, reason } => {
                ApiError::BadRequest { detail: format!("{field} {reason}"), field: Some(field.to_owned()) }
            }
            ErrorKind::InvalidState => ApiError::Unprocessable(error.to_string()),
            ErrorKind::QuotaExceeded => ApiError::QuotaExceeded(error.to_string()),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        ApiError::from(HandleError::Store(error))
    }
}

impl From<HandleError> for ApiError {
    fn from(error: HandleError) -> Self {
        match error {
            HandleError::Domain(domain) => domain.into(),
            HandleError::Conflict { expected, actual, .. } => ApiError::Conflict {
                detail: format!("the resource is at version {actual}, the request expected {expected}"),
                current_version: Some(actual),
            },
            HandleError::TooMuchContention { .. } => ApiError::Conflict {
                detail: "the resource kept changing while the request was handled; try again".into(),
                current_version: None,
            },
            HandleError::Store(error @ StoreError::EventTooLarge { .. }) => ApiError::EventTooLarge(error.to_string()),
            HandleError::Store(StoreError::Unavailable(error)) => {
                tracing::warn!(error = %format!("{error:#}"), "event store unavailable");
                ApiError::Unavailable("the event store is unavailable; try again shortly".into())
            }
            other => ApiError::Unexpected(anyhow::Error::new(other)),
        }
    }
}

impl From<aurora_adapters::graph::GraphError> for ApiError {
    fn from(error: aurora_adapters::graph::GraphError) -> Self {
        match error {
            aurora_adapters::graph::GraphError::Database(error) => error.into(),
            unavailable => {
                tracing::warn!(error = %unavailable, "graph store unavailable");
                ApiError::Unavailable("the graph store is unavailable; try again shortly".into())
            }
        }
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(error: sqlx::Error) -> Self {
        if aurora_adapters::postgres::is_transient(&error) {
            tracing::warn!(%error, "database unavailable");
            ApiError::Unavailable("the database is unavailable; try again shortly".into())
        } else {
            ApiError::Unexpected(error.into())
        }
    }
}
