//! `aurora bench tools`: what the agent's tool runtime adds to a provider call. It times an AWS
//! tool (`aws_ec2_instances`) called as the agent calls it — arguments parsed against the tool's
//! type, the connection's credentials read from the secret store at the moment of use, the call
//! signed and sent, the answer parsed and summarised as the model sees it, the whole serialised —
//! beside the same EC2 DescribeInstances call made directly with the same client and keys, and
//! reports the difference. The two alternate call by call, so that both see the same server.
//!
//! It needs the stack's OpenBao (`AURORA_VAULT_ADDR`, `AURORA_VAULT_TOKEN_FILE`) and moto
//! (`--aws-endpoint`, the stack's by default); it writes one secret under a fresh organisation
//! and deletes it afterwards.

use std::sync::Arc;
use std::time::{Duration, Instant};

use aurora_adapters::clouds::aws::{Aws, Credentials};
use aurora_adapters::secrets::vault::VaultStore;
use aurora_adapters::secrets::{Secret, SecretPath, SecretStore};
use aurora_adapters::Config;
use aurora_commands::postgres::PostgresEventStore;
use aurora_commands::CommandHandler;
use aurora_events::chat::ChatMode;
use aurora_events::connection::Provider;
use aurora_events::identity::Role;
use aurora_events::OrgId;
use aurora_processors::agent::tools::{Connected, LiveConnection, Registry, ToolContext};
use serde_json::json;
use uuid::Uuid;

#[derive(Debug, clap::Args)]
pub struct ToolsOptions {
    /// Calls of each kind.
    #[arg(long, default_value_t = 300)]
    pub calls: usize,
    /// Instances to create in moto first, so the answer has something to parse and summarise.
    #[arg(long, default_value_t = 20)]
    pub instances: usize,
    /// The AWS endpoint (moto).
    #[arg(long, default_value = "http://127.0.0.1:5055")]
    pub aws_endpoint: String,
}

pub async fn tools(config: &Config, options: ToolsOptions) -> anyhow::Result<()> {
    let mut config = config.clone();
    config.connections.aws_endpoint = Some(options.aws_endpoint.clone());
    let providers = Arc::new(config.connections.clone());
    let region = "eu-north-1";
    // moto accepts any keys unless told to check them; these stand for a team's.
    let keys = Credentials {
        access_key_id: "AKIABENCHTOOLS000001".into(),
        secret_access_key: "bench-tools-secret-key-0000000000000000".into(),
        session_token: None,
    };
    let direct = Aws::new(&providers, keys.clone());
    let images = direct.query("ec2", region, "DescribeImages", "2016-11-15", &[("Owner.1", "amazon".into())]).await?;
    let image = images
        .split("<imageId>")
        .nth(1)
        .and_then(|rest| rest.split('<').next())
        .ok_or_else(|| anyhow::anyhow!("moto lists no image"))?
        .to_owned();
    direct
        .query(
            "ec2",
            region,
            "RunInstances",
            "2016-11-15",
            &[
                ("ImageId", image),
                ("MinCount", options.instances.to_string()),
                ("MaxCount", options.instances.to_string()),
                ("InstanceType", "t3.micro".into()),
            ],
        )
        .await?;

    let secrets: Arc<dyn SecretStore> = Arc::new(VaultStore::new(&config.vault)?);
    let (org_id, connection_id) = (Uuid::now_v7(), Uuid::now_v7());
    let path = SecretPath::connection(org_id, connection_id);
    secrets
        .put(
            &path,
            &Secret::new().with("access_key_id", keys.access_key_id.clone()).with("secret_access_key", keys.secret_access_key.clone()),
        )
        .await?;
    let connected = Arc::new(Connected {
        connections: vec![LiveConnection {
            connection_id,
            provider: Provider::Aws,
            name: "bench".into(),
            account: "bench".into(),
            inventory: Vec::new(),
            inventory_omitted: 0,
        }],
        memory: None,
        has_graph: false,
        graph: None,
    });
    let tool = Registry::standard()
        .offered(&connected, ChatMode::Ask)
        .into_iter()
        .find(|tool| tool.name() == "aws_ec2_instances")
        .ok_or_else(|| anyhow::anyhow!("the AWS tools are not offered"))?;
    // The tool reads nothing from Postgres; the pool is made lazily and never opened.
    let pool =
        sqlx::postgres::PgPoolOptions::new().connect_lazy(aurora_adapters::config::ExposeSecret::expose_secret(&config.database.url))?;
    let context = ToolContext {
        org_id: OrgId(org_id),
        actor: aurora_events::Actor::user(Uuid::now_v7()),
        role: Role::Editor,
        approved_by: None,
        tool_call_id: "bench".into(),
        tool_call_key: Uuid::now_v7(),
        commands: CommandHandler::new(Arc::new(PostgresEventStore::new(pool.clone()))),
        knowledge: aurora_adapters::vectors::search::KnowledgeIndex::from_config(
            &config.knowledge,
            aurora_adapters::embeddings::Embedder::shared(&config.embedding),
            pool.clone(),
        ),
        graph: aurora_adapters::graph::GraphStore::from_config(&config.discovery),
        pool,
        secrets: secrets.clone(),
        providers: providers.clone(),
        connected,
        session_id: Uuid::now_v7(),
        objects: aurora_adapters::objects::Objects::from_config(&config.objects)?,
        deploy: Arc::new(config.deploy.clone()),
        cancel: Default::default(),
        output: Default::default(),
    };
    let arguments = json!({ "region": region, "limit": 50 });

    let (mut through_runtime, mut made_directly, mut secret_reads) = (Vec::new(), Vec::new(), Vec::new());
    for call in 0..options.calls + 10 {
        let started = Instant::now();
        let result = tool.call(&context, &arguments).await.map_err(|error| anyhow::anyhow!("the tool failed: {error}"))?;
        let text = serde_json::to_string(&result)?;
        let tool_time = started.elapsed();
        anyhow::ensure!(text.contains("instance_id"), "the tool's answer lists no instance");

        let started = Instant::now();
        let instances = direct.ec2_instances(region, &[], None).await?;
        let direct_time = started.elapsed();
        anyhow::ensure!(instances.len() >= options.instances, "moto lists {} instances", instances.len());

        let started = Instant::now();
        secrets.get(&path).await?;
        let read_time = started.elapsed();
        // The first calls warm connections on both sides.
        if call >= 10 {
            through_runtime.push(tool_time);
            made_directly.push(direct_time);
            secret_reads.push(read_time);
        }
    }
    secrets.destroy(&path).await?;

    let (tool_p50, tool_p99) = percentiles(&mut through_runtime);
    let (direct_p50, direct_p99) = percentiles(&mut made_directly);
    let (read_p50, read_p99) = percentiles(&mut secret_reads);
    println!(
        "aurora bench tools: {} calls each, {} EC2 instances in the answer, moto at {}",
        options.calls, options.instances, options.aws_endpoint
    );
    println!(
        "  aws_ec2_instances through the tool runtime (secret read + call + summarise): p50 {} ms, p99 {} ms",
        ms(tool_p50),
        ms(tool_p99)
    );
    println!(
        "  the same DescribeInstances call made directly with the same client:        p50 {} ms, p99 {} ms",
        ms(direct_p50),
        ms(direct_p99)
    );
    println!("  overhead of the runtime (difference of the medians):                       {} ms", ms(tool_p50.saturating_sub(direct_p50)));
    println!(
        "  of which one secret read from OpenBao alone:                               p50 {} ms, p99 {} ms",
        ms(read_p50),
        ms(read_p99)
    );
    Ok(())
}

/// The median and the 99th percentile of `samples` (sorted in place).
pub(crate) fn percentiles(samples: &mut [Duration]) -> (Duration, Duration) {
    samples.sort_unstable();
    let at = |fraction: f64| samples[((samples.len() as f64 - 1.0) * fraction).round() as usize];
    (at(0.5), at(0.99))
}

/// `duration` in milliseconds, two decimals.
pub(crate) fn ms(duration: Duration) -> String {
    format!("{:.2}", duration.as_secs_f64() * 1000.0)
}
