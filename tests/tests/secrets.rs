//! No password, password hash, session id, CSRF token, API token, invitation token or ticket
//! (WebSocket or change stream) appears in any event (in Postgres or on Kafka), any log line or any error body. The
//! test runs the real binary with debug logging, drives every flow that handles a secret
//! (including the failing ones), and then searches everything for every value it used.

use std::time::Duration;

use aurora_tests::kafka::read_all;
use aurora_tests::{eventually, free_port, http, set_cookie, spawn_aurora_logged, terminate, TestEnv, PASSWORD};
use futures::StreamExt;
use rdkafka::message::{Headers, Message};
use reqwest::StatusCode;
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(60);
const LLM_KEY: &str = "sk-test-never-print-this-key";

/// Every secret the test saw, and every response body that was not a success.
#[derive(Default)]
struct Seen {
    secrets: Vec<(String, String)>,
    error_bodies: Vec<String>,
}

impl Seen {
    fn secret(&mut self, what: &str, value: &str) {
        assert!(value.len() >= 12, "{what} is too short to search for");
        self.secrets.push((what.to_owned(), value.to_owned()));
    }

    async fn send(&mut self, request: reqwest::RequestBuilder) -> reqwest::Response {
        let response = request.send().await.unwrap();
        if response.status().is_success() {
            return response;
        }
        let status = response.status();
        let body = response.text().await.unwrap();
        self.error_bodies.push(body.clone());
        // Hand back an equivalent response for the caller's assertions.
        reqwest::Response::from(http::Response::builder().status(status.as_u16()).body(body).unwrap())
    }

    fn assert_absent_from(&self, haystack_name: &str, haystack: &str) {
        for (what, value) in &self.secrets {
            assert!(!haystack.contains(value.as_str()), "the {what} appears in {haystack_name}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_never_reach_events_logs_or_error_bodies() {
    let env = TestEnv::new().await;
    let llm = aurora_testkit::scripted_llm::ScriptedLlm::start().await;
    llm.script("is the key safe?", vec![aurora_testkit::scripted_llm::Step::text("It never leaves the config.")]);
    llm.script("fail please", vec![aurora_testkit::scripted_llm::Step::Error(401)]);
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let (aurora, log_path) = spawn_aurora_logged(
        &env,
        &["up"],
        &[
            ("AURORA_HTTP_ADDR", &format!("127.0.0.1:{port}")),
            ("AURORA_LOG", "debug"),
            ("AURORA_WS_TICKET_TTL_SECS", "30"),
            ("AURORA_LLM_API_KEY", LLM_KEY),
            ("AURORA_LLM_BASE_URL", &llm.base_url),
        ],
    );
    eventually("the gateway to answer", WAIT, || async {
        http().get(format!("{base}/healthz")).send().await.ok().filter(|response| response.status().is_success())
    })
    .await;
    let mut seen = Seen::default();
    let url = |path: &str| format!("{base}{path}");
    let email = format!("ana-{}@example.com", uuid::Uuid::now_v7().simple());
    let wrong_password = "this is not ana's password";
    let new_password = "an even better passphrase";
    seen.secret("password", PASSWORD);
    seen.secret("LLM API key", LLM_KEY);
    seen.secret("wrong password", wrong_password);
    seen.secret("new password", new_password);

    // Register, fail to log in, log in, change the password.
    let registered = seen
        .send(http().post(url("/v1/auth/register")).json(&json!({
            "email": email, "password": PASSWORD, "display_name": "Ana", "organisation_name": "Payments"
        })))
        .await;
    assert_eq!(registered.status(), StatusCode::CREATED);
    seen.secret("first session id", &set_cookie(&registered, "aurora_session").unwrap());
    let first: Value = registered.json().await.unwrap();
    seen.secret("first CSRF token", first["csrf_token"].as_str().unwrap());
    let refused = seen.send(http().post(url("/v1/auth/login")).json(&json!({ "email": email, "password": wrong_password }))).await;
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    let malformed = http()
        .post(url("/v1/auth/login"))
        .header("content-type", "application/json")
        .body(format!(r#"{{"email": "{email}", "password": "{wrong_password}", "remember": true"#));
    assert_eq!(seen.send(malformed).await.status(), StatusCode::BAD_REQUEST);
    let unknown_field = http().post(url("/v1/auth/login")).json(&json!({ "email": email, "password": wrong_password, "remember": true }));
    assert_eq!(seen.send(unknown_field).await.status(), StatusCode::BAD_REQUEST);
    let logged_in = seen.send(http().post(url("/v1/auth/login")).json(&json!({ "email": email, "password": PASSWORD }))).await;
    let session = set_cookie(&logged_in, "aurora_session").unwrap();
    let csrf = logged_in.json::<Value>().await.unwrap()["csrf_token"].as_str().unwrap().to_owned();
    seen.secret("second session id", &session);
    seen.secret("second CSRF token", &csrf);
    let cookie = format!("aurora_session={session}");
    let as_ana = |request: reqwest::RequestBuilder| request.header("cookie", cookie.clone()).header("x-csrf-token", csrf.clone());
    let change =
        as_ana(http().post(url("/v1/auth/password"))).json(&json!({ "current_password": wrong_password, "new_password": new_password }));
    assert_eq!(seen.send(change).await.status(), StatusCode::FORBIDDEN);
    let change = as_ana(http().post(url("/v1/auth/password"))).json(&json!({ "current_password": PASSWORD, "new_password": new_password }));
    assert_eq!(seen.send(change).await.status(), StatusCode::NO_CONTENT);

    // An API token: made, used, revoked, refused.
    let created: Value = seen.send(as_ana(http().post(url("/v1/tokens"))).json(&json!({ "name": "ci" }))).await.json().await.unwrap();
    let token = created["token"].as_str().unwrap().to_owned();
    seen.secret("API token", &token);
    let with_token = seen.send(http().get(url("/v1/auth/me")).bearer_auth(&token)).await;
    assert_eq!(with_token.status(), StatusCode::OK);
    let revoke = as_ana(http().delete(url(&format!("/v1/tokens/{}", created["token_id"].as_str().unwrap()))));
    assert_eq!(seen.send(revoke).await.status(), StatusCode::NO_CONTENT);
    assert_eq!(seen.send(http().get(url("/v1/auth/me")).bearer_auth(&token)).await.status(), StatusCode::UNAUTHORIZED);

    // An invitation, accepted.
    let invited: Value = seen
        .send(as_ana(http().post(url("/v1/org/invitations"))).json(&json!({ "email": "bo@example.com", "role": "viewer" })))
        .await
        .json()
        .await
        .unwrap();
    let invitation_token = invited["token"].as_str().unwrap().to_owned();
    seen.secret("invitation token", &invitation_token);
    let bo_password = "bo's own long password";
    seen.secret("invitee's password", bo_password);
    let joined = seen
        .send(http().post(url("/v1/auth/register")).json(&json!({
            "email": "bo@example.com", "password": bo_password, "display_name": "Bo", "invitation_token": invitation_token
        })))
        .await;
    assert_eq!(joined.status(), StatusCode::CREATED);
    seen.secret("invitee's session id", &set_cookie(&joined, "aurora_session").unwrap());
    let reused = http().post(url("/v1/auth/register")).json(&json!({
        "email": "bo2@example.com", "password": bo_password, "display_name": "Bo", "invitation_token": invitation_token
    }));
    assert_eq!(seen.send(reused).await.status(), StatusCode::UNPROCESSABLE_ENTITY);

    // A WebSocket ticket, used and then refused.
    let ticket: Value = seen.send(as_ana(http().post(url("/v1/auth/ws-ticket")))).await.json().await.unwrap();
    let ticket = ticket["ticket"].as_str().unwrap().to_owned();
    seen.secret("WebSocket ticket", &ticket);
    let ws = format!("ws://127.0.0.1:{port}/ws?ticket={ticket}");
    let (mut socket, _) = tokio_tungstenite::connect_async(&ws).await.unwrap();
    socket.next().await.unwrap().unwrap();
    drop(socket);
    match tokio_tungstenite::connect_async(&ws).await.unwrap_err() {
        tokio_tungstenite::tungstenite::Error::Http(response) => {
            assert_eq!(response.status().as_u16(), 401);
            seen.error_bodies.push(String::from_utf8_lossy(response.body().as_deref().unwrap_or_default()).into_owned());
        }
        other => panic!("expected a refused handshake, got {other}"),
    }
    // A change stream's ticket, used and then refused.
    let ticket: Value = seen.send(as_ana(http().post(url("/v1/auth/ws-ticket")))).await.json().await.unwrap();
    let ticket = ticket["ticket"].as_str().unwrap().to_owned();
    seen.secret("change stream ticket", &ticket);
    let stream = seen.send(http().get(url(&format!("/v1/incidents/events?ticket={ticket}")))).await;
    assert_eq!(stream.status(), StatusCode::OK);
    drop(stream);
    let reused = seen.send(http().get(url(&format!("/v1/incidents/events?ticket={ticket}")))).await;
    assert_eq!(reused.status(), StatusCode::UNAUTHORIZED);
    // Two chat turns: one answered, one refused by the model; the key went to the model only.
    for question in ["is the key safe?", "fail please"] {
        let ticket: Value = seen.send(as_ana(http().post(url("/v1/auth/ws-ticket")))).await.json().await.unwrap();
        let ticket = ticket["ticket"].as_str().unwrap().to_owned();
        seen.secret("WebSocket ticket", &ticket);
        let (mut socket, _) = tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{port}/ws?ticket={ticket}")).await.unwrap();
        socket.next().await.unwrap().unwrap();
        let query = json!({ "type": "query", "text": question, "mode": "ask" }).to_string();
        futures::SinkExt::send(&mut socket, tokio_tungstenite::tungstenite::Message::text(query)).await.unwrap();
        loop {
            let frame: Value = serde_json::from_str(socket.next().await.unwrap().unwrap().to_text().unwrap()).unwrap();
            if frame["type"] == "chat.assistant_message_completed" || frame["type"] == "chat.turn_failed" {
                break;
            }
        }
    }
    let expected = format!("Bearer {LLM_KEY}");
    assert_eq!(llm.authorizations(), vec![Some(expected.clone()), Some(expected)], "the key went to the model, and only there");
    let logout = as_ana(http().post(url("/v1/auth/logout")));
    assert_eq!(seen.send(logout).await.status(), StatusCode::NO_CONTENT);

    // The stored hashes are secrets too.
    let hashes: Vec<String> = sqlx::query_scalar("SELECT password_hash FROM accounts").fetch_all(&env.pool).await.unwrap();
    assert_eq!(hashes.len(), 2);
    for hash in &hashes {
        seen.secret("password hash", hash);
        seen.secret("password hash's digest", hash.rsplit('$').next().unwrap());
    }

    // Everything the log holds, once the relay has published it.
    eventually("every event on kafka", WAIT, || async {
        let backlog = aurora_commands::relay::backlog(&env.pool).await.unwrap_or(1);
        (backlog == 0).then_some(())
    })
    .await;
    let stored: Vec<String> = sqlx::query_scalar("SELECT row_to_json(e)::text FROM events e").fetch_all(&env.pool).await.unwrap();
    assert!(stored.len() >= 10, "the flows appended {} events", stored.len());
    seen.assert_absent_from("the event store", &stored.join("\n"));
    let mut on_kafka = 0;
    for category in ["user", "org", "chat"] {
        for record in read_all(&env.config, &env.topic(category)).await {
            on_kafka += 1;
            let mut text = String::from_utf8_lossy(record.payload().unwrap_or_default()).into_owned();
            if let Some(headers) = record.headers() {
                for header in headers.iter() {
                    text.push_str(&String::from_utf8_lossy(header.value.unwrap_or_default()));
                }
            }
            seen.assert_absent_from(&format!("a record on {}", env.topic(category)), &text);
        }
    }
    assert_eq!(on_kafka, stored.len(), "every event was searched on kafka too");
    seen.assert_absent_from("an error body", &seen.error_bodies.join("\n"));
    assert!(seen.error_bodies.len() >= 6);

    terminate(&aurora);
    let status = tokio::time::timeout(WAIT, aurora.wait_with_output()).await.unwrap().unwrap().status;
    assert!(status.success());
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(log.contains("account registered") && log.contains("DEBUG"), "the log was captured at debug level");
    seen.assert_absent_from("the log", &log);
}
