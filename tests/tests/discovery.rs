//! Service discovery end to end: moto holds an AWS estate — a VPC with a
//! subnet, a web security group admitted by a database's group on 5432, an instance and an EKS
//! cluster in the web group, an RDS instance in the database's, a load balancer and target group
//! in front of the instance, a queue, a bucket, and Lambda functions whose environments name the
//! database, the queue and the bucket, one invoked by the queue — a scan asked for over HTTP
//! lists it through the real AWS client, and the graph read models answer the services, the
//! inferred dependencies with their evidence, the blast radius and paths; no environment value
//! is kept; a second scan after a change records exactly the difference (an instance gone from
//! AWS is missed, kept and marked missing, its dependencies gone); another organisation sees
//! nothing of it. Google Cloud and Azure estates, served by the stand-ins in their documented
//! formats (`aurora_testkit::providers`), are scanned through the same connections a team makes
//! (OAuth, a service principal): firewall tags, instance metadata and App Service settings give
//! their dependencies, no setting's value is kept, and Google Cloud failing leaves Azure's scan
//! and its own graph whole. The scan timer fires once with two instances running, and the other
//! instance takes it over when the leader stops; a processor killed inside a scan scans again
//! when it comes back, and records each resource once.
//!
//! moto checks no signatures here: moto 5.2.5 checks a REST service's GET (EKS ListClusters)
//! against the request with its query, or with its headers when it has none, taken for a form
//! body, and so refuses every one, boto3's too (moto/core/responses.py, `self.data`). The
//! connection and deploy tests check the signer.

use std::time::Duration;

use aurora_adapters::clouds::aws::Aws;
use aurora_testkit::providers::{Fault, Providers};
use aurora_testkit::scripted_llm::{ScriptedLlm, Step};
use aurora_tests::aws::{set_up_account, xml_field, Account};
use aurora_tests::chat::ChatSocket;
use aurora_tests::servers::{PrivateMoto, ScratchVault};
use aurora_tests::{eventually, http, problem, App, Caller, Roles, TestEnv};
use reqwest::StatusCode;
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(60);

async fn scanned(app: &App, caller: &Caller) -> Value {
    let response = caller.apply(http().post(app.url("/v1/discovery/scans"))).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let scan_id = response.json::<Value>().await.unwrap()["scan_id"].as_str().unwrap().to_owned();
    eventually("the scan to end", WAIT, || async {
        let scan: Value =
            caller.apply(http().get(app.url(&format!("/v1/discovery/scans/{scan_id}")))).send().await.ok()?.json().await.ok()?;
        matches!(scan["status"].as_str(), Some("completed" | "failed")).then_some(scan)
    })
    .await
}

/// The JSON answer to a GET of `path`, as `caller`.
async fn read(app: &App, caller: &Caller, path: &str) -> Value {
    caller.apply(http().get(app.url(path))).send().await.unwrap().json().await.unwrap()
}

/// The distance at which the service `name` stands in a list of reached services.
fn distance(reached: &Value, name: &str) -> Option<Value> {
    reached.as_array()?.iter().find(|service| service["name"] == name).map(|service| service["distance"].clone())
}

async fn services(app: &App, caller: &Caller, query: &str) -> Vec<Value> {
    let answer = read(app, caller, &format!("/v1/discovery/services{query}")).await;
    answer.as_array().unwrap_or_else(|| panic!("{answer}")).clone()
}

fn named<'a>(services: &'a [Value], name: &str) -> &'a Value {
    services.iter().find(|service| service["name"] == name).unwrap_or_else(|| panic!("no {name} in {services:?}"))
}

/// Connects `account`'s AWS keys as `caller`'s organisation.
async fn connect_aws(app: &App, caller: &Caller, account: &Account) {
    let keys = json!({ "provider": "aws", "credentials": {
        "access_key_id": account.user.access_key_id, "secret_access_key": account.user.secret_access_key,
    }});
    let connected = caller.apply(http().post(app.url("/v1/connections"))).json(&keys).send().await.unwrap();
    assert_eq!(connected.status(), StatusCode::CREATED);
}

/// An AWS account in a moto of its own, and scans timed fast: the first a second after a
/// connection, each next one two seconds after the one before.
async fn timed_aws() -> (PrivateMoto, ScratchVault, TestEnv, Account) {
    let moto = PrivateMoto::start(None);
    let vault = ScratchVault::start();
    let mut env = TestEnv::new().await;
    env.config.vault = vault.config();
    env.config.connections.aws_endpoint = Some(moto.endpoint());
    env.config.discovery.first_scan_delay = Duration::from_secs(1);
    env.config.discovery.interval = Duration::from_secs(2);
    let account = set_up_account(&env.config.connections).await;
    (moto, vault, env, account)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scan_maps_an_aws_estate_into_a_graph_and_a_second_records_only_the_change() {
    let moto = PrivateMoto::start(None);
    let vault = ScratchVault::start();
    let llm = ScriptedLlm::start().await;
    let mut env = TestEnv::new().await;
    env.config.llm.base_url = llm.base_url.clone();
    env.config.llm.model = "scripted-model".into();
    env.config.vault = vault.config();
    env.config.connections.aws_endpoint = Some(moto.endpoint());
    // Only the scans the test asks for (the timed ones have a test of their own).
    env.config.discovery.first_scan_delay = Duration::from_secs(3600);
    let account = set_up_account(&env.config.connections).await;

    // The estate, made with the account's own (signed) key.
    let aws = Aws::new(&env.config.connections, account.user.clone());
    let ec2 = |action: &'static str, params: Vec<(&'static str, String)>| {
        let aws = &aws;
        async move { aws.query("ec2", "us-east-1", action, "2016-11-15", &params).await.unwrap_or_else(|error| panic!("{action}: {error}")) }
    };
    let vpc = xml_field(&ec2("CreateVpc", vec![("CidrBlock", "10.20.0.0/16".into())]).await, "vpcId");
    let subnet = xml_field(&ec2("CreateSubnet", vec![("VpcId", vpc.clone()), ("CidrBlock", "10.20.1.0/24".into())]).await, "subnetId");
    let group = |name: &'static str| {
        let vpc = vpc.clone();
        let ec2 = &ec2;
        async move {
            xml_field(
                &ec2("CreateSecurityGroup", vec![("GroupName", name.into()), ("GroupDescription", name.into()), ("VpcId", vpc)]).await,
                "groupId",
            )
        }
    };
    let (web, db) = (group("web").await, group("orders-db").await);
    ec2(
        "AuthorizeSecurityGroupIngress",
        vec![
            ("GroupId", db.clone()),
            ("IpPermissions.1.IpProtocol", "tcp".into()),
            ("IpPermissions.1.FromPort", "5432".into()),
            ("IpPermissions.1.ToPort", "5432".into()),
            ("IpPermissions.1.Groups.1.GroupId", web.clone()),
        ],
    )
    .await;
    let images = ec2("DescribeImages", vec![("Owner.1", "amazon".into())]).await;
    let ran = ec2(
        "RunInstances",
        vec![
            ("ImageId", xml_field(&images, "imageId")),
            ("MinCount", "1".into()),
            ("MaxCount", "1".into()),
            ("InstanceType", "t3.micro".into()),
            ("SubnetId", subnet.clone()),
            ("SecurityGroupId.1", web.clone()),
            ("TagSpecification.1.ResourceType", "instance".into()),
            ("TagSpecification.1.Tag.1.Key", "Name".into()),
            ("TagSpecification.1.Tag.1.Value", "checkout-api".into()),
        ],
    )
    .await;
    let instance_id = xml_field(&ran, "instanceId");
    // A load balancer forwarding to a target group that registers the instance.
    let elb = |action: &'static str, params: Vec<(&'static str, String)>| {
        let aws = &aws;
        async move {
            aws.query("elasticloadbalancing", "us-east-1", action, "2015-12-01", &params)
                .await
                .unwrap_or_else(|error| panic!("{action}: {error}"))
        }
    };
    let balancer = xml_field(
        &elb(
            "CreateLoadBalancer",
            vec![("Name", "checkout-lb".into()), ("Subnets.member.1", subnet.clone()), ("Type", "application".into())],
        )
        .await,
        "LoadBalancerArn",
    );
    let target_group = xml_field(
        &elb(
            "CreateTargetGroup",
            vec![("Name", "checkout".into()), ("Protocol", "HTTP".into()), ("Port", "8080".into()), ("VpcId", vpc.clone())],
        )
        .await,
        "TargetGroupArn",
    );
    elb(
        "CreateListener",
        vec![
            ("LoadBalancerArn", balancer.clone()),
            ("Protocol", "HTTP".into()),
            ("Port", "80".into()),
            ("DefaultActions.member.1.Type", "forward".into()),
            ("DefaultActions.member.1.TargetGroupArn", target_group.clone()),
        ],
    )
    .await;
    elb(
        "RegisterTargets",
        vec![
            ("TargetGroupArn", target_group.clone()),
            ("Targets.member.1.Id", instance_id.clone()),
            ("Targets.member.1.Port", "8080".into()),
        ],
    )
    .await;
    let database = aws
        .query(
            "rds",
            "us-east-1",
            "CreateDBInstance",
            "2014-10-31",
            &[
                ("DBInstanceIdentifier", "orders-db".into()),
                ("Engine", "postgres".into()),
                ("DBInstanceClass", "db.t3.micro".into()),
                ("AllocatedStorage", "20".into()),
                ("MasterUsername", "orders".into()),
                ("MasterUserPassword", "a-long-password".into()),
                ("VpcSecurityGroupIds.VpcSecurityGroupId.1", db.clone()),
            ],
        )
        .await
        .unwrap();
    let rds_endpoint = xml_field(&database, "Address");
    // An EKS cluster in the web group; a queue; a bucket.
    let cluster = aws
        .rest(
            "POST",
            "eks",
            "us-east-1",
            "/clusters",
            &[],
            Some(&json!({ "name": "shop", "roleArn": account.role_arn,
                "resourcesVpcConfig": { "subnetIds": [subnet], "securityGroupIds": [web] } })),
        )
        .await
        .unwrap();
    let cluster_arn = cluster["cluster"]["arn"].as_str().unwrap().to_owned();
    let queue_url = xml_field(
        &aws.query("sqs", "us-east-1", "CreateQueue", "2012-11-05", &[("QueueName", "orders-jobs".into())]).await.unwrap(),
        "QueueUrl",
    );
    let queue_arn = "arn:aws:sqs:us-east-1:123456789012:orders-jobs";
    aws.rest("PUT", "s3", "us-east-1", "/orders-exports", &[], None).await.unwrap();
    // Two functions whose environments name the database, the queue and the bucket (beside a
    // secret, which must stay in moto), and the queue as one's event source.
    let function = |name: &'static str, variables: Value, vpc: bool| {
        let aws = &aws;
        let config = if vpc { json!({ "SubnetIds": [subnet], "SecurityGroupIds": [web] }) } else { json!({}) };
        let body = json!({
            "FunctionName": name, "Runtime": "python3.12", "Role": account.role_arn, "Handler": "main.handler",
            // An empty zip archive: moto keeps the code, nothing runs it.
            "Code": { "ZipFile": "UEsFBgAAAAAAAAAAAAAAAAAAAAAAAA==" },
            "Environment": { "Variables": variables }, "VpcConfig": config,
        });
        async move {
            let made = aws.rest("POST", "lambda", "us-east-1", "/2015-03-31/functions", &[], Some(&body)).await;
            made.unwrap_or_else(|error| panic!("{name}: {error}"))["FunctionArn"].as_str().unwrap().to_owned()
        }
    };
    const SECRET: &str = "sk-live-do-not-leak-0123456789";
    let worker = function(
        "orders-worker",
        json!({ "DATABASE_URL": format!("postgres://orders:{SECRET}@{rds_endpoint}:5432/orders"), "LOG_LEVEL": "info" }),
        true,
    )
    .await;
    let notifier =
        function("checkout-notifier", json!({ "JOBS": queue_url, "EXPORTS": "s3://orders-exports/daily", "API_TOKEN": SECRET }), false)
            .await;
    aws.rest(
        "POST",
        "lambda",
        "us-east-1",
        "/2015-03-31/event-source-mappings/",
        &[],
        Some(&json!({ "EventSourceArn": queue_arn, "FunctionName": "orders-worker", "BatchSize": 10 })),
    )
    .await
    .unwrap();

    let app = App::spawn(&env, Roles::ALL).await;
    let ana = Caller::register(&app.base_url, "ana").await;
    let vic = Caller::join(&app.base_url, &ana, "vic", "viewer").await;
    let eve = Caller::register(&app.base_url, "eve").await;
    connect_aws(&app, &ana, &account).await;
    eventually("the connection in the read model", WAIT, || async {
        let listed: Value = ana.apply(http().get(app.url("/v1/connections"))).send().await.ok()?.json().await.ok()?;
        (listed.as_array()?.len() == 1).then_some(())
    })
    .await;
    // A viewer reads the graph but does not start scans.
    assert_eq!(vic.apply(http().post(app.url("/v1/discovery/scans"))).send().await.unwrap().status(), StatusCode::FORBIDDEN);

    let first = scanned(&app, &ana).await;
    assert_eq!(first["status"], "completed", "{first}");
    assert_eq!(first["failures"], json!([]));
    let all = eventually("the graph", WAIT, || async {
        let all = services(&app, &vic, "").await;
        all.iter().any(|service| service["name"] == "orders-db").then_some(all)
    })
    .await;
    let checkout = named(&all, "checkout-api");
    assert_eq!(checkout["kind"], "vm");
    assert_eq!(checkout["provider_type"], "AWS::EC2::Instance");
    assert!(checkout["resource_id"].as_str().unwrap().ends_with(&format!("instance/{instance_id}")));
    assert_eq!(checkout["tags"]["Name"], "checkout-api");
    let orders = named(&all, "orders-db");
    assert_eq!(orders["kind"], "database");
    assert!(orders["endpoint"].is_string(), "{orders}");
    assert!(all.iter().any(|service| service["kind"] == "network" && service["resource_id"].as_str().unwrap().ends_with(&vpc)));
    assert!(all.iter().any(|service| service["kind"] == "firewall" && service["name"] == "web"));
    assert_eq!(services(&app, &vic, "?kind=database").await.len(), 1);
    assert_eq!(services(&app, &vic, "?tag=Name=checkout-api").await.len(), 1);
    // The estate in brief, as the first scan left it; another organisation's is empty.
    let summary = eventually("the graph's summary", WAIT, || async {
        let summary = read(&app, &vic, "/v1/discovery/summary").await;
        (summary["services"] != 0).then_some(summary)
    })
    .await;
    assert_eq!(summary["services"], all.len(), "{summary}");
    assert_eq!(summary["not_present"], 0, "{summary}");
    assert!(summary["kinds"].as_array().unwrap().contains(&json!({ "provider": "aws", "kind": "database", "count": 1 })), "{summary}");
    assert!(summary["regions"].as_array().unwrap().contains(&json!("us-east-1")), "{summary}");
    let hubs = summary["most_depended_on"].as_array().unwrap();
    assert!(
        hubs.iter().any(|hub| hub["name"] == "orders-db" && hub["dependents"].as_i64() >= Some(2)),
        "checkout-api and the worker: {summary}"
    );
    assert!(hubs.iter().all(|hub| hub["kind"] != "network"), "membership is not depending: {summary}");
    assert_eq!(read(&app, &eve, "/v1/discovery/summary").await["services"], 0);

    let shop = named(&all, "shop");
    assert_eq!((shop["kind"].as_str(), shop["resource_id"].as_str()), (Some("kubernetes_cluster"), Some(cluster_arn.as_str())));
    let jobs = named(&all, "orders-jobs");
    assert_eq!((jobs["kind"].as_str(), jobs["resource_id"].as_str()), (Some("queue"), Some(queue_arn)));
    assert_eq!(jobs["endpoint"], queue_url.as_str());
    let exports = named(&all, "orders-exports");
    assert_eq!((exports["kind"].as_str(), exports["resource_id"].as_str()), (Some("bucket"), Some("arn:aws:s3:::orders-exports")));
    assert_eq!(named(&all, "orders-worker")["resource_id"], worker.as_str());
    let notifier_node = named(&all, "checkout-notifier");
    assert_eq!(
        (notifier_node["kind"].as_str(), notifier_node["resource_id"].as_str()),
        (Some("serverless_function"), Some(notifier.as_str()))
    );
    // What the functions' environments name, with the variable as evidence; and the queue
    // that invokes the worker.
    let depends_on = |node_id: &str| {
        let (app, vic) = (&app, &vic);
        let path = format!("/v1/discovery/services/{node_id}");
        async move {
            let detail = read(app, vic, &path).await;
            detail["depends_on"].as_array().unwrap_or_else(|| panic!("{detail}")).clone()
        }
    };
    let edge_to = |edges: &[Value], kind: &str, name: &str| {
        edges
            .iter()
            .find(|edge| edge["dependency"] == kind && edge["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("no {kind} {name} in {edges:?}"))
    };
    let uses = edge_to(&depends_on(named(&all, "orders-worker")["node_id"].as_str().unwrap()).await, "uses", "orders-db");
    assert_eq!(uses["confidence"], 0.9);
    let evidence = uses["evidence"].as_str().unwrap();
    assert!(evidence.contains("DATABASE_URL") && evidence.contains("endpoint of database orders-db"), "{evidence}");
    let notifier_edges = depends_on(named(&all, "checkout-notifier")["node_id"].as_str().unwrap()).await;
    assert!(edge_to(&notifier_edges, "uses", "orders-jobs")["evidence"].as_str().unwrap().contains("JOBS"));
    assert!(edge_to(&notifier_edges, "uses", "orders-exports")["evidence"].as_str().unwrap().contains("EXPORTS"));
    assert_eq!(notifier_edges.len(), 2, "nothing but what its environment names: {notifier_edges:?}");
    let triggers = edge_to(&depends_on(jobs["node_id"].as_str().unwrap()).await, "triggers", "orders-worker");
    assert!(triggers["evidence"].as_str().unwrap().contains("event source mapping"), "{triggers}");
    let reaches = edge_to(&depends_on(shop["node_id"].as_str().unwrap()).await, "reaches", "orders-db");
    assert!(reaches["evidence"].as_str().unwrap().contains("tcp 5432"), "{reaches}");
    // A variable's value is never kept: not in any event, not in any read model.
    let leaked = env.count(&format!("SELECT count(*) FROM events WHERE payload::text LIKE '%{SECRET}%'")).await;
    assert_eq!(leaked, 0, "the environment's secret reached the event log");
    let leaked = env
        .count(&format!(
            "SELECT (SELECT count(*) FROM graph_nodes WHERE to_jsonb(graph_nodes)::text LIKE '%{SECRET}%') \
             + (SELECT count(*) FROM graph_edges WHERE to_jsonb(graph_edges)::text LIKE '%{SECRET}%')"
        ))
        .await;
    assert_eq!(leaked, 0, "the environment's secret reached the graph");

    // The inferred dependencies, with their evidence.
    let checkout_id = checkout["node_id"].as_str().unwrap().to_owned();
    let orders_id = orders["node_id"].as_str().unwrap().to_owned();
    let detail = read(&app, &vic, &format!("/v1/discovery/services/{checkout_id}")).await;
    let depends: Vec<&Value> = detail["depends_on"].as_array().unwrap().iter().collect();
    let reaches = depends.iter().find(|edge| edge["dependency"] == "reaches").unwrap_or_else(|| panic!("{detail}"));
    assert_eq!(reaches["node_id"], orders_id.as_str());
    let evidence = reaches["evidence"].as_str().unwrap();
    assert!(evidence.contains("tcp 5432") && evidence.contains(&db) && evidence.contains(&web), "{evidence}");
    assert!(depends.iter().any(|edge| edge["dependency"] == "member_of" && edge["confidence"].as_f64().unwrap() < 0.5), "weak: {detail}");
    assert!(depends.iter().any(|edge| edge["dependency"] == "protected_by" && edge["name"] == "web"));
    // What breaks when the database does: the instance that reaches it.
    let blast = read(&app, &vic, &format!("/v1/discovery/services/{orders_id}/blast-radius")).await;
    let at = |name: &str| distance(&blast["affected"], name);
    // The members of the web group reach it, the worker's environment names it; and, through
    // the instance, the target group and the load balancer in front of it.
    assert_eq!(at("checkout-api"), Some(json!(1)), "{blast}");
    assert_eq!(at("shop"), Some(json!(1)), "{blast}");
    assert_eq!(at("orders-worker"), Some(json!(1)), "{blast}");
    assert_eq!(at("checkout"), Some(json!(2)), "{blast}");
    assert_eq!(at("checkout-lb"), Some(json!(3)), "{blast}");
    // Both ways from the worker: the database and its network upstream, the queue downstream.
    let worker_id = named(&all, "orders-worker")["node_id"].as_str().unwrap().to_owned();
    let around = read(&app, &vic, &format!("/v1/discovery/services/{worker_id}/dependencies?depth=2")).await;
    let (upstream, downstream) = (&around["upstream"], &around["downstream"]);
    assert_eq!(distance(upstream, "orders-db"), Some(json!(1)), "{around}");
    assert_eq!((distance(upstream, &subnet), distance(upstream, &vpc)), (Some(json!(1)), Some(json!(2))), "{around}");
    assert_eq!(distance(downstream, "orders-jobs"), Some(json!(1)), "{around}");
    assert_eq!(distance(downstream, "orders-db"), None, "{around}");
    assert!(distance(upstream, "orders-worker").is_none() && distance(downstream, "orders-worker").is_none(), "{around}");
    let too_deep =
        vic.apply(http().get(app.url(&format!("/v1/discovery/services/{worker_id}/dependencies?depth=11")))).send().await.unwrap();
    assert_eq!(too_deep.status(), StatusCode::BAD_REQUEST);
    let balancer_node = named(&all, "checkout-lb");
    // The path from the load balancer to the database, and none the other way.
    let lb_id = balancer_node["node_id"].as_str().unwrap();
    let path = read(&app, &vic, &format!("/v1/discovery/path?from={lb_id}&to={orders_id}")).await;
    let names: Vec<&str> = path["services"].as_array().unwrap().iter().map(|step| step["name"].as_str().unwrap()).collect();
    assert_eq!(names, vec!["checkout-lb", "checkout", "checkout-api", "orders-db"], "{path}");
    assert_eq!(path["dependencies"], json!(["targets", "targets", "reaches"]));
    let back = vic.apply(http().get(app.url(&format!("/v1/discovery/path?from={orders_id}&to={lb_id}")))).send().await.unwrap();
    assert_eq!(back.status(), StatusCode::NOT_FOUND);
    assert_eq!(balancer_node["kind"], "load_balancer");
    assert!(balancer_node["endpoint"].as_str().is_some_and(|dns| !dns.is_empty()), "{balancer_node}");

    // The agent asks the same graph, by the service's name; an organisation without a graph
    // is not offered the graph's tools at all.
    llm.script(
        "what breaks if orders-db goes down?",
        vec![
            Step::tool("deps", "service_dependencies", json!({ "service": "orders-worker", "depth": 1 })),
            Step::tool("blast", "blast_radius", json!({ "service": "orders-db" })),
            Step::tool("path", "dependency_path", json!({ "from": "orders-db", "to": "checkout-lb" })),
            Step::text("checkout-api."),
        ],
    );
    let mut socket = ChatSocket::open(&app.base_url, &ana).await;
    socket.request(json!({ "type": "query", "text": "what breaks if orders-db goes down?", "mode": "ask" })).await;
    let started = socket.event("chat.turn_started").await;
    let offered = started["payload"]["tools"].as_array().unwrap();
    assert!(["blast_radius", "service_dependencies"].iter().all(|tool| offered.iter().any(|offered| offered == tool)), "{started}");
    let asked = llm.requests().into_iter().map(|request| request.to_string()).find(|request| request.contains("what breaks if orders-db"));
    let asked = asked.expect("the question reached the model");
    assert!(asked.contains("The discovered service graph") && asked.contains("orders-db (database, "), "the prompt's summary: {asked}");
    let answered = socket.event("tool_call.completed").await;
    let upstream = answered["payload"]["result"]["upstream"].as_array().unwrap_or_else(|| panic!("{answered}"));
    assert!(upstream.iter().any(|service| service["name"] == "orders-db" && service["distance"] == 1), "{answered}");
    assert!(!upstream.iter().any(|service| service["name"] == vpc), "depth 1 stops before the VPC: {answered}");
    let answered = socket.event("tool_call.completed").await;
    let affected = answered["payload"]["result"]["affected"].as_array().unwrap_or_else(|| panic!("{answered}"));
    assert!(affected.iter().any(|service| service["name"] == "checkout-api"), "{answered}");
    // Asked from the database's end, the path is found the way the dependencies go.
    let answered = socket.event("tool_call.completed").await;
    assert_eq!(
        answered["payload"]["result"]["path"], "checkout-lb -targets-> checkout -targets-> checkout-api -reaches-> orders-db",
        "{answered}"
    );
    socket.close().await;
    llm.script("anything discovered?", vec![Step::text("No.")]);
    let mut theirs = ChatSocket::open(&app.base_url, &eve).await;
    theirs.request(json!({ "type": "query", "text": "anything discovered?", "mode": "ask" })).await;
    let started = theirs.event("chat.turn_started").await;
    assert!(!started["payload"]["tools"].as_array().unwrap().iter().any(|tool| tool == "blast_radius"), "{started}");
    theirs.close().await;

    // An alert on checkout-api: the investigation's brief names its neighbours in the graph.
    let token = aurora_tests::incidents::webhook_token(&app, &ana).await;
    let alert = aurora_tests::incidents::Fired::firing("CheckoutErrors", "checkout-api", "checkout-1:9100", "fp-checkout");
    let body = aurora_tests::incidents::alertmanager("CheckoutErrors", &[alert]);
    aurora_tests::incidents::accepted(&app, ana.org, "alertmanager", &token, &body, &[]).await;
    let brief = eventually("the investigation's brief", WAIT, || async {
        llm.requests().into_iter().map(|request| request.to_string()).find(|request| request.contains("Incident: CheckoutErrors"))
    })
    .await;
    assert!(
        brief.contains("checkout-api is a vm (AWS::EC2::Instance in us-east-1, present), as it was when the incident opened ("),
        "{brief}"
    );
    assert!(brief.contains("- orders-db (database): reaches, security group"), "{brief}");
    assert!(brief.contains("- checkout (load_balancer): targets, target group checkout registers"), "{brief}");

    // An alert on orders-db soon after joins checkout-api's incident: checkout-api reaches it in
    // the graph, and the reason names the path. An alert on a service the graph does not know,
    // with no more labels in common, opens an incident of its own.
    use aurora_tests::incidents::{detail_until, incidents_until};
    let opened = incidents_until(&app, &vic, "", "checkout-api's incident", |list| list.len() == 1).await;
    let incident_id = opened[0]["incident_id"].as_str().unwrap().to_owned();
    let database_alert = aurora_tests::incidents::Fired::firing("ConnectionsSaturated", "orders-db", "orders-db:5432", "fp-orders-db");
    let body = aurora_tests::incidents::alertmanager("ConnectionsSaturated", &[database_alert]);
    aurora_tests::incidents::accepted(&app, ana.org, "alertmanager", &token, &body, &[]).await;
    let grouped =
        detail_until(&app, &vic, &incident_id, "orders-db's alert grouped by the graph", |found| found["incident"]["alert_count"] == 2)
            .await;
    let attached = &grouped["alerts"][1];
    assert_eq!(attached["grouping_rule"], "dependency_path", "{grouped}");
    assert_eq!(attached["grouping_score"], 1.0, "one dependency apart: {grouped}");
    assert!(attached["grouping_reason"].as_str().unwrap().contains("checkout-api -reaches-> orders-db"), "{attached}");
    let stranger = aurora_tests::incidents::Fired::firing("QueueDepth", "billing-api", "billing-1:9100", "fp-billing");
    aurora_tests::incidents::accepted(
        &app,
        ana.org,
        "alertmanager",
        &token,
        &aurora_tests::incidents::alertmanager("QueueDepth", &[stranger]),
        &[],
    )
    .await;
    let both = incidents_until(&app, &vic, "", "billing-api's own incident", |list| list.len() == 2).await;
    assert!(both.iter().any(|incident| incident["service"] == "billing-api" && incident["alert_count"] == 1), "{both:?}");

    // Another organisation: nothing.
    assert_eq!(services(&app, &eve, "").await, Vec::<Value>::new());
    let theirs = eve.apply(http().get(app.url(&format!("/v1/discovery/services/{orders_id}")))).send().await.unwrap();
    assert_eq!(theirs.status(), StatusCode::NOT_FOUND);
    let theirs = eve.apply(http().get(app.url(&format!("/v1/discovery/path?from={checkout_id}&to={orders_id}")))).send().await.unwrap();
    assert_eq!(theirs.status(), StatusCode::NOT_FOUND);

    // The instance goes; the next scan records exactly that: it, and the dependencies it had.
    elb("DeregisterTargets", vec![("TargetGroupArn", target_group.clone()), ("Targets.member.1.Id", instance_id.clone())]).await;
    ec2("TerminateInstances", vec![("InstanceId.1", instance_id.clone())]).await;
    let second = scanned(&app, &ana).await;
    assert_eq!(second["status"], "completed", "{second}");
    assert_eq!(second["counts"]["discovered"], 0, "{second}");
    assert_eq!(second["counts"]["changed"], 0, "{second}");
    assert_eq!(second["counts"]["gone"], 0, "kept for 30 days: {second}");
    assert_eq!(second["counts"]["missed"], 1, "{second}");
    let types: Vec<String> =
        sqlx::query_scalar("SELECT event_type FROM events WHERE stream = $1 AND payload->>'scan_id' = $2 ORDER BY stream_version")
            .bind(format!("discovery-{}", ana.org))
            .bind(second["scan_id"].as_str().unwrap())
            .fetch_all(&env.pool)
            .await
            .unwrap();
    assert_eq!(types.iter().filter(|kind| *kind == "resource.missed").count(), 1, "{types:?}");
    assert!(!types.iter().any(|kind| kind == "resource.gone"), "{types:?}");
    assert_eq!(types.iter().filter(|kind| *kind == "dependency.gone").count(), 4, "reaches, member_of, protected_by, targets: {types:?}");
    assert!(!types.iter().any(|kind| kind == "resource.discovered" || kind == "dependency.discovered"), "{types:?}");
    let blast = eventually("the blast radius without the instance", WAIT, || async {
        let blast: Value = vic
            .apply(http().get(app.url(&format!("/v1/discovery/services/{orders_id}/blast-radius"))))
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        let names: Vec<&str> = blast["affected"].as_array()?.iter().filter_map(|affected| affected["name"].as_str()).collect();
        (!names.contains(&"checkout-api")).then_some(blast)
    })
    .await;
    let names: Vec<&str> = blast["affected"].as_array().unwrap().iter().filter_map(|affected| affected["name"].as_str()).collect();
    // The instance is still listed, marked missing since the first scan listed it.
    let missing = eventually("the instance marked missing", WAIT, || async {
        let all = services(&app, &vic, "?kind=vm").await;
        all.into_iter().find(|service| service["name"] == "checkout-api" && service["status"] == "missing")
    })
    .await;
    let time = |value: &Value| value.as_str().and_then(|text| text.parse::<chrono::DateTime<chrono::Utc>>().ok());
    let last_seen = time(&missing["last_seen"]).unwrap_or_else(|| panic!("{missing}"));
    assert!(time(&first["started_at"]).unwrap() <= last_seen && Some(last_seen) <= time(&first["finished_at"]), "{missing} {first}");
    assert_eq!(named(&services(&app, &vic, "").await, "orders-db")["status"], "present");
    assert!(names.contains(&"shop") && !names.contains(&"checkout"), "the cluster still reaches it, the target group no longer: {blast}");
    // Read as it was when the first scan finished, the graph still has the instance's dependencies.
    let then = first["finished_at"].as_str().unwrap();
    let past = read(&app, &vic, &format!("/v1/discovery/services/{orders_id}/blast-radius?at={then}")).await;
    let names: Vec<&str> = past["affected"].as_array().unwrap().iter().filter_map(|affected| affected["name"].as_str()).collect();
    assert!(names.contains(&"checkout-api") && names.contains(&"checkout"), "the graph at {then}: {past}");
    let bad =
        vic.apply(http().get(app.url(&format!("/v1/discovery/services/{orders_id}/blast-radius?at=yesterday")))).send().await.unwrap();
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    // The agent reads the past graph too; a time that is not one is refused, in words.
    llm.script(
        "what did orders-db's failure break back then?",
        vec![
            Step::tool("past", "blast_radius", json!({ "service": "orders-db", "at": then })),
            Step::tool("vague", "blast_radius", json!({ "service": "orders-db", "at": "yesterday" })),
            Step::text("checkout-api, then."),
        ],
    );
    let mut socket = ChatSocket::open(&app.base_url, &ana).await;
    socket.request(json!({ "type": "query", "text": "what did orders-db's failure break back then?", "mode": "ask" })).await;
    let answered = socket.event("tool_call.completed").await;
    let affected = answered["payload"]["result"]["affected"].as_array().unwrap_or_else(|| panic!("{answered}"));
    assert!(affected.iter().any(|service| service["name"] == "checkout-api"), "the graph at {then}: {answered}");
    let refused = socket.event("tool_call.failed").await;
    assert!(refused.to_string().contains("RFC 3339"), "{refused}");
    socket.event("chat.assistant_message_completed").await;
    socket.close().await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connected_cloud_is_scanned_again_and_again_on_one_durable_timer() {
    let (_moto, _vault, env, account) = timed_aws().await;
    let app = App::spawn(&env, Roles::ALL).await;
    let ana = Caller::register(&app.base_url, "ana").await;
    connect_aws(&app, &ana, &account).await;
    // Nobody asks: the first scan follows the connection, the next ones the timer.
    let timed = eventually("two timed scans", WAIT, || async {
        let scans: Value = ana.apply(http().get(app.url("/v1/discovery/scans"))).send().await.ok()?.json().await.ok()?;
        let done: Vec<Value> = scans
            .as_array()?
            .iter()
            .filter(|scan| scan["requested_by"] == "processor:discovery" && scan["status"] == "completed")
            .cloned()
            .collect();
        (done.len() >= 2).then_some(done)
    })
    .await;
    assert!(timed[0]["counts"]["resources"].as_u64().unwrap() > 0, "moto's default VPC and its parts: {timed:?}");
    let first = env.count("SELECT count(*) FROM timers WHERE kind = 'discovery_scan' AND payload ->> 'first_scan_attempt' = '1'").await;
    assert_eq!(first, 1, "the first scan's timer, which looks again while the connection is not in the read model");
    // A scan asked for by hand joins the same chain: one timer waits, never two.
    let asked = ana.apply(http().post(app.url("/v1/discovery/scans"))).send().await.unwrap();
    assert!(matches!(asked.status(), StatusCode::ACCEPTED | StatusCode::CONFLICT), "{}", asked.status());
    for _ in 0..3 {
        let pending = env.count("SELECT count(*) FROM timers WHERE kind = 'discovery_scan' AND fired_at IS NULL").await;
        assert!(pending <= 1, "{pending} scan timers wait at once");
        tokio::time::sleep(Duration::from_millis(700)).await;
    }

    // The organisation's own interval: an admin sets it, the waiting scan moves to it.
    let default: Value = read(&app, &ana, "/v1/discovery/schedule").await;
    assert_eq!(
        (default["interval_minutes"].as_u64(), default["default"].as_bool()),
        (Some(1), Some(true)),
        "2 s, in whole minutes: {default}"
    );
    let vic = Caller::join(&app.base_url, &ana, "vic", "editor").await;
    let eve = Caller::register(&app.base_url, "eve").await;
    let put = |caller: &Caller, body: Value| caller.apply(http().put(app.url("/v1/discovery/schedule"))).json(&body).send();
    assert_eq!(put(&vic, json!({ "interval_minutes": 30 })).await.unwrap().status(), StatusCode::FORBIDDEN, "an editor");
    let short = problem(put(&ana, json!({ "interval_minutes": 5 })).await.unwrap(), StatusCode::BAD_REQUEST).await;
    assert!(short["detail"].as_str().unwrap().contains("15 to 10080 minutes"), "{short}");
    assert_eq!(put(&ana, json!({ "interval_minutes": 30, "jitter": 1 })).await.unwrap().status(), StatusCode::BAD_REQUEST);
    assert_eq!(put(&ana, json!({ "interval_minutes": "often" })).await.unwrap().status(), StatusCode::BAD_REQUEST);
    let set = put(&ana, json!({ "interval_minutes": 30 })).await.unwrap();
    assert_eq!(set.status(), StatusCode::ACCEPTED);
    let moved = eventually("the waiting scan moved half an hour on", WAIT, || async {
        let schedule = read(&app, &vic, "/v1/discovery/schedule").await;
        let next: chrono::DateTime<chrono::Utc> = schedule["next_scan_at"].as_str()?.parse().ok()?;
        (schedule["interval_minutes"] == 30 && next > chrono::Utc::now() + chrono::TimeDelta::minutes(25)).then_some(schedule)
    })
    .await;
    assert_eq!(moved["default"], false, "{moved}");
    let others = read(&app, &eve, "/v1/discovery/schedule").await;
    assert_eq!((others["default"].as_bool(), others["next_scan_at"].is_null()), (Some(true), true), "another organisation's: {others}");
    // No timed scan follows in the seconds the old interval would have taken.
    let timed_scans = |scans: Value| scans.as_array().unwrap().iter().filter(|scan| scan["requested_by"] == "processor:discovery").count();
    let before = timed_scans(read(&app, &ana, "/v1/discovery/scans").await);
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(timed_scans(read(&app, &ana, "/v1/discovery/scans").await), before);
    app.stop().await;
}

/// The dependencies a service's detail lists, as `caller`.
async fn depends_on(app: &App, caller: &Caller, node_id: &str) -> Vec<Value> {
    let detail = read(app, caller, &format!("/v1/discovery/services/{node_id}")).await;
    detail["depends_on"].as_array().unwrap_or_else(|| panic!("{detail}")).clone()
}

fn edge_to<'a>(edges: &'a [Value], kind: &str, name: &str) -> Option<&'a Value> {
    edges.iter().find(|edge| edge["dependency"] == kind && edge["name"] == name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn google_cloud_and_azure_estates_are_scanned_through_their_apis() {
    let providers = Providers::start().await;
    let vault = ScratchVault::start();
    let mut env = TestEnv::new().await;
    env.config.vault = vault.config();
    env.config.discovery.first_scan_delay = Duration::from_secs(3600);
    env.config.discovery.flag_after_failures = 2;
    let base = &providers.base_url;
    let connections = &mut env.config.connections;
    connections.google.client_id = Some(providers.google_client_id.clone());
    connections.google.client_secret = Some(providers.google_client_secret.clone().into());
    connections.google.authorize_url = format!("{base}/google/o/oauth2/v2/auth");
    connections.google.token_url = format!("{base}/google/token");
    connections.gcp_api_url = Some(format!("{base}/gcp"));
    connections.azure_login_url = format!("{base}/azure-login");
    connections.azure_management_url = format!("{base}/azure");
    connections.allow_private_urls = true;
    let app = App::spawn(&env, Roles::ALL).await;
    let ana = Caller::register(&app.base_url, "ana").await;
    let eve = Caller::register(&app.base_url, "eve").await;

    // Google Cloud over OAuth (the browser played here), Azure with a service principal.
    let started: Value =
        ana.apply(http().post(app.url("/v1/connections/oauth/gcp"))).json(&json!({})).send().await.unwrap().json().await.unwrap();
    let browser = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).no_proxy().build().unwrap();
    let approved = browser.get(started["authorization_url"].as_str().unwrap()).send().await.unwrap();
    let callback = approved.headers()["location"].to_str().unwrap().to_owned();
    let (_, query) = callback.split_once('?').unwrap();
    let google = http().get(app.url(&format!("/v1/connections/oauth/callback?{query}"))).send().await.unwrap();
    assert_eq!(google.status(), StatusCode::CREATED, "{}", google.text().await.unwrap());
    let azure = json!({ "provider": "azure", "credentials": {
        "tenant_id": providers.azure_tenant, "client_id": providers.azure_client_id, "client_secret": providers.azure_client_secret,
    }});
    let connected = ana.apply(http().post(app.url("/v1/connections"))).json(&azure).send().await.unwrap();
    assert_eq!(connected.status(), StatusCode::CREATED, "{}", connected.text().await.unwrap());
    eventually("both connections in the read model", WAIT, || async {
        let listed: Value = ana.apply(http().get(app.url("/v1/connections"))).send().await.ok()?.json().await.ok()?;
        (listed.as_array()?.len() == 2).then_some(())
    })
    .await;

    let first = scanned(&app, &ana).await;
    assert_eq!((first["status"].as_str(), &first["failures"]), (Some("completed"), &json!([])), "{first}");
    let all = eventually("the graph", WAIT, || async {
        let all = services(&app, &ana, "").await;
        all.iter().any(|service| service["name"] == "checkout-web").then_some(all)
    })
    .await;
    let kinds: Vec<(&str, &str, &str)> = all
        .iter()
        .map(|service| (service["provider"].as_str().unwrap(), service["kind"].as_str().unwrap(), service["name"].as_str().unwrap()))
        .collect();
    for expected in [
        ("gcp", "network", "prod-vpc"),
        ("gcp", "vm", "checkout-web-1"),
        ("gcp", "vm", "orders-worker-1"),
        ("gcp", "firewall", "allow-web-to-worker"),
        ("gcp", "kubernetes_cluster", "acme-prod-gke"),
        ("gcp", "kubernetes_cluster", "acme-staging-gke"),
        ("gcp", "database", "orders-sql"),
        ("azure", "vm", "checkout-vm-1"),
        ("azure", "kubernetes_cluster", "prod-aks"),
        ("azure", "database", "orders-sqlsrv/orders"),
        ("azure", "serverless_function", "checkout-web"),
        ("azure", "serverless_function", "orders-fn"),
    ] {
        assert!(kinds.contains(&expected), "{expected:?} in {kinds:?}");
    }
    assert!(!kinds.iter().any(|(_, _, name)| name.ends_with("/master")), "the system database is not the team's: {kinds:?}");
    let web = named(&all, "checkout-web-1");
    assert_eq!(web["resource_id"], "//compute.googleapis.com/projects/acme-prod/zones/europe-west1-b/instances/checkout-web-1");
    assert_eq!(
        (web["region"].as_str(), web["account"].as_str(), web["endpoint"].as_str()),
        (Some("europe-west1"), Some("acme-prod"), Some("10.132.0.2"))
    );
    assert_eq!(web["tags"]["service"], "checkout-web");
    let orders_sql = named(&all, "orders-sql");
    assert_eq!(
        (orders_sql["endpoint"].as_str(), orders_sql["provider_type"].as_str()),
        (Some("10.10.0.3"), Some("sqladmin.googleapis.com/Instance"))
    );
    assert_eq!(named(&all, "orders-fn")["provider_type"], "Microsoft.Web/sites/functionapp");
    assert_eq!(named(&all, "orders-sqlsrv/orders")["endpoint"], "orders-sqlsrv.database.windows.net");

    // Google Cloud: the firewall's tags, the metadata that names the database, the network.
    let id = |name: &str| named(&all, name)["node_id"].as_str().unwrap().to_owned();
    let web_edges = depends_on(&app, &ana, &id("checkout-web-1")).await;
    let reaches = edge_to(&web_edges, "reaches", "orders-worker-1").unwrap_or_else(|| panic!("{web_edges:?}"));
    let evidence = reaches["evidence"].as_str().unwrap();
    assert!(evidence.contains("allow-web-to-worker") && evidence.contains("tcp 8080"), "{evidence}");
    let uses = edge_to(&web_edges, "uses", "orders-sql").unwrap_or_else(|| panic!("{web_edges:?}"));
    assert_eq!(uses["evidence"], "metadata item startup-script of instance checkout-web-1 names the address of database orders-sql");
    assert!(edge_to(&web_edges, "protected_by", "allow-iap-ssh").is_some(), "a rule without target tags guards the network: {web_edges:?}");
    assert!(edge_to(&web_edges, "member_of", "prod-vpc").is_some_and(|edge| edge["confidence"] == 0.3), "{web_edges:?}");
    let worker_edges = depends_on(&app, &ana, &id("orders-worker-1")).await;
    assert!(edge_to(&worker_edges, "uses", "orders-sql").is_some_and(|edge| edge["evidence"].as_str().unwrap().contains("connection name")));
    assert!(edge_to(&worker_edges, "reaches", "checkout-web-1").is_none(), "a disabled rule admits nothing: {worker_edges:?}");
    // Azure: what the app's settings and connection strings name, by their names only.
    let app_edges = depends_on(&app, &ana, &id("checkout-web")).await;
    let database = edge_to(&app_edges, "uses", "orders-sqlsrv/orders").unwrap_or_else(|| panic!("{app_edges:?}"));
    assert_eq!(database["evidence"], "setting OrdersDb of app checkout-web names the server of database orders-sqlsrv/orders");
    assert!(edge_to(&app_edges, "uses", "orders-fn").is_some_and(|edge| edge["evidence"].as_str().unwrap().contains("ORDERS_API")));
    let radius = read(&app, &ana, &format!("/v1/discovery/services/{}/blast-radius", id("orders-sql"))).await;
    for name in ["checkout-web-1", "orders-worker-1"] {
        assert_eq!(distance(&radius["affected"], name), Some(json!(1)), "{radius}");
    }
    let radius = read(&app, &ana, &format!("/v1/discovery/services/{}/blast-radius", id("orders-sqlsrv/orders"))).await;
    assert_eq!(distance(&radius["affected"], "checkout-web"), Some(json!(1)), "{radius}");
    // No setting's value is kept anywhere.
    for table in ["events", "graph_nodes", "graph_edges"] {
        let leaked = env
            .count(&format!(
                "SELECT count(*) FROM {table} t WHERE t::text LIKE '%{}%' OR t::text LIKE '%/srv/checkout%'",
                providers.azure_database_password
            ))
            .await;
        assert_eq!(leaked, 0, "a setting's value in {table}");
    }
    assert!(services(&app, &eve, "").await.is_empty(), "another organisation sees none of it");

    // Compute Engine down: Google Cloud's scan fails and keeps what it had; Azure's goes on,
    // though it may no longer read an app's settings.
    providers.inject("/gcp/compute", Fault::Status(503));
    let settings = format!(
        "/azure/subscriptions/{}/resourceGroups/prod/providers/Microsoft.Web/sites/checkout-web/config",
        providers.azure_subscription
    );
    providers.inject(&settings, Fault::Status(403));
    let second = scanned(&app, &ana).await;
    providers.clear_faults();
    assert_eq!(second["status"], "completed", "{second}");
    let failures = second["failures"].as_array().unwrap();
    assert_eq!(failures.len(), 1, "{second}");
    assert_eq!(failures[0]["provider"], "gcp");
    assert!(failures[0]["reason"].as_str().unwrap().contains("503"), "{second}");
    let after = services(&app, &ana, "?provider=gcp").await;
    assert_eq!(after.len(), all.iter().filter(|service| service["provider"] == "gcp").count());
    assert!(after.iter().all(|service| service["status"] == "present"), "{after:?}");

    // A connection failing scan after scan is flagged on the connection, at the second failure
    // in a row here: Google Cloud still down is flagged and still scanned; Azure refusing the
    // service principal needs reconnecting, and is scanned no more until it is.
    providers.inject("/gcp/compute", Fault::Status(503));
    providers.inject("/azure-login", Fault::Status(401));
    assert_eq!(scanned(&app, &ana).await["status"], "failed", "neither listed anything");
    providers.clear_faults();
    providers.inject("/azure-login", Fault::Status(401));
    assert_eq!(scanned(&app, &ana).await["status"], "completed");
    providers.clear_faults();
    let flagged = eventually("both connections flagged", WAIT, || async {
        let listed: Vec<Value> = ana.apply(http().get(app.url("/v1/connections"))).send().await.ok()?.json().await.ok()?;
        listed.iter().all(|connection| connection["last_error_stage"] == "discovery").then_some(listed)
    })
    .await;
    let of = |provider: &str| flagged.iter().find(|connection| connection["provider"] == provider).unwrap().clone();
    let (google, azure) = (of("gcp"), of("azure"));
    assert_eq!((google["status"].as_str(), google["needs_reconnect"].as_bool()), (Some("connected"), Some(false)), "{google}");
    assert!(google["last_error"].as_str().unwrap().contains("the last 2 discovery scans"), "{google}");
    assert_eq!((azure["status"].as_str(), azure["needs_reconnect"].as_bool()), (Some("failed"), Some(true)), "{azure}");
    let next = scanned(&app, &ana).await;
    assert_eq!((next["providers"].clone(), next["status"].as_str()), (json!(["gcp"]), Some("completed")), "{next}");
    let waiting = next["failures"].as_array().unwrap();
    assert!(
        waiting.len() == 1 && waiting[0]["provider"] == "azure" && waiting[0]["reason"].as_str().unwrap().contains("reconnect"),
        "{next}"
    );
    let kept = services(&app, &ana, "?provider=azure").await;
    assert!(!kept.is_empty() && kept.iter().all(|service| service["status"] == "present"), "unchecked, not missing: {kept:?}");
    app.stop().await;
}

/// How many of the organisation's discovery events are of `event_type` (by the processor, for
/// requested scans: the timer's).
async fn discovery_events(env: &TestEnv, org: uuid::Uuid, event_type: &str) -> i64 {
    let actor = if event_type == "discovery.scan_requested" { "AND actor = 'processor:discovery'" } else { "" };
    env.count(&format!("SELECT count(*) FROM events WHERE org_id = '{org}' AND event_type = '{event_type}' {actor}")).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scan_timer_fires_once_across_two_instances_and_moves_to_the_other_when_its_leader_stops() {
    let (_moto, _vault, env, account) = timed_aws().await;
    let first = App::spawn(&env, Roles::ALL).await;
    let ana = Caller::register(&first.base_url, "ana").await;
    connect_aws(&first, &ana, &account).await;
    let completed_at_least = |count: i64| {
        let env = &env;
        async move {
            eventually(&format!("{count} timed scans completed"), WAIT, || async {
                (discovery_events(env, ana.org, "discovery.scan_completed").await >= count).then_some(())
            })
            .await
        }
    };
    // The first instance alone leads the timers; then a second one starts beside it.
    completed_at_least(1).await;
    let second = App::spawn(&env, Roles::ALL).await;
    let holders = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted \
                   AND database = (SELECT oid FROM pg_database WHERE datname = current_database()) \
                   AND objid::bigint = (hashtext('aurora-timers:discovery_scan')::bigint & 4294967295)";
    completed_at_least(3).await;
    assert_eq!(env.count(holders).await, 1, "one instance leads the scan timers");
    // Every timer that fired asked for one scan, and no more.
    let fired = "SELECT count(*) FROM timers WHERE kind = 'discovery_scan' AND fired_at IS NOT NULL";
    eventually("each fired timer's scan", WAIT, || async {
        (env.count(fired).await == discovery_events(&env, ana.org, "discovery.scan_requested").await).then_some(())
    })
    .await;
    // The leader stops: the other instance takes the lock and the chain goes on.
    first.stop().await;
    let before = discovery_events(&env, ana.org, "discovery.scan_completed").await;
    completed_at_least(before + 2).await;
    assert_eq!(env.count(holders).await, 1, "the second instance leads now");
    assert_eq!(env.count(fired).await, discovery_events(&env, ana.org, "discovery.scan_requested").await);
    let running = env.count(&format!("SELECT count(*) FROM discovery_scans WHERE org_id = '{}' AND status = 'running'", ana.org)).await;
    assert!(running <= 1, "{running} scans at once");
    second.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_processor_killed_mid_scan_scans_again_when_it_comes_back_and_keeps_each_resource_once() {
    let providers = Providers::start().await;
    let vault = ScratchVault::start();
    let mut env = TestEnv::new().await;
    env.config.vault = vault.config();
    env.config.connections.azure_login_url = format!("{}/azure-login", providers.base_url);
    env.config.connections.azure_management_url = format!("{}/azure", providers.base_url);
    let app = App::spawn(&env, Roles { gateway: true, processors: false, projections: true }).await;
    let ana = Caller::register(&app.base_url, "ana").await;
    let azure = json!({ "provider": "azure", "credentials": {
        "tenant_id": providers.azure_tenant, "client_id": providers.azure_client_id, "client_secret": providers.azure_client_secret,
    }});
    assert_eq!(ana.apply(http().post(app.url("/v1/connections"))).json(&azure).send().await.unwrap().status(), StatusCode::CREATED);
    let mut processor_env = providers.aurora_env();
    processor_env.extend(vault.aurora_env());
    processor_env
        .extend([("AURORA_PROVIDER_TIMEOUT_SECS".into(), "120".into()), ("AURORA_DISCOVERY_FIRST_SCAN_DELAY_SECS".into(), "3600".into())]);
    let processor_env: Vec<(&str, &str)> = processor_env.iter().map(|(name, value)| (name.as_str(), value.as_str())).collect();
    // The App Service listing, the scan's last, never answers: the processor dies inside it.
    let sites = format!("/azure/subscriptions/{}/providers/Microsoft.Web/sites", providers.azure_subscription);
    providers.inject(&sites, Fault::Hang);
    let (mut processors, log) = aurora_tests::spawn_aurora_logged(&env, &["processors"], &processor_env);
    // A scan lists the connections of the read model (fed through the processors' relay): this
    // one must be there first.
    eventually("the connection in the read model", WAIT, || async {
        let listed: Value = ana.apply(http().get(app.url("/v1/connections"))).send().await.ok()?.json().await.ok()?;
        (listed.as_array()?.len() == 1).then_some(())
    })
    .await;
    let response = ana.apply(http().post(app.url("/v1/discovery/scans"))).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let scan_id = response.json::<Value>().await.unwrap()["scan_id"].as_str().unwrap().to_owned();
    eventually("the scan inside its last listing", WAIT, || async {
        providers.requests().iter().any(|(_, path)| *path == sites).then_some(())
    })
    .await;
    processors.start_kill().unwrap();
    processors.wait().await.unwrap();
    eprintln!("killed mid-scan; first log {}", log.display());
    providers.clear_faults();
    let (restarted, _) = aurora_tests::spawn_aurora_logged(&env, &["processors"], &processor_env);
    let scan = eventually("the scan completed after the restart", WAIT, || async {
        let scan: Value = ana.apply(http().get(app.url(&format!("/v1/discovery/scans/{scan_id}")))).send().await.ok()?.json().await.ok()?;
        (scan["status"] == "completed").then_some(scan)
    })
    .await;
    assert_eq!(scan["counts"]["resources"], 5, "a VM, a cluster, a database and two apps: {scan}");
    assert_eq!(discovery_events(&env, ana.org, "discovery.scan_started").await, 1, "the scan resumed, not started twice");
    assert_eq!(discovery_events(&env, ana.org, "resource.discovered").await, 5, "each resource discovered once");
    let all = eventually("the graph", WAIT, || async {
        let all = services(&app, &ana, "").await;
        (all.len() == 5).then_some(all)
    })
    .await;
    let mut ids: Vec<&str> = all.iter().map(|service| service["resource_id"].as_str().unwrap()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 5, "no resource twice: {all:?}");
    drop(restarted);
    app.stop().await;
}

/// With the graph kept in a Bolt server (`AURORA_DISCOVERY_GRAPH=bolt`), a scan's graph is
/// written there by the `graph_bolt` projection and the gateway reads it from there: with this
/// organisation's graph rows deleted from Postgres, its services, neighbours, blast radius,
/// path and summary still answer; another organisation gets 404 and an empty list.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graph_kept_in_a_bolt_server_is_written_there_and_served_from_it() {
    let Ok(url) = std::env::var("AURORA_TEST_BOLT_URL") else {
        eprintln!("SKIPPED: AURORA_TEST_BOLT_URL is not set (scripts/stack.sh env sets it to the stack's kglite-bolt-server)");
        return;
    };
    let providers = Providers::start().await;
    let vault = ScratchVault::start();
    let mut env = TestEnv::new().await;
    env.config.vault = vault.config();
    env.config.discovery.first_scan_delay = Duration::from_secs(3600);
    env.config.connections.azure_login_url = format!("{}/azure-login", providers.base_url);
    env.config.connections.azure_management_url = format!("{}/azure", providers.base_url);
    env.config.discovery.graph = aurora_adapters::config::GraphBackend::Bolt;
    env.config.discovery.bolt.url = url;
    let app = App::spawn(&env, Roles::ALL).await;
    let ana = Caller::register(&app.base_url, "ana").await;
    let eve = Caller::register(&app.base_url, "eve").await;
    let azure = json!({ "provider": "azure", "credentials": {
        "tenant_id": providers.azure_tenant, "client_id": providers.azure_client_id, "client_secret": providers.azure_client_secret,
    }});
    assert_eq!(ana.apply(http().post(app.url("/v1/connections"))).json(&azure).send().await.unwrap().status(), StatusCode::CREATED);
    eventually("the connection in the read model", WAIT, || async {
        let listed: Value = ana.apply(http().get(app.url("/v1/connections"))).send().await.ok()?.json().await.ok()?;
        (listed.as_array()?.len() == 1).then_some(())
    })
    .await;
    assert_eq!(scanned(&app, &ana).await["status"], "completed");
    eventually("the estate's summary in the Bolt server", WAIT, || async {
        (read(&app, &ana, "/v1/discovery/summary").await["services"] == 5).then_some(())
    })
    .await;
    for table in ["graph_edges", "graph_nodes", "graph_edge_versions", "graph_node_versions", "graph_summaries"] {
        sqlx::query(&format!("DELETE FROM {table} WHERE org_id = $1")).bind(ana.org).execute(&env.pool).await.unwrap();
    }

    let all = services(&app, &ana, "").await;
    assert_eq!(all.len(), 5, "{all:?}");
    let id = |name: &str| named(&all, name)["node_id"].as_str().unwrap().to_owned();
    assert_eq!(named(&all, "orders-sqlsrv/orders")["endpoint"], "orders-sqlsrv.database.windows.net");
    assert_eq!(services(&app, &ana, "?kind=database").await.len(), 1);
    let edges = depends_on(&app, &ana, &id("checkout-web")).await;
    let database = edge_to(&edges, "uses", "orders-sqlsrv/orders").unwrap_or_else(|| panic!("{edges:?}"));
    assert_eq!(database["evidence"], "setting OrdersDb of app checkout-web names the server of database orders-sqlsrv/orders");
    let radius = read(&app, &ana, &format!("/v1/discovery/services/{}/blast-radius", id("orders-sqlsrv/orders"))).await;
    assert_eq!(distance(&radius["affected"], "checkout-web"), Some(json!(1)), "{radius}");
    let path = format!("/v1/discovery/path?from={}&to={}", id("checkout-web"), id("orders-sqlsrv/orders"));
    let found = read(&app, &ana, &path).await;
    assert_eq!(found["dependencies"], json!(["uses"]), "{found}");
    let summary = read(&app, &ana, "/v1/discovery/summary").await;
    assert_eq!((summary["services"].as_i64(), summary["regions"].as_array().map(Vec::len).unwrap_or(0) > 0), (Some(5), true));

    // Another organisation: nothing of it, whichever way it asks.
    for path in [
        format!("/v1/discovery/services/{}", id("checkout-web")),
        format!("/v1/discovery/services/{}/blast-radius", id("orders-sqlsrv/orders")),
        format!("/v1/discovery/services/{}/dependencies", id("orders-sqlsrv/orders")),
        path.clone(),
    ] {
        let response = eve.apply(http().get(app.url(&path))).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{path}");
    }
    assert!(services(&app, &eve, "").await.is_empty());
    assert_eq!(read(&app, &eve, "/v1/discovery/summary").await["services"], 0);
    app.stop().await;
}

/// A graph store that cannot be reached answers 503 with a problem body that names no address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bolt_graph_store_that_is_down_answers_503() {
    let mut env = TestEnv::new().await;
    env.config.discovery.graph = aurora_adapters::config::GraphBackend::Bolt;
    // Nothing listens on port 1.
    env.config.discovery.bolt.url = "bolt://127.0.0.1:1".into();
    let app = App::spawn(&env, Roles { gateway: true, processors: false, projections: false }).await;
    let ana = Caller::register(&app.base_url, "ana").await;
    for path in ["/v1/discovery/services", "/v1/discovery/summary"] {
        let response = ana.apply(http().get(app.url(path))).send().await.unwrap();
        let body = problem(response, StatusCode::SERVICE_UNAVAILABLE).await;
        assert!(body["detail"].as_str().is_some_and(|detail| detail.contains("graph store")), "{body}");
        assert!(!body.to_string().contains("127.0.0.1"), "{body}");
    }
    app.stop().await;
}
