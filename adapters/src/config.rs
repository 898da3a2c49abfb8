//! Configuration in one typed place. Defaults make the local stack work; every field can be
//! overridden by an `AURORA_*` environment variable, and an unknown `AURORA_*` variable is an
//! error rather than a silent typo.

use std::net::SocketAddr;
use std::time::Duration;

pub use secrecy::{ExposeSecret, SecretString};

/// Aurora's whole configuration, by concern.
#[derive(Clone, Debug, Default)]
pub struct Config {
    pub database: DatabaseConfig,
    pub kafka: KafkaConfig,
    /// The relay and the projections.
    pub log: LogConfig,
    pub http: HttpConfig,
    pub redis: RedisConfig,
    pub auth: AuthConfig,
    pub llm: LlmConfig,
    pub agent: AgentConfig,
    pub telemetry: TelemetryConfig,
    pub vault: VaultConfig,
    pub connections: ConnectionsConfig,
    pub objects: ObjectsConfig,
    pub embedding: EmbeddingConfig,
    pub knowledge: KnowledgeConfig,
    pub incident: IncidentConfig,
    pub deploy: DeployConfig,
    pub discovery: DiscoveryConfig,
}

/// Service discovery.
#[derive(Debug, Clone)]
pub struct DiscoveryConfig {
    /// Time from one scan's end to the next scan of the same organisation.
    pub interval: Duration,
    /// Time from a cloud's connection to the first scan (its connection reaches the read model
    /// the scan reads first).
    pub first_scan_delay: Duration,
    /// The AWS regions a scan lists: none, each connection's default region; `all`, every
    /// region enabled for the account.
    pub aws_regions: Vec<String>,
    /// A resource no scan has listed for this long is marked stale...
    pub stale_after: Duration,
    /// ... and after this long it is gone.
    pub gone_after: Duration,
    /// A connection whose scans fail this many times in a row is flagged (0: never).
    pub flag_after_failures: u32,
    /// Which store the graph is read from; with `bolt`, the `graph_bolt` projection writes it.
    pub graph: GraphBackend,
    pub bolt: BoltConfig,
}

/// Which store keeps the discovered graph for its queries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GraphBackend {
    /// The discovery projection's tables in the read-model database.
    Postgres,
    /// A Bolt 5 server (Memgraph, Neo4j), written by the `graph_bolt` projection.
    Bolt,
}

impl std::str::FromStr for GraphBackend {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "postgres" => Ok(GraphBackend::Postgres),
            "bolt" => Ok(GraphBackend::Bolt),
            other => Err(format!("`{other}` is not a graph store; use postgres or bolt")),
        }
    }
}

/// The Bolt server of the graph.
#[derive(Clone, Debug)]
pub struct BoltConfig {
    /// `bolt://host:port`.
    pub url: String,
    /// With a password, basic authentication; without, none.
    pub user: Option<String>,
    pub password: Option<SecretString>,
    /// Connections kept open to it per process.
    pub pool_size: usize,
}

impl Default for BoltConfig {
    fn default() -> Self {
        Self { url: "bolt://127.0.0.1:7687".into(), user: None, password: None, pool_size: 8 }
    }
}

impl Default for DiscoveryConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(3600),
            first_scan_delay: Duration::from_secs(10),
            aws_regions: Vec::new(),
            stale_after: Duration::from_secs(7 * 24 * 3600),
            gone_after: Duration::from_secs(30 * 24 * 3600),
            flag_after_failures: 3,
            graph: GraphBackend::Postgres,
            bolt: BoltConfig::default(),
        }
    }
}

/// Infrastructure changes from the chat: the Terraform-compatible CLI and its limits.
#[derive(Debug, Clone)]
pub struct DeployConfig {
    /// The CLI: OpenTofu's `tofu` by default, or a Terraform binary.
    pub cli: std::path::PathBuf,
    /// Longest `init` (providers and modules are fetched then).
    pub init_timeout: Duration,
    /// Longest `plan`, `apply` or `destroy`.
    pub run_timeout: Duration,
    /// Largest `.tf` file a workspace may hold.
    pub max_file_bytes: usize,
    /// Most files one workspace may hold.
    pub max_files: usize,
}

impl DeployConfig {
    /// Most bytes of files one `iac_write` call may carry, and so the largest file: the files
    /// travel in the call's `tool_call.requested` event, which must stay under the event limit.
    pub const MAX_FILE_BYTES: usize = 128 * 1024;
}

impl Default for DeployConfig {
    fn default() -> Self {
        Self {
            cli: "tofu".into(),
            init_timeout: Duration::from_secs(600),
            run_timeout: Duration::from_secs(1200),
            max_file_bytes: 64 * 1024,
            max_files: 50,
        }
    }
}

/// Incidents: webhook intake, grouping, investigations.
#[derive(Debug, Clone)]
pub struct IncidentConfig {
    /// Largest webhook body accepted (an event holds the payload, so below the event limit).
    pub webhook_max_bytes: usize,
    /// Alerts arriving this close to an incident's latest alert may join it.
    pub group_window: Duration,
    /// Share of labels in common that groups alerts of different services.
    pub group_min_score: f64,
    /// Dependencies followed in the discovered service graph between two alerting services for
    /// their alerts to be grouped (0: the graph does not group).
    pub group_graph_depth: i32,
    /// Investigations running at once per organisation; the rest queue.
    pub max_concurrent_investigations: u32,
    pub investigation_wall_time: Duration,
    pub investigation_tool_calls: u32,
    pub investigation_llm_calls: u32,
    pub investigation_tokens: u32,
    /// Whether an incident's opening starts an investigation.
    pub auto_investigate: bool,
    /// Webhook deliveries accepted per organisation per window, over every gateway: a flood
    /// from one organisation's tools is refused (429) before it fills the intake all share.
    pub webhook_rate_limit: u32,
    /// The window of the limit above.
    pub webhook_rate_window: Duration,
}

impl Default for IncidentConfig {
    fn default() -> Self {
        Self {
            webhook_max_bytes: 200 * 1024,
            group_window: Duration::from_secs(300),
            group_min_score: 0.5,
            group_graph_depth: 3,
            max_concurrent_investigations: 2,
            investigation_wall_time: Duration::from_secs(1800),
            investigation_tool_calls: 40,
            investigation_llm_calls: 30,
            investigation_tokens: 400_000,
            auto_investigate: true,
            webhook_rate_limit: 1000,
            webhook_rate_window: Duration::from_secs(10),
        }
    }
}

/// Where files are kept: a folder (`file:///…`, the default) or an S3-compatible bucket (`s3://bucket[/prefix]`).
#[derive(Clone)]
pub struct ObjectsConfig {
    pub url: String,
    /// An S3-compatible server other than AWS (SeaweedFS, MinIO, moto): its URL.
    pub s3_endpoint: Option<String>,
    pub s3_region: String,
    /// Keys for the bucket; without them the store reads the usual AWS variables and instance roles.
    pub s3_access_key_id: Option<String>,
    pub s3_secret_access_key: Option<SecretString>,
}

impl std::fmt::Debug for ObjectsConfig {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("ObjectsConfig")
            .field("url", &self.url)
            .field("s3_endpoint", &self.s3_endpoint)
            .field("s3_region", &self.s3_region)
            .field("s3_access_key_id", &self.s3_access_key_id)
            .field("s3_secret_access_key", &self.s3_secret_access_key.as_ref().map(|_| "***"))
            .finish()
    }
}

impl Default for ObjectsConfig {
    fn default() -> Self {
        Self {
            url: "file:///var/lib/aurora/objects".into(),
            s3_endpoint: None,
            s3_region: "us-east-1".into(),
            s3_access_key_id: None,
            s3_secret_access_key: None,
        }
    }
}

/// The in-process embedding model.
#[derive(Clone, Debug)]
pub struct EmbeddingConfig {
    /// The folder holding `model.safetensors`, `config.json` and `tokenizer.json` of all-MiniLM-L6-v2.
    pub model_dir: std::path::PathBuf,
    /// Threads that run the model (each batch also uses the CPU's cores for its matrix products).
    pub threads: usize,
}

impl Default for EmbeddingConfig {
    fn default() -> Self {
        let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
        Self { model_dir: std::path::Path::new(&home).join(".cache/aurora/all-minilm-l6-v2-0.1.0"), threads: 1 }
    }
}

/// Which vector index the knowledge base uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VectorBackend {
    Pgvector,
    Weaviate,
}

impl std::str::FromStr for VectorBackend {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "pgvector" => Ok(VectorBackend::Pgvector),
            "weaviate" => Ok(VectorBackend::Weaviate),
            other => Err(format!("`{other}` is not a vector index; use pgvector or weaviate")),
        }
    }
}

/// The knowledge base: upload limits, quotas, chunking, the vector index.
#[derive(Clone)]
pub struct KnowledgeConfig {
    /// Largest file accepted, in bytes.
    pub max_upload_bytes: u64,
    /// Documents an organisation may keep.
    pub max_documents: u64,
    /// Bytes of originals (every version) an organisation may keep.
    pub max_total_bytes: u64,
    /// Word pieces per chunk, and shared by neighbouring chunks.
    pub chunk_tokens: usize,
    pub chunk_overlap: usize,
    /// Most characters of text one document may yield.
    pub max_text_chars: usize,
    /// A DOCX package's largest uncompressed size, and its largest compression ratio.
    pub max_docx_uncompressed_bytes: u64,
    pub max_docx_ratio: u64,
    pub vectors: VectorBackend,
    pub weaviate_url: String,
    pub weaviate_api_key: Option<SecretString>,
    pub weaviate_collection: String,
}

impl std::fmt::Debug for KnowledgeConfig {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("KnowledgeConfig")
            .field("max_upload_bytes", &self.max_upload_bytes)
            .field("max_documents", &self.max_documents)
            .field("max_total_bytes", &self.max_total_bytes)
            .field("chunk_tokens", &self.chunk_tokens)
            .field("chunk_overlap", &self.chunk_overlap)
            .field("vectors", &self.vectors)
            .field("weaviate_url", &self.weaviate_url)
            .field("weaviate_api_key", &self.weaviate_api_key.as_ref().map(|_| "***"))
            .finish()
    }
}

impl Default for KnowledgeConfig {
    fn default() -> Self {
        Self {
            max_upload_bytes: 100 * 1024 * 1024,
            max_documents: 1_000,
            max_total_bytes: 2 * 1024 * 1024 * 1024,
            chunk_tokens: 500,
            chunk_overlap: 50,
            max_text_chars: 2_000_000,
            max_docx_uncompressed_bytes: 200 * 1024 * 1024,
            max_docx_ratio: 100,
            vectors: VectorBackend::Pgvector,
            weaviate_url: "http://127.0.0.1:8081".into(),
            weaviate_api_key: None,
            weaviate_collection: crate::vectors::weaviate::COLLECTION.into(),
        }
    }
}

/// The secret store: Vault or OpenBao, KV v2.
#[derive(Clone)]
pub struct VaultConfig {
    pub addr: String,
    /// The KV v2 mount holding Aurora's secrets (under `aurora/`).
    pub mount: String,
    pub token: Option<SecretString>,
    /// A file holding the token (the local stack's `aurora-token`).
    pub token_file: Option<std::path::PathBuf>,
    /// AppRole login, for production: the role id and its secret id.
    pub role_id: Option<String>,
    pub secret_id: Option<SecretString>,
    pub approle_mount: String,
    /// How long one request to Vault may take.
    pub timeout: Duration,
}

impl std::fmt::Debug for VaultConfig {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("VaultConfig")
            .field("addr", &self.addr)
            .field("mount", &self.mount)
            .field("token", &self.token.as_ref().map(|_| "***"))
            .field("token_file", &self.token_file)
            .field("role_id", &self.role_id)
            .field("secret_id", &self.secret_id.as_ref().map(|_| "***"))
            .finish()
    }
}

impl Default for VaultConfig {
    fn default() -> Self {
        Self {
            addr: "http://127.0.0.1:8200".into(),
            mount: "kv".into(),
            token: None,
            token_file: None,
            role_id: None,
            secret_id: None,
            approle_mount: "approle".into(),
            timeout: Duration::from_secs(5),
        }
    }
}

/// An OAuth 2.0 provider (authorization code with PKCE).
#[derive(Clone)]
pub struct OAuthProviderConfig {
    pub client_id: Option<String>,
    pub client_secret: Option<SecretString>,
    pub authorize_url: String,
    pub token_url: String,
}

impl std::fmt::Debug for OAuthProviderConfig {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("OAuthProviderConfig")
            .field("client_id", &self.client_id)
            .field("client_secret", &self.client_secret.as_ref().map(|_| "***"))
            .field("authorize_url", &self.authorize_url)
            .field("token_url", &self.token_url)
            .finish()
    }
}

/// Where the providers' APIs are, and how connections behave. Every endpoint can be pointed
/// elsewhere (a proxy, a sovereign cloud, a test server).
#[derive(Clone)]
pub struct ConnectionsConfig {
    /// Aurora's address as a browser reaches it; OAuth callbacks come back to
    /// `<public_url>/v1/connections/oauth/callback`.
    pub public_url: String,
    /// How long an OAuth `state` waits for its callback.
    pub oauth_state_ttl: Duration,
    /// How long before an access token expires it is refreshed.
    pub refresh_margin: Duration,
    pub github: OAuthProviderConfig,
    pub github_api_url: String,
    pub google: OAuthProviderConfig,
    /// One base for every Google API (`<base>/<service>/...`); the real hosts when unset.
    pub gcp_api_url: Option<String>,
    /// One endpoint for every AWS service (moto); the regional AWS endpoints when unset.
    pub aws_endpoint: Option<String>,
    /// The region of calls that need one before the organisation's regions are known.
    pub aws_region: String,
    /// Aurora's own AWS identity, which assumes the roles teams create for it.
    pub aws_access_key_id: Option<String>,
    pub aws_secret_access_key: Option<SecretString>,
    /// Whether a connection may point Aurora at a loopback or private address (a Grafana or
    /// Splunk inside the team's network, or a test server); off by default.
    pub allow_private_urls: bool,
    pub azure_login_url: String,
    pub azure_management_url: String,
    /// Datadog's API; `https://api.<site>` of the connection when unset.
    pub datadog_api_url: Option<String>,
    pub pagerduty_api_url: String,
    /// How long one call to a provider may take.
    pub provider_timeout: Duration,
}

impl std::fmt::Debug for ConnectionsConfig {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("ConnectionsConfig")
            .field("public_url", &self.public_url)
            .field("github", &self.github)
            .field("google", &self.google)
            .field("aws_endpoint", &self.aws_endpoint)
            .field("aws_access_key_id", &self.aws_access_key_id)
            .field("aws_secret_access_key", &self.aws_secret_access_key.as_ref().map(|_| "***"))
            .finish_non_exhaustive()
    }
}

impl Default for ConnectionsConfig {
    fn default() -> Self {
        Self {
            public_url: "http://127.0.0.1:8080".into(),
            oauth_state_ttl: Duration::from_secs(600),
            refresh_margin: Duration::from_secs(300),
            github: OAuthProviderConfig {
                client_id: None,
                client_secret: None,
                authorize_url: "https://github.com/login/oauth/authorize".into(),
                token_url: "https://github.com/login/oauth/access_token".into(),
            },
            github_api_url: "https://api.github.com".into(),
            google: OAuthProviderConfig {
                client_id: None,
                client_secret: None,
                authorize_url: "https://accounts.google.com/o/oauth2/v2/auth".into(),
                token_url: "https://oauth2.googleapis.com/token".into(),
            },
            gcp_api_url: None,
            aws_endpoint: None,
            aws_region: "us-east-1".into(),
            aws_access_key_id: None,
            aws_secret_access_key: None,
            allow_private_urls: false,
            azure_login_url: "https://login.microsoftonline.com".into(),
            azure_management_url: "https://management.azure.com".into(),
            datadog_api_url: None,
            pagerduty_api_url: "https://api.pagerduty.com".into(),
            provider_timeout: Duration::from_secs(20),
        }
    }
}

/// Where traces go. Spans are made and carried across Kafka (`traceparent` on every event) either
/// way; they leave the process only when an OTLP endpoint is set.
#[derive(Clone, Debug, Default)]
pub struct TelemetryConfig {
    /// An OTLP/gRPC collector, e.g. `http://127.0.0.1:4317`.
    pub otlp_endpoint: Option<String>,
}

#[derive(Clone)]
pub struct DatabaseConfig {
    /// Postgres holding the event store and the read models. Its password is a secret.
    pub url: SecretString,
    /// Connections in each process's Postgres pool.
    pub pool_size: u32,
}

#[derive(Clone, Debug)]
pub struct KafkaConfig {
    /// Bootstrap servers.
    pub brokers: String,
    /// Prefix of every topic name, so several installations can share a broker.
    pub topic_prefix: String,
    /// Partitions of each event topic when Aurora creates it.
    pub topic_partitions: i32,
    /// How long the broker may hold a fetch of an awake projection consumer before answering
    /// empty: shorter means fresher read models and, on a broker that sleeps it out (Tansu), more
    /// fetches while the consumer is awake (a resting consumer fetches nothing).
    pub fetch_wait: Duration,
    /// The same for consumers a person waits on: the agent (a question) and the chat hub (tokens).
    pub live_fetch_wait: Duration,
    /// librdkafka's own debug contexts for every client (e.g. `cgrp,fetch`), when set.
    pub debug: Option<String>,
    /// Who reads a projection's partitions when several instances run it.
    pub ownership: Ownership,
}

/// How the instances of a projection share its partitions.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Ownership {
    /// One instance reads every partition; the others wait on a Postgres advisory lock as hot
    /// standbys. Right for Tansu, whose group coordinator keeps a member that died without
    /// leaving as the group's leader, so that a restarted consumer is assigned nothing.
    #[default]
    Lock,
    /// The instances form a Kafka consumer group and share the partitions; each partition
    /// assigned to an instance is read from the offset stored with the read model in Postgres.
    /// For Apache Kafka, Redpanda or a managed Kafka.
    Group,
}

impl std::str::FromStr for Ownership {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "lock" => Ok(Self::Lock),
            "group" => Ok(Self::Group),
            _ => Err(format!("`{text}` is not `lock` or `group`")),
        }
    }
}

#[derive(Clone, Debug)]
pub struct LogConfig {
    /// How long the relay waits before looking for new events when it found none.
    pub relay_idle_wait: Duration,
    /// Largest number of events the relay publishes per round.
    pub relay_batch: i64,
    /// Largest number of records a projection applies in one transaction.
    pub projection_batch: usize,
    /// Organisations whose events one processor handles at once (each organisation's in order).
    pub processor_lanes: usize,
    /// Bytes of records a processor reads ahead of what it has handled, so that one
    /// organisation's backlog does not keep it from the others' records behind it.
    pub processor_read_ahead_bytes: usize,
}

#[derive(Clone, Debug)]
pub struct HttpConfig {
    /// Where the gateway listens.
    pub addr: SocketAddr,
    /// Largest request body the gateway accepts, in bytes.
    pub max_body_bytes: usize,
    /// Take the client address from the last `X-Forwarded-For` entry (behind a trusted proxy only).
    pub trust_forwarded_for: bool,
    /// How often the gateway samples the installation-wide gauges of `/metrics` (relay backlog,
    /// consumer lag); a scrape only reads the last sample.
    pub metrics_interval: Duration,
}

#[derive(Clone)]
pub struct RedisConfig {
    /// Redis, for rate limits and WebSocket tickets. Its password is a secret.
    pub url: SecretString,
    /// Prefix of every key, so several installations (or test runs) can share a server.
    pub prefix: String,
}

#[derive(Clone, Debug)]
pub struct AuthConfig {
    /// How long a login session lasts.
    pub session_ttl: Duration,
    /// Mark session cookies `Secure` (set this whenever Aurora is served over HTTPS).
    pub cookie_secure: bool,
    /// How long a WebSocket ticket may wait before it is used.
    pub ws_ticket_ttl: Duration,
    /// How long an invitation stays valid unless the admin asks for another time.
    pub invitation_ttl: Duration,
    /// Login or registration attempts allowed from one client address per window.
    pub rate_limit_per_ip: u32,
    /// Login or registration attempts allowed for one email address per window.
    pub rate_limit_per_account: u32,
    /// The window of the two limits above.
    pub rate_window: Duration,
}

#[derive(Clone)]
pub struct LlmConfig {
    /// Base URL of any OpenAI-compatible Chat Completions API (OpenAI, Azure OpenAI, Ollama, vLLM).
    pub base_url: String,
    pub model: String,
    /// Sent as `Authorization: Bearer`; never printed.
    pub api_key: Option<SecretString>,
    /// How long the LLM may take to send its first chunk, and between two chunks.
    pub timeout: Duration,
    /// The model's context window, in tokens; history beyond it is trimmed, oldest first.
    pub context_tokens: usize,
}

/// Limits of one turn, and of the confirmations it waits for.
#[derive(Clone, Debug)]
pub struct AgentConfig {
    pub max_llm_calls: u32,
    pub max_tool_calls: u32,
    pub max_turn: Duration,
    /// How long a confirmation waits for an answer before it expires.
    pub confirmation_ttl: Duration,
}

/// `url` with any password replaced, for logs and debug output.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_owned() };
    let Some((credentials, host)) = rest.rsplit_once('@') else { return url.to_owned() };
    match credentials.split_once(':') {
        Some((user, _password)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_owned(),
    }
}

impl std::fmt::Debug for DatabaseConfig {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("DatabaseConfig")
            .field("url", &redact_url(self.url.expose_secret()))
            .field("pool_size", &self.pool_size)
            .finish()
    }
}

impl std::fmt::Debug for RedisConfig {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("RedisConfig").field("url", &redact_url(self.url.expose_secret())).field("prefix", &self.prefix).finish()
    }
}

impl std::fmt::Debug for LlmConfig {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("LlmConfig")
            .field("base_url", &redact_url(&self.base_url))
            .field("model", &self.model)
            .field("api_key", &self.api_key.as_ref().map(|_| "***"))
            .field("timeout", &self.timeout)
            .field("context_tokens", &self.context_tokens)
            .finish()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("unknown configuration variable {0}; see the README for the AURORA_* variables")]
    Unknown(String),
    #[error("{name} is not valid: {reason}")]
    Invalid { name: &'static str, reason: String },
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self { url: "postgres://aurora@127.0.0.1:5433/aurora".into(), pool_size: 10 }
    }
}

impl Default for KafkaConfig {
    fn default() -> Self {
        Self {
            brokers: "127.0.0.1:9092".into(),
            topic_prefix: String::new(),
            topic_partitions: 3,
            fetch_wait: Duration::from_millis(10),
            live_fetch_wait: Duration::from_millis(2),
            debug: None,
            ownership: Ownership::Lock,
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            relay_idle_wait: Duration::from_millis(5),
            relay_batch: 2000,
            projection_batch: 2000,
            processor_lanes: 4,
            processor_read_ahead_bytes: 64 * 1024 * 1024,
        }
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            max_body_bytes: 1024 * 1024,
            trust_forwarded_for: false,
            metrics_interval: Duration::from_secs(10),
        }
    }
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self { url: "redis://127.0.0.1:6379".into(), prefix: "aurora:".into() }
    }
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            session_ttl: Duration::from_secs(7 * 24 * 3600),
            cookie_secure: false,
            ws_ticket_ttl: Duration::from_secs(30),
            invitation_ttl: Duration::from_secs(7 * 24 * 3600),
            rate_limit_per_ip: 20,
            rate_limit_per_account: 10,
            rate_window: Duration::from_secs(60),
        }
    }
}

impl Default for LlmConfig {
    fn default() -> Self {
        Self {
            // Ollama's OpenAI-compatible API on this machine.
            base_url: "http://127.0.0.1:11434/v1".into(),
            model: "llama3.1".into(),
            api_key: None,
            timeout: Duration::from_secs(60),
            context_tokens: 16_000,
        }
    }
}

impl Default for AgentConfig {
    fn default() -> Self {
        Self { max_llm_calls: 10, max_tool_calls: 20, max_turn: Duration::from_secs(600), confirmation_ttl: Duration::from_secs(300) }
    }
}

/// Variables of Aurora's read before the configuration is (logging starts first, so that a
/// configuration error can be logged); every other `AURORA_*` variable has its arm in `from_vars`.
const READ_BEFORE_CONFIGURATION: &[&str] = &["AURORA_LOG", "AURORA_LOG_FORMAT"];

/// Variables read by the project's scripts and tests rather than by the configuration.
const NOT_CONFIGURATION_PREFIXES: &[&str] = &["AURORA_TEST_", "AURORA_STACK_", "AURORA_BIN"];

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_vars(std::env::vars())
    }

    pub fn from_vars(vars: impl IntoIterator<Item = (String, String)>) -> Result<Self, ConfigError> {
        let mut config = Config::default();
        for (name, value) in vars {
            if !name.starts_with("AURORA_") || NOT_CONFIGURATION_PREFIXES.iter().any(|prefix| name.starts_with(prefix)) {
                continue;
            }
            match name.as_str() {
                "AURORA_DATABASE_URL" => config.database.url = value.into(),
                "AURORA_KAFKA_BROKERS" => config.kafka.brokers = value,
                "AURORA_KAFKA_OWNERSHIP" => config.kafka.ownership = parse("AURORA_KAFKA_OWNERSHIP", &value)?,
                "AURORA_TOPIC_PREFIX" => config.kafka.topic_prefix = value,
                "AURORA_TOPIC_PARTITIONS" => config.kafka.topic_partitions = parse("AURORA_TOPIC_PARTITIONS", &value)?,
                "AURORA_HTTP_ADDR" => config.http.addr = parse("AURORA_HTTP_ADDR", &value)?,
                "AURORA_MAX_BODY_BYTES" => config.http.max_body_bytes = parse("AURORA_MAX_BODY_BYTES", &value)?,
                "AURORA_RELAY_IDLE_WAIT_MS" => {
                    config.log.relay_idle_wait = Duration::from_millis(parse("AURORA_RELAY_IDLE_WAIT_MS", &value)?)
                }
                "AURORA_RELAY_BATCH" => config.log.relay_batch = parse("AURORA_RELAY_BATCH", &value)?,
                "AURORA_PROJECTION_BATCH" => config.log.projection_batch = parse("AURORA_PROJECTION_BATCH", &value)?,
                "AURORA_PROCESSOR_LANES" => config.log.processor_lanes = parse("AURORA_PROCESSOR_LANES", &value)?,
                "AURORA_PROCESSOR_READ_AHEAD_BYTES" => {
                    config.log.processor_read_ahead_bytes = parse("AURORA_PROCESSOR_READ_AHEAD_BYTES", &value)?
                }
                "AURORA_DATABASE_POOL_SIZE" => config.database.pool_size = parse("AURORA_DATABASE_POOL_SIZE", &value)?,
                "AURORA_REDIS_URL" => config.redis.url = value.into(),
                "AURORA_REDIS_PREFIX" => config.redis.prefix = value,
                "AURORA_SESSION_TTL_SECS" => config.auth.session_ttl = seconds("AURORA_SESSION_TTL_SECS", &value)?,
                "AURORA_COOKIE_SECURE" => config.auth.cookie_secure = parse("AURORA_COOKIE_SECURE", &value)?,
                "AURORA_WS_TICKET_TTL_SECS" => config.auth.ws_ticket_ttl = seconds("AURORA_WS_TICKET_TTL_SECS", &value)?,
                "AURORA_INVITATION_TTL_SECS" => config.auth.invitation_ttl = seconds("AURORA_INVITATION_TTL_SECS", &value)?,
                "AURORA_AUTH_RATE_LIMIT_PER_IP" => config.auth.rate_limit_per_ip = parse("AURORA_AUTH_RATE_LIMIT_PER_IP", &value)?,
                "AURORA_AUTH_RATE_LIMIT_PER_ACCOUNT" => {
                    config.auth.rate_limit_per_account = parse("AURORA_AUTH_RATE_LIMIT_PER_ACCOUNT", &value)?
                }
                "AURORA_AUTH_RATE_WINDOW_SECS" => config.auth.rate_window = seconds("AURORA_AUTH_RATE_WINDOW_SECS", &value)?,
                "AURORA_TRUST_FORWARDED_FOR" => config.http.trust_forwarded_for = parse("AURORA_TRUST_FORWARDED_FOR", &value)?,
                "AURORA_OTLP_ENDPOINT" => config.telemetry.otlp_endpoint = Some(value).filter(|endpoint| !endpoint.is_empty()),
                "AURORA_LLM_BASE_URL" => config.llm.base_url = value,
                "AURORA_LLM_MODEL" => config.llm.model = value,
                "AURORA_LLM_API_KEY" => config.llm.api_key = Some(value).filter(|key| !key.is_empty()).map(SecretString::from),
                "AURORA_LLM_TIMEOUT_SECS" => config.llm.timeout = seconds("AURORA_LLM_TIMEOUT_SECS", &value)?,
                "AURORA_LLM_CONTEXT_TOKENS" => config.llm.context_tokens = parse("AURORA_LLM_CONTEXT_TOKENS", &value)?,
                "AURORA_AGENT_MAX_LLM_CALLS" => config.agent.max_llm_calls = parse("AURORA_AGENT_MAX_LLM_CALLS", &value)?,
                "AURORA_AGENT_MAX_TOOL_CALLS" => config.agent.max_tool_calls = parse("AURORA_AGENT_MAX_TOOL_CALLS", &value)?,
                "AURORA_AGENT_MAX_TURN_SECS" => config.agent.max_turn = seconds("AURORA_AGENT_MAX_TURN_SECS", &value)?,
                "AURORA_CONFIRMATION_TTL_SECS" => config.agent.confirmation_ttl = seconds("AURORA_CONFIRMATION_TTL_SECS", &value)?,
                "AURORA_METRICS_INTERVAL_SECS" => config.http.metrics_interval = seconds("AURORA_METRICS_INTERVAL_SECS", &value)?,
                "AURORA_KAFKA_FETCH_WAIT_MS" => config.kafka.fetch_wait = milliseconds("AURORA_KAFKA_FETCH_WAIT_MS", &value)?,
                "AURORA_KAFKA_LIVE_FETCH_WAIT_MS" => {
                    config.kafka.live_fetch_wait = milliseconds("AURORA_KAFKA_LIVE_FETCH_WAIT_MS", &value)?
                }
                "AURORA_KAFKA_DEBUG" => config.kafka.debug = Some(value).filter(|contexts| !contexts.is_empty()),
                "AURORA_VAULT_ADDR" => config.vault.addr = value,
                "AURORA_VAULT_MOUNT" => config.vault.mount = value,
                "AURORA_VAULT_TOKEN" => config.vault.token = non_empty(value).map(SecretString::from),
                "AURORA_VAULT_TOKEN_FILE" => config.vault.token_file = non_empty(value).map(Into::into),
                "AURORA_VAULT_ROLE_ID" => config.vault.role_id = non_empty(value),
                "AURORA_VAULT_SECRET_ID" => config.vault.secret_id = non_empty(value).map(SecretString::from),
                "AURORA_VAULT_APPROLE_MOUNT" => config.vault.approle_mount = value,
                "AURORA_VAULT_TIMEOUT_SECS" => config.vault.timeout = seconds("AURORA_VAULT_TIMEOUT_SECS", &value)?,
                "AURORA_PUBLIC_URL" => config.connections.public_url = value.trim_end_matches('/').to_owned(),
                "AURORA_OAUTH_STATE_TTL_SECS" => config.connections.oauth_state_ttl = seconds("AURORA_OAUTH_STATE_TTL_SECS", &value)?,
                "AURORA_OAUTH_REFRESH_MARGIN_SECS" => {
                    config.connections.refresh_margin = seconds("AURORA_OAUTH_REFRESH_MARGIN_SECS", &value)?
                }
                "AURORA_GITHUB_CLIENT_ID" => config.connections.github.client_id = non_empty(value),
                "AURORA_GITHUB_CLIENT_SECRET" => config.connections.github.client_secret = non_empty(value).map(SecretString::from),
                "AURORA_GITHUB_AUTHORIZE_URL" => config.connections.github.authorize_url = value,
                "AURORA_GITHUB_TOKEN_URL" => config.connections.github.token_url = value,
                "AURORA_GITHUB_API_URL" => config.connections.github_api_url = value.trim_end_matches('/').to_owned(),
                "AURORA_GOOGLE_CLIENT_ID" => config.connections.google.client_id = non_empty(value),
                "AURORA_GOOGLE_CLIENT_SECRET" => config.connections.google.client_secret = non_empty(value).map(SecretString::from),
                "AURORA_GOOGLE_AUTHORIZE_URL" => config.connections.google.authorize_url = value,
                "AURORA_GOOGLE_TOKEN_URL" => config.connections.google.token_url = value,
                "AURORA_GCP_API_URL" => config.connections.gcp_api_url = non_empty(value.trim_end_matches('/').to_owned()),
                "AURORA_AWS_ENDPOINT" => config.connections.aws_endpoint = non_empty(value.trim_end_matches('/').to_owned()),
                "AURORA_AWS_REGION" => config.connections.aws_region = value,
                "AURORA_AWS_ACCESS_KEY_ID" => config.connections.aws_access_key_id = non_empty(value),
                "AURORA_AWS_SECRET_ACCESS_KEY" => config.connections.aws_secret_access_key = non_empty(value).map(SecretString::from),
                "AURORA_ALLOW_PRIVATE_URLS" => config.connections.allow_private_urls = parse("AURORA_ALLOW_PRIVATE_URLS", &value)?,
                "AURORA_AZURE_LOGIN_URL" => config.connections.azure_login_url = value.trim_end_matches('/').to_owned(),
                "AURORA_AZURE_MANAGEMENT_URL" => config.connections.azure_management_url = value.trim_end_matches('/').to_owned(),
                "AURORA_DATADOG_API_URL" => config.connections.datadog_api_url = non_empty(value.trim_end_matches('/').to_owned()),
                "AURORA_PAGERDUTY_API_URL" => config.connections.pagerduty_api_url = value.trim_end_matches('/').to_owned(),
                "AURORA_PROVIDER_TIMEOUT_SECS" => config.connections.provider_timeout = seconds("AURORA_PROVIDER_TIMEOUT_SECS", &value)?,
                "AURORA_OBJECTS_URL" => config.objects.url = value,
                "AURORA_S3_ENDPOINT" => config.objects.s3_endpoint = non_empty(value.trim_end_matches('/').to_owned()),
                "AURORA_S3_REGION" => config.objects.s3_region = value,
                "AURORA_S3_ACCESS_KEY_ID" => config.objects.s3_access_key_id = non_empty(value),
                "AURORA_S3_SECRET_ACCESS_KEY" => config.objects.s3_secret_access_key = non_empty(value).map(SecretString::from),
                "AURORA_EMBEDDING_MODEL_DIR" => config.embedding.model_dir = value.into(),
                "AURORA_EMBEDDING_THREADS" => config.embedding.threads = parse("AURORA_EMBEDDING_THREADS", &value)?,
                "AURORA_KB_MAX_UPLOAD_BYTES" => config.knowledge.max_upload_bytes = parse("AURORA_KB_MAX_UPLOAD_BYTES", &value)?,
                "AURORA_KB_MAX_DOCUMENTS" => config.knowledge.max_documents = parse("AURORA_KB_MAX_DOCUMENTS", &value)?,
                "AURORA_KB_MAX_TOTAL_BYTES" => config.knowledge.max_total_bytes = parse("AURORA_KB_MAX_TOTAL_BYTES", &value)?,
                "AURORA_KB_CHUNK_TOKENS" => config.knowledge.chunk_tokens = parse("AURORA_KB_CHUNK_TOKENS", &value)?,
                "AURORA_KB_CHUNK_OVERLAP" => config.knowledge.chunk_overlap = parse("AURORA_KB_CHUNK_OVERLAP", &value)?,
                "AURORA_KB_MAX_TEXT_CHARS" => config.knowledge.max_text_chars = parse("AURORA_KB_MAX_TEXT_CHARS", &value)?,
                "AURORA_KB_VECTORS" => config.knowledge.vectors = parse("AURORA_KB_VECTORS", &value)?,
                "AURORA_WEAVIATE_URL" => config.knowledge.weaviate_url = value.trim_end_matches('/').to_owned(),
                "AURORA_WEAVIATE_API_KEY" => config.knowledge.weaviate_api_key = non_empty(value).map(SecretString::from),
                "AURORA_WEAVIATE_COLLECTION" => config.knowledge.weaviate_collection = value,
                "AURORA_INCIDENT_WEBHOOK_MAX_BYTES" => {
                    config.incident.webhook_max_bytes = parse("AURORA_INCIDENT_WEBHOOK_MAX_BYTES", &value)?
                }
                "AURORA_INCIDENT_GROUP_WINDOW_SECS" => config.incident.group_window = seconds("AURORA_INCIDENT_GROUP_WINDOW_SECS", &value)?,
                "AURORA_INCIDENT_GROUP_MIN_SCORE" => config.incident.group_min_score = parse("AURORA_INCIDENT_GROUP_MIN_SCORE", &value)?,
                "AURORA_INCIDENT_GROUP_GRAPH_DEPTH" => {
                    config.incident.group_graph_depth = parse("AURORA_INCIDENT_GROUP_GRAPH_DEPTH", &value)?
                }
                "AURORA_INCIDENT_MAX_CONCURRENT_INVESTIGATIONS" => {
                    config.incident.max_concurrent_investigations = parse("AURORA_INCIDENT_MAX_CONCURRENT_INVESTIGATIONS", &value)?
                }
                "AURORA_INCIDENT_INVESTIGATION_SECS" => {
                    config.incident.investigation_wall_time = seconds("AURORA_INCIDENT_INVESTIGATION_SECS", &value)?
                }
                "AURORA_INCIDENT_INVESTIGATION_TOOL_CALLS" => {
                    config.incident.investigation_tool_calls = parse("AURORA_INCIDENT_INVESTIGATION_TOOL_CALLS", &value)?
                }
                "AURORA_INCIDENT_INVESTIGATION_LLM_CALLS" => {
                    config.incident.investigation_llm_calls = parse("AURORA_INCIDENT_INVESTIGATION_LLM_CALLS", &value)?
                }
                "AURORA_INCIDENT_INVESTIGATION_TOKENS" => {
                    config.incident.investigation_tokens = parse("AURORA_INCIDENT_INVESTIGATION_TOKENS", &value)?
                }
                "AURORA_INCIDENT_AUTO_INVESTIGATE" => config.incident.auto_investigate = parse("AURORA_INCIDENT_AUTO_INVESTIGATE", &value)?,
                "AURORA_INCIDENT_WEBHOOK_RATE_LIMIT" => {
                    config.incident.webhook_rate_limit = parse("AURORA_INCIDENT_WEBHOOK_RATE_LIMIT", &value)?
                }
                "AURORA_INCIDENT_WEBHOOK_RATE_WINDOW_SECS" => {
                    config.incident.webhook_rate_window = seconds("AURORA_INCIDENT_WEBHOOK_RATE_WINDOW_SECS", &value)?
                }
                "AURORA_DEPLOY_TOFU_BIN" => config.deploy.cli = value.into(),
                "AURORA_DISCOVERY_INTERVAL_SECS" => config.discovery.interval = seconds("AURORA_DISCOVERY_INTERVAL_SECS", &value)?,
                "AURORA_DISCOVERY_FIRST_SCAN_DELAY_SECS" => {
                    config.discovery.first_scan_delay = seconds("AURORA_DISCOVERY_FIRST_SCAN_DELAY_SECS", &value)?
                }
                "AURORA_DISCOVERY_AWS_REGIONS" => {
                    config.discovery.aws_regions =
                        value.split(',').map(str::trim).filter(|region| !region.is_empty()).map(str::to_owned).collect()
                }
                "AURORA_DISCOVERY_STALE_AFTER_SECS" => config.discovery.stale_after = seconds("AURORA_DISCOVERY_STALE_AFTER_SECS", &value)?,
                "AURORA_DISCOVERY_GONE_AFTER_SECS" => config.discovery.gone_after = seconds("AURORA_DISCOVERY_GONE_AFTER_SECS", &value)?,
                "AURORA_DISCOVERY_GRAPH" => config.discovery.graph = parse("AURORA_DISCOVERY_GRAPH", &value)?,
                "AURORA_DISCOVERY_BOLT_URL" => config.discovery.bolt.url = value,
                "AURORA_DISCOVERY_BOLT_USER" => config.discovery.bolt.user = non_empty(value),
                "AURORA_DISCOVERY_BOLT_PASSWORD" => config.discovery.bolt.password = non_empty(value).map(SecretString::from),
                "AURORA_DISCOVERY_BOLT_POOL_SIZE" => config.discovery.bolt.pool_size = parse("AURORA_DISCOVERY_BOLT_POOL_SIZE", &value)?,
                "AURORA_DISCOVERY_FLAG_AFTER_FAILURES" => {
                    config.discovery.flag_after_failures = parse("AURORA_DISCOVERY_FLAG_AFTER_FAILURES", &value)?
                }
                "AURORA_DEPLOY_INIT_TIMEOUT_SECS" => config.deploy.init_timeout = seconds("AURORA_DEPLOY_INIT_TIMEOUT_SECS", &value)?,
                "AURORA_DEPLOY_RUN_TIMEOUT_SECS" => config.deploy.run_timeout = seconds("AURORA_DEPLOY_RUN_TIMEOUT_SECS", &value)?,
                "AURORA_DEPLOY_MAX_FILE_BYTES" => config.deploy.max_file_bytes = parse("AURORA_DEPLOY_MAX_FILE_BYTES", &value)?,
                known if READ_BEFORE_CONFIGURATION.contains(&known) => {}
                _ => return Err(ConfigError::Unknown(name)),
            }
        }
        if config.knowledge.chunk_tokens < 32 || config.knowledge.chunk_overlap * 2 > config.knowledge.chunk_tokens {
            return Err(ConfigError::Invalid {
                name: "AURORA_KB_CHUNK_TOKENS",
                reason: "chunks must be at least 32 word pieces, and the overlap at most half a chunk".into(),
            });
        }
        if config.incident.webhook_max_bytes > 240 * 1024 || config.incident.webhook_max_bytes < 1024 {
            return Err(ConfigError::Invalid {
                name: "AURORA_INCIDENT_WEBHOOK_MAX_BYTES",
                reason: "must be between 1024 and 245760 bytes: the payload travels in one event".into(),
            });
        }
        if !(0.0..=1.0).contains(&config.incident.group_min_score) {
            return Err(ConfigError::Invalid { name: "AURORA_INCIDENT_GROUP_MIN_SCORE", reason: "must be between 0 and 1".into() });
        }
        if !(0..=10).contains(&config.incident.group_graph_depth) {
            return Err(ConfigError::Invalid { name: "AURORA_INCIDENT_GROUP_GRAPH_DEPTH", reason: "must be between 0 and 10".into() });
        }
        if config.incident.webhook_rate_limit < 1 || config.incident.webhook_rate_window.is_zero() {
            return Err(ConfigError::Invalid {
                name: "AURORA_INCIDENT_WEBHOOK_RATE_LIMIT",
                reason: "the limit and its window (AURORA_INCIDENT_WEBHOOK_RATE_WINDOW_SECS) must be at least 1".into(),
            });
        }
        if config.incident.max_concurrent_investigations < 1 {
            return Err(ConfigError::Invalid {
                name: "AURORA_INCIDENT_MAX_CONCURRENT_INVESTIGATIONS",
                reason: "must be at least 1".into(),
            });
        }
        if config.kafka.topic_partitions < 1 {
            return Err(ConfigError::Invalid { name: "AURORA_TOPIC_PARTITIONS", reason: "must be at least 1".into() });
        }
        if !(1..=64).contains(&config.log.processor_lanes) {
            return Err(ConfigError::Invalid { name: "AURORA_PROCESSOR_LANES", reason: "must be between 1 and 64".into() });
        }
        if !(1..=DeployConfig::MAX_FILE_BYTES).contains(&config.deploy.max_file_bytes) {
            return Err(ConfigError::Invalid {
                name: "AURORA_DEPLOY_MAX_FILE_BYTES",
                reason: format!(
                    "must be between 1 and {} (a file travels in the event of the tool call that writes it)",
                    DeployConfig::MAX_FILE_BYTES
                ),
            });
        }
        if config.log.processor_read_ahead_bytes < 1024 * 1024 {
            return Err(ConfigError::Invalid {
                name: "AURORA_PROCESSOR_READ_AHEAD_BYTES",
                reason: "must be at least 1 MiB (1048576)".into(),
            });
        }
        if let Err(reason) = crate::graph::bolt::address(&config.discovery.bolt.url) {
            return Err(ConfigError::Invalid { name: "AURORA_DISCOVERY_BOLT_URL", reason });
        }
        if config.discovery.bolt.user.is_some() != config.discovery.bolt.password.is_some() {
            return Err(ConfigError::Invalid {
                name: "AURORA_DISCOVERY_BOLT_PASSWORD",
                reason: "basic authentication needs both AURORA_DISCOVERY_BOLT_USER and AURORA_DISCOVERY_BOLT_PASSWORD".into(),
            });
        }
        Ok(config)
    }
}

fn non_empty(value: String) -> Option<String> {
    Some(value).filter(|value| !value.is_empty())
}

fn milliseconds(name: &'static str, value: &str) -> Result<Duration, ConfigError> {
    let milliseconds: u64 = parse(name, value)?;
    if !(1..=10_000).contains(&milliseconds) {
        return Err(ConfigError::Invalid { name, reason: "must be between 1 and 10000 milliseconds".into() });
    }
    Ok(Duration::from_millis(milliseconds))
}

fn seconds(name: &'static str, value: &str) -> Result<Duration, ConfigError> {
    let seconds: u64 = parse(name, value)?;
    if seconds == 0 {
        return Err(ConfigError::Invalid { name, reason: "must be at least 1 second".into() });
    }
    Ok(Duration::from_secs(seconds))
}

fn parse<T: std::str::FromStr>(name: &'static str, value: &str) -> Result<T, ConfigError>
where
    T::Err: std::fmt::Display,
{
    value.parse().map_err(|error: T::Err| ConfigError::Invalid { name, reason: error.to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(name, value)| (name.to_string(), value.to_string())).collect()
    }

    #[test]
    fn overrides_apply_and_unknown_variables_are_refused() {
        let config = Config::from_vars(vars(&[("AURORA_TOPIC_PREFIX", "t1."), ("AURORA_TEST_X", "1")])).unwrap();
        assert_eq!(config.kafka.topic_prefix, "t1.");
        let error = Config::from_vars(vars(&[("AURORA_DATABSE_URL", "x")])).unwrap_err();
        assert!(error.to_string().contains("AURORA_DATABSE_URL"));
        let error = Config::from_vars(vars(&[("AURORA_TOPIC_PARTITIONS", "many")])).unwrap_err();
        assert!(error.to_string().contains("AURORA_TOPIC_PARTITIONS"));
    }

    #[test]
    fn debug_output_never_shows_the_database_password() {
        let config = Config::from_vars(vars(&[
            ("AURORA_DATABASE_URL", "postgres://aurora:hunter2@db:5432/aurora"),
            ("AURORA_LLM_API_KEY", "sk-hunter3"),
        ]))
        .unwrap();
        let printed = format!("{config:?}");
        assert!(!printed.contains("hunter2") && !printed.contains("hunter3"), "{printed}");
        assert!(printed.contains("postgres://aurora:***@db:5432/aurora"));
    }
}
