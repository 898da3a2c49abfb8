//! `aurora bench chat`: how fast the first token reaches a browser, and how many answers can
//! stream at once. It runs every role in this process against the configured Postgres and broker
//! (in a database and topic namespace of its own) and a scripted OpenAI-compatible model on
//! 127.0.0.1, and talks to the gateway over real WebSockets.
//!
//! Time to first token is measured at the client, from sending the question to the first `delta`
//! frame, minus the scripted model's own time from receiving the request to sending its first
//! chunk: what remains is Aurora's part (gateway, event store, relay, Kafka, agent processor, the
//! LLM client, the deltas topic and the chat hub).

use std::sync::Arc;
use std::time::{Duration, Instant};

use aurora::{Application, Role};
use aurora_adapters::Config;
use aurora_testkit::scripted_llm::{ScriptedLlm, Step};
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::bench::BenchWorld;

#[derive(Debug, clap::Args)]
pub struct ChatOptions {
    /// Questions asked one after another, all in one session, for the time-to-first-token figures.
    #[arg(long, default_value_t = 200)]
    pub turns: usize,
    /// Questions asked each after the consumers came to rest, for the time to first token after
    /// a quiet spell.
    #[arg(long, default_value_t = 10)]
    pub quiet_turns: usize,
    /// Concurrent streaming sessions to try first.
    #[arg(long, default_value_t = 100)]
    pub start_sessions: usize,
    /// Added at each step while every delta still arrives.
    #[arg(long, default_value_t = 100)]
    pub step_sessions: usize,
    /// Where to stop trying.
    #[arg(long, default_value_t = 1000)]
    pub max_sessions: usize,
    /// Chunks in each streamed answer of the concurrency run.
    #[arg(long, default_value_t = 20)]
    pub chunks: usize,
    /// Pause between two chunks, in milliseconds.
    #[arg(long, default_value_t = 50)]
    pub chunk_pause_ms: u64,
    /// Keep the bench database afterwards.
    #[arg(long)]
    pub keep: bool,
}

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A registered admin of a new organisation, logged in with a session cookie.
pub(crate) struct Client {
    pub http: reqwest::Client,
    pub base_url: String,
    pub cookie: String,
    pub csrf: String,
    pub org_id: Uuid,
}

impl Client {
    pub async fn register(base_url: &str) -> anyhow::Result<Self> {
        aurora_adapters::llm::install_tls_provider();
        let http = reqwest::Client::builder().no_proxy().build()?;
        let email = format!("bench-{}@example.com", Uuid::now_v7().simple());
        let response = http
            .post(format!("{base_url}/v1/auth/register"))
            .json(&json!({ "email": email, "password": "bench password 12345", "display_name": "Bench", "organisation_name": "Bench" }))
            .send()
            .await?;
        anyhow::ensure!(response.status().is_success(), "registration failed: {}", response.status());
        let cookie = response
            .headers()
            .get_all("set-cookie")
            .iter()
            .filter_map(|value| value.to_str().ok())
            .find(|value| value.starts_with("aurora_session="))
            .and_then(|value| value.split(';').next())
            .ok_or_else(|| anyhow::anyhow!("no session cookie"))?
            .to_owned();
        let body: Value = response.json().await?;
        let csrf = body["csrf_token"].as_str().unwrap_or_default().to_owned();
        let org_id = Uuid::parse_str(body["org_id"].as_str().unwrap_or_default())?;
        Ok(Self { http, base_url: base_url.to_owned(), cookie, csrf, org_id })
    }

    async fn socket(&self) -> anyhow::Result<Socket> {
        let ticket: Value = self
            .http
            .post(format!("{}/v1/auth/ws-ticket", self.base_url))
            .header("cookie", &self.cookie)
            .header("x-csrf-token", &self.csrf)
            .send()
            .await?
            .json()
            .await?;
        let ticket = ticket["ticket"].as_str().ok_or_else(|| anyhow::anyhow!("no ticket"))?;
        let url = format!("{}/ws?ticket={ticket}", self.base_url.replacen("http://", "ws://", 1));
        let (mut socket, _) = tokio_tungstenite::connect_async(url).await?;
        socket.next().await.ok_or_else(|| anyhow::anyhow!("no hello"))??;
        Ok(socket)
    }
}

async fn next_frame(socket: &mut Socket) -> anyhow::Result<Value> {
    loop {
        let message = tokio::time::timeout(Duration::from_secs(60), socket.next())
            .await
            .map_err(|_| anyhow::anyhow!("no frame within 60 s"))?
            .ok_or_else(|| anyhow::anyhow!("socket closed"))??;
        if let Message::Text(text) = message {
            return Ok(serde_json::from_str(&text)?);
        }
    }
}

pub(crate) fn percentile(sorted: &[f64], quantile: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 - 1.0) * quantile).round() as usize]
}

pub async fn chat(config: &Config, options: ChatOptions) -> anyhow::Result<()> {
    let world = BenchWorld::create(config).await?;
    let outcome = run(&world.config, &options).await;
    world.drop_unless(options.keep).await?;
    outcome
}

async fn run(config: &Config, options: &ChatOptions) -> anyhow::Result<()> {
    let llm = ScriptedLlm::start().await;
    let mut config = config.clone();
    config.llm.base_url = llm.base_url.clone();
    config.llm.model = "scripted".into();
    config.database.pool_size = 32;
    config.agent.max_turn = Duration::from_secs(600);
    let pool = aurora_adapters::postgres::connect(&config).await?;
    aurora_commands::migrate(&pool).await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base_url = format!("http://{}", listener.local_addr()?);
    let roles = vec![Role::Gateway(listener), Role::Processors, Role::Projections(Vec::new())];
    let application = Application::start(&config, pool.clone(), roles, CancellationToken::new()).await?;
    let measured = measure(&base_url, &llm, options).await;
    application.stop().await?;
    pool.close().await;
    measured
}

async fn measure(base_url: &str, llm: &ScriptedLlm, options: &ChatOptions) -> anyhow::Result<()> {
    let client = Arc::new(Client::register(base_url).await?);
    println!("aurora bench chat — scripted model at {}, gateway at {base_url}", llm.base_url);

    // Time to first token, one question at a time, all in one growing session: a command costs
    // the same at its 10th and its 1000th event.
    let mut socket = client.socket().await?;
    let mut session_id = Value::Null;
    let warmup = 5;
    for index in 0..warmup {
        first_token(&mut socket, llm, &mut session_id, &format!("warm-up {index}")).await?;
    }
    let mut turns = Vec::with_capacity(options.turns);
    for index in 0..options.turns {
        turns.push(first_token(&mut socket, llm, &mut session_id, &format!("first token {index}")).await?);
    }
    print_first_tokens(&format!("time to first token, Aurora's part ({} questions, one session)", turns.len()), turns);

    // The same after a quiet spell: the agent and the hub rest, and the question wakes them.
    let mut quiet_turns = Vec::with_capacity(options.quiet_turns);
    for index in 0..options.quiet_turns {
        let resting = |consumer: &str| aurora_adapters::metrics::metrics().consumer_resting.with_label_values(&[consumer]).get() == 1;
        let quiet_since = Instant::now();
        while !(resting("processor:agent") && resting("chat hub")) {
            anyhow::ensure!(quiet_since.elapsed() < Duration::from_secs(30), "the consumers did not come to rest within 30 s");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        quiet_turns.push(first_token(&mut socket, llm, &mut session_id, &format!("after a quiet spell {index}")).await?);
    }
    print_first_tokens(&format!("  the same, each question after the consumers rested ({})", quiet_turns.len()), quiet_turns);
    drop(socket);

    // Concurrent streaming sessions, every delta delivered.
    let mut held = 0;
    let mut sessions = options.start_sessions;
    while sessions <= options.max_sessions {
        let started = Instant::now();
        match concurrent_round(&client, llm, sessions, options).await {
            Ok(()) => {
                println!("  {sessions} concurrent streaming sessions: every delta delivered in {:.1} s", started.elapsed().as_secs_f64());
                held = sessions;
                sessions += options.step_sessions;
            }
            Err(error) => {
                println!("  {sessions} concurrent streaming sessions: {error:#}");
                break;
            }
        }
    }
    println!(
        "{:<58} {held} (tried up to {})   target >= 500",
        "concurrent streaming sessions held, every delta delivered",
        sessions.min(options.max_sessions)
    );
    Ok(())
}

/// Asks `question` in `session_id` (a new session when null) and waits for the whole answer.
/// Returns the time to its first token at the client and the part of it that is Aurora's (less the
/// model's own delay before its first chunk).
async fn first_token(socket: &mut Socket, llm: &ScriptedLlm, session_id: &mut Value, question: &str) -> anyhow::Result<(f64, f64)> {
    llm.script(question, vec![Step::text("one two three")]);
    let mut frame = json!({ "type": "query", "text": question, "mode": "ask" });
    if !session_id.is_null() {
        frame["session_id"] = session_id.clone();
    }
    let delays_before = llm.first_chunk_delays().len();
    let sent = Instant::now();
    socket.send(Message::text(frame.to_string())).await?;
    // Deltas and events travel on different topics: the completion may overtake the last
    // deltas, so the turn is done when both the completion and every delta are in.
    let (mut first_token, mut deltas, mut completed) = (None, 0, false);
    while !(completed && deltas == 3) {
        let frame = next_frame(socket).await?;
        match frame["type"].as_str() {
            Some("accepted") => *session_id = frame["session_id"].clone(),
            Some("delta") => {
                deltas += 1;
                first_token.get_or_insert_with(|| sent.elapsed());
            }
            Some("chat.assistant_message_completed") => completed = true,
            Some("error") | Some("chat.turn_failed") => anyhow::bail!("question {question:?} failed: {frame}"),
            _ => {}
        }
    }
    let first_token = first_token.ok_or_else(|| anyhow::anyhow!("no delta arrived for question {question:?}"))?;
    let server = llm.first_chunk_delays().get(delays_before).copied().unwrap_or_default();
    Ok((first_token.as_secs_f64() * 1000.0, first_token.saturating_sub(server).as_secs_f64() * 1000.0))
}

/// Prints the percentiles of `(at the client, Aurora's part)` times to first token.
fn print_first_tokens(what: &str, turns: Vec<(f64, f64)>) {
    let (mut client_ms, mut extra_ms): (Vec<f64>, Vec<f64>) = turns.into_iter().unzip();
    extra_ms.sort_by(f64::total_cmp);
    client_ms.sort_by(f64::total_cmp);
    println!(
        "{what:<58} p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms (at the client p50 {:.1} ms)   target p50 <= 15 ms, p99 <= 50 ms",
        percentile(&extra_ms, 0.5),
        percentile(&extra_ms, 0.99),
        percentile(&extra_ms, 1.0),
        percentile(&client_ms, 0.5),
    );
}

/// `count` sockets each ask at once and must each receive their whole answer, delta by delta.
async fn concurrent_round(client: &Arc<Client>, llm: &ScriptedLlm, count: usize, options: &ChatOptions) -> anyhow::Result<()> {
    let round = Uuid::now_v7().simple().to_string();
    let mut sockets = Vec::with_capacity(count);
    for _ in 0..count {
        sockets.push(client.socket().await?);
    }
    let mut tasks = tokio::task::JoinSet::new();
    for (index, mut socket) in sockets.into_iter().enumerate() {
        let question = format!("stream {round} {index}");
        let answer: String = (0..options.chunks).map(|chunk| format!("w{index}.{chunk} ")).collect();
        llm.script(&question, vec![Step::slow_text(answer.trim_end(), Duration::from_millis(options.chunk_pause_ms))]);
        tasks.spawn(async move {
            socket.send(Message::text(json!({ "type": "query", "text": question, "mode": "ask" }).to_string())).await?;
            let mut streamed = String::new();
            let mut last_seq: Option<u64> = None;
            let mut completed = false;
            let expected = answer.trim_end();
            while !(completed && streamed.len() >= expected.len()) {
                let frame = next_frame(&mut socket).await?;
                match frame["type"].as_str() {
                    Some("delta") => {
                        let seq = frame["seq"].as_u64().unwrap_or(0);
                        anyhow::ensure!(last_seq.map_or(seq == 0, |last| seq == last + 1), "a delta was lost or out of order");
                        last_seq = Some(seq);
                        streamed.push_str(frame["text"].as_str().unwrap_or_default());
                    }
                    Some("chat.assistant_message_completed") => completed = true,
                    Some("error") | Some("chat.turn_failed") => anyhow::bail!("a turn failed: {frame}"),
                    _ => {}
                }
            }
            anyhow::ensure!(streamed == expected, "the streamed text differs from the answer");
            Ok::<(), anyhow::Error>(())
        });
    }
    let mut failures = 0;
    let mut first_failure = None;
    while let Some(joined) = tasks.join_next().await {
        if let Err(error) = joined.map_err(anyhow::Error::from).and_then(|outcome| outcome) {
            failures += 1;
            first_failure.get_or_insert(error);
        }
    }
    match first_failure {
        None => Ok(()),
        Some(error) => Err(error.context(format!("{failures} of {count} sessions did not get every delta"))),
    }
}
