//! Alerts in: the webhook endpoint monitoring tools post to, and the admin routes that manage it.
//!
//! `POST /v1/webhooks/{org}/{source}/{token}` answers at once (202) after recording the delivery
//! as `webhook.received`; the intake processor does the rest. Before anything is recorded the
//! token must be the organisation's current one (404 otherwise, the same answer as for an unknown
//! organisation), the source's shared secret must check when one is set (401), and the body must
//! be the source's documented payload (400 with what is wrong; 413 when oversized; 415 when not
//! JSON), and the organisation must be within its delivery rate (429). A delivery's id is derived from the organisation, the source and the body's digest, so
//! a redelivery is recognised and records nothing.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aurora_adapters::secrets::{Secret, SecretPath};
use aurora_adapters::wakeup::{self, LogSignals, Signal};
use aurora_commands::CommandMeta;
use aurora_domain::incident::sources;
use aurora_domain::incident::webhook::{Delivery, WebhookCommand, WebhookEndpoint};
use aurora_events::identity::Role::Admin;
use aurora_events::incident::{AlertSource, WebhookEvent, WebhookReceived};
use aurora_events::{Actor, EventPayload, OrgId};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use base64::Engine;
use chrono::Utc;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use utoipa::ToSchema;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::auth::secret;
use crate::auth::Access::{Member, Public};
use crate::auth::Caller;
use crate::commands::command_meta;
use crate::connection::secret_store_error;
use crate::extract::{Json, Path};
use crate::problem::{ApiError, Problem};
use crate::routes::Routes;
use crate::AppState;

/// Namespace of delivery ids.
const DELIVERY_NAMESPACE: Uuid = Uuid::from_u128(0x6a1e_47b1_0c9d_4e55_9a3b_2f6e_8d1c_0b7a);
/// Longest token accepted in a URL.
const MAX_TOKEN_CHARS: usize = 100;

pub fn register(routes: &mut Routes) {
    // The body is read against the webhook limit (`AURORA_INCIDENT_WEBHOOK_MAX_BYTES`) by the handler.
    let (schemas, paths, handler) = routes!(receive);
    routes.add(Public, (schemas, paths, handler.layer(axum::extract::DefaultBodyLimit::disable())));
    routes.add(Member(Admin), routes!(get_endpoint));
    routes.add(Member(Admin), routes!(rotate_token));
    routes.add(Member(Admin), routes!(set_secret));
    routes.add(Member(Admin), routes!(clear_secret));
}

/// What a delivery did.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct WebhookAccepted {
    pub delivery_id: Uuid,
    /// Alerts the payload carries.
    pub alerts: usize,
    /// The same delivery was accepted before; nothing new is recorded.
    pub duplicate: bool,
    /// Why a well-formed delivery changes no alert (a PagerDuty note, say).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ignored: Option<String>,
}

fn not_found() -> ApiError {
    ApiError::NotFound("webhook endpoint".into())
}

fn endpoint_stream(org_id: Uuid) -> aurora_events::StreamId {
    WebhookEvent::stream_of(org_id)
}

/// How long an endpoint read from its stream is trusted without reading it again, when no
/// announcement of its change was heard: the bound on a missed announcement.
const ENDPOINT_KEPT_FOR: Duration = Duration::from_secs(5);
/// What a gateway announces on the log channel when it changed an organisation's endpoint.
const ENDPOINT_CHANGED: &str = "webhook-endpoint";
/// Entries kept of each kind before they are all dropped.
const MAX_KEPT: usize = 10_000;

/// What a delivery is checked against, kept in the process so that a delivery reads nothing but
/// its own body: each organisation's endpoint (dropped when any gateway announces a change of it,
/// when the announcements may have been missed, and after [`ENDPOINT_KEPT_FOR`] in any case) and
/// the shared secrets read from the secret store, by version (a rotation is a new version, so
/// nothing stale is used).
#[derive(Default)]
pub struct WebhookCache {
    endpoints: Mutex<KeptEndpoints>,
    secrets: Mutex<HashMap<(Uuid, AlertSource, u64), Arc<str>>>,
}

#[derive(Default)]
struct KeptEndpoints {
    /// Counts the forgettings, so that an endpoint read before one is not kept after it.
    generation: u64,
    entries: HashMap<Uuid, (WebhookEndpoint, Instant)>,
}

impl WebhookCache {
    /// A cache that forgets what `signals` announce as changed, until `shutdown`.
    pub fn start(signals: &LogSignals, shutdown: CancellationToken) -> Arc<Self> {
        let cache = Arc::new(Self::default());
        let (kept, mut heard) = (Arc::downgrade(&cache), signals.subscribe());
        tokio::spawn(async move {
            loop {
                let signal = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    signal = heard.recv() => signal,
                };
                let Some(cache) = kept.upgrade() else { return };
                match signal {
                    Ok(Signal::Projected { read_model, org_id }) if read_model == ENDPOINT_CHANGED => cache.forget(Some(org_id)),
                    Ok(Signal::All) | Err(broadcast::error::RecvError::Lagged(_)) => cache.forget(None),
                    Ok(_) => {}
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        });
        cache
    }

    /// Forgets `org_id`'s endpoint, or every endpoint.
    fn forget(&self, org_id: Option<Uuid>) {
        let mut endpoints = self.endpoints.lock().expect("endpoints lock");
        endpoints.generation += 1;
        match org_id {
            Some(org_id) => endpoints.entries.remove(&org_id),
            None => {
                endpoints.entries.clear();
                None
            }
        };
    }

    /// `org_id`'s endpoint, read from its stream when not kept.
    async fn endpoint(&self, state: &AppState, org_id: Uuid) -> Result<WebhookEndpoint, ApiError> {
        let generation = {
            let endpoints = self.endpoints.lock().expect("endpoints lock");
            if let Some((endpoint, _)) = endpoints.entries.get(&org_id).filter(|(_, read_at)| read_at.elapsed() < ENDPOINT_KEPT_FOR) {
                return Ok(endpoint.clone());
            }
            endpoints.generation
        };
        let (endpoint, _) = state.commands.load::<WebhookEndpoint>(&endpoint_stream(org_id), OrgId(org_id)).await?;
        let mut endpoints = self.endpoints.lock().expect("endpoints lock");
        if endpoints.generation == generation {
            if endpoints.entries.len() >= MAX_KEPT {
                endpoints.entries.clear();
            }
            endpoints.entries.insert(org_id, (endpoint.clone(), Instant::now()));
        }
        Ok(endpoint)
    }

    /// The shared secret of `source`, at `version`.
    async fn secret(&self, state: &AppState, org_id: Uuid, source: AlertSource, version: u64) -> Result<Arc<str>, ApiError> {
        if let Some(found) = self.secrets.lock().expect("secrets lock").get(&(org_id, source, version)).cloned() {
            return Ok(found);
        }
        let stored = state.secrets.get(&SecretPath::webhook(org_id, source.as_str())).await.map_err(secret_store_error)?;
        let value: Arc<str> = Arc::from(stored.require("secret").map_err(secret_store_error)?);
        let mut secrets = self.secrets.lock().expect("secrets lock");
        if secrets.len() >= MAX_KEPT {
            secrets.clear();
        }
        secrets.insert((org_id, source, version), value.clone());
        Ok(value)
    }
}

/// Changes the endpoint of the caller's organisation, and tells every gateway so.
async fn change_endpoint(state: &AppState, caller: &Caller, command: WebhookCommand, meta: &CommandMeta) -> Result<(), ApiError> {
    let org_id = caller.org_id().0;
    state.commands.handle::<WebhookEndpoint>(&endpoint_stream(org_id), command, meta, None).await?;
    state.webhooks.forget(Some(org_id));
    wakeup::announce_changed(&state.pool, ENDPOINT_CHANGED, org_id).await;
    Ok(())
}

fn constant_time_equal(one: &[u8], other: &[u8]) -> bool {
    one.len() == other.len() && one.iter().zip(other).fold(0u8, |difference, (a, b)| difference | (a ^ b)) == 0
}

/// Whether `headers` prove knowledge of `shared`: PagerDuty signs the body
/// (`X-PagerDuty-Signature: v1=<hex>[,v1=<hex>...]`, several while its secret rotates); the
/// others send the secret as `Authorization: Bearer <secret>` or as the password of Basic auth.
fn signed(source: AlertSource, headers: &HeaderMap, body: &[u8], shared: &str) -> bool {
    if source == AlertSource::Pagerduty {
        let Some(signatures) = headers.get("x-pagerduty-signature").and_then(|value| value.to_str().ok()) else { return false };
        return signatures.split(',').filter_map(|part| part.trim().strip_prefix("v1=")).filter_map(|hex_text| hex::decode(hex_text.trim()).ok()).any(|signature| {
            let mut mac = Hmac::<Sha256>::new_from_slice(shared.as_bytes()).expect("HMAC takes any key");
            mac.update(body);
            mac.verify_slice(&signature).is_ok()
        });
    }
    let Some(authorization) = headers.get(header::AUTHORIZATION).and_then(|value| value.to_str().ok()) else { return false };
    if let Some(bearer) = authorization.strip_prefix("Bearer ") {
        return constant_time_equal(bearer.trim().as_bytes(), shared.as_bytes());
    }
    if let Some(basic) = authorization.strip_prefix("Basic ") {
        let decoded = base64::engine::general_purpose::STANDARD.decode(basic.trim()).unwrap_or_default();
        let password = decoded.splitn(2, |byte| *byte == b':').nth(1).unwrap_or_default();
        return constant_time_equal(password, shared.as_bytes());
    }
    false
}

/// The body, refused as soon as it is known to be over the webhook limit.
async fn read_body(state: &AppState, headers: &HeaderMap, body: axum::body::Body) -> Result<Bytes, ApiError> {
    let max = state.config.incident.webhook_max_bytes;
    let declared = headers.get(header::CONTENT_LENGTH).and_then(|value| value.to_str().ok()).and_then(|value| value.parse::<u64>().ok());
    if declared.is_some_and(|declared| declared > max as u64) {
        return Err(ApiError::PayloadTooLarge);
    }
    axum::body::to_bytes(body, max).await.map_err(|error| {
        let text = format!("{error:#}");
        if text.contains("length limit") {
            ApiError::PayloadTooLarge
        } else {
            ApiError::BadRequest { detail: format!("the body could not be read: {text}"), field: None }
        }
    })
}

/// Accepts a monitoring tool's webhook delivery.
#[utoipa::path(
    post, path = "/v1/webhooks/{org_id}/{source}/{token}", tag = "incidents",
    params(
        ("org_id" = String, Path, description = "The organisation"),
        ("source" = String, Path, description = "`grafana`, `alertmanager`, `datadog` or `pagerduty`"),
        ("token" = String, Path, description = "The endpoint's token, as the rotation gave it")
    ),
    request_body(content = Object, content_type = "application/json", description = "The source's documented webhook payload"),
    responses(
        (status = 202, body = WebhookAccepted), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 404, body = Problem), (status = 413, body = Problem), (status = 415, body = Problem), (status = 429, body = Problem),
        (status = 503, body = Problem)
    )
)]
pub async fn receive(
    State(state): State<AppState>,
    axum::extract::Path((org, source, token)): axum::extract::Path<(String, String, String)>,
    headers: HeaderMap,
    request_body: axum::body::Body,
) -> Result<(StatusCode, axum::Json<WebhookAccepted>), ApiError> {
    let org_id = Uuid::parse_str(&org).map_err(|_| not_found())?;
    let source = AlertSource::parse(&source).ok_or_else(|| ApiError::NotFound(format!("webhook source `{}`", sources::clip_line(&source, 40))))?;
    if token.len() > MAX_TOKEN_CHARS {
        return Err(not_found());
    }
    let endpoint = state.webhooks.endpoint(&state, org_id).await?;
    let expected = endpoint.token_sha256.as_deref().ok_or_else(not_found)?;
    if !constant_time_equal(secret::hex_digest(&token).as_bytes(), expected.as_bytes()) {
        return Err(not_found());
    }
    state.limiter.check_webhook(org_id).await?;
    let body = read_body(&state, &headers, request_body).await?;
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|value| value.to_str().ok()).unwrap_or("");
    let media_type = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    if media_type != "application/json" && !media_type.ends_with("+json") {
        return Err(ApiError::UnsupportedMediaType("a webhook body must be `application/json`".into()));
    }
    if let Some(at) = endpoint.secrets.get(&source) {
        let shared = state.webhooks.secret(&state, org_id, source, at.version).await?;
        if !signed(source, &headers, &body, &shared) {
            return Err(ApiError::Unauthenticated(match source {
                AlertSource::Pagerduty => "X-PagerDuty-Signature does not match the body with the shared secret".into(),
                _ => "the shared secret of this source is missing or wrong (send it as `Authorization: Bearer <secret>`)".into(),
            }));
        }
    }
    if body.is_empty() {
        return Err(ApiError::BadRequest { detail: "the body is empty; a webhook carries a JSON payload".into(), field: None });
    }
    let payload: serde_json::Value = serde_json::from_slice(&body)
        .map_err(|error| ApiError::BadRequest { detail: format!("the body is not valid JSON: {error}"), field: None })?;
    let payload = sources::without_nul(payload);
    let parsed = sources::parse(source, &payload).map_err(|error| ApiError::BadRequest { detail: error.to_string(), field: None })?;
    let body_sha256 = format!("{:x}", Sha256::digest(&body));
    let delivery_id = Uuid::new_v5(&DELIVERY_NAMESPACE, format!("{org_id}\0{source}\0{body_sha256}").as_bytes());
    let received = WebhookReceived { delivery_id, source, received_at: Utc::now(), body_sha256, payload };
    // The delivery's stream is its idempotency: a second delivery finds it recorded and appends
    // nothing (two at once: one append wins, the other is decided again on what it wrote).
    let meta = CommandMeta::new(OrgId(org_id), Actor::Webhook(source.as_str().to_owned()));
    let handled = state.commands.handle_new::<Delivery>(&WebhookEvent::stream_of(delivery_id), received, &meta).await?;
    let duplicate = handled.appended.is_none();
    if !duplicate {
        wakeup::announce_appended(&state.pool).await;
    }
    tracing::debug!(%org_id, %source, %delivery_id, duplicate, alerts = parsed.alerts.len(), "webhook accepted");
    Ok((StatusCode::ACCEPTED, axum::Json(WebhookAccepted { delivery_id, alerts: parsed.alerts.len(), duplicate, ignored: parsed.ignored })))
}

/// The organisation's webhook endpoint.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct EndpointView {
    /// Whether a token was made; until then no webhook is accepted.
    pub configured: bool,
    /// The URL of each source, with `{token}` where the token goes (it is shown only when made).
    pub urls: BTreeMap<String, String>,
    /// The sources that must present a shared secret.
    pub secrets: Vec<String>,
}

fn urls(state: &AppState, org_id: Uuid, token: &str) -> BTreeMap<String, String> {
    let base = state.config.connections.public_url.trim_end_matches('/');
    AlertSource::ALL.iter().map(|source| (source.as_str().to_owned(), format!("{base}/v1/webhooks/{org_id}/{source}/{token}"))).collect()
}

/// The webhook endpoint: its URLs and which sources need a shared secret (admins).
#[utoipa::path(
    get, path = "/v1/incidents/webhook", tag = "incidents",
    responses((status = 200, body = EndpointView), (status = 401, body = Problem), (status = 403, body = Problem))
)]
pub async fn get_endpoint(State(state): State<AppState>, caller: Caller) -> Result<axum::Json<EndpointView>, ApiError> {
    let org_id = caller.org_id().0;
    let (endpoint, _) = state.commands.load::<WebhookEndpoint>(&endpoint_stream(org_id), caller.org_id()).await?;
    Ok(axum::Json(EndpointView {
        configured: endpoint.token_sha256.is_some(),
        urls: urls(&state, org_id, "{token}"),
        secrets: endpoint.secrets.keys().map(|source| source.as_str().to_owned()).collect(),
    }))
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RotatedToken {
    /// The new token, shown this once; the old one stops working now.
    pub token: String,
    pub urls: BTreeMap<String, String>,
}

/// Makes a new webhook token; the previous one stops working at once (admins).
#[utoipa::path(
    post, path = "/v1/incidents/webhook/token", tag = "incidents",
    responses((status = 201, body = RotatedToken), (status = 401, body = Problem), (status = 403, body = Problem), (status = 503, body = Problem))
)]
pub async fn rotate_token(State(state): State<AppState>, caller: Caller, headers: HeaderMap) -> Result<(StatusCode, axum::Json<RotatedToken>), ApiError> {
    let token = secret::Secret::generate("awh_");
    let meta = command_meta(&state, &caller, &headers, "incidents.webhook.token", &()).await?;
    let command = WebhookCommand::RotateToken { token_sha256: secret::hex_digest(token.expose()) };
    change_endpoint(&state, &caller, command, &meta).await?;
    let urls = urls(&state, caller.org_id().0, token.expose());
    Ok((StatusCode::CREATED, axum::Json(RotatedToken { token: token.into_exposed(), urls })))
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SecretRequest {
    /// The shared secret, 8 to 512 characters: PagerDuty's signing secret, or what Grafana,
    /// Alertmanager or Datadog send as `Authorization: Bearer <secret>`.
    pub secret: String,
}

fn source_of(text: &str) -> Result<AlertSource, ApiError> {
    AlertSource::parse(text).ok_or_else(|| ApiError::NotFound(format!("webhook source `{}`", sources::clip_line(text, 40))))
}

/// Sets a source's shared secret, kept in the secret store (admins).
#[utoipa::path(
    put, path = "/v1/incidents/webhook/secrets/{source}", tag = "incidents", request_body = SecretRequest,
    params(("source" = String, Path)),
    responses(
        (status = 204), (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 404, body = Problem), (status = 503, body = Problem)
    )
)]
pub async fn set_secret(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Path(source): Path<String>,
    Json(request): Json<SecretRequest>,
) -> Result<StatusCode, ApiError> {
    let source = source_of(&source)?;
    let length = request.secret.chars().count();
    if !(8..=512).contains(&length) || request.secret.chars().any(char::is_control) {
        return Err(ApiError::BadRequest { detail: "secret must be 8 to 512 characters without control characters".into(), field: Some("secret".into()) });
    }
    let meta = command_meta(&state, &caller, &headers, "incidents.webhook.secret", &(source, secret::hex_digest(&request.secret))).await?;
    let path = SecretPath::webhook(caller.org_id().0, source.as_str());
    let version = state.secrets.put(&path, &Secret::new().with("secret", request.secret)).await.map_err(secret_store_error)?;
    let command = WebhookCommand::SetSecret { source, secret_ref: state.secrets.reference(&path).0, secret_version: version };
    change_endpoint(&state, &caller, command, &meta).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Removes a source's shared secret: its deliveries need only the token again (admins).
#[utoipa::path(
    delete, path = "/v1/incidents/webhook/secrets/{source}", tag = "incidents",
    params(("source" = String, Path)),
    responses((status = 204), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem), (status = 503, body = Problem))
)]
pub async fn clear_secret(State(state): State<AppState>, caller: Caller, headers: HeaderMap, Path(source): Path<String>) -> Result<StatusCode, ApiError> {
    let source = source_of(&source)?;
    let meta = command_meta(&state, &caller, &headers, "incidents.webhook.secret.clear", &source).await?;
    change_endpoint(&state, &caller, WebhookCommand::ClearSecret { source }, &meta).await?;
    state.secrets.destroy(&SecretPath::webhook(caller.org_id().0, source.as_str())).await.map_err(secret_store_error)?;
    Ok(StatusCode::NO_CONTENT)
}
