//! `aurora bench knowledge`: the knowledge base's figures, each beside its raw baseline, in one
//! run on the stack's own servers.
//!
//! - **Embedding throughput**: a runbook uploaded through the gateway and indexed by the
//!   processors (download, extraction, chunking, embedding, writes, events), chunks per second
//!   from upload to `ready`, beside the same chunks embedded directly by the same model.
//! - **Ingest**: a 100 MB document streamed through `POST /v1/knowledge/documents` (multipart
//!   parsing, type check, digest, quota, object store), MB/s, beside the same bytes written
//!   straight to the object store.
//! - **Search** over 100,000 chunks of one organisation: p50/p99 of vector-only and hybrid search
//!   (each embeds its query first), beside the raw pgvector query with a ready vector. The corpus
//!   is seeded once (real embeddings of a few thousand sentences, perturbed) and kept for reruns.

use std::time::{Duration, Instant};

use aurora_adapters::embeddings::Embedder;
use aurora_adapters::objects::{ObjectKey, Objects};
use aurora_adapters::vectors::pgvector::literal;
use aurora_adapters::vectors::search::{Chunk, KnowledgeIndex, SearchMode};
use aurora_adapters::vectors::{Source, SourceKind};
use aurora_adapters::Config;
use aurora_processors::knowledge::{chunk, extract};
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

#[derive(Debug, clap::Args)]
pub struct KnowledgeOptions {
    /// Chunks of the runbook indexed through the pipeline (about 450 word pieces each).
    #[arg(long, default_value_t = 120)]
    pub chunks: usize,
    /// Megabytes of the document streamed through the upload.
    #[arg(long, default_value_t = 100)]
    pub ingest_mb: usize,
    /// Chunks of the search corpus.
    #[arg(long, default_value_t = 100_000)]
    pub corpus: usize,
    /// Searches of each kind.
    #[arg(long, default_value_t = 200)]
    pub searches: usize,
}

/// The organisation whose corpus the search figures use; kept between runs.
const CORPUS_ORG: Uuid = Uuid::from_u128(0x0b3c_4a1e_0000_4000_8000_00be_0c00_0001);

fn runbook(chunks: usize) -> String {
    let mut text = String::from("# Platform runbook\n\n");
    let mut section = 0;
    while text.len() < chunks * 2_000 {
        section += 1;
        text.push_str(&format!("## Service {section}\n\n"));
        for step in 0..40 {
            text.push_str(&format!(
                "Step {step} for service {section}: check that the health endpoint answers within {} milliseconds, \
                 then compare the error rate with the dashboard before you continue. ",
                50 + step
            ));
        }
        text.push_str("\n\n");
    }
    text
}

fn percentiles(samples: &mut [Duration]) -> (f64, f64) {
    samples.sort();
    let at = |quantile: f64| samples[((samples.len() as f64 - 1.0) * quantile).round() as usize].as_secs_f64() * 1000.0;
    (at(0.5), at(0.99))
}

pub async fn knowledge(config: &Config, options: KnowledgeOptions) -> anyhow::Result<()> {
    let mut config = config.clone();
    config.kafka.topic_prefix = format!("bench{}.", &Uuid::now_v7().simple().to_string()[24..]);
    config.knowledge.max_upload_bytes = (options.ingest_mb as u64 + 1) * 1024 * 1024;
    config.knowledge.max_total_bytes = u64::MAX / 2;
    config.http.addr = "127.0.0.1:0".parse()?;
    let pool = aurora_adapters::postgres::connect(&config).await?;
    aurora_commands::migrate(&pool).await?;
    let embedder = Embedder::shared(&config.embedding);
    embedder.warm_up()?;
    let index = KnowledgeIndex::from_config(&config.knowledge, embedder.clone(), pool.clone());

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let roles = vec![aurora::Role::Gateway(listener), aurora::Role::Processors, aurora::Role::Projections(Vec::new())];
    let application = aurora::Application::start(&config, pool.clone(), roles, CancellationToken::new()).await?;
    let base = format!("http://{}", application.gateway_address().expect("a gateway"));
    let http = reqwest::Client::new();
    let email = format!("bench-{}@example.com", Uuid::now_v7().simple());
    let registered = http
        .post(format!("{base}/v1/auth/register"))
        .json(&serde_json::json!({ "email": email, "password": "bench knowledge password", "display_name": "bench", "organisation_name": "bench" }))
        .send()
        .await?;
    anyhow::ensure!(registered.status().is_success(), "registering failed: {}", registered.text().await?);
    let cookie = registered
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|value| value.to_str().ok()?.split(';').next().map(str::to_owned))
        .collect::<Vec<_>>()
        .join("; ");
    let opened: Value = registered.json().await?;
    let csrf = opened["csrf_token"].as_str().unwrap_or_default().to_owned();
    let upload = |name: String, bytes: Vec<u8>| {
        let form = reqwest::multipart::Form::new().part("file", reqwest::multipart::Part::bytes(bytes).file_name(name));
        http.post(format!("{base}/v1/knowledge/documents")).header("cookie", &cookie).header("x-csrf-token", &csrf).multipart(form).send()
    };

    // 1. Embedding throughput through the pipeline, beside the model alone.
    let text = runbook(options.chunks);
    let started = Instant::now();
    let accepted: Value = upload("bench-runbook.md".into(), text.clone().into_bytes()).await?.error_for_status()?.json().await?;
    let document_id = accepted["document_id"].as_str().unwrap_or_default().to_owned();
    let chunks = loop {
        let document: Value =
            http.get(format!("{base}/v1/knowledge/documents/{document_id}")).header("cookie", &cookie).send().await?.json().await?;
        match document["status"].as_str() {
            Some("ready") => break document["chunks"].as_u64().unwrap_or(0) as usize,
            Some("failed") => anyhow::bail!("the bench runbook failed: {}", document["failure_reason"]),
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    };
    let pipeline = started.elapsed();
    let limits = extract::Limits { max_text_chars: usize::MAX, max_docx_uncompressed_bytes: u64::MAX, max_docx_ratio: u64::MAX };
    let extracted = extract::extract(aurora_events::knowledge::DocumentKind::Markdown, text.as_bytes(), limits)
        .map_err(|failure| anyhow::anyhow!(failure.reason))?;
    let cut: Vec<Chunk> =
        chunk::chunks(&extracted.sections, config.knowledge.chunk_tokens, config.knowledge.chunk_overlap, |text| embedder.tokenize(text))?;
    let contents: Vec<String> = cut.iter().map(|chunk| chunk.content.clone()).collect();
    let started = Instant::now();
    for batch in contents.chunks(32) {
        embedder.embed(batch).await?;
    }
    let direct = started.elapsed();
    println!(
        "embedding throughput ({chunks} chunks of up to {} word pieces, {} MB of Markdown)",
        config.knowledge.chunk_tokens,
        text.len() / 1_000_000
    );
    println!(
        "  pipeline (upload -> extract -> chunk -> embed -> write -> ready): {:>7.1} chunks/s  ({:.1} s)",
        chunks as f64 / pipeline.as_secs_f64(),
        pipeline.as_secs_f64()
    );
    println!(
        "  the model alone, same chunks, batches of 32:                       {:>7.1} chunks/s  ({:.1} s)",
        cut.len() as f64 / direct.as_secs_f64(),
        direct.as_secs_f64()
    );

    // 2. Ingest of a large document, beside writing it straight to the object store.
    let line = "2026-12-01T03:00:00Z checkout-api GET /v1/cart 200 12ms trace=4bf92f3577b34da6a3ce929d0e0e4736\n";
    let big: Vec<u8> = line.repeat(options.ingest_mb * 1024 * 1024 / line.len()).into_bytes();
    let megabytes = big.len() as f64 / (1024.0 * 1024.0);
    let started = Instant::now();
    let response = upload("bench-ingest.log".into(), big.clone()).await?;
    anyhow::ensure!(response.status().is_success(), "the big upload failed: {}", response.text().await?);
    let through_gateway = started.elapsed();
    let objects = Objects::from_config(&config.objects)?;
    let key = ObjectKey::scoped(Uuid::now_v7(), "bench", Uuid::now_v7(), &["raw"]);
    let started = Instant::now();
    let mut raw = objects.upload(&key).await?;
    for piece in big.chunks(256 * 1024) {
        raw.write(piece).await?;
    }
    raw.finish().await?;
    let straight = started.elapsed();
    objects.delete_prefix(&key).await?;
    println!("ingest ({megabytes:.0} MB document, {:?})", objects);
    println!(
        "  POST /v1/knowledge/documents (multipart, type check, SHA-256, quota, store): {:>7.1} MB/s",
        megabytes / through_gateway.as_secs_f64()
    );
    println!(
        "  the same bytes written straight to the object store:                         {:>7.1} MB/s",
        megabytes / straight.as_secs_f64()
    );

    // 3. Search over the corpus.
    seed_corpus(&pool, &index, &embedder, options.corpus).await?;
    let questions = [
        "how do I restart the payments gateway",
        "consumer lag on the orders topic",
        "the database refuses connections",
        "certificate renewal failed",
        "roll back a bad deployment",
        "disk almost full on a broker",
        "pods cannot resolve dns names",
        "cache evictions spiking",
    ];
    let vectors = embedder.embed(&questions.map(str::to_owned)).await?;
    let (mut vector_only, mut hybrid, mut raw_query, mut embed_only) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for round in 0..options.searches + 10 {
        let question = questions[round % questions.len()];
        let started = Instant::now();
        embedder.embed(&[question.to_owned()]).await?;
        let embed_time = started.elapsed();
        let started = Instant::now();
        index.search(CORPUS_ORG, question, &[SourceKind::Document], 10, SearchMode::Vector).await?;
        let vector_time = started.elapsed();
        let started = Instant::now();
        index.search(CORPUS_ORG, question, &[SourceKind::Document], 10, SearchMode::Hybrid).await?;
        let hybrid_time = started.elapsed();
        let started = Instant::now();
        let _: Vec<Uuid> =
            sqlx::query_scalar("SELECT id FROM knowledge_vectors WHERE org_id = $1 ORDER BY embedding <=> $2::vector LIMIT 10")
                .bind(CORPUS_ORG)
                .bind(literal(&vectors[round % questions.len()]))
                .fetch_all(&pool)
                .await?;
        let raw_time = started.elapsed();
        if round >= 10 {
            embed_only.push(embed_time);
            vector_only.push(vector_time);
            hybrid.push(hybrid_time);
            raw_query.push(raw_time);
        }
    }
    println!("search over {} chunks of one organisation ({} searches each, top 10)", options.corpus, options.searches);
    for (label, samples) in [
        ("vector-only search (embeds the query, pgvector HNSW, chunk rows)", &mut vector_only),
        ("hybrid search (embeds the query, HNSW + full text, RRF, chunk rows)", &mut hybrid),
        ("raw pgvector query (ready vector, ids only)", &mut raw_query),
        ("embedding the query alone", &mut embed_only),
    ] {
        let (p50, p99) = percentiles(samples);
        println!("  {label:<70} p50 {p50:>7.2} ms   p99 {p99:>7.2} ms");
    }
    application.stop().await?;
    Ok(())
}

/// Seeds `count` chunks for [`CORPUS_ORG`] unless they are there: real embeddings of generated
/// sentences, each reused with small perturbations, and their text for the full-text index.
async fn seed_corpus(pool: &sqlx::PgPool, index: &KnowledgeIndex, embedder: &Embedder, count: usize) -> anyhow::Result<()> {
    let present: i64 =
        sqlx::query_scalar("SELECT count(*) FROM knowledge_vectors WHERE org_id = $1").bind(CORPUS_ORG).fetch_one(pool).await?;
    if present as usize >= count {
        return Ok(());
    }
    index.remove(CORPUS_ORG, SourceKind::Document, CORPUS_ORG, None).await?;
    let services = ["payments", "orders", "checkout", "search", "billing", "identity", "inventory", "shipping", "ledger", "notifications"];
    let symptoms = [
        "restart",
        "consumer lag",
        "connection pool exhaustion",
        "certificate renewal",
        "rollback",
        "disk pressure",
        "dns resolution",
        "cache evictions",
        "slow queries",
        "memory leak",
    ];
    let bases: Vec<String> = services
        .iter()
        .flat_map(|service| {
            symptoms.iter().map(move |symptom| {
                format!(
                    "Runbook for {service}: how to handle {symptom} in production, with the commands to run and what to check afterwards."
                )
            })
        })
        .collect();
    let base_vectors = embedder.embed(&bases).await?;
    let started = Instant::now();
    let mut seed: u64 = 0x5eed;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed % 10_000) as f32 / 10_000.0 - 0.5
    };
    for start in (0..count).step_by(1_000) {
        let mut chunks = Vec::new();
        let mut embeddings = Vec::new();
        for number in start..(start + 1_000).min(count) {
            let base = number % bases.len();
            let mut vector: Vec<f32> = base_vectors[base].iter().map(|value| value + next() * 0.04).collect();
            let norm = vector.iter().map(|value| value * value).sum::<f32>().sqrt();
            vector.iter_mut().for_each(|value| *value /= norm);
            chunks.push(Chunk {
                index: number as u32,
                content: format!("{} Note {number}.", bases[base]),
                heading_path: vec![format!("Section {}", number / 100)],
                page: None,
                tokens: 30,
            });
            embeddings.push(vector);
        }
        let source = Source { kind: SourceKind::Document, id: CORPUS_ORG, version: 1 };
        index.write(CORPUS_ORG, source, "bench corpus", &chunks, &embeddings).await?;
    }
    println!("seeded {count} chunks for the search figures in {:.0} s (kept for the next run)", started.elapsed().as_secs_f64());
    Ok(())
}
