//! `aurora bench discovery`: what a discovery scan costs and how fast the graph answers.
//!
//! - **Scan**: moto (the stack's, `--aws-endpoint`) is seeded once with an estate of
//!   `--resources` resources in one region (instances, security groups, subnets and queues; a
//!   rerun seeds only what is missing). A scan as the processor runs it — every listing of the
//!   region through the AWS client, then the inference — is timed beside the bare listing calls
//!   of the same resources with the same client, and the estate aggregate's decision of the
//!   first and of an unchanged second scan is timed on its own.
//! - **Blast radius**: a graph of `--nodes` services (each depending on up to three earlier
//!   ones) is written straight into the `graph_nodes` and `graph_edges` read models for a fresh
//!   organisation, the blast radius (depth 5) of `--queries` random services is asked as the
//!   gateway asks it, beside a primary-key read of one node, and the graph is deleted after.
//! - **Blast radius in Bolt**: a graph of `--bolt-nodes` services made the same way is written
//!   into the Bolt server of `AURORA_DISCOVERY_BOLT_URL` (the stack's kglite-bolt-server), and
//!   the same question is asked of it through the Bolt store, each with at most
//!   `--bolt-timeout-secs`; the graph is deleted after. `--bolt-nodes 0` skips it.

use std::time::Instant;

use aurora_adapters::clouds::aws::{Aws, Credentials};
use aurora_adapters::config::DiscoveryConfig;
use aurora_adapters::graph::{self, AsOf, Direction};
use aurora_adapters::secrets::Secret;
use aurora_adapters::Config;
use aurora_domain::discovery::{DiscoveryCommand, Estate, Thresholds};
use aurora_domain::Aggregate;
use aurora_events::discovery::{DiscoveryEvent, ScanRequested, ScanStarted};
use uuid::Uuid;

use crate::bench_tools::{ms, percentiles};

#[derive(Debug, clap::Args)]
pub struct DiscoveryOptions {
    /// Resources in the scanned estate.
    #[arg(long, default_value_t = 5_000)]
    pub resources: usize,
    /// Scans of each kind to time.
    #[arg(long, default_value_t = 5)]
    pub scans: usize,
    /// Services in the graph the blast radius is asked of.
    #[arg(long, default_value_t = 100_000)]
    pub nodes: i64,
    /// Blast-radius queries to time.
    #[arg(long, default_value_t = 300)]
    pub queries: usize,
    /// Services in the graph written into the Bolt server (0: no Bolt figures).
    #[arg(long, default_value_t = 10_000)]
    pub bolt_nodes: usize,
    /// Blast-radius queries to time on the Bolt server.
    #[arg(long, default_value_t = 50)]
    pub bolt_queries: usize,
    /// How long one Bolt blast radius may take before it counts as timed out.
    #[arg(long, default_value_t = 10)]
    pub bolt_timeout_secs: u64,
    /// The AWS endpoint (moto).
    #[arg(long, default_value = "http://127.0.0.1:5055")]
    pub aws_endpoint: String,
}

/// The region the bench's estate lives in, apart from what the tests and the other benches make.
const REGION: &str = "ap-southeast-2";

pub async fn discovery(config: &Config, options: DiscoveryOptions) -> anyhow::Result<()> {
    println!("aurora bench discovery");
    scans(config, &options).await?;
    blast_radius(config, &options).await?;
    if options.bolt_nodes > 0 {
        bolt_blast_radius(config, &options).await?;
    }
    Ok(())
}

/// The services service `i` (from 2) depends on: up to three earlier ones, by a hash of `i`, as
/// in the Postgres graph (a different hash: the graphs are alike, not equal).
fn earlier(i: u64) -> impl Iterator<Item = u64> {
    (1..=3u64).map(move |k| {
        let mut x = (i * 3 + k).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        x ^= x >> 31;
        1 + x % (i - 1)
    })
}

async fn bolt_blast_radius(config: &Config, options: &DiscoveryOptions) -> anyhow::Result<()> {
    use aurora_adapters::graph::bolt::{params, BoltGraph, BoltValue, ToBolt};
    let bolt = std::sync::Arc::new(BoltGraph::new(&config.discovery.bolt));
    let org = Uuid::now_v7();
    let id = |i: u64| Uuid::new_v5(&org, format!("bench/{i}").as_bytes()).to_string();
    let writing = Instant::now();
    bolt.query("CREATE INDEX aurora_service IF NOT EXISTS FOR (n:Service) ON (n.node_id)", params([])).await?;
    let nodes = options.bolt_nodes as u64;
    let row = |pairs: Vec<(&str, BoltValue)>| BoltValue::Dict(pairs.into_iter().map(|(key, value)| (key.to_owned(), value)).collect());
    for chunk in (1..=nodes).collect::<Vec<_>>().chunks(1000) {
        let rows: Vec<BoltValue> =
            chunk.iter().map(|i| row(vec![("id", id(*i).to_bolt()), ("name", format!("service-{i}").to_bolt())])).collect();
        bolt.query(
            "UNWIND $rows AS row CREATE (:Service {node_id: row.id, org_id: $org, resource_id: 'bench:' + row.name, name: row.name, \
             kind: 'vm', provider: 'aws', provider_type: 'AWS::EC2::Instance', tags: '{}', first_seen: $at, last_changed: $at, \
             status: 'present'})",
            params([("rows", BoltValue::List(rows)), ("org", org.to_bolt()), ("at", chrono::Utc::now().to_bolt())]),
        )
        .await?;
    }
    let mut pairs: Vec<(u64, u64)> = (2..=nodes).flat_map(|i| earlier(i).map(move |to| (i, to))).collect();
    pairs.sort_unstable();
    pairs.dedup();
    for chunk in pairs.chunks(1000) {
        let rows: Vec<BoltValue> =
            chunk.iter().map(|(from, to)| row(vec![("from", id(*from).to_bolt()), ("to", id(*to).to_bolt())])).collect();
        bolt.query(
            "UNWIND $rows AS row MATCH (a:Service {node_id: row.from}), (b:Service {node_id: row.to}) \
             CREATE (a)-[:DEPENDS_ON {kind: 'uses', org_id: $org, evidence: 'bench', confidence: 0.9}]->(b)",
            params([("rows", BoltValue::List(rows)), ("org", org.to_bolt())]),
        )
        .await?;
    }
    println!("  bolt graph: {nodes} services, {} dependencies written in {:.1} s", pairs.len(), writing.elapsed().as_secs_f64());

    let measured = async {
        let pool = aurora_adapters::postgres::connect(config).await?;
        let mut connection = pool.acquire().await?;
        let store = graph::GraphStore::Bolt(bolt.clone());
        let limit = std::time::Duration::from_secs(options.bolt_timeout_secs);
        let (mut blasts, mut lookups, mut affected, mut timed_out) = (Vec::new(), Vec::new(), Vec::new(), 0);
        for query in 0..options.bolt_queries + 5 {
            // A fixed spread of services, early (many depend on them) to late (few do).
            let target: Uuid = id(1 + (query as u64 * 7919) % nodes).parse()?;
            let started = Instant::now();
            let reached =
                tokio::time::timeout(limit, store.reader(&mut connection).reach(org, target, Direction::Downstream, 5, AsOf::Now)).await;
            let blast = started.elapsed();
            let started = Instant::now();
            store.reader(&mut connection).service(org, target, AsOf::Now).await?.ok_or_else(|| anyhow::anyhow!("a service is missing"))?;
            let lookup = started.elapsed();
            if query < 5 {
                continue;
            }
            lookups.push(lookup);
            match reached {
                Ok(reached) => {
                    blasts.push(blast);
                    affected.push(reached?.len());
                }
                Err(_) => timed_out += 1,
            }
        }
        let (blast_p50, blast_p99) = percentiles(&mut blasts);
        let (lookup_p50, lookup_p99) = percentiles(&mut lookups);
        affected.sort_unstable();
        println!(
            "  bolt blast radius (depth 5) of {} services: p50 {} ms, p99 {} ms of those answered; {timed_out} over {} s; services affected p50 {}, max {}",
            options.bolt_queries,
            ms(blast_p50),
            ms(blast_p99),
            options.bolt_timeout_secs,
            affected.get(affected.len() / 2).copied().unwrap_or_default(),
            affected.last().copied().unwrap_or_default()
        );
        println!("  bolt: one service read by its id:                     p50 {} ms, p99 {} ms", ms(lookup_p50), ms(lookup_p99));
        anyhow::Ok(())
    }
    .await;
    // The graph goes whatever the measurement did.
    bolt.query("MATCH (n:Service) WHERE n.org_id = $org DETACH DELETE n", params([("org", org.to_bolt())])).await?;
    measured
}

async fn scans(config: &Config, options: &DiscoveryOptions) -> anyhow::Result<()> {
    let mut connections = config.connections.clone();
    connections.aws_endpoint = Some(options.aws_endpoint.clone());
    connections.aws_region = REGION.into();
    let keys = Credentials {
        access_key_id: "AKIABENCHDISCOVERY01".into(),
        secret_access_key: "bench-discovery-secret-key-000000000000".into(),
        session_token: None,
    };
    let aws = Aws::new(&connections, keys.clone());
    let seeding = Instant::now();
    let seeded = seed(&aws, options.resources).await?;
    println!("  estate: {seeded} resources in moto {REGION} ({:.1} s to seed what was missing)", seeding.elapsed().as_secs_f64());

    let secret = Secret::new().with("access_key_id", keys.access_key_id.clone()).with("secret_access_key", keys.secret_access_key.clone());
    let discovery = DiscoveryConfig { aws_regions: vec![REGION.into()], ..config.discovery.clone() };
    let (mut scanned, mut listed) = (Vec::new(), Vec::new());
    let mut found = None;
    for _ in 0..options.scans {
        let started = Instant::now();
        let result = aurora_processors::discovery::aws::scan(&connections, &discovery, &secret).await?;
        scanned.push(started.elapsed());
        let started = Instant::now();
        let bare = bare_listing(&aws).await?;
        listed.push(started.elapsed());
        anyhow::ensure!(bare >= seeded, "the bare listing saw {bare} of {seeded} resources");
        found = Some(result);
    }
    let found = found.ok_or_else(|| anyhow::anyhow!("--scans must be at least 1"))?;
    let (scan_p50, _) = percentiles(&mut scanned);
    let (list_p50, _) = percentiles(&mut listed);
    println!(
        "  scan (listing + inference), median of {}: {} ms for {} resources and {} dependencies",
        options.scans,
        ms(scan_p50),
        found.resources.len(),
        found.dependencies.len()
    );
    println!("  bare listing of the same resources, same client, median:   {} ms", ms(list_p50));
    println!("  the scan's own share (difference of the medians):          {} ms", ms(scan_p50.saturating_sub(list_p50)));

    // The aggregate's decision: a first scan records everything, a second one nothing.
    let scan_id = Uuid::now_v7();
    let estate = Estate::default()
        .evolve(&DiscoveryEvent::ScanRequested(ScanRequested { scan_id }))
        .evolve(&DiscoveryEvent::ScanStarted(ScanStarted { scan_id, providers: vec!["aws".into()] }));
    let complete = |scan_id| DiscoveryCommand::Complete {
        scan_id,
        resources: found.resources.clone(),
        dependencies: found.dependencies.clone(),
        failures: Vec::new(),
        now: chrono::Utc::now(),
        thresholds: Thresholds::default(),
    };
    let started = Instant::now();
    let events = estate.decide(complete(scan_id))?;
    let first = started.elapsed();
    let estate = events.iter().fold(estate, |estate, event| estate.evolve(event));
    let again = Uuid::now_v7();
    let estate = estate
        .evolve(&DiscoveryEvent::ScanRequested(ScanRequested { scan_id: again }))
        .evolve(&DiscoveryEvent::ScanStarted(ScanStarted { scan_id: again, providers: vec!["aws".into()] }));
    let started = Instant::now();
    let unchanged = estate.decide(complete(again))?;
    let second = started.elapsed();
    println!(
        "  the estate's decision: first scan {} ms ({} events), unchanged second scan {} ms ({} event)",
        ms(first),
        events.len(),
        ms(second),
        unchanged.len()
    );
    Ok(())
}

/// Seeds the estate up to `resources`: a tenth security groups, a tenth subnets, a tenth queues,
/// the rest instances. Returns how many resources the region holds.
async fn seed(aws: &Aws, resources: usize) -> anyhow::Result<usize> {
    let ec2 = |action: &'static str, params: Vec<(&'static str, String)>| async move {
        aws.query("ec2", REGION, action, "2016-11-15", &params).await.map_err(|error| anyhow::anyhow!("{action}: {error}"))
    };
    let tenth = resources / 10;
    let vpc = match aws.vpcs(REGION).await?.into_iter().find(|vpc| vpc["cidr"] == "10.90.0.0/16") {
        Some(vpc) => vpc["vpc_id"].as_str().unwrap_or_default().to_owned(),
        None => field(&ec2("CreateVpc", vec![("CidrBlock", "10.90.0.0/16".into())]).await?, "vpcId")?,
    };
    let subnets = aws.subnets(REGION).await?.len();
    for index in subnets..tenth {
        let cidr = format!("10.90.{}.{}/28", index / 16, (index % 16) * 16);
        ec2("CreateSubnet", vec![("VpcId", vpc.clone()), ("CidrBlock", cidr)]).await?;
    }
    let groups = aws.security_groups(REGION).await?.len();
    for index in groups..tenth {
        let name = format!("bench-{index}");
        ec2("CreateSecurityGroup", vec![("GroupName", name.clone()), ("GroupDescription", name), ("VpcId", vpc.clone())]).await?;
    }
    let queues = aws.sqs_queues(REGION).await?.len();
    for index in queues..tenth {
        aws.query("sqs", REGION, "CreateQueue", "2012-11-05", &[("QueueName", format!("bench-{index}"))]).await?;
    }
    let instances = aws.ec2_instances(REGION, &[], None).await?.len();
    let wanted = resources.saturating_sub(3 * tenth + 1);
    if instances < wanted {
        let images = ec2("DescribeImages", vec![("Owner.1", "amazon".into())]).await?;
        let image = field(&images, "imageId")?;
        let mut left = wanted - instances;
        while left > 0 {
            let batch = left.min(500);
            let params = vec![
                ("ImageId", image.clone()),
                ("MinCount", batch.to_string()),
                ("MaxCount", batch.to_string()),
                ("InstanceType", "t3.micro".into()),
            ];
            ec2("RunInstances", params).await?;
            left -= batch;
        }
    }
    bare_listing(aws).await
}

/// Every listing a scan makes of the region, with nothing done to the answers: how many
/// resources they hold.
async fn bare_listing(aws: &Aws) -> anyhow::Result<usize> {
    let mut count = aws.vpcs(REGION).await?.len() + aws.subnets(REGION).await?.len() + aws.security_groups(REGION).await?.len();
    count += aws.ec2_instances(REGION, &[], None).await?.len();
    count += aws.eks_clusters(REGION, None, usize::MAX).await?.len();
    count += aws.rds_instances(REGION, None).await?.len();
    count += aws.lambda_configurations(REGION).await?.len();
    count += aws.sqs_queues(REGION).await?.len();
    aws.lambda_event_sources(REGION).await?;
    count += aws.load_balancers(REGION).await?.len() + aws.target_groups(REGION).await?.len();
    count += aws.s3_buckets().await?.len();
    Ok(count)
}

fn field(xml: &str, tag: &str) -> anyhow::Result<String> {
    let open = format!("<{tag}>");
    xml.split(&open)
        .nth(1)
        .and_then(|rest| rest.split('<').next())
        .map(str::to_owned)
        .ok_or_else(|| anyhow::anyhow!("no {tag} in moto's answer"))
}

async fn blast_radius(config: &Config, options: &DiscoveryOptions) -> anyhow::Result<()> {
    let pool = aurora_adapters::postgres::connect(config).await?;
    aurora_commands::migrate(&pool).await?;
    let org = Uuid::now_v7();
    let writing = Instant::now();
    // Service i depends on up to three earlier ones, picked by a hash of i: a random graph in
    // which early services have much depending on them and late ones little.
    let node = "md5($1::text || '/' || i)::uuid";
    sqlx::query(&format!(
        "INSERT INTO graph_nodes (node_id, org_id, resource_id, provider, kind, provider_type, name, tags, first_seen, last_changed, stream_version) \
         SELECT {node}, $1, 'bench:' || i, 'aws', 'vm', 'AWS::EC2::Instance', 'service-' || i, '{{}}', now(), now(), 1 \
         FROM generate_series(1, $2::bigint) AS i"
    ))
    .bind(org)
    .bind(options.nodes)
    .execute(&pool)
    .await?;
    sqlx::query(
        "INSERT INTO graph_edges (org_id, from_node, to_node, kind, evidence, confidence, first_seen, last_changed, stream_version) \
         SELECT $1, md5($1::text || '/' || i)::uuid, md5($1::text || '/' || (1 + (hashint8(i * 3 + k)::bigint & 2147483647) % (i - 1)))::uuid, \
             'uses', 'bench', 0.9, now(), now(), 1 \
         FROM generate_series(2, $2::bigint) AS i, generate_series(1, 3) AS k ON CONFLICT DO NOTHING",
    )
    .bind(org)
    .bind(options.nodes)
    .execute(&pool)
    .await?;
    sqlx::query("ANALYZE graph_nodes, graph_edges").execute(&pool).await?;
    let edges: i64 = sqlx::query_scalar("SELECT count(*) FROM graph_edges WHERE org_id = $1").bind(org).fetch_one(&pool).await?;
    println!("  graph: {} services, {edges} dependencies written in {:.1} s", options.nodes, writing.elapsed().as_secs_f64());

    let measured = measure_blast(&pool, org, options).await;
    // The graph goes whatever the measurement did.
    sqlx::query("DELETE FROM graph_edges WHERE org_id = $1").bind(org).execute(&pool).await?;
    sqlx::query("DELETE FROM graph_nodes WHERE org_id = $1").bind(org).execute(&pool).await?;
    measured
}

async fn measure_blast(pool: &sqlx::PgPool, org: Uuid, options: &DiscoveryOptions) -> anyhow::Result<()> {
    let targets: Vec<Uuid> = sqlx::query_scalar("SELECT node_id FROM graph_nodes WHERE org_id = $1 ORDER BY random() LIMIT $2")
        .bind(org)
        .bind(options.queries as i64 + 10)
        .fetch_all(pool)
        .await?;
    let mut connection = pool.acquire().await?;
    let (mut blasts, mut lookups, mut affected) = (Vec::new(), Vec::new(), Vec::new());
    for (query, target) in targets.into_iter().enumerate() {
        let started = Instant::now();
        let reached = graph::postgres::reach(&mut connection, org, target, Direction::Downstream, 5, AsOf::Now).await?;
        let blast = started.elapsed();
        let started = Instant::now();
        graph::postgres::service(&mut connection, org, target, AsOf::Now)
            .await?
            .ok_or_else(|| anyhow::anyhow!("a service of the graph is missing"))?;
        let lookup = started.elapsed();
        // The first queries warm the connection and the cache.
        if query >= 10 {
            blasts.push(blast);
            lookups.push(lookup);
            affected.push(reached.len());
        }
    }
    let (blast_p50, blast_p99) = percentiles(&mut blasts);
    let (lookup_p50, lookup_p99) = percentiles(&mut lookups);
    affected.sort_unstable();
    println!(
        "  blast radius (depth 5) of {} random services: p50 {} ms, p99 {} ms; services affected p50 {}, max {}",
        blasts.len(),
        ms(blast_p50),
        ms(blast_p99),
        affected[affected.len() / 2],
        affected.last().copied().unwrap_or_default()
    );
    println!("  one service read by its key, the same connection:    p50 {} ms, p99 {} ms", ms(lookup_p50), ms(lookup_p99));
    Ok(())
}
