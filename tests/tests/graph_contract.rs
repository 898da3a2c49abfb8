//! The graph port's contract: the same discovery events folded by each projection, then the same
//! queries asked of each store — Postgres (the default) and a Bolt server (the stack's
//! kglite-bolt-server, or whatever `AURORA_TEST_BOLT_URL` names; the run says so when it is
//! skipped). Filters, neighbours with evidence, blast radius by distance, the shortest path and
//! its tie-break, the summary, the graph read at past times, a redelivered batch, and another
//! organisation that sees nothing.

use std::sync::Arc;

use aurora_adapters::config::GraphBackend;
use aurora_adapters::graph::{AsOf, Direction, GraphStore, ServiceFilter};
use aurora_events::discovery::{
    Dependency, DependencyDiscovered, DependencyGone, DependencyKind, DiscoveryEvent, Resource, ResourceGone, ResourceKind, ResourceMissed,
    ResourceSeen, ScanCompleted,
};
use aurora_events::{Actor, Envelope, EventPayload, OrgId, StreamId};
use aurora_projections::{Projection, TableNames};
use aurora_tests::TestEnv;
use chrono::{DateTime, Duration, Utc};
use uuid::Uuid;

fn resource(name: &str, kind: ResourceKind, region: &str, tags: &[(&str, &str)]) -> Resource {
    Resource {
        resource_id: format!("aws:123456789012:{region}:{name}"),
        provider: "aws".into(),
        kind,
        provider_type: format!("AWS::Test::{kind:?}"),
        name: name.into(),
        region: Some(region.into()),
        account: Some("123456789012".into()),
        tags: tags.iter().map(|(key, value)| (key.to_string(), value.to_string())).collect(),
        endpoint: (kind == ResourceKind::Database).then(|| format!("{name}.cluster.internal")),
    }
}

fn id(name: &str, region: &str) -> String {
    format!("aws:123456789012:{region}:{name}")
}

fn depends(from: &str, to: &str, kind: DependencyKind, confidence: f64) -> Dependency {
    let region = |name: &str| if name == "worker" || name == "queue" { "us-east-1" } else { "eu-west-1" };
    Dependency { from: id(from, region(from)), to: id(to, region(to)), kind, evidence: format!("{from} names {to}"), confidence }
}

/// An organisation's estate stream, event by event.
struct Stream {
    org: Uuid,
    version: u64,
    scan_id: Uuid,
}

impl Stream {
    fn envelope(&mut self, at: DateTime<Utc>, event: DiscoveryEvent) -> Envelope {
        self.version += 1;
        Envelope {
            id: Uuid::now_v7(),
            event_type: event.event_type().into(),
            schema_version: event.schema_version(),
            stream: format!("discovery-{}", self.org).parse::<StreamId>().unwrap(),
            stream_version: self.version,
            org_id: OrgId(self.org),
            actor: Actor::system("discovery"),
            occurred_at: at,
            correlation_id: Uuid::now_v7(),
            causation_id: None,
            traceparent: None,
            payload: event.to_json(),
        }
    }

    fn completed(&self) -> DiscoveryEvent {
        DiscoveryEvent::ScanCompleted(ScanCompleted {
            scan_id: self.scan_id,
            resources: 0,
            dependencies: 0,
            discovered: 0,
            changed: 0,
            gone: 0,
            missed: 0,
            stale: 0,
            returned: 0,
            at: None,
            listed: vec!["aws".into()],
            failures: vec![],
        })
    }

    /// The first scan: a load balancer in front of two API servers that use a database, a queue
    /// that triggers a worker that uses it too, and a network two of them are in.
    fn first_scan(&mut self, at: DateTime<Utc>) -> Vec<Envelope> {
        let scan_id = self.scan_id;
        let seen = |resource| DiscoveryEvent::ResourceDiscovered(ResourceSeen { scan_id, resource });
        let dependency = |dependency| DiscoveryEvent::DependencyDiscovered(DependencyDiscovered { scan_id, dependency });
        let events = vec![
            seen(resource("lb", ResourceKind::LoadBalancer, "eu-west-1", &[])),
            seen(resource("api-1", ResourceKind::Vm, "eu-west-1", &[("env", "prod"), ("team", "checkout")])),
            seen(resource("api-2", ResourceKind::Vm, "eu-west-1", &[("env", "staging"), ("note", "\"env\":\"prod\"")])),
            seen(resource("orders-db", ResourceKind::Database, "eu-west-1", &[("env", "prod")])),
            seen(resource("vpc", ResourceKind::Network, "eu-west-1", &[])),
            seen(resource("queue", ResourceKind::Queue, "us-east-1", &[])),
            seen(resource("worker", ResourceKind::ServerlessFunction, "us-east-1", &[])),
            dependency(depends("lb", "api-1", DependencyKind::Targets, 1.0)),
            dependency(depends("lb", "api-2", DependencyKind::Targets, 1.0)),
            dependency(depends("api-1", "orders-db", DependencyKind::Uses, 0.9)),
            dependency(depends("api-2", "orders-db", DependencyKind::Uses, 0.9)),
            dependency(depends("worker", "orders-db", DependencyKind::Uses, 0.8)),
            dependency(depends("queue", "worker", DependencyKind::Triggers, 1.0)),
            dependency(depends("api-1", "vpc", DependencyKind::MemberOf, 0.3)),
            dependency(depends("orders-db", "vpc", DependencyKind::MemberOf, 0.3)),
            self.completed(),
        ];
        events.into_iter().map(|event| self.envelope(at, event)).collect()
    }

    /// The second scan: api-2 retagged and no longer using the database, the worker gone with its
    /// dependencies, the queue not listed.
    fn second_scan(&mut self, at: DateTime<Utc>, first: DateTime<Utc>) -> Vec<Envelope> {
        let scan_id = self.scan_id;
        let gone = |from: &str, to: &str, kind| {
            let dependency = depends(from, to, kind, 0.0);
            DiscoveryEvent::DependencyGone(DependencyGone { scan_id, from: dependency.from, to: dependency.to, kind })
        };
        let events = vec![
            DiscoveryEvent::ResourceChanged(ResourceSeen {
                scan_id,
                resource: resource("api-2", ResourceKind::Vm, "eu-west-1", &[("env", "prod")]),
            }),
            DiscoveryEvent::ResourceGone(ResourceGone { scan_id, resource_id: id("worker", "us-east-1") }),
            DiscoveryEvent::ResourceMissed(ResourceMissed { scan_id, resource_id: id("queue", "us-east-1"), last_seen: first }),
            gone("api-2", "orders-db", DependencyKind::Uses),
            gone("worker", "orders-db", DependencyKind::Uses),
            gone("queue", "worker", DependencyKind::Triggers),
            self.completed(),
        ];
        events.into_iter().map(|event| self.envelope(at, event)).collect()
    }
}

/// Folds `events` as the projection runner does: one batch, in a transaction.
async fn fold(env: &TestEnv, projection: &dyn Projection, events: &[Envelope]) {
    let mut transaction = env.pool.begin().await.unwrap();
    projection.apply(&mut transaction, &TableNames::live(), events).await.unwrap();
    transaction.commit().await.unwrap();
}

async fn contract(env: &TestEnv, projection: Arc<dyn Projection>, store: &GraphStore) {
    let (org, other) = (Uuid::now_v7(), Uuid::now_v7());
    let mut stream = Stream { org, version: 0, scan_id: Uuid::now_v7() };
    let mut elsewhere = Stream { org: other, version: 0, scan_id: Uuid::now_v7() };
    // Whole microseconds, as both stores keep them.
    let now = DateTime::from_timestamp_micros(Utc::now().timestamp_micros()).unwrap();
    let (first, second) = (now - Duration::hours(2), now - Duration::hours(1));
    let first_batch = stream.first_scan(first);
    fold(env, projection.as_ref(), &first_batch).await;
    let second_batch = stream.second_scan(second, first);
    fold(env, projection.as_ref(), &second_batch).await;
    // The other organisation has an estate of the same names, one scan old.
    fold(env, projection.as_ref(), &elsewhere.first_scan(first)).await;
    // A batch delivered again after a crash changes nothing.
    fold(env, projection.as_ref(), &first_batch).await;

    let node = |name: &str| {
        let region = if name == "worker" || name == "queue" { "us-east-1" } else { "eu-west-1" };
        aurora_projections::discovery::node_id(org, &id(name, region))
    };
    let mut read = aurora_adapters::postgres::tenant_transaction(&env.pool, org).await.unwrap();
    let mut graph = store.reader(&mut read);
    let names = |services: &[aurora_adapters::graph::ServiceView]| services.iter().map(|service| service.name.clone()).collect::<Vec<_>>();
    let all = ServiceFilter { limit: 100, ..ServiceFilter::default() };

    // Now: the worker is gone; the queue is still there, missing.
    let listed = graph.services(org, &all, AsOf::Now).await.unwrap();
    assert_eq!(names(&listed), ["orders-db", "lb", "vpc", "queue", "api-1", "api-2"], "{}", store.name());
    let queue = listed.iter().find(|service| service.name == "queue").unwrap();
    assert_eq!((queue.status.as_str(), queue.last_seen), ("missing", Some(first)));
    let api = graph.service(org, node("api-2"), AsOf::Now).await.unwrap().expect("api-2");
    assert_eq!(api.tags.0, serde_json::json!({"env": "prod"}));
    assert_eq!((api.first_seen, api.last_changed, api.status.as_str()), (first, second, "present"));
    assert_eq!(api.region.as_deref(), Some("eu-west-1"));
    let database = graph.service(org, node("orders-db"), AsOf::Now).await.unwrap().unwrap();
    assert_eq!(database.endpoint.as_deref(), Some("orders-db.cluster.internal"));
    assert_eq!(database.resource_id, id("orders-db", "eu-west-1"));
    assert!(graph.service(org, node("worker"), AsOf::Now).await.unwrap().is_none(), "a gone service is not served");

    // Filters: kind, provider, a tag (found by its pair, not by text inside another value), a name.
    let filtered = |kind: Option<&str>, provider: Option<&str>, tag: Option<serde_json::Value>, name: Option<&str>| ServiceFilter {
        kind: kind.map(str::to_owned),
        provider: provider.map(str::to_owned),
        tag,
        name: name.map(str::to_owned),
        limit: 100,
    };
    assert_eq!(names(&graph.services(org, &filtered(Some("vm"), None, None, None), AsOf::Now).await.unwrap()), ["api-1", "api-2"]);
    assert!(graph.services(org, &filtered(None, Some("gcp"), None, None), AsOf::Now).await.unwrap().is_empty());
    let prod = filtered(None, None, Some(serde_json::json!({"env": "prod"})), None);
    assert_eq!(names(&graph.services(org, &prod, AsOf::Now).await.unwrap()), ["orders-db", "api-1", "api-2"]);
    let team = filtered(None, None, Some(serde_json::json!({"env": "prod", "team": "checkout"})), None);
    assert_eq!(names(&graph.services(org, &team, AsOf::Now).await.unwrap()), ["api-1"]);
    assert_eq!(names(&graph.services(org, &filtered(None, None, None, Some("API-2")), AsOf::Now).await.unwrap()), ["api-2"]);
    // An exact name comes first, then the rest containing it.
    assert_eq!(names(&graph.services(org, &filtered(None, None, None, Some("Lb")), AsOf::Now).await.unwrap()), ["lb"]);
    let limited = ServiceFilter { limit: 2, ..all.clone() };
    assert_eq!(graph.services(org, &limited, AsOf::Now).await.unwrap().len(), 2);
    assert_eq!(graph.named(org, "ORDERS-DB").await.unwrap().map(|service| service.node_id), Some(node("orders-db")));
    assert!(graph.named(org, "orders").await.unwrap().is_none(), "named means exactly");

    // Neighbours, with their evidence.
    let (depends_on, depended_on_by) = graph.neighbours(org, node("orders-db"), AsOf::Now).await.unwrap();
    let described = |neighbours: &[aurora_adapters::graph::Neighbour]| {
        neighbours.iter().map(|n| format!("{} {} {} ({})", n.dependency, n.name, n.evidence, n.confidence)).collect::<Vec<_>>()
    };
    assert_eq!(described(&depends_on), ["member_of vpc orders-db names vpc (0.3)"]);
    assert_eq!(described(&depended_on_by), ["uses api-1 api-1 names orders-db (0.9)"]);

    // The blast radius now and at the first scan, by distance then name.
    let radius = |affected: Vec<aurora_adapters::graph::Affected>| {
        affected.into_iter().map(|affected| format!("{}@{}", affected.name, affected.distance)).collect::<Vec<_>>()
    };
    let downstream = graph.reach(org, node("orders-db"), Direction::Downstream, 5, AsOf::Now).await.unwrap();
    assert_eq!(radius(downstream), ["api-1@1", "lb@2"]);
    let then = AsOf::At(first + Duration::minutes(1));
    let downstream = graph.reach(org, node("orders-db"), Direction::Downstream, 5, then).await.unwrap();
    assert_eq!(radius(downstream), ["api-1@1", "api-2@1", "worker@1", "lb@2", "queue@2"]);
    let shallow = graph.reach(org, node("orders-db"), Direction::Downstream, 1, then).await.unwrap();
    assert_eq!(radius(shallow), ["api-1@1", "api-2@1", "worker@1"]);
    let upstream = graph.reach(org, node("lb"), Direction::Upstream, 5, AsOf::Now).await.unwrap();
    assert_eq!(radius(upstream), ["api-1@1", "api-2@1", "orders-db@2", "vpc@2"]);

    // The past: the worker and its dependencies as they were, api-2 as first tagged, nothing
    // before the first scan.
    let worker = graph.service(org, node("worker"), then).await.unwrap().expect("the worker, then");
    assert_eq!((worker.kind.as_str(), worker.last_changed, worker.status.as_str()), ("serverless_function", first, "present"));
    let api_then = graph.service(org, node("api-2"), then).await.unwrap().unwrap();
    assert_eq!(api_then.tags.0["env"], "staging");
    // Then, api-2's tags held the text of the pair inside another value, which is no tag.
    assert_eq!(names(&graph.services(org, &prod, then).await.unwrap()), ["orders-db", "api-1"]);
    assert_eq!(names(&graph.services(org, &all, then).await.unwrap()).len(), 7);
    assert!(graph.services(org, &all, AsOf::At(first - Duration::seconds(1))).await.unwrap().is_empty());
    let (_, depended_then) = graph.neighbours(org, node("orders-db"), then).await.unwrap();
    assert_eq!(described(&depended_then).len(), 3, "{depended_then:?}");

    // The shortest path; among equally short ones, the most confident step back, then the
    // smaller service id.
    let path = graph.path(org, node("lb"), node("orders-db"), 6, AsOf::Now).await.unwrap().expect("a path now");
    assert_eq!(path.describe(), "lb -targets-> api-1 -uses-> orders-db");
    let path = graph.path(org, node("lb"), node("orders-db"), 6, then).await.unwrap().expect("a path then");
    let middle = if node("api-1") < node("api-2") { "api-1" } else { "api-2" };
    assert_eq!(path.describe(), format!("lb -targets-> {middle} -uses-> orders-db"));
    let path = graph.path(org, node("queue"), node("lb"), 6, then).await.unwrap();
    assert!(path.is_none(), "nothing leads from the queue to the load balancer");
    assert!(graph.path(org, node("lb"), node("orders-db"), 1, AsOf::Now).await.unwrap().is_none(), "too far for depth 1");
    let linked = graph.link(org, node("orders-db"), node("lb"), 6, AsOf::Now).await.unwrap().expect("linked either way");
    assert_eq!(linked.describe(), "lb -targets-> api-1 -uses-> orders-db");
    let path = graph.path(org, node("queue"), node("orders-db"), 6, then).await.unwrap().unwrap();
    assert_eq!(path.describe(), "queue -triggers-> worker -uses-> orders-db");
    assert_eq!(path.services.iter().map(|step| step.kind.as_str()).collect::<Vec<_>>(), ["queue", "serverless_function", "database"]);

    // The summary of the latest completed scan.
    let summary = graph.summary(org).await.unwrap().expect("a summary");
    assert_eq!((summary.services, summary.not_present, summary.dependencies), (6, 1, 5));
    assert_eq!(summary.regions, ["eu-west-1", "us-east-1"]);
    let kinds: Vec<String> = summary.kinds.iter().map(|kind| format!("{} {}", kind.count, kind.kind)).collect();
    assert_eq!(kinds, ["2 vm", "1 database", "1 load_balancer", "1 network", "1 queue"]);
    let hubs: Vec<String> = summary.most_depended_on.iter().map(|hub| format!("{} {}", hub.name, hub.dependents)).collect();
    assert_eq!(hubs, ["api-1 1", "api-2 1", "orders-db 1"], "membership is not counted");
    assert_eq!(summary.scanned_at, Some(second));
    read.commit().await.unwrap();

    // Another organisation sees its own estate only, and none of this one's.
    let mut read = aurora_adapters::postgres::tenant_transaction(&env.pool, other).await.unwrap();
    let mut graph = store.reader(&mut read);
    assert!(graph.service(other, node("api-1"), AsOf::Now).await.unwrap().is_none());
    assert!(graph.reach(other, node("orders-db"), Direction::Downstream, 5, AsOf::Now).await.unwrap().is_empty());
    assert!(graph.neighbours(other, node("orders-db"), AsOf::Now).await.unwrap().1.is_empty());
    let theirs = graph.services(other, &all, AsOf::Now).await.unwrap();
    assert_eq!(theirs.len(), 7, "their own worker is not gone");
    assert!(theirs.iter().all(|service| service.node_id != node("api-1")));
    assert_eq!(graph.summary(other).await.unwrap().map(|summary| summary.services), Some(7));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_keeps_the_graph_contract() {
    let env = TestEnv::new().await;
    let projection = aurora_projections::projection_named(&env.config, "graph").expect("the graph projection");
    contract(&env, projection, &GraphStore::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bolt_server_keeps_the_graph_contract() {
    let Ok(url) = std::env::var("AURORA_TEST_BOLT_URL") else {
        eprintln!("SKIPPED: AURORA_TEST_BOLT_URL is not set (scripts/stack.sh env sets it to the stack's kglite-bolt-server)");
        return;
    };
    let mut env = TestEnv::new().await;
    env.config.discovery.graph = GraphBackend::Bolt;
    env.config.discovery.bolt.url = url;
    let projection =
        aurora_projections::projection_named(&env.config, "graph_bolt").expect("the Bolt projection when the graph is in Bolt");
    contract(&env, projection, &GraphStore::from_config(&env.config.discovery)).await;
}

/// A Bolt server of this test's own: the graph survives its restart (its write-ahead log), and
/// the first question after it is answered, not refused: a pooled connection that the restart
/// broke is replaced on the spot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_bolt_server_keeps_the_graph_and_the_next_question_is_answered() {
    let Ok(bin) = std::env::var("AURORA_TEST_BOLT_BIN") else {
        eprintln!("SKIPPED: AURORA_TEST_BOLT_BIN is not set (scripts/stack.sh env sets it to the stack's kglite-bolt-server)");
        return;
    };
    let dir = std::env::temp_dir().join(format!("aurora-test-bolt-{}", Uuid::now_v7().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let port = aurora_tests::free_port();
    let start = || {
        let mut server = std::process::Command::new(&bin)
            .args(["--graph", dir.join("graph.kgl").to_str().unwrap(), "--storage", "memory", "--durability", "normal"])
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return server;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let _ = server.kill();
        let _ = server.wait();
        panic!("kglite-bolt-server did not open port {port}");
    };
    let mut server = start();
    let mut env = TestEnv::new().await;
    env.config.discovery.graph = GraphBackend::Bolt;
    env.config.discovery.bolt.url = format!("bolt://127.0.0.1:{port}");
    env.config.discovery.bolt.pool_size = 1;
    let projection = aurora_projections::projection_named(&env.config, "graph_bolt").unwrap();
    let org = Uuid::now_v7();
    let mut stream = Stream { org, version: 0, scan_id: Uuid::now_v7() };
    let now = DateTime::from_timestamp_micros(Utc::now().timestamp_micros()).unwrap();
    fold(&env, projection.as_ref(), &stream.first_scan(now - Duration::minutes(5))).await;
    let store = GraphStore::from_config(&env.config.discovery);
    let all = ServiceFilter { limit: 100, ..ServiceFilter::default() };
    let mut read = aurora_adapters::postgres::tenant_transaction(&env.pool, org).await.unwrap();
    assert_eq!(store.reader(&mut read).services(org, &all, AsOf::Now).await.unwrap().len(), 7);

    server.kill().unwrap();
    server.wait().unwrap();
    let mut server = start();
    let services = store.reader(&mut read).services(org, &all, AsOf::Now).await.expect("answered on a new connection");
    assert_eq!(services.len(), 7, "the graph survived the restart");
    assert_eq!(store.reader(&mut read).summary(org).await.unwrap().map(|summary| summary.dependencies), Some(8));
    server.kill().unwrap();
    server.wait().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

/// A question given up half way (a client that went away drops the request) leaves no
/// half-read answer behind: the next question on the same, one-connection pool gets its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bolt_question_given_up_half_way_leaves_the_pool_clean() {
    let Ok(url) = std::env::var("AURORA_TEST_BOLT_URL") else {
        eprintln!("SKIPPED: AURORA_TEST_BOLT_URL is not set (scripts/stack.sh env sets it to the stack's kglite-bolt-server)");
        return;
    };
    use aurora_adapters::graph::bolt::{params, BoltGraph, ToBolt};
    let config = aurora_adapters::config::BoltConfig { url, pool_size: 1, ..Default::default() };
    let bolt = BoltGraph::new(&config);
    let slow = bolt.query("UNWIND range(1, 1000000) AS x WITH x WHERE x % 7 = 0 RETURN count(x) AS n", params([]));
    assert!(tokio::time::timeout(std::time::Duration::from_millis(20), slow).await.is_err(), "the slow question answered at once");
    let rows = bolt.query("RETURN $value AS value", params([("value", 42i64.to_bolt())])).await.unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].integer(0).unwrap(), 42);
}
