//! Crashes and outages: a relay or projection killed mid-burst, a graceful stop, a broker restart
//! and a Postgres restart during a burst. Each loses no event and duplicates no read-model row.
//! These tests run one at a time (see .config/nextest.toml): they kill processes and servers.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use aurora_tests::kafka::read_all;
use aurora_tests::servers::{PrivatePostgres, PrivateTansu};
use aurora_tests::{
    assert_stream_order, distinct_envelopes, eventually, spawn_aurora, spawn_aurora_role, terminate, write_burst, App, Roles, TestEnv,
};
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(90);

/// Every event of the event store is on Kafka, each stream in order.
async fn assert_log_complete(env: &TestEnv, expected: &[Uuid]) {
    let topic = env.topic("chat");
    let envelopes = eventually("every event on kafka", WAIT, || async {
        let envelopes = distinct_envelopes(&read_all(&env.config, &topic).await);
        (envelopes.len() >= expected.len()).then_some(envelopes)
    })
    .await;
    let on_kafka: HashSet<Uuid> = envelopes.iter().map(|envelope| envelope.id).collect();
    let appended: HashSet<Uuid> = expected.iter().copied().collect();
    assert_eq!(on_kafka, appended, "kafka holds exactly the appended events");
    assert_stream_order(&envelopes);
}

/// The read models hold each event exactly once and the offsets sit at the end of the log.
async fn assert_read_models_complete(env: &TestEnv, expected_events: i64, streams: i64, versions_per_stream: i64) {
    eventually("the audit log to hold every event", WAIT, || async {
        (env.count("SELECT count(*) FROM audit_log").await == expected_events).then_some(())
    })
    .await;
    assert_eq!(env.count("SELECT count(*) FROM audit_log a JOIN events e USING (event_id)").await, expected_events);
    eventually("every session at its last version", WAIT, || async {
        let at_last = env.count(&format!("SELECT count(*) FROM chat_sessions WHERE version = {versions_per_stream}")).await;
        (at_last == streams).then_some(())
    })
    .await;
    assert_eq!(env.count("SELECT count(*) FROM chat_sessions").await, streams);
    // Each projection consumed every record of the topic exactly up to its end.
    let records = read_all(&env.config, &env.topic("chat")).await;
    let mut ends: BTreeMap<i32, i64> = BTreeMap::new();
    for record in &records {
        let end = ends.entry(rdkafka::Message::partition(record)).or_insert(0);
        *end = (*end).max(rdkafka::Message::offset(record) + 1);
    }
    // The relay may have republished a tail of duplicates that the projections are still reading
    // past (they change no row): wait for the offsets rather than catch them mid-way.
    for projection in ["audit_log", "chat_sessions"] {
        eventually(&format!("{projection} offsets at the end of the log"), WAIT, || async {
            let stored: Vec<(i32, i64)> = sqlx::query_as(
                "SELECT partition, next_offset FROM projection_offsets WHERE projection = $1 AND topic = $2 ORDER BY partition",
            )
            .bind(projection)
            .bind(env.topic("chat"))
            .fetch_all(&env.pool)
            .await
            .unwrap();
            let stored: BTreeMap<i32, i64> = stored.into_iter().collect();
            (stored == ends).then_some(())
        })
        .await;
    }
    assert_eq!(env.count("SELECT count(*) FROM audit_log").await, expected_events, "no row added by the duplicates");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_killed_mid_burst_loses_nothing_and_keeps_stream_order() {
    let env = TestEnv::new().await;
    let org = Uuid::now_v7();
    let relay = spawn_aurora_role(&env, &["processors"], &[("AURORA_RELAY_BATCH", "50")]);
    let burst = {
        let pool = env.pool.clone();
        tokio::spawn(async move { write_burst(&pool, org, 40, 25, 4).await })
    };
    // Kill the relay once it has published part of the burst.
    eventually("the relay to publish part of the burst", WAIT, || async {
        (env.count("SELECT coalesce(max(position), 0) FROM relay_checkpoints").await > 100).then_some(())
    })
    .await;
    let mut relay = relay;
    relay.start_kill().unwrap();
    relay.wait().await.unwrap();
    let written_while_down = env.count("SELECT count(*) FROM events").await;
    let ids = burst.await.unwrap();
    assert!(written_while_down < ids.len() as i64 || written_while_down == 1000, "burst continued across the kill");
    let _restarted = spawn_aurora_role(&env, &["processors"], &[]);
    assert_log_complete(&env, &ids).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn projections_killed_mid_burst_apply_every_event_exactly_once() {
    let env = TestEnv::new().await;
    let org = Uuid::now_v7();
    let relay = App::spawn(&env, Roles { gateway: false, processors: true, projections: false }).await;
    let projections = spawn_aurora_role(&env, &["projections"], &[("AURORA_PROJECTION_BATCH", "20")]);
    let burst = {
        let pool = env.pool.clone();
        tokio::spawn(async move { write_burst(&pool, org, 40, 25, 4).await })
    };
    eventually("the projections to apply part of the burst", WAIT, || async {
        (env.count("SELECT count(*) FROM audit_log").await > 100).then_some(())
    })
    .await;
    let mut projections = projections;
    projections.start_kill().unwrap();
    projections.wait().await.unwrap();
    let ids = burst.await.unwrap();
    let _restarted = spawn_aurora_role(&env, &["projections"], &[]);
    assert_read_models_complete(&env, ids.len() as i64, 40, 25).await;
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_terminated_role_finishes_its_batch_commits_and_exits_cleanly() {
    let env = TestEnv::new().await;
    let relay = App::spawn(&env, Roles { gateway: false, processors: true, projections: false }).await;
    let ids = write_burst(&env.pool, Uuid::now_v7(), 20, 10, 2).await;
    let projections = spawn_aurora(&env, &["projections"], &[("AURORA_PROJECTION_BATCH", "10")]);
    eventually("the projections to start applying", WAIT, || async {
        (env.count("SELECT count(*) FROM audit_log").await > 0).then_some(())
    })
    .await;
    terminate(&projections);
    let output = tokio::time::timeout(Duration::from_secs(30), projections.wait_with_output()).await.expect("exits promptly").unwrap();
    assert!(output.status.success(), "exit status {:?}: {}", output.status, String::from_utf8_lossy(&output.stderr));
    let logged = String::from_utf8_lossy(&output.stderr);
    assert!(logged.lines().any(|line| line.contains("worker stopped") && line.contains("projection audit_log")), "{logged}");
    // What it applied, it also recorded as consumed: nothing is half done.
    let applied = env.count("SELECT count(*) FROM audit_log").await;
    let consumed = env.count("SELECT coalesce(sum(next_offset), 0)::bigint FROM projection_offsets WHERE projection = 'audit_log'").await;
    assert_eq!(applied, consumed);
    let _restarted = spawn_aurora_role(&env, &["projections"], &[]);
    assert_read_models_complete(&env, ids.len() as i64, 20, 10).await;
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_restart_during_a_burst_loses_and_duplicates_nothing() {
    let mut broker = PrivateTansu::start();
    let env = TestEnv::with_servers(&aurora_tests::admin_database_url(), &broker.brokers()).await;
    let app = App::spawn(&env, Roles { gateway: false, processors: true, projections: true }).await;
    let org = Uuid::now_v7();
    let burst = {
        let pool = env.pool.clone();
        tokio::spawn(async move { write_burst(&pool, org, 30, 20, 3).await })
    };
    eventually("part of the burst projected", WAIT, || async { (env.count("SELECT count(*) FROM audit_log").await > 50).then_some(()) })
        .await;
    broker.stop();
    tokio::time::sleep(Duration::from_secs(2)).await;
    broker.resume();
    let ids = burst.await.unwrap();
    assert_log_complete(&env, &ids).await;
    assert_read_models_complete(&env, ids.len() as i64, 30, 20).await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_restart_during_a_burst_loses_and_duplicates_nothing() {
    let postgres = PrivatePostgres::start();
    let env = TestEnv::with_servers(&postgres.admin_url(), &aurora_tests::kafka_brokers()).await;
    let app = App::spawn(&env, Roles { gateway: false, processors: true, projections: true }).await;
    let org = Uuid::now_v7();
    let burst = {
        let pool = env.pool.clone();
        tokio::spawn(async move { write_burst(&pool, org, 30, 20, 3).await })
    };
    eventually("part of the burst projected", WAIT, || async { (env.count("SELECT count(*) FROM audit_log").await > 50).then_some(()) })
        .await;
    postgres.stop();
    tokio::time::sleep(Duration::from_secs(2)).await;
    postgres.resume();
    let ids = burst.await.unwrap();
    assert_eq!(env.count("SELECT count(*) FROM events").await, ids.len() as i64, "every acknowledged append is stored once");
    assert_log_complete(&env, &ids).await;
    assert_read_models_complete(&env, ids.len() as i64, 30, 20).await;
    app.stop().await;
}
