//! Accounts, organisations, roles, sessions, API tokens and WebSocket tickets, end to end through
//! HTTP and WebSocket against the real stack (Postgres, Redis, the broker).

use std::time::Duration;

use aurora_tests::{eventually, http, problem, set_cookie, App, Caller, Roles, TestEnv, PASSWORD};
use futures::{SinkExt, StreamExt};
use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite;
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(30);
const GATEWAY_ONLY: Roles = Roles { gateway: true, processors: false, projections: false };

async fn login(app: &App, email: &str, password: &str) -> reqwest::Response {
    http().post(app.url("/v1/auth/login")).json(&json!({ "email": email, "password": password })).send().await.unwrap()
}

async fn send(request: reqwest::RequestBuilder) -> reqwest::Response {
    request.send().await.unwrap()
}

fn with_session(request: reqwest::RequestBuilder, session: &str) -> reqwest::RequestBuilder {
    request.header("cookie", format!("aurora_session={session}"))
}

fn bearer(request: reqwest::RequestBuilder, token: &str) -> reqwest::RequestBuilder {
    request.header("authorization", format!("Bearer {token}"))
}

async fn event_types_of(env: &TestEnv, stream: &str) -> Vec<(String, String)> {
    sqlx::query_as("SELECT event_type, actor FROM events WHERE stream = $1 ORDER BY stream_version")
        .bind(stream)
        .fetch_all(&env.pool)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_account_registers_logs_in_changes_its_password_and_logs_out() {
    let env = TestEnv::new().await;
    let app = App::spawn(&env, GATEWAY_ONLY).await;
    let email = format!("Ana.{}@Example.com", Uuid::now_v7().simple());
    let registered = http()
        .post(app.url("/v1/auth/register"))
        .json(&json!({ "email": email, "password": PASSWORD, "display_name": "Ana", "organisation_name": "Payments" }))
        .send()
        .await
        .unwrap();
    assert_eq!(registered.status(), StatusCode::CREATED);
    let cookies: Vec<String> = registered.headers().get_all("set-cookie").iter().map(|value| value.to_str().unwrap().to_owned()).collect();
    let session_cookie = cookies.iter().find(|cookie| cookie.starts_with("aurora_session=")).unwrap();
    assert!(session_cookie.contains("HttpOnly") && session_cookie.contains("SameSite=Lax"), "{session_cookie}");
    let first_session = set_cookie(&registered, "aurora_session").unwrap();
    let opened: Value = registered.json().await.unwrap();
    assert_eq!(opened["role"], "admin", "the first user of a new organisation is its admin");
    let user_id = opened["user_id"].as_str().unwrap().to_owned();

    let who: Value = send(with_session(http().get(app.url("/v1/auth/me")), &first_session)).await.json().await.unwrap();
    assert_eq!(who["email"], email.to_lowercase());
    assert_eq!(who["org_name"], "Payments");
    assert_eq!(who["authenticated_with"], "session");

    // The same address cannot register twice, in any case.
    let again = http()
        .post(app.url("/v1/auth/register"))
        .json(&json!({ "email": email.to_uppercase(), "password": PASSWORD, "display_name": "Ana", "organisation_name": "X" }))
        .send()
        .await
        .unwrap();
    problem(again, StatusCode::CONFLICT).await;

    // A wrong password and an unknown address get the same answer.
    let wrong = problem(login(&app, &email, "not the password at all").await, StatusCode::UNAUTHORIZED).await;
    let unknown = problem(login(&app, "nobody@example.com", PASSWORD).await, StatusCode::UNAUTHORIZED).await;
    assert_eq!(wrong["detail"], unknown["detail"]);

    let second = login(&app, &email, PASSWORD).await;
    assert_eq!(second.status(), StatusCode::OK);
    let second_session = set_cookie(&second, "aurora_session").unwrap();
    let second_csrf = second.json::<Value>().await.unwrap()["csrf_token"].as_str().unwrap().to_owned();
    assert_ne!(first_session, second_session);

    let change = |current: &str, new: &str| {
        with_session(http().post(app.url("/v1/auth/password")), &second_session)
            .header("x-csrf-token", &second_csrf)
            .json(&json!({ "current_password": current, "new_password": new }))
            .send()
    };
    problem(change("a wrong current password", "a brand new password").await.unwrap(), StatusCode::FORBIDDEN).await;
    let short = problem(change(PASSWORD, "short").await.unwrap(), StatusCode::BAD_REQUEST).await;
    assert_eq!(short["field"], "new_password");
    assert_eq!(change(PASSWORD, "a brand new password").await.unwrap().status(), StatusCode::NO_CONTENT);

    // The other session ended with the change; this one goes on.
    let ended = send(with_session(http().get(app.url("/v1/auth/me")), &first_session)).await;
    problem(ended, StatusCode::UNAUTHORIZED).await;
    assert_eq!(send(with_session(http().get(app.url("/v1/auth/me")), &second_session)).await.status(), StatusCode::OK);
    problem(login(&app, &email, PASSWORD).await, StatusCode::UNAUTHORIZED).await;
    assert_eq!(login(&app, &email, "a brand new password").await.status(), StatusCode::OK);

    let logout =
        with_session(http().post(app.url("/v1/auth/logout")), &second_session).header("x-csrf-token", &second_csrf).send().await.unwrap();
    assert_eq!(logout.status(), StatusCode::NO_CONTENT);
    let cleared = logout.headers().get_all("set-cookie").iter().any(|value| {
        let value = value.to_str().unwrap();
        value.starts_with("aurora_session=;") && value.contains("Max-Age=0")
    });
    assert!(cleared, "logout clears the session cookie");
    problem(send(with_session(http().get(app.url("/v1/auth/me")), &second_session)).await, StatusCode::UNAUTHORIZED).await;

    // Every change is an event of the account, by the account.
    let events = event_types_of(&env, &format!("user-{user_id}")).await;
    let types: Vec<&str> = events.iter().map(|(event_type, _)| event_type.as_str()).collect();
    assert_eq!(
        types,
        ["user.registered", "user.logged_in", "user.logged_in", "user.password_changed", "user.logged_in", "user.logged_out"]
    );
    assert!(events.iter().all(|(_, actor)| *actor == format!("user:{user_id}")));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invitations_are_single_use_expire_and_can_be_withdrawn() {
    let mut env = TestEnv::new().await;
    env.config.auth.invitation_ttl = Duration::from_secs(1);
    let app = App::spawn(&env, GATEWAY_ONLY).await;
    let ana = Caller::register(&app.base_url, "ana").await;
    let invite = |email: &str, extra: Value| {
        let mut body = json!({ "email": email, "role": "editor" });
        body.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        ana.apply(http().post(app.url("/v1/org/invitations"))).json(&body).send()
    };
    let accept = |email: &str, token: &str| {
        http()
            .post(app.url("/v1/auth/register"))
            .json(&json!({ "email": email, "password": PASSWORD, "display_name": "Invitee", "invitation_token": token }))
            .send()
    };

    // Expired: this app's default lifetime is one second.
    let late: Value = invite("late@example.com", json!({})).await.unwrap().json().await.unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let expired =
        problem(accept("late@example.com", late["token"].as_str().unwrap()).await.unwrap(), StatusCode::UNPROCESSABLE_ENTITY).await;
    assert!(expired["detail"].as_str().unwrap().contains("expired"));

    // Accepted once, with the invited role; then never again.
    let created = invite("cy@example.com", json!({ "expires_in_hours": 1 })).await.unwrap();
    assert_eq!(created.status(), StatusCode::CREATED);
    let created: Value = created.json().await.unwrap();
    let token = created["token"].as_str().unwrap();
    let wrong_address = problem(accept("eve@example.com", token).await.unwrap(), StatusCode::BAD_REQUEST).await;
    assert_eq!(wrong_address["field"], "email");
    let joined = accept("cy@example.com", token).await.unwrap();
    assert_eq!(joined.status(), StatusCode::CREATED);
    let joined: Value = joined.json().await.unwrap();
    assert_eq!(joined["role"], "editor");
    assert_eq!(joined["org_id"], ana.org.to_string());
    let reused = problem(accept("cy2@example.com", token).await.unwrap(), StatusCode::UNPROCESSABLE_ENTITY).await;
    assert!(reused["detail"].as_str().unwrap().contains("already been used"));
    problem(accept("cy@example.com", "aui_not-a-real-token").await.unwrap(), StatusCode::NOT_FOUND).await;

    // Withdrawn before use.
    let withdrawn: Value = invite("dee@example.com", json!({ "expires_in_hours": 1 })).await.unwrap().json().await.unwrap();
    let revoke = ana
        .apply(http().delete(app.url(&format!("/v1/org/invitations/{}", withdrawn["invitation_id"].as_str().unwrap()))))
        .send()
        .await
        .unwrap();
    assert_eq!(revoke.status(), StatusCode::NO_CONTENT);
    let refused =
        problem(accept("dee@example.com", withdrawn["token"].as_str().unwrap()).await.unwrap(), StatusCode::UNPROCESSABLE_ENTITY).await;
    assert!(refused["detail"].as_str().unwrap().contains("withdrawn"));

    // An address with an account cannot be invited; nonsense is refused by field.
    problem(invite("cy@example.com", json!({})).await.unwrap(), StatusCode::CONFLICT).await;
    let bad_role = problem(
        ana.apply(http().post(app.url("/v1/org/invitations")))
            .json(&json!({ "email": "x@example.com", "role": "owner" }))
            .send()
            .await
            .unwrap(),
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert_eq!(bad_role["field"], "role");
    let bad_lifetime = problem(invite("x@example.com", json!({ "expires_in_hours": 0 })).await.unwrap(), StatusCode::BAD_REQUEST).await;
    assert_eq!(bad_lifetime["field"], "expires_in_hours");

    let listed: Value = ana.apply(http().get(app.url("/v1/org/invitations"))).send().await.unwrap().json().await.unwrap();
    let status_of = |email: &str| {
        listed.as_array().unwrap().iter().find(|invitation| invitation["email"] == email).map(|invitation| invitation["status"].clone())
    };
    assert_eq!(status_of("late@example.com"), Some(json!("expired")));
    assert_eq!(status_of("cy@example.com"), Some(json!("accepted")));
    assert_eq!(status_of("dee@example.com"), Some(json!("revoked")));
    assert!(listed.as_array().unwrap().iter().all(|invitation| invitation.get("token").is_none()));

    let org_events: Vec<String> =
        event_types_of(&env, &format!("org-{}", ana.org)).await.into_iter().map(|(event_type, _)| event_type).collect();
    for expected in ["org.created", "org.member_joined", "org.member_invited", "org.invitation_revoked"] {
        assert!(org_events.iter().any(|event_type| event_type == expected), "{expected} not in {org_events:?}");
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_gate_commands_and_changes_apply_on_the_next_request() {
    let env = TestEnv::new().await;
    let app = App::spawn(&env, Roles::ALL).await;
    let ana = Caller::register(&app.base_url, "ana").await;
    let bob = Caller::join(&app.base_url, &ana, "bob", "viewer").await;
    let create = |caller: &Caller| caller.apply(http().post(app.url("/v1/chat/sessions"))).json(&json!({ "title": "t" })).send();
    let set_role =
        |role: &str| ana.apply(http().patch(app.url(&format!("/v1/org/members/{}", bob.user_id)))).json(&json!({ "role": role })).send();

    let refused = problem(create(&bob).await.unwrap(), StatusCode::FORBIDDEN).await;
    assert!(refused["detail"].as_str().unwrap().contains("editor"));
    assert_eq!(bob.apply(http().get(app.url("/v1/chat/sessions"))).send().await.unwrap().status(), StatusCode::OK);
    problem(
        bob.apply(http().post(app.url("/v1/org/invitations")))
            .json(&json!({ "email": "z@example.com", "role": "viewer" }))
            .send()
            .await
            .unwrap(),
        StatusCode::FORBIDDEN,
    )
    .await;

    let promoted: Value = set_role("editor").await.unwrap().json().await.unwrap();
    assert_eq!(promoted["role"], "editor");
    assert_eq!(create(&bob).await.unwrap().status(), StatusCode::CREATED, "the new role holds on the next request");
    set_role("viewer").await.unwrap();
    problem(create(&bob).await.unwrap(), StatusCode::FORBIDDEN).await;

    // The last admin stays an admin.
    let last_admin =
        ana.apply(http().patch(app.url(&format!("/v1/org/members/{}", ana.user_id)))).json(&json!({ "role": "viewer" })).send();
    let last_admin = problem(last_admin.await.unwrap(), StatusCode::UNPROCESSABLE_ENTITY).await;
    assert!(last_admin["detail"].as_str().unwrap().contains("at least one admin"));

    // A removed member is out at once, with every credential.
    let token: Value =
        bob.apply(http().post(app.url("/v1/tokens"))).json(&json!({ "name": "ci" })).send().await.unwrap().json().await.unwrap();
    let token = token["token"].as_str().unwrap().to_owned();
    assert_eq!(bearer(http().get(app.url("/v1/auth/me")), &token).send().await.unwrap().status(), StatusCode::OK);
    let removed = ana.apply(http().delete(app.url(&format!("/v1/org/members/{}", bob.user_id)))).send().await.unwrap();
    assert_eq!(removed.status(), StatusCode::NO_CONTENT);
    problem(bob.apply(http().get(app.url("/v1/auth/me"))).send().await.unwrap(), StatusCode::UNAUTHORIZED).await;
    problem(bearer(http().get(app.url("/v1/auth/me")), &token).send().await.unwrap(), StatusCode::UNAUTHORIZED).await;
    problem(login(&app, &bob.email, PASSWORD).await, StatusCode::UNAUTHORIZED).await;
    let members: Value = ana.apply(http().get(app.url("/v1/org/members"))).send().await.unwrap().json().await.unwrap();
    assert_eq!(members.as_array().unwrap().len(), 1);

    // Each change shows in the organisation's audit log, attributed to the admin.
    let audit = eventually("role changes in the audit log", WAIT, || async {
        let page: Value =
            ana.apply(http().get(app.url(&format!("/v1/audit?stream=org-{}", ana.org)))).send().await.unwrap().json().await.unwrap();
        (page["items"].as_array().unwrap().iter().any(|item| item["type"] == "org.member_removed")).then_some(page)
    })
    .await;
    let changes: Vec<&Value> = audit["items"].as_array().unwrap().iter().filter(|item| item["type"] == "org.member_role_changed").collect();
    assert_eq!(changes.len(), 2);
    assert!(changes.iter().all(|item| item["actor"] == format!("user:{}", ana.user_id)));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_tokens_are_shown_once_bounded_by_their_owner_and_revoked_at_once() {
    let env = TestEnv::new().await;
    let app = App::spawn(&env, GATEWAY_ONLY).await;
    let ana = Caller::register(&app.base_url, "ana").await;
    let bob = Caller::join(&app.base_url, &ana, "bob", "viewer").await;

    let created = ana
        .apply(http().post(app.url("/v1/tokens")))
        .json(&json!({ "name": "deploy bot", "role": "editor", "expires_in_days": 30 }))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), StatusCode::CREATED);
    let created: Value = created.json().await.unwrap();
    let token = created["token"].as_str().unwrap().to_owned();
    assert!(token.starts_with("aur_"));

    // The token works without cookies or CSRF, with its own (lower) role.
    let who: Value = bearer(http().get(app.url("/v1/auth/me")), &token).send().await.unwrap().json().await.unwrap();
    assert_eq!(who["role"], "editor");
    assert_eq!(who["authenticated_with"], "api_token");
    let session = bearer(http().post(app.url("/v1/chat/sessions")), &token).json(&json!({ "title": "from ci" })).send().await.unwrap();
    assert_eq!(session.status(), StatusCode::CREATED);
    let invite = bearer(http().post(app.url("/v1/org/invitations")), &token).json(&json!({ "email": "q@example.com", "role": "viewer" }));
    problem(invite.send().await.unwrap(), StatusCode::FORBIDDEN).await;

    // Listed without its value.
    let listed: Value = ana.apply(http().get(app.url("/v1/tokens"))).send().await.unwrap().json().await.unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 1);
    assert_eq!(listed[0]["name"], "deploy bot");
    assert!(listed[0].get("token").is_none());
    assert!(!listed.to_string().contains(&token));

    // No token above its creator's role; nobody revokes another's token.
    let too_high = bob.apply(http().post(app.url("/v1/tokens"))).json(&json!({ "name": "x", "role": "admin" })).send().await.unwrap();
    assert_eq!(problem(too_high, StatusCode::BAD_REQUEST).await["field"], "role");
    let bad_expiry =
        ana.apply(http().post(app.url("/v1/tokens"))).json(&json!({ "name": "x", "expires_in_days": 0 })).send().await.unwrap();
    assert_eq!(problem(bad_expiry, StatusCode::BAD_REQUEST).await["field"], "expires_in_days");
    let token_id = created["token_id"].as_str().unwrap();
    problem(bob.apply(http().delete(app.url(&format!("/v1/tokens/{token_id}")))).send().await.unwrap(), StatusCode::NOT_FOUND).await;

    let revoked = ana.apply(http().delete(app.url(&format!("/v1/tokens/{token_id}")))).send().await.unwrap();
    assert_eq!(revoked.status(), StatusCode::NO_CONTENT);
    let refused = problem(bearer(http().get(app.url("/v1/auth/me")), &token).send().await.unwrap(), StatusCode::UNAUTHORIZED).await;
    assert!(refused["detail"].as_str().unwrap().contains("revoked"));
    problem(bearer(http().get(app.url("/v1/auth/me")), "aur_made_up").send().await.unwrap(), StatusCode::UNAUTHORIZED).await;
    problem(http().get(app.url("/v1/auth/me")).header("authorization", "Basic YTpi").send().await.unwrap(), StatusCode::UNAUTHORIZED).await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cookie_requests_that_change_something_need_the_csrf_token() {
    let env = TestEnv::new().await;
    let app = App::spawn(&env, GATEWAY_ONLY).await;
    let ana = Caller::register(&app.base_url, "ana").await;
    let post = |csrf: Option<&str>| {
        let request = with_session(http().post(app.url("/v1/chat/sessions")), &ana.session).json(&json!({ "title": "t" }));
        match csrf {
            Some(csrf) => request.header("x-csrf-token", csrf),
            None => request,
        }
    };
    let missing = problem(post(None).send().await.unwrap(), StatusCode::FORBIDDEN).await;
    assert!(missing["detail"].as_str().unwrap().contains("CSRF"));
    problem(post(Some("auc_forged")).send().await.unwrap(), StatusCode::FORBIDDEN).await;
    // Another session's token is not this session's.
    let other = login(&app, &ana.email, PASSWORD).await.json::<Value>().await.unwrap();
    problem(post(other["csrf_token"].as_str()).send().await.unwrap(), StatusCode::FORBIDDEN).await;
    // Reads need none.
    assert_eq!(with_session(http().get(app.url("/v1/chat/sessions")), &ana.session).send().await.unwrap().status(), StatusCode::OK);
    assert_eq!(post(Some(&ana.csrf)).send().await.unwrap().status(), StatusCode::CREATED);
    assert_eq!(env.count("SELECT count(*) FROM events WHERE stream LIKE 'chat-%'").await, 1, "refused requests appended nothing");
    app.stop().await;
}

fn ws_url(app: &App, ticket: &str) -> String {
    format!("{}/ws?ticket={ticket}", app.base_url.replacen("http://", "ws://", 1))
}

fn handshake_status(error: tungstenite::Error) -> u16 {
    match error {
        tungstenite::Error::Http(response) => response.status().as_u16(),
        other => panic!("expected an HTTP refusal, got {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_tickets_are_single_use_and_short_lived() {
    let mut env = TestEnv::new().await;
    env.config.auth.ws_ticket_ttl = Duration::from_secs(1);
    let app = App::spawn(&env, GATEWAY_ONLY).await;
    let ana = Caller::register(&app.base_url, "ana").await;

    let first = ana.ticket(&app).await;
    let (mut socket, _) = tokio_tungstenite::connect_async(ws_url(&app, &first)).await.unwrap();
    let hello: Value = serde_json::from_str(socket.next().await.unwrap().unwrap().to_text().unwrap()).unwrap();
    assert_eq!(hello["type"], "hello");
    assert_eq!(hello["user_id"], ana.user_id.to_string());
    assert_eq!(hello["org_id"], ana.org.to_string());
    assert_eq!(hello["role"], "admin");
    socket.send(tungstenite::Message::text(r#"{"type":"ping"}"#)).await.unwrap();
    let pong: Value = serde_json::from_str(socket.next().await.unwrap().unwrap().to_text().unwrap()).unwrap();
    assert_eq!(pong["type"], "pong");
    socket.send(tungstenite::Message::text("{ not json")).await.unwrap();
    let error: Value = serde_json::from_str(socket.next().await.unwrap().unwrap().to_text().unwrap()).unwrap();
    assert_eq!(error["type"], "error");
    socket.close(None).await.unwrap();

    // Used once, never again.
    let reused = tokio_tungstenite::connect_async(ws_url(&app, &first)).await.unwrap_err();
    assert_eq!(handshake_status(reused), 401);
    let made_up = tokio_tungstenite::connect_async(ws_url(&app, "auw_made_up")).await.unwrap_err();
    assert_eq!(handshake_status(made_up), 401);
    let without = tokio_tungstenite::connect_async(format!("{}/ws", app.base_url.replacen("http://", "ws://", 1))).await.unwrap_err();
    assert_eq!(handshake_status(without), 400);

    // Short-lived: this app's tickets last one second.
    let stale = ana.ticket(&app).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let expired = tokio_tungstenite::connect_async(ws_url(&app, &stale)).await.unwrap_err();
    assert_eq!(handshake_status(expired), 401);

    // A ticket needs an authenticated caller.
    problem(http().post(app.url("/v1/auth/ws-ticket")).send().await.unwrap(), StatusCode::UNAUTHORIZED).await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_and_registration_are_rate_limited_per_address_and_per_account() {
    let mut env = TestEnv::new().await;
    env.config.auth.rate_limit_per_account = 3;
    env.config.auth.rate_limit_per_ip = 5;
    env.config.auth.rate_window = Duration::from_secs(60);
    let app = App::spawn(&env, GATEWAY_ONLY).await;
    let ana = Caller::register(&app.base_url, "ana").await;

    for _ in 0..3 {
        problem(login(&app, &ana.email, "wrong password, again").await, StatusCode::UNAUTHORIZED).await;
    }
    let limited = login(&app, &ana.email, PASSWORD).await;
    let retry_after: u64 = limited.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry_after), "Retry-After {retry_after}");
    let body = problem(limited, StatusCode::TOO_MANY_REQUESTS).await;
    assert!(body["detail"].as_str().unwrap().contains("try again"));

    // Another account from the same address still has a little room, then the address is out.
    problem(login(&app, "someone-else@example.com", PASSWORD).await, StatusCode::UNAUTHORIZED).await;
    problem(login(&app, "a-third@example.com", PASSWORD).await, StatusCode::TOO_MANY_REQUESTS).await;

    // Registration counts separately (ana's was the first), and is limited the same way.
    for attempt in 0..4 {
        let response = http()
            .post(app.url("/v1/auth/register"))
            .json(
                &json!({ "email": format!("r{attempt}@example.com"), "password": PASSWORD, "display_name": "R", "organisation_name": "R" }),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::CREATED);
    }
    let sixth = http()
        .post(app.url("/v1/auth/register"))
        .json(&json!({ "email": "r6@example.com", "password": PASSWORD, "display_name": "R", "organisation_name": "R" }))
        .send()
        .await
        .unwrap();
    problem(sixth, StatusCode::TOO_MANY_REQUESTS).await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn account_routes_refuse_bad_input_by_field() {
    let mut env = TestEnv::new().await;
    env.config.http.max_body_bytes = 4096;
    let app = App::spawn(&env, GATEWAY_ONLY).await;
    let register = |body: String, content_type: &'static str| {
        http().post(app.url("/v1/auth/register")).header("content-type", content_type).body(body).send()
    };
    let valid = json!({ "email": "ok@example.com", "password": PASSWORD, "display_name": "Ok", "organisation_name": "Ok" });
    let with = |field: &str, value: Value| {
        let mut body = valid.clone();
        body[field] = value;
        body.to_string()
    };
    let without = |field: &str| {
        let mut body = valid.clone();
        body.as_object_mut().unwrap().remove(field);
        body.to_string()
    };

    let malformed = problem(register("{\"email\": ".into(), "application/json").await.unwrap(), StatusCode::BAD_REQUEST).await;
    assert!(malformed["detail"].as_str().unwrap().contains("not valid JSON"));
    assert_eq!(
        problem(register(without("password"), "application/json").await.unwrap(), StatusCode::BAD_REQUEST).await["field"],
        "password"
    );
    assert_eq!(
        problem(register(with("colour", json!("red")), "application/json").await.unwrap(), StatusCode::BAD_REQUEST).await["field"],
        "colour"
    );
    assert_eq!(
        problem(register(with("email", json!("not-an-email")), "application/json").await.unwrap(), StatusCode::BAD_REQUEST).await["field"],
        "email"
    );
    assert_eq!(
        problem(register(with("password", json!("short")), "application/json").await.unwrap(), StatusCode::BAD_REQUEST).await["field"],
        "password"
    );
    assert_eq!(
        problem(register(with("display_name", json!("  ")), "application/json").await.unwrap(), StatusCode::BAD_REQUEST).await["field"],
        "display_name"
    );
    let both =
        problem(register(with("invitation_token", json!("aui_x")), "application/json").await.unwrap(), StatusCode::BAD_REQUEST).await;
    assert!(both["detail"].as_str().unwrap().contains("either"));
    problem(register(valid.to_string(), "text/plain").await.unwrap(), StatusCode::UNSUPPORTED_MEDIA_TYPE).await;
    problem(register(with("display_name", json!("x".repeat(8000))), "application/json").await.unwrap(), StatusCode::PAYLOAD_TOO_LARGE)
        .await;
    let login = http().post(app.url("/v1/auth/login")).json(&json!({ "email": "ok@example.com" })).send().await.unwrap();
    assert_eq!(problem(login, StatusCode::BAD_REQUEST).await["field"], "password");

    assert_eq!(env.count("SELECT count(*) FROM events").await, 0, "nothing refused was recorded");
    assert_eq!(env.count("SELECT count(*) FROM accounts").await, 0);
    assert_eq!(register(valid.to_string(), "application/json").await.unwrap().status(), StatusCode::CREATED);
    app.stop().await;
}

/// A Redis of the test's own, to stop and start again.
struct PrivateRedis {
    port: u16,
    child: Option<std::process::Child>,
}

impl PrivateRedis {
    fn start() -> Self {
        let mut redis = Self { port: aurora_tests::free_port(), child: None };
        redis.resume();
        redis
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn resume(&mut self) {
        let child = std::process::Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string(), "--save", "", "--appendonly", "no"])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server is installed by scripts/stack.sh");
        self.child = Some(child);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(std::time::Instant::now() < deadline, "redis did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.stop();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_outage_refuses_logins_clearly_and_they_resume_when_it_returns() {
    let mut redis = PrivateRedis::start();
    let mut env = TestEnv::new().await;
    env.config.redis.url = redis.url().into();
    let app = App::spawn(&env, GATEWAY_ONLY).await;
    let ana = Caller::register(&app.base_url, "ana").await;

    redis.stop();
    let refused = problem(login(&app, &ana.email, PASSWORD).await, StatusCode::SERVICE_UNAVAILABLE).await;
    assert!(refused["detail"].as_str().unwrap().contains("try again"), "{refused}");
    let not_ready = problem(http().get(app.url("/readyz")).send().await.unwrap(), StatusCode::SERVICE_UNAVAILABLE).await;
    assert!(not_ready["detail"].as_str().unwrap().contains("redis"));
    problem(ana.apply(http().post(app.url("/v1/auth/ws-ticket"))).send().await.unwrap(), StatusCode::SERVICE_UNAVAILABLE).await;
    // Sessions live in Postgres: a logged-in user goes on working.
    assert_eq!(ana.apply(http().get(app.url("/v1/auth/me"))).send().await.unwrap().status(), StatusCode::OK);

    redis.resume();
    eventually("logins to work again", WAIT, || async {
        (login(&app, &ana.email, PASSWORD).await.status() == StatusCode::OK).then_some(())
    })
    .await;
    assert_eq!(http().get(app.url("/readyz")).send().await.unwrap().status(), StatusCode::OK);
    app.stop().await;
}
