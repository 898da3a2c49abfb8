//! `aurora`: one binary for every role and tool. `up` runs every role in one process; `gateway`,
//! `processors` and `projections` run one role each, so each can be scaled out on its own.

mod bench;
mod bench_chat;
mod bench_cpu;
mod bench_discovery;
mod bench_incidents;
mod bench_knowledge;
mod bench_tools;
mod tools;

use std::path::PathBuf;

use aurora::{Application, Role};
use aurora_adapters::{shutdown, Config};
use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

/// mimalloc, not glibc's malloc: many small allocations from many threads at once (each request's
/// JSON) are where glibc's arena locks made the gateway wait.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "aurora", version, about = "Aurora: AI site reliability, event-sourced over Kafka")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run every role (gateway, processors, projections) in this process.
    Up,
    /// Run the HTTP gateway.
    Gateway,
    /// Run the processors (the relay to Kafka, and the reactors later issues add).
    Processors,
    /// Run the projections that build the read models.
    Projections {
        /// Run only these projections (default: all).
        #[arg(long = "only")]
        only: Vec<String>,
    },
    /// Apply database migrations.
    Migrate,
    /// Rebuild a projection from offset zero into fresh tables and swap them in.
    Replay {
        /// The projection to rebuild: audit_log, chat_sessions or chat_messages.
        projection: String,
        /// Rebuild even when the log no longer starts at offset 0 (records were deleted): the
        /// read model then holds only what the log still has.
        #[arg(long)]
        force: bool,
    },
    /// The audit log.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// The event log on Kafka.
    Events {
        #[command(subcommand)]
        command: EventsCommand,
    },
    /// Measure throughput and latency against the running stack.
    Bench {
        #[command(subcommand)]
        command: BenchCommand,
    },
    /// The published event schemas.
    Schemas {
        #[command(subcommand)]
        command: SchemasCommand,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Write the audit log as JSON lines.
    Export {
        /// Output file (`-` for standard output).
        #[arg(long, default_value = "audit.jsonl")]
        out: PathBuf,
        /// Only this organisation.
        #[arg(long)]
        org: Option<uuid::Uuid>,
    },
}

#[derive(Subcommand)]
enum EventsCommand {
    /// Follow topics and print every record as a CloudEvent in JSON, one per line.
    Tail {
        /// Topics to follow (default: every event topic).
        #[arg(long = "topic")]
        topics: Vec<String>,
        /// Start at the beginning of each topic instead of its end.
        #[arg(long)]
        from_beginning: bool,
        /// Stop after this many records.
        #[arg(long)]
        limit: Option<u64>,
    },
}

#[derive(Subcommand)]
enum BenchCommand {
    /// The event backbone: appends, relay, projection, replay and end-to-end latency, each beside a raw baseline.
    Backbone(bench::BackboneOptions),
    /// Chat: time to first token through gateway, Kafka and processor, and concurrent streaming sessions.
    Chat(bench_chat::ChatOptions),
    /// The agent's tool runtime: an AWS tool call (secret read + call + summarise) beside the same moto call made directly.
    Tools(bench_tools::ToolsOptions),
    /// The knowledge base: indexing throughput beside the model alone, upload MB/s beside the object store, search p50/p99 beside raw pgvector.
    Knowledge(bench_knowledge::KnowledgeOptions),
    /// Webhook deliveries accepted per second beside a bare handler, and webhook → investigation.started.
    Incidents(bench_incidents::IncidentOptions),
    /// Discovery: a moto-seeded estate's scan beside the bare listing, and blast-radius p50/p99 on a large Postgres graph.
    Discovery(bench_discovery::DiscoveryOptions),
}

#[derive(Subcommand)]
enum SchemasCommand {
    /// Regenerate schemas/ from the code.
    Write {
        #[arg(long, default_value = "schemas")]
        dir: PathBuf,
    },
}

fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("AURORA_LOG").unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,rdkafka=off,librdkafka=off"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if std::env::var("AURORA_LOG_FORMAT").as_deref() == Ok("json") {
        builder.json().init();
    } else {
        builder.init();
    }
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    init_logging();
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    if let Command::Schemas { command: SchemasCommand::Write { dir } } = &cli.command {
        return tools::write_schemas(dir);
    }
    let config = Config::from_env()?;
    let shutdown = shutdown::on_signals();
    match cli.command {
        Command::Up => {
            run_roles(&config, vec![RoleName::Gateway, RoleName::Processors, RoleName::Projections(Vec::new())], true, shutdown).await
        }
        Command::Gateway => run_roles(&config, vec![RoleName::Gateway], false, shutdown).await,
        Command::Processors => run_roles(&config, vec![RoleName::Processors], false, shutdown).await,
        Command::Projections { only } => run_roles(&config, vec![RoleName::Projections(only)], false, shutdown).await,
        Command::Migrate => {
            let pool = aurora_adapters::postgres::connect(&config).await?;
            aurora_commands::migrate(&pool).await?;
            eprintln!("migrations applied");
            Ok(())
        }
        Command::Replay { projection, force } => tools::replay(&config, &projection, force).await,
        Command::Audit { command: AuditCommand::Export { out, org } } => tools::export_audit(&config, &out, org).await,
        Command::Events { command: EventsCommand::Tail { topics, from_beginning, limit } } => {
            tools::tail_events(&config, topics, from_beginning, limit, shutdown).await
        }
        Command::Bench { command: BenchCommand::Backbone(options) } => bench::backbone(&config, options).await,
        Command::Bench { command: BenchCommand::Chat(options) } => bench_chat::chat(&config, options).await,
        Command::Bench { command: BenchCommand::Tools(options) } => bench_tools::tools(&config, options).await,
        Command::Bench { command: BenchCommand::Knowledge(options) } => bench_knowledge::knowledge(&config, options).await,
        Command::Bench { command: BenchCommand::Incidents(options) } => bench_incidents::incidents(&config, options).await,
        Command::Bench { command: BenchCommand::Discovery(options) } => bench_discovery::discovery(&config, options).await,
        Command::Schemas { .. } => unreachable!("handled before configuration is read"),
    }
}

/// Runs `roles` until shutdown; when one fails, the others are stopped too.
async fn run_roles(config: &Config, roles: Vec<RoleName>, migrate: bool, shutdown: CancellationToken) -> anyhow::Result<()> {
    let pool = aurora_adapters::postgres::connect(config).await?;
    if migrate {
        aurora_commands::migrate(&pool).await?;
    }
    let mut started = Vec::new();
    for role in roles {
        started.push(match role {
            RoleName::Gateway => Role::Gateway(tokio::net::TcpListener::bind(config.http.addr).await?),
            RoleName::Processors => Role::Processors,
            RoleName::Projections(only) => Role::Projections(only),
        });
    }
    Application::start(config, pool, started, shutdown).await?.wait().await
}

enum RoleName {
    Gateway,
    Processors,
    Projections(Vec<String>),
}
