//! Local stand-ins for the providers that cannot run on this machine — GitHub and Google's OAuth
//! authorization servers and APIs, Microsoft Entra ID and Azure Resource Manager, Datadog,
//! Grafana, Splunk and PagerDuty — answering in the documented formats of those APIs, so that
//! Aurora's real HTTP clients and parsers run against them. AWS is not here: moto serves it.
//!
//! The OAuth servers speak authorization code with PKCE: `/authorize` redirects back with a code
//! bound to the S256 challenge, `/token` checks the client, the redirect URI and the verifier and
//! issues tokens that expire after [`Providers::set_token_lifetime`] seconds; refresh-token
//! grants issue new access tokens. The APIs accept only live tokens and the keys generated at
//! start (each long and random, so a test can search logs and records for them). Faults are
//! injected per path prefix: a status, or no answer at all.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use serde_json::{json, Value};

fn random(prefix: &str) -> String {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).expect("random bytes");
    format!("{prefix}{}", bytes.iter().map(|byte| format!("{byte:02x}")).collect::<String>())
}

/// What an injected fault does.
#[derive(Debug, Clone, Copy)]
pub enum Fault {
    Status(u16),
    Hang,
}

struct Grant {
    challenge: String,
    redirect_uri: String,
    client_id: String,
    used: bool,
}

#[derive(Default)]
struct World {
    grants: HashMap<String, Grant>,
    access_tokens: HashMap<String, Instant>,
    refresh_tokens: HashSet<String>,
    token_lifetime_secs: i64,
    faults: Vec<(String, Fault)>,
    /// (method, path) of every request, in order.
    requests: Vec<(String, String)>,
}

/// The running stand-ins and the credentials they accept.
#[derive(Clone)]
pub struct Providers {
    pub base_url: String,
    pub github_client_id: String,
    pub github_client_secret: String,
    pub google_client_id: String,
    pub google_client_secret: String,
    pub azure_tenant: String,
    pub azure_client_id: String,
    pub azure_client_secret: String,
    pub datadog_api_key: String,
    pub datadog_application_key: String,
    pub grafana_token: String,
    pub splunk_token: String,
    pub pagerduty_token: String,
    pub azure_subscription: String,
    /// The password in an App Service app's connection string, which a scan must never keep.
    pub azure_database_password: String,
    world: Arc<Mutex<World>>,
}

impl Providers {
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind the providers' stand-in");
        let address: SocketAddr = listener.local_addr().unwrap();
        let providers = Self {
            base_url: format!("http://{address}"),
            github_client_id: random("Iv1."),
            github_client_secret: random("ghcs_"),
            google_client_id: random("gci-"),
            google_client_secret: random("GOCSPX-"),
            azure_tenant: "contoso.onmicrosoft.com".into(),
            azure_client_id: uuid_like(),
            azure_client_secret: random("azs~"),
            datadog_api_key: random("ddapi"),
            datadog_application_key: random("ddapp"),
            grafana_token: random("glsa_"),
            splunk_token: random("splunk-"),
            pagerduty_token: random("u+pd"),
            azure_subscription: uuid_like(),
            azure_database_password: random("sqlpw-"),
            world: Arc::new(Mutex::new(World { token_lifetime_secs: 3600, ..World::default() })),
        };
        let app = Router::new().fallback(handle).with_state(providers.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.ok() });
        providers
    }

    /// Access tokens issued from now on expire after `seconds`.
    pub fn set_token_lifetime(&self, seconds: i64) {
        self.world.lock().unwrap().token_lifetime_secs = seconds;
    }

    /// Requests whose path starts with `prefix` get `fault` until [`Providers::clear_faults`].
    pub fn inject(&self, prefix: &str, fault: Fault) {
        self.world.lock().unwrap().faults.push((prefix.to_owned(), fault));
    }

    pub fn clear_faults(&self) {
        self.world.lock().unwrap().faults.clear();
    }

    /// Every request so far: (method, path).
    pub fn requests(&self) -> Vec<(String, String)> {
        self.world.lock().unwrap().requests.clone()
    }

    /// Refresh-token grants answered so far.
    pub fn refreshes(&self) -> usize {
        self.requests().iter().filter(|(_, path)| path.ends_with("#refresh")).count()
    }

    /// The environment that points Aurora at these stand-ins.
    pub fn aurora_env(&self) -> Vec<(String, String)> {
        let base = &self.base_url;
        vec![
            ("AURORA_GITHUB_CLIENT_ID".into(), self.github_client_id.clone()),
            ("AURORA_GITHUB_CLIENT_SECRET".into(), self.github_client_secret.clone()),
            ("AURORA_GITHUB_AUTHORIZE_URL".into(), format!("{base}/github/login/oauth/authorize")),
            ("AURORA_GITHUB_TOKEN_URL".into(), format!("{base}/github/login/oauth/access_token")),
            ("AURORA_GITHUB_API_URL".into(), format!("{base}/github-api")),
            ("AURORA_GOOGLE_CLIENT_ID".into(), self.google_client_id.clone()),
            ("AURORA_GOOGLE_CLIENT_SECRET".into(), self.google_client_secret.clone()),
            ("AURORA_GOOGLE_AUTHORIZE_URL".into(), format!("{base}/google/o/oauth2/v2/auth")),
            ("AURORA_GOOGLE_TOKEN_URL".into(), format!("{base}/google/token")),
            ("AURORA_GCP_API_URL".into(), format!("{base}/gcp")),
            ("AURORA_AZURE_LOGIN_URL".into(), format!("{base}/azure-login")),
            ("AURORA_AZURE_MANAGEMENT_URL".into(), format!("{base}/azure")),
            ("AURORA_DATADOG_API_URL".into(), format!("{base}/datadog")),
            ("AURORA_PAGERDUTY_API_URL".into(), format!("{base}/pagerduty")),
            ("AURORA_ALLOW_PRIVATE_URLS".into(), "true".into()),
        ]
    }

    /// Every secret value these stand-ins hand out or accept, for leak searches.
    pub fn secrets(&self) -> Vec<String> {
        let world = self.world.lock().unwrap();
        let mut secrets = vec![
            self.github_client_secret.clone(),
            self.google_client_secret.clone(),
            self.azure_client_secret.clone(),
            self.datadog_api_key.clone(),
            self.datadog_application_key.clone(),
            self.grafana_token.clone(),
            self.splunk_token.clone(),
            self.pagerduty_token.clone(),
            self.azure_database_password.clone(),
        ];
        secrets.extend(world.access_tokens.keys().cloned());
        secrets.extend(world.refresh_tokens.iter().cloned());
        secrets
    }
}

fn uuid_like() -> String {
    let hex = random("");
    format!("{}-{}-4{}-a{}-{}", &hex[0..8], &hex[8..12], &hex[13..16], &hex[17..20], &hex[20..32])
}

fn problem(status: StatusCode, body: Value) -> Response {
    (status, axum::Json(body)).into_response()
}

fn bearer(headers: &HeaderMap) -> Option<String> {
    headers.get(header::AUTHORIZATION)?.to_str().ok()?.strip_prefix("Bearer ").map(str::to_owned)
}

fn form(body: &Bytes) -> HashMap<String, String> {
    url_pairs(std::str::from_utf8(body).unwrap_or_default())
}

fn url_pairs(text: &str) -> HashMap<String, String> {
    text.split('&').filter_map(|pair| pair.split_once('=')).map(|(name, value)| (decode(name), decode(value))).collect()
}

fn decode(text: &str) -> String {
    let bytes = text.replace('+', " ").into_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        if bytes[index] == b'%' && index + 2 < bytes.len() {
            if let Ok(byte) = u8::from_str_radix(std::str::from_utf8(&bytes[index + 1..index + 3]).unwrap_or("zz"), 16) {
                out.push(byte);
                index += 3;
                continue;
            }
        }
        out.push(bytes[index]);
        index += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn challenge_of(verifier: &str) -> String {
    use base64::Engine;
    use sha2::Digest;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(verifier.as_bytes()))
}

async fn handle(State(providers): State<Providers>, request: Request) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let query = url_pairs(request.uri().query().unwrap_or_default());
    let headers = request.headers().clone();
    let body = axum::body::to_bytes(request.into_body(), 1 << 20).await.unwrap_or_default();
    let fault = {
        let mut world = providers.world.lock().unwrap();
        let grant_type = form(&body).get("grant_type").cloned().unwrap_or_default();
        let logged = if grant_type == "refresh_token" { format!("{path}#refresh") } else { path.clone() };
        world.requests.push((method.to_string(), logged));
        world.faults.iter().find(|(prefix, _)| path.starts_with(prefix.as_str())).map(|(_, fault)| *fault)
    };
    match fault {
        Some(Fault::Hang) => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            return StatusCode::GATEWAY_TIMEOUT.into_response();
        }
        Some(Fault::Status(status)) => return fault_response(&path, status),
        None => {}
    }
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match (method, segments.as_slice()) {
        (Method::GET, ["github", "login", "oauth", "authorize"]) | (Method::GET, ["google", "o", "oauth2", "v2", "auth"]) => {
            authorize(&providers, &query)
        }
        (Method::POST, ["github", "login", "oauth", "access_token"]) => token(&providers, &form(&body), true),
        (Method::POST, ["google", "token"]) => token(&providers, &form(&body), false),
        (_, ["github-api", rest @ ..]) => github(&providers, &headers, rest, &query),
        (_, ["gcp", rest @ ..]) => gcp(&providers, &headers, rest, &body),
        (Method::POST, ["azure-login", tenant, "oauth2", "v2.0", "token"]) => azure_token(&providers, tenant, &form(&body)),
        (method, ["azure", rest @ ..]) => azure(&providers, &headers, &method, rest),
        (_, ["datadog", rest @ ..]) => datadog(&providers, &headers, rest),
        (Method::GET, ["grafana", rest @ ..]) => grafana(&providers, &headers, rest, &query),
        (_, ["splunk", rest @ ..]) => splunk(&providers, &headers, rest, &form(&body)),
        (Method::GET, ["pagerduty", "abilities"]) => pagerduty(&providers, &headers),
        _ => problem(StatusCode::NOT_FOUND, json!({ "message": "Not Found" })),
    }
}

/// An injected status in the provider's own error format.
fn fault_response(path: &str, status: u16) -> Response {
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = if path.starts_with("/gcp") {
        problem(code, json!({ "error": { "code": status, "message": format!("injected {status}"), "status": "INJECTED" } }))
    } else if path.starts_with("/azure") {
        problem(code, json!({ "error": { "code": "Injected", "message": format!("injected {status}") } }))
    } else if path.starts_with("/datadog") {
        problem(code, json!({ "errors": [format!("injected {status}")] }))
    } else if path.starts_with("/splunk") {
        problem(code, json!({ "messages": [{ "type": "ERROR", "text": format!("injected {status}") }] }))
    } else {
        problem(code, json!({ "message": format!("injected {status}") }))
    };
    if status == 429 {
        response.headers_mut().insert("retry-after", "7".parse().unwrap());
    }
    response
}

fn authorize(providers: &Providers, query: &HashMap<String, String>) -> Response {
    let known_client =
        [&providers.github_client_id, &providers.google_client_id].contains(&query.get("client_id").unwrap_or(&String::new()));
    if !known_client || query.get("code_challenge_method").map(String::as_str) != Some("S256") || !query.contains_key("state") {
        return problem(StatusCode::BAD_REQUEST, json!({ "error": "invalid_request" }));
    }
    let code = random("code-");
    let redirect_uri = query.get("redirect_uri").cloned().unwrap_or_default();
    providers.world.lock().unwrap().grants.insert(
        code.clone(),
        Grant {
            challenge: query["code_challenge"].clone(),
            redirect_uri: redirect_uri.clone(),
            client_id: query["client_id"].clone(),
            used: false,
        },
    );
    let location = format!("{redirect_uri}?code={code}&state={}", query["state"]);
    (StatusCode::FOUND, [(header::LOCATION, location)]).into_response()
}

fn token(providers: &Providers, form: &HashMap<String, String>, github: bool) -> Response {
    let refuse = |error: &str, description: &str| {
        // GitHub answers a refused grant with 200 and an error body; Google with 400.
        let status = if github { StatusCode::OK } else { StatusCode::BAD_REQUEST };
        problem(status, json!({ "error": error, "error_description": description }))
    };
    let (client_id, client_secret) = if github {
        (&providers.github_client_id, &providers.github_client_secret)
    } else {
        (&providers.google_client_id, &providers.google_client_secret)
    };
    if form.get("client_id") != Some(client_id) || form.get("client_secret") != Some(client_secret) {
        return refuse("incorrect_client_credentials", "The client_id and/or client_secret passed are incorrect.");
    }
    let mut world = providers.world.lock().unwrap();
    match form.get("grant_type").map(String::as_str) {
        Some("authorization_code") => {
            let code = form.get("code").cloned().unwrap_or_default();
            let Some(grant) = world.grants.get_mut(&code) else {
                return refuse("bad_verification_code", "The code passed is incorrect or expired.");
            };
            if grant.used || grant.client_id != *client_id || form.get("redirect_uri") != Some(&grant.redirect_uri) {
                return refuse("bad_verification_code", "The code passed is incorrect or expired.");
            }
            if challenge_of(form.get("code_verifier").map(String::as_str).unwrap_or_default()) != grant.challenge {
                return refuse("invalid_grant", "The code_verifier does not match the code_challenge.");
            }
            grant.used = true;
        }
        Some("refresh_token") => {
            if !world.refresh_tokens.contains(form.get("refresh_token").map(String::as_str).unwrap_or_default()) {
                return refuse("invalid_grant", "The refresh token is invalid or revoked.");
            }
        }
        _ => return refuse("unsupported_grant_type", "unsupported grant type"),
    }
    let access_token = random(if github { "ghu_" } else { "ya29." });
    let refresh_token = random(if github { "ghr_" } else { "1//" });
    let lifetime = world.token_lifetime_secs;
    world.access_tokens.insert(access_token.clone(), Instant::now() + Duration::from_secs(lifetime.max(0) as u64));
    world.refresh_tokens.insert(refresh_token.clone());
    let scope = if github {
        "repo,read:org,read:user"
    } else {
        "https://www.googleapis.com/auth/cloud-platform openid https://www.googleapis.com/auth/userinfo.email"
    };
    problem(
        StatusCode::OK,
        json!({ "access_token": access_token, "refresh_token": refresh_token, "expires_in": lifetime, "scope": scope, "token_type": "bearer" }),
    )
}

fn live_token(providers: &Providers, headers: &HeaderMap) -> bool {
    let world = providers.world.lock().unwrap();
    bearer(headers).and_then(|token| world.access_tokens.get(&token).copied()).is_some_and(|expires| expires > Instant::now())
}

fn github(providers: &Providers, headers: &HeaderMap, rest: &[&str], query: &HashMap<String, String>) -> Response {
    if !live_token(providers, headers) {
        return problem(
            StatusCode::UNAUTHORIZED,
            json!({ "message": "Bad credentials", "documentation_url": "https://docs.github.com/rest", "status": "401" }),
        );
    }
    let sha = "5f3c2a1b9d8e7f6a5b4c3d2e1f0a9b8c7d6e5f4a";
    match rest {
        ["user"] => problem(StatusCode::OK, json!({ "login": "octo-sre", "id": 583231, "type": "User" })),
        ["user", "repos"] => problem(
            StatusCode::OK,
            json!([
                { "id": 1, "full_name": "acme/checkout", "private": true, "description": "Checkout service", "default_branch": "main" },
                { "id": 2, "full_name": "acme/payments", "private": true, "description": null, "default_branch": "main" },
            ]),
        ),
        ["repos", _owner, _name, "commits"] => {
            let limit: usize = query.get("per_page").and_then(|limit| limit.parse().ok()).unwrap_or(30);
            let commits: Vec<Value> = (0..3)
                .map(|index| json!({
                    "sha": format!("{index}{}", &sha[1..]), "html_url": "https://github.com/acme/checkout/commit/x",
                    "commit": { "author": { "name": "Ana", "email": "ana@example.com", "date": "2026-12-01T09:00:00Z" }, "message": format!("Raise the pool size ({index})") },
                }))
                .take(limit)
                .collect();
            problem(StatusCode::OK, Value::Array(commits))
        }
        ["repos", _owner, _name, "deployments"] => problem(
            StatusCode::OK,
            json!([{ "id": 42, "sha": sha, "ref": "main", "environment": "production", "creator": { "login": "deploy-bot" }, "created_at": "2026-12-01T09:05:00Z", "description": "Deploy checkout" }]),
        ),
        ["repos", _owner, _name, "commits", commit] => problem(
            StatusCode::OK,
            json!({
                "sha": commit, "commit": { "author": { "name": "Ana", "date": "2026-12-01T09:00:00Z" }, "message": "Raise the pool size" },
                "stats": { "additions": 1, "deletions": 1, "total": 2 },
                "files": [{ "filename": "config/db.yaml", "status": "modified", "additions": 1, "deletions": 1, "patch": "@@ -1 +1 @@\n-pool: 10\n+pool: 100" }],
            }),
        ),
        ["search", "code"] => problem(
            StatusCode::OK,
            json!({ "total_count": 1, "incomplete_results": false, "items": [{ "name": "db.yaml", "path": "config/db.yaml", "html_url": "https://github.com/acme/checkout/blob/main/config/db.yaml", "repository": { "full_name": "acme/checkout" } }] }),
        ),
        _ => problem(StatusCode::NOT_FOUND, json!({ "message": "Not Found", "documentation_url": "https://docs.github.com/rest" })),
    }
}

fn gcp(providers: &Providers, headers: &HeaderMap, rest: &[&str], body: &Bytes) -> Response {
    if !live_token(providers, headers) {
        return problem(
            StatusCode::UNAUTHORIZED,
            json!({ "error": { "code": 401, "message": "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid authentication credential.", "status": "UNAUTHENTICATED" } }),
        );
    }
    match rest {
        ["openidconnect", "v1", "userinfo"] => {
            problem(StatusCode::OK, json!({ "sub": "1098", "email": "sre@acme.example", "email_verified": true }))
        }
        ["cloudresourcemanager", "v1", "projects"] => problem(
            StatusCode::OK,
            json!({ "projects": [
                { "projectNumber": "415104041262", "projectId": "acme-prod", "lifecycleState": "ACTIVE", "name": "Acme Production" },
                { "projectNumber": "415104041263", "projectId": "acme-staging", "lifecycleState": "ACTIVE", "name": "Acme Staging" },
            ] }),
        ),
        ["container", "v1", "projects", project, "locations", _, "clusters"] => problem(
            StatusCode::OK,
            json!({ "clusters": [{ "name": format!("{project}-gke"), "location": "europe-west1", "status": "RUNNING", "currentMasterVersion": "1.30.5-gke.1014001", "currentNodeCount": 6, "endpoint": "34.76.10.2", "network": "prod-vpc", "subnetwork": "prod-europe-west1", "resourceLabels": { "team": "platform" }, "nodePools": [{ "name": "default-pool" }] }] }),
        ),
        // Compute Engine and Cloud SQL: an estate in acme-prod; acme-staging never enabled them.
        [service @ ("compute" | "sqladmin"), path @ ..] if path.contains(&"acme-staging") => {
            let (api, host) = if *service == "compute" { ("Compute Engine API", "compute") } else { ("Cloud SQL Admin API", "sqladmin") };
            let message = format!("{api} has not been used in project 415104041263 before or it is disabled. Enable it by visiting https://console.developers.google.com/apis/api/{host}.googleapis.com/overview?project=415104041263 then retry. If you enabled this API recently, wait a few minutes for the action to propagate to our systems and retry.");
            problem(
                StatusCode::FORBIDDEN,
                json!({ "error": { "code": 403, "message": message, "errors": [{ "message": message, "domain": "usageLimits", "reason": "accessNotConfigured" }], "status": "PERMISSION_DENIED" } }),
            )
        }
        ["compute", "compute", "v1", "projects", "acme-prod", "global", "networks"] => problem(
            StatusCode::OK,
            json!({ "kind": "compute#networkList", "id": "projects/acme-prod/global/networks", "selfLink": "https://www.googleapis.com/compute/v1/projects/acme-prod/global/networks", "items": [
                { "kind": "compute#network", "id": "6021414431532128337", "creationTimestamp": "2026-03-02T01:12:07.441-08:00", "name": "prod-vpc", "selfLink": "https://www.googleapis.com/compute/v1/projects/acme-prod/global/networks/prod-vpc", "autoCreateSubnetworks": false, "subnetworks": ["https://www.googleapis.com/compute/v1/projects/acme-prod/regions/europe-west1/subnetworks/prod-europe-west1"], "routingConfig": { "routingMode": "REGIONAL" } },
            ] }),
        ),
        ["compute", "compute", "v1", "projects", "acme-prod", "global", "firewalls"] => problem(
            StatusCode::OK,
            json!({ "kind": "compute#firewallList", "items": [
                { "kind": "compute#firewall", "id": "1874420981117245001", "name": "allow-web-to-worker", "network": "https://www.googleapis.com/compute/v1/projects/acme-prod/global/networks/prod-vpc", "priority": 1000, "sourceTags": ["web"], "targetTags": ["worker"], "allowed": [{ "IPProtocol": "tcp", "ports": ["8080"] }], "direction": "INGRESS", "disabled": false, "selfLink": "https://www.googleapis.com/compute/v1/projects/acme-prod/global/firewalls/allow-web-to-worker" },
                { "kind": "compute#firewall", "id": "1874420981117245002", "name": "allow-iap-ssh", "network": "https://www.googleapis.com/compute/v1/projects/acme-prod/global/networks/prod-vpc", "priority": 1000, "sourceRanges": ["35.235.240.0/20"], "allowed": [{ "IPProtocol": "tcp", "ports": ["22"] }], "direction": "INGRESS", "disabled": false, "selfLink": "https://www.googleapis.com/compute/v1/projects/acme-prod/global/firewalls/allow-iap-ssh" },
                { "kind": "compute#firewall", "id": "1874420981117245003", "name": "old-allow-all", "network": "https://www.googleapis.com/compute/v1/projects/acme-prod/global/networks/prod-vpc", "priority": 900, "sourceTags": ["worker"], "allowed": [{ "IPProtocol": "all" }], "direction": "INGRESS", "disabled": true, "selfLink": "https://www.googleapis.com/compute/v1/projects/acme-prod/global/firewalls/old-allow-all" },
            ] }),
        ),
        ["compute", "compute", "v1", "projects", "acme-prod", "aggregated", "instances"] => {
            let instance = |name: &str, zone: &str, tag: &str, ip: &str, nat: Option<&str>, metadata: Value| {
                json!({
                    "kind": "compute#instance", "id": format!("{}", 4_000_000_000u64 + name.len() as u64), "creationTimestamp": "2026-03-02T01:20:07.441-08:00",
                    "name": name, "tags": { "items": [tag], "fingerprint": "42WmSpB8rSM=" },
                    "machineType": format!("https://www.googleapis.com/compute/v1/projects/acme-prod/zones/{zone}/machineTypes/e2-standard-4"),
                    "status": "RUNNING", "zone": format!("https://www.googleapis.com/compute/v1/projects/acme-prod/zones/{zone}"),
                    "networkInterfaces": [{
                        "kind": "compute#networkInterface", "network": "https://www.googleapis.com/compute/v1/projects/acme-prod/global/networks/prod-vpc",
                        "subnetwork": "https://www.googleapis.com/compute/v1/projects/acme-prod/regions/europe-west1/subnetworks/prod-europe-west1",
                        "networkIP": ip, "name": "nic0",
                        "accessConfigs": nat.map(|nat| vec![json!({ "kind": "compute#accessConfig", "type": "ONE_TO_ONE_NAT", "name": "External NAT", "natIP": nat, "networkTier": "PREMIUM" })]).unwrap_or_default(),
                    }],
                    "metadata": { "kind": "compute#metadata", "fingerprint": "WaCMmXhB8uk=", "items": metadata },
                    "labels": { "service": name.trim_end_matches("-1") },
                    "selfLink": format!("https://www.googleapis.com/compute/v1/projects/acme-prod/zones/{zone}/instances/{name}"),
                })
            };
            problem(
                StatusCode::OK,
                json!({ "kind": "compute#instanceAggregatedList", "id": "projects/acme-prod/aggregated/instances", "items": {
                    "zones/europe-west1-b": { "instances": [
                        instance("checkout-web-1", "europe-west1-b", "web", "10.132.0.2", Some("34.140.1.2"), json!([{ "key": "startup-script", "value": "#!/bin/sh\nexport ORDERS_DB=10.10.0.3\nexec /srv/checkout" }])),
                        instance("orders-worker-1", "europe-west1-b", "worker", "10.132.0.3", None, json!([{ "key": "cloudsql-instance", "value": "acme-prod:europe-west1:orders-sql" }])),
                    ] },
                    "zones/us-central1-a": { "warning": { "code": "NO_RESULTS_ON_PAGE", "message": "There are no results for scope 'zones/us-central1-a' on this page.", "data": [{ "key": "scope", "value": "zones/us-central1-a" }] } },
                }, "selfLink": "https://www.googleapis.com/compute/v1/projects/acme-prod/aggregated/instances" }),
            )
        }
        ["sqladmin", "v1", "projects", "acme-prod", "instances"] => problem(
            StatusCode::OK,
            json!({ "items": [{
                "kind": "sql#instance", "state": "RUNNABLE", "databaseVersion": "POSTGRES_16", "project": "acme-prod", "name": "orders-sql", "region": "europe-west1", "gceZone": "europe-west1-c",
                "connectionName": "acme-prod:europe-west1:orders-sql", "instanceType": "CLOUD_SQL_INSTANCE", "backendType": "SECOND_GEN",
                "ipAddresses": [{ "type": "PRIVATE", "ipAddress": "10.10.0.3" }],
                "settings": { "kind": "sql#settings", "tier": "db-custom-2-7680", "userLabels": { "service": "orders" },
                    "ipConfiguration": { "ipv4Enabled": false, "privateNetwork": "projects/acme-prod/global/networks/prod-vpc" } },
                "selfLink": "https://sqladmin.googleapis.com/v1/projects/acme-prod/instances/orders-sql",
            }] }),
        ),
        ["logging", "v2", "entries:list"] => {
            let request: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
            if request["resourceNames"].as_array().is_none_or(|names| names.is_empty()) {
                return problem(
                    StatusCode::BAD_REQUEST,
                    json!({ "error": { "code": 400, "message": "resourceNames is required", "status": "INVALID_ARGUMENT" } }),
                );
            }
            problem(
                StatusCode::OK,
                json!({ "entries": [{ "logName": "projects/acme-prod/logs/stderr", "timestamp": "2026-12-01T09:10:00Z", "severity": "ERROR", "resource": { "type": "k8s_container" }, "textPayload": "connection pool exhausted" }] }),
            )
        }
        _ => problem(
            StatusCode::NOT_FOUND,
            json!({ "error": { "code": 404, "message": "Requested entity was not found.", "status": "NOT_FOUND" } }),
        ),
    }
}

fn azure_token(providers: &Providers, tenant: &str, form: &HashMap<String, String>) -> Response {
    if tenant != providers.azure_tenant {
        return problem(
            StatusCode::BAD_REQUEST,
            json!({ "error": "invalid_request", "error_description": format!("AADSTS90002: Tenant '{tenant}' not found.") }),
        );
    }
    if form.get("client_id") != Some(&providers.azure_client_id) || form.get("client_secret") != Some(&providers.azure_client_secret) {
        return problem(
            StatusCode::UNAUTHORIZED,
            json!({ "error": "invalid_client", "error_description": "AADSTS7000215: Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID.", "error_codes": [7000215] }),
        );
    }
    let token = random("eyJ0eXAi.");
    let mut world = providers.world.lock().unwrap();
    world.access_tokens.insert(token.clone(), Instant::now() + Duration::from_secs(3599));
    problem(StatusCode::OK, json!({ "token_type": "Bearer", "expires_in": 3599, "ext_expires_in": 3599, "access_token": token }))
}

fn azure(providers: &Providers, headers: &HeaderMap, method: &Method, rest: &[&str]) -> Response {
    if !live_token(providers, headers) {
        return problem(
            StatusCode::UNAUTHORIZED,
            json!({ "error": { "code": "InvalidAuthenticationToken", "message": "The access token is invalid." } }),
        );
    }
    let subscription = &providers.azure_subscription;
    match rest {
        ["subscriptions"] => problem(
            StatusCode::OK,
            json!({ "value": [{ "id": format!("/subscriptions/{subscription}"), "subscriptionId": subscription, "displayName": "Acme Production", "state": "Enabled" }] }),
        ),
        ["subscriptions", id, "providers", "Microsoft.Compute", "virtualMachines"] if id == subscription => problem(
            StatusCode::OK,
            json!({ "value": [{ "name": "checkout-vm-1", "id": format!("/subscriptions/{id}/resourceGroups/prod/providers/Microsoft.Compute/virtualMachines/checkout-vm-1"), "location": "westeurope", "tags": { "service": "checkout" },
                "properties": { "hardwareProfile": { "vmSize": "Standard_D4s_v5" }, "storageProfile": { "osDisk": { "osType": "Linux" } }, "provisioningState": "Succeeded" } }] }),
        ),
        ["subscriptions", id, "providers", "Microsoft.Sql", "servers"] if id == subscription => problem(
            StatusCode::OK,
            json!({ "value": [{ "id": format!("/subscriptions/{id}/resourceGroups/prod/providers/Microsoft.Sql/servers/orders-sqlsrv"), "name": "orders-sqlsrv", "type": "Microsoft.Sql/servers", "location": "westeurope", "kind": "v12.0",
                "properties": { "administratorLogin": "orders_admin", "version": "12.0", "state": "Ready", "fullyQualifiedDomainName": "orders-sqlsrv.database.windows.net", "publicNetworkAccess": "Disabled" } }] }),
        ),
        ["subscriptions", id, "resourceGroups", "prod", "providers", "Microsoft.Sql", "servers", "orders-sqlsrv", "databases"]
            if id == subscription =>
        {
            let database = |name: &str| {
                json!({ "id": format!("/subscriptions/{id}/resourceGroups/prod/providers/Microsoft.Sql/servers/orders-sqlsrv/databases/{name}"), "name": name, "type": "Microsoft.Sql/servers/databases", "location": "westeurope",
                    "sku": { "name": "GP_S_Gen5", "tier": "GeneralPurpose", "family": "Gen5", "capacity": 2 }, "kind": "v12.0,user,vcore,serverless",
                    "properties": { "collation": "SQL_Latin1_General_CP1_CI_AS", "status": "Online", "databaseId": "4a9a2c54-1c3e-4c6b-9b2e-6f3c0b9b1a2d" } })
            };
            problem(StatusCode::OK, json!({ "value": [database("master"), database("orders")] }))
        }
        ["subscriptions", id, "providers", "Microsoft.Web", "sites"] if id == subscription => {
            let site = |name: &str, kind: &str| {
                json!({ "id": format!("/subscriptions/{id}/resourceGroups/prod/providers/Microsoft.Web/sites/{name}"), "name": name, "type": "Microsoft.Web/sites", "kind": kind, "location": "West Europe", "tags": { "service": name },
                    "properties": { "state": "Running", "hostNames": [format!("{name}.azurewebsites.net")], "enabledHostNames": [format!("{name}.azurewebsites.net"), format!("{name}.scm.azurewebsites.net")],
                        "defaultHostName": format!("{name}.azurewebsites.net"), "httpsOnly": true, "serverFarmId": format!("/subscriptions/{id}/resourceGroups/prod/providers/Microsoft.Web/serverfarms/prod-plan") } })
            };
            problem(StatusCode::OK, json!({ "value": [site("checkout-web", "app,linux"), site("orders-fn", "functionapp,linux")] }))
        }
        ["subscriptions", id, "resourceGroups", "prod", "providers", "Microsoft.Web", "sites", site, "config", list, "list"]
            if id == subscription && *method == Method::POST =>
        {
            let properties = match (*site, *list) {
                ("checkout-web", "appsettings") => {
                    json!({ "WEBSITE_RUN_FROM_PACKAGE": "1", "ORDERS_API": "https://orders-fn.azurewebsites.net/api/orders" })
                }
                ("checkout-web", "connectionstrings") => {
                    json!({ "OrdersDb": { "value": format!("Server=tcp:orders-sqlsrv.database.windows.net,1433;Initial Catalog=orders;User ID=checkout;Password={};Encrypt=True", providers.azure_database_password), "type": "SQLAzure" } })
                }
                ("orders-fn", "appsettings") => json!({ "FUNCTIONS_WORKER_RUNTIME": "python", "FUNCTIONS_EXTENSION_VERSION": "~4" }),
                _ => json!({}),
            };
            problem(
                StatusCode::OK,
                json!({ "id": format!("/subscriptions/{id}/resourceGroups/prod/providers/Microsoft.Web/sites/{site}/config/{list}"), "name": list, "type": "Microsoft.Web/sites/config", "location": "West Europe", "properties": properties }),
            )
        }
        ["subscriptions", id, "providers", "Microsoft.ContainerService", "managedClusters"] if id == subscription => problem(
            StatusCode::OK,
            json!({ "value": [{ "name": "prod-aks", "id": format!("/subscriptions/{id}/resourceGroups/prod/providers/Microsoft.ContainerService/managedClusters/prod-aks"), "location": "westeurope",
                "properties": { "kubernetesVersion": "1.30.4", "provisioningState": "Succeeded", "powerState": { "code": "Running" }, "fqdn": "prod-aks.hcp.westeurope.azmk8s.io", "agentPoolProfiles": [{ "name": "system", "count": 3, "vmSize": "Standard_D4s_v5" }] } }] }),
        ),
        _ => problem(
            StatusCode::NOT_FOUND,
            json!({ "error": { "code": "SubscriptionNotFound", "message": "The subscription could not be found." } }),
        ),
    }
}

fn datadog(providers: &Providers, headers: &HeaderMap, rest: &[&str]) -> Response {
    let api_key = headers.get("dd-api-key").and_then(|value| value.to_str().ok());
    let application_key = headers.get("dd-application-key").and_then(|value| value.to_str().ok());
    if api_key != Some(providers.datadog_api_key.as_str()) {
        return problem(StatusCode::FORBIDDEN, json!({ "errors": ["Forbidden"] }));
    }
    match rest {
        ["api", "v1", "validate"] => problem(StatusCode::OK, json!({ "valid": true })),
        ["api", "v2", "logs", "events", "search"] => {
            if application_key != Some(providers.datadog_application_key.as_str()) {
                return problem(StatusCode::FORBIDDEN, json!({ "errors": ["Forbidden"] }));
            }
            problem(
                StatusCode::OK,
                json!({ "data": [{ "id": "AQAAAY", "type": "log", "attributes": { "timestamp": "2026-12-01T09:10:00Z", "status": "error", "service": "checkout", "host": "i-0abc", "message": "upstream timed out", "tags": ["env:prod"] } }], "meta": { "status": "done" } }),
            )
        }
        _ => problem(StatusCode::NOT_FOUND, json!({ "errors": ["Not found"] })),
    }
}

fn grafana(providers: &Providers, headers: &HeaderMap, rest: &[&str], query: &HashMap<String, String>) -> Response {
    if bearer(headers).as_deref() != Some(providers.grafana_token.as_str()) {
        return problem(StatusCode::UNAUTHORIZED, json!({ "message": "invalid API key", "traceID": "" }));
    }
    match rest {
        ["api", "org"] => problem(StatusCode::OK, json!({ "id": 1, "name": "Acme" })),
        ["api", "datasources"] => problem(
            StatusCode::OK,
            json!([{ "id": 1, "uid": "loki-prod", "name": "Loki", "type": "loki", "isDefault": true }, { "id": 2, "uid": "prom-prod", "name": "Prometheus", "type": "prometheus", "isDefault": false }]),
        ),
        ["api", "datasources", "uid", "loki-prod"] => {
            problem(StatusCode::OK, json!({ "uid": "loki-prod", "name": "Loki", "type": "loki" }))
        }
        ["api", "datasources", "uid", "prom-prod"] => {
            problem(StatusCode::OK, json!({ "uid": "prom-prod", "name": "Prometheus", "type": "prometheus" }))
        }
        ["api", "datasources", "proxy", "uid", "loki-prod", "loki", "api", "v1", "query_range"] => problem(
            StatusCode::OK,
            json!({ "status": "success", "data": { "resultType": "streams", "result": [{ "stream": { "app": "checkout" }, "values": [["1764580200000000000", format!("level=error msg=\"pool exhausted\" query={}", query.get("query").cloned().unwrap_or_default())]] }] } }),
        ),
        ["api", "datasources", "proxy", "uid", "prom-prod", "api", "v1", "query_range"] => problem(
            StatusCode::OK,
            json!({ "status": "success", "data": { "resultType": "matrix", "result": [{ "metric": { "job": "checkout" }, "values": [[1764580200, "0.97"]] }] } }),
        ),
        _ => problem(StatusCode::NOT_FOUND, json!({ "message": "Data source not found" })),
    }
}

fn splunk(providers: &Providers, headers: &HeaderMap, rest: &[&str], form: &HashMap<String, String>) -> Response {
    if bearer(headers).as_deref() != Some(providers.splunk_token.as_str()) {
        return problem(StatusCode::UNAUTHORIZED, json!({ "messages": [{ "type": "WARN", "text": "call not properly authenticated" }] }));
    }
    match rest {
        ["services", "authentication", "current-context"] => {
            problem(StatusCode::OK, json!({ "entry": [{ "name": "context", "content": { "username": "aurora-svc", "roles": ["user"] } }] }))
        }
        ["services", "search", "jobs", "export"] => {
            let search = form.get("search").cloned().unwrap_or_default();
            let lines = [
                json!({ "preview": false, "offset": 0, "result": { "_time": "2026-12-01T09:10:00.000+00:00", "host": "web-1", "source": "/var/log/nginx/access.log", "sourcetype": "access_combined", "_raw": format!("GET /checkout 500 ({search})") } }),
                json!({ "preview": false, "offset": 1, "lastrow": true, "result": { "_time": "2026-12-01T09:09:58.000+00:00", "host": "web-2", "source": "/var/log/nginx/access.log", "sourcetype": "access_combined", "_raw": "GET /checkout 500" } }),
            ];
            let body = lines.iter().map(Value::to_string).collect::<Vec<_>>().join("\n");
            (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], body).into_response()
        }
        _ => problem(StatusCode::NOT_FOUND, json!({ "messages": [{ "type": "ERROR", "text": "Not Found" }] })),
    }
}

fn pagerduty(providers: &Providers, headers: &HeaderMap) -> Response {
    let expected = format!("Token token={}", providers.pagerduty_token);
    if headers.get(header::AUTHORIZATION).and_then(|value| value.to_str().ok()) != Some(expected.as_str()) {
        return problem(StatusCode::UNAUTHORIZED, json!({ "error": { "message": "Authentication failed", "code": 2006 } }));
    }
    problem(StatusCode::OK, json!({ "abilities": ["teams", "read_only_users", "urgencies"] }))
}
