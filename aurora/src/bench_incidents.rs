//! `aurora bench incidents`: how many webhook deliveries Aurora accepts per second with
//! deduplication at 64 concurrent senders, beside a bare axum handler that answers 202 and does
//! nothing (the raw baseline, same client, same machine); and the time from a webhook to
//! `investigation.started` of the incident it opens.
//!
//! Every role runs in this process against the configured Postgres and broker, in a database and
//! topic namespace of its own, with the scripted OpenAI-compatible model standing in for the LLM.
//! The deliveries are Alertmanager notifications, one in ten a redelivery of an earlier one (which
//! the gateway recognises and records nothing for).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aurora::{Application, Role};
use aurora_adapters::Config;
use aurora_testkit::scripted_llm::{ScriptedLlm, Step};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::bench::BenchWorld;
use crate::bench_chat::{percentile, Client};
use crate::bench_cpu::CpuUse;

#[derive(Debug, clap::Args)]
pub struct IncidentOptions {
    /// Concurrent senders.
    #[arg(long, default_value_t = 64)]
    pub senders: usize,
    /// Seconds each throughput run lasts.
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// Incidents opened one after another for the webhook → investigation.started figures.
    #[arg(long, default_value_t = 50)]
    pub investigations: usize,
    /// Keep the bench database afterwards.
    #[arg(long)]
    pub keep: bool,
    /// Run the gateway alone (no processors, no projections): what the webhook handler accepts
    /// when the work behind it runs elsewhere. The investigation figures are skipped.
    #[arg(long)]
    pub gateway_only: bool,
}

fn notification(service: &str, fingerprint: &str) -> String {
    json!({
        "receiver": "aurora", "status": "firing",
        "alerts": [{
            "status": "firing",
            "labels": { "alertname": "BenchAlert", "service": service, "severity": "warning", "instance": fingerprint },
            "annotations": { "summary": "bench alert" },
            "startsAt": "2026-12-01T03:00:00Z", "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "http://prometheus:9090/graph", "fingerprint": fingerprint,
        }],
        "groupLabels": { "alertname": "BenchAlert" }, "commonLabels": {}, "commonAnnotations": {},
        "externalURL": "http://alertmanager:9093", "version": "4", "groupKey": format!("{{}}:{{{fingerprint}}}"), "truncatedAlerts": 0,
    })
    .to_string()
}

struct Run {
    accepted: usize,
    failed: usize,
    elapsed: Duration,
    latencies_ms: Vec<f64>,
}

/// `senders` clients posting for `seconds`; `body(n)` is the n-th request's body.
async fn hammer(url: &str, senders: usize, seconds: u64, body: Arc<dyn Fn(usize) -> String + Send + Sync>) -> anyhow::Result<Run> {
    let client = reqwest::Client::builder().no_proxy().pool_max_idle_per_host(senders).build()?;
    let counter = Arc::new(AtomicUsize::new(0));
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..senders {
        let (client, counter, body, url) = (client.clone(), counter.clone(), body.clone(), url.to_owned());
        tasks.push(tokio::spawn(async move {
            let (mut latencies, mut failed) = (Vec::new(), 0usize);
            while Instant::now() < deadline {
                let index = counter.fetch_add(1, Ordering::Relaxed);
                let sent = Instant::now();
                let response = client.post(&url).header("content-type", "application/json").body(body(index)).send().await;
                match response {
                    Ok(response) if response.status() == reqwest::StatusCode::ACCEPTED => {
                        let _ = response.bytes().await;
                        latencies.push(sent.elapsed().as_secs_f64() * 1000.0);
                    }
                    _ => failed += 1,
                }
            }
            (latencies, failed)
        }));
    }
    let mut run = Run { accepted: 0, failed: 0, elapsed: Duration::ZERO, latencies_ms: Vec::new() };
    for task in tasks {
        let (latencies, failed) = task.await?;
        run.accepted += latencies.len();
        run.failed += failed;
        run.latencies_ms.extend(latencies);
    }
    run.elapsed = started.elapsed();
    run.latencies_ms.sort_by(f64::total_cmp);
    Ok(run)
}

fn print_run(name: &str, run: &Run) {
    println!(
        "  {name:<44} {:>8.0} requests/s accepted   p50 {:>6.2} ms   p99 {:>6.2} ms   ({} accepted, {} failed, {:.1} s)",
        run.accepted as f64 / run.elapsed.as_secs_f64(),
        percentile(&run.latencies_ms, 0.5),
        percentile(&run.latencies_ms, 0.99),
        run.accepted,
        run.failed,
        run.elapsed.as_secs_f64()
    );
}

pub async fn incidents(config: &Config, options: IncidentOptions) -> anyhow::Result<()> {
    let world = BenchWorld::create(config).await?;
    let outcome = run(&world.config, &options).await;
    world.drop_unless(options.keep).await?;
    outcome
}

async fn run(config: &Config, options: &IncidentOptions) -> anyhow::Result<()> {
    aurora_adapters::llm::install_tls_provider();
    let llm = ScriptedLlm::start().await;
    llm.script_containing(
        "Incident: BenchAlert",
        vec![Step::text(
            "{\"summary\": \"bench\", \"root_cause\": {\"confidence\": \"inconclusive\"}, \"evidence\": [], \"impact\": \"none\"}",
        )],
    );
    let mut config = config.clone();
    config.llm.base_url = llm.base_url.clone();
    config.llm.model = "scripted".into();
    config.database.pool_size = 32;
    // The rate limit is counted on every delivery (its cost is in the figures) but not reached.
    config.incident.webhook_rate_limit = u32::MAX;
    let pool = aurora_adapters::postgres::connect(&config).await?;
    aurora_commands::migrate(&pool).await?;

    // The raw baseline: a bare axum handler that answers 202.
    let bare = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let bare_url = format!("http://{}/hook", bare.local_addr()?);
    let bare_app = axum::Router::new().route("/hook", axum::routing::post(|| async { axum::http::StatusCode::ACCEPTED }));
    let bare_server = tokio::spawn(async move { axum::serve(bare, bare_app).await });

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base_url = format!("http://{}", listener.local_addr()?);
    let roles = if options.gateway_only {
        vec![Role::Gateway(listener)]
    } else {
        vec![Role::Gateway(listener), Role::Processors, Role::Projections(Vec::new())]
    };
    let application = Application::start(&config, pool.clone(), roles, CancellationToken::new()).await?;
    let measured = measure(&base_url, &bare_url, &pool, options).await;
    application.stop().await?;
    bare_server.abort();
    pool.close().await;
    measured
}

async fn measure(base_url: &str, bare_url: &str, pool: &sqlx::PgPool, options: &IncidentOptions) -> anyhow::Result<()> {
    let http = reqwest::Client::builder().no_proxy().build()?;
    println!("aurora bench incidents — {} concurrent senders, {} s per run, gateway at {base_url}", options.senders, options.seconds);
    let hook = webhook(base_url).await?;
    let bare = hammer(bare_url, options.senders, options.seconds, Arc::new(|_| notification("bare", "bare"))).await?;
    print_run("bare axum handler answering 202 (baseline)", &bare);
    // One in ten a redelivery of the one ten before; the rest new alerts, fifty to a service.
    let body: Arc<dyn Fn(usize) -> String + Send + Sync> = Arc::new(|index| {
        let alert = if index % 10 == 9 { index - 9 } else { index };
        notification(&format!("service-{}", alert / 50), &format!("fp-{alert}"))
    });
    // A short warm-up (connections, prepared statements), then the measured run on fresh alerts.
    hammer(&hook.url("alertmanager"), options.senders, 2, body.clone()).await?;
    let measured_body: Arc<dyn Fn(usize) -> String + Send + Sync> = Arc::new(move |index| body(index + 1_000_000));
    let cpu = CpuUse::start();
    let aurora = hammer(&hook.url("alertmanager"), options.senders, options.seconds, measured_body).await?;
    let cpu = cpu.and_then(|cpu| cpu.report());
    print_run("aurora webhook (token, parse, dedup, record)", &aurora);
    if let Some(cpu) = cpu {
        println!("  CPU meanwhile, in cores: {cpu}");
    }
    println!(
        "  ratio to the baseline: {:.2}",
        (aurora.accepted as f64 / aurora.elapsed.as_secs_f64()) / (bare.accepted as f64 / bare.elapsed.as_secs_f64())
    );

    if options.gateway_only {
        println!("  (the gateway alone: the intake and the investigation figures need the processors)");
        return Ok(());
    }
    // The intake works through what was accepted; the latency below is measured once it is done.
    let drain_started = Instant::now();
    let mut last = (-1i64, Instant::now());
    let placed = loop {
        let placed: i64 = sqlx::query_scalar("SELECT count(*) FROM incident_intake_alerts").fetch_one(pool).await?;
        if placed != last.0 {
            last = (placed, Instant::now());
        } else if last.1.elapsed() > Duration::from_secs(3) || drain_started.elapsed() > Duration::from_secs(600) {
            break placed;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let drained = last.1.duration_since(drain_started);
    println!(
        "  intake: {placed} alerts placed on incidents; the backlog was done {:.1} s after the senders stopped",
        drained.as_secs_f64()
    );

    // Webhook → investigation.started, one incident at a time, in an organisation of its own.
    let latency_hook = webhook(base_url).await?;
    let mut waits = Vec::with_capacity(options.investigations);
    for index in 0..options.investigations {
        let fingerprint = format!("latency-{index}");
        let sent = chrono::Utc::now();
        let response = http
            .post(latency_hook.url("alertmanager"))
            .header("content-type", "application/json")
            .body(notification(&format!("latency-service-{index}"), &fingerprint))
            .send()
            .await?;
        anyhow::ensure!(response.status() == reqwest::StatusCode::ACCEPTED, "webhook refused: {}", response.status());
        let answer: Value = response.json().await?;
        let delivery_id = Uuid::parse_str(answer["delivery_id"].as_str().unwrap_or_default())?;
        let incident_id = Uuid::new_v5(&delivery_id, format!("alertmanager\0{fingerprint}\0incident").as_bytes());
        let stream = format!("incident-{incident_id}");
        let waited = Instant::now();
        let started_at = loop {
            let found: Option<chrono::DateTime<chrono::Utc>> =
                sqlx::query_scalar("SELECT occurred_at FROM events WHERE stream = $1 AND event_type = 'investigation.started'")
                    .bind(&stream)
                    .fetch_optional(pool)
                    .await?;
            if let Some(found) = found {
                break found;
            }
            anyhow::ensure!(waited.elapsed() < Duration::from_secs(60), "no investigation.started within 60 s");
            tokio::time::sleep(Duration::from_millis(1)).await;
        };
        waits.push((started_at - sent).num_microseconds().unwrap_or_default() as f64 / 1000.0);
        // Investigations of one organisation run two at a time: let this one end first.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    waits.sort_by(f64::total_cmp);
    println!(
        "  webhook → investigation.started ({} incidents, one at a time): p50 {:.1} ms   p99 {:.1} ms   max {:.1} ms",
        waits.len(),
        percentile(&waits, 0.5),
        percentile(&waits, 0.99),
        waits.last().copied().unwrap_or(f64::NAN)
    );
    Ok(())
}

struct Hook {
    base_url: String,
    org_id: Uuid,
    token: String,
}

impl Hook {
    fn url(&self, source: &str) -> String {
        format!("{}/v1/webhooks/{}/{source}/{}", self.base_url, self.org_id, self.token)
    }
}

/// A new organisation with a webhook token.
async fn webhook(base_url: &str) -> anyhow::Result<Hook> {
    let admin = Client::register(base_url).await?;
    let rotated = admin
        .http
        .post(format!("{base_url}/v1/incidents/webhook/token"))
        .header("cookie", &admin.cookie)
        .header("x-csrf-token", &admin.csrf)
        .send()
        .await?;
    anyhow::ensure!(rotated.status() == reqwest::StatusCode::CREATED, "token refused: {}", rotated.status());
    let rotated: Value = rotated.json().await?;
    Ok(Hook { base_url: base_url.to_owned(), org_id: admin.org_id, token: rotated["token"].as_str().unwrap_or_default().to_owned() })
}
