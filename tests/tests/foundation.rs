//! The defects an attacker or a reviewer found in the backbone, each shown through a public
//! interface: HTTP, the WebSocket, Kafka topics, or two real `aurora` processes.

use std::time::Duration;

use aurora_adapters::kafka::{header_str, DLQ_CONSUMER, DLQ_ERROR};
use aurora_testkit::scripted_llm::{ScriptedLlm, Step};
use aurora_tests::chat::ChatSocket;
use aurora_tests::kafka::read_all;
use aurora_tests::{eventually, http, problem, spawn_aurora_role, App, Caller, Roles, TestEnv};
use reqwest::StatusCode;
use serde_json::{json, Value};
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_reason_is_refused_and_oversized_or_unreadable_events_are_dead_lettered_while_others_flow() {
    let env = TestEnv::new().await;
    let app = App::spawn(&env, Roles::ALL).await;
    let ana = Caller::register(&app.base_url, "ana").await;
    let session = ana.create_session_id(&app, "to archive").await;
    let huge_reason = "x".repeat(1_000_000);
    let refused = ana
        .apply(http().post(app.url(&format!("/v1/chat/sessions/{session}/archive"))))
        .json(&json!({ "reason": huge_reason }))
        .send()
        .await
        .unwrap();
    let body = problem(refused, StatusCode::BAD_REQUEST).await;
    assert_eq!(body["field"], "reason");

    // An event too large for Kafka, put straight into the store as an older build could have.
    let oversized_id = Uuid::now_v7();
    let other_org = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO events (event_id, stream, stream_version, event_type, schema_version, org_id, actor, occurred_at, \
         correlation_id, payload) VALUES ($1, $2, 1, 'chat.session_created', 1, $3, $5, now(), $1, $4)",
    )
    .bind(oversized_id)
    .bind(format!("chat-{}", Uuid::now_v7()))
    .bind(other_org)
    .bind(json!({ "session_id": Uuid::now_v7(), "title": "y".repeat(2_000_000), "owner": format!("user:{}", Uuid::now_v7()) }))
    .bind(format!("user:{}", Uuid::now_v7()))
    .execute(&env.pool)
    .await
    .unwrap();
    // And a row that is no readable event at all (its actor names nobody).
    let unreadable_id = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO events (event_id, stream, stream_version, event_type, schema_version, org_id, actor, occurred_at, \
         correlation_id, payload) VALUES ($1, $2, 1, 'chat.session_created', 1, $3, 'someone', now(), $1, '{}')",
    )
    .bind(unreadable_id)
    .bind(format!("chat-{}", Uuid::now_v7()))
    .bind(other_org)
    .execute(&env.pool)
    .await
    .unwrap();
    // Another organisation's work after it still reaches Kafka and the read models.
    let after = ana.create_session_id(&app, "after the big one").await;
    eventually("the session after the oversized event to be projected", WAIT, || async {
        let found = ana.apply(http().get(app.url(&format!("/v1/chat/sessions/{after}")))).send().await.unwrap().status();
        (found == StatusCode::OK).then_some(())
    })
    .await;
    let dead_letters = eventually("the oversized and the unreadable event on the dead-letter topic", WAIT, || async {
        let records = read_all(&env.config, &aurora_events::topics::dead_letter_topic(&env.config.kafka.topic_prefix)).await;
        (records.len() >= 2).then_some(records)
    })
    .await;
    assert_eq!(dead_letters.len(), 2);
    let letter_of = |event_id: Uuid| {
        let letter = dead_letters.iter().find(|letter| header_str(*letter, "ce_id") == Some(event_id.to_string().as_str()));
        let letter = letter.unwrap_or_else(|| panic!("no dead letter for {event_id}"));
        assert_eq!(header_str(letter, DLQ_CONSUMER), Some("relay"));
        header_str(letter, DLQ_ERROR).unwrap().to_owned()
    };
    assert!(letter_of(oversized_id).contains("too large"));
    assert!(letter_of(unreadable_id).contains("malformed"));
    let metrics = http().get(app.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.lines().any(|line| line == "aurora_relay_dead_letters_total 2"), "{metrics}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_organisation_can_neither_ask_in_nor_follow_a_session() {
    let llm = ScriptedLlm::start().await;
    let mut env = TestEnv::new().await;
    env.config.llm.base_url = llm.base_url.clone();
    let app = App::spawn(&env, Roles::ALL).await;
    let ana = Caller::register(&app.base_url, "ana").await;
    let mallory = Caller::register(&app.base_url, "mallory").await;
    let session = ana.create_session_id(&app, "private").await;
    llm.script("what is secret", vec![Step::text("the secret answer")]);

    let mut intruder = ChatSocket::open(&app.base_url, &mallory).await;
    let asked = intruder.request(json!({ "type": "query", "session_id": session, "text": "what is secret", "mode": "ask" })).await;
    assert_eq!(asked["code"], "not_found", "{asked}");
    let followed = intruder.request(json!({ "type": "subscribe", "session_id": session })).await;
    assert_eq!(followed["code"], "not_found", "{followed}");

    let mut owner = ChatSocket::open(&app.base_url, &ana).await;
    owner.request(json!({ "type": "query", "session_id": session, "text": "what is secret", "mode": "ask" })).await;
    owner.event("chat.assistant_message_completed").await;
    // The intruder's socket is still open and answers, but carried nothing of the session.
    let pong = intruder.request(json!({ "type": "ping" })).await;
    assert_eq!(pong["type"], "pong");
    let leaked: Vec<&Value> =
        intruder.frames.iter().filter(|frame| frame["session_id"] == session.as_str() && frame["type"] != "error").collect();
    assert!(leaked.is_empty(), "{leaked:#?}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_member_and_a_revoked_token_lose_their_sockets_within_seconds() {
    let env = TestEnv::new().await;
    let app = App::spawn(&env, Roles::ALL).await;
    let admin = Caller::register(&app.base_url, "admin").await;
    let bo = Caller::join(&app.base_url, &admin, "bo", "editor").await;
    let session = admin.create_session_id(&app, "shared").await;

    let mut removed = ChatSocket::open(&app.base_url, &bo).await;
    let followed = removed.request(json!({ "type": "subscribe", "session_id": session })).await;
    assert_eq!(followed["type"], "subscribed", "{followed}");
    let token = admin.create_token(&app, "viewer").await;
    let mut by_token = ChatSocket::open_with_token(&app.base_url, &token).await;
    let followed = by_token.request(json!({ "type": "subscribe", "session_id": session })).await;
    assert_eq!(followed["type"], "subscribed", "{followed}");

    let removal = admin.apply(http().delete(app.url(&format!("/v1/org/members/{}", bo.user_id)))).send().await.unwrap();
    assert!(removal.status().is_success(), "{}", removal.text().await.unwrap());
    assert_eq!(removed.closed_within(Duration::from_secs(10)).await, Some(4401));

    let tokens: Value = admin.apply(http().get(app.url("/v1/tokens"))).send().await.unwrap().json().await.unwrap();
    let token_id = tokens.as_array().unwrap().iter().find(|listed| listed["revoked_at"].is_null()).unwrap()["token_id"].clone();
    let revoked = admin.apply(http().delete(app.url(&format!("/v1/tokens/{}", token_id.as_str().unwrap())))).send().await.unwrap();
    assert!(revoked.status().is_success(), "{}", revoked.text().await.unwrap());
    assert_eq!(by_token.closed_within(Duration::from_secs(10)).await, Some(4401));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_socket_opened_with_a_viewer_token_of_an_admin_acts_as_a_viewer() {
    let env = TestEnv::new().await;
    let app = App::spawn(&env, Roles::ALL).await;
    let admin = Caller::register(&app.base_url, "admin").await;
    let session = admin.create_session_id(&app, "mine").await;
    let token = admin.create_token(&app, "viewer").await;
    let mut socket = ChatSocket::open_with_token(&app.base_url, &token).await;
    assert_eq!(socket.hello["role"], "viewer");
    let asked = socket.request(json!({ "type": "query", "session_id": session, "text": "hello", "mode": "ask" })).await;
    assert_eq!(asked["code"], "forbidden", "{asked}");
    let confirmed =
        socket.request(json!({ "type": "confirm", "session_id": session, "confirmation_id": Uuid::now_v7(), "approve": true })).await;
    assert_eq!(confirmed["code"], "forbidden", "{confirmed}");
    // The same admin's own session cookie still acts as an admin.
    let mut own = ChatSocket::open(&app.base_url, &admin).await;
    assert_eq!(own.hello["role"], "admin");
    let cancelled = own.request(json!({ "type": "cancel", "session_id": session, "turn_id": Uuid::now_v7() })).await;
    assert_ne!(cancelled["code"], "forbidden", "{cancelled}");
    app.stop().await;
}

/// The pid of the Postgres session that holds leadership `lock`, once one does.
async fn lock_holder(env: &TestEnv, lock: &str) -> i32 {
    let name = aurora_adapters::postgres::leadership_application_name(lock);
    eventually(&format!("{lock} to be held"), WAIT, || async {
        sqlx::query_scalar::<_, i32>(
            "SELECT a.pid FROM pg_stat_activity a JOIN pg_locks l ON l.pid = a.pid \
             WHERE a.application_name = $1 AND l.locktype = 'advisory' AND l.granted",
        )
        .bind(&name)
        .fetch_optional(&env.pool)
        .await
        .unwrap()
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_whose_lock_session_ends_stops_and_the_standby_runs_each_call_once() {
    const LOCK: &str = "aurora-processor:agent";
    let llm = ScriptedLlm::start().await;
    let env = TestEnv::new().await;
    let app = App::spawn(&env, Roles { gateway: true, processors: false, projections: true }).await;
    let ana = Caller::register(&app.base_url, "ana").await;
    let llm_env = [("AURORA_LLM_BASE_URL", llm.base_url.as_str()), ("AURORA_LLM_MODEL", "scripted-model")];
    let _first = spawn_aurora_role(&env, &["processors"], &llm_env);
    let first_pid = lock_holder(&env, LOCK).await;
    let _second = spawn_aurora_role(&env, &["processors"], &llm_env);
    let name = aurora_adapters::postgres::leadership_application_name(LOCK);
    eventually("the standby to wait for the lock", WAIT, || async {
        let waiting: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_stat_activity WHERE application_name = $1")
            .bind(&name)
            .fetch_one(&env.pool)
            .await
            .unwrap();
        (waiting >= 2).then_some(())
    })
    .await;

    // The leader's lock session ends under it (an administrator, a failover); it still runs.
    let terminated: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1)").bind(first_pid).fetch_one(&env.pool).await.unwrap();
    assert!(terminated);
    llm.script("list my sessions", vec![Step::tool("call_list", "list_chat_sessions", json!({})), Step::text("You have some.")]);
    let mut socket = ChatSocket::open(&app.base_url, &ana).await;
    let accepted = socket.request(json!({ "type": "query", "text": "list my sessions", "mode": "ask" })).await;
    let session_id = accepted["session_id"].as_str().unwrap().to_owned();
    socket.event("chat.assistant_message_completed").await;
    let second_pid = lock_holder(&env, LOCK).await;
    assert_ne!(second_pid, first_pid);
    // Give a stale leader time to do what it would do twice.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(llm.requests_for("list my sessions").len(), 2, "one request for the tool call, one for the answer");
    for (event_type, expected) in [("llm.call_completed", 2), ("tool_call.completed", 1), ("chat.assistant_message_completed", 1)] {
        let count =
            env.count(&format!("SELECT count(*) FROM events WHERE stream = 'chat-{session_id}' AND event_type = '{event_type}'")).await;
        assert_eq!(count, expected, "{event_type}");
    }
    socket.close().await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_parallel_logins_all_succeed_and_the_user_stream_reaches_kafka_in_order() {
    let mut env = TestEnv::new().await;
    env.config.auth.rate_limit_per_account = 1000;
    env.config.auth.rate_limit_per_ip = 1000;
    let app = App::spawn(&env, Roles::ALL).await;
    let ana = Caller::register(&app.base_url, "ana").await;
    let logins = (0..20).map(|_| {
        let url = app.url("/v1/auth/login");
        let email = ana.email.clone();
        async move { http().post(url).json(&json!({ "email": email, "password": aurora_tests::PASSWORD })).send().await.unwrap().status() }
    });
    let statuses = futures::future::join_all(logins).await;
    assert!(statuses.iter().all(|status| *status == StatusCode::OK), "{statuses:?}");
    let stream = format!("user-{}", ana.user_id);
    let records = eventually("the user stream on Kafka", WAIT, || async {
        let records = read_all(&env.config, &env.topic("user")).await;
        let ours: Vec<i64> = records
            .iter()
            .filter(|record| header_str(*record, "ce_subject") == Some(stream.as_str()))
            .map(|record| header_str(record, "ce_aurorastreamversion").unwrap().parse().unwrap())
            .collect();
        // Registered, logged in on registration, and twenty logins.
        (ours.len() >= 22).then_some(ours)
    })
    .await;
    assert_eq!(records, (1..=22).collect::<Vec<i64>>(), "versions only go up, with no gap");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotency_keys_belong_to_an_organisation_and_a_request() {
    let env = TestEnv::new().await;
    let app = App::spawn(&env, Roles { gateway: true, processors: false, projections: false }).await;
    let ana = Caller::register(&app.base_url, "ana").await;
    let bo = Caller::register(&app.base_url, "bo").await;
    let key = Uuid::now_v7().to_string();
    let create = |caller: &Caller, title: &str| {
        caller.apply(http().post(app.url("/v1/chat/sessions"))).header("idempotency-key", &key).json(&json!({ "title": title }))
    };
    let first: Value = create(&ana, "ana's").send().await.unwrap().json().await.unwrap();
    let again: Value = create(&ana, "ana's").send().await.unwrap().json().await.unwrap();
    assert_eq!(first["session_id"], again["session_id"]);
    assert_eq!(again["duplicate"], true);
    // Another organisation with the same key gets its own session, not ana's result.
    let theirs = create(&bo, "bo's").send().await.unwrap();
    assert_eq!(theirs.status(), StatusCode::CREATED);
    let theirs: Value = theirs.json().await.unwrap();
    assert_ne!(theirs["session_id"], first["session_id"]);
    assert_eq!(theirs["duplicate"], false);
    // The same key with another body is refused.
    let changed = create(&ana, "something else").send().await.unwrap();
    let body = problem(changed, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert!(body["detail"].as_str().unwrap().contains("Idempotency-Key"), "{body}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_changes_are_rate_limited_and_a_token_made_by_a_token_does_not_outlive_it() {
    let mut env = TestEnv::new().await;
    env.config.auth.rate_limit_per_ip = 3;
    env.config.auth.rate_limit_per_account = 3;
    let app = App::spawn(&env, Roles { gateway: true, processors: false, projections: false }).await;
    let ana = Caller::register(&app.base_url, "ana").await;
    let attempt = || {
        ana.apply(http().post(app.url("/v1/auth/password")))
            .json(&json!({ "current_password": "not the password at all", "new_password": "another long password" }))
    };
    for _ in 0..3 {
        assert_eq!(attempt().send().await.unwrap().status(), StatusCode::FORBIDDEN);
    }
    let limited = attempt().send().await.unwrap();
    assert!(limited.headers().contains_key("retry-after"));
    problem(limited, StatusCode::TOO_MANY_REQUESTS).await;

    let parent: Value = ana
        .apply(http().post(app.url("/v1/tokens")))
        .json(&json!({ "name": "short", "role": "editor", "expires_in_days": 1 }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let child: Value = http()
        .post(app.url("/v1/tokens"))
        .bearer_auth(parent["token"].as_str().unwrap())
        .json(&json!({ "name": "forever", "role": "viewer" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let expiry = |token: &Value| token["expires_at"].as_str().unwrap().parse::<chrono::DateTime<chrono::Utc>>().unwrap();
    // The parent's expiry as stored (Postgres keeps microseconds).
    assert!((expiry(&child) - expiry(&parent)).num_milliseconds().abs() < 1, "{child} {parent}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_that_reaches_the_audit_log_late_is_not_skipped_by_a_client_paging_forward() {
    let env = TestEnv::new().await;
    let app = App::spawn(&env, Roles::ALL).await;
    let ana = Caller::register(&app.base_url, "ana").await;
    let audit = |cursor: Option<String>| {
        let mut url = app.url("/v1/audit?limit=100");
        if let Some(cursor) = cursor {
            url.push_str(&format!("&cursor={cursor}"));
        }
        ana.apply(http().get(url))
    };
    let first: Value = eventually("the registration in the audit log", WAIT, || async {
        let page: Value = audit(None).send().await.unwrap().json().await.unwrap();
        (page["items"].as_array().unwrap().len() >= 2).then_some(page)
    })
    .await;
    let last = first["items"].as_array().unwrap().last().unwrap().clone();
    let cursor = format!("p{}", last["position"]);
    // An event whose transaction began before the ones already read, and committed after them.
    let late = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO audit_log (event_id, org_id, stream, stream_version, event_type, schema_version, actor, occurred_at, correlation_id) \
         VALUES ($1, $2, 'chat-late', 1, 'chat.session_created', 1, 'user:ana', now() - interval '1 hour', $1)",
    )
    .bind(late)
    .bind(ana.org)
    .execute(&env.pool)
    .await
    .unwrap();
    let next: Value = audit(Some(cursor)).send().await.unwrap().json().await.unwrap();
    let ids: Vec<&str> = next["items"].as_array().unwrap().iter().map(|item| item["event_id"].as_str().unwrap()).collect();
    assert!(ids.contains(&late.to_string().as_str()), "{next}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_characters_in_free_text_are_a_bad_request_not_a_server_error() {
    let env = TestEnv::new().await;
    let app = App::spawn(&env, Roles { gateway: true, processors: false, projections: false }).await;
    let ana = Caller::register(&app.base_url, "ana").await;
    for title in ["nul \u{0} inside", "escape \u{1b}[31m red"] {
        let response = ana.apply(http().post(app.url("/v1/chat/sessions"))).json(&json!({ "title": title })).send().await.unwrap();
        let body = problem(response, StatusCode::BAD_REQUEST).await;
        assert_eq!(body["field"], "title");
    }
    let session = ana.create_session_id(&app, "fine").await;
    let renamed = ana
        .apply(http().patch(app.url(&format!("/v1/chat/sessions/{session}"))))
        .json(&json!({ "title": "still \u{0} bad" }))
        .send()
        .await
        .unwrap();
    problem(renamed, StatusCode::BAD_REQUEST).await;
    app.stop().await;
}

/// Defect 5: the log must keep every event for ever (anyone may replay it for audit), on every
/// broker. Tansu's maintenance runs every second here; a record thirty days old stays on the
/// event topic, while the same record on the short-retention deltas topic is deleted, which shows
/// that the maintenance did run and would have deleted events under a delete policy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_topics_keep_every_event_while_token_deltas_expire() {
    use rdkafka::admin::{AdminClient, AdminOptions, ResourceSpecifier};
    use rdkafka::client::DefaultClientContext;
    use rdkafka::producer::{FutureProducer, FutureRecord};
    use rdkafka::{ClientConfig, Message};

    let broker = aurora_tests::servers::PrivateTansu::start_with_maintenance("1s");
    let mut env = TestEnv::with_servers(&aurora_tests::admin_database_url(), &broker.brokers()).await;
    // Nothing here waits on a fetch: long fetch waits keep this broker from taking a core from
    // the tests that run beside it (Tansu answers each fetch only after its wait).
    env.config.kafka.fetch_wait = Duration::from_millis(200);
    env.config.kafka.live_fetch_wait = Duration::from_millis(200);
    let app = App::spawn(&env, Roles::ALL).await;
    let ana = Caller::register(&app.base_url, "ana").await;
    let session = ana.create_session_id(&app, "kept for ever").await;
    eventually("the session projected", WAIT, || async {
        let found = ana.apply(http().get(app.url(&format!("/v1/chat/sessions/{session}")))).send().await.unwrap().status();
        (found == StatusCode::OK).then_some(())
    })
    .await;
    let chat_topic = env.topic("chat");
    let deltas_topic = aurora_events::topics::deltas_topic(&env.config.kafka.topic_prefix);

    let admin: AdminClient<DefaultClientContext> = ClientConfig::new().set("bootstrap.servers", broker.brokers()).create().unwrap();
    let options = AdminOptions::new().request_timeout(Some(Duration::from_secs(10)));
    let described =
        admin.describe_configs(&[ResourceSpecifier::Topic(&chat_topic), ResourceSpecifier::Topic(&deltas_topic)], &options).await.unwrap();
    let setting =
        |index: usize, name: &str| described[index].as_ref().expect("a described topic").get(name).and_then(|entry| entry.value.clone());
    assert_eq!(setting(0, "retention.ms").as_deref(), Some("-1"), "events are kept for ever");
    assert_eq!(setting(0, "cleanup.policy"), None, "Tansu deletes by age from any topic that names the delete policy");
    assert_eq!(setting(1, "retention.ms").as_deref(), Some("3600000"));
    assert_eq!(setting(1, "cleanup.policy").as_deref(), Some("delete"));

    let month_ago = chrono::Utc::now().timestamp_millis() - 30 * 24 * 3600 * 1000;
    let producer: FutureProducer = ClientConfig::new().set("bootstrap.servers", broker.brokers()).create().unwrap();
    for topic in [&chat_topic, &deltas_topic] {
        producer
            .send(FutureRecord::to(topic).key("old").payload("a month old").timestamp(month_ago), Duration::from_secs(10))
            .await
            .expect("an old record produced");
    }
    let is_old = |message: &rdkafka::message::OwnedMessage| message.key() == Some(b"old".as_slice());
    eventually("the month-old token delta deleted by the broker's maintenance", WAIT, || async {
        let deltas = read_all(&env.config, &deltas_topic).await;
        (!deltas.iter().any(is_old)).then_some(())
    })
    .await;
    let events = read_all(&env.config, &chat_topic).await;
    assert!(events.iter().any(is_old), "the month-old record on the event topic is still there");
    assert!(
        events.iter().any(|message| message.key().is_some_and(|key| key.ends_with(session.as_bytes()))),
        "and so is the session's event"
    );
    app.stop().await;
}

/// Defect 13: a read model that remembers more of a topic than the broker holds (the broker's log
/// was reset or replaced) raises an alarm instead of passing in silence. (Following added
/// partitions is not tested: Tansu 0.6 does not serve `CreatePartitions`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stored_offset_beyond_the_log_raises_the_reset_alarm() {
    let env = TestEnv::new().await;
    let chat_topic = env.topic("chat");
    aurora_adapters::kafka::ensure_topics(&env.config, std::slice::from_ref(&chat_topic)).await.unwrap();
    sqlx::query("INSERT INTO projection_offsets (projection, topic, partition, next_offset) VALUES ('chat_sessions', $1, 0, 1000000)")
        .bind(&chat_topic)
        .execute(&env.pool)
        .await
        .unwrap();
    let app = App::spawn(&env, Roles::ALL).await;
    let alarm = format!("aurora_consumer_log_resets_total{{consumer=\"chat_sessions\",topic=\"{chat_topic}\"}} 1");
    eventually("the reset alarm on /metrics", WAIT, || async {
        let metrics = http().get(app.url("/metrics")).send().await.unwrap().text().await.unwrap();
        metrics.lines().any(|line| line == alarm).then_some(())
    })
    .await;
    let metrics = http().get(app.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(
        !metrics.lines().any(|line| line.starts_with("aurora_consumer_log_resets_total{consumer=\"audit_log\"")),
        "a consumer whose offsets are within the log raises no alarm:\n{metrics}"
    );
    app.stop().await;
}
