//! `aurora bench backbone`: the event backbone's figures, each beside a raw baseline measured in
//! the same run against the same servers. It works in a database and topic namespace of its own,
//! created for the run and dropped afterwards, so it never touches an installation's data.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use aurora_adapters::config::ExposeSecret;
use aurora_adapters::kafka::{producer_config, OutgoingRecord};
use aurora_adapters::wakeup::LogSignals;
use aurora_adapters::Config;
use aurora_commands::postgres::{envelope_from_row, PostgresEventStore, ENVELOPE_COLUMNS};
use aurora_commands::relay::Relay;
use aurora_commands::{AppendRequest, EventStore, ExpectedVersion, NewEvent};
use aurora_events::{Actor, OrgId, StreamId};
use aurora_projections::runner::ProjectionRunner;
use chrono::{DateTime, Utc};
use indicatif::ProgressBar;
use rdkafka::producer::FutureProducer;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

#[derive(Debug, clap::Args)]
pub struct BackboneOptions {
    /// Seconds each append measurement runs.
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// Events on the log for the relay, projection and replay measurements.
    #[arg(long, default_value_t = 1_000_000)]
    pub events: u64,
    /// Records the raw producer baseline sends (held in memory).
    #[arg(long, default_value_t = 200_000)]
    pub raw_producer_records: u64,
    /// Seconds of steady load for the latency measurement.
    #[arg(long, default_value_t = 20)]
    pub latency_seconds: u64,
    /// Events per second of the steady load.
    #[arg(long, default_value_t = 500)]
    pub latency_rate: u64,
    /// Keep the bench database afterwards.
    #[arg(long)]
    pub keep: bool,
}

struct Figures {
    lines: Vec<String>,
}

impl Figures {
    fn compare(&mut self, what: &str, ours: f64, baseline_name: &str, baseline: f64, target: &str) {
        let ratio = 100.0 * ours / baseline.max(1e-9);
        let line = format!("{what:<44} {ours:>10.0}/s   {baseline_name:<34} {baseline:>10.0}/s   {ratio:>5.0}%   target {target}");
        println!("{line}");
        self.lines.push(line);
    }

    fn single(&mut self, what: &str, text: String, target: &str) {
        let line = format!("{what:<44} {text:<60} target {target}");
        println!("{line}");
        self.lines.push(line);
    }
}

/// A database and topic namespace of a bench run's own.
pub struct BenchWorld {
    pub config: Config,
    database: String,
    admin: PgPool,
}

impl BenchWorld {
    pub async fn create(config: &Config) -> anyhow::Result<Self> {
        let run_id = Uuid::now_v7().simple().to_string();
        let database = format!("aurora_bench_{}", &run_id[..16]);
        let (server, _) =
            config.database.url.expose_secret().rsplit_once('/').ok_or_else(|| anyhow::anyhow!("database url has no database name"))?;
        let admin = aurora_adapters::postgres::connect_url(&format!("{server}/postgres"), 1).await?;
        sqlx::query(&format!("CREATE DATABASE {database}")).execute(&admin).await?;
        let mut config = config.clone();
        config.database.url = format!("{server}/{database}").into();
        config.database.pool_size = 16;
        config.kafka.topic_prefix = format!("bench{}.", &run_id[20..]);
        config.redis.prefix = format!("aurora-bench:{run_id}:");
        eprintln!("bench database {database}, topic prefix {}", config.kafka.topic_prefix);
        Ok(Self { config, database, admin })
    }

    pub async fn drop_unless(self, keep: bool) -> anyhow::Result<()> {
        if !keep {
            sqlx::query(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.database)).execute(&self.admin).await?;
        }
        Ok(())
    }
}

pub async fn backbone(config: &Config, options: BackboneOptions) -> anyhow::Result<()> {
    let world = BenchWorld::create(config).await?;
    let outcome = run_all(&world.config, &options).await;
    world.drop_unless(options.keep).await?;
    outcome
}

async fn run_all(config: &Config, options: &BackboneOptions) -> anyhow::Result<()> {
    let pool = aurora_adapters::postgres::connect(config).await?;
    aurora_commands::migrate(&pool).await?;
    let mut figures = Figures { lines: Vec::new() };
    println!("aurora bench backbone — {} events on the log, {} s per append run", options.events, options.seconds);

    let appends = measure_appends(&pool, options.seconds, false).await?;
    let raw_inserts = measure_raw_inserts(&pool, options.seconds).await?;
    let idempotent_appends = measure_appends(&pool, options.seconds, true).await?;
    figures.compare("appends, 4 writers, expected-version check", appends, "raw single-row INSERT txns, 4 conns", raw_inserts, ">= 60%");
    for length in [1, 1_000, 10_000] {
        let commands = measure_commands(&pool, options.seconds, length).await?;
        figures.compare(
            &format!("  whole commands (load, decide, append), streams of {length} events"),
            commands,
            "raw single-row INSERT txns, 4 conns",
            raw_inserts,
            ">= 60%",
        );
    }
    figures.compare(
        "  the same, each with an idempotency key",
        idempotent_appends,
        "raw single-row INSERT txns, 4 conns",
        raw_inserts,
        "(no target)",
    );

    seed_events(&pool, options.events).await?;
    let relay = measure_relay(config, &pool, options.events).await?;
    let raw_producer = measure_raw_producer(config, &pool, options.raw_producer_records).await?;
    figures.compare("relay onto Kafka", relay, "raw rdkafka producer, same records", raw_producer, ">= 50%");

    let projection = measure_projection(config, &pool, options.events).await?;
    let raw_batched = measure_raw_batched_insert(&pool).await?;
    figures.compare("audit-log projection into Postgres", projection, "raw batched INSERT, same rows", raw_batched, ">= 50%");

    let replay = measure_replay(config, &pool).await?;
    figures.single("replay (full rebuild of audit_log)", format!("{replay:.0} events/s over {} events", options.events), ">= 50000/s");

    let (p50, p99, max, count) = measure_latency(config, &pool, options.latency_rate, options.latency_seconds).await?;
    figures.single(
        &format!("append → read model at {}/s", options.latency_rate),
        format!("p50 {p50:.1} ms, p99 {p99:.1} ms, max {max:.1} ms ({count} events)"),
        "p99 <= 50 ms",
    );
    pool.close().await;
    Ok(())
}

fn bench_request(stream: &StreamId, expected: ExpectedVersion, org: OrgId, idempotent: bool) -> AppendRequest {
    AppendRequest {
        stream: stream.clone(),
        expected,
        command_id: idempotent.then(Uuid::now_v7),
        org_id: org,
        actor: Actor::system("bench"),
        correlation_id: Uuid::now_v7(),
        causation_id: None,
        traceparent: None,
        occurred_at: Utc::now(),
        events: vec![NewEvent {
            event_type: "chat.session_renamed".into(),
            schema_version: 1,
            payload: serde_json::json!({ "title": "bench" }),
        }],
    }
}

/// Single-event appends with an expected version, 4 writers on their own streams; with
/// `idempotent` each also records its command id.
async fn measure_appends(pool: &PgPool, seconds: u64, idempotent: bool) -> anyhow::Result<f64> {
    eprintln!("measuring appends for {seconds} s");
    let store = Arc::new(PostgresEventStore::new(pool.clone()));
    let org = OrgId(Uuid::now_v7());
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let mut writers = tokio::task::JoinSet::new();
    for _ in 0..4 {
        let store = store.clone();
        writers.spawn(async move {
            let streams: Vec<StreamId> = (0..16).map(|_| StreamId::new("chat", Uuid::now_v7().to_string()).unwrap()).collect();
            let mut versions = vec![0u64; streams.len()];
            let mut appended = 0u64;
            while Instant::now() < deadline {
                let index = (appended as usize) % streams.len();
                let expected = if versions[index] == 0 { ExpectedVersion::NoStream } else { ExpectedVersion::Exact(versions[index]) };
                let result = store.append(bench_request(&streams[index], expected, org, idempotent)).await?;
                versions[index] = result.last_version;
                appended += 1;
            }
            anyhow::Ok(appended)
        });
    }
    let mut total = 0;
    while let Some(count) = writers.join_next().await {
        total += count??;
    }
    Ok(total as f64 / started.elapsed().as_secs_f64())
}

/// Whole commands through the command handler — load the stream, decide, append — renaming a
/// chat session, 4 writers, each on its own session of `length` events. Each writer's first
/// command, which reads its stream whole, comes before the clock starts.
async fn measure_commands(pool: &PgPool, seconds: u64, length: u64) -> anyhow::Result<f64> {
    use aurora_domain::chat::{ChatSession, ChatSessionCommand};
    use aurora_events::chat::{ChatSessionEvent, SessionCreated, SessionRenamed};
    eprintln!("measuring whole commands on streams of {length} events for {seconds} s");
    let store = Arc::new(PostgresEventStore::new(pool.clone()));
    let org = OrgId(Uuid::now_v7());
    let mut streams = Vec::new();
    for _ in 0..4 {
        let session_id = Uuid::now_v7();
        let stream = StreamId::new("chat", session_id.to_string())?;
        let mut events = vec![NewEvent::from_payload(&ChatSessionEvent::Created(SessionCreated {
            session_id,
            title: "bench".into(),
            owner: Actor::system("bench"),
            context: None,
        }))];
        events.extend(
            (1..length).map(|n| NewEvent::from_payload(&ChatSessionEvent::Renamed(SessionRenamed { title: format!("bench {n}") }))),
        );
        let mut version = 0;
        for chunk in events.chunks(1000) {
            let mut request =
                bench_request(&stream, if version == 0 { ExpectedVersion::NoStream } else { ExpectedVersion::Exact(version) }, org, false);
            request.events = chunk.to_vec();
            version = store.append(request).await?.last_version;
        }
        streams.push(stream);
    }
    let mut writers = tokio::task::JoinSet::new();
    let start = Arc::new(tokio::sync::Barrier::new(streams.len() + 1));
    for stream in streams {
        let handler = aurora_commands::CommandHandler::new(store.clone());
        let start = start.clone();
        writers.spawn(async move {
            let meta = aurora_commands::CommandMeta::new(org, Actor::system("bench"));
            let rename = |n: u64| ChatSessionCommand::Rename { title: format!("renamed {n}") };
            handler.handle::<ChatSession>(&stream, rename(0), &meta, None).await?;
            // Every writer leaves the barrier at once, when the clock starts.
            start.wait().await;
            let deadline = Instant::now() + Duration::from_secs(seconds);
            let mut handled = 0u64;
            while Instant::now() < deadline {
                handled += 1;
                handler.handle::<ChatSession>(&stream, rename(handled), &meta, None).await?;
            }
            anyhow::Ok(handled)
        });
    }
    start.wait().await;
    let started = Instant::now();
    let mut total = 0;
    while let Some(count) = writers.join_next().await {
        total += count??;
    }
    Ok(total as f64 / started.elapsed().as_secs_f64())
}

/// The baseline: one-row INSERT transactions of a comparable row, 4 connections.
async fn measure_raw_inserts(pool: &PgPool, seconds: u64) -> anyhow::Result<f64> {
    eprintln!("measuring raw inserts for {seconds} s");
    // The same table shape, indexes and row as the event store; just no checks.
    sqlx::query("CREATE TABLE bench_raw_events (LIKE events INCLUDING ALL)").execute(pool).await?;
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let mut writers = tokio::task::JoinSet::new();
    for _ in 0..4 {
        let pool = pool.clone();
        writers.spawn(async move {
            let mut connection = pool.acquire().await?;
            let stream = format!("chat-{}", Uuid::now_v7());
            let org = Uuid::now_v7();
            let mut inserted = 0u64;
            while Instant::now() < deadline {
                sqlx::query(
                    "INSERT INTO bench_raw_events (event_id, stream, stream_version, event_type, schema_version, org_id, actor, \
                     occurred_at, correlation_id, payload) VALUES ($1, $2, $3, 'chat.session_renamed', 1, $4, 'system:bench', $5, $6, $7)",
                )
                .bind(Uuid::now_v7())
                .bind(&stream)
                .bind(inserted as i64 + 1)
                .bind(org)
                .bind(Utc::now())
                .bind(Uuid::now_v7())
                .bind(serde_json::json!({ "title": "bench" }))
                .execute(&mut *connection)
                .await?;
                inserted += 1;
            }
            anyhow::Ok(inserted)
        });
    }
    let mut total = 0;
    while let Some(count) = writers.join_next().await {
        total += count??;
    }
    Ok(total as f64 / started.elapsed().as_secs_f64())
}

/// Fills the event store with `count` events on 100-event streams, in one statement per 100 000.
async fn seed_events(pool: &PgPool, count: u64) -> anyhow::Result<()> {
    eprintln!("seeding {count} events");
    let org = Uuid::now_v7();
    let chunk = 100_000u64;
    let mut start = 0u64;
    while start < count {
        let end = (start + chunk).min(count);
        sqlx::query(
            "INSERT INTO events (event_id, stream, stream_version, event_type, schema_version, org_id, actor, occurred_at, \
             correlation_id, payload) \
             SELECT gen_random_uuid(), 'chat-seed' || (i / 100), (i % 100) + 1, 'chat.session_renamed', 1, $3, 'system:bench', \
                    clock_timestamp(), gen_random_uuid(), jsonb_build_object('title', 'seeded ' || i) \
             FROM generate_series($1::bigint, $2::bigint - 1) AS i",
        )
        .bind(start as i64)
        .bind(end as i64)
        .bind(org)
        .execute(pool)
        .await?;
        start = end;
    }
    // Seeding wrote 100 000 rows per transaction; set their hint bits and statistics now so the
    // relay measures its own work, not the first read after a bulk load.
    sqlx::query("VACUUM (ANALYZE) events").execute(pool).await?;
    Ok(())
}

async fn wait_for(
    what: &str,
    total: u64,
    mut progress: impl FnMut() -> futures::future::BoxFuture<'static, anyhow::Result<u64>>,
) -> anyhow::Result<()> {
    let bar = ProgressBar::new(total);
    bar.set_message(what.to_owned());
    loop {
        let done = progress().await?;
        bar.set_position(done);
        if done >= total {
            bar.finish_and_clear();
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn measure_relay(config: &Config, pool: &PgPool, count: u64) -> anyhow::Result<f64> {
    eprintln!("measuring the relay over {count} events");
    let shutdown = CancellationToken::new();
    let relay = Relay::new(config, pool.clone(), LogSignals::listen(&config.database.url, shutdown.clone()))?;
    let started = Instant::now();
    let task = {
        let shutdown = shutdown.clone();
        tokio::spawn(async move { relay.run(shutdown).await })
    };
    let pool_for_progress = pool.clone();
    wait_for("relaying", count, move || {
        let pool = pool_for_progress.clone();
        Box::pin(async move {
            let relayed = aurora_commands::relay::backlog(&pool).await?;
            let total: i64 = sqlx::query_scalar("SELECT count(*) FROM events").fetch_one(&pool).await?;
            Ok((total - relayed).max(0) as u64)
        })
    })
    .await?;
    let rate = count as f64 / started.elapsed().as_secs_f64();
    shutdown.cancel();
    task.await??;
    Ok(rate)
}

async fn measure_raw_producer(config: &Config, pool: &PgPool, count: u64) -> anyhow::Result<f64> {
    eprintln!("measuring the raw producer over {count} records");
    let rows = sqlx::query(&format!("SELECT {ENVELOPE_COLUMNS} FROM events ORDER BY position LIMIT {count}")).fetch_all(pool).await?;
    let raw_prefix = format!("{}raw.", config.kafka.topic_prefix);
    let mut records = Vec::with_capacity(rows.len());
    for row in &rows {
        records.push(OutgoingRecord::for_envelope(&raw_prefix, &envelope_from_row(row)?));
    }
    drop(rows);
    aurora_adapters::kafka::ensure_topics(config, &[aurora_events::topics::topic_for_category(&raw_prefix, "chat")]).await?;
    let producer: FutureProducer = producer_config(config).create()?;
    let started = Instant::now();
    for batch in records.chunks(config.log.relay_batch as usize) {
        let deliveries: Vec<_> = batch
            .iter()
            .map(|record| {
                let future_record = rdkafka::producer::FutureRecord::to(&record.topic)
                    .key(&record.key)
                    .payload(&record.value)
                    .headers(record.headers.clone());
                producer.send(future_record, Duration::from_secs(60))
            })
            .collect();
        for delivery in futures::future::join_all(deliveries).await {
            delivery.map_err(|(error, _)| error)?;
        }
    }
    Ok(records.len() as f64 / started.elapsed().as_secs_f64())
}

async fn projection_offset_total(pool: &PgPool, projection: &str) -> anyhow::Result<u64> {
    let total: i64 = sqlx::query_scalar("SELECT coalesce(sum(next_offset), 0)::bigint FROM projection_offsets WHERE projection = $1")
        .bind(projection)
        .fetch_one(pool)
        .await?;
    Ok(total as u64)
}

async fn measure_projection(config: &Config, pool: &PgPool, count: u64) -> anyhow::Result<f64> {
    eprintln!("measuring the audit-log projection over {count} events");
    let projection = aurora_projections::projection_named(config, "audit_log").expect("audit_log exists");
    let shutdown = CancellationToken::new();
    let signals = LogSignals::listen(&config.database.url, shutdown.clone());
    let runner = ProjectionRunner::new(projection, pool.clone(), config.clone(), signals);
    let started = Instant::now();
    let task = {
        let shutdown = shutdown.clone();
        tokio::spawn(async move { runner.run(shutdown).await })
    };
    let pool_for_progress = pool.clone();
    wait_for("projecting", count, move || {
        let pool = pool_for_progress.clone();
        Box::pin(async move { projection_offset_total(&pool, "audit_log").await })
    })
    .await?;
    let rate = count as f64 / started.elapsed().as_secs_f64();
    shutdown.cancel();
    task.await??;
    Ok(rate)
}

/// The same rows the projection wrote, inserted again in batches of the projection's size.
async fn measure_raw_batched_insert(pool: &PgPool) -> anyhow::Result<f64> {
    eprintln!("measuring raw batched inserts");
    type Row = (Uuid, Uuid, String, i64, String, i32, String, DateTime<Utc>, Uuid);
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT event_id, org_id, stream, stream_version, event_type, schema_version, actor, occurred_at, correlation_id FROM audit_log",
    )
    .fetch_all(pool)
    .await?;
    sqlx::query("CREATE TABLE bench_raw_audit (LIKE audit_log INCLUDING ALL)").execute(pool).await?;
    let started = Instant::now();
    for batch in rows.chunks(2000) {
        /// The batch column by column, as `unnest` takes it.
        #[derive(Default)]
        struct Columns<'row> {
            event_ids: Vec<Uuid>,
            org_ids: Vec<Uuid>,
            streams: Vec<&'row str>,
            stream_versions: Vec<i64>,
            event_types: Vec<&'row str>,
            schema_versions: Vec<i32>,
            actors: Vec<&'row str>,
            occurred_at: Vec<DateTime<Utc>>,
            correlation_ids: Vec<Uuid>,
        }
        let mut columns = Columns::default();
        for row in batch {
            columns.event_ids.push(row.0);
            columns.org_ids.push(row.1);
            columns.streams.push(&row.2);
            columns.stream_versions.push(row.3);
            columns.event_types.push(&row.4);
            columns.schema_versions.push(row.5);
            columns.actors.push(&row.6);
            columns.occurred_at.push(row.7);
            columns.correlation_ids.push(row.8);
        }
        sqlx::query(
            "INSERT INTO bench_raw_audit (event_id, org_id, stream, stream_version, event_type, schema_version, actor, occurred_at, correlation_id) \
             SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::bigint[], $5::text[], $6::int[], $7::text[], $8::timestamptz[], $9::uuid[])",
        )
        .bind(&columns.event_ids)
        .bind(&columns.org_ids)
        .bind(&columns.streams)
        .bind(&columns.stream_versions)
        .bind(&columns.event_types)
        .bind(&columns.schema_versions)
        .bind(&columns.actors)
        .bind(&columns.occurred_at)
        .bind(&columns.correlation_ids)
        .execute(pool)
        .await?;
    }
    Ok(rows.len() as f64 / started.elapsed().as_secs_f64())
}

async fn measure_replay(config: &Config, pool: &PgPool) -> anyhow::Result<f64> {
    eprintln!("measuring a full replay of audit_log");
    let projection = aurora_projections::projection_named(config, "audit_log").expect("audit_log exists");
    let report = aurora_projections::replay::rebuild(
        projection,
        config,
        pool,
        &aurora_projections::replay::Unobserved,
        aurora_projections::replay::PartialLog::Refuse,
    )
    .await?;
    Ok(report.events_applied as f64 / report.elapsed.as_secs_f64())
}

/// Appends at a steady rate with the relay and the audit projection running, then reads when each
/// event reached the read model (`audit_log.projected_at`).
async fn measure_latency(config: &Config, pool: &PgPool, rate: u64, seconds: u64) -> anyhow::Result<(f64, f64, f64, usize)> {
    eprintln!("measuring append-to-read-model latency at {rate} events/s for {seconds} s");
    let shutdown = CancellationToken::new();
    let signals = LogSignals::listen(&config.database.url, shutdown.clone());
    let relay = Relay::new(config, pool.clone(), signals.clone())?;
    let projection = aurora_projections::projection_named(config, "audit_log").expect("audit_log exists");
    let runner = ProjectionRunner::new(projection, pool.clone(), config.clone(), signals);
    let relay_task = {
        let shutdown = shutdown.clone();
        tokio::spawn(async move { relay.run(shutdown).await })
    };
    let runner_task = {
        let shutdown = shutdown.clone();
        tokio::spawn(async move { runner.run(shutdown).await })
    };
    // Both first catch up with what the earlier phases left (the relay phase stops once it has
    // published its count, the append phases' events still wait), so that the clock measures
    // steady load, not a backlog drained.
    let total: i64 = sqlx::query_scalar("SELECT count(*) FROM events").fetch_one(pool).await?;
    let pool_for_progress = pool.clone();
    wait_for("catching up before the latency run", total as u64, move || {
        let pool = pool_for_progress.clone();
        Box::pin(async move {
            let backlog = aurora_commands::relay::backlog(&pool).await?;
            let projected: i64 = sqlx::query_scalar("SELECT count(*) FROM audit_log").fetch_one(&pool).await?;
            Ok((total - backlog).min(projected).max(0) as u64)
        })
    })
    .await?;

    let store = Arc::new(PostgresEventStore::new(pool.clone()));
    let org = OrgId(Uuid::now_v7());
    let appended: Arc<tokio::sync::Mutex<HashMap<Uuid, SystemTime>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let writers = 4u64;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..writers {
        let (store, appended, stop, sent) = (store.clone(), appended.clone(), stop.clone(), sent.clone());
        tasks.spawn(async move {
            let mut ticker = tokio::time::interval(Duration::from_secs_f64(writers as f64 / rate as f64));
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let stream = StreamId::new("chat", Uuid::now_v7().to_string()).unwrap();
            let mut version = 0;
            while !stop.load(Ordering::Relaxed) {
                ticker.tick().await;
                let expected = if version == 0 { ExpectedVersion::NoStream } else { ExpectedVersion::Exact(version) };
                let result = store.append(bench_request(&stream, expected, org, false)).await?;
                let at = SystemTime::now();
                version = result.last_version;
                appended.lock().await.insert(result.event_ids[0], at);
                sent.fetch_add(1, Ordering::Relaxed);
            }
            anyhow::Ok(())
        });
    }
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    while let Some(outcome) = tasks.join_next().await {
        outcome??;
    }
    let appended = Arc::try_unwrap(appended).map_err(|_| anyhow::anyhow!("writers still hold the map"))?.into_inner();
    let ids: Vec<Uuid> = appended.keys().copied().collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    let projected: Vec<(Uuid, DateTime<Utc>)> = loop {
        let rows: Vec<(Uuid, DateTime<Utc>)> =
            sqlx::query_as("SELECT event_id, projected_at FROM audit_log WHERE event_id = ANY($1)").bind(&ids).fetch_all(pool).await?;
        if rows.len() == ids.len() || Instant::now() > deadline {
            break rows;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    shutdown.cancel();
    relay_task.await??;
    runner_task.await??;
    anyhow::ensure!(projected.len() == ids.len(), "only {} of {} events reached the read model", projected.len(), ids.len());
    let mut latencies: Vec<f64> = projected
        .iter()
        .map(|(id, at)| {
            let appended_at: DateTime<Utc> = appended[id].into();
            (*at - appended_at).num_microseconds().unwrap_or(0).max(0) as f64 / 1000.0
        })
        .collect();
    latencies.sort_by(f64::total_cmp);
    let percentile = |p: f64| latencies[((latencies.len() as f64 - 1.0) * p).round() as usize];
    Ok((percentile(0.50), percentile(0.99), *latencies.last().unwrap_or(&0.0), latencies.len()))
}
