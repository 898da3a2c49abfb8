//! The test harness: a fresh database and topic namespace per test on the shared local stack,
//! Aurora's roles in-process or as the real binary, and private Postgres and Tansu servers for
//! the tests that restart them.

pub mod aws;
pub mod chat;
pub mod incidents;
pub mod kafka;
pub mod knowledge;
pub mod otlp;
pub mod servers;

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use aurora_adapters::config::ExposeSecret;
use aurora_adapters::Config;
use sqlx::PgPool;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

pub fn admin_database_url() -> String {
    env_or("AURORA_TEST_DATABASE_ADMIN_URL", "postgres://aurora@127.0.0.1:5433/postgres")
}

pub fn kafka_brokers() -> String {
    env_or("AURORA_KAFKA_BROKERS", "127.0.0.1:9092")
}

pub fn redis_url() -> String {
    env_or("AURORA_REDIS_URL", "redis://127.0.0.1:6379")
}

pub fn init_logging() {
    static INIT: OnceLock<()> = OnceLock::new();
    INIT.get_or_init(|| {
        let filter =
            tracing_subscriber::EnvFilter::try_from_env("AURORA_TEST_LOG").unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
        let _ = tracing_subscriber::fmt().with_env_filter(filter).with_test_writer().try_init();
    });
}

/// One test's world: its own database (migrated) and its own topic prefix.
pub struct TestEnv {
    pub config: Config,
    pub pool: PgPool,
    pub database: String,
}

impl TestEnv {
    pub async fn new() -> Self {
        Self::with_servers(&admin_database_url(), &kafka_brokers()).await
    }

    /// A test world on the given Postgres (admin URL, database `postgres`) and broker.
    pub async fn with_servers(admin_url: &str, brokers: &str) -> Self {
        init_logging();
        let database = format!("aurora_test_{}", Uuid::now_v7().simple());
        let admin = aurora_adapters::postgres::connect_url(admin_url, 1).await.expect("admin connection to postgres");
        sqlx::query(&format!("CREATE DATABASE {database}")).execute(&admin).await.expect("create test database");
        admin.close().await;
        let database_url = match admin_url.rsplit_once('/') {
            Some((server, _)) => format!("{server}/{database}"),
            None => panic!("admin url has no database part"),
        };
        let mut config = Config::default();
        config.database.url = database_url.into();
        config.database.pool_size = 8;
        config.kafka.brokers = brokers.to_owned();
        config.kafka.topic_prefix = format!("t{}.", &Uuid::now_v7().simple().to_string()[20..]);
        config.http.addr = "127.0.0.1:0".parse().unwrap();
        config.http.metrics_interval = Duration::from_secs(1);
        config.redis.url = redis_url().into();
        // Rate-limit counters and tickets of one test never meet another's.
        config.redis.prefix = format!("aurora-test:{}:", Uuid::now_v7().simple());
        // Each test keeps its files in a folder of its own; the model is the stack's.
        config.objects.url = format!("file://{}/aurora-test-objects/{database}", std::env::temp_dir().display());
        if let Ok(dir) = std::env::var("AURORA_EMBEDDING_MODEL_DIR") {
            config.embedding.model_dir = dir.into();
        }
        let pool = aurora_adapters::postgres::connect(&config).await.expect("connect to test database");
        aurora_commands::migrate(&pool).await.expect("migrations");
        Self { config, pool, database }
    }

    /// The environment variables that point the `aurora` binary at this test world.
    pub fn binary_env(&self) -> Vec<(String, String)> {
        vec![
            ("AURORA_DATABASE_URL".into(), self.config.database.url.expose_secret().to_owned()),
            ("AURORA_KAFKA_BROKERS".into(), self.config.kafka.brokers.clone()),
            ("AURORA_TOPIC_PREFIX".into(), self.config.kafka.topic_prefix.clone()),
            ("AURORA_TOPIC_PARTITIONS".into(), self.config.kafka.topic_partitions.to_string()),
            ("AURORA_DATABASE_POOL_SIZE".into(), "4".into()),
            ("AURORA_REDIS_URL".into(), self.config.redis.url.expose_secret().to_owned()),
            ("AURORA_REDIS_PREFIX".into(), self.config.redis.prefix.clone()),
            ("AURORA_METRICS_INTERVAL_SECS".into(), self.config.http.metrics_interval.as_secs().to_string()),
            ("AURORA_OBJECTS_URL".into(), self.config.objects.url.clone()),
            ("AURORA_EMBEDDING_MODEL_DIR".into(), self.config.embedding.model_dir.display().to_string()),
        ]
    }

    pub fn topic(&self, category: &str) -> String {
        aurora_events::topics::topic_for_category(&self.config.kafka.topic_prefix, category)
    }

    /// Runs a `SELECT count(*) ...`. A connection the pool kept across a database restart fails
    /// once on use; like any client, the test asks again.
    pub async fn count(&self, sql: &str) -> i64 {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match sqlx::query_scalar(sql).fetch_one(&self.pool).await {
                Ok(count) => return count,
                Err(error) if aurora_adapters::postgres::is_transient(&error) && Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(error) => panic!("{sql}: {error}"),
            }
        }
    }
}

/// Which roles an in-process app runs.
#[derive(Debug, Clone, Copy)]
pub struct Roles {
    pub gateway: bool,
    pub processors: bool,
    pub projections: bool,
}

impl Roles {
    pub const ALL: Roles = Roles { gateway: true, processors: true, projections: true };
}

/// Aurora's roles running inside the test process, assembled as `aurora up` assembles them.
pub struct App {
    pub base_url: String,
    pub shutdown: CancellationToken,
    application: aurora::Application,
}

impl App {
    pub async fn spawn(env: &TestEnv, roles: Roles) -> Self {
        let mut started = Vec::new();
        if roles.gateway {
            started.push(aurora::Role::Gateway(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap()));
        }
        if roles.processors {
            started.push(aurora::Role::Processors);
        }
        if roles.projections {
            started.push(aurora::Role::Projections(Vec::new()));
        }
        let application = aurora::Application::start(&env.config, env.pool.clone(), started, CancellationToken::new()).await.unwrap();
        let base_url = application.gateway_address().map(|address| format!("http://{address}")).unwrap_or_default();
        Self { base_url, shutdown: application.shutdown(), application }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    /// Stops every role and reports the first failure.
    pub async fn stop(self) {
        self.application.stop().await.expect("a role failed");
    }
}

pub const PASSWORD: &str = "correct horse battery staple";

/// A registered member of an organisation, logged in with a session cookie.
#[derive(Debug, Clone)]
pub struct Caller {
    pub org: Uuid,
    pub user_id: Uuid,
    pub email: String,
    pub session: String,
    pub csrf: String,
}

impl Caller {
    /// Registers `name` as the admin of a new organisation.
    pub async fn register(base_url: &str, name: &str) -> Self {
        let email = format!("{name}-{}@example.com", Uuid::now_v7().simple());
        let body = serde_json::json!({
            "email": email, "password": PASSWORD, "display_name": name, "organisation_name": format!("{name}'s team"),
        });
        Self::from_registration(base_url, email, body).await
    }

    /// Invites `name` into `admin`'s organisation with `role` and registers them.
    pub async fn join(base_url: &str, admin: &Caller, name: &str, role: &str) -> Self {
        let email = format!("{name}-{}@example.com", Uuid::now_v7().simple());
        let invitation = admin
            .apply(http().post(format!("{base_url}/v1/org/invitations")))
            .json(&serde_json::json!({ "email": email, "role": role }))
            .send()
            .await
            .unwrap();
        assert_eq!(invitation.status(), reqwest::StatusCode::CREATED, "invitation refused: {}", invitation.text().await.unwrap());
        let invitation: serde_json::Value = invitation.json().await.unwrap();
        let body = serde_json::json!({
            "email": email, "password": PASSWORD, "display_name": name, "invitation_token": invitation["token"],
        });
        Self::from_registration(base_url, email, body).await
    }

    async fn from_registration(base_url: &str, email: String, body: serde_json::Value) -> Self {
        let response = http().post(format!("{base_url}/v1/auth/register")).json(&body).send().await.unwrap();
        assert_eq!(response.status(), reqwest::StatusCode::CREATED, "registration refused: {}", response.text().await.unwrap());
        let session = set_cookie(&response, "aurora_session").expect("registration sets the session cookie");
        let opened: serde_json::Value = response.json().await.unwrap();
        Self {
            org: opened["org_id"].as_str().unwrap().parse().unwrap(),
            user_id: opened["user_id"].as_str().unwrap().parse().unwrap(),
            email,
            session,
            csrf: opened["csrf_token"].as_str().unwrap().to_owned(),
        }
    }

    /// Sends the session cookie and the CSRF token, as the web UI does.
    pub fn apply(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        request.header("cookie", format!("aurora_session={}", self.session)).header("x-csrf-token", &self.csrf)
    }

    /// Creates a chat session titled `title` and returns the gateway's answer (201 asserted).
    pub async fn create_session(&self, app: &App, title: &str) -> serde_json::Value {
        let response =
            self.apply(http().post(app.url("/v1/chat/sessions"))).json(&serde_json::json!({ "title": title })).send().await.unwrap();
        assert_eq!(response.status(), reqwest::StatusCode::CREATED, "session refused: {}", response.text().await.unwrap());
        response.json().await.unwrap()
    }

    /// Creates a chat session titled `title` and returns its id.
    pub async fn create_session_id(&self, app: &App, title: &str) -> String {
        self.create_session(app, title).await["session_id"].as_str().expect("a session id").to_owned()
    }

    /// A single-use ticket (for the WebSocket or a change stream), asked for with the session.
    pub async fn ticket(&self, app: &App) -> String {
        let response = self.apply(http().post(app.url("/v1/auth/ws-ticket"))).send().await.unwrap();
        assert_eq!(response.status(), reqwest::StatusCode::CREATED, "ticket refused: {}", response.text().await.unwrap());
        let issued: serde_json::Value = response.json().await.unwrap();
        issued["ticket"].as_str().expect("a ticket").to_owned()
    }

    /// Creates an API token with `role` and returns its secret.
    pub async fn create_token(&self, app: &App, role: &str) -> String {
        let response = self
            .apply(http().post(app.url("/v1/tokens")))
            .json(&serde_json::json!({ "name": format!("{role} token"), "role": role }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), reqwest::StatusCode::CREATED, "token refused: {}", response.text().await.unwrap());
        let created: serde_json::Value = response.json().await.unwrap();
        created["token"].as_str().expect("a token").to_owned()
    }
}

/// Asserts that `response` is an RFC 9457 problem document with `status`, and returns its body.
pub async fn problem(response: reqwest::Response, status: reqwest::StatusCode) -> serde_json::Value {
    let actual = response.status();
    let content_type = response.headers().get("content-type").map(|value| value.to_str().unwrap().to_owned());
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(actual, status, "{body}");
    assert_eq!(content_type.as_deref(), Some("application/problem+json"));
    assert_eq!(body["status"], status.as_u16());
    assert!(body["type"].as_str().unwrap().starts_with("/problems/"));
    assert!(!body["title"].as_str().unwrap().is_empty());
    body
}

/// The value a response's `Set-Cookie` gives cookie `name`.
pub fn set_cookie(response: &reqwest::Response, name: &str) -> Option<String> {
    response
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .filter_map(|value| value.split(';').next())
        .filter_map(|pair| pair.split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value.to_owned())
}

pub fn http() -> reqwest::Client {
    aurora_adapters::llm::install_tls_provider();
    reqwest::Client::builder().timeout(Duration::from_secs(30)).no_proxy().build().unwrap()
}

/// Polls `check` until it returns `Some`, or panics with `what` after `timeout`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The `aurora` binary, built on first use when the test run did not build it.
pub fn aurora_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Ok(path) = std::env::var("AURORA_BIN") {
            return PathBuf::from(path);
        }
        let workspace = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
        let target = std::env::var("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|_| workspace.join("target"));
        let status = std::process::Command::new(env!("CARGO"))
            .current_dir(&workspace)
            .args(["build", "--quiet", "-p", "aurora", "--bin", "aurora"])
            .status()
            .expect("run cargo build");
        assert!(status.success(), "building the aurora binary failed");
        target.join("debug").join("aurora")
    })
    .clone()
}

/// Starts `aurora <args>` against `env`, with its output captured in the returned child.
pub fn spawn_aurora(env: &TestEnv, args: &[&str], extra_env: &[(&str, &str)]) -> tokio::process::Child {
    let mut command = tokio::process::Command::new(aurora_bin());
    command.args(args).envs(env.binary_env()).kill_on_drop(true);
    for (name, value) in extra_env {
        command.env(name, value);
    }
    command.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped());
    command.spawn().expect("start aurora")
}

/// Starts a long-running `aurora <args>` whose log goes to a file (a pipe nobody reads would
/// eventually block it); the path is printed so a failing test points at it.
pub fn spawn_aurora_role(env: &TestEnv, args: &[&str], extra_env: &[(&str, &str)]) -> tokio::process::Child {
    spawn_aurora_logged(env, args, extra_env).0
}

/// [`spawn_aurora_role`], also answering where the log goes.
pub fn spawn_aurora_logged(env: &TestEnv, args: &[&str], extra_env: &[(&str, &str)]) -> (tokio::process::Child, PathBuf) {
    let log_path = std::env::temp_dir().join(format!("aurora-{}-{}.log", args.join("-"), Uuid::now_v7().simple()));
    eprintln!("aurora {} logs to {}", args.join(" "), log_path.display());
    let log = std::fs::File::create(&log_path).unwrap();
    let mut command = tokio::process::Command::new(aurora_bin());
    command.args(args).envs(env.binary_env()).kill_on_drop(true);
    for (name, value) in extra_env {
        command.env(name, value);
    }
    command.stdout(std::process::Stdio::null()).stderr(log);
    (command.spawn().expect("start aurora"), log_path)
}

/// The value of the metric line starting with `name` on the `/metrics` of the gateway at
/// `base_url`, 0 when absent.
pub async fn metric(base_url: &str, name: &str) -> i64 {
    let metrics = http().get(format!("{base_url}/metrics")).send().await.unwrap().text().await.unwrap();
    metrics.lines().find_map(|line| line.strip_prefix(name)?.trim().parse().ok()).unwrap_or(0)
}

/// A port nothing listens on right now, for a server the test starts.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Sends SIGTERM to `child` (graceful shutdown).
pub fn terminate(child: &tokio::process::Child) {
    let pid = child.id().expect("child is running");
    let status = std::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status().unwrap();
    assert!(status.success());
}

/// Appends, from `writers` concurrent tasks, `events_per_stream` chat events (a creation, then
/// renames) to each of `streams` new chat sessions in `org`. Returns every appended event id.
/// Appends that fail because the database is briefly away are retried, as a client would.
pub async fn write_burst(pool: &PgPool, org: Uuid, streams: usize, events_per_stream: usize, writers: usize) -> Vec<Uuid> {
    use aurora_commands::postgres::PostgresEventStore;
    use aurora_commands::{AppendRequest, EventStore, ExpectedVersion, NewEvent, StoreError};
    use aurora_events::chat::{ChatSessionEvent, SessionCreated, SessionRenamed};

    let store = std::sync::Arc::new(PostgresEventStore::new(pool.clone()));
    let session_ids: Vec<Uuid> = (0..streams).map(|_| Uuid::now_v7()).collect();
    let mut tasks = JoinSet::new();
    for writer in 0..writers {
        let store = store.clone();
        let mine: Vec<Uuid> = session_ids.iter().copied().skip(writer).step_by(writers).collect();
        tasks.spawn(async move {
            let mut ids = Vec::new();
            for version in 1..=events_per_stream as u64 {
                for session_id in &mine {
                    let event = if version == 1 {
                        ChatSessionEvent::Created(SessionCreated {
                            session_id: *session_id,
                            title: "burst".into(),
                            owner: aurora_events::Actor::user(org),
                            context: None,
                        })
                    } else {
                        ChatSessionEvent::Renamed(SessionRenamed { title: format!("burst {version}") })
                    };
                    let request = AppendRequest {
                        stream: aurora_events::StreamId::new("chat", session_id.to_string()).unwrap(),
                        expected: if version == 1 { ExpectedVersion::NoStream } else { ExpectedVersion::Exact(version - 1) },
                        command_id: Some(Uuid::now_v7()),
                        org_id: aurora_events::OrgId(org),
                        actor: aurora_events::Actor::user(org),
                        correlation_id: Uuid::now_v7(),
                        causation_id: None,
                        traceparent: None,
                        occurred_at: chrono::Utc::now(),
                        events: vec![NewEvent::from_payload(&event)],
                    };
                    let deadline = Instant::now() + Duration::from_secs(60);
                    loop {
                        match store.append(request.clone()).await {
                            Ok(result) => {
                                ids.extend(result.event_ids);
                                break;
                            }
                            Err(StoreError::Unavailable(_)) | Err(StoreError::Unexpected(_)) if Instant::now() < deadline => {
                                tokio::time::sleep(Duration::from_millis(100)).await;
                            }
                            Err(error) => panic!("append failed: {error}"),
                        }
                    }
                }
            }
            ids
        });
    }
    let mut all = Vec::new();
    while let Some(ids) = tasks.join_next().await {
        all.extend(ids.unwrap());
    }
    all
}

/// Decodes records into envelopes, keeping the first copy of each event id, in log order.
pub fn distinct_envelopes(records: &[rdkafka::message::OwnedMessage]) -> Vec<aurora_events::Envelope> {
    let mut seen = std::collections::HashSet::new();
    records
        .iter()
        .map(|record| aurora_adapters::kafka::envelope_of(record).expect("relayed records are CloudEvents"))
        .filter(|envelope| seen.insert(envelope.id))
        .collect()
}

/// Asserts that each stream's events appear with versions 1, 2, 3, ... in log order.
pub fn assert_stream_order(envelopes: &[aurora_events::Envelope]) {
    let mut last: std::collections::HashMap<String, u64> = std::collections::HashMap::new();
    for envelope in envelopes {
        let previous = last.insert(envelope.stream.to_string(), envelope.stream_version).unwrap_or(0);
        assert_eq!(envelope.stream_version, previous + 1, "stream {} out of order", envelope.stream);
    }
}
