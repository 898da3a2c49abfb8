//! OAuth and key connections of the providers that cannot run here, against local stand-ins that
//! answer in their documented formats (`aurora_testkit::providers`): GitHub and Google with
//! authorization code and PKCE, a single-use state, a failed exchange, tokens refreshed before
//! they expire by a durable timer; Azure, Datadog, Grafana, Splunk and PagerDuty checked before
//! they are kept; each provider's tools used by the agent; the provider's refusals turned into
//! messages a person can act on. The main flow runs the real binary with debug logging and then
//! searches the event store, every Postgres table, every Kafka record and the log for every
//! secret it handled.

use std::time::Duration;

use aurora_testkit::providers::{Fault, Providers};
use aurora_testkit::scripted_llm::{ScriptedLlm, Step};
use aurora_tests::chat::ChatSocket;
use aurora_tests::kafka::read_all;
use aurora_tests::servers::ScratchVault;
use aurora_tests::{eventually, free_port, http, problem, spawn_aurora_logged, terminate, App, Caller, Roles, TestEnv};
use reqwest::StatusCode;
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(60);
const LLM_KEY: &str = "sk-provider-test-never-print";

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).no_proxy().timeout(Duration::from_secs(30)).build().unwrap()
}

/// Starts an OAuth connection and plays the browser: the provider approves and redirects to
/// Aurora's callback, whose URL is returned (not yet followed).
async fn authorize(base: &str, admin: &Caller, provider: &str) -> (Value, String) {
    let started = admin.apply(http().post(format!("{base}/v1/connections/oauth/{provider}"))).json(&json!({})).send().await.unwrap();
    assert_eq!(started.status(), StatusCode::CREATED, "{}", started.text().await.unwrap());
    let started: Value = started.json().await.unwrap();
    let approved = no_redirects().get(started["authorization_url"].as_str().unwrap()).send().await.unwrap();
    assert_eq!(approved.status(), StatusCode::FOUND, "the provider approves");
    let callback = approved.headers()["location"].to_str().unwrap().to_owned();
    assert!(callback.starts_with(&format!("{base}/v1/connections/oauth/callback?")), "{callback}");
    (started, callback)
}

async fn event_types_of(env: &TestEnv, stream: &str) -> Vec<String> {
    sqlx::query_scalar("SELECT event_type FROM events WHERE stream = $1 ORDER BY stream_version")
        .bind(stream)
        .fetch_all(&env.pool)
        .await
        .unwrap()
}

/// Asks the agent `question`, scripted to call `tool` with `arguments`; returns the tool's outcome frame.
async fn use_tool(socket: &mut ChatSocket, llm: &ScriptedLlm, question: &str, tool: &str, arguments: Value) -> Value {
    llm.script(question, vec![Step::tool(&format!("call_{tool}"), tool, arguments), Step::text("Done.")]);
    socket.request(json!({ "type": "query", "text": question, "mode": "ask" })).await;
    let outcome = socket
        .until(&format!("the outcome of {tool}"), |frame| {
            matches!(frame["type"].as_str(), Some("tool_call.completed" | "tool_call.failed"))
                && frame["payload"]["tool_call_id"] == format!("call_{tool}")
        })
        .await;
    socket.event("chat.assistant_message_completed").await;
    outcome
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oauth_and_key_connections_work_end_to_end_and_no_secret_leaks() {
    let env = TestEnv::new().await;
    let vault = ScratchVault::start();
    let providers = Providers::start().await;
    let llm = ScriptedLlm::start().await;
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let mut extra: Vec<(String, String)> = providers.aurora_env();
    extra.extend(vault.aurora_env());
    extra.extend([
        ("AURORA_HTTP_ADDR".into(), format!("127.0.0.1:{port}")),
        ("AURORA_PUBLIC_URL".into(), base.clone()),
        ("AURORA_LOG".into(), "debug,hyper=info,h2=info".into()),
        ("AURORA_LLM_BASE_URL".into(), llm.base_url.clone()),
        ("AURORA_LLM_MODEL".into(), "scripted-model".into()),
        ("AURORA_LLM_API_KEY".into(), LLM_KEY.into()),
        ("AURORA_OAUTH_REFRESH_MARGIN_SECS".into(), "300".into()),
        ("AURORA_PROVIDER_TIMEOUT_SECS".into(), "2".into()),
    ]);
    let extra_refs: Vec<(&str, &str)> = extra.iter().map(|(name, value)| (name.as_str(), value.as_str())).collect();
    let (aurora, log_path) = spawn_aurora_logged(&env, &["up"], &extra_refs);
    eventually("the gateway to answer", WAIT, || async {
        http().get(format!("{base}/healthz")).send().await.ok().filter(|response| response.status().is_success())
    })
    .await;
    let mut error_bodies: Vec<String> = Vec::new();
    let ana = Caller::register(&base, "ana").await;
    let vic = Caller::join(&base, &ana, "vic", "viewer").await;
    let eve = Caller::register(&base, "eve").await;
    let url = |path: &str| format!("{base}{path}");

    // --- GitHub over OAuth with PKCE; its first access token expires in 305 s, 300 s of margin.
    providers.set_token_lifetime(305);
    problem(vic.apply(http().post(url("/v1/connections/oauth/github"))).json(&json!({})).send().await.unwrap(), StatusCode::FORBIDDEN)
        .await;
    problem(ana.apply(http().post(url("/v1/connections/oauth/gitlab"))).json(&json!({})).send().await.unwrap(), StatusCode::NOT_FOUND)
        .await;
    problem(ana.apply(http().post(url("/v1/connections/oauth/aws"))).json(&json!({})).send().await.unwrap(), StatusCode::BAD_REQUEST).await;
    let (started, callback) = authorize(&base, &ana, "github").await;
    let authorization_url = started["authorization_url"].as_str().unwrap();
    assert!(
        authorization_url.contains("code_challenge_method=S256") && authorization_url.contains("code_challenge="),
        "{authorization_url}"
    );
    assert!(!authorization_url.contains("code_verifier"), "the verifier never leaves Aurora");
    let connected = http().get(&callback).send().await.unwrap();
    assert_eq!(connected.status(), StatusCode::CREATED, "{}", connected.text().await.unwrap());
    let connected: Value = connected.json().await.unwrap();
    assert_eq!(connected["account"], "octo-sre");
    let github_id = connected["connection_id"].as_str().unwrap().to_owned();
    providers.set_token_lifetime(3600);

    // The same callback again (a replayed state) and a forged state are refused.
    let replayed = http().get(&callback).send().await.unwrap();
    error_bodies.push(problem(replayed, StatusCode::BAD_REQUEST).await.to_string());
    let forged = http().get(url("/v1/connections/oauth/callback?state=forged-state-value&code=abc")).send().await.unwrap();
    error_bodies.push(problem(forged, StatusCode::BAD_REQUEST).await.to_string());

    // The token is refreshed before it expires, by the durable timer: a new secret version.
    let stream = format!("connection-{github_id}");
    eventually("the access token's refresh", WAIT, || async {
        event_types_of(&env, &stream).await.contains(&"connection.refreshed".to_owned()).then_some(())
    })
    .await;
    assert!(providers.refreshes() >= 1);
    let version = vault
        .bao(&["kv", "metadata", "get", "-mount=kv", "-format=json", &format!("aurora/orgs/{}/connections/{github_id}", ana.org)])
        .output()
        .unwrap();
    let version: Value = serde_json::from_slice(&version.stdout).unwrap();
    assert!(version["data"]["current_version"].as_u64().unwrap() >= 2, "{version}");
    let github = eventually("GitHub's repositories listed", WAIT, || async {
        let one: Value = ana.apply(http().get(url(&format!("/v1/connections/{github_id}")))).send().await.unwrap().json().await.unwrap();
        one["inventory"].as_array().is_some_and(|items| !items.is_empty()).then_some(one)
    })
    .await;
    assert!(github["inventory"].to_string().contains("acme/checkout"), "{github}");
    assert!(github["expires_at"].is_string() && github["status"] == "connected", "{github}");

    // A failed exchange is recorded as connection.failed, and the provider being down says so.
    let (failed_start, failed_callback) = authorize(&base, &ana, "github").await;
    providers.inject("/github/login/oauth/access_token", Fault::Status(500));
    let unavailable = http().get(&failed_callback).send().await.unwrap();
    error_bodies.push(problem(unavailable, StatusCode::SERVICE_UNAVAILABLE).await.to_string());
    providers.clear_faults();
    let failed_stream = format!("connection-{}", failed_start["connection_id"].as_str().unwrap());
    assert_eq!(event_types_of(&env, &failed_stream).await, vec!["connection.failed"]);
    let (_, bad_code_callback) = authorize(&base, &ana, "github").await;
    let bad_code = bad_code_callback.replace("code=code-", "code=bogus-");
    let refused = http().get(&bad_code).send().await.unwrap();
    let body = problem(refused, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert!(body["detail"].as_str().unwrap().contains("incorrect or expired"), "{body}");
    error_bodies.push(body.to_string());

    // --- Google Cloud: offline access, the cloud-platform scope, projects listed.
    let (google_start, google_callback) = authorize(&base, &ana, "gcp").await;
    let google_url = google_start["authorization_url"].as_str().unwrap();
    assert!(
        google_url.contains("access_type=offline") && google_url.contains("cloud-platform") && google_url.contains("userinfo.email"),
        "{google_url}"
    );
    let google: Value = http().get(&google_callback).send().await.unwrap().json().await.unwrap();
    assert_eq!(google["account"], "sre@acme.example", "{google}");

    // --- Key connections: a wrong key is refused and kept nowhere; the right one is kept.
    let connect = |body: Value| ana.apply(http().post(url("/v1/connections"))).json(&body).send();
    let wrong_cases = [
        json!({ "provider": "datadog", "credentials": { "api_key": "wrong-datadog-key", "application_key": providers.datadog_application_key, "site": "datadoghq.eu" } }),
        json!({ "provider": "azure", "credentials": { "tenant_id": providers.azure_tenant, "client_id": providers.azure_client_id, "client_secret": "wrong-azure-secret" } }),
        json!({ "provider": "grafana", "credentials": { "url": format!("{}/grafana", providers.base_url), "token": "glsa_wrong" } }),
        json!({ "provider": "splunk", "credentials": { "url": format!("{}/splunk", providers.base_url), "token": "wrong-splunk" } }),
        json!({ "provider": "pagerduty", "credentials": { "api_token": "wrong-pagerduty" } }),
    ];
    for body in wrong_cases {
        let refused = connect(body.clone()).await.unwrap();
        let problem_body = problem(refused, StatusCode::UNPROCESSABLE_ENTITY).await;
        assert!(problem_body["detail"].as_str().unwrap().contains("nothing was kept"), "{problem_body}");
        error_bodies.push(problem_body.to_string());
    }
    let right = [
        json!({ "provider": "datadog", "credentials": { "api_key": providers.datadog_api_key, "application_key": providers.datadog_application_key, "site": "datadoghq.eu" } }),
        json!({ "provider": "azure", "credentials": { "tenant_id": providers.azure_tenant, "client_id": providers.azure_client_id, "client_secret": providers.azure_client_secret } }),
        json!({ "provider": "grafana", "credentials": { "url": format!("{}/grafana", providers.base_url), "token": providers.grafana_token } }),
        json!({ "provider": "splunk", "credentials": { "url": format!("{}/splunk", providers.base_url), "token": providers.splunk_token } }),
        json!({ "provider": "pagerduty", "credentials": { "api_token": providers.pagerduty_token } }),
    ];
    let mut datadog_id = String::new();
    for body in right {
        let created = connect(body.clone()).await.unwrap();
        assert_eq!(created.status(), StatusCode::CREATED, "{body}: {}", created.text().await.unwrap());
        let created: Value = created.json().await.unwrap();
        if body["provider"] == "datadog" {
            datadog_id = created["connection_id"].as_str().unwrap().to_owned();
        }
    }
    let azure = eventually("Azure's subscriptions listed", WAIT, || async {
        let all: Vec<Value> = ana.apply(http().get(url("/v1/connections"))).send().await.unwrap().json().await.unwrap();
        all.into_iter().find(|connection| connection["provider"] == "azure" && connection["inventory_at"].is_string())
    })
    .await;
    assert!(azure["inventory"].to_string().contains(&providers.azure_subscription), "{azure}");

    // A provider's refusal while connecting says what to do about it.
    let datadog_body = json!({ "provider": "datadog", "credentials": { "api_key": providers.datadog_api_key, "application_key": providers.datadog_application_key } });
    for (fault, status, says) in [
        (Fault::Status(401), StatusCode::UNPROCESSABLE_ENTITY, "refused the credentials"),
        (Fault::Status(403), StatusCode::UNPROCESSABLE_ENTITY, "denied the permission"),
        (Fault::Status(429), StatusCode::SERVICE_UNAVAILABLE, "retry after 7 s"),
        (Fault::Status(500), StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
        (Fault::Hang, StatusCode::SERVICE_UNAVAILABLE, "did not answer within 2 s"),
    ] {
        providers.inject("/datadog/api/v1/validate", fault);
        let refused = problem(connect(datadog_body.clone()).await.unwrap(), status).await;
        providers.clear_faults();
        assert!(refused["detail"].as_str().unwrap().contains(says), "{fault:?}: {refused}");
        error_bodies.push(refused.to_string());
    }

    // --- The agent uses each provider's tools with the organisation's credentials.
    let mut socket = ChatSocket::open(&base, &ana).await;
    let cases = [
        ("recent commits?", "github_commits", json!({ "repository": "acme/checkout" }), "Raise the pool size"),
        ("what changed?", "github_commit_diff", json!({ "repository": "acme/checkout", "sha": "5f3c2a1" }), "pool: 100"),
        ("deployed when?", "github_deployments", json!({ "repository": "acme/checkout" }), "production"),
        ("where is the pool set?", "github_search_code", json!({ "query": "pool repo:acme/checkout" }), "config/db.yaml"),
        ("which projects?", "gcp_projects", json!({}), "acme-prod"),
        ("which clusters?", "gcp_gke_clusters", json!({ "project": "acme-prod" }), "acme-prod-gke"),
        (
            "gcp errors?",
            "gcp_logs",
            json!({ "project": "acme-prod", "filter": "severity>=ERROR", "since_minutes": 30 }),
            "connection pool exhausted",
        ),
        ("azure vms?", "azure_virtual_machines", json!({}), "checkout-vm-1"),
        ("azure clusters?", "azure_aks_clusters", json!({}), "prod-aks"),
        ("datadog errors?", "datadog_logs", json!({ "query": "service:checkout status:error", "since_minutes": 15 }), "upstream timed out"),
        ("splunk 500s?", "splunk_search", json!({ "query": "index=web status=500", "since_minutes": 15 }), "GET /checkout 500"),
        ("grafana sources?", "grafana_datasources", json!({}), "loki-prod"),
        (
            "loki errors?",
            "grafana_query",
            json!({ "datasource_uid": "loki-prod", "query": "{app=\"checkout\"} |= \"error\"", "since_minutes": 15 }),
            "pool exhausted",
        ),
        (
            "prom latency?",
            "grafana_query",
            json!({ "datasource_uid": "prom-prod", "query": "up{job=\"checkout\"}", "since_minutes": 60 }),
            "0.97",
        ),
    ];
    for (question, tool, arguments, expected) in cases {
        let outcome = use_tool(&mut socket, &llm, question, tool, arguments).await;
        assert_eq!(outcome["type"], "tool_call.completed", "{tool}: {outcome}");
        assert!(outcome["payload"]["result"].to_string().contains(expected), "{tool}: {outcome}");
    }
    // A provider that hangs: the tool gives up after the timeout and says so.
    providers.inject("/datadog/api/v2/logs", Fault::Hang);
    let hung = use_tool(&mut socket, &llm, "datadog again?", "datadog_logs", json!({ "query": "service:checkout" })).await;
    providers.clear_faults();
    assert_eq!(hung["type"], "tool_call.failed");
    assert!(hung["payload"]["error"].as_str().unwrap().contains("did not answer"), "{hung}");
    let prompt = llm.requests_for("recent commits?")[0]["messages"][0]["content"].as_str().unwrap().to_owned();
    for named in
        ["GitHub", "octo-sre", "repository acme/checkout", "Google Cloud", "project acme-prod", "Azure", "Datadog", "Splunk", "Grafana"]
    {
        assert!(prompt.contains(named), "the prompt does not name {named}: {prompt}");
    }

    // Rotation and removal.
    let rotated = ana
        .apply(http().put(url(&format!("/v1/connections/{datadog_id}/credentials"))))
        .json(&json!({ "credentials": { "api_key": providers.datadog_api_key, "application_key": providers.datadog_application_key, "site": "datadoghq.eu" } }))
        .send()
        .await
        .unwrap();
    assert_eq!(rotated.json::<Value>().await.unwrap()["secret_version"], 2);
    let removed = ana.apply(http().delete(url(&format!("/v1/connections/{github_id}")))).send().await.unwrap();
    assert_eq!(removed.status(), StatusCode::NO_CONTENT);
    problem(eve.apply(http().get(url(&format!("/v1/connections/{datadog_id}")))).send().await.unwrap(), StatusCode::NOT_FOUND).await;
    socket.close().await;

    // --- Nothing secret anywhere: events, every table, every record on Kafka, the log, error bodies.
    let mut secrets = providers.secrets();
    secrets.push(LLM_KEY.to_owned());
    secrets.retain(|secret| secret.len() >= 12);
    assert!(secrets.len() > 12, "the test handled too few secrets to mean anything: {}", secrets.len());
    eventually("the relay to publish everything", WAIT, || async {
        (aurora_commands::relay::backlog(&env.pool).await.ok()? == 0).then_some(())
    })
    .await;
    let tables: Vec<String> =
        sqlx::query_scalar("SELECT tablename::text FROM pg_tables WHERE schemaname = 'public'").fetch_all(&env.pool).await.unwrap();
    let mut database = String::new();
    for table in &tables {
        let rows: Vec<String> = sqlx::query_scalar(&format!("SELECT t::text FROM {table} t")).fetch_all(&env.pool).await.unwrap();
        database.push_str(&rows.join("\n"));
    }
    assert!(database.contains(&github_id), "the search covers the tables that hold connections");
    let mut kafka = String::new();
    let prefix = env.config.kafka.topic_prefix.clone();
    let mut topics = aurora_events::topics::all_event_topics(&prefix);
    topics.push(aurora_events::topics::deltas_topic(&prefix));
    for topic in topics {
        for record in read_all(&env.config, &topic).await {
            use rdkafka::message::{Headers, Message};
            kafka.push_str(&String::from_utf8_lossy(record.payload().unwrap_or_default()));
            if let Some(headers) = record.headers() {
                for header in headers.iter() {
                    kafka.push_str(&String::from_utf8_lossy(header.value.unwrap_or_default()));
                }
            }
        }
    }
    assert!(kafka.contains("connection.established") || kafka.contains(&github_id), "the search covers the connection topic");
    terminate(&aurora);
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(log.contains("connection established"), "the log was captured");
    for secret in &secrets {
        assert!(!database.contains(secret.as_str()), "a secret is in Postgres");
        assert!(!kafka.contains(secret.as_str()), "a secret is on Kafka");
        assert!(!log.contains(secret.as_str()), "a secret is in the log {}", log_path.display());
        assert!(!error_bodies.iter().any(|body| body.contains(secret.as_str())), "a secret is in an error body");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sealed_or_stopped_secret_store_is_a_clear_error_that_loses_nothing() {
    let vault = ScratchVault::start();
    let providers = Providers::start().await;
    let llm = ScriptedLlm::start().await;
    let mut env = TestEnv::new().await;
    env.config.vault = vault.config();
    env.config.connections.datadog_api_url = Some(format!("{}/datadog", providers.base_url));
    env.config.llm.base_url = llm.base_url.clone();
    env.config.llm.model = "scripted-model".into();
    let app = App::spawn(&env, Roles::ALL).await;
    let ana = Caller::register(&app.base_url, "ana").await;
    let body = json!({ "provider": "datadog", "credentials": { "api_key": providers.datadog_api_key, "application_key": providers.datadog_application_key } });
    let connect = || ana.apply(http().post(app.url("/v1/connections"))).json(&body).send();

    vault.seal();
    let sealed = problem(connect().await.unwrap(), StatusCode::SERVICE_UNAVAILABLE).await;
    assert!(sealed["detail"].as_str().unwrap().contains("sealed"), "{sealed}");
    assert_eq!(env.count("SELECT count(*) FROM events WHERE stream LIKE 'connection-%'").await, 0, "nothing is recorded while sealed");
    vault.unseal();
    let created = connect().await.unwrap();
    assert_eq!(created.status(), StatusCode::CREATED, "{}", created.text().await.unwrap());
    eventually("the connection in the read model", WAIT, || async {
        (env.count("SELECT count(*) FROM connections").await == 1).then_some(())
    })
    .await;

    // Down while the agent needs it: the tool says so, the connection stays, and it works again after.
    vault.stop();
    let mut socket = ChatSocket::open(&app.base_url, &ana).await;
    let down = use_tool(&mut socket, &llm, "errors while vault is down?", "datadog_logs", json!({ "query": "status:error" })).await;
    assert_eq!(down["type"], "tool_call.failed");
    assert!(down["payload"]["error"].as_str().unwrap().contains("cannot be reached"), "{down}");
    let listed: Vec<Value> = ana.apply(http().get(app.url("/v1/connections"))).send().await.unwrap().json().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["status"], "connected");
    vault.restart();
    let back = use_tool(&mut socket, &llm, "errors now that it is back?", "datadog_logs", json!({ "query": "status:error" })).await;
    assert_eq!(back["type"], "tool_call.completed", "{back}");
    socket.close().await;
    app.stop().await;
}
