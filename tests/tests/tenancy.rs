//! Tenancy on every route: another organisation's resources do not exist for a caller (404, not
//! 403), collections show only the caller's organisation, the database itself hides other
//! organisations' rows from the gateway's reads, and every route is described with its rule.

use std::collections::HashSet;

use aurora_gateway::routes::specs;
use aurora_tests::{http, App, Caller, Roles, TestEnv};
use reqwest::StatusCode;
use serde_json::{json, Value};

const GATEWAY_ONLY: Roles = Roles { gateway: true, processors: false, projections: false };

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_organisations_resources_are_not_found_on_every_route() {
    let mut env = TestEnv::new().await;
    env.config.incident.auto_investigate = false;
    let app = App::spawn(&env, Roles::ALL).await;
    let ana = Caller::register(&app.base_url, "ana").await;
    let bob = Caller::join(&app.base_url, &ana, "bob", "editor").await;
    let eve = Caller::register(&app.base_url, "eve").await;

    // One of each of ana's organisation's resources.
    let session_id = ana.create_session_id(&app, "ours").await;
    let invitation: Value = ana
        .apply(http().post(app.url("/v1/org/invitations")))
        .json(&json!({ "email": "pending@example.com", "role": "viewer" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let invitation_id = invitation["invitation_id"].as_str().unwrap().to_owned();
    let token: Value =
        ana.apply(http().post(app.url("/v1/tokens"))).json(&json!({ "name": "ours" })).send().await.unwrap().json().await.unwrap();
    let token_id = token["token_id"].as_str().unwrap().to_owned();
    let document = aurora_tests::knowledge::uploaded(&app, &ana, "ours.md", b"# Ours\n\nA runbook of ana's.\n".to_vec()).await;
    let document_id = document["document_id"].as_str().unwrap().to_owned();
    let webhook = aurora_tests::incidents::webhook_token(&app, &ana).await;
    let alert = aurora_tests::incidents::alertmanager("Ours", &[aurora_tests::incidents::Fired::firing("Ours", "ours", "a:1", "fp-ours")]);
    aurora_tests::incidents::accepted(&app, ana.org, "alertmanager", &webhook, &alert, &[]).await;
    let incident = aurora_tests::incidents::incidents_until(&app, &ana, "", "ana's incident", |list| list.len() == 1).await;
    let incident_id = incident[0]["incident_id"].as_str().unwrap().to_owned();
    let requested: Value =
        ana.apply(http().post(app.url(&format!("/v1/incidents/{incident_id}/investigations")))).send().await.unwrap().json().await.unwrap();
    let investigation_id = requested["investigation_id"].as_str().unwrap().to_owned();
    aurora_tests::eventually("the session and the document in the read models", std::time::Duration::from_secs(30), || async {
        (env.count("SELECT count(*) FROM chat_sessions").await == 1 && env.count("SELECT count(*) FROM documents").await == 1).then_some(())
    })
    .await;
    // A whole tool result of ana's organisation, as the agent keeps them.
    sqlx::query(
        "INSERT INTO tool_results (org_id, session_id, tool_call_id, turn_id, result) VALUES ($1, $2, 'call_ours', $3, '{\"secret\": 1}')",
    )
    .bind(ana.org)
    .bind(uuid::Uuid::parse_str(&session_id).unwrap())
    .bind(uuid::Uuid::now_v7())
    .execute(&env.pool)
    .await
    .unwrap();
    // A connection of ana's organisation, as its read model holds it (the commands that change
    // one load its stream, which eve's organisation does not have).
    let connection_id = uuid::Uuid::now_v7();
    sqlx::query(
        "INSERT INTO connections (connection_id, org_id, provider, method, name, account, secret_ref, secret_version, status, \
         established_by, created_at, updated_at, version) \
         VALUES ($1, $2, 'datadog', 'key', 'ours', 'Datadog datadoghq.eu', 'vault:kv/data/x', 1, 'connected', 'user:x', now(), now(), 1)",
    )
    .bind(connection_id)
    .bind(ana.org)
    .execute(&env.pool)
    .await
    .unwrap();
    // A deployment of ana's organisation, as its read model holds it.
    let deployment_id = uuid::Uuid::now_v7();
    sqlx::query(
        "INSERT INTO deployments (deployment_id, org_id, session_id, status, destroy, requested_by, files, changes, resources, \
         plan_prefix, state_version, planned_at, stream_version) \
         VALUES ($1, $2, $3, 'applied', false, 'user:x', '[]', '{}', 0, 'x', 1, now(), 3)",
    )
    .bind(deployment_id)
    .bind(ana.org)
    .bind(uuid::Uuid::parse_str(&session_id).unwrap())
    .execute(&env.pool)
    .await
    .unwrap();
    // A scan and a discovered service of ana's organisation, as their read models hold them.
    let (scan_id, node_id) = (uuid::Uuid::now_v7(), uuid::Uuid::now_v7());
    sqlx::query(
        "INSERT INTO discovery_scans (scan_id, org_id, status, requested_by, requested_at, stream_version) \
         VALUES ($1, $2, 'completed', 'user:x', now(), 1)",
    )
    .bind(scan_id)
    .bind(ana.org)
    .execute(&env.pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO graph_nodes (node_id, org_id, resource_id, provider, kind, provider_type, name, tags, first_seen, last_changed, stream_version) \
         VALUES ($1, $2, 'aws:1:us-east-1:instance/i-ours', 'aws', 'vm', 'AWS::EC2::Instance', 'ours', '{}', now(), now(), 2)",
    )
    .bind(node_id)
    .bind(ana.org)
    .execute(&env.pool)
    .await
    .unwrap();
    let ours_result = ana.apply(http().get(app.url(&format!("/v1/chat/sessions/{session_id}/tool-calls/call_ours")))).send().await.unwrap();
    assert_eq!(ours_result.status(), StatusCode::OK, "the owner organisation reads it");

    // Every route with a resource in its path, with ana's resource in it, asked by eve (an admin
    // of her own organisation, so no role stands in the way). A route added later without a case
    // here fails this test.
    let body_for = |path: &str, method: &reqwest::Method| -> Option<Value> {
        match (method.as_str(), path) {
            ("PATCH", "/v1/chat/sessions/{session_id}") => Some(json!({ "title": "mine now" })),
            ("POST", "/v1/chat/sessions/{session_id}/archive") => Some(json!({})),
            ("PATCH", "/v1/org/members/{user_id}") => Some(json!({ "role": "viewer" })),
            ("PUT", "/v1/connections/{connection_id}/credentials") => Some(json!({ "credentials": { "api_token": "whatever" } })),
            ("POST", "/v1/incidents/{incident_id}/severity") => Some(json!({ "severity": "high" })),
            ("POST", "/v1/incidents/{incident_id}/merge") => Some(json!({ "into": incident_id })),
            ("POST", "/v1/incidents/{incident_id}/split") => {
                Some(json!({ "alerts": [{ "source": "alertmanager", "fingerprint": "fp-ours" }] }))
            }
            ("PUT", "/v1/incidents/{incident_id}/postmortem") => Some(json!({ "markdown": "# mine" })),
            ("POST", "/v1/incidents/{incident_id}/postmortem/restore") => Some(json!({ "version": 1 })),
            _ => None,
        }
    };
    let mut covered = 0;
    // Starting an OAuth connection names a provider, and a webhook secret a source, not a resource of anyone's.
    let not_resources = ["/v1/connections/oauth/{provider}", "/v1/incidents/webhook/secrets/{source}"];
    for spec in specs().into_iter().filter(|spec| spec.path.contains('{') && !not_resources.contains(&spec.path.as_str())) {
        let path = spec
            .path
            .replace("{session_id}", &session_id)
            .replace("{user_id}", &bob.user_id.to_string())
            .replace("{invitation_id}", &invitation_id)
            .replace("{token_id}", &token_id)
            .replace("{tool_call_id}", "call_ours")
            .replace("{connection_id}", &connection_id.to_string())
            .replace("{document_id}", &document_id)
            .replace("{incident_id}", &incident_id)
            .replace("{investigation_id}", &investigation_id)
            .replace("{deployment_id}", &deployment_id.to_string())
            .replace("{scan_id}", &scan_id.to_string())
            .replace("{node_id}", &node_id.to_string())
            .replace("{version}", "1")
            // ana's webhook endpoint, with eve's token.
            .replace("{org_id}", &ana.org.to_string())
            .replace("{source}", "alertmanager")
            .replace("{token}", "awh_not_yours");
        assert!(!path.contains('{'), "no resource of ana's for {} {}: add one to this test", spec.method, spec.path);
        let method = reqwest::Method::from_bytes(spec.method.as_str().as_bytes()).unwrap();
        let mut request = eve.apply(http().request(method.clone(), app.url(&path)));
        if let Some(body) = body_for(&spec.path, &method) {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{} {} let another organisation see a resource", spec.method, spec.path);
        covered += 1;
    }
    assert_eq!(covered, 40);

    // Collections hold nothing of ana's organisation.
    let ours: Vec<String> = vec![
        session_id.clone(),
        invitation_id.clone(),
        token_id.clone(),
        bob.user_id.to_string(),
        ana.user_id.to_string(),
        ana.org.to_string(),
        connection_id.to_string(),
        document_id.clone(),
        incident_id.clone(),
        deployment_id.to_string(),
        scan_id.to_string(),
        node_id.to_string(),
    ];
    for path in [
        "/v1/chat/sessions?include_archived=true",
        "/v1/org/members",
        "/v1/org/invitations",
        "/v1/tokens",
        "/v1/audit?limit=1000",
        "/v1/auth/me",
        "/v1/connections",
        "/v1/knowledge/documents",
        "/v1/knowledge/memory",
        "/v1/incidents",
        "/v1/incidents/metrics",
        "/v1/incidents/webhook",
        "/v1/deployments",
        "/v1/discovery/scans",
        "/v1/discovery/services",
    ] {
        let response = eve.apply(http().get(app.url(path))).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        let text = response.text().await.unwrap();
        for id in &ours {
            assert!(!text.contains(id.as_str()), "{path} shows another organisation's {id}: {text}");
        }
    }
    let audit_of_ana = eve.apply(http().get(app.url(&format!("/v1/audit?stream=chat-{session_id}")))).send().await.unwrap();
    assert_eq!(audit_of_ana.json::<Value>().await.unwrap()["items"], json!([]));

    // And nothing was changed by the attempts.
    let still: Value =
        ana.apply(http().get(app.url(&format!("/v1/chat/sessions/{session_id}")))).send().await.unwrap().json().await.unwrap();
    assert_eq!(still["title"], "ours");
    assert_eq!(still["archived"], false);
    let members: Value = ana.apply(http().get(app.url("/v1/org/members"))).send().await.unwrap().json().await.unwrap();
    assert_eq!(members.as_array().unwrap().len(), 2);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_database_shows_the_gateways_reads_one_organisation_only() {
    let env = TestEnv::new().await;
    let app = App::spawn(&env, GATEWAY_ONLY).await;
    let ana = Caller::register(&app.base_url, "ana").await;
    let eve = Caller::register(&app.base_url, "eve").await;
    let tables = [
        "organisations",
        "accounts",
        "invitations",
        "api_tokens",
        "audit_log",
        "chat_sessions",
        "chat_messages",
        "tool_results",
        "connections",
        "incidents",
        "incident_alerts",
        "incident_timeline",
        "webhook_deliveries",
    ];
    // The transaction every gateway read and every agent tool uses: each table, with no WHERE at all, as eve.
    let mut transaction = aurora_adapters::postgres::tenant_transaction(&env.pool, eve.org).await.unwrap();
    for table in tables {
        let orgs: Vec<uuid::Uuid> =
            sqlx::query_scalar(&format!("SELECT DISTINCT org_id FROM {table}")).fetch_all(&mut *transaction).await.unwrap();
        assert!(orgs.iter().all(|org| *org == eve.org), "{table} shows {orgs:?} to {}", eve.org);
    }
    let accounts: i64 = sqlx::query_scalar("SELECT count(*) FROM accounts").fetch_one(&mut *transaction).await.unwrap();
    assert_eq!(accounts, 1);
    assert_ne!(ana.org, eve.org);
    transaction.rollback().await.unwrap();

    // The tenant role reads neither secrets' digests nor the event store nor sessions.
    for forbidden in [
        "SELECT password_hash FROM accounts",
        "SELECT token_hash FROM api_tokens",
        "SELECT count(*) FROM events",
        "SELECT count(*) FROM auth_sessions",
    ] {
        let mut transaction = aurora_adapters::postgres::tenant_transaction(&env.pool, eve.org).await.unwrap();
        let refused = sqlx::query(forbidden).fetch_all(&mut *transaction).await.unwrap_err();
        assert!(refused.to_string().contains("permission denied"), "{forbidden}: {refused}");
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_is_described_with_its_types_and_required_role() {
    let env = TestEnv::new().await;
    let app = App::spawn(&env, GATEWAY_ONLY).await;
    let spec: Value = http().get(app.url("/openapi.json")).send().await.unwrap().json().await.unwrap();
    let mut described = HashSet::new();
    for (path, item) in spec["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            described.insert((method.to_uppercase(), path.clone()));
        }
    }
    let routes = specs();
    assert_eq!(described.len(), routes.len(), "described: {described:?}");
    for route in &routes {
        let operation = &spec["paths"][route.path.as_str()][route.method.as_str().to_lowercase()];
        assert!(operation.is_object(), "{} {} is not described", route.method, route.path);
        assert_eq!(operation["x-required-role"], route.access.describe(), "{} {}", route.method, route.path);
        assert!(!operation["responses"].as_object().unwrap().is_empty());
        let guarded = route.access.role().is_some();
        assert_eq!(operation["security"].is_array(), guarded, "{} {} security", route.method, route.path);
        // Actions that take nothing but their path.
        let bodiless = [
            "/v1/auth/logout",
            "/v1/auth/ws-ticket",
            "/v1/incidents/webhook/token",
            "/v1/incidents/{incident_id}/acknowledge",
            "/v1/incidents/{incident_id}/resolve",
            "/v1/incidents/{incident_id}/reopen",
            "/v1/incidents/{incident_id}/investigations",
            "/v1/incidents/{incident_id}/investigations/{investigation_id}/cancel",
            "/v1/incidents/{incident_id}/chat",
            "/v1/discovery/scans",
        ];
        if matches!(route.method.as_str(), "POST" | "PATCH") && !bodiless.contains(&route.path.as_str()) {
            assert!(operation["requestBody"].is_object(), "{} {} has no request type", route.method, route.path);
        }
    }
    for schema in ["RegisterRequest", "SessionOpened", "TokenCreated", "InvitationCreated", "Member", "Role", "Problem"] {
        assert!(spec["components"]["schemas"][schema].is_object(), "{schema} missing");
    }
    assert!(spec["components"]["securitySchemes"]["session"].is_object());
    assert!(spec["components"]["securitySchemes"]["api_token"].is_object());
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_refuses_a_lower_role_by_cookie_and_by_token() {
    let env = TestEnv::new().await;
    let app = App::spawn(&env, GATEWAY_ONLY).await;
    let ana = Caller::register(&app.base_url, "ana").await;
    let vic = Caller::join(&app.base_url, &ana, "vic", "viewer").await;
    let ed = Caller::join(&app.base_url, &ana, "ed", "editor").await;
    // An admin's tokens with lower roles act with those roles.
    let viewer_token = ana.create_token(&app, "viewer").await;
    let editor_token = ana.create_token(&app, "editor").await;
    let mut checked = 0;
    for spec in specs() {
        let Some(required) = spec.access.role() else { continue };
        let path = spec
            .path
            .split('/')
            .map(|segment| if segment.starts_with('{') { uuid::Uuid::now_v7().to_string() } else { segment.to_owned() })
            .collect::<Vec<_>>()
            .join("/");
        let method = reqwest::Method::from_bytes(spec.method.as_str().as_bytes()).unwrap();
        let lower: Vec<(&Caller, &str)> = match required {
            aurora_events::identity::Role::Viewer => continue,
            aurora_events::identity::Role::Editor => vec![(&vic, viewer_token.as_str())],
            aurora_events::identity::Role::Admin => vec![(&vic, viewer_token.as_str()), (&ed, editor_token.as_str())],
        };
        for (caller, token) in lower {
            let by_cookie = caller.apply(http().request(method.clone(), app.url(&path))).json(&json!({})).send().await.unwrap();
            assert_eq!(by_cookie.status(), StatusCode::FORBIDDEN, "{} {} by {}'s cookie", spec.method, spec.path, caller.email);
            let by_token = http().request(method.clone(), app.url(&path)).bearer_auth(token).json(&json!({})).send().await.unwrap();
            assert_eq!(by_token.status(), StatusCode::FORBIDDEN, "{} {} by a lower token", spec.method, spec.path);
            checked += 1;
        }
    }
    assert!(checked >= 20, "only {checked} route and role pairs checked");
    app.stop().await;
}
