//! `/openapi.json`, generated from the route annotations and types in the code as the features
//! register them ([`Routes`]), with each operation's access rule taken from the route table:
//! `x-required-role` is `public`, `ticket`, `viewer`, `editor` or `admin`, and guarded
//! operations name the security schemes they accept.

use axum::http::Method;
use axum::Json;
use utoipa::openapi::extensions::ExtensionsBuilder;
use utoipa::openapi::path::Operation;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, RefOr, ResponseBuilder};
use utoipa::OpenApi;

use crate::auth::{Access, SESSION_COOKIE};
use crate::problem::PROBLEM_CONTENT_TYPE;
use crate::routes::Routes;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Aurora API",
        description = "Aurora's gateway. Errors are application/problem+json (RFC 9457). Each operation's \
                       `x-required-role` says who may call it. Requests that change something with a session \
                       cookie carry the session's CSRF token in `X-CSRF-Token`."
    ),
    components(schemas(crate::problem::Problem))
)]
pub struct ApiDoc;

/// The description with every route's access rule applied.
pub fn described() -> utoipa::openapi::OpenApi {
    let routes = Routes::standard();
    let mut api = routes.api();
    let components = api.components.get_or_insert_with(Default::default);
    components.add_security_scheme("session", SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::new(SESSION_COOKIE))));
    components.add_security_scheme("api_token", SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()));
    // A change stream's single-use ticket, from `POST /v1/auth/ws-ticket`.
    components.add_security_scheme("ticket", SecurityScheme::ApiKey(ApiKey::Query(ApiKeyValue::new("ticket"))));
    for spec in routes.specs() {
        // `Routes::add` took the path and method from the description, so both are there.
        let item = api.paths.paths.get_mut(&spec.path).expect("a registered route is described");
        let operation: Option<&mut Operation> = match spec.method {
            Method::GET => item.get.as_mut(),
            Method::POST => item.post.as_mut(),
            Method::PATCH => item.patch.as_mut(),
            Method::PUT => item.put.as_mut(),
            Method::DELETE => item.delete.as_mut(),
            _ => None,
        };
        let operation = operation.expect("a registered route is described");
        declare_errors(operation, spec.access, spec.method != Method::GET);
        let rule = ExtensionsBuilder::new().add("x-required-role", spec.access.describe()).build();
        match operation.extensions.as_mut() {
            Some(extensions) => extensions.merge(rule),
            None => operation.extensions = Some(rule),
        }
        let schemes: &[&str] = match spec.access {
            Access::Member(_) => &["session", "api_token"],
            Access::ChangeStream(_) => &["session", "api_token", "ticket"],
            Access::Public | Access::Ticket => &[],
        };
        if !schemes.is_empty() {
            operation.security = Some(schemes.iter().map(|scheme| SecurityRequirement::new(*scheme, Vec::<String>::new())).collect());
        }
    }
    api
}

/// Declares the errors any call of an operation can meet, each as `application/problem+json`
/// (see [`crate::problem::ApiError`]): what the request itself can get wrong, the limits, and the
/// server's own failures; what a caller without access gets on guarded operations; a conflict on
/// operations that change something. An operation's own descriptions of its errors are kept.
fn declare_errors(operation: &mut Operation, access: Access, changes: bool) {
    let mut errors: Vec<(&str, &str)> = vec![
        ("400", "The request is not valid: malformed JSON, a field out of its limits, a control character"),
        ("404", "No such resource in the caller's organisation, or no such route"),
        ("413", "The request body, or the change it records, is too large"),
        ("415", "The body is not `application/json`"),
        ("422", "The command is refused in the resource's current state"),
        ("429", "Too many requests; `Retry-After` says when to try again"),
        ("500", "An unexpected error; the body carries an id to quote"),
        ("503", "A dependency (database, broker, cache) is unavailable for a moment; retry"),
    ];
    if !matches!(access, Access::Public) {
        errors.push(("401", "No valid credential"));
        errors.push(("403", "The credential's role does not allow this"));
    }
    if changes {
        errors.push(("409", "A concurrent change; retry"));
    }
    let problem = ContentBuilder::new().schema(Some(Ref::from_schema_name("Problem"))).build();
    for (status, description) in errors {
        operation.responses.responses.entry(status.to_owned()).or_insert_with(|| ResponseBuilder::new().description(description).into());
    }
    // Every error, declared here or by the operation itself, is a problem document.
    for (status, response) in operation.responses.responses.iter_mut() {
        if !status.starts_with('4') && !status.starts_with('5') {
            continue;
        }
        if let RefOr::T(response) = response {
            response.content = [(PROBLEM_CONTENT_TYPE.to_owned(), problem.clone())].into_iter().collect();
        }
    }
}

/// This API's OpenAPI 3.1 description.
#[utoipa::path(get, path = "/openapi.json", tag = "health", responses((status = 200, description = "This document", content_type = "application/json")))]
pub async fn openapi_json() -> Json<utoipa::openapi::OpenApi> {
    static DESCRIBED: std::sync::OnceLock<utoipa::openapi::OpenApi> = std::sync::OnceLock::new();
    Json(DESCRIBED.get_or_init(described).clone())
}
