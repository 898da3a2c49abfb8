//! The skeleton on a multi-broker Kafka: librdkafka's mock cluster (`rdkafka::mocking`), a real
//! implementation of the protocol with consumer groups, an idempotent producer and error
//! injection, stands in for Apache Kafka, which is not packaged for this machine. Postgres is the
//! real one.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aurora_adapters::config::Ownership;
use aurora_adapters::consumer::LiveConsumer;
use aurora_adapters::kafka::{consumer_config, header_str};
use aurora_adapters::wakeup::LogSignals;
use aurora_commands::postgres::PostgresEventStore;
use aurora_commands::{CommandHandler, CommandMeta};
use aurora_domain::chat::{ChatSession, ChatSessionCommand};
use aurora_events::chat::ChatSessionEvent;
use aurora_events::{Actor, EventPayload, OrgId};
use aurora_testkit::scripted_llm::{ScriptedLlm, Step};
use aurora_tests::chat::ChatSocket;
use aurora_tests::kafka::{produce_raw, read_all};
use aurora_tests::{eventually, free_port, http, metric, spawn_aurora_role, App, Caller, Roles, TestEnv};
use rdkafka::message::Message;
use rdkafka::mocking::MockCluster;
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
use serde_json::json;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(60);

/// What one member of a group read, and the partitions it holds now.
#[derive(Default)]
struct Reading {
    records: Vec<(i32, i64)>,
    partitions: Vec<i32>,
}

/// A member of group `name` that stores, like a projection, the next offset of each record it
/// reads; runs until `stop`.
fn member(env: &TestEnv, name: &'static str, topic: &str, stop: CancellationToken) -> Arc<Mutex<Reading>> {
    let reading = Arc::new(Mutex::new(Reading::default()));
    let (config, pool, topic, seen) = (env.config.clone(), env.pool.clone(), topic.to_owned(), reading.clone());
    tokio::spawn(async move {
        let signals = LogSignals::listen(&config.database.url, stop.clone());
        let settings = consumer_config(&config, &format!("{}{name}", config.kafka.topic_prefix));
        let mut consumer = LiveConsumer::join_group(name, settings, std::slice::from_ref(&topic), pool.clone(), &signals).await.unwrap();
        loop {
            let received = tokio::select! {
                _ = stop.cancelled() => return,
                received = tokio::time::timeout(Duration::from_millis(100), consumer.recv()) => received,
            };
            // A consume error (a broker of the mock cluster slow to answer on a loaded machine)
            // is passed over, as the processors' consume loop does: librdkafka reconnects.
            if let Ok(Ok(message)) = received {
                store_next(&pool, name, &topic, message.partition(), message.offset() + 1).await;
                seen.lock().unwrap().records.push((message.partition(), message.offset()));
            }
            seen.lock().unwrap().partitions = consumer.partitions().into_iter().map(|(_, partition)| partition).collect();
        }
    });
    reading
}

async fn store_next(pool: &PgPool, name: &str, topic: &str, partition: i32, next: i64) {
    sqlx::query(
        "INSERT INTO projection_offsets (projection, topic, partition, next_offset) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (projection, topic, partition) DO UPDATE SET next_offset = EXCLUDED.next_offset",
    )
    .bind(name)
    .bind(topic)
    .bind(partition)
    .bind(next)
    .execute(pool)
    .await
    .unwrap();
}

/// Ten records on each of the four partitions (the mock cluster partitions keys by hash).
async fn produce(env: &TestEnv, topic: &str, round: u32) {
    for index in 0..40 {
        produce_raw(&env.config, topic, &format!("key-{round}-{index}"), &[], b"{}").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_members_share_partitions_each_read_from_its_stored_offset() {
    let cluster = MockCluster::new(3).unwrap();
    let mut env = TestEnv::new().await;
    env.config.kafka.brokers = cluster.bootstrap_servers();
    let topic = env.topic("groups");
    cluster.create_topic(&topic, 4, 3).unwrap();
    produce(&env, &topic, 0).await;
    let before: Vec<(i32, i64)> = read_all(&env.config, &topic).await.iter().map(|record| (record.partition(), record.offset())).collect();
    // What a first instance applied before it stopped: the first three records of partition 0.
    store_next(&env.pool, "members", &topic, 0, 3).await;

    let (stop_a, stop_b) = (CancellationToken::new(), CancellationToken::new());
    let a = member(&env, "members", &topic, stop_a.clone());
    let b = member(&env, "members", &topic, stop_b.clone());
    eventually("both members holding partitions", WAIT, || async {
        let (a, b) = (a.lock().unwrap().partitions.len(), b.lock().unwrap().partitions.len());
        (a > 0 && b > 0 && a + b == 4).then_some(())
    })
    .await;
    let expected: HashSet<(i32, i64)> = before.iter().copied().filter(|(partition, offset)| *partition != 0 || *offset >= 3).collect();
    eventually("every record not yet applied read once", WAIT, || async {
        let read = a.lock().unwrap().records.len() + b.lock().unwrap().records.len();
        (read >= expected.len()).then_some(())
    })
    .await;
    let (a_records, b_records) = (a.lock().unwrap().records.clone(), b.lock().unwrap().records.clone());
    assert!(!a_records.is_empty() && !b_records.is_empty(), "both members read");
    let a_partitions: HashSet<i32> = a_records.iter().map(|(partition, _)| *partition).collect();
    assert!(b_records.iter().all(|(partition, _)| !a_partitions.contains(partition)), "a partition is read by one member");
    let mut read: Vec<(i32, i64)> = a_records.into_iter().chain(b_records).collect();
    read.sort_unstable();
    let mut wanted: Vec<(i32, i64)> = expected.into_iter().collect();
    wanted.sort_unstable();
    assert_eq!(read, wanted, "each record from the stored offsets on, once");

    // One member leaves: the other takes its partitions over at the offsets it stored.
    stop_b.cancel();
    eventually("the remaining member holding every partition", WAIT, || async { (a.lock().unwrap().partitions.len() == 4).then_some(()) })
        .await;
    produce(&env, &topic, 1).await;
    eventually("the new records read", WAIT, || async {
        (a.lock().unwrap().records.len() + b.lock().unwrap().records.len() >= 37 + 40).then_some(())
    })
    .await;
    let a_records = a.lock().unwrap().records.clone();
    let b_count = b.lock().unwrap().records.len();
    let mut all: Vec<(i32, i64)> = a_records.into_iter().chain(b.lock().unwrap().records.clone()).collect();
    let total = all.len();
    all.sort_unstable();
    all.dedup();
    assert_eq!(all.len(), total, "no record read twice across the handover ({b_count} by the member that left)");
    assert_eq!(total, 37 + 40);
    stop_a.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn projections_in_group_mode_build_the_read_model_across_instances() {
    let mut env = TestEnv::new().await;
    let _cluster = cluster_for(&mut env);
    env.config.kafka.ownership = Ownership::Group;
    let first = App::spawn(&env, Roles { gateway: false, processors: true, projections: true }).await;
    let second = App::spawn(&env, Roles { gateway: false, processors: false, projections: true }).await;
    let sessions = create_sessions(&env, 30).await;
    all_projected(&env, &sessions).await;
    // Stopping one instance hands its partitions to the other, which goes on from the stored offsets.
    first.stop().await;
    let relay = App::spawn(&env, Roles { gateway: false, processors: true, projections: false }).await;
    let more = create_sessions(&env, 10).await;
    all_projected(&env, &more).await;
    let offsets: Vec<(i32, i64)> =
        sqlx::query_as("SELECT partition, next_offset FROM projection_offsets WHERE projection = 'chat_sessions' ORDER BY partition")
            .fetch_all(&env.pool)
            .await
            .unwrap();
    let on_topic = read_all(&env.config, &env.topic("chat")).await;
    let mut ends: BTreeMap<i32, i64> = BTreeMap::new();
    for record in &on_topic {
        let end = ends.entry(record.partition()).or_default();
        *end = (*end).max(record.offset() + 1);
    }
    assert_eq!(offsets, ends.into_iter().collect::<Vec<_>>(), "every partition applied to its end");
    relay.stop().await;
    second.stop().await;
}

/// A mock cluster with every topic Aurora uses (the mock serves no admin API to create them).
fn cluster_for(env: &mut TestEnv) -> MockCluster<'static, rdkafka::producer::DefaultProducerContext> {
    let cluster = MockCluster::new(3).unwrap();
    env.config.kafka.brokers = cluster.bootstrap_servers();
    let prefix = &env.config.kafka.topic_prefix;
    let mut topics = aurora_events::topics::all_event_topics(prefix);
    topics.push(aurora_events::topics::dead_letter_topic(prefix));
    topics.push(aurora_events::topics::deltas_topic(prefix));
    for topic in topics {
        cluster.create_topic(&topic, env.config.kafka.topic_partitions, 3).unwrap();
    }
    cluster
}

/// Waits until every one of `sessions` is in the chat sessions read model.
async fn all_projected(env: &TestEnv, sessions: &[Uuid]) {
    eventually("every session in the read model", WAIT, || async {
        let count: i64 = sqlx::query_scalar("SELECT count(*) FROM chat_sessions WHERE session_id = ANY($1)")
            .bind(sessions)
            .fetch_one(&env.pool)
            .await
            .unwrap();
        (count == sessions.len() as i64).then_some(())
    })
    .await;
}

async fn create_sessions(env: &TestEnv, count: usize) -> Vec<Uuid> {
    let commands = CommandHandler::new(Arc::new(PostgresEventStore::new(env.pool.clone())));
    let (org, user) = (OrgId(Uuid::now_v7()), Uuid::now_v7());
    let mut sessions = Vec::new();
    for index in 0..count {
        let session_id = Uuid::now_v7();
        let command = ChatSessionCommand::Create { session_id, title: format!("session {index}"), owner: Actor::user(user), context: None };
        commands
            .handle::<ChatSession>(&ChatSessionEvent::stream_of(session_id), command, &CommandMeta::new(org, Actor::user(user)), None)
            .await
            .unwrap();
        sessions.push(session_id);
    }
    aurora_commands::relay::wake(&env.pool).await;
    sessions
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_loses_and_duplicates_nothing_through_request_errors_and_a_broker_down() {
    let mut env = TestEnv::new().await;
    let cluster = cluster_for(&mut env);
    let chat = env.topic("chat");
    let app = App::spawn(&env, Roles { gateway: false, processors: true, projections: true }).await;
    let mut sessions = create_sessions(&env, 10).await;

    // Produce requests fail for a while, as when partition leadership moves.
    cluster.request_errors(
        RDKafkaApiKey::Produce,
        &[
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION,
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT,
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS,
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_LEADER_NOT_AVAILABLE,
        ],
    );
    sessions.extend(create_sessions(&env, 10).await);
    // Leadership of every partition moves to broker 2, which then goes down for a while.
    for partition in 0..env.config.kafka.topic_partitions {
        cluster.partition_leader(&chat, partition, Some(2)).unwrap();
    }
    sessions.extend(create_sessions(&env, 10).await);
    cluster.broker_down(2).unwrap();
    sessions.extend(create_sessions(&env, 10).await);
    tokio::time::sleep(Duration::from_secs(2)).await;
    cluster.broker_up(2).unwrap();
    sessions.extend(create_sessions(&env, 10).await);

    let created: Vec<Uuid> =
        sqlx::query_scalar("SELECT event_id FROM events WHERE event_type = 'chat.session_created' AND stream = ANY($1)")
            .bind(sessions.iter().map(|session| format!("chat-{session}")).collect::<Vec<_>>())
            .fetch_all(&env.pool)
            .await
            .unwrap();
    assert_eq!(created.len(), 50);
    let records = eventually("every event on the topic", WAIT, || async {
        let records = read_all(&env.config, &chat).await;
        (records.len() >= created.len()).then_some(records)
    })
    .await;
    let ids: Vec<String> = records.iter().map(|record| header_str(record, "ce_id").unwrap().to_owned()).collect();
    let distinct: HashSet<&String> = ids.iter().collect();
    assert_eq!(ids.len(), distinct.len(), "no event published twice");
    assert!(created.iter().all(|id| distinct.contains(&id.to_string())), "every event published");
    all_projected(&env, &sessions).await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agents_of_two_processes_share_the_chat_partitions_and_answer_each_question_once() {
    let llm = ScriptedLlm::start().await;
    let mut env = TestEnv::new().await;
    let _cluster = cluster_for(&mut env);
    env.config.kafka.ownership = Ownership::Group;
    env.config.llm.base_url = llm.base_url.clone();
    let here = App::spawn(&env, Roles::ALL).await;
    let there_url = format!("http://127.0.0.1:{}", free_port());
    let _there = spawn_aurora_role(
        &env,
        &["up"],
        &[
            ("AURORA_HTTP_ADDR", there_url.trim_start_matches("http://")),
            ("AURORA_KAFKA_OWNERSHIP", "group"),
            ("AURORA_LLM_BASE_URL", &llm.base_url),
        ],
    );
    let agent_partitions = r#"aurora_consumer_partitions{consumer="processor:agent"}"#;
    eventually("both agents reading chat partitions", WAIT, || async {
        let there = match http().get(format!("{there_url}/healthz")).send().await {
            Ok(_) => metric(&there_url, agent_partitions).await,
            Err(_) => 0,
        };
        let here = metric(&here.base_url, agent_partitions).await;
        (here > 0 && there > 0 && here + there == i64::from(env.config.kafka.topic_partitions)).then_some(())
    })
    .await;

    let ana = Caller::register(&here.base_url, "ana").await;
    let mut socket = ChatSocket::open(&here.base_url, &ana).await;
    let questions: Vec<String> = (0..8).map(|index| format!("is service {index} healthy?")).collect();
    for question in &questions {
        llm.script(question, vec![Step::text(&format!("yes: {question}"))]);
        socket.request(json!({ "type": "query", "text": question, "mode": "ask" })).await;
    }
    let answered = |frames: &[serde_json::Value]| {
        questions.iter().all(|question| {
            let answer = format!("yes: {question}");
            frames.iter().any(|frame| frame["type"] == "chat.assistant_message_completed" && frame["payload"]["text"] == answer.as_str())
        })
    };
    while !answered(&socket.frames) {
        socket.event("chat.assistant_message_completed").await;
    }
    for question in &questions {
        assert_eq!(llm.requests_for(question).len(), 1, "{question} was put to the model once");
    }
    socket.close().await;
    here.stop().await;
}

/// The mock cluster keeps at most 5 MB of each partition's log and drops the oldest records
/// beyond that, as retention would: the one way here to make a log that lost its first records
/// (Tansu 0.6 panics on DeleteRecords).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_refuses_a_log_that_lost_its_first_records_unless_forced() {
    let mut env = TestEnv::new().await;
    let _cluster = cluster_for(&mut env);
    let app = App::spawn(&env, Roles { gateway: false, processors: true, projections: true }).await;
    let sessions = create_sessions(&env, 5).await;
    all_projected(&env, &sessions).await;
    app.stop().await;

    let chat = env.topic("chat");
    let filler = vec![b'x'; 100_000];
    for _ in 0..60 {
        produce_raw(&env.config, &chat, "filler", &[], &filler).await;
    }
    let consumer = aurora_adapters::kafka::standalone_consumer(&env.config).unwrap();
    let topic = chat.clone();
    let marks = tokio::task::spawn_blocking(move || {
        aurora_adapters::kafka::partition_watermarks(&consumer, &topic, Duration::from_secs(10)).unwrap()
    })
    .await
    .unwrap();
    assert!(marks.iter().any(|(_, low, _)| *low > 0), "the broker dropped the oldest records: {marks:?}");

    let refused = aurora_tests::spawn_aurora(&env, &["replay", "chat_sessions"], &[]).wait_with_output().await.unwrap();
    assert!(!refused.status.success());
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(said.contains("no longer starts at offset 0") && said.contains("--force"), "{said}");
    let kept: i64 = sqlx::query_scalar("SELECT count(*) FROM chat_sessions WHERE session_id = ANY($1)")
        .bind(&sessions)
        .fetch_one(&env.pool)
        .await
        .unwrap();
    assert_eq!(kept, 5, "the live read model is kept");

    let forced = aurora_tests::spawn_aurora(&env, &["replay", "chat_sessions", "--force"], &[]).wait_with_output().await.unwrap();
    assert!(forced.status.success(), "{}", String::from_utf8_lossy(&forced.stderr));
}
