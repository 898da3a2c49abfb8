//! The log as its consumers see it: records in the CloudEvents binding, nothing skipped, poison
//! records dead-lettered, the figures on /metrics, and the operator tools on the command line.

use std::time::Duration;

use aurora_adapters::kafka::{header_str, DLQ_ERROR, DLQ_OFFSET, DLQ_TOPIC};
use aurora_tests::kafka::{produce_raw, read_all};
use aurora_tests::{distinct_envelopes, eventually, http, spawn_aurora, write_burst, App, Caller, Roles, TestEnv};
use rdkafka::message::Message;
use serde_json::{json, Value};
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(60);

async fn metric(app: &App, name: &str) -> i64 {
    let text = http().get(app.url("/metrics")).send().await.unwrap().text().await.unwrap();
    text.lines()
        .find(|line| line.starts_with(name) && line[name.len()..].starts_with(' '))
        .and_then(|line| line.rsplit(' ').next())
        .map(|value| value.parse().unwrap())
        .unwrap_or_else(|| panic!("{name} missing from /metrics:\n{text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relayed_records_follow_the_cloudevents_kafka_binding() {
    let env = TestEnv::new().await;
    let app = App::spawn(&env, Roles::ALL).await;
    let ana = Caller::register(&app.base_url, "ana").await;
    let created: Value = ana
        .apply(http().post(app.url("/v1/chat/sessions")))
        .header("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
        .json(&json!({ "title": "on the wire" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let topic = env.topic("chat");
    let records = eventually("the event on kafka", WAIT, || async {
        let records = read_all(&env.config, &topic).await;
        (!records.is_empty()).then_some(records)
    })
    .await;
    let record = &records[0];
    let session_id = created["session_id"].as_str().unwrap();
    assert_eq!(record.key(), Some(format!("chat-{session_id}").as_bytes()));
    assert_eq!(header_str(record, "ce_specversion"), Some("1.0"));
    assert_eq!(header_str(record, "ce_type"), Some("chat.session_created"));
    assert_eq!(header_str(record, "ce_source"), Some("/aurora/chat"));
    assert_eq!(header_str(record, "ce_subject"), Some(format!("chat-{session_id}").as_str()));
    assert_eq!(header_str(record, "ce_id"), created["event_ids"][0].as_str());
    assert_eq!(header_str(record, "content-type"), Some("application/json"));
    assert_eq!(header_str(record, "ce_auroraorg"), Some(ana.org.to_string().as_str()));
    assert_eq!(header_str(record, "ce_auroraactor"), Some(format!("user:{}", ana.user_id).as_str()));
    assert_eq!(header_str(record, "ce_aurorastreamversion"), Some("1"));
    // The caller's trace, continued in the gateway's own span.
    let traceparent = header_str(record, "ce_traceparent").unwrap();
    assert!(traceparent.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"), "{traceparent}");
    assert!(!traceparent.contains("00f067aa0ba902b7"), "{traceparent}");
    assert!(header_str(record, "ce_time").unwrap().ends_with('Z'));
    let value: Value = serde_json::from_slice(record.payload().unwrap()).unwrap();
    assert_eq!(value["title"], "on the wire");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_whose_transaction_commits_late_is_not_skipped() {
    let env = TestEnv::new().await;
    let app = App::spawn(&env, Roles { gateway: false, processors: true, projections: false }).await;
    let org = Uuid::now_v7();
    let append = "SELECT last_version FROM aurora_append($1, 0, NULL, ARRAY[$2::uuid], ARRAY['chat.session_created'], \
                  ARRAY[1], ARRAY[$3::jsonb], $4, 'system:test', now(), $2, NULL, NULL)";
    let payload = |session_id: Uuid| json!({ "session_id": session_id, "title": "t", "owner": format!("user:{}", Uuid::nil()) });

    // The early transaction takes its position first and commits last.
    let (early_session, early_event) = (Uuid::now_v7(), Uuid::now_v7());
    let mut early = env.pool.begin().await.unwrap();
    sqlx::query(append)
        .bind(format!("chat-{early_session}"))
        .bind(early_event)
        .bind(payload(early_session))
        .bind(org)
        .execute(&mut *early)
        .await
        .unwrap();
    let (late_session, late_event) = (Uuid::now_v7(), Uuid::now_v7());
    sqlx::query(append)
        .bind(format!("chat-{late_session}"))
        .bind(late_event)
        .bind(payload(late_session))
        .bind(org)
        .execute(&env.pool)
        .await
        .unwrap();
    // Give the relay ample time to pass the later position while the early one is uncommitted.
    tokio::time::sleep(Duration::from_millis(500)).await;
    early.commit().await.unwrap();

    let topic = env.topic("chat");
    let ids = eventually("both events on kafka", WAIT, || async {
        let ids: Vec<Uuid> = distinct_envelopes(&read_all(&env.config, &topic).await).iter().map(|envelope| envelope.id).collect();
        (ids.len() == 2).then_some(ids)
    })
    .await;
    assert!(ids.contains(&early_event) && ids.contains(&late_event));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_record_is_dead_lettered_and_the_consumer_moves_on() {
    let env = TestEnv::new().await;
    let app = App::spawn(&env, Roles::ALL).await;
    let topic = env.topic("chat");
    // Make sure the topic exists, then put a record on it that no Aurora consumer can read.
    let ana = Caller::register(&app.base_url, "ana").await;
    let create = |title: &'static str| ana.apply(http().post(app.url("/v1/chat/sessions"))).json(&json!({ "title": title })).send();
    create("before").await.unwrap();
    eventually("the first session projected", WAIT, || async {
        (env.count("SELECT count(*) FROM chat_sessions").await == 1).then_some(())
    })
    .await;
    produce_raw(&env.config, &topic, "chat-garbage", &[("ce_specversion", "1.0")], b"{ not json").await;
    create("after").await.unwrap();

    eventually("the session after the poison record projected", WAIT, || async {
        (env.count("SELECT count(*) FROM chat_sessions").await == 2
            && env.count("SELECT count(*) FROM audit_log WHERE stream LIKE 'chat-%'").await == 2)
            .then_some(())
    })
    .await;
    // Every projection of the chat topic, and the processors that index finished chat turns and
    // follow investigations' sessions.
    let chat_projections =
        aurora_projections::all_projections(&env.config).iter().filter(|projection| projection.categories().contains(&"chat")).count() + 2;
    let dead_letters = eventually("dead letters", WAIT, || async {
        let records = read_all(&env.config, &aurora_events::topics::dead_letter_topic(&env.config.kafka.topic_prefix)).await;
        (records.len() >= chat_projections).then_some(records)
    })
    .await;
    // Every consumer of the chat topic that reads it record by record gave up on it, each once, and said why.
    assert_eq!(dead_letters.len(), chat_projections);
    for record in &dead_letters {
        assert_eq!(record.payload(), Some(&b"{ not json"[..]));
        assert_eq!(record.key(), Some(&b"chat-garbage"[..]));
        assert_eq!(header_str(record, DLQ_TOPIC), Some(topic.as_str()));
        assert!(header_str(record, DLQ_OFFSET).is_some());
        assert!(header_str(record, DLQ_ERROR).unwrap().contains("not an Aurora CloudEvent"), "{:?}", header_str(record, DLQ_ERROR));
    }
    eventually("the dead letters to be sampled", WAIT, || async {
        (metric(&app, "aurora_dead_letters_total").await == chat_projections as i64).then_some(())
    })
    .await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_report_relay_backlog_and_projection_lag() {
    let env = TestEnv::new().await;
    let gateway = App::spawn(&env, Roles { gateway: true, processors: false, projections: false }).await;
    write_burst(&env.pool, Uuid::now_v7(), 5, 4, 2).await;
    assert_eq!(metric(&gateway, "aurora_events_appended_total").await, 20);
    eventually("the backlog to be sampled", WAIT, || async { (metric(&gateway, "aurora_relay_backlog").await == 20).then_some(()) }).await;

    let relay = App::spawn(&env, Roles { gateway: false, processors: true, projections: false }).await;
    eventually("the relay to drain", WAIT, || async { (metric(&gateway, "aurora_relay_backlog").await == 0).then_some(()) }).await;
    let lag = eventually("lag to show", WAIT, || async {
        let text = http().get(gateway.url("/metrics")).send().await.unwrap().text().await.unwrap();
        text.contains("aurora_projection_consumer_lag{projection=\"audit_log\"} 20").then_some(text)
    })
    .await;
    assert!(lag.contains("aurora_projection_consumer_lag{projection=\"chat_sessions\"} 20"), "{lag}");

    let projections = App::spawn(&env, Roles { gateway: false, processors: false, projections: true }).await;
    eventually("lag to reach zero", WAIT, || async {
        let text = http().get(gateway.url("/metrics")).send().await.unwrap().text().await.unwrap();
        (text.contains("aurora_projection_consumer_lag{projection=\"audit_log\"} 0")
            && text.contains("aurora_projection_consumer_lag{projection=\"chat_sessions\"} 0"))
        .then_some(())
    })
    .await;
    projections.stop().await;
    relay.stop().await;
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_tail_and_audit_export_on_the_command_line() {
    let env = TestEnv::new().await;
    let app = App::spawn(&env, Roles { gateway: false, processors: true, projections: true }).await;
    let org = Uuid::now_v7();
    let ids = write_burst(&env.pool, org, 3, 2, 1).await;
    eventually("the audit log to fill", WAIT, || async { (env.count("SELECT count(*) FROM audit_log").await == 6).then_some(()) }).await;

    let tail = spawn_aurora(&env, &["events", "tail", "--from-beginning", "--limit", "6"], &[]);
    let output = tokio::time::timeout(WAIT, tail.wait_with_output()).await.expect("tail finishes").unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let lines: Vec<Value> = String::from_utf8(output.stdout).unwrap().lines().map(|line| serde_json::from_str(line).unwrap()).collect();
    assert_eq!(lines.len(), 6);
    for line in &lines {
        assert_eq!(line["specversion"], "1.0");
        assert_eq!(line["source"], "/aurora/chat");
        assert_eq!(line["auroraorg"], org.to_string());
        assert!(ids.iter().any(|id| line["id"] == id.to_string()));
        assert!(line["data"].is_object());
    }

    let out = std::env::temp_dir().join(format!("aurora-audit-{}.jsonl", Uuid::now_v7()));
    let export = spawn_aurora(&env, &["audit", "export", "--out", out.to_str().unwrap()], &[]);
    let output = tokio::time::timeout(WAIT, export.wait_with_output()).await.unwrap().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let exported: Vec<Value> = std::fs::read_to_string(&out).unwrap().lines().map(|line| serde_json::from_str(line).unwrap()).collect();
    std::fs::remove_file(&out).unwrap();
    assert_eq!(exported.len(), 6);
    assert!(exported.iter().all(|line| line["org_id"] == org.to_string() && line["actor"] == format!("user:{org}")));
    let mut exported_ids: Vec<String> = exported.iter().map(|line| line["event_id"].as_str().unwrap().to_owned()).collect();
    let mut expected: Vec<String> = ids.iter().map(Uuid::to_string).collect();
    exported_ids.sort();
    expected.sort();
    assert_eq!(exported_ids, expected);

    let unknown = spawn_aurora(&env, &["replay", "no_such_projection"], &[]).wait_with_output().await.unwrap();
    assert!(!unknown.status.success());
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("unknown projection `no_such_projection`"));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_rebuilds_into_fresh_tables_while_the_gateway_keeps_serving() {
    let env = TestEnv::new().await;
    let app = App::spawn(&env, Roles::ALL).await;
    let caller = Caller::register(&app.base_url, "ana").await;
    let org = caller.org;
    let registration = env.count("SELECT count(*) FROM events").await;
    write_burst(&env.pool, org, 50, 10, 2).await;
    eventually("the audit log to fill", WAIT, || async {
        (env.count("SELECT count(*) FROM audit_log").await == registration + 500).then_some(())
    })
    .await;
    // A row no event explains: a rebuild from the log must not carry it over.
    sqlx::query(
        "INSERT INTO audit_log (event_id, org_id, stream, stream_version, event_type, schema_version, actor, occurred_at, correlation_id) \
                 VALUES ($1, $2, 'chat-stray', 1, 'chat.session_created', 1, 'user:stray', now(), $1)",
    )
    .bind(Uuid::now_v7())
    .bind(org)
    .execute(&env.pool)
    .await
    .unwrap();

    let replay = spawn_aurora(&env, &["replay", "audit_log"], &[]);
    // Meanwhile: more writes, and reads that must keep answering.
    let writer = {
        let pool = env.pool.clone();
        tokio::spawn(async move { write_burst(&pool, org, 10, 5, 1).await })
    };
    let mut answered = 0;
    let replay = {
        let mut replay = replay;
        loop {
            let response = caller.apply(http().get(format!("{}/v1/audit?limit=10", app.base_url))).send().await.unwrap();
            assert_eq!(response.status(), reqwest::StatusCode::OK);
            answered += 1;
            if let Some(status) = replay.try_wait().unwrap() {
                assert!(status.success());
                break replay;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let output = replay.wait_with_output().await.unwrap();
    assert!(String::from_utf8_lossy(&output.stderr).contains("rebuilt audit_log"), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(answered > 0);
    writer.await.unwrap();

    eventually("every event in the rebuilt audit log, once", WAIT, || async {
        (env.count("SELECT count(*) FROM audit_log").await == registration + 550).then_some(())
    })
    .await;
    assert_eq!(env.count("SELECT count(*) FROM audit_log WHERE stream = 'chat-stray'").await, 0);
    assert_eq!(env.count("SELECT count(*) FROM audit_log a JOIN events e USING (event_id)").await, registration + 550);
    // The swapped-in table shows the organisation its rows, and only through its policy.
    let page: Value = caller.apply(http().get(format!("{}/v1/audit?limit=10", app.base_url))).send().await.unwrap().json().await.unwrap();
    assert_eq!(page["items"].as_array().unwrap().len(), 10);
    assert_eq!(env.count("SELECT count(*) FROM pg_tables WHERE tablename LIKE 'audit_log__%'").await, 0);
    // The live consumer carries on into the swapped-in table.
    write_burst(&env.pool, org, 1, 1, 1).await;
    eventually("a new event after the swap", WAIT, || async {
        (env.count("SELECT count(*) FROM audit_log").await == registration + 551).then_some(())
    })
    .await;
    app.stop().await;
}
