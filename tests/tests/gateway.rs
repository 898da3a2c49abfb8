//! The gateway end to end: commands in, read models out, errors as problem documents.

use std::time::Duration;

use aurora_tests::{eventually, http, problem, App, Caller, Roles, TestEnv};
use reqwest::StatusCode;
use serde_json::{json, Value};
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(30);

async fn session_in_read_model(app: &App, caller: &Caller, session_id: &str, version: i64) -> Value {
    eventually("the session to reach the read model", WAIT, || async {
        let response = caller.apply(http().get(app.url(&format!("/v1/chat/sessions/{session_id}")))).send().await.unwrap();
        if response.status() != StatusCode::OK {
            return None;
        }
        let body: Value = response.json().await.unwrap();
        (body["version"] == version).then_some(body)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_readiness_and_openapi() {
    let env = TestEnv::new().await;
    let app = App::spawn(&env, Roles::ALL).await;
    let health: Value = http().get(app.url("/healthz")).send().await.unwrap().json().await.unwrap();
    assert_eq!(health["status"], "ok");
    let ready = http().get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), StatusCode::OK);

    let spec: Value = http().get(app.url("/openapi.json")).send().await.unwrap().json().await.unwrap();
    assert!(spec["openapi"].as_str().unwrap().starts_with("3."));
    for (path, method) in [
        ("/healthz", "get"),
        ("/readyz", "get"),
        ("/metrics", "get"),
        ("/v1/chat/sessions", "post"),
        ("/v1/chat/sessions", "get"),
        ("/v1/chat/sessions/{session_id}", "get"),
        ("/v1/chat/sessions/{session_id}", "patch"),
        ("/v1/chat/sessions/{session_id}/archive", "post"),
        ("/v1/audit", "get"),
    ] {
        assert!(spec["paths"][path][method].is_object(), "{method} {path} missing from /openapi.json");
    }
    assert!(spec["components"]["schemas"]["CommandAccepted"].is_object());
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_fails_when_the_broker_is_unreachable() {
    let mut env = TestEnv::new().await;
    let closed_port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    env.config.kafka.brokers = format!("127.0.0.1:{closed_port}");
    let app = App::spawn(&env, Roles { gateway: true, processors: false, projections: false }).await;
    let body = problem(http().get(app.url("/readyz")).send().await.unwrap(), StatusCode::SERVICE_UNAVAILABLE).await;
    assert!(body["detail"].as_str().unwrap().contains("kafka"));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_are_created_renamed_archived_and_listed() {
    let env = TestEnv::new().await;
    let app = App::spawn(&env, Roles::ALL).await;
    let ana = Caller::register(&app.base_url, "ana").await;
    let created = ana.create_session(&app, "checkout latency").await;
    let session_id = created["session_id"].as_str().unwrap().to_owned();
    assert_eq!(created["stream_version"], 1);
    session_in_read_model(&app, &ana, &session_id, 1).await;

    let renamed = ana
        .apply(http().patch(app.url(&format!("/v1/chat/sessions/{session_id}"))))
        .header("if-match", "\"1\"")
        .json(&json!({ "title": "db pool exhaustion" }))
        .send()
        .await
        .unwrap();
    assert_eq!(renamed.status(), StatusCode::OK);
    let view = session_in_read_model(&app, &ana, &session_id, 2).await;
    assert_eq!(view["title"], "db pool exhaustion");
    assert_eq!(view["owner"], format!("user:{}", ana.user_id));

    let archived =
        ana.apply(http().post(app.url(&format!("/v1/chat/sessions/{session_id}/archive")))).json(&json!({})).send().await.unwrap();
    assert_eq!(archived.status(), StatusCode::OK);
    session_in_read_model(&app, &ana, &session_id, 3).await;
    let active: Value = ana.apply(http().get(app.url("/v1/chat/sessions"))).send().await.unwrap().json().await.unwrap();
    assert_eq!(active.as_array().unwrap().len(), 0);
    let all: Value = ana.apply(http().get(app.url("/v1/chat/sessions?include_archived=true"))).send().await.unwrap().json().await.unwrap();
    assert_eq!(all[0]["archived"], true);

    // An archived session takes no rename: the command is refused, not lost.
    let refused = ana
        .apply(http().patch(app.url(&format!("/v1/chat/sessions/{session_id}"))))
        .json(&json!({ "title": "again" }))
        .send()
        .await
        .unwrap();
    let body = problem(refused, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert!(body["detail"].as_str().unwrap().contains("archived"));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conflicts_repeats_and_unknown_streams_get_typed_answers() {
    let env = TestEnv::new().await;
    let app = App::spawn(&env, Roles { gateway: true, processors: false, projections: false }).await;
    let ana = Caller::register(&app.base_url, "ana").await;
    let key = Uuid::now_v7().to_string();
    let send_create = || {
        ana.apply(http().post(app.url("/v1/chat/sessions"))).header("idempotency-key", &key).json(&json!({ "title": "retry me" })).send()
    };
    let first: Value = send_create().await.unwrap().json().await.unwrap();
    let again_response = send_create().await.unwrap();
    assert_eq!(again_response.status(), StatusCode::CREATED);
    let again: Value = again_response.json().await.unwrap();
    assert_eq!(again["event_ids"], first["event_ids"]);
    assert_eq!(again["duplicate"], true);
    assert_eq!(env.count("SELECT count(*) FROM events WHERE stream LIKE 'chat-%'").await, 1);

    let session_id = first["session_id"].as_str().unwrap();
    let rename = |version: &str, title: &str| {
        ana.apply(http().patch(app.url(&format!("/v1/chat/sessions/{session_id}"))))
            .header("if-match", version)
            .json(&json!({ "title": title }))
            .send()
    };
    assert_eq!(rename("1", "first").await.unwrap().status(), StatusCode::OK);
    let conflict = problem(rename("1", "second").await.unwrap(), StatusCode::CONFLICT).await;
    assert_eq!(conflict["current_version"], 2);

    let unknown = ana
        .apply(http().patch(app.url(&format!("/v1/chat/sessions/{}", Uuid::now_v7()))))
        .json(&json!({ "title": "x" }))
        .send()
        .await
        .unwrap();
    problem(unknown, StatusCode::NOT_FOUND).await;

    // Another organisation sees nothing of it, on every route.
    let eve = Caller::register(&app.base_url, "eve").await;
    let foreign_rename = eve
        .apply(http().patch(app.url(&format!("/v1/chat/sessions/{session_id}"))))
        .json(&json!({ "title": "mine now" }))
        .send()
        .await
        .unwrap();
    problem(foreign_rename, StatusCode::NOT_FOUND).await;
    let foreign_archive =
        eve.apply(http().post(app.url(&format!("/v1/chat/sessions/{session_id}/archive")))).json(&json!({})).send().await.unwrap();
    problem(foreign_archive, StatusCode::NOT_FOUND).await;
    let foreign_read = eve.apply(http().get(app.url(&format!("/v1/chat/sessions/{session_id}")))).send().await.unwrap();
    problem(foreign_read, StatusCode::NOT_FOUND).await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_with_a_problem_document_naming_the_fault() {
    let mut env = TestEnv::new().await;
    env.config.http.max_body_bytes = 4096;
    let app = App::spawn(&env, Roles { gateway: true, processors: false, projections: false }).await;
    let ana = Caller::register(&app.base_url, "ana").await;
    let post = |body: &'static str, content_type: &'static str| {
        ana.apply(http().post(app.url("/v1/chat/sessions"))).header("content-type", content_type).body(body).send()
    };

    let malformed = problem(post("{\"title\": ", "application/json").await.unwrap(), StatusCode::BAD_REQUEST).await;
    assert!(malformed["detail"].as_str().unwrap().contains("not valid JSON"));
    let unknown_field =
        problem(post(r#"{"title": "x", "colour": "red"}"#, "application/json").await.unwrap(), StatusCode::BAD_REQUEST).await;
    assert_eq!(unknown_field["field"], "colour");
    let missing = problem(post("{}", "application/json").await.unwrap(), StatusCode::BAD_REQUEST).await;
    assert_eq!(missing["field"], "title");
    problem(post(r#"{"title": "x"}"#, "text/plain").await.unwrap(), StatusCode::UNSUPPORTED_MEDIA_TYPE).await;
    let empty_title = problem(post(r#"{"title": "   "}"#, "application/json").await.unwrap(), StatusCode::BAD_REQUEST).await;
    assert_eq!(empty_title["field"], "title");

    let oversized = format!(r#"{{"title": "{}"}}"#, "x".repeat(10_000));
    let too_large = ana
        .apply(http().post(app.url("/v1/chat/sessions")))
        .header("content-type", "application/json")
        .body(oversized)
        .send()
        .await
        .unwrap();
    problem(too_large, StatusCode::PAYLOAD_TOO_LARGE).await;

    let anonymous = http().post(app.url("/v1/chat/sessions")).json(&json!({ "title": "x" })).send().await.unwrap();
    problem(anonymous, StatusCode::UNAUTHORIZED).await;
    let bad_key = ana
        .apply(http().post(app.url("/v1/chat/sessions")))
        .header("idempotency-key", "not-a-uuid")
        .json(&json!({ "title": "x" }))
        .send()
        .await
        .unwrap();
    assert_eq!(problem(bad_key, StatusCode::BAD_REQUEST).await["field"], "Idempotency-Key");
    let bad_path = ana.apply(http().get(app.url("/v1/chat/sessions/not-a-uuid"))).send().await.unwrap();
    problem(bad_path, StatusCode::BAD_REQUEST).await;
    let bad_limit = ana.apply(http().get(app.url("/v1/audit?limit=0"))).send().await.unwrap();
    assert_eq!(problem(bad_limit, StatusCode::BAD_REQUEST).await["field"], "limit");
    let bad_filter = ana.apply(http().get(app.url("/v1/audit?colour=red"))).send().await.unwrap();
    problem(bad_filter, StatusCode::BAD_REQUEST).await;
    problem(http().get(app.url("/nowhere")).send().await.unwrap(), StatusCode::NOT_FOUND).await;

    assert_eq!(env.count("SELECT count(*) FROM events WHERE stream LIKE 'chat-%'").await, 0, "refused requests append nothing");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_log_filters_by_stream_type_actor_and_time_and_pages() {
    let env = TestEnv::new().await;
    let app = App::spawn(&env, Roles::ALL).await;
    let ana = Caller::register(&app.base_url, "ana").await;
    let bob = Caller::join(&app.base_url, &ana, "bob", "editor").await;
    let before = chrono::Utc::now();
    let first = ana.create_session(&app, "one").await;
    let first_id = first["session_id"].as_str().unwrap().to_owned();
    for index in 0..4 {
        let response = bob
            .apply(http().patch(app.url(&format!("/v1/chat/sessions/{first_id}"))))
            .json(&json!({ "title": format!("one, take {index}") }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
    }
    let second = ana.create_session(&app, "two").await;
    let outsider = Caller::register(&app.base_url, "ana").await;
    outsider.create_session(&app, "elsewhere").await;

    let query = |caller: &Caller, params: String| {
        let request = caller.apply(http().get(app.url(&format!("/v1/audit?{params}"))));
        async move {
            let response = request.send().await.unwrap();
            assert_eq!(response.status(), StatusCode::OK);
            response.json::<Value>().await.unwrap()
        }
    };
    let chat_entries =
        |page: &Value| page["items"].as_array().unwrap().iter().filter(|item| item["type"].as_str().unwrap().starts_with("chat.")).count();
    // Registrations, logins and the invitation are audited too, in the organisation's log; they
    // travel on other topics than the chat's, so they may arrive before or after it.
    let expected_types = ["org.created", "org.member_joined", "org.member_invited", "user.registered", "user.logged_in"];
    let everything = eventually("six chat audit entries and the identity events", WAIT, || async {
        let page = query(&ana, "limit=1000".into()).await;
        let complete = chat_entries(&page) == 6
            && expected_types.iter().all(|expected| page["items"].as_array().unwrap().iter().any(|item| item["type"] == *expected));
        complete.then_some(page)
    })
    .await;
    let types: Vec<&str> = everything["items"].as_array().unwrap().iter().map(|item| item["type"].as_str().unwrap()).collect();
    let total = types.len();

    let stream = format!("chat-{first_id}");
    let by_stream = query(&ana, format!("stream={stream}")).await;
    let versions: Vec<i64> = by_stream["items"].as_array().unwrap().iter().map(|item| item["stream_version"].as_i64().unwrap()).collect();
    assert_eq!(versions, vec![1, 2, 3, 4, 5]);
    let by_type = query(&ana, "type=chat.session_created".into()).await;
    assert_eq!(by_type["items"].as_array().unwrap().len(), 2);
    let by_actor = query(&ana, format!("actor=user:{}&type=chat.session_renamed", bob.user_id)).await;
    assert_eq!(by_actor["items"].as_array().unwrap().len(), 4);
    let future = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let from_future = query(&ana, format!("from={future}")).await;
    assert!(from_future["items"].as_array().unwrap().is_empty());
    let before_text = before.to_rfc3339_opts(chrono::SecondsFormat::Micros, true).replace('+', "%2B");
    let until_before = query(&ana, format!("to={before_text}")).await;
    // Before the first chat command only the registrations had happened.
    assert_eq!(chat_entries(&until_before), 0);
    assert!(!until_before["items"].as_array().unwrap().is_empty());

    // Pages of two cover everything once, in order. (Identity events ride other topics and may
    // still arrive: the pages are compared with the whole log read right after them.)
    let seen = eventually("pages of two covering the whole log", WAIT, || async {
        let mut seen = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let params = match &cursor {
                Some(cursor) => format!("limit=2&cursor={cursor}"),
                None => "limit=2".into(),
            };
            let page = query(&ana, params).await;
            for item in page["items"].as_array().unwrap() {
                seen.push(item["event_id"].as_str().unwrap().to_owned());
            }
            match page["next_cursor"].as_str() {
                Some(next) => cursor = Some(next.to_owned()),
                None => break,
            }
        }
        let whole: Vec<String> = query(&ana, "limit=1000".into()).await["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|item| item["event_id"].as_str().unwrap().to_owned())
            .collect();
        (seen == whole).then_some(seen)
    })
    .await;
    assert!(seen.len() >= total);
    let mut unique = seen.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), seen.len(), "no entry on two pages");
    assert!(seen.iter().any(|id| second["event_ids"][0] == *id));

    // The other organisation's audit log holds only its own events.
    let theirs = eventually("the other organisation's session in its audit log", WAIT, || async {
        let page = query(&outsider, "limit=1000".into()).await;
        (chat_entries(&page) == 1).then_some(page)
    })
    .await;
    let ours: std::collections::HashSet<&str> =
        everything["items"].as_array().unwrap().iter().map(|item| item["event_id"].as_str().unwrap()).collect();
    assert!(theirs["items"].as_array().unwrap().iter().all(|item| !ours.contains(item["event_id"].as_str().unwrap())));
    app.stop().await;
}
